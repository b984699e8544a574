"""Dispositions like an electronic batch record, the session cookie, and the demo approvals.

The form is tested alone (``AppTest.from_function`` on a small table of batches, with the
real audit trail and users.toml in a temporary store); the triage page itself is tested in
tests/test_dashboard.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import PASSWORDS, write_users
from streamlit.testing.v1 import AppTest

from dashboard.audit import AuditTrail

ROOT = Path(__file__).resolve().parents[1]


def form_page(store: str) -> None:
    """The disposition section alone: three batches, one at high predicted risk."""
    import pandas as pd
    import streamlit as st

    from dashboard.audit import AuditTrail
    from dashboard.disposition import disposition_form

    batches = pd.DataFrame(
        {
            "p_deviation": [0.98, 0.10, None],
            "model_version": ["deviation-abc", "deviation-abc", None],
        },
        index=pd.Index(["B00098", "B00010", "B00077"], name="batch_id"),
    )
    trail = AuditTrail(f"{store}/audit", f"{store}/users.toml")
    disposition_form(
        trail,
        batches,
        user=st.session_state.get("user"),
        roles=st.session_state.get("roles", ["viewer"]),
    )


@pytest.fixture
def store(tmp_path, monkeypatch) -> Path:
    write_users(tmp_path / "users.toml")
    monkeypatch.delenv("BIOTWIN_FOUR_EYES_RISK", raising=False)
    return tmp_path


def trail_of(store: Path) -> AuditTrail:
    return AuditTrail(store / "audit", store / "users.toml")


def signed_in(store: Path, user: str = "qa") -> AppTest:
    at = AppTest.from_function(form_page, args=(str(store),), default_timeout=30)
    at.session_state["user"] = user
    at.session_state["roles"] = ["qa"]
    return at.run()


def fill(at: AppTest, batch: str, decision: str, reason: str, password: str) -> None:
    at.selectbox(key="disp_batch").set_value(batch).run()
    at.radio(key="disp_decision").set_value(decision).run()
    at.text_area(key="disp_reason").input(reason)
    at.text_input(key="disp_password").input(password)


def sign(at: AppTest) -> AppTest:
    return at.button(key="disp_sign").click().run()


def test_a_wrong_password_keeps_the_decision_and_the_reason(store):
    at = signed_in(store)
    fill(at, "B00010", "hold", "DO below envelope for 3 h", "not-the-password")
    sign(at)
    assert not at.exception
    assert [e.value for e in at.error] == ["signature refused: wrong user name or password"]
    assert at.radio(key="disp_decision").value == "hold"
    assert at.text_area(key="disp_reason").value == "DO below envelope for 3 h"
    assert at.text_input(key="disp_password").value == ""  # the password is never kept
    # the refusal is in the trail; signing again with the right password needs no retyping
    at.text_input(key="disp_password").input(PASSWORDS["qa"])
    sign(at)
    assert any("Signed: hold B00010" in s.value for s in at.success)
    trail = trail_of(store)
    assert [r["action"] for r in trail.records()] == ["signature_refused", "disposition"]
    assert trail.verify().ok


def test_an_empty_reason_is_refused_with_a_message_and_the_input_is_kept(store):
    at = signed_in(store)
    fill(at, "B00010", "reject", "   ", PASSWORDS["qa"])
    sign(at)
    assert not at.exception
    assert any(e.value.startswith("Reason: a disposition needs a reason") for e in at.error)
    assert at.radio(key="disp_decision").value == "reject"
    assert at.selectbox(key="disp_batch").value == "B00010"
    assert trail_of(store).records() == []  # nothing signed, nothing recorded


def test_a_signature_shows_the_full_name_the_meaning_and_the_local_time(store):
    at = signed_in(store)
    fill(at, "B00010", "release", "record reviewed, all CQAs in specification", PASSWORDS["qa"])
    assert not at.checkbox  # low risk, never held: one signature is enough
    sign(at)
    done = next(s.value for s in at.success if "Signed: release" in s.value)
    assert "Released by Quinn Avery (QA reviewer) — meaning: batch released for distribution" in (
        done
    )
    assert trail_of(store).decisions()["B00010"]["full_name"] == "Quinn Avery"
    # the batch's signatures stay in view
    assert any("Signatures on B00010" in m.value for m in at.markdown)


def test_a_high_risk_release_asks_for_a_second_signer_and_refuses_the_same_user(store):
    at = signed_in(store)
    fill(at, "B00098", "release", "reviewed: the DO dip was a probe fault", PASSWORDS["qa"])
    assert any("Four eyes" in w.value and "0.98 is above 0.50" in w.value for w in at.warning)
    sign(at)  # no confirmation, no second signer
    errors = " ".join(e.value for e in at.error)
    assert "Confirm the release of B00098" in errors and "Second signer:" in errors
    assert trail_of(store).records() == []

    at.checkbox(key="disp_confirm").check()
    at.text_input(key="disp_password").input(PASSWORDS["qa"])
    at.text_input(key="disp_second_user").input("qa")
    at.text_input(key="disp_second_password").input(PASSWORDS["qa"])
    sign(at)
    assert any("second signer must be a different user" in e.value for e in at.error)
    assert trail_of(store).decisions() == {}
    assert at.text_area(key="disp_reason").value == "reviewed: the DO dip was a probe fault"
    assert at.checkbox(key="disp_confirm").value is True


def test_a_high_risk_release_is_recorded_with_both_signers(store):
    at = signed_in(store)
    fill(at, "B00098", "release", "reviewed: the DO dip was a probe fault", PASSWORDS["qa"])
    at.checkbox(key="disp_confirm").check()
    at.text_input(key="disp_second_user").input("qa2")
    at.text_input(key="disp_second_password").input(PASSWORDS["qa2"])
    sign(at)
    assert not at.exception
    done = next(s.value for s in at.success if "Signed: release B00098" in s.value)
    assert "Released by Quinn Avery (QA reviewer)" in done
    assert "Second signature by Sam Okafor (QA reviewer) — meaning: second QA review" in done
    trail = trail_of(store)
    record = trail.decisions()["B00098"]
    assert (record["user"], record["second_user"], record["score"]) == ("qa", "qa2", 0.98)
    assert trail.verify().ok


def test_a_release_after_a_hold_needs_a_second_signer(store):
    at = signed_in(store)
    fill(at, "B00077", "hold", "QC result pending", PASSWORDS["qa"])  # B00077 has no score
    sign(at)
    fill(at, "B00077", "release", "QC result in specification", PASSWORDS["qa"])
    assert any("it was put on hold before" in w.value for w in at.warning)
    sign(at)
    assert any("Confirm the release of B00077" in e.value for e in at.error)
    at.checkbox(key="disp_confirm").check()
    at.text_input(key="disp_password").input(PASSWORDS["qa"])
    at.text_input(key="disp_second_user").input("qa2")
    at.text_input(key="disp_second_password").input("wrong")
    sign(at)
    assert any("second signer: wrong user name or password" in e.value for e in at.error)
    at.text_input(key="disp_password").input(PASSWORDS["qa"])
    at.text_input(key="disp_second_password").input(PASSWORDS["qa2"])
    sign(at)
    trail = trail_of(store)
    assert trail.decisions()["B00077"]["second_user"] == "qa2"
    actions = [(r["action"], r["decision"]) for r in trail.records()]
    assert actions == [
        ("disposition", "hold"),
        ("signature_refused", "release"),
        ("disposition", "release"),
    ]
    assert trail.verify().ok


@pytest.mark.parametrize(
    ("setting", "four_eyes"),
    [("0.99", False), ("0.9", True), ("", True), ("lots", True)],
    ids=["above-the-risk", "below-the-risk", "default", "bad-setting-is-strict"],
)
def test_the_risk_threshold_comes_from_the_environment(store, monkeypatch, setting, four_eyes):
    monkeypatch.setenv("BIOTWIN_FOUR_EYES_RISK", setting)
    at = signed_in(store)
    fill(at, "B00098", "release", "x", PASSWORDS["qa"])
    assert bool(at.checkbox) is four_eyes
    if setting == "lots":
        assert any("BIOTWIN_FOUR_EYES_RISK must be a number" in e.value for e in at.error)


def test_a_viewer_sees_no_form(store):
    at = AppTest.from_function(form_page, args=(str(store),), default_timeout=30).run()
    assert any("Only QA can disposition" in w.value for w in at.warning)
    assert len(at.button) == 0


# ------------------------------------------------------------------ sign-in and its cookie
def test_a_session_token_round_trips_and_expires():
    from dashboard.session import read_session_token, session_token

    key = b"k" * 32
    token = session_token("qa", key, now=1_000_000.0, hours=8)
    assert read_session_token(token, key, now=1_000_000.0) == ("qa", 1_000_000.0 + 8 * 3600)
    assert read_session_token(token, key, now=1_000_000.0 + 8 * 3600 - 1)[0] == "qa"
    assert read_session_token(token, key, now=1_000_000.0 + 8 * 3600) is None  # expired
    assert session_token("qa", key, now=0) != session_token("qa", key, now=0)  # a nonce each


def tampered(token: str, key: bytes) -> list[str]:
    import base64

    body, mac = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps({**claims, "u": "qa2"}).encode()).decode()
    longer = base64.urlsafe_b64encode(json.dumps({**claims, "exp": 2**40}).encode()).decode()
    return [
        f"{forged.rstrip('=')}.{mac}",  # another user, same signature
        f"{longer.rstrip('=')}.{mac}",  # a later expiry, same signature
        f"{body}.{mac[:-2]}AA",  # signature altered
        body,  # signature removed
        "",
        "not.a.token",
    ]


def test_a_tampered_or_foreign_token_is_refused():
    from dashboard.session import read_session_token, session_token

    key = b"k" * 32
    token = session_token("qa", key, now=1_000.0)
    for bad in tampered(token, key):
        assert read_session_token(bad, key, now=1_000.0) is None, bad
    assert read_session_token(token, b"x" * 32, now=1_000.0) is None  # another store's key
    assert read_session_token(None, key) is None


def test_the_session_key_is_made_once_and_private(tmp_path):
    from dashboard.session import session_key

    key = session_key(tmp_path)
    path = tmp_path / "secrets" / "session.key"
    assert len(key) == 32 and session_key(tmp_path) == key
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "secrets").stat().st_mode & 0o077 == 0
    assert [p.name for p in (tmp_path / "secrets").iterdir()] == ["session.key"]
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match=r"session\.key must hold at least 32 bytes; got 5"):
        session_key(tmp_path)


def sidebar_page() -> None:
    from dashboard.session import sign_in_box, sign_in_form

    if not sign_in_box():  # what dashboard/app.py's sign-in page shows
        sign_in_form()


def cookie_scripts(at: AppTest) -> list[str]:
    return [h.proto.body for h in at.get("html")]


@pytest.fixture
def app_store(store, monkeypatch):
    monkeypatch.setenv("BIOTWIN_DATA_DIR", str(store))
    return store


def test_signing_in_sets_a_signed_cookie_and_the_form_goes(app_store):
    from dashboard.session import COOKIE, read_session_token, session_key

    at = AppTest.from_function(sidebar_page, default_timeout=30).run()
    at.text_input(key="login_user").input("qa")
    at.text_input(key="login_password").input(PASSWORDS["qa"])
    at.button[0].click().run()
    assert not at.exception
    assert at.session_state["user"] == "qa" and at.session_state["roles"] == ["qa"]
    assert len(at.text_input) == 0  # the sign-in box is gone in the same run
    shown = " ".join(m.value for m in at.markdown)
    assert "Signed in: **qa** (qa)" in shown and "Quinn Avery" in shown
    (script,) = cookie_scripts(at)
    token = script.split(f"{COOKIE}=")[1].split(";")[0]
    assert read_session_token(token, session_key(app_store))[0] == "qa"
    assert "Max-Age=43200" in script and "SameSite=Strict" in script

    at.button[0].click().run()  # Sign out
    assert "user" not in at.session_state and len(at.text_input) == 2
    assert any("Max-Age=0" in s for s in cookie_scripts(at))


def test_a_wrong_password_signs_nobody_in(app_store):
    at = AppTest.from_function(sidebar_page, default_timeout=30).run()
    at.text_input(key="login_user").input("qa")
    at.text_input(key="login_password").input("guess")
    at.button[0].click().run()
    assert [e.value for e in at.error] == ["sign-in refused: wrong user name or password"]
    assert "user" not in at.session_state and not cookie_scripts(at)


def test_a_reload_with_the_cookie_keeps_the_user_signed_in(app_store, monkeypatch):
    from dashboard import session

    token = session.session_token("qa", session.session_key(app_store))
    monkeypatch.setattr(session, "_browser_cookie", lambda: token)
    at = AppTest.from_function(sidebar_page, default_timeout=30).run()  # a new browser session
    assert at.session_state["user"] == "qa" and at.session_state["full_name"] == "Quinn Avery"
    assert len(at.text_input) == 0
    # signing out is not undone by the cookie the browser connected with
    at.button[0].click().run()
    at.run()
    assert "user" not in at.session_state


@pytest.mark.parametrize("case", ["tampered", "expired", "user-removed", "user-disabled"])
def test_a_reload_with_a_bad_cookie_shows_the_sign_in_form(app_store, monkeypatch, case):
    from dashboard import session

    key = session.session_key(app_store)
    token = session.session_token("qa", key)
    if case == "tampered":
        token = tampered(token, key)[0]
    elif case == "expired":
        token = session.session_token("qa", key, now=0.0)
    elif case == "user-removed":
        users = app_store / "users.toml"
        users.write_text(users.read_text().replace('[users."qa"]', '[users."someone-else"]'))
    else:
        from connectors.security import set_disabled

        set_disabled(app_store / "users.toml", "qa")
    monkeypatch.setattr(session, "_browser_cookie", lambda: token)
    at = AppTest.from_function(sidebar_page, default_timeout=30).run()
    assert "user" not in at.session_state and len(at.text_input) == 2


@pytest.mark.parametrize(
    ("plant", "tz", "shown"),
    [
        ("Europe/Zurich", None, "2026-12-05 14:03 CET"),
        ("Europe/Zurich", "Asia/Tokyo", "2026-12-05 22:03 JST"),
        ("Europe/Zurich", "Nowhere/Atlantis", "2026-12-05 14:03 CET"),
    ],
    ids=["plant-zone", "given-zone", "unknown-zone-falls-back"],
)
def test_signature_times_are_local(monkeypatch, plant, tz, shown):
    from dashboard.disposition import local_time

    monkeypatch.setenv("BIOTWIN_TZ", plant)
    assert local_time("2026-12-05T13:03:00.000+00:00", tz) == shown
