"""The disposition form of the triage page: QA decisions e-signed as in an electronic batch
record.

A QA reviewer picks a batch, a decision and a reason and signs with their password; the
decision is recorded in the audit trail (:class:`dashboard.audit.AuditTrail`) with the
signer's full name, role and the meaning of the signature, which the page shows back as
"Released by Quinn Avery (QA reviewer) — meaning: batch released for distribution —
2026-12-05 14:03 CET" (in the plant's time zone, $BIOTWIN_TZ).

Four eyes: releasing a batch whose predicted risk is above ``BIOTWIN_FOUR_EYES_RISK``
(default 0.5) or that was ever put on hold asks for an explicit confirmation and a second
QA signature by a different user; the release is recorded only when both signatures verify.

What was typed survives any error: the decision, reason, confirmation and second signer
live in ``st.session_state`` (keys ``disp_*``); only the passwords are cleared after each
attempt. Errors show under the Sign button.
"""

from __future__ import annotations

import contextlib
import math
import os
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import streamlit as st

from dashboard.audit import DECISIONS, AuditTrail, SignatureError
from dashboard.localtime import plant_tz

__all__ = [
    "DEFAULT_FOUR_EYES_RISK",
    "FOUR_EYES_ENV",
    "MEANINGS",
    "SECOND_MEANING",
    "disposition_form",
    "four_eyes_reasons",
    "four_eyes_threshold",
    "local_time",
    "signature_lines",
]

FOUR_EYES_ENV = "BIOTWIN_FOUR_EYES_RISK"
DEFAULT_FOUR_EYES_RISK = 0.5
#: what a signature on each decision means (recorded with the signature)
MEANINGS = {
    "investigate": "investigation requested before a disposition",
    "hold": "batch put on hold pending review",
    "release": "batch released for distribution",
    "reject": "batch rejected: not for distribution",
}
SECOND_MEANING = "second QA review (four eyes): I concur with this release"
_DONE = {
    "investigate": "Investigation requested",
    "hold": "Put on hold",
    "release": "Released",
    "reject": "Rejected",
}
_ROLES = {"qa": "QA reviewer"}


def four_eyes_threshold() -> float:
    """The predicted risk above which a release needs a second signer.

    Raises
    ------
    ValueError
        If ``BIOTWIN_FOUR_EYES_RISK`` is not a number between 0 and 1.
    """
    raw = os.environ.get(FOUR_EYES_ENV, "").strip()
    if not raw:
        return DEFAULT_FOUR_EYES_RISK
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{FOUR_EYES_ENV} must be a number between 0 and 1; got {raw!r}")
    return value


def four_eyes_reasons(
    trail: AuditTrail, batch_id: str, decision: str, risk: float | None, threshold: float
) -> list[str]:
    """Why this decision needs a second signer (empty: one signature is enough)."""
    if decision != "release":
        return []
    reasons = []
    if risk is not None and risk > threshold:
        reasons.append(f"its predicted risk {risk:.2f} is above {threshold:.2f}")
    if trail.held(batch_id):
        reasons.append("it was put on hold before")
    return reasons


def local_time(iso: str, tz: str | None = None) -> str:
    """A record's UTC time stamp in local time, to the minute, with the zone's abbreviation.

    ``tz`` is an IANA name; without one (or an unknown one) the plant's zone
    (:func:`dashboard.localtime.plant_tz`: $BIOTWIN_TZ, else the machine's).
    """
    zone = plant_tz()
    if tz:
        with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
            zone = ZoneInfo(tz)
    return datetime.fromisoformat(iso).astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


def signature_lines(record: dict, tz: str | None = None) -> list[str]:
    """The signatures of a disposition record in words: who (full name, role), the meaning
    and when; a second line for the second signer of a four-eyes decision."""
    when = local_time(record["time"], tz)
    role = _ROLES.get(record.get("role") or "qa", record.get("role"))
    name = record.get("full_name") or record["user"]
    done = _DONE.get(record["decision"], record["decision"])
    lines = [f"{done} by {name} ({role}) — meaning: {record['meaning']} — {when}"]
    if record.get("second_user"):
        second = record.get("second_full_name") or record["second_user"]
        lines.append(
            f"Second signature by {second} ({role}) — meaning: {record['second_meaning']} — {when}"
        )
    return lines


def _risk(batches: pd.DataFrame, batch_id: str) -> tuple[float | None, str | None]:
    """(predicted risk, model version) of a batch, None where there is no score."""
    if batch_id not in batches.index:
        return None, None
    row = batches.loc[batch_id]
    risk = row.get("p_deviation")
    version = row.get("model_version")
    return (
        float(risk) if risk is not None and pd.notna(risk) else None,
        version if isinstance(version, str) and version else None,
    )


def _threshold() -> tuple[float, str]:
    """(threshold, problem): a bad setting makes every release need a second signer."""
    try:
        return four_eyes_threshold(), ""
    except ValueError as exc:
        return 0.0, f"{exc}: until it is fixed, every release needs a second signer"


def _submit(trail: AuditTrail, batches: pd.DataFrame, user: str) -> None:
    """Sign button: check the inputs, sign, keep what was typed on an error."""
    state = st.session_state
    batch_id = state.get("disp_batch")
    decision = state.get("disp_decision")
    reason = state.get("disp_reason") or ""
    password = state.get("disp_password") or ""
    second_user = (state.get("disp_second_user") or "").strip()
    second_password = state.get("disp_second_password") or ""
    state["disp_password"] = ""
    if "disp_second_password" in state:
        state["disp_second_password"] = ""
    risk, model_version = _risk(batches, batch_id)
    needs = four_eyes_reasons(trail, batch_id, decision, risk, _threshold()[0])
    errors = []
    if not reason.strip():
        errors.append("Reason: a disposition needs a reason (what you reviewed and why).")
    if not password:
        errors.append("Password: re-enter your password to sign.")
    if needs and not state.get("disp_confirm"):
        errors.append(f"Confirm the release of {batch_id}: tick the confirmation box.")
    if needs and not second_user:
        errors.append("Second signer: enter the user name of a second QA reviewer.")
    if needs and second_user and not second_password:
        errors.append("Second signer: the second QA reviewer re-enters their password.")
    if errors:
        state["disp_errors"] = errors
        return
    try:
        record = trail.sign(
            user=user,
            password=password,
            batch_id=batch_id,
            decision=decision,
            reason=reason,
            meaning=MEANINGS[decision],
            model_version=model_version,
            score=risk,
            **(
                {
                    "second_user": second_user,
                    "second_password": second_password,
                    "second_meaning": SECOND_MEANING,
                }
                if needs
                else {}
            ),
        )
    except (SignatureError, ValueError) as exc:
        state["disp_errors"] = [str(exc)]
        return
    state["disp_done"] = record
    state["disp_reason"] = ""
    for key in ("disp_confirm", "disp_second_user"):
        if key in state:
            state[key] = False if key == "disp_confirm" else ""


def disposition_form(
    trail: AuditTrail, batches: pd.DataFrame, *, user: str | None, roles: list[str]
) -> None:
    """The disposition section: batch, decision, reason, signature(s), and the batch's
    earlier signatures.

    Parameters
    ----------
    trail : AuditTrail
        Where signed dispositions are recorded.
    batches : DataFrame
        Batches to choose from, indexed by batch id; ``p_deviation`` (predicted risk) and
        ``model_version`` columns are used when present.
    user, roles
        The signed-in user and their roles (only QA can sign).
    """
    if not user or "qa" not in roles:
        st.warning("Only QA can disposition batches: sign in as a QA user.")
        return
    tz = None  # the plant's time zone (see local_time)
    threshold, problem = _threshold()
    if problem:
        st.error(problem)
    batch_id = st.selectbox("Batch", list(batches.index), key="disp_batch")
    if batch_id is None:
        st.caption("No batch to disposition yet.")
        return
    risk, model_version = _risk(batches, batch_id)
    if risk is not None:
        st.caption(
            f"Predicted risk of {batch_id}: P(deviation) {risk:.2f}"
            + (f" ({model_version})" if model_version else "")
        )
    earlier = [
        r for r in trail.records() if r["action"] == "disposition" and r["batch_id"] == batch_id
    ]
    if earlier:
        st.markdown(
            f"**Signatures on {batch_id}**\n"
            + "\n".join(f"- {line}" for r in earlier for line in signature_lines(r, tz))
        )
    decision = st.radio("Decision", DECISIONS, horizontal=True, key="disp_decision")
    needs = four_eyes_reasons(trail, batch_id, decision, risk, threshold)
    if needs:
        st.warning(
            f"Four eyes: releasing {batch_id} needs your confirmation and a second QA "
            f"signature by a different user, because {' and '.join(needs)}."
        )
    # a form: what is typed is sent with the Sign button (a password field outside a form
    # is only taken when it loses focus to something else than its show-password button)
    with st.form("disposition", border=False):
        st.text_area("Reason", key="disp_reason")
        st.text_input("Password (signature)", type="password", key="disp_password")
        st.caption(f"Your signature means: {MEANINGS[decision]}.")
        if needs:
            st.checkbox(f"I confirm the release of {batch_id}", key="disp_confirm")
            st.text_input("Second signer (QA user)", key="disp_second_user")
            st.text_input("Second signer's password", type="password", key="disp_second_password")
            st.caption(f"The second signature means: {SECOND_MEANING}.")
        st.form_submit_button(
            "Sign", type="primary", key="disp_sign", on_click=_submit, args=(trail, batches, user)
        )
    for message in st.session_state.pop("disp_errors", []):
        st.error(message)
    done = st.session_state.pop("disp_done", None)
    if done is not None:
        st.success(
            f"Signed: {done['decision']} {done['batch_id']} (record {done['seq']})\n\n"
            + "\n\n".join(signature_lines(done, tz))
        )
