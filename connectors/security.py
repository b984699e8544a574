"""Users, passwords, sign-ins and certificates for the OPC UA endpoints and the command center.

Users live in ``DATA_DIR/users.toml``, one table per user with a scrypt password hash, roles,
a full name and a ``disabled`` flag. The file is managed by ``biotwin users`` (add, list,
passwd, disable, enable: :func:`add_user`, :func:`set_password`, :func:`set_disabled`),
written atomically and 0600; comments in it are not kept (docs/security.md). Every
sign-in, of the command center and of OPC UA, goes through :func:`authenticate`, which
records it in ``DATA_DIR/security/sign_ins.jsonl`` (0600) and locks a user name out for
:data:`LOCKOUT_MINUTES` after :data:`LOCKOUT_FAILURES` failures within as many minutes.

Demo users exist only in demo mode (``biotwin up --demo``, :func:`ensure_demo_users`): each
gets a random password made on that install, written once to ``DATA_DIR/demo-credentials.txt``
(0600). Certificates live in ``DATA_DIR/pki`` and are generated on first use (or by
``biotwin opcua-certs``): private keys are never committed. A client certificate is trusted
when a copy of it is in ``DATA_DIR/pki/trusted``; ``opcua-certs`` trusts the ingest's own
client certificate.

Exceptions::

    ValueError
    └── UserError          bad user management input (name, role, password rule)
    PermissionError
    └── SignInError        a refused sign-in (wrong password, locked out, disabled)
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import socket
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path

from asyncua.crypto.cert_gen import (
    dump_private_key_as_pem,
    generate_private_key,
    setup_self_signed_certificate,
)
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DEMO_CREDENTIALS",
    "DEMO_FULL_NAMES",
    "DEMO_SIGNER",
    "DEMO_SIGNER_FULL_NAME",
    "DEMO_USERS",
    "LOCKOUT_FAILURES",
    "LOCKOUT_MINUTES",
    "MAX_NAME_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "OT_WRITER",
    "ROLES",
    "SignInError",
    "UserError",
    "UserFileManager",
    "add_user",
    "authenticate",
    "check_password_rule",
    "check_roles",
    "client_certificate",
    "demo_signer",
    "ensure_demo_users",
    "hash_password",
    "load_users",
    "secure_key_files",
    "server_certificate",
    "set_disabled",
    "set_password",
    "sign_in_log",
    "sign_in_summary",
    "trust_certificate",
    "trust_validator",
    "verify_password",
    "write_users",
]

logger = logging.getLogger(__name__)

#: The roles the command center and the records know (a user has one or more);
#: ``ot-writer``: an OT system (gateway, PLC, MES, LIMS) that pushes values into
#: ``biotwin receive`` (docs/receive.md), the only role whose writes it takes.
ROLES = ("viewer", "engineer", "qa", "maintenance", "ot-writer")
#: The role whose users may write values, history updates and lab results into the receiver.
OT_WRITER = "ot-writer"
#: Password rule of ``biotwin users add`` / ``passwd``: at least this many characters.
MIN_PASSWORD_LENGTH = 12
#: User names: a letter or digit, then letters, digits, ``.``, ``_`` or ``-``.
MAX_NAME_LENGTH = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: Lockout: this many failed sign-ins of one user name within LOCKOUT_MINUTES lock it out
#: for LOCKOUT_MINUTES after the last of them.
LOCKOUT_FAILURES = 5
LOCKOUT_MINUTES = 15

#: Demo users made by ``biotwin up --demo`` (user, roles); each gets a random password per
#: install. ``qa2`` is the second QA reviewer that four-eyes dispositions need.
DEMO_USERS = (
    ("viewer", ["viewer"]),
    ("engineer", ["engineer"]),
    ("qa", ["qa"]),
    ("qa2", ["qa"]),
    ("maint", ["maintenance"]),
    ("opcua", ["engineer"]),
)
#: Full names of the demo users, shown with their signatures (a users.toml entry without
#: ``full_name`` is shown by its user name).
DEMO_FULL_NAMES = {
    "viewer": "Vera Lindqvist",
    "engineer": "Erin Patel",
    "qa": "Quinn Avery",
    "qa2": "Sam Okafor",
    "maint": "Mika Tanaka",
    "opcua": "OPC UA ingest (service account)",
}
#: Where demo mode writes the demo users' passwords (next to users.toml, 0600).
DEMO_CREDENTIALS = "demo-credentials.txt"
#: The signer of the approvals that the demo set-up makes by itself at first start: not a
#: person; its password is random, new at each use and never stored (nobody can sign as it).
DEMO_SIGNER = "demo-setup"
DEMO_SIGNER_FULL_NAME = "Demo set-up (not a person)"


class UserError(ValueError):
    """Bad user management input: the message names the field, the rule and the value."""


class SignInError(PermissionError):
    """A refused sign-in; the message says why without telling whether the user exists."""


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$<salt>$<hash>`` (base64), for users.toml."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a :func:`hash_password` string."""
    try:
        scheme, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    again = hash_password(password, salt=base64.b64decode(salt)).split("$")[2]
    return hmac.compare_digest(again, digest)


# a hash of a random password: an unknown user name is checked against it, so that its
# refusal takes as long as a wrong password's
_NOBODY = hash_password(secrets.token_urlsafe(16))


def load_users(path: Path) -> dict[str, dict]:
    """``{user: {"password": hash, "roles": [...], "full_name": ..., "disabled": bool}}``
    from a users.toml (empty if absent)."""
    path = Path(path)
    if not path.exists():
        return {}
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    return data.get("users", {})


# ------------------------------------------------------------------ writing users.toml
def _toml_value(value: object) -> str:
    """A TOML value for a str, bool, number or list of str (JSON strings are TOML strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def write_users(path: Path, users: dict[str, dict]) -> None:
    """Write ``users`` to ``path`` atomically (temporary file 0600, fsync, ``os.replace``).

    The file is written whole: comments of an earlier file are not kept.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# biotwin users (scrypt hashes), written by `biotwin users`: edits by hand are",
        "# read, but comments are not kept when the file is written again.",
        "",
    ]
    for name, entry in users.items():
        lines.append(f"[users.{json.dumps(name)}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in entry.items() if v is not None]
        lines.append("")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _users_locked(path: Path):
    """Hold a lock beside users.toml while it is read, changed and written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        raise UserError(
            f"user name: must be 1-{MAX_NAME_LENGTH} letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit; got {name!r}"
        )
    return name


def check_password_rule(password: str) -> None:
    """Refuse a password shorter than :data:`MIN_PASSWORD_LENGTH` characters.

    Raises
    ------
    UserError
        If the password is too short (its length is named, never the password).
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(
            f"password: must be at least {MIN_PASSWORD_LENGTH} characters; "
            f"got {len(password)} characters"
        )


def check_roles(roles: list[str]) -> None:
    """Refuse an empty list of roles or a role not in :data:`ROLES`.

    Raises
    ------
    UserError
        Naming the role that is not known.
    """
    if not roles:
        raise UserError(f"role: a user needs at least one of {', '.join(ROLES)}; got none")
    for role in roles:
        if role not in ROLES:
            raise UserError(f"role: must be one of {', '.join(ROLES)}; got {role!r}")


def add_user(
    path: Path,
    name: str,
    *,
    password: str,
    roles: list[str],
    full_name: str | None = None,
) -> dict:
    """Add a user to users.toml (hashing the password); returns the new entry.

    Raises
    ------
    UserError
        Bad name, a name that exists, no role or an unknown role, a password too short.
    """
    _check_name(name)
    check_roles(roles)
    check_password_rule(password)
    path = Path(path)
    with _users_locked(path):
        users = load_users(path)
        if name in users:
            raise UserError(f"user name: {name!r} exists already (use `biotwin users passwd`)")
        entry = {
            "full_name": (full_name or "").strip() or name,
            "password": hash_password(password),
            "roles": list(dict.fromkeys(roles)),
            "disabled": False,
        }
        write_users(path, {**users, name: entry})
    logger.info("user %r added with roles %s", name, roles)
    return entry


def _change(path: Path, name: str, **fields) -> dict:
    path = Path(path)
    with _users_locked(path):
        users = load_users(path)
        if name not in users:
            raise UserError(f"user name: no user {name!r} in {path}")
        users[name] = {**users[name], **fields}
        write_users(path, users)
    return users[name]


def set_password(path: Path, name: str, password: str) -> None:
    """Give ``name`` a new password (the rule of :func:`check_password_rule`).

    Raises
    ------
    UserError
        Unknown user or a password too short.
    """
    check_password_rule(password)
    _change(path, name, password=hash_password(password))
    logger.info("password of %r changed", name)


def set_disabled(path: Path, name: str, disabled: bool = True) -> None:
    """Disable (or enable again) a user: a disabled user cannot sign in.

    Raises
    ------
    UserError
        Unknown user.
    """
    _change(path, name, disabled=bool(disabled))
    logger.info("user %r %s", name, "disabled" if disabled else "enabled")


# ------------------------------------------------------------------ sign-ins
def sign_in_log(users_file: Path) -> Path:
    """``DATA_DIR/security/sign_ins.jsonl`` of the data dir that holds ``users_file``."""
    return Path(users_file).parent / "security" / "sign_ins.jsonl"


def _read_log(fh) -> list[dict]:
    fh.seek(0)
    out = []
    for line in fh.read().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                out.append(record)
    return out


def _locked_until(records: list[dict], user: str, now: float) -> float | None:
    """The end of a lockout of ``user`` in force at ``now``, else None.

    Failures since the user's last successful sign-in count; refusals during a lockout do
    not (they would keep a user locked out for ever).
    """
    failures: list[float] = []
    for r in records:
        if r.get("user") != user:
            continue
        if r.get("outcome") == "ok":
            failures = []
        elif r.get("outcome") == "failed":
            failures.append(float(r.get("t", 0)))
    window = LOCKOUT_MINUTES * 60
    for k in range(len(failures) - 1, LOCKOUT_FAILURES - 2, -1):
        if failures[k] - failures[k - LOCKOUT_FAILURES + 1] <= window:
            until = failures[k] + window
            return until if now < until else None
    return None


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def authenticate(
    users_file: Path, user: str, password: str, *, source: str, now: float | None = None
) -> dict:
    """Check a sign-in and record it; returns the user's users.toml entry.

    Every attempt is appended to :func:`sign_in_log` (time, user, source, outcome). After
    :data:`LOCKOUT_FAILURES` failures of one user name within :data:`LOCKOUT_MINUTES`
    minutes, that name is refused for :data:`LOCKOUT_MINUTES` minutes, even with the right
    password; unknown names are counted and locked the same way, so nothing tells whether
    a user exists.

    Parameters
    ----------
    users_file : path
        users.toml.
    user, password : str
        What was entered.
    source : str
        Where the attempt came from (``dashboard``, ``opcua``, ...), recorded.
    now : float, optional
        The time (epoch s); the clock's by default.

    Raises
    ------
    SignInError
        Wrong user name or password, locked out (the message says until when), or a
        disabled user.
    """
    now = time.time() if now is None else float(now)
    log = sign_in_log(users_file)
    log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(log, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "r+", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        until = _locked_until(_read_log(fh), user, now)
        entry = load_users(users_file).get(user) if until is None else None
        if until is not None:
            outcome = "locked"
            message = f"sign-in refused: too many failed attempts; try again after {_stamp(until)}"
        elif not verify_password(password, (entry or {}).get("password") or _NOBODY) or not entry:
            outcome, message = "failed", "sign-in refused: wrong user name or password"
        elif entry.get("disabled"):
            outcome, message = "disabled", f"sign-in refused: user {user!r} is disabled"
        else:
            outcome, message = "ok", ""
        record = {"t": round(now, 3), "time": _stamp(now), "user": user, "source": source}
        fh.write(json.dumps({**record, "outcome": outcome}) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    if outcome != "ok":
        logger.warning("%s sign-in of %r refused (%s)", source, user, outcome)
        raise SignInError(message)
    return entry


def sign_in_summary(users_file: Path, *, now: float | None = None) -> dict[str, dict]:
    """Per user name in the sign-in log: ``last_sign_in`` (text or None), ``failures``
    since it, and ``locked_until`` (text or None)."""
    now = time.time() if now is None else float(now)
    log = sign_in_log(users_file)
    if not log.exists():
        return {}
    with open(log, encoding="utf-8") as fh:
        records = _read_log(fh)
    out: dict[str, dict] = {}
    for r in records:
        row = out.setdefault(str(r.get("user")), {"last_sign_in": None, "failures": 0})
        if r.get("outcome") == "ok":
            row.update(last_sign_in=r.get("time"), failures=0)
        elif r.get("outcome") == "failed":
            row["failures"] += 1
    for user, row in out.items():
        until = _locked_until(records, user, now)
        row["locked_until"] = None if until is None else _stamp(until)
    return out


# ------------------------------------------------------------------ demo mode
def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def ensure_demo_users(path: Path) -> dict[str, str]:
    """Demo mode only: on a data dir without users, make the demo users.

    Each demo user gets a random password made here (so it differs on every install),
    written with the user names to :data:`DEMO_CREDENTIALS` beside users.toml (0600) for
    the person who started the demo. Returns ``{user: password}``, empty when users.toml
    already holds users (nothing is changed then).
    """
    path = Path(path)
    with _users_locked(path):
        if load_users(path):
            return {}
        passwords = {user: secrets.token_urlsafe(12) for user, _ in DEMO_USERS}
        users = {
            user: {
                "full_name": DEMO_FULL_NAMES.get(user, user),
                "password": hash_password(passwords[user]),
                "roles": roles,
                "disabled": False,
            }
            for user, roles in DEMO_USERS
        }
        write_users(path, users)
        lines = [
            "# biotwin demo users of this install (made by `biotwin up --demo`): random",
            "# passwords made once for this data dir. Delete this file when you no longer need it.",
            "# user\troles\tpassword",
            *(f"{u}\t{','.join(r)}\t{passwords[u]}" for u, r in DEMO_USERS),
        ]
        _write_private(path.with_name(DEMO_CREDENTIALS), "\n".join(lines) + "\n")
    logger.info("demo users written to %s, their passwords to %s", path, DEMO_CREDENTIALS)
    return passwords


def demo_signer(path: Path) -> str:
    """Add (or renew) the demo set-up signer in users.toml; returns its one-time password.

    The entry has the qa role and a fresh random password, so the demo set-up can approve
    the demo models at first start and nobody can sign as it afterwards. Called by
    ``biotwin up --demo`` only. Other users are kept.
    """
    password = secrets.token_urlsafe(24)
    path = Path(path)
    with _users_locked(path):
        users = load_users(path)
        users[DEMO_SIGNER] = {
            "full_name": DEMO_SIGNER_FULL_NAME,
            "password": hash_password(password),
            "roles": ["qa"],
            "disabled": False,
        }
        write_users(path, users)
    return password


def _opcua_sign_in(users_file: Path, user: str, password: str) -> bool:
    """An OPC UA user-name sign-in through :func:`authenticate` (recorded, locked out)."""
    try:
        authenticate(users_file, user, password, source="opcua")
    except SignInError as exc:
        logger.warning("OPC UA login refused for user %r: %s", user, exc)
        return False
    return True


class UserFileManager:
    """asyncua user manager: users.toml passwords, trusted certificates, anonymous reads.

    Parameters
    ----------
    path : Path
        users.toml.
    allow_anonymous : bool
        Let an anonymous identity in (read only); off unless ``serve-opcua --allow-anonymous``.
    trusted : Path, optional
        Folder of trusted client certificates (default: ``pki/trusted`` next to users.toml);
        an X509 identity is accepted only when the same certificate is in it.
    """

    def __init__(
        self, path: Path, *, allow_anonymous: bool = False, trusted: Path | None = None
    ) -> None:
        self.path = Path(path)
        self.allow_anonymous = allow_anonymous
        self.trusted = Path(trusted) if trusted is not None else self.path.parent / "pki/trusted"

    def get_user(self, iserver, username=None, password=None, certificate=None) -> User | None:
        if username is not None:
            if not _opcua_sign_in(self.path, username, password or ""):
                return None
            return User(role=UserRole.User, name=username)
        if certificate:  # a None channel passes b"" for "no certificate"
            name = _trusted_name(self.trusted, certificate)
            if name is None:
                logger.warning("OPC UA certificate identity refused: not in %s", self.trusted)
                return None
            return User(role=UserRole.User, name=name)
        return User(role=UserRole.Anonymous) if self.allow_anonymous else None


def _trusted_name(trusted: Path, certificate: bytes) -> str | None:
    """The application URI (else the common name) of ``certificate`` (DER) when the same
    certificate is in the folder ``trusted``, else None."""
    for path in sorted(trusted.glob("*")) if trusted.is_dir() else []:
        try:
            data = path.read_bytes()
            known = (
                x509.load_pem_x509_certificate(data)
                if data.startswith(b"-----")
                else x509.load_der_x509_certificate(data)
            )
        except (OSError, ValueError):
            continue
        if known.public_bytes(Encoding.DER) == bytes(certificate):
            try:
                san = known.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
            except x509.ExtensionNotFound:
                uris = []
            names = known.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            return uris[0] if uris else (str(names[0].value) if names else path.stem)
    return None


#: Private keys under ``pki``: readable by their owner only.
_KEY_MODE = 0o600


def secure_key_files(pki: Path) -> list[Path]:
    """Set every private key under ``pki`` (``*key*.pem``) that others can read to 0600;
    returns the keys fixed (each one logged)."""
    fixed = []
    for key in sorted(pki.rglob("*key*.pem")) if pki.is_dir() else []:
        mode = key.stat().st_mode & 0o777
        if mode & 0o077:
            os.chmod(key, _KEY_MODE)
            logger.warning(
                "private key %s was readable by others (mode %04o); set to %04o",
                key,
                mode,
                _KEY_MODE,
            )
            fixed.append(key)
    return fixed


def _private_key(key: Path, cert: Path) -> None:
    """Write a new RSA key to ``key`` (0600 from its creation: temp file + rename) when it
    is missing, and drop ``cert`` (it belonged to the old key); fix the mode of keys that
    exist (:func:`secure_key_files`)."""
    key.parent.mkdir(parents=True, exist_ok=True)
    secure_key_files(key.parent)
    if key.is_file():
        return
    tmp = key.with_name(f".{key.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _KEY_MODE)
    try:
        os.fchmod(fd, _KEY_MODE)  # the umask does not widen it, an old temp file neither
        os.write(fd, dump_private_key_as_pem(generate_private_key()))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, key)
    cert.unlink(missing_ok=True)


async def server_certificate(pki: Path, app_uri: str, *, name: str = "server") -> tuple[Path, Path]:
    """A server's certificate and key under ``pki`` (generated if missing):
    ``<name>-cert.der`` and ``<name>-key.pem`` (the twin's ``server``, the receiver's
    ``receive``: each its own application URI)."""
    pki.mkdir(parents=True, exist_ok=True)
    cert, key = pki / f"{name}-cert.der", pki / f"{name}-key.pem"
    _private_key(key, cert)
    await setup_self_signed_certificate(
        key,
        cert,
        app_uri,
        socket.gethostname(),
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        {"countryName": "CH", "organizationName": "biotwin"},
    )
    return cert, key


async def client_certificate(pki: Path, app_uri: str, *, trust: bool = True) -> tuple[Path, Path]:
    """A client certificate and key under ``pki`` (generated if missing), trusted by our
    server when ``trust`` (copied into ``pki/trusted``)."""
    pki.mkdir(parents=True, exist_ok=True)
    name = app_uri.rsplit(":", 1)[-1]
    cert, key = pki / f"{name}-cert.der", pki / f"{name}-key.pem"
    _private_key(key, cert)
    await setup_self_signed_certificate(
        key,
        cert,
        app_uri,
        socket.gethostname(),
        [ExtendedKeyUsageOID.CLIENT_AUTH],
        {"countryName": "CH", "organizationName": "biotwin"},
    )
    if trust:
        (pki / "trusted").mkdir(exist_ok=True)
        shutil.copyfile(cert, pki / "trusted" / cert.name)
    return cert, key


def trust_certificate(pki: Path, certificate: Path) -> Path:
    """Trust a client certificate (PEM or DER): a DER copy in ``pki/trusted``, named after
    the file; returns the copy. Clients presenting it (as their secure channel's
    certificate or as an X509 identity) are then accepted.

    Raises
    ------
    UserError
        If the file cannot be read or is not an X.509 certificate.
    """
    certificate = Path(certificate)
    try:
        data = certificate.read_bytes()
        cert = (
            x509.load_pem_x509_certificate(data)
            if data.lstrip().startswith(b"-----")
            else x509.load_der_x509_certificate(data)
        )
    except (OSError, ValueError) as exc:
        raise UserError(
            f"certificate: must be an X.509 certificate file, PEM or DER; got "
            f"{str(certificate)!r} ({exc})"
        ) from None
    trusted = Path(pki) / "trusted"
    trusted.mkdir(parents=True, exist_ok=True)
    target = trusted / f"{certificate.stem}.der"
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(cert.public_bytes(Encoding.DER))
    os.replace(tmp, target)
    logger.info("certificate %s trusted as %s", certificate, target)
    return target


async def trust_validator(pki: Path) -> CertificateValidator:
    """Accept client certificates that are in ``pki/trusted`` (and otherwise valid)."""
    trusted = pki / "trusted"
    trusted.mkdir(parents=True, exist_ok=True)
    if not any(trusted.iterdir()):  # our own ingest is trusted from the start
        await client_certificate(pki, "urn:biotwin:ingest")
    store = TrustStore([trusted], [])
    await store.load()
    return CertificateValidator(
        CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT,
        store,
    )
