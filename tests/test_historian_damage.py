"""A damaged historian file never stops a reader: it is found by its checksum, quarantined,
reported (log, alarm, `history verify`), and every other file is still read.

The probes: a truncated segment made `history tags`, `history compact`, the export of that
day, the start of the ingest (last_times) and the dashboard fail with a DuckDB traceback;
single-bit flips changed values silently.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from biotwin.cli import app
from connectors import manifest
from connectors.historian import Historian

T0 = pd.Timestamp("2026-03-01", tz="UTC")
DAYS = 3
PER_DAY = 60  # samples per tag and day
TAGS = ["FT-1.PV", "TIC-1.PV"]
runner = CliRunner()


def _day(d: int) -> pd.DataFrame:
    times = T0 + pd.Timedelta(days=d) + pd.to_timedelta(np.arange(PER_DAY), "min")
    return pd.DataFrame(
        {
            "time": np.tile(times, len(TAGS)),
            "tag": np.repeat(TAGS, PER_DAY),
            "value": np.arange(PER_DAY * len(TAGS), dtype=float) + 1000 * d,
        }
    )


@pytest.fixture
def store(tmp_path) -> Path:
    """A data dir: 3 days of 2 tags (one segment a day), tag metadata, batch context."""
    h = Historian(tmp_path / "historian", compact_every=None)
    for d in range(DAYS):
        h.append(_day(d))
    h.upsert_tags(pd.DataFrame({"tag": TAGS, "unit": ["SKID", "SKID"]}))
    for unit in ("BR-1", "BR-2"):
        h.append_batch_context(
            pd.DataFrame(
                {
                    "batch_id": [f"B-{unit}"],
                    "unit": [unit],
                    "state": ["running"],
                    "start_time": [T0],
                }
            )
        )
    manifest._VERDICTS.clear()  # as a new process would: nothing verified yet
    return tmp_path


def _segment(store: Path, day: int) -> Path:
    (path,) = (
        store / "historian" / "segments" / f"date={(T0 + pd.Timedelta(days=day)).date()}"
    ).glob("*.parquet")
    return path


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_one_bit(path: Path) -> None:
    """One bit in the data pages (the footer stays readable: DuckDB reads other values)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 4] ^= 0x04
    path.write_bytes(bytes(data))


def _export(h: Historian, tmp: Path) -> int:
    out = tmp / "out.csv"
    n = h.export(out)
    assert len(pd.read_csv(out)) == n
    return n


# What each reader returns once the middle day is gone: 2 of 3 days.
READERS = {
    "query": lambda h, tmp: len(h.query()),
    "export": _export,
    "tags": lambda h, tmp: int(h.tags()["rows"].sum()),
    "count": lambda h, tmp: h.count(),
    "last_times": lambda h, tmp: len(h.last_times()) * PER_DAY * 2,
    "compact": lambda h, tmp: (h.compact(), h.count())[1],
}
DAMAGE = {"truncated": truncate, "one bit flipped": flip_one_bit}


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("reader", READERS)
def test_a_damaged_segment_is_quarantined_and_the_reader_goes_on(store, reader, damage, caplog):
    bad = _segment(store, 1)
    DAMAGE[damage](bad)
    h = Historian(store / "historian", compact_every=None)
    with caplog.at_level(logging.WARNING, logger="connectors.manifest"):
        assert READERS[reader](h, store) == 2 * PER_DAY * len(TAGS)
    assert not bad.exists()
    moved = store / "historian" / "quarantine" / f"segments__date=2026-03-02__{bad.name}"
    assert moved.exists()
    note = json.loads(moved.with_name(moved.name + ".json").read_text())
    assert note["file"] == f"segments/date=2026-03-02/{bad.name}"
    assert note["rows_expected"] == PER_DAY * len(TAGS)
    assert ("size is" if damage == "truncated" else "sha256 is") in note["problem"]
    assert any(bad.name in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    # the other days are intact, to the value
    got = h.query(start=T0 + pd.Timedelta(days=2))
    assert got["value"].tolist() == sorted(_day(2)["value"].tolist())


@pytest.mark.parametrize("damage", DAMAGE)
def test_history_verify_names_the_damaged_file_and_exits_1(store, damage):
    bad = _segment(store, 2)
    DAMAGE[damage](bad)
    result = runner.invoke(app, ["history", "verify", "--data-dir", str(store)])
    assert result.exit_code == 1, result.output
    assert bad.name in result.output and "quarantine" in result.output
    assert result.output.count(" ok ") + result.output.count("│ ok") >= 1
    # a later run still reports it (it sits in quarantine) until an operator clears it
    again = runner.invoke(app, ["history", "verify", "--data-dir", str(store)])
    assert again.exit_code == 1 and bad.name in again.output
    for p in (store / "historian" / "quarantine").iterdir():
        p.unlink()
    clean = runner.invoke(app, ["history", "verify", "--data-dir", str(store)])
    assert clean.exit_code == 0, clean.output


def test_a_flip_that_keeps_size_and_mtime_is_found_by_a_new_process(store):
    bad = _segment(store, 0)
    h = Historian(store / "historian")
    assert len(h.query()) == DAYS * PER_DAY * len(TAGS)  # verified and cached here
    st = bad.stat()
    flip_one_bit(bad)
    os.utime(bad, ns=(st.st_atime_ns, st.st_mtime_ns))
    code = textwrap.dedent(
        f"""
        from connectors.historian import Historian
        print(len(Historian({str(store / "historian")!r}).query()))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert int(out.stdout.strip()) == 2 * PER_DAY * len(TAGS)
    assert [n["file"].rsplit("/", 1)[1] for n in h.quarantined()] == [bad.name]


def test_segments_without_a_manifest_are_adopted_and_a_bad_one_quarantined(store):
    root = store / "historian"
    for m in root.rglob(manifest.MANIFEST):
        m.unlink()  # a store written before manifests existed
    truncate(_segment(store, 1))
    h = Historian(root)
    assert len(h.query()) == 2 * PER_DAY * len(TAGS)
    entries = manifest.read_manifest(_segment(store, 2).parent, fresh=True)
    assert entries[_segment(store, 2).name]["rows"] == PER_DAY * len(TAGS)
    (note,) = h.quarantined()
    assert "Parquet footer is unreadable" in note["problem"] and note["rows_expected"] is None
    flip_one_bit(_segment(store, 2))  # adopted: now protected by its checksum
    manifest._VERDICTS.clear()
    assert len(h.query()) == PER_DAY * len(TAGS)


def test_damaged_batch_context_and_tag_metadata_do_not_stop_their_readers(store):
    root = store / "historian"
    first = sorted((root / "batches").glob("*.parquet"))[0]
    truncate(first)
    truncate(root / "tags.parquet")
    h = Historian(root)
    assert h.batch_context()["unit"].tolist() == ["BR-2"]
    tags = h.tags()
    assert tags["tag"].tolist() == TAGS and tags["unit"].isna().all()  # metadata lost, rows kept
    assert len(h.quarantined()) == 2
    h.upsert_tags(pd.DataFrame({"tag": TAGS, "unit": ["SKID", "SKID"]}))  # written again
    assert h.tags()["unit"].tolist() == ["SKID", "SKID"]


def test_every_committed_file_has_its_entry_and_compaction_keeps_them_exact(store):
    root = store / "historian"
    h = Historian(root, compact_every=None)
    h.append(_day(2))  # a second segment on day 2: compaction merges
    h.compact(before=T0 + pd.Timedelta(days=10))
    files = manifest.stored_files(root)
    for path in files:
        entry = manifest.read_manifest(path.parent, fresh=True)[path.name]
        assert entry["size"] == path.stat().st_size
    segments = [p for p in files if "segments" in p.parts]
    assert [manifest.read_manifest(p.parent)[p.name]["rows"] for p in segments] == [120] * 3
    assert all(f.ok for f in h.verify()) and not h.quarantined()


def test_the_dashboard_event_list_shows_the_quarantine_as_an_alarm(store):
    from dashboard.events import event_list

    truncate(_segment(store, 1))
    h = Historian(store / "historian")
    events = event_list(h, store, T0, T0 + pd.Timedelta(days=DAYS))
    alarms = events[events["type"] == "data integrity"]
    assert len(alarms) == 1 and alarms["severity"].iloc[0] == "high"
    assert "2026-03-02" in alarms["message"].iloc[0] and "120 rows" in alarms["message"].iloc[0]


WRITER = """
import sys
import numpy as np, pandas as pd
from connectors.historian import Historian
h = Historian(sys.argv[1], compact_every=3)
t0 = pd.Timestamp("2026-03-01", tz="UTC")
for i in range(30):
    times = t0 + pd.to_timedelta(i * 50 + np.arange(50), "s")
    h.append(pd.DataFrame({"time": times, "tag": "W", "value": np.arange(50.0)}))
    h.upsert_tags(pd.DataFrame({"tag": [f"W{i}"]}))
h.compact(before=t0 + pd.Timedelta(days=2))
"""


def test_readers_racing_a_writer_and_compactions_never_quarantine_a_good_file(tmp_path):
    root = tmp_path / "historian"
    Historian(root)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(root)])
    h = Historian(root)
    seen = []
    while writer.poll() is None:
        seen.append(len(h.query(["W"])))
        h.tags()
    assert writer.wait() == 0
    assert seen == sorted(seen) and all(n % 50 == 0 for n in seen)
    assert h.count() == 1500 + 0 and len(h.query(["W"])) == 1500
    assert not h.quarantined() and all(f.ok for f in h.verify())


def test_a_torn_manifest_line_costs_nothing(store):
    """A crash inside an append leaves a torn last line: skipped, and the next entry lands."""
    folder = _segment(store, 0).parent
    with open(folder / manifest.MANIFEST, "a") as fh:
        fh.write('{"name":"seg-0-0-0.parquet","sha256":"ab')
    h = Historian(store / "historian", compact_every=None)
    h.append(_day(0).assign(time=lambda f: f["time"] + pd.Timedelta(hours=2)))
    entries = manifest.read_manifest(folder, fresh=True)
    assert sorted(entries) == sorted(p.name for p in folder.glob("*.parquet"))
    assert len(h.query()) == (DAYS + 1) * PER_DAY * len(TAGS) and not h.quarantined()


def test_a_long_running_reader_forgets_the_verdicts_of_files_compacted_elsewhere(store):
    """Verdicts are cached per process; names another process compacted away are dropped
    at the next listing of their folder, so the cache of a dashboard does not grow."""
    h = Historian(store / "historian")
    h.query()
    folder = str(_segment(store, 0).parent)
    manifest._VERDICTS[folder]["seg-compacted-by-another-process.parquet"] = (1, 2, 3)
    h.query()
    assert sorted(manifest._VERDICTS[folder]) == [_segment(store, 0).name]
