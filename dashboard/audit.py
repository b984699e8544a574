"""The audit trail: append-only, hash-chained records of QA decisions with e-signatures.

GMP (21 CFR Part 11 / EU GMP Annex 11) asks that a disposition records who, when, what,
why and the meaning of the signature, that the signer re-enters their password, and that
nobody can change a record unnoticed. Each record here is one JSON line in
``DATA_DIR/audit/trail.jsonl``; its ``hash`` is the SHA-256 of its content together with
the previous record's hash, so editing, deleting or reordering any record breaks the chain
from that record on (:meth:`AuditTrail.verify` finds where). Appends take a file lock,
are flushed and fsynced; the file is opened in append mode only.

Signatures: :meth:`AuditTrail.sign` checks the user's password against ``users.toml``
(scrypt hashes, :mod:`connectors.security`) and the role; a refused signature is itself
recorded (``signature_refused``), never silently dropped. A record carries the signer's full
name and role as they were when signing. A decision that needs four eyes carries a second
signature by a different user (``second_user``, ``second_full_name``, ``second_meaning``),
verified in the same way; the record is written only when both signatures verify.

Records written before the second-signer fields existed hash without them, so the chain of
an older trail still verifies.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from connectors.security import load_users, verify_password

__all__ = ["DECISIONS", "AuditTrail", "SignatureError", "Verification"]

logger = logging.getLogger(__name__)

DECISIONS = ("investigate", "hold", "release", "reject")
GENESIS = "0" * 64
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


@dataclass(frozen=True)
class Verification:
    """Result of :meth:`AuditTrail.verify`."""

    ok: bool
    records: int
    first_bad: int | None = None
    problem: str = ""


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

    def records(self) -> list[dict]:
        """All records, oldest first."""
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def _append(self, **fields) -> dict:
        with open(self.path, "a", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                existing = self.records()
                prev = existing[-1]["hash"] if existing else GENESIS
                record = {k: fields.get(k) for k in _FIELDS}
                record.update({k: fields[k] for k in _EXTRA_FIELDS if k in fields})
                record.update(
                    seq=len(existing) + 1,
                    time=datetime.now(UTC).isoformat(timespec="milliseconds"),
                    prev_hash=prev,
                )
                record["hash"] = _digest(record)
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return record

    def _check(self, user: str, password: str, role: str) -> tuple[dict | None, str]:
        """(users.toml entry, problem): the problem is '' when the signature verifies."""
        entry = load_users(self.users_file).get(user)
        if entry is None or not verify_password(password, entry.get("password", "")):
            return None, "wrong user name or password"
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
        """Re-compute the chain; the first record that does not match is reported."""
        prev = GENESIS
        records = self.records()
        for i, record in enumerate(records, start=1):
            if record.get("seq") != i:
                return Verification(False, len(records), i, f"record {i}: sequence broken")
            if record.get("prev_hash") != prev:
                return Verification(False, len(records), i, f"record {i}: chain broken")
            if _digest(record) != record.get("hash"):
                return Verification(False, len(records), i, f"record {i}: content changed")
            prev = record["hash"]
        return Verification(True, len(records))

    def export_csv(self, out: str | os.PathLike) -> Path:
        """Write the trail as CSV (temp file, then rename)."""
        out = Path(out)
        tmp = out.with_name(out.name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=[*_FIELDS, *_EXTRA_FIELDS, "hash"])
            writer.writeheader()
            writer.writerows(self.records())
        os.replace(tmp, out)
        return out

    def decisions(self) -> dict[str, dict]:
        """The latest signed disposition of each batch."""
        latest = {}
        for r in self.records():
            if r["action"] == "disposition":
                latest[r["batch_id"]] = r
        return latest
