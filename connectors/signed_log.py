"""Signed, anchored, append-only JSON-lines logs: the audit trail and the model registry.

The signing key
    An HMAC-SHA256 key (32 random bytes, stored as 64 hex characters) in a file the
    operator keeps apart from the data dir: ``$BIOTWIN_KEY_FILE``, else
    ``$XDG_CONFIG_HOME/biotwin/records.key`` (``~/.config/biotwin/records.key``). Made by
    ``biotwin keys init`` (mode 0600, never overwritten) or, when missing, by ``biotwin up``,
    which says where. Its key id is the first 8 hex digits of the SHA-256 of the key.

A record
    One JSON object per line: the log's own fields plus ``seq`` (1, 2, ...), ``time``,
    ``prev_hash`` and ``hash`` (the unkeyed SHA-256 chain of earlier versions), ``key_id``
    and ``mac`` = HMAC(key, previous record's mac + "\\n" + canonical JSON of the record
    without ``mac``). Without the key nobody can write a record that verifies.

The anchor
    ``<key dir>/anchors/<sha256 of the log's absolute path>.json`` holds the seq and mac of
    the newest record appended, under an HMAC of its own, replaced atomically after every
    append. A log whose newest records were deleted ends before its anchor: detected.

Verification (:meth:`SignedLog.read`, on every read) walks the log: a record breaks the
chain when its seq does not follow, its ``prev_hash`` or ``hash`` does not match, it was
signed with another key, or its mac does not match; the records before the first break are
the *verified prefix*, the only ones callers use. A line that is not a JSON object with the
required fields is reported with its line number and skipped (the file is never rewritten);
when it replaced a signed record the next record's seq and ``prev_hash`` show the gap.
Appending never stops: a new record continues from the last readable record and from the
anchor's seq, so a gap stays visible forever.

Unsigned records written before keys existed (``legacy``) are accepted at the start of a
log once a signed record follows them (its ``prev_hash`` fixes their content); an *adoption*
record (``adopt``) vouches for everything before it by the SHA-256 of those bytes, signed
with the key, and verification restarts there (see docs/records.md).

Exceptions::

    RecordsError
     ├── KeyMissingError    no key file where one is expected
     └── KeyFileError       a key file that exists but cannot be used (or would be replaced)
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "GENESIS",
    "KEY_ENV",
    "KeyFileError",
    "KeyMissingError",
    "LogState",
    "RecordsError",
    "SignedLog",
    "SigningKey",
    "Verification",
    "ensure_key",
    "init_key",
    "key_path",
    "load_key",
]

logger = logging.getLogger(__name__)

KEY_ENV = "BIOTWIN_KEY_FILE"
GENESIS = "0" * 64
ADOPTED = "adopted"
_KEY_BYTES = 32


class RecordsError(Exception):
    """Base class of the errors of signed logs and their key."""


class KeyMissingError(RecordsError):
    """No signing key file where one is expected."""


class KeyFileError(RecordsError):
    """A signing key file that cannot be used: unreadable, malformed, open to others."""


# ---------------------------------------------------------------------- the key
def key_path() -> Path:
    """Where the signing key is: $BIOTWIN_KEY_FILE, else the user's config directory."""
    explicit = os.environ.get(KEY_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME", "").strip() or str(Path.home() / ".config")
    return Path(config) / "biotwin" / "records.key"


@dataclass(frozen=True)
class SigningKey:
    """The HMAC key (never shown in a repr) with its id and file."""

    secret: bytes = field(repr=False)
    key_id: str
    path: Path

    def mac(self, prev_mac: str, record: dict) -> str:
        """HMAC-SHA256 of the previous mac and the canonical JSON of ``record``."""
        body = {k: v for k, v in record.items() if k != "mac"}
        text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        data = prev_mac.encode() + b"\n" + text.encode()
        return hmac.new(self.secret, data, hashlib.sha256).hexdigest()

    def verify(self, prev_mac: str, record: dict) -> bool:
        """Whether ``record["mac"]`` is this key's mac of the record."""
        return hmac.compare_digest(str(record.get("mac", "")), self.mac(prev_mac, record))


def _key_id(secret: bytes) -> str:
    return hashlib.sha256(secret).hexdigest()[:8]


def load_key(path: str | os.PathLike | None = None) -> SigningKey:
    """The signing key from ``path`` (default :func:`key_path`).

    Raises
    ------
    KeyMissingError
        No file there.
    KeyFileError
        The file is readable by group or others, or does not hold 64 hex digits.
    """
    path = Path(path) if path is not None else key_path()
    if not path.is_file():
        raise KeyMissingError(
            f"signing key: no key file at {path}; create one with `biotwin keys init` "
            f"(or point {KEY_ENV} at yours)"
        )
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyFileError(
            f"signing key: {path} must be readable by its owner only (mode 0600); "
            f"got mode {mode:04o} (chmod 600 {path})"
        )
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) != _KEY_BYTES:
        raise KeyFileError(
            f"signing key: {path} must hold {2 * _KEY_BYTES} hex digits; got {len(text)} "
            "characters that are not such a key"
        )
    return SigningKey(secret=secret, key_id=_key_id(secret), path=path)


def init_key(path: str | os.PathLike | None = None) -> SigningKey:
    """Create a new key file (32 random bytes, mode 0600) at ``path``.

    Raises
    ------
    KeyFileError
        If a file is already there (a key is never replaced: records signed with it would
        no longer verify).
    """
    path = Path(path) if path is not None else key_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = secrets.token_bytes(_KEY_BYTES)
    fd, tmp = tempfile.mkstemp(prefix=".records.key.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (secret.hex() + "\n").encode())
        os.fsync(fd)
        os.close(fd)
        try:
            os.link(tmp, path)  # fails if a key is there, unlike a rename
        except FileExistsError:
            raise KeyFileError(
                f"signing key: {path} exists; a key is never replaced (records signed with "
                "it would no longer verify)"
            ) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    logger.warning("created the records signing key %s (key id %s)", path, _key_id(secret))
    return SigningKey(secret=secret, key_id=_key_id(secret), path=path)


def ensure_key(path: str | os.PathLike | None = None) -> tuple[SigningKey, bool]:
    """The signing key, created when there is none: (key, created)."""
    try:
        return load_key(path), False
    except KeyMissingError:
        try:
            return init_key(path), True
        except KeyFileError:  # made meanwhile by another process
            return load_key(path), False


# ---------------------------------------------------------------------- verification
@dataclass(frozen=True)
class Verification:
    """What verifying a log found.

    ``intact``: every readable record verifies up to the anchor (the records can be used);
    ``ok``: intact and no unreadable line. ``first_bad`` is the seq (``line`` the line) of
    the first record that breaks the chain; ``verified`` the records before it.
    """

    intact: bool
    records: int
    first_bad: int | None = None
    problem: str = ""
    verified: int = 0
    line: int | None = None
    malformed: tuple[tuple[int, str], ...] = ()
    legacy: int = 0
    adopted: int = 0
    key_id: str = ""
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Intact, and every line readable."""
        return self.intact and not self.malformed

    def summary(self) -> str:
        """One line: intact, or where and why the chain breaks, and unreadable lines."""
        if self.intact:
            text = f"chain verified: {self.verified} of {self.records} records intact"
        else:
            text = f"chain broken: {self.problem}; {self.verified} records before it verify"
        if self.malformed:
            where = ", ".join(f"line {n} ({why})" for n, why in self.malformed[:3])
            more = f" and {len(self.malformed) - 3} more" if len(self.malformed) > 3 else ""
            text += (
                f"; {len(self.malformed)} unreadable line(s) skipped and kept in place: "
                f"{where}{more}"
            )
        return text


#: (problem, seq of the first record that does not verify, its line), or three Nones
_Break = tuple[str | None, int | None, int | None]


@dataclass
class _Entry:
    line: int
    offset: int
    record: dict


@dataclass(frozen=True)
class LogState:
    """One read of a log: every readable record, the verified prefix, the verification."""

    records: list[dict]
    verified: list[dict]
    verification: Verification


# ---------------------------------------------------------------------- the log
class SignedLog:
    """A signed, anchored JSON-lines log at ``path``.

    Parameters
    ----------
    path : path
        The log file.
    required : tuple of str
        Fields a record of this log must have besides seq, prev_hash and hash.
    digest : callable
        The unkeyed SHA-256 ``hash`` of a record (as the log has always computed it).
    kind : str
        The field that names what a record is (``action``, ``event``); an adoption
        record has ``kind == "adopted"``.
    key_file : path, optional
        The signing key (default :func:`key_path`, read at each use).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        required: tuple[str, ...],
        digest: Callable[[dict], str],
        kind: str,
        key_file: str | os.PathLike | None = None,
    ) -> None:
        self.path = Path(path)
        self.required = ("seq", "prev_hash", "hash", *required)
        self.digest = digest
        self.kind = kind
        self.key_file = key_file

    def key(self) -> SigningKey:
        """The signing key (see :func:`load_key` for the errors)."""
        return load_key(self.key_file)

    def anchor_path(self, key: SigningKey) -> Path:
        """The anchor file of this log, next to the key."""
        name = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:24]
        return key.path.parent / "anchors" / f"{name}.json"

    # ---------------------------------------------------------------- reading
    def _parse(self) -> tuple[bytes, list[_Entry], list[tuple[int, str]]]:
        data = self.path.read_bytes() if self.path.exists() else b""
        entries, malformed, offset = [], [], 0
        for n, raw in enumerate(data.split(b"\n"), start=1):
            start, offset = offset, offset + len(raw) + 1
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                malformed.append((n, f"not JSON: {getattr(exc, 'msg', exc)}"))
                continue
            if not isinstance(record, dict):
                malformed.append((n, f"not a JSON object: {type(record).__name__}"))
                continue
            missing = [f for f in self.required if f not in record]
            if missing:
                malformed.append((n, f"missing fields {', '.join(missing)}"))
                continue
            if type(record["seq"]) is not int:
                malformed.append((n, f"seq must be an integer; got {record['seq']!r}"))
                continue
            entries.append(_Entry(n, start, record))
        return data, entries, malformed

    def read(self) -> LogState:
        """Every readable record, the verified prefix and the verification, in one read
        (under a shared lock, so that a record and its anchor are seen together)."""
        if not self.path.exists():
            return self._verify(b"", [], [])
        with open(self.path, "rb") as fh:
            fcntl.flock(fh, fcntl.LOCK_SH)
            try:
                data, entries, malformed = self._parse()
                return self._verify(data, entries, malformed)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _verify(self, data: bytes, entries: list[_Entry], malformed) -> LogState:
        records = [e.record for e in entries]
        base = {"records": len(records), "malformed": tuple(malformed)}
        try:
            key = self.key()
        except RecordsError as exc:
            if not records:
                return LogState([], [], Verification(True, **base))
            first = entries[0]
            bad = Verification(
                False, first_bad=first.record["seq"], line=first.line, problem=str(exc), **base
            )
            return LogState(records, [], bad)
        start, adopted = self._adoption(key, data, entries)
        walk = _Walk(self, key, entries[start:], entries[start].record if adopted else None)
        problem, first_bad, line = walk.run()
        if problem is None:
            problem, first_bad, line = self._check_anchor(key, walk, entries)
        usable = start + walk.verified
        verification = Verification(
            intact=problem is None,
            first_bad=first_bad,
            line=line,
            problem=problem or "",
            verified=usable,
            legacy=walk.legacy,
            adopted=start,
            key_id=key.key_id,
            notes=tuple(walk.notes),
            **base,
        )
        return LogState(records, records[:usable], verification)

    def _adoption(self, key: SigningKey, data: bytes, entries: list[_Entry]) -> tuple[int, bool]:
        """(index of the last valid adoption record, found): verification starts there."""
        for i in range(len(entries) - 1, -1, -1):
            rec = entries[i].record
            if rec.get(self.kind) != ADOPTED or "mac" not in rec:
                continue
            if rec.get("key_id") != key.key_id or not key.verify(GENESIS, rec):
                continue
            if hashlib.sha256(data[: entries[i].offset]).hexdigest() == rec.get("adopted_sha256"):
                return i, True
        return 0, False

    def _check_anchor(self, key: SigningKey, walk: _Walk, entries) -> _Break:
        """The tail against the anchor: (problem, first bad seq, line) or Nones."""
        anchor = _read_anchor(self.anchor_path(key))
        last = walk.last
        last_seq = last.record["seq"] if last is not None else 0
        after = (last_seq + 1, None)
        if anchor is None:
            if walk.signed:
                path = self.anchor_path(key)
                return f"anchor missing: {path} (the newest records cannot be checked)", *after
            return None, None, None
        expected = _anchor_mac(key, anchor.get("seq"), anchor.get("mac"))
        if not hmac.compare_digest(str(anchor.get("anchor_mac", "")), expected):
            return f"anchor {self.anchor_path(key)} was changed (its mac does not match)", *after
        seq = anchor["seq"]
        if seq > last_seq:
            return (
                f"newest records removed: the anchor holds seq {seq}, the log ends at seq "
                f"{last_seq}",
                *after,
            )
        for e in entries:
            if e.record["seq"] == seq and e.record.get("mac") != anchor.get("mac"):
                return f"record seq {seq} differs from the anchored one", seq, e.line
        if seq < last_seq:
            walk.notes.append(
                f"records after seq {seq} are signed but were not anchored (a stop between "
                "writing a record and its anchor)"
            )
        return None, None, None

    # ---------------------------------------------------------------- appending
    def append(self, fields: dict, *, now: str, adopt: bool = False) -> dict:
        """Sign and append one record; the anchor follows. Never refused for an earlier
        break or an unreadable line (they stay reported).

        Raises
        ------
        KeyMissingError, KeyFileError
            Without a usable key nothing is written.
        """
        key = self.key()
        fields = json.loads(json.dumps(fields, ensure_ascii=False, default=str))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                data, entries, _ = self._parse()
                anchor = _read_anchor(self.anchor_path(key)) or {}
                last = entries[-1].record if entries else None
                seq = max(last["seq"] if last else 0, int(anchor.get("seq") or 0)) + 1
                record = dict(fields, seq=seq, time=now)
                record["prev_hash"] = last["hash"] if last else GENESIS
                if adopt:
                    record.update(
                        {self.kind: ADOPTED, "adopted_sha256": hashlib.sha256(data).hexdigest()}
                    )
                    record["adopted_lines"] = sum(1 for raw in data.split(b"\n") if raw.strip())
                record["key_id"] = key.key_id
                record["hash"] = self.digest(record)
                prev_mac = GENESIS if adopt or last is None else last.get("mac", GENESIS)
                record["mac"] = key.mac(prev_mac, record)
                line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
                lead = b"\n" if data and not data.endswith(b"\n") else b""
                fh.write(lead + line.encode())
                fh.flush()
                os.fsync(fh.fileno())
                _write_anchor(self.anchor_path(key), key, self.path, seq, record["mac"])
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return json.loads(line)


class _Walk:
    """The chain walk of :meth:`SignedLog.read`, from the start or an adoption record."""

    def __init__(self, log: SignedLog, key: SigningKey, entries: list[_Entry], adoption):
        self.log, self.key, self.entries = log, key, entries
        self.expected = adoption["seq"] if adoption else 1
        self.prev_hash = adoption["prev_hash"] if adoption else GENESIS
        self.prev_mac = GENESIS
        self.signed = False
        self.legacy = self.verified = 0
        self.last: _Entry | None = None
        self.notes: list[str] = []

    def run(self) -> _Break:
        """(problem, first bad seq, line) where the chain first breaks, or Nones."""
        for e in self.entries:
            problem = self._problem(e.record)
            if problem:
                first_bad = min(e.record["seq"], self.expected)
                return f"record seq {e.record['seq']} (line {e.line}): {problem}", first_bad, e.line
            self.prev_hash = e.record["hash"]
            self.expected = e.record["seq"] + 1
            self.verified += 1
            self.last = e
        if self.legacy and not self.signed:
            self.verified = 0
            return (
                f"records 1 to {self.legacy} are unsigned legacy records and nothing seals "
                "them yet (`biotwin keys init --adopt`)",
                1,
                self.entries[0].line,
            )
        if self.legacy:
            self.notes.append(f"unsigned legacy records up to seq {self.legacy}, sealed since")
        return None, None, None

    def _problem(self, rec: dict) -> str:
        if rec["seq"] == self.expected + 1:
            return f"record {self.expected} is missing"
        if rec["seq"] > self.expected:
            return f"records {self.expected} to {rec['seq'] - 1} are missing"
        if rec["seq"] < self.expected:
            return f"seq {rec['seq']} repeats or goes back (expected {self.expected})"
        if rec["prev_hash"] != self.prev_hash:
            return "prev_hash does not match the record before it (a record removed or changed)"
        if self.log.digest(rec) != rec["hash"]:
            return "hash does not match its content (content changed)"
        if "mac" not in rec:
            if self.signed:
                return "unsigned record after signed ones"
            self.legacy += 1
            return ""
        if rec.get("key_id") != self.key.key_id:
            return (
                f"signed with another key: key_id {rec.get('key_id')!r}, this key is "
                f"{self.key.key_id!r}"
            )
        if not self.key.verify(self.prev_mac, rec):
            return "mac does not match (content changed or the record was re-signed)"
        self.signed = True
        self.prev_mac = rec["mac"]
        return ""


# ---------------------------------------------------------------------- anchors
def _anchor_mac(key: SigningKey, seq, mac) -> str:
    return hmac.new(key.secret, f"{seq}\n{mac}".encode(), hashlib.sha256).hexdigest()


def _read_anchor(path: Path) -> dict | None:
    try:
        anchor = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"seq": 0, "mac": "", "anchor_mac": "unreadable"}
    return anchor if isinstance(anchor, dict) and type(anchor.get("seq")) is int else {}


def _write_anchor(path: Path, key: SigningKey, log: Path, seq: int, mac: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = {
        "log": str(log.resolve()),
        "seq": seq,
        "mac": mac,
        "key_id": key.key_id,
        "anchor_mac": _anchor_mac(key, seq, mac),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(body, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
