"""The historian: atomic appends, de-duplication, queries, crash safety, other processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from biotwin.cli import app
from connectors.historian import (
    FLAG_BAD_STATUS,
    FLAG_NAN,
    Historian,
    HistorianError,
)

T0 = pd.Timestamp("2026-03-01 22:00", tz="UTC")
SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "twin"


def rows(tags=("A", "B"), n=240, start=T0, step="1min", seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    times = pd.date_range(start, periods=n, freq=step)
    return pd.DataFrame(
        {
            "time": np.tile(times, len(tags)),
            "tag": np.repeat(list(tags), n),
            "value": rng.normal(size=n * len(tags)),
        }
    )


def test_round_trip_across_days(tmp_path):
    h = Historian(tmp_path)
    data = rows()  # 22:00 + 4 h crosses midnight: two day partitions
    assert h.append(data) == len(data)
    assert len(list((tmp_path / "segments").iterdir())) == 2
    got = h.query()
    assert len(got) == len(data)
    expect = data.sort_values(["tag", "time"]).reset_index(drop=True)
    assert np.allclose(got["value"], expect["value"])
    assert (got["time"].to_numpy() == expect["time"].to_numpy()).all()
    assert (got["quality"] == 0).all() and (got["flags"] == 0).all()


def test_duplicates_are_never_returned_and_the_first_commit_wins(tmp_path):
    h = Historian(tmp_path)
    first = rows(n=60)
    h.append(first)
    again = first.assign(value=first["value"] + 100)  # a retried / overlapping append
    h.append(again)
    got = h.query()
    assert len(got) == len(first)
    assert got["value"].max() < 50
    assert h.count() == len(first)
    for _ in range(3):
        h.append(rows(n=60, start=T0 + pd.Timedelta(hours=1), seed=1))
    assert h.compact(min_files=2) >= 1
    after = h.query()
    assert len(after) == h.count() == 240
    assert after["value"].max() < 50


def test_range_tags_and_resample_match_pandas(tmp_path):
    h = Historian(tmp_path)
    data = rows(tags=("A", "B", "C"), n=600, step="10s")
    h.append(data)
    start, end = T0 + pd.Timedelta(minutes=10), T0 + pd.Timedelta(minutes=50)
    got = h.query(["A", "C"], start, end, resample="5min")
    sel = data[data["tag"].isin(["A", "C"]) & (data["time"] >= start) & (data["time"] < end)]
    expect = sel.groupby(["tag", pd.Grouper(key="time", freq="5min")])["value"].mean().reset_index()
    assert len(got) == len(expect) == 16
    assert np.allclose(got["value"], expect["value"])
    assert set(got["tag"]) == {"A", "C"}


def test_bad_values_are_stored_and_flagged(tmp_path):
    h = Historian(tmp_path)
    data = pd.DataFrame(
        {
            "time": [T0, T0 + pd.Timedelta(minutes=1), T0 + pd.Timedelta(minutes=2)],
            "tag": ["A", "A", "A"],
            "value": [1.0, np.nan, 3.0],
            "status": [0, 0, 0x808B0000],  # Good, Good, BadSensorFailure
        }
    )
    h.append(data)
    got = h.query()
    assert len(got) == 3
    assert got["flags"].tolist() == [0, FLAG_NAN, FLAG_BAD_STATUS]
    assert got["quality"].tolist() == [0, 0, 2]
    mean = h.query(resample="1h")
    assert mean["value"].iloc[0] == pytest.approx(2.0)  # NaN ignored
    assert mean["quality"].iloc[0] == 2 and mean["flags"].iloc[0] == FLAG_NAN | FLAG_BAD_STATUS


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"tag": ["A"], "value": [1.0]}), "rows.time: required column is missing"),
        (
            pd.DataFrame({"time": [pd.Timestamp("2026-01-01")], "tag": ["A"], "value": [1.0]}),
            "rows.time: must be timezone-aware",
        ),
        (
            pd.DataFrame({"time": [T0], "tag": ["A"], "value": ["high"]}),
            "rows.value: must be a number; got 'high'",
        ),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(tmp_path, frame, message):
    h = Historian(tmp_path)
    with pytest.raises(HistorianError, match=message):
        h.append(frame)
    assert not list((tmp_path / "segments").rglob("*.parquet"))


def _reader(root: str, stop, out) -> None:
    h = Historian(root)
    counts = []
    while not stop.is_set():
        frame = h.query()
        counts.append(len(frame))
        if frame.duplicated(["tag", "time"]).any():
            counts.append(-1)
    out.put(counts)


def test_a_reader_in_another_process_sees_only_whole_commits(tmp_path):
    h = Historian(tmp_path)
    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_reader, args=(str(tmp_path), stop, out))
    proc.start()
    time.sleep(1.5)  # the reader is importing and polling an empty store
    for i in range(30):
        h.append(rows(n=100, start=T0 + pd.Timedelta(hours=3 * i), seed=i))
        if i % 10 == 9:
            h.compact(min_files=2)
    time.sleep(0.5)
    stop.set()
    counts = out.get(timeout=60)
    proc.join(timeout=30)
    assert -1 not in counts  # never a duplicate
    assert all(c % 200 == 0 for c in counts)  # whole appends of 200 rows only
    assert counts == sorted(counts)  # never goes back
    assert max(counts) > 0


WRITER = textwrap.dedent(
    """
    import sys, numpy as np, pandas as pd
    from connectors.historian import Historian
    h = Historian(sys.argv[1])
    t0 = pd.Timestamp("2026-05-01", tz="UTC")
    i = 0
    while True:
        n = 200_000
        # 100 us apart: every append stays inside one day, so it is one atomic commit
        h.append(pd.DataFrame({"time": t0 + pd.to_timedelta((np.arange(n) + i * n) * 100, "us"),
                               "tag": "W", "value": np.random.default_rng(i).normal(size=n)}))
        print(i, flush=True)
        i += 1
    """
)


def test_kill_9_mid_write_leaves_what_was_committed_intact(tmp_path):
    h = Historian(tmp_path)
    before = rows(n=500)
    h.append(before)
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    committed = [proc.stdout.readline() for _ in range(3)]  # 3 whole appends done
    assert all(line.strip() for line in committed)
    time.sleep(0.15)  # well inside a later write
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    again = Historian(tmp_path)  # opens, removes the dead writer's temporary file
    assert not list(tmp_path.rglob("*.tmp"))
    got = again.query(["A", "B"])
    assert len(got) == len(before)
    w = again.query(["W"])
    assert len(w) >= 3 * 200_000 and len(w) % 200_000 == 0
    assert not w.duplicated(["time"]).any()


def test_batch_context_and_batch_series(tmp_path):
    h = Historian(tmp_path)
    h.upsert_tags(pd.DataFrame({"tag": ["A", "B"], "unit": ["BR-201", "BR-202"]}))
    h.append(rows(n=180))
    start = T0 + pd.Timedelta(minutes=30)
    h.append_batch_context(
        pd.DataFrame(
            {
                "batch_id": ["B1"],
                "unit": ["BR-201"],
                "phase": ["growth"],
                "state": ["running"],
                "start_time": [start],
                "end_time": [None],
            }
        )
    )
    assert h.batch_context()["end_time"].isna().all()  # open while it runs
    h.append_batch_context(
        pd.DataFrame(
            {
                "batch_id": ["B1"],
                "unit": ["BR-201"],
                "phase": ["growth"],
                "state": ["running"],
                "start_time": [start],
                "end_time": [start + pd.Timedelta(minutes=60)],
            }
        )
    )
    ctx = h.batch_context()
    assert len(ctx) == 1 and ctx["end_time"].notna().all()  # closed: one row
    series = h.batch_series("B1")
    assert set(series["tag"]) == {"A"}  # only the batch's unit
    assert len(series) == 61
    assert series["batch_time_h"].iloc[0] == 0 and series["batch_time_h"].iloc[-1] == 1.0
    with pytest.raises(HistorianError, match="no batch context stored for 'B9'"):
        h.batch_series("B9")


def test_cli_import_tags_and_export(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["history", "import-sim", str(SAMPLE), "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    h = Historian(tmp_path / "historian")
    tags = h.tags()
    assert len(tags) >= 100 and (tags["rows"] > 0).all()
    assert {"CEL", "RPM"} <= set(tags["eng_unit"])
    result = runner.invoke(app, ["history", "tags", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0 and "TIC-201.PV" in result.output
    out = tmp_path / "x.csv"
    result = runner.invoke(
        app,
        [
            "history",
            "export",
            "--tags",
            "TIC-201.PV,AIC-2012.PV",
            "--start",
            "2026-01-10",
            "--end",
            "2026-01-11",
            "--resample",
            "1h",
            "--out",
            str(out),
            "--data-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    assert len(frame) == 48 and set(frame.columns) >= {"time", "tag", "value", "quality"}
    ctx = h.batch_context(unit="BR-201")
    assert {"running", "cip", "sip"} <= set(ctx["state"])
    series = h.batch_series(ctx.loc[ctx["state"] == "running", "batch_id"].iloc[0])
    assert series["batch_time_h"].max() > 40  # a production run, ~2 days
    bad = runner.invoke(
        app, ["history", "export", "--out", str(tmp_path / "x.xlsx"), "--data-dir", str(tmp_path)]
    )
    assert bad.exit_code == 2 and "must end in .parquet or .csv" in bad.output
