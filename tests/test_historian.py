"""The historian: atomic appends, de-duplication, queries, compaction, crash safety, processes.

Every test writes real files under ``tmp_path``; the process tests start real processes.
"""

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
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.historian import (
    FLAG_BAD_STATUS,
    FLAG_NAN,
    FLAG_OUT_OF_RANGE,
    Historian,
    HistorianError,
)

T0 = pd.Timestamp("2026-03-01 22:00", tz="UTC")
ROOT = Path(__file__).resolve().parents[1]


def rows(tags=("A", "B"), n=240, start=T0, step="1min", seed=0) -> pd.DataFrame:
    """``n`` samples of each tag from ``start``, every ``step``."""
    rng = np.random.default_rng(seed)
    times = pd.date_range(start, periods=n, freq=step)
    return pd.DataFrame(
        {
            "time": np.tile(times, len(tags)),
            "tag": np.repeat(list(tags), n),
            "value": rng.normal(size=n * len(tags)),
        }
    )


def files(root: Path, pattern: str = "*.parquet") -> list[Path]:
    return sorted((root / "segments").rglob(pattern))


# ---------------------------------------------------------------------- round trip
def test_round_trip_across_days(tmp_path):
    h = Historian(tmp_path)
    data = rows()  # 22:00 + 4 h crosses midnight: two day partitions
    assert h.append(data) == len(data)
    assert [p.name for p in sorted((tmp_path / "segments").iterdir())] == [
        "date=2026-03-01",
        "date=2026-03-02",
    ]
    got = h.query()
    expect = data.sort_values(["tag", "time"]).reset_index(drop=True)
    assert len(got) == len(data)
    assert np.array_equal(got["value"], expect["value"])
    assert (got["time"].to_numpy() == expect["time"].to_numpy()).all()
    assert str(got["time"].dtype) == "datetime64[us, UTC]"
    assert (got["quality"] == 0).all() and (got["flags"] == 0).all()


def test_an_arrow_table_with_all_columns_round_trips(tmp_path):
    h = Historian(tmp_path)
    table = pa.table(
        {
            "time": pa.array([T0, T0 + pd.Timedelta(seconds=1)], pa.timestamp("us", tz="UTC")),
            "tag": ["A", "A"],
            "value": [1.5, 2.5],
            "status": pa.array([0, 0x40900000], pa.uint32()),  # Good, Uncertain
            "quality": pa.array([0, 1], pa.uint8()),
            "flags": pa.array([0, FLAG_OUT_OF_RANGE], pa.uint8()),
        }
    )
    h.append(table)
    got = h.query()
    assert got["status"].tolist() == [0, 0x40900000]
    assert got["flags"].tolist() == [0, FLAG_OUT_OF_RANGE | FLAG_BAD_STATUS]


def test_empty_store_answers_with_typed_empty_frames(tmp_path):
    h = Historian(tmp_path)
    got = h.query(["A"], resample="1min")
    assert got.empty and list(got.columns) == ["time", "tag", "value", "status", "quality", "flags"]
    assert h.count() == 0 and h.last_times() == {} and h.tags().empty
    assert h.batch_context().empty


# ---------------------------------------------------------------------- de-duplication
def test_duplicates_are_never_returned_and_the_first_commit_wins(tmp_path):
    h = Historian(tmp_path, compact_every=None)
    first = rows(n=60)
    h.append(first)
    h.append(first.assign(value=first["value"] + 100))  # a retried / overlapping append
    got = h.query()
    assert len(got) == len(first) == h.count()
    assert got["value"].max() < 50
    for _ in range(3):
        h.append(rows(n=60, start=T0 + pd.Timedelta(hours=1), seed=1))
    assert h.compact(min_files=2) >= 1
    assert len(files(tmp_path)) == 1
    after = h.query()
    assert len(after) == h.count() == 240
    assert after["value"].max() < 50  # compaction kept the winners


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    appends=st.lists(
        st.lists(
            st.tuples(st.sampled_from("AB"), st.integers(0, 12), st.integers(0, 9)),
            min_size=1,
            max_size=8,
        ),
        min_size=1,
        max_size=6,
    )
)
def test_queries_equal_first_commit_wins_before_and_after_compaction(tmp_path_factory, appends):
    """Any sequence of overlapping appends: one row per key, the first committed, always."""
    h = Historian(tmp_path_factory.mktemp("h"), compact_every=None)
    frames = []
    for batch in appends:
        tag, minute, value = zip(*batch, strict=True)
        frame = pd.DataFrame(
            {
                "time": T0 + pd.to_timedelta(np.array(minute) * 15, "min"),  # to 01:00
                "tag": list(tag),
                "value": np.array(value, dtype=float),
            }
        )
        h.append(frame)
        frames.append(frame)
    expect = pd.concat(frames).drop_duplicates(["tag", "time"]).sort_values(["tag", "time"])
    expect = expect.reset_index(drop=True)
    for stage in ("appended", "compacted"):
        got = h.query()
        assert got[["tag", "time", "value"]].equals(expect[["tag", "time", "value"]]), stage
        h.compact(min_files=2)


# ---------------------------------------------------------------------- queries
def test_range_tags_and_resample_match_pandas(tmp_path):
    h = Historian(tmp_path)
    data = rows(tags=("A", "B", "C"), n=600, step="10s")
    data.loc[::7, "value"] = np.nan
    h.append(data)
    start, end = T0 + pd.Timedelta(minutes=10), T0 + pd.Timedelta(minutes=50)
    got = h.query(["A", "C"], start, end, resample="5min")
    sel = data[data["tag"].isin(["A", "C"]) & (data["time"] >= start) & (data["time"] < end)]
    expect = sel.groupby(["tag", pd.Grouper(key="time", freq="5min")])["value"].mean()
    expect = expect.reset_index()
    assert len(got) == len(expect) == 16
    assert np.allclose(got["value"], expect["value"])
    assert (got["time"].to_numpy() == expect["time"].to_numpy()).all()
    assert set(got["tag"]) == {"A", "C"}
    assert (got["flags"] == FLAG_NAN).all()  # every 5-min bucket holds one of the NaNs
    raw = h.query("B", start, end)
    assert len(raw) == 240 and raw["time"].min() == start and raw["time"].max() < end


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
    assert mean["status"].iloc[0] == 0x808B0000  # the worst row's status


# ---------------------------------------------------------------------- bad input
GOOD = {"time": [T0], "tag": ["A"], "value": [1.0]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"time": None}, r"rows\.time: required column is missing", id="no-time"),
        pytest.param({"tag": None}, r"rows\.tag: required column is missing", id="no-tag"),
        pytest.param(
            {"time": [pd.Timestamp("2026-01-01")]},
            r"rows\.time: must be timezone-aware .* got naive 2026-01-01 00:00:00 \(row 2\)",
            id="naive-time",
        ),
        pytest.param({"time": [3.5]}, r"rows\.time: must be timestamps; got 3\.5", id="float-time"),
        pytest.param(
            {"time": [pd.NaT]}, r"rows\.time: must not be missing; got NaT \(row 2\)", id="nat"
        ),
        pytest.param({"tag": [7]}, r"rows\.tag: must be a string; got 7 \(row 2\)", id="int-tag"),
        pytest.param({"tag": [" "]}, r"rows\.tag: must be a non-empty name", id="empty-tag"),
        pytest.param({"value": ["high"]}, r"rows\.value: must be a number; got 'high'", id="text"),
        pytest.param({"status": [-1]}, r"rows\.status: must be within \[0, 4294967295\]", id="st"),
        pytest.param({"quality": [3]}, r"rows\.quality: must be within \[0, 2\]; got 3", id="q"),
        pytest.param({"flags": [1.5]}, r"rows\.flags: must be an integer; got 1\.5", id="flags"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(tmp_path, change, message):
    h = Historian(tmp_path)
    frame = pd.DataFrame({**GOOD, **{k: v for k, v in change.items() if v is not None}})
    frame = frame.drop(columns=[k for k, v in change.items() if v is None])
    ok = pd.DataFrame(  # good rows in the same call, of another day
        {"time": T0 + pd.Timedelta(days=1), "tag": "Z", "value": 1.0, "status": 0, "quality": 0,
         "flags": 0}, index=[0, 1])[frame.columns]  # fmt: skip
    with pytest.raises(HistorianError, match=message):
        h.append(pd.concat([ok, frame], ignore_index=True) if set(GOOD) <= set(frame) else frame)
    assert not files(tmp_path)  # the good rows of the same call were not written either


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tags": []}, "tags: must name at least one tag"),
        ({"start": "yesterday-ish"}, "start: must be a timestamp; got 'yesterday-ish'"),
        ({"start": T0, "end": T0}, "end: must be after start"),
        ({"resample": "1 fortnight"}, "resample: must be a fixed width"),
        ({"resample": "0s"}, "resample: must be a positive width"),
    ],
)
def test_bad_queries_are_refused(tmp_path, kwargs, message):
    with pytest.raises(HistorianError, match=message):
        Historian(tmp_path).query(**kwargs)


# ---------------------------------------------------------------------- compaction
def test_writers_compact_their_days_in_tiers_and_results_do_not_change(tmp_path):
    h = Historian(tmp_path, compact_every=4)
    for i in range(21):  # 21 commits of one day: 4 -> cmp, 4 cmps -> 1, ...
        h.append(rows(n=10, start=T0 - pd.Timedelta(hours=2) + pd.Timedelta(minutes=10 * i)))
    names = [p.name for p in files(tmp_path)]
    assert len(names) <= 8, names
    assert any(n.startswith("cmp-") for n in names)
    before = h.query()
    assert len(before) == 420 and h.count() == 420
    assert h.compact(min_files=2) == 1  # a closed day: one file
    assert len(files(tmp_path)) == 1
    assert h.query().equals(before)


def test_compaction_keeps_the_days_still_being_written_in_tiers(tmp_path):
    h = Historian(tmp_path, compact_every=None)
    for i in range(3):
        h.append(rows(n=10, start=T0 - pd.Timedelta(hours=2) + pd.Timedelta(minutes=10 * i)))
    assert h.compact(min_files=2, before=T0 - pd.Timedelta(days=1)) == 1  # open: seg -> cmp
    assert [p.name[:4] for p in files(tmp_path)] == ["cmp-"]
    h.append(rows(n=10, start=T0))
    assert h.compact(min_files=2, before=T0 - pd.Timedelta(days=1)) == 0  # 1 cmp + 1 seg
    assert len(files(tmp_path)) == 2 and h.count() == 80


# ---------------------------------------------------------------------- other processes
def _reader(root: str, stop, out, reads) -> None:
    counts = []
    try:
        h = Historian(root, compact_every=None)
        while not stop.is_set():
            frame = h.query()
            counts.append(len(frame))
            if frame.duplicated(["tag", "time"]).any():
                counts.append(-1)
            with reads.get_lock():
                reads.value += 1
    except Exception as exc:  # reported to the test, which fails with it
        import traceback

        out.put(f"reader failed: {exc!r}\n{traceback.format_exc()}")
        return
    out.put(counts)


def _wait_for_reads(reads, more_than: int, timeout: float = 60.0, proc=None) -> None:
    """Wait until the reader has read more than ``more_than`` times; fail at once if it
    died (instead of waiting out every timeout)."""
    deadline = time.monotonic() + timeout
    while reads.value <= more_than and time.monotonic() < deadline:
        if proc is not None and not proc.is_alive():
            raise AssertionError(f"the reader process died (exit code {proc.exitcode})")
        time.sleep(0.01)


def test_a_reader_in_another_process_sees_only_whole_commits(tmp_path):
    h = Historian(tmp_path, compact_every=3)  # the writer also compacts as it goes
    ctx = mp.get_context("spawn")
    stop, out, reads = ctx.Event(), ctx.Queue(), ctx.Value("i", 0)
    proc = ctx.Process(target=_reader, args=(str(tmp_path), stop, out, reads))
    proc.start()
    try:
        _wait_for_reads(reads, 0, timeout=120, proc=proc)  # it imported and polls the store
        for i in range(40):
            h.append(rows(n=100, start=T0 + pd.Timedelta(hours=3 * i), seed=i))
            if i % 10 == 9:
                h.compact(min_files=2)
            if i % 3 == 0:  # interleave: on a loaded machine the reader may lag behind
                _wait_for_reads(reads, reads.value, proc=proc)
        time.sleep(0.5)
    finally:
        stop.set()
        counts = out.get(timeout=60)
        proc.join(timeout=30)
    assert not isinstance(counts, str), counts  # the reader's own failure, if any
    assert len(counts) > 10  # it really read while the writer wrote
    assert -1 not in counts  # never a duplicate
    assert all(c % 200 == 0 for c in counts)  # whole appends of 200 rows only
    assert counts == sorted(counts)  # never goes back
    assert 0 < max(counts) <= 8000


WRITER = textwrap.dedent(
    """
    import sys, numpy as np, pandas as pd
    from connectors.historian import Historian
    h = Historian(sys.argv[1], compact_every=None)
    tag, n = sys.argv[2], int(sys.argv[3])
    t0 = pd.Timestamp("2026-05-01", tz="UTC")
    for i in range(int(sys.argv[4])):
        # 100 us apart: every append stays inside one day, so it is one atomic commit
        h.append(pd.DataFrame({"time": t0 + pd.to_timedelta((np.arange(n) + i * n) * 100, "us"),
                               "tag": tag, "value": np.random.default_rng(i).normal(size=n)}))
        print(i, flush=True)
    """
)


def _writer(root: Path, tag: str, n: int, appends: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), tag, str(n), str(appends)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def test_kill_9_mid_write_leaves_what_was_committed_intact(tmp_path):
    h = Historian(tmp_path)
    before = rows(n=500)
    h.append(before)
    proc = _writer(tmp_path, "W", 300_000, 1_000_000)
    try:
        committed = [proc.stdout.readline() for _ in range(2)]  # 2 whole appends done
        assert all(line.strip() for line in committed)
        deadline = time.monotonic() + 30
        while not list(tmp_path.rglob("*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.002)  # wait until it is inside a write
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert list(tmp_path.rglob("*.tmp")), "the writer was not killed mid-write"
    again = Historian(tmp_path)  # opens, removes the dead writer's temporary file
    assert not list(tmp_path.rglob("*.tmp"))
    got = again.query(["A", "B"])
    assert len(got) == len(before)
    assert np.array_equal(got["value"], before.sort_values(["tag", "time"])["value"])
    w = again.query(["W"])
    assert len(w) >= 2 * 300_000 and len(w) % 300_000 == 0
    assert not w.duplicated(["time"]).any()


def test_a_live_writers_temporary_file_is_left_alone(tmp_path):
    Historian(tmp_path)
    day = tmp_path / "segments" / "date=2026-01-01"
    day.mkdir()
    mine = day / f"seg-1-2-3.parquet.{os.getpid()}-0.tmp"  # this process is alive
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                          capture_output=True, check=True).stdout.strip()  # fmt: skip
    gone = day / f"seg-1-2-4.parquet.{dead}-0.tmp"
    mine.write_bytes(b"half a file")
    gone.write_bytes(b"half a file")
    h = Historian(tmp_path)
    assert mine.exists() and not gone.exists()
    assert h.count() == 0  # neither is read


def test_several_writer_processes_append_at_once(tmp_path):
    procs = [_writer(tmp_path, tag, 20_000, 6) for tag in ("P", "Q", "R")]
    for proc in procs:
        proc.communicate(timeout=60)
        assert proc.returncode == 0
    h = Historian(tmp_path)
    assert h.count() == 3 * 6 * 20_000
    assert {t: len(h.query([t])) for t in "PQR"} == {t: 6 * 20_000 for t in "PQR"}


# ---------------------------------------------------------------------- metadata, batches
def test_tags_and_last_times(tmp_path):
    h = Historian(tmp_path)
    h.upsert_tags(pd.DataFrame({"tag": ["A", "C"], "unit": ["BR-201", "BR-202"]}))
    h.upsert_tags(pd.DataFrame({"tag": ["A"], "unit": ["BR-203"], "eng_unit": ["CEL"]}))
    h.append(rows(n=30))
    h.append(rows(n=30))  # duplicates do not count twice
    tags = h.tags().set_index("tag")
    assert tags.loc["A", "unit"] == "BR-203" and tags.loc["A", "eng_unit"] == "CEL"
    assert tags["rows"].to_dict() == {"A": 30, "B": 30, "C": 0}
    assert tags.loc["B", "last_time"] == T0 + pd.Timedelta(minutes=29)
    assert h.last_times() == {
        "A": T0 + pd.Timedelta(minutes=29),
        "B": T0 + pd.Timedelta(minutes=29),
    }
    with pytest.raises(HistorianError, match=r"meta\.tag: required column is missing"):
        h.upsert_tags(pd.DataFrame({"unit": ["X"]}))


def context(batch, unit, start, hours, state="running", phase="growth", closed=True):
    return pd.DataFrame(
        {
            "batch_id": [batch],
            "unit": [unit],
            "phase": [phase],
            "state": [state],
            "start_time": [start],
            "end_time": [start + pd.Timedelta(hours=hours) if closed else None],
        }
    )


def test_batch_context_and_batch_series(tmp_path):
    h = Historian(tmp_path)
    h.upsert_tags(pd.DataFrame({"tag": ["A", "B"], "unit": ["BR-201", "BR-202"]}))
    h.append(rows(n=240))
    start = T0 + pd.Timedelta(minutes=30)
    h.append_batch_context(context("B1", "BR-201", start, 1, closed=False))
    assert h.batch_context()["end_time"].isna().all()  # open while it runs
    h.append_batch_context(context("B1", "BR-201", start, 1))
    ctx = h.batch_context()
    assert len(ctx) == 1 and ctx["end_time"].notna().all()  # closed: one record
    h.append_batch_context(context("B1", "BR-201", start + pd.Timedelta(hours=1), 0.5, "cip"))
    h.append_batch_context(context("B1", "BR-202", start + pd.Timedelta(hours=2), 0.5))
    assert len(h.batch_context(unit="BR-201")) == 2
    assert len(h.batch_context(start=start + pd.Timedelta(hours=1.2))) == 2
    series = h.batch_series("B1")
    a, b = series[series["tag"] == "A"], series[series["tag"] == "B"]
    assert len(a) == 61 and len(b) == 31  # running only: the CIP after it is not the batch
    assert a["batch_time_h"].iloc[0] == 0 and a["batch_time_h"].iloc[-1] == 1.0
    assert b["batch_time_h"].iloc[0] == 0 and b["batch_time_h"].iloc[-1] == 0.5
    assert set(series["unit"]) == {"BR-201", "BR-202"} and set(series["phase"]) == {"growth"}
    assert set(h.batch_series("B1", tags=["B"])["tag"]) == {"B"}
    with pytest.raises(HistorianError, match="no batch context stored for 'B9'"):
        h.batch_series("B9")


def test_batch_context_is_validated_and_compacted(tmp_path):
    h = Historian(tmp_path, compact_every=3)
    for i in range(7):
        h.append_batch_context(context(f"B{i}", "BR-201", T0 + pd.Timedelta(hours=i), 1))
    assert len(list((tmp_path / "batches").glob("*.parquet"))) < 7
    assert h.batch_context()["batch_id"].tolist() == [f"B{i}" for i in range(7)]
    with pytest.raises(HistorianError, match=r"batch context\.state: required column"):
        h.append_batch_context(context("B", "U", T0, 1).drop(columns="state"))
    with pytest.raises(HistorianError, match=r"end_time: must not be before start_time"):
        h.append_batch_context(context("B", "U", T0, -1))


def test_a_unit_has_one_record_per_start_time_and_the_last_written_wins(tmp_path):
    h = Historian(tmp_path)
    cip = context("B1", "BR-201", T0, 1, state="cip", phase="cip")
    repair = context(None, "BR-201", T0, 30, state="repair", phase="repair")
    h.append_batch_context(pd.concat([cip, repair], ignore_index=True))
    assert h.batch_context()["state"].tolist() == ["repair"]
    h.append_batch_context(cip)  # a later file
    assert h.batch_context()["state"].tolist() == ["cip"]
