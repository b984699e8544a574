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


def sign_in_box() -> None:
    """Sidebar: who is signed in; sign in with users.toml (hashed passwords)."""
    users_file = data_dir() / "users.toml"
    ensure_demo_users(users_file)
    with st.sidebar:
        user = st.session_state.get("user")
        if user:
            st.write(f"Signed in: **{user}** ({', '.join(roles())})")
            if st.button("Sign out"):
                st.session_state.pop("user", None)
                st.session_state.pop("roles", None)
                st.rerun()
            return
        with st.form("sign-in"):
            name = st.text_input("User", key="login_user")
            password = st.text_input("Password", type="password", key="login_password")
            if st.form_submit_button("Sign in"):
                entry = load_users(users_file).get(name)
                if entry and verify_password(password, entry.get("password", "")):
                    st.session_state["user"] = name
                    st.session_state["roles"] = list(entry.get("roles", []))
                    st.rerun()
                else:
                    st.error("Wrong user name or password")
