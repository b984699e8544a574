"""Sign-in and shared resources of the Streamlit pages."""

from __future__ import annotations

import streamlit as st

from connectors.historian import Historian
from connectors.security import ensure_demo_users, load_users, verify_password
from dashboard.plant import data_dir
from twin.config import load_config

__all__ = ["config", "historian", "roles", "sign_in_box"]


@st.cache_resource
def config():
    """The plant (shipped line)."""
    return load_config(None)


def historian() -> Historian:
    """The historian of the store (opened per rerun: cheap, and sees new segments)."""
    return Historian(data_dir() / "historian")


def roles() -> list[str]:
    """Roles of the signed-in user (viewer when nobody is signed in)."""
    return st.session_state.get("roles", ["viewer"])


def _sign_out() -> None:
    st.session_state.pop("user", None)
    st.session_state.pop("roles", None)


def sign_in_box() -> None:
    """Sidebar: sign in with users.toml (hashed passwords); who is signed in; sign out.

    No ``st.rerun`` after signing in: the signed-in state shows in the same run as the
    submitted form.
    """
    users_file = data_dir() / "users.toml"
    ensure_demo_users(users_file)
    with st.sidebar:
        if not st.session_state.get("user"):
            with st.form("sign-in"):
                name = st.text_input("User", key="login_user")
                password = st.text_input("Password", type="password", key="login_password")
                submitted = st.form_submit_button("Sign in")
            if submitted:
                entry = load_users(users_file).get(name)
                if entry and verify_password(password, entry.get("password", "")):
                    st.session_state["user"] = name
                    st.session_state["roles"] = list(entry.get("roles", []))
                else:
                    st.error("Wrong user name or password")
        if st.session_state.get("user"):
            st.write(f"Signed in: **{st.session_state['user']}** ({', '.join(roles())})")
            st.button("Sign out", on_click=_sign_out)
