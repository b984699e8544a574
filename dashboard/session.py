"""Sign-in and shared resources of the Streamlit pages.

Sign-in checks the user name and password with :func:`connectors.security.authenticate`
(scrypt hashes in ``users.toml``; every attempt recorded, a user name locked out after
repeated failures). A successful sign-in also sets a session cookie in the browser, so that
reloading the page keeps the user signed in; a session ends :data:`SESSION_HOURS` after the
sign-in whatever the activity (an absolute limit, docs/security.md). The cookie holds the
user name, the time of the sign-in and the expiry, signed with HMAC-SHA256 under a key kept
in ``DATA_DIR/secrets/session.key`` (created 0600 on first use). Streamlit reads cookies
(``st.context.cookies``, sent when the browser connects) but cannot set them, so a one-line
script written with ``st.html`` sets and clears it. The roles come from users.toml on every
run, so a user removed from the file or disabled is signed out at the next click.

Nobody signed in has no role and sees the sign-in page only (dashboard/app.py), unless the
command center runs as a read-only kiosk (``BIOTWIN_KIOSK=1``, :func:`kiosk`), where a
visitor has the role viewer.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path

import streamlit as st

from connectors.historian import Historian
from connectors.security import SignInError, authenticate, load_users
from dashboard.plant import data_dir
from twin.config import load_config

__all__ = [
    "COOKIE",
    "KIOSK_ENV",
    "SESSION_HOURS",
    "config",
    "historian",
    "kiosk",
    "read_session_token",
    "roles",
    "session_key",
    "session_token",
    "sign_in_box",
    "sign_in_form",
    "signed_in",
]

COOKIE = "biotwin_session"
#: A session ends this many hours after the sign-in (absolute; activity does not extend it).
SESSION_HOURS = 12.0
#: Environment variable that turns the read-only kiosk on (``1``); off by default.
KIOSK_ENV = "BIOTWIN_KIOSK"
_KEY_BYTES = 32


@st.cache_resource
def config():
    """The plant (shipped line)."""
    return load_config(None)


def historian() -> Historian:
    """The historian of the store (opened per rerun: cheap, and sees new segments)."""
    return Historian(data_dir() / "historian")


def kiosk() -> bool:
    """Whether the command center runs as a read-only kiosk (``BIOTWIN_KIOSK=1``)."""
    return os.environ.get(KIOSK_ENV, "") == "1"


def signed_in() -> bool:
    """Whether a user is signed in in this session."""
    return bool(st.session_state.get("user"))


def roles() -> list[str]:
    """Roles of the signed-in user; ``["viewer"]`` for a kiosk visitor, none otherwise."""
    if signed_in():
        return list(st.session_state.get("roles", []))
    return ["viewer"] if kiosk() else []


# ------------------------------------------------------------------ session cookie
def session_key(store: str | os.PathLike) -> bytes:
    """The key that signs session cookies: ``store/secrets/session.key``, made on first use.

    The file is written 0600 under a temporary name and linked into place, so concurrent
    first uses agree on one key.

    Raises
    ------
    ValueError
        If the key file exists but is shorter than 32 bytes (damaged: delete it).
    """
    folder = Path(store) / "secrets"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / "session.key"
    if not path.exists():
        tmp = folder / f".session.key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(_KEY_BYTES))
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    key = path.read_bytes()
    if len(key) < _KEY_BYTES:
        raise ValueError(
            f"session key: {path} must hold at least {_KEY_BYTES} bytes; got {len(key)} "
            "(delete it to make a new one; everyone signs in again)"
        )
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, body: str) -> str:
    return _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())


def session_token(
    user: str, key: bytes, *, now: float | None = None, hours: float = SESSION_HOURS
) -> str:
    """A signed cookie value for ``user``, signed in at ``now`` (epoch s) and valid for
    ``hours`` (at most :data:`SESSION_HOURS`).

    Raises
    ------
    ValueError
        If ``hours`` is not in (0, SESSION_HOURS].
    """
    if not 0 < hours <= SESSION_HOURS:
        raise ValueError(f"hours: must be > 0 and <= {SESSION_HOURS:g}; got {hours!r}")
    now = time.time() if now is None else now
    claims = {
        "u": user,
        "iat": int(now),
        "exp": int(now + hours * 3600),
        "n": secrets.token_hex(8),
    }
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{body}.{_mac(key, body)}"


def read_session_token(
    token: str | None, key: bytes, *, now: float | None = None
) -> tuple[str, float] | None:
    """(user, expiry in epoch s) of a valid, unexpired token; None for anything else
    (absent, malformed, signed with another key, altered, expired, issued in the future,
    or claiming a session longer than :data:`SESSION_HOURS`)."""
    if not token or token.count(".") != 1:
        return None
    body, mac = token.split(".")
    if not hmac.compare_digest(mac, _mac(key, body)):
        return None
    try:
        claims = json.loads(_unb64(body))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(claims, dict):
        return None
    user, issued, expiry = claims.get("u"), claims.get("iat"), claims.get("exp")
    if not isinstance(user, str) or not user:
        return None
    if not isinstance(expiry, int) or not isinstance(issued, int):
        return None
    now = time.time() if now is None else now
    if now >= expiry or issued > now + 60 or expiry - issued > SESSION_HOURS * 3600:
        return None
    return user, float(expiry)


def _cookie_script(value: str, max_age_s: int) -> str:
    """A script that sets (or, with ``max_age_s`` 0, deletes) the session cookie."""
    return (
        "<script>document.cookie = "
        f'"{COOKIE}={value}; Max-Age={max_age_s}; Path=/; SameSite=Strict"'
        ' + (location.protocol === "https:" ? "; Secure" : "");</script>'
    )


def _browser_cookie() -> str | None:
    """The session cookie the browser sent when it connected (None in tests and without)."""
    return st.context.cookies.get(COOKIE)


# ------------------------------------------------------------------ sign-in box
def _signed_in(user: str, entry: dict, until: float) -> None:
    st.session_state["user"] = user
    st.session_state["roles"] = list(entry.get("roles", []))
    st.session_state["full_name"] = entry.get("full_name") or user
    st.session_state["signed_in_until"] = until


def _forget() -> None:
    for key in ("user", "roles", "full_name", "signed_in_until", "session_cookie"):
        st.session_state.pop(key, None)


def _sign_out() -> None:
    """Sign out: forget the user, ignore the cookie this browser connected with, clear it."""
    _forget()
    st.session_state["signed_out"] = True
    st.session_state["cookie_script"] = _cookie_script("", 0)


def _sign_in(users_file: Path, store: Path) -> None:
    """Sign-in form submitted: check the password, then sign in and set the cookie."""
    state = st.session_state
    name = (state.get("login_user") or "").strip()
    password = state.get("login_password") or ""
    state["login_password"] = ""
    try:
        entry = authenticate(users_file, name, password, source="dashboard")
    except SignInError as exc:
        state["login_error"] = str(exc)
        return
    now = time.time()
    _signed_in(name, entry, now + SESSION_HOURS * 3600)
    state.pop("signed_out", None)
    token = session_token(name, session_key(store), now=now)
    state["cookie_script"] = _cookie_script(token, int(SESSION_HOURS * 3600))
    state["session_cookie"] = token  # written again on every run while signed in


def _restore(users_file: Path, store: Path) -> None:
    """After a reload: sign in again from a valid cookie; sign out when the session ends."""
    state = st.session_state
    now = time.time()
    if state.get("user"):
        entry = load_users(users_file).get(state["user"])
        if state.get("signed_in_until", float("inf")) <= now:
            _sign_out()
            state["login_error"] = "Your session ended: sign in again"
        elif entry is None or entry.get("disabled"):
            _sign_out()
            state["login_error"] = "You were signed out: your user is disabled or removed"
        else:  # roles changed in users.toml apply at the next click
            state["roles"] = list(entry.get("roles", []))
        return
    if state.get("signed_out"):
        return
    found = read_session_token(_browser_cookie(), session_key(store), now=now)
    if found is None:
        return
    user, until = found
    entry = load_users(users_file).get(user)
    if entry is not None and not entry.get("disabled"):
        _signed_in(user, entry, until)


def sign_in_form() -> None:
    """The sign-in form (user name, password) where it is called, and the last refusal.

    The password is checked in the form's callback, before the script runs, so the page
    that runs next is already signed in and the form is gone (no ``st.rerun``).
    """
    store = data_dir()
    with st.form("sign-in"):
        st.text_input("User", key="login_user")
        st.text_input("Password", type="password", key="login_password")
        st.form_submit_button("Sign in", on_click=_sign_in, args=(store / "users.toml", store))
    error = st.session_state.pop("login_error", None)
    if error:
        st.error(error)


def sign_in_box() -> bool:
    """Sidebar: who is signed in and sign out (or, in a kiosk, the sign-in form); restores
    a session from the browser's cookie and ends it when it expires. Returns whether a
    user is signed in (the caller shows the sign-in page otherwise)."""
    store = data_dir()
    _restore(store / "users.toml", store)
    state = st.session_state
    with st.sidebar:
        if state.get("user"):
            st.markdown(
                f"Signed in: **{state['user']}** ({', '.join(roles())})  \n"
                f"{state.get('full_name') or state['user']}"
            )
            if state.get("signed_in_until"):
                until = time.strftime("%H:%M", time.localtime(state["signed_in_until"]))
                st.caption(f"Signed in until {until} (sessions last {SESSION_HOURS:g} h)")
            st.button("Sign out", on_click=_sign_out)
        elif kiosk():
            sign_in_form()
        script = state.pop("cookie_script", None)
        if script is None and state.get("user") and state.get("session_cookie"):
            # on every run while signed in, not only the sign-in's: a run that follows at
            # once can remove the script's element before the browser has run it
            left = int(state.get("signed_in_until", 0) - time.time())
            if left > 0:
                script = _cookie_script(state["session_cookie"], left)
        if script:
            st.html(script, unsafe_allow_javascript=True)
    return signed_in()
