"""The biotwin site command center (Streamlit): ``biotwin dashboard``.

Pages live in dashboard/views/ (not pages/: Streamlit takes a ``pages`` folder beside the
entry point for a v1 multipage app, see docs/dashboard.md); the logic they show lives in
plain modules (dashboard/plant.py, dashboard/audit.py, twin/scenarios.py) that tests reach
without Streamlit. The store is $BIOTWIN_DATA_DIR (else ./var).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard.session import sign_in_box

HERE = Path(__file__).parent

st.set_page_config(page_title="biotwin command center", layout="wide")
sign_in_box()
page = st.navigation(
    [
        st.Page(HERE / "views" / "overview.py", title="Plant overview", default=True),
        st.Page(HERE / "views" / "triage.py", title="Batch triage (QA)"),
        st.Page(HERE / "views" / "batch.py", title="Batch record"),
        st.Page(HERE / "views" / "assets.py", title="Asset health"),
        st.Page(HERE / "views" / "scenarios.py", title="Downtime scenarios"),
        st.Page(HERE / "views" / "models.py", title="Models"),
        st.Page(HERE / "views" / "trends.py", title="Trends"),
        st.Page(HERE / "views" / "events.py", title="Alarms & events"),
    ]
)
page.run()
