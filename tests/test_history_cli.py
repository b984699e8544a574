"""`biotwin history ...`: import a twin simulation, list what is stored, export, compact."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from biotwin.cli import app
from connectors.historian import Historian

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "twin"
runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A data dir with the 60-day sample simulation imported (once for the module)."""
    data_dir = tmp_path_factory.mktemp("store")
    result = runner.invoke(app, ["history", "import-sim", str(SAMPLE), "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    return data_dir


def history(store: Path, *args: str):
    return runner.invoke(app, ["history", *args, "--data-dir", str(store)])


def test_import_sim_stores_every_signal_row_with_metadata_and_quality(store):
    h = Historian(store / "historian")
    signals = pd.concat(pd.read_parquet(p) for p in sorted((SAMPLE / "signals").glob("*.parquet")))
    tags = h.tags()
    assert h.count() == len(signals) == tags["rows"].sum()
    assert set(tags["tag"]) == set(pd.read_parquet(SAMPLE / "tags.parquet")["tag"])
    assert {"CEL", "RPM"} <= set(tags["eng_unit"])
    got = h.query(["TIC-201.PV"])
    want = signals[signals["tag"] == "TIC-201.PV"].sort_values("time")
    assert len(got) == len(want)
    codes = want["quality"].astype(str).map({"good": 0, "uncertain": 1, "bad": 2})
    assert got["quality"].tolist() == codes.tolist()
    assert got["time"].iloc[0] == pd.Timestamp(want["time"].iloc[0]).tz_convert("UTC")
    days = sorted((store / "historian" / "segments").iterdir())
    assert all(len(list(d.glob("*.parquet"))) == 1 for d in days)  # compacted after import


def test_import_sim_turns_phases_and_schedule_into_batch_context(store):
    h = Historian(store / "historian")
    ctx = h.batch_context(unit="BR-201")
    assert {"running", "cip", "sip"} <= set(ctx["state"])
    batch = ctx.loc[ctx["state"] == "running", "batch_id"].iloc[0]
    series = h.batch_series(batch)
    assert set(series["unit"]) >= {"BR-201"}
    assert 40 < series.loc[series["unit"] == "BR-201", "batch_time_h"].max() < 100


def test_history_tags_lists_units_times_and_counts(store):
    result = history(store, "tags")
    assert result.exit_code == 0, result.output
    assert "TIC-201.PV" in result.output and "CEL" in result.output


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_a_resampled_range_of_some_tags(store, tmp_path, suffix):
    out = tmp_path / f"x{suffix}"
    args = ["export", "--tags", "TIC-201.PV,AIC-2012.PV", "--start", "2026-01-10"]
    result = history(store, *args, "--end", "2026-01-11", "--resample", "1h", "--out", str(out))
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert len(frame) == 48 and list(frame.columns)[:4] == ["time", "tag", "value", "status"]
    assert "48 rows" in result.output
    expect = Historian(store / "historian").query(
        ["TIC-201.PV"], "2026-01-10", "2026-01-11", resample="1h"
    )
    got = frame[frame["tag"] == "TIC-201.PV"]["value"].to_numpy()
    assert got == pytest.approx(expect["value"].to_numpy())


def test_export_everything_by_default(store, tmp_path):
    out = tmp_path / "all.parquet"
    assert history(store, "export", "--out", str(out)).exit_code == 0
    assert len(pd.read_parquet(out)) == Historian(store / "historian").count()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "x.xlsx"], "must end in .parquet or .csv"),
        (["--out", "x.csv", "--start", "soon"], "start: must be a timestamp; got 'soon'"),
        (["--out", "x.csv", "--resample", "1 fortnight"], "resample: must be a fixed width"),
    ],
)
def test_export_refuses_bad_arguments_clearly(store, tmp_path, args, message):
    args = [str(tmp_path / a) if a.startswith("x.") else a for a in args]
    result = history(store, "export", *args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not list(tmp_path.iterdir())


def test_compact_and_an_empty_store(tmp_path):
    result = history(tmp_path, "compact")
    assert result.exit_code == 0 and "0 days compacted" in result.output
    assert history(tmp_path, "tags").exit_code == 0
    out = tmp_path / "none.csv"
    assert history(tmp_path, "export", "--out", str(out)).exit_code == 0
    assert list(pd.read_csv(out).columns) == ["time", "tag", "value", "status", "quality", "flags"]
