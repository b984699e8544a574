"""Users, passwords and certificates for the OPC UA endpoints (and the command center).

Users live in ``DATA_DIR/users.toml``, one table per user with a scrypt password hash and
roles; the demo file is created by :func:`ensure_demo_users`. Certificates live in
``DATA_DIR/pki`` and are generated on first use (or by ``biotwin opcua-certs``): private
keys are never committed. A client certificate is trusted when a copy of it is in
``DATA_DIR/pki/trusted``; ``opcua-certs`` trusts the ingest's own client certificate.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
import shutil
import socket
import tomllib
from pathlib import Path

from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography.x509.oid import ExtendedKeyUsageOID

__all__ = [
    "DEMO_FULL_NAMES",
    "DEMO_SIGNER",
    "DEMO_SIGNER_FULL_NAME",
    "DEMO_USERS",
    "UserFileManager",
    "client_certificate",
    "demo_signer",
    "ensure_demo_users",
    "hash_password",
    "load_users",
    "server_certificate",
    "trust_validator",
    "verify_password",
]

logger = logging.getLogger(__name__)

#: Demo users created by ``make run`` (user, password, roles). Change them on a real site.
#: ``qa2`` is the second QA reviewer that four-eyes dispositions need.
DEMO_USERS = (
    ("viewer", "viewer-demo", ["viewer"]),
    ("engineer", "engineer-demo", ["engineer"]),
    ("qa", "qa-demo", ["qa"]),
    ("qa2", "qa2-demo", ["qa"]),
    ("maint", "maint-demo", ["maintenance"]),
    ("opcua", "opcua-demo", ["engineer"]),
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
#: The signer of the approvals that the demo set-up makes by itself at first start: not a
#: person; its password is random, new at each use and never stored (nobody can sign as it).
DEMO_SIGNER = "demo-setup"
DEMO_SIGNER_FULL_NAME = "Demo set-up (not a person)"


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


def load_users(path: Path) -> dict[str, dict]:
    """``{user: {"password": hash, "roles": [...]}}`` from a users.toml (empty if absent)."""
    if not path.exists():
        return {}
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    return data.get("users", {})


def ensure_demo_users(path: Path) -> bool:
    """Write the demo users file if there is none; returns True if it was written."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# biotwin demo users (scrypt hashes). Replace them on a real site.", ""]
    for user, password, roles in DEMO_USERS:
        lines += [
            f"[users.{user}]",
            f'full_name = "{DEMO_FULL_NAMES.get(user, user)}"',
            f'password = "{hash_password(password)}"',
            "roles = [" + ", ".join(f'"{r}"' for r in roles) + "]",
            "",
        ]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)
    return True


def demo_signer(path: Path) -> str:
    """Add (or renew) the demo set-up signer in users.toml; returns its one-time password.

    The entry has the qa role and a fresh random password, so the demo set-up can approve
    the demo models at first start and nobody can sign as it afterwards. Other users and
    comments in the file are kept.
    """
    password = secrets.token_urlsafe(24)
    text = path.read_text() if path.exists() else ""
    # drop an earlier entry: its header and the lines up to the next table
    own = re.compile(rf"^\[users\.{re.escape(DEMO_SIGNER)}\]\n(?:(?!\[).*(?:\n|$))*", re.M)
    text = own.sub("", text).rstrip("\n")
    block = [
        f"[users.{DEMO_SIGNER}]",
        f'full_name = "{DEMO_SIGNER_FULL_NAME}"',
        f'password = "{hash_password(password)}"',
        'roles = ["qa"]',
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text((text + "\n\n" if text else "") + "\n".join(block) + "\n")
    os.replace(tmp, path)
    return password


class UserFileManager:
    """asyncua user manager: users.toml passwords, trusted certificates, anonymous reads."""

    def __init__(self, path: Path, *, allow_anonymous: bool = True) -> None:
        self.path = Path(path)
        self.allow_anonymous = allow_anonymous

    def get_user(self, iserver, username=None, password=None, certificate=None) -> User | None:
        if username is not None:
            entry = load_users(self.path).get(username)
            if entry is None or not verify_password(password or "", entry.get("password", "")):
                logger.warning("OPC UA login refused for user %r", username)
                return None
            return User(role=UserRole.User, name=username)
        if certificate is not None:
            return User(role=UserRole.User, name="certificate")
        return User(role=UserRole.Anonymous) if self.allow_anonymous else None


async def server_certificate(pki: Path, app_uri: str) -> tuple[Path, Path]:
    """The server's certificate and key under ``pki`` (generated if missing)."""
    pki.mkdir(parents=True, exist_ok=True)
    cert, key = pki / "server-cert.der", pki / "server-key.pem"
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
