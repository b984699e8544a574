"""The biotwin site command center (Streamlit): ``biotwin dashboard``.

Pages live in dashboard/views/ (not pages/: Streamlit takes a ``pages`` folder beside the
entry point for a v1 multipage app, see docs/dashboard.md); the logic they show lives in
plain modules (dashboard/plant.py, dashboard/audit.py, twin/scenarios.py) that tests reach
without Streamlit. The store is $BIOTWIN_DATA_DIR (else ./var).

Doors (docs/security.md): a visitor who is not signed in is routed to the sign-in page
only, and no page that reads the plant runs. With ``BIOTWIN_KIOSK=1`` (``--kiosk``) a
visitor sees the pages read-only, as role viewer, under a banner; the actions of each page
are gated by the signed-in user's roles.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard.session import kiosk, sign_in_box, sign_in_form

HERE = Path(__file__).parent
#: (file in views/, title, shown in the kiosk); the first is the default page
VIEWS = (
    ("overview.py", "Plant overview", True),
    ("triage.py", "Batch triage (QA)", False),
    ("batch.py", "Batch record", True),
    ("assets.py", "Asset health", True),
    ("scenarios.py", "Downtime scenarios", True),
    ("models.py", "Models", False),
    ("trends.py", "Trends", True),
    ("events.py", "Alarms & events", True),
)


def sign_in_page() -> None:
    """The only page for a visitor who is not signed in: no plant data."""
    st.title("biotwin command center")
    st.write("Sign in to see the plant. Ask your administrator for a user (`biotwin users add`).")
    sign_in_form()


def view(file: str, title: str) -> st.Page:
    return st.Page(HERE / "views" / file, title=title, default=file == VIEWS[0][0])


def sign_in_at(file: str) -> st.Page:
    """The sign-in page under a view's address: a link to /triage opens the sign-in page
    (not Streamlit's "page not found"), and the view itself once signed in."""
    return st.Page(
        sign_in_page,
        title="Sign in",
        url_path=Path(file).stem,
        default=file == VIEWS[0][0],
        visibility="hidden",
    )


st.set_page_config(page_title="biotwin command center", layout="wide")
if sign_in_box():
    pages, position = [view(f, title) for f, title, _ in VIEWS], "sidebar"
elif kiosk():
    st.info(
        "Kiosk: a read-only view of the plant (role viewer). Sign in (sidebar) to act.",
        icon=":material/visibility:",
    )
    pages = [view(f, title) if shown else sign_in_at(f) for f, title, shown in VIEWS]
    position = "sidebar"
else:
    pages, position = [sign_in_at(f) for f, _, _ in VIEWS], "hidden"
st.navigation(pages, position=position).run()
