"""Rules at the door of quality.data: bad input is refused in one line that names the field,
the rule and the bad value; what can be kept is kept, counted and logged."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from biotwin.cli import app
from quality.data import batch_history, run_history
from quality.errors import InputError

BATCHES = ["B3", "B7", "B1", "B2"]  # outcomes order: not the order of the names


def _series(starts=(0.0, 0.0, 0.0, 0.0), hours=14) -> pd.DataFrame:
    """Long form: pH and temperature every half hour for each batch of BATCHES."""
    rows = []
    for batch, t0 in zip(BATCHES, starts, strict=True):
        for k in range(2 * hours):
            rows.append((batch, t0 + 0.5 * k, "pH", 7.0 + 0.001 * k, "good"))
            rows.append((batch, t0 + 0.5 * k, "temp", 37.0, "good"))
    return pd.DataFrame(rows, columns=["batch", "hours", "tag", "value", "q"])


def _outcomes() -> pd.DataFrame:
    return pd.DataFrame({"batch": BATCHES, "oos": [0, 1, 0, 1]})


def _long(series: pd.DataFrame, outcomes: pd.DataFrame | None = None, **kw):
    args = {"batch_col": "batch", "time_col": "hours", "tag_col": "tag", "value_col": "value"}
    return batch_history(
        series, _outcomes() if outcomes is None else outcomes, min_batches=0, **args | kw
    )


def _wide(series: pd.DataFrame) -> pd.DataFrame:
    wide = series.pivot_table(index=["batch", "hours"], columns="tag", values="value")
    wide = wide.reset_index()
    wide.columns.name = None
    return wide


def _runs(cycles=None) -> pd.DataFrame:
    """Two assets by cycles, U3 last; a wear sensor."""
    cycles = [1, 2, 3, 1, 2, 3] if cycles is None else cycles
    return pd.DataFrame(
        {"unit": ["U1"] * 3 + ["U3"] * 3, "cycle": cycles, "wear": [0.1, 0.2, 0.3] * 2}
    )


def _fit_runs(table: pd.DataFrame, **kw):
    return run_history(table, asset_col="unit", time_col="cycle", min_runs=1, **kw)


def _with(frame: pd.DataFrame, *rows) -> pd.DataFrame:
    return pd.concat([frame, pd.DataFrame(list(rows), columns=frame.columns)], ignore_index=True)


# ----------------------------------------------------------------------------- good tables


def test_a_good_table_passes_with_a_clean_report():
    history = _long(_series(starts=(0, 30, 60, 90)))
    assert history.input_report == {
        "rows": 4 * 28 * 2,
        "values": 4 * 28 * 2,
        "nan": 0,
        "inf": 0,
        "huge": 0,
        "exact_duplicates_dropped": 0,
    }
    assert history.time_ordered
    assert history.bins["bad"].eq(0).all()
    runs = _fit_runs(_runs())
    assert runs.input_report["nan"] == runs.input_report["inf"] == runs.input_report["huge"] == 0
    assert runs.input_report["rows"] == 6


# ----------------------------------------------------------------------------- duplicates


def _conflict() -> pd.DataFrame:
    """The series with a second, different pH of batch B7 at 12.5 h (7.01, then 7.3)."""
    series = _series()
    at = series["batch"].eq("B7") & series["hours"].eq(12.5) & series["tag"].eq("pH")
    series.loc[at, "value"] = 7.01
    return _with(series, ("B7", 12.5, "pH", 7.3, "good"))


def test_two_values_for_one_batch_time_and_tag_are_refused():
    with pytest.raises(InputError) as err:
        _long(_conflict())
    assert str(err.value) == (
        "series: one value per batch, time and tag; batch 'B7' tag 'pH' at time 12.5 has "
        "2 different values (7.01, 7.3)"
    )


def test_the_same_value_with_two_qualities_is_refused():
    series = _with(_series(), ("B1", 3.0, "temp", 37.0, "bad"))
    with pytest.raises(InputError) as err:
        _long(series, quality_col="q")
    assert str(err.value) == (
        "series: one value per batch, time and tag; batch 'B1' tag 'temp' at time 3.0 has the "
        "value 37.0 with 2 different qualities ('good', 'bad')"
    )


def test_a_conflict_at_a_timestamp_shows_the_timestamp():
    series = _series()
    series["hours"] = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(
        series["hours"] + 24 * series["batch"].str[1].astype(int), unit="h"
    )
    bad = series.iloc[[0]].assign(value=6.5)
    with pytest.raises(InputError, match=r"at time 2026-01-04 00:00:00\+00:00 has 2 different"):
        _long(pd.concat([series, bad]))


def test_exact_duplicates_are_dropped_with_a_warning(caplog):
    clean = _long(_series())
    doubled = pd.concat([_series(), _series().iloc[:5]], ignore_index=True)
    with caplog.at_level(logging.WARNING, logger="quality.data"):
        history = _long(doubled)
    assert history.input_report["exact_duplicates_dropped"] == 5
    assert history.input_report["rows"] == len(doubled)
    assert "series: 5 exact duplicate row(s)" in caplog.text
    pd.testing.assert_frame_equal(history.bins, clean.bins)


def test_wide_form_refuses_two_different_rows_for_one_batch_and_time():
    wide = _wide(_series())
    row = wide[(wide["batch"] == "B7") & (wide["hours"] == 12.5)].assign(pH=7.3)
    wide.loc[row.index, "pH"] = 7.01
    with pytest.raises(InputError) as err:
        batch_history(
            pd.concat([wide, row]), _outcomes(), batch_col="batch", time_col="hours", min_batches=0
        )
    assert str(err.value) == (
        "series: one row per batch and time; batch 'B7' at time 12.5 has 2 different rows "
        "(column 'pH': 7.01, 7.3)"
    )


def test_wide_form_drops_exact_duplicate_rows(caplog):
    wide = _wide(_series())
    with caplog.at_level(logging.WARNING, logger="quality.data"):
        history = batch_history(
            pd.concat([wide, wide.iloc[:3]]),
            _outcomes(),
            batch_col="batch",
            time_col="hours",
            min_batches=0,
        )
    assert history.input_report["exact_duplicates_dropped"] == 3
    assert "3 exact duplicate row(s)" in caplog.text


@pytest.mark.parametrize(
    ("cycles", "message"),
    [
        pytest.param(
            [1, 2, 3, 1, 3, 3],
            "runs.cycle: one row per asset and time; asset 'U3' repeats time 3",
            id="cycles",
        ),
        pytest.param(
            pd.to_datetime(
                ["2026-01-01", "2026-01-01", "2026-01-02", "2026-01-01", "2026-01-02"]
            ).append(pd.to_datetime(["2026-01-03"])),
            "runs.cycle: one row per asset and time; asset 'U1' repeats time 2026-01-01 00:00:00",
            id="timestamps",
        ),
    ],
)
def test_a_repeated_asset_and_time_is_refused_showing_the_time(cycles, message):
    with pytest.raises(InputError) as err:
        _fit_runs(_runs(list(cycles)))
    assert str(err.value) == message


# ----------------------------------------------------------------------------- NaN, inf, huge


def test_nan_inf_and_huge_values_are_bad_quality_samples_counted_and_logged(caplog):
    series = _series()
    series.loc[[4, 6, 8], "value"] = [np.nan, np.inf, -1e20]
    with caplog.at_level(logging.WARNING, logger="quality.data"):
        history = _long(series)
    report = history.input_report
    assert (report["nan"], report["inf"], report["huge"]) == (1, 1, 1)
    assert (
        f"series: 1 NaN, 1 inf and 1 huge (abs > 1e15) values of {len(series):,} (1.34 %), "
        "kept as bad-quality samples"
    ) in caplog.text
    bins = history.bins
    assert bins["value"].dropna().abs().max() < 1e15
    ph = bins[(bins["batch_id"] == "B3") & (bins["tag"] == "pH")].set_index("bin")
    # bin 1 (1.0 h NaN, 1.5 h inf): all bad, no value; bin 2 (2.0 h huge, 2.5 h good)
    assert ph.loc[1, "bad"] == 1.0 and np.isnan(ph.loc[1, "value"])
    assert ph.loc[2, "bad"] == 0.5 and ph.loc[2, "value"] == pytest.approx(7.005)


def test_wide_form_counts_nan_values():
    wide = _wide(_series())
    wide.loc[:9, "temp"] = np.nan
    history = batch_history(wide, _outcomes(), batch_col="batch", time_col="hours", min_batches=0)
    assert history.input_report["nan"] == 10
    assert history.input_report["values"] == 2 * len(wide)


def test_run_tables_keep_nan_missing_and_set_inf_and_huge_missing(caplog):
    table = _runs().assign(wear=[0.1, np.nan, np.inf, 0.1, 2e16, 0.3])
    with caplog.at_level(logging.WARNING, logger="quality.data"):
        runs = _fit_runs(table)
    assert runs.input_report == {
        "rows": 6,
        "values": 6,
        "nan": 1,
        "inf": 1,
        "huge": 1,
        "exact_duplicates_dropped": 0,
    }
    assert runs.rows["wear"].isna().sum() == 3 and np.isfinite(runs.rows["wear"].dropna()).all()
    assert "runs: 1 NaN, 1 inf and 1 huge (abs > 1e15) values of 6 (50.00 %)" in caplog.text


# ----------------------------------------------------------------------------- time base


@pytest.mark.parametrize(
    ("last", "message"),
    [
        pytest.param(
            1e18,
            "runs.cycle: time must be hours or cycles below 1e9; got 1e+18 (asset 'U3')",
            id="1e18",
        ),
        pytest.param(
            -1.7e12,
            "runs.cycle: time must be hours or cycles below 1e9; got -1700000000000.0 (asset 'U3')",
            id="epoch-ms",
        ),
        pytest.param(np.inf, "runs.cycle: time must be finite; got inf (asset 'U3')", id="inf"),
        pytest.param(
            np.nan,
            "runs.cycle: times must not be missing; got 1 missing of 6 (first at asset 'U3')",
            id="nan",
        ),
        pytest.param(
            2e7,
            "runs.cycle: times must span at most 1e7 hours or cycles; got a span of 2e+07, "
            "from 1.0 (asset 'U1') to 20000000.0 (asset 'U3')",
            id="span",
        ),
        pytest.param(
            "yesterday",
            "runs.cycle: must be numbers (hours or cycles) or timestamps; got 'yesterday' "
            "(asset 'U3')",
            id="text",
        ),
    ],
)
def test_a_numeric_time_base_that_does_not_fit_is_refused(last, message):
    cycles = [1.0, 2.0, 3.0, 1.0, 2.0, last]
    if isinstance(last, str):
        cycles = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-01", "2026-01-02", last]
    with pytest.raises(InputError) as err:
        _fit_runs(_runs(cycles))
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("last", "shown"),
    [
        pytest.param("2500-01-01", "'2500-01-01'", id="text-2500"),
        pytest.param("1960-06-01", "'1960-06-01'", id="text-1960"),
        pytest.param(pd.Timestamp("2201-01-01"), "2201-01-01 00:00:00", id="datetime-2201"),
    ],
)
def test_timestamps_outside_1970_to_2200_are_refused(last, shown):
    if isinstance(last, pd.Timestamp):
        cycles = pd.Series(pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"] * 2))
        cycles = cycles.astype("datetime64[s]")
        cycles.iloc[5] = last
    else:
        cycles = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-01", "2026-01-02", last]
    with pytest.raises(InputError) as err:
        _fit_runs(_runs(cycles))
    assert str(err.value) == (
        f"runs.cycle: timestamps must be within the years 1970-2200; got {shown} (asset 'U3')"
    )


def test_a_missing_timestamp_is_refused_naming_the_count_and_the_asset():
    cycles = pd.Series(pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"] * 2))
    cycles.iloc[[1, 4]] = pd.NaT
    with pytest.raises(InputError, match=r"got 2 missing of 6 \(first at asset 'U1'\)"):
        _fit_runs(_runs(cycles))


def test_negative_hours_are_allowed():
    runs = _fit_runs(_runs([-30.0, -20.0, -10.0, -5.0, 0.0, 5.0]))
    assert runs.rows["t"].min() == -30.0
    history = _long(_series(starts=(-100, -50, 0, 50)))
    assert history.time_ordered and history.outcomes["order"].min() == -100


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(
            1e18, "series.hours: time must be hours or cycles below 1e9; got 1e+18 (batch 'B1')"
        ),
        pytest.param(
            np.nan,
            "series.hours: times must not be missing; got 1 missing of 224 (first at batch 'B1')",
        ),
    ],
    ids=["1e18", "nan"],
)
def test_batch_series_times_follow_the_same_rules(value, message):
    series = _series()
    series.loc[series.index[series["batch"] == "B1"][3], "hours"] = value
    with pytest.raises(InputError) as err:
        _long(series)
    assert str(err.value) == message


# ----------------------------------------------------------------------------- labels


def test_labels_that_are_not_0_1_are_refused_showing_the_value():
    outcomes = _outcomes().astype({"oos": object})
    outcomes.loc[2, "oos"] = "maybe"
    with pytest.raises(InputError) as err:
        _long(_series(), outcomes, label_col="oos")
    assert str(err.value) == "outcomes.oos: labels must be 0/1 or true/false; got 'maybe'"


# ----------------------------------------------------------------------------- batch-relative time


def test_batch_relative_time_gives_no_time_order_and_keeps_the_file_order(caplog):
    with caplog.at_level(logging.INFO, logger="quality.data"):
        history = _long(_series(), label_col="oos")
    assert history.time_ordered is False
    assert list(history.outcomes["order"]) == [0.0, 1.0, 2.0, 3.0]
    assert list(history.labelled()) == BATCHES  # the outcomes table's order, not the names
    assert "time_ordered=False" in caplog.text
    part = history.subset(["B1", "B2"])
    assert part.time_ordered is False and part.input_report == history.input_report


def test_batches_without_an_outcome_row_follow_in_series_order():
    history = _long(_series(), _outcomes().iloc[[1, 0]])
    assert list(history.outcomes.sort_values("order").index) == ["B7", "B3", "B1", "B2"]


@pytest.mark.parametrize(
    "starts",
    [pytest.param((90, 30, 0, 60), id="hours"), pytest.param("timestamps", id="timestamps")],
)
def test_absolute_times_order_batches_by_their_start(starts):
    if starts == "timestamps":
        series = _series(starts=(90, 30, 0, 60))
        series["hours"] = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(
            series["hours"], unit="h"
        )
    else:
        series = _series(starts=starts)
    history = _long(series, label_col="oos")
    assert history.time_ordered is True
    assert list(history.labelled()) == ["B1", "B7", "B2", "B3"]


# ----------------------------------------------------------------------------- the CLI

runner = CliRunner()


def _said(result) -> str:
    return " ".join(result.output.split())  # rich wraps long lines


def test_deviation_fit_refuses_a_conflicting_duplicate_and_writes_nothing(tmp_path):
    _conflict().to_csv(tmp_path / "series.csv", index=False)
    _outcomes().to_csv(tmp_path / "outcomes.csv", index=False)
    args = ["deviation", "fit", "--series", tmp_path / "series.csv"]
    args += ["--outcomes", tmp_path / "outcomes.csv", "--batch-col", "batch"]
    args += ["--time-col", "hours", "--label-col", "oos", "--tag-col", "tag"]
    args += ["--value-col", "value", "--model", tmp_path / "model"]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    assert (
        "series: one value per batch, time and tag; batch 'B7' tag 'pH' at time 12.5 has 2 "
        "different values (7.01, 7.3)"
    ) in _said(result)
    assert not (tmp_path / "model").exists()


def test_maintenance_fit_refuses_a_cycle_of_1e18_and_writes_nothing(tmp_path):
    _runs([1, 2, 3, 1, 2, 1e18]).to_csv(tmp_path / "runs.csv", index=False)
    args = ["maintenance", "fit", "--runs", tmp_path / "runs.csv", "--asset-col", "unit"]
    args += ["--time-col", "cycle", "--model", tmp_path / "model"]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    assert "runs.cycle: time must be hours or cycles below 1e9; got 1e+18 (asset 'U3')" in _said(
        result
    )
    assert not (tmp_path / "model").exists()
