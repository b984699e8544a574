"""The audit trail: append-only, signed, anchored records of QA decisions with e-signatures.

GMP (21 CFR Part 11 / EU GMP Annex 11) asks that a disposition records who, when, what,
why and the meaning of the signature, that the signer re-enters their password, and that
nobody can change a record unnoticed. Each record here is one JSON line in
``DATA_DIR/audit/trail.jsonl``, signed with the records key kept outside the data dir and
anchored next to it (:mod:`connectors.signed_log`, docs/records.md): editing, deleting,
reordering or re-hashing any record, or deleting the newest, breaks the chain, and
:meth:`AuditTrail.verify` says where. Every read verifies: :meth:`AuditTrail.records` and
:meth:`AuditTrail.decisions` give only the verified prefix (records before the first
break), and :meth:`AuditTrail.decisions` carries the verification for the pages' banner.
A line that cannot be read is reported and skipped, never rewritten, and never stops new
signatures. Appends take a file lock, are flushed and fsynced.

Signatures: :meth:`AuditTrail.sign` checks the user's password against ``users.toml``
(scrypt hashes, :mod:`connectors.security`) and the role; a refused signature is itself
recorded (``signature_refused``), never silently dropped. A record carries the signer's full
name and role as they were when signing. A decision that needs four eyes carries a second
signature by a different user (``second_user``, ``second_full_name``, ``second_meaning``),
verified in the same way; the record is written only when both signatures verify.

Records written before the second-signer fields existed hash without them, and records
written before the key existed (no ``mac``) are unsigned legacy records, accepted once a
signed record or an adoption (``biotwin keys init --adopt``) seals them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from connectors.security import SignInError, authenticate, load_users
from connectors.signed_log import GENESIS, LogState, RecordsError, SignedLog, Verification

__all__ = [
    "DECISIONS",
    "GENESIS",
    "AuditTrail",
    "Decisions",
    "SignatureError",
    "Verification",
    "integrity_alarms",
    "integrity_banner",
]

logger = logging.getLogger(__name__)

DECISIONS = ("investigate", "hold", "release", "reject")
_FIELDS = (
    "seq",
    "time",
    "user",
    "action",
    "batch_id",
    "decision",
    "reason",
    "meaning",
    "model_version",
    "score",
    "prev_hash",
)
#: fields added later: part of the hash when present in a record (older records lack them)
_EXTRA_FIELDS = (
    "full_name",
    "role",
    "second_user",
    "second_full_name",
    "second_meaning",
)


class SignatureError(PermissionError):
    """A signature was refused: wrong password, unknown user or missing role."""


class Decisions(dict):
    """The latest signed disposition of each batch (a dict), from the verified prefix of
    the trail; ``verification`` says whether the whole trail verified."""

    def __init__(self, latest: dict, verification: Verification) -> None:
        super().__init__(latest)
        self.verification = verification


def _digest(record: dict) -> str:
    content = {k: record.get(k) for k in _FIELDS}
    content.update({k: record[k] for k in _EXTRA_FIELDS if k in record})
    body = json.dumps(content, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


class AuditTrail:
    """Append-only, hash-chained audit trail in ``root/trail.jsonl``.

    Parameters
    ----------
    root : path
        Directory of the trail (``DATA_DIR/audit``).
    users_file : path
        users.toml with password hashes and roles.
    """

    def __init__(self, root: str | os.PathLike, users_file: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "trail.jsonl"
        self.users_file = Path(users_file)
        self._log = SignedLog(
            self.path, required=("action", "user", "batch_id"), digest=_digest, kind="action"
        )

    def state(self) -> LogState:
        """One verified read: every readable record, the verified prefix, the verification."""
        return self._log.read()

    def records(self) -> list[dict]:
        """The verified records, oldest first (those before the first break of the chain)."""
        return self.state().verified

    def all_records(self) -> list[dict]:
        """Every readable record, verified or not (to show what is there)."""
        return self.state().records

    def _append(self, **fields) -> dict:
        record = {k: fields.get(k) for k in _FIELDS if k not in ("seq", "time", "prev_hash")}
        record.update({k: fields[k] for k in _EXTRA_FIELDS if k in fields})
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        try:
            return self._log.append(record, now=now)
        except RecordsError as exc:
            raise SignatureError(f"not recorded: {exc}") from exc

    def adopt(self, *, user: str, reason: str) -> dict:
        """Vouch for the trail as it is (legacy or broken records, after an investigation):
        a signed ``adopted`` record holding the SHA-256 of every byte before it, from which
        verification restarts.

        Raises
        ------
        ValueError
            If ``reason`` is empty (nothing recorded).
        SignatureError
            Without a usable signing key (nothing recorded).
        """
        if not reason.strip():
            raise ValueError("reason: an adoption needs a reason; got ''")
        fields = {k: None for k in _FIELDS if k not in ("seq", "time", "prev_hash")}
        fields.update(user=user, reason=reason, meaning="I adopt the records above as they are")
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        try:
            return self._log.append(fields, now=now, adopt=True)
        except RecordsError as exc:
            raise SignatureError(f"not recorded: {exc}") from exc

    def _check(self, user: str, password: str, role: str) -> tuple[dict | None, str]:
        """(users.toml entry, problem): the problem is '' when the signature verifies."""
        try:  # the sign-in rules: recorded, locked out after failures, disabled users refused
            entry = authenticate(self.users_file, user, password, source="signature")
        except SignInError as exc:
            return None, str(exc).removeprefix("sign-in refused: ")
        if role not in entry.get("roles", []):
            return None, f"user {user!r} lacks the {role!r} role"
        return entry, ""

    def sign(
        self,
        *,
        user: str,
        password: str,
        batch_id: str,
        decision: str,
        reason: str,
        meaning: str,
        model_version: str | None = None,
        score: float | None = None,
        role: str = "qa",
        second_user: str | None = None,
        second_password: str = "",
        second_meaning: str = "",
    ) -> dict:
        """Record a disposition signed by ``user`` (password re-entered).

        With ``second_user`` the disposition needs a second signature (four eyes): a
        different user with the same ``role`` re-enters their password, and the record,
        written only when both signatures verify, holds both signers and both meanings.

        Raises
        ------
        SignatureError
            Wrong password, unknown user, a user without ``role``, or the same user as
            second signer; the refusal is recorded.
        ValueError
            Unknown decision, or an empty reason or meaning (nothing recorded).
        """
        if decision not in DECISIONS:
            raise ValueError(f"decision: must be one of {DECISIONS}; got {decision!r}")
        if not reason.strip():
            raise ValueError("reason: must not be empty; got ''")
        if not meaning.strip():
            raise ValueError("meaning: the meaning of the signature is required; got ''")
        if second_user is not None and not second_meaning.strip():
            raise ValueError(
                "second_meaning: the meaning of the second signature is required; got ''"
            )
        entry, problem = self._check(user, password, role)
        second_entry = None
        if not problem and second_user is not None:
            if second_user.strip().lower() == user.strip().lower():
                problem = (
                    f"four eyes: the second signer must be a different user; got {user!r} twice"
                )
            else:
                second_entry, second_problem = self._check(second_user, second_password, role)
                if second_problem:
                    problem = f"second signer: {second_problem}"
        if problem:
            self._append(
                user=user,
                action="signature_refused",
                batch_id=batch_id,
                decision=decision,
                reason=problem,
                meaning=meaning,
                **({} if second_user is None else {"second_user": second_user}),
            )
            logger.warning("signature refused for %s on %s: %s", user, batch_id, problem)
            raise SignatureError(f"signature refused: {problem}")
        second = {}
        if second_entry is not None:
            second = {
                "second_user": second_user,
                "second_full_name": second_entry.get("full_name") or second_user,
                "second_meaning": second_meaning,
            }
        return self._append(
            user=user,
            action="disposition",
            batch_id=batch_id,
            decision=decision,
            reason=reason,
            meaning=meaning,
            model_version=model_version,
            score=None if score is None else float(score),
            full_name=entry.get("full_name") or user,
            role=role,
            **second,
        )

    def held(self, batch_id: str) -> bool:
        """Whether ``batch_id`` was ever put on hold by a signed disposition."""
        return any(
            r["action"] == "disposition" and r["batch_id"] == batch_id and r["decision"] == "hold"
            for r in self.records()
        )

    def acknowledge(
        self,
        *,
        user: str,
        event_id: str,
        message: str,
        batch_id: str | None = None,
        roles=("qa", "engineer", "maintenance"),
    ) -> dict:
        """Record that ``user`` acknowledged an alarm or event (no password: an
        acknowledgement says "seen", it is not a signature).

        The record has action ``acknowledge``, the event's id in ``decision``, its message
        in ``reason`` and the batch it concerns, if any, in ``batch_id``.

        Raises
        ------
        SignatureError
            If ``user`` is not in users.toml or has none of ``roles`` (nothing recorded).
        ValueError
            If ``event_id`` is empty (nothing recorded).
        """
        if not event_id.strip():
            raise ValueError("event_id: must not be empty; got ''")
        entry = load_users(self.users_file).get(user)
        if entry is None or not set(roles) & set(entry.get("roles", [])):
            raise SignatureError(
                f"acknowledgement refused: user {user!r} needs one of the roles "
                f"{', '.join(roles)}; has {', '.join((entry or {}).get('roles', [])) or 'none'}"
            )
        return self._append(
            user=user,
            action="acknowledge",
            batch_id=batch_id,
            decision=event_id,
            reason=message,
            meaning="acknowledged: seen, action taken or none needed",
        )

    def verify(self) -> Verification:
        """Verify the chain, the signatures and the anchor (see :class:`Verification`)."""
        return self.state().verification

    def export_csv(self, out: str | os.PathLike) -> Path:
        """Write every readable record as CSV, with a ``verified`` column (temp file, then
        rename)."""
        out = Path(out)
        state = self.state()
        tmp = out.with_name(out.name + ".tmp")
        columns = [*_FIELDS, *_EXTRA_FIELDS, "hash", "key_id", "mac", "verified"]
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for n, record in enumerate(state.records):
                writer.writerow({**record, "verified": n < len(state.verified)})
        os.replace(tmp, out)
        return out

    def decisions(self) -> Decisions:
        """The latest signed disposition of each batch, from the verified records only;
        ``.verification`` tells whether (and where) the trail is broken."""
        state = self.state()
        latest = {}
        for r in state.verified:
            if r["action"] == "disposition":
                latest[r["batch_id"]] = r
        return Decisions(latest, state.verification)


def integrity_banner(verification: Verification, what: str = "audit trail") -> str | None:
    """The line a page shows when a signed log does not verify (None when it does)."""
    if verification.ok:
        return None
    if verification.intact:
        return (
            f"The {what} has unreadable lines (skipped; the signed chain is intact): "
            + (verification.summary().split("; ", 1)[-1])
        )
    return (
        f"The {what} does not verify: {verification.problem}. Only the "
        f"{verification.verified} records before it are used; investigate "
        "(`biotwin audit verify`, docs/records.md)."
    )


def integrity_alarms(store: str | os.PathLike) -> list[dict]:
    """Alarm rows (the columns of :data:`dashboard.events.COLUMNS`) for the audit trail and
    the model registry of ``store`` when they do not verify."""
    from quality.registry import Registry

    store = Path(store)
    checks = []
    if (store / "audit" / "trail.jsonl").exists():
        checks.append(("audit trail", "audit/trail.jsonl", _trail_of(store).verify()))
    if (store / "models" / "registry.jsonl").exists():
        checks.append(
            ("model registry", "models/registry.jsonl", Registry(store / "models").verification())
        )
    rows = []
    for what, source, check in checks:
        text = integrity_banner(check, what)
        if text is None:
            continue
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        rows.append(
            {
                "key": f"records:{source}:{digest}",
                "time": datetime.now(UTC),
                "unit": "—",
                "type": "records integrity",
                "severity": "high" if not check.intact else "medium",
                "message": text[:400],
                "batch_id": None,
                "source": source,
                "ongoing": True,
            }
        )
    return rows


def _trail_of(store: Path) -> AuditTrail:
    return AuditTrail(store / "audit", store / "users.toml")
