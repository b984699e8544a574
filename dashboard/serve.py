"""Start the command center's Streamlit server: ``python -m dashboard.serve [options]``.

The same as ``streamlit run dashboard/app.py [options]`` (``biotwin dashboard`` runs this),
except that the server process first imports what the pages use and runs each library's
first-call set-up once on a few made-up rows (:func:`warm`), before it listens. Streamlit
runs the app script only when a browser session connects, so otherwise the first page a
fresh server serves pays those imports (~1 s: the historian with duckdb, the security
module with asyncua's crypto, the twin, plotly, pandas) and the first plotly figure and
duckdb connection (~0.2 s). Nothing from the store is read or cached here: every page
still reads the plant and the historian when it is shown.
"""

from __future__ import annotations

import gc
import importlib
import sys
import time
from pathlib import Path

APP = Path(__file__).with_name("app.py")
PRELOAD = (  # what the pages import (dashboard/views/*.py and the modules they use)
    "streamlit",
    "pandas",
    "plotly.express",
    "plotly.graph_objects",
    "plotly.subplots",
    "duckdb",
    "pyarrow",
    "connectors.batch_states",
    "dashboard.audit",
    "dashboard.batch_record",
    "dashboard.disposition",
    "dashboard.envelope",
    "dashboard.events",
    "dashboard.maintenance",
    "dashboard.plant",
    "dashboard.saved",
    "dashboard.session",
    "dashboard.trends",
    "dashboard.whatif",
    "quality.errors",
    "quality.live",
    "quality.registry",
    "twin.scenarios",
)


def warm() -> float:
    """Import the pages' modules and run the first plotly figure, pyarrow conversion and
    duckdb query once, on made-up data; returns the seconds taken."""
    t0 = time.perf_counter()
    for name in PRELOAD:
        importlib.import_module(name)
    import duckdb
    import numpy as np
    import pandas as pd
    import plotly.express as px
    import plotly.graph_objects as go
    import pyarrow as pa
    from plotly.subplots import make_subplots

    frame = pd.DataFrame(
        {
            "time": pd.date_range("2000-01-01", periods=8, freq="h", tz="UTC"),
            "value": np.arange(8.0),
            "series": ["a", "b"] * 4,
        }
    )
    frame["end"] = frame["time"] + pd.to_timedelta(frame["value"], "h")
    px.line(frame, x="time", y="value", facet_col="series", facet_col_wrap=4).to_json()
    px.timeline(frame, x_start="time", x_end="end", y="series", facet_row="series").to_json()
    make_subplots(rows=2, cols=1).add_trace(go.Scatter(x=[0, 1], y=[0, 1])).to_json()
    pa.Table.from_pandas(frame)
    con = duckdb.connect()
    try:
        con.sql("SELECT 1").fetchall()
    finally:
        con.close()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    """Warm up, then ``streamlit run dashboard/app.py`` with ``argv`` as its options."""
    from streamlit.web import cli

    from biotwin.children import stop_with_parent

    stop_with_parent()  # started by `biotwin dashboard` / `up`: SIGTERM when they die
    warm()
    # Streamlit collects garbage (a full collection) after every script run, ~0.1 s
    # over the heap of these modules; objects alive now are the server's for its
    # lifetime, so move them out of the collector's way
    gc.collect()
    gc.freeze()
    args = sys.argv[1:] if argv is None else list(argv)
    sys.argv = ["streamlit", "run", str(APP), *args]
    cli.main(prog_name="streamlit")


if __name__ == "__main__":
    main()
