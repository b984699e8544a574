"""The biotwin site command center (Streamlit): ``biotwin dashboard``.

Pages live in dashboard/pages/; the logic they show lives in plain modules
(dashboard/plant.py, dashboard/audit.py, twin/scenarios.py) that tests reach without
Streamlit. The store is $BIOTWIN_DATA_DIR (else ./var).
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
        st.Page(HERE / "pages" / "overview.py", title="Plant overview", default=True),
        st.Page(HERE / "pages" / "triage.py", title="Batch triage (QA)"),
        st.Page(HERE / "pages" / "assets.py", title="Asset health"),
        st.Page(HERE / "pages" / "scenarios.py", title="Downtime scenarios"),
        st.Page(HERE / "pages" / "models.py", title="Models"),
    ]
)
page.run()
