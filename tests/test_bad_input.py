"""Every bad input gets one clear line, and nothing is half-written (issue 14, the tester's
probes): tag maps, plant files, and the tables of `fit` / `predict`.

Each message must name the field, the rule and the bad value as given; the CLI prints it as
one line (even at 80 columns), exits with 2 and prints no traceback; the output, model or
data directory does not exist, or is unchanged, afterwards (docs/data-contracts.md, "Input
rules").
"""

from __future__ import annotations

import copy
import logging
import os
import subprocess
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from connectors.ingest import IngestError, read_tag_map
from connectors.tag_map import TagMapError
from quality.data import batch_history, run_history
from quality.errors import InputError
from twin.config import DEFAULT_CONFIG_PATH, parse_config
from twin.errors import ConfigError

BIOTWIN = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "biotwin"


def _cli(*args, cwd: Path) -> tuple[int, str]:
    """Run the real ``biotwin`` at 80 columns; (exit code, standard error)."""
    env = os.environ | {"COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb"}
    proc = subprocess.run(
        [str(BIOTWIN), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )
    return proc.returncode, proc.stderr


def _error_line(code: int, stderr: str) -> str:
    """The one ``error:`` line of a refused command (exit 2, no traceback)."""
    assert code == 2, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


# ----------------------------------------------------------------------------- tag maps


def _map(tmp_path: Path, text: str, name: str = "tags.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_two_nodes_under_one_tag_name_are_refused_naming_both(tmp_path):
    path = _map(
        tmp_path,
        "node_id,tag,unit\nns=2;s=BR201.Temp,TIC-201.PV,BR-201\nns=2;s=BR202.Temp,TIC-201.PV,BR-202\n",
    )
    with pytest.raises(TagMapError) as err:
        read_tag_map(path)
    assert str(err.value) == (
        "tag map tags.csv line 3: tag must be unique; got 'TIC-201.PV' for node "
        "ns=2;s=BR202.Temp, already the name of node ns=2;s=BR201.Temp (line 2)"
    )
    assert isinstance(err.value, IngestError)  # the ingest CLI turns it into one line


def test_one_node_under_two_tag_names_is_refused(tmp_path):
    path = _map(tmp_path, "node_id,tag\nns=2;i=1001,FT-1.PV\nns=2;i=1001,FT-2.PV\n")
    with pytest.raises(TagMapError, match=r"^tag map tags.csv line 3: node_id must be unique; "):
        read_tag_map(path)


MALFORMED = [
    pytest.param(
        "tags.csv",
        'node_id,tag,deadband\nns=2;s=A,FT-1.PV,0.5\n"ns=2;s=B,FT-2.PV,1\nns=2;s=C,FT-3.PV,1\n',
        "tag map tags.csv line 3: a quoted field must end with a closing quote; got an open "
        "quote in '\"ns=2;s=B,FT-2.PV,1' that runs to the end of the file",
        id="csv-open-quote",
    ),
    pytest.param(
        "tags.csv",
        "node_id,tag,deadband\nns=2;s=A,FT-1.PV,0.5\nns=2;s=B,FT-2.PV,abc\n",
        "tag map tags.csv line 3: deadband must be a finite number >= 0; got 'abc'",
        id="csv-deadband-abc",
    ),
    pytest.param(
        "tags.csv",
        "node_id,tag,deadband\nns=2;s=A,FT-1.PV,-1\n",
        "tag map tags.csv line 2: deadband must be a finite number >= 0; got '-1'",
        id="csv-deadband-negative",
    ),
    pytest.param(
        "tags.csv",
        "",
        "tag map tags.csv line 1: must start with a header line "
        "(node_id,tag,unit,eng_unit,deadband); got an empty file",
        id="csv-empty",
    ),
    pytest.param(
        "tags.csv",
        "node_id,tag\n",
        "tag map tags.csv line 2: at least one tag is needed after the header; got none",
        id="csv-header-only",
    ),
    pytest.param(
        "tags.csv",
        "node_id,tag,deadbnd\nns=2;s=A,FT-1.PV,1\n",
        "tag map tags.csv line 1: columns must be among node_id, tag, unit, eng_unit, "
        "deadband; got 'deadbnd'",
        id="csv-unknown-column",
    ),
    pytest.param(
        "tags.csv",
        "node_id,tag\nns=2;s=A,FT-1.PV\nns=2;s=B,FT-2.PV,BR-201\n",
        "tag map tags.csv line 3: must have 2 fields like the header (node_id,tag); got 3 "
        "in 'ns=2;s=B,FT-2.PV,BR-201'",
        id="csv-extra-field",
    ),
    pytest.param(
        "tags.csv",
        "node_id,tag\nTank.Level,LT-1.PV\n",
        "tag map tags.csv line 2: node_id must be an OPC UA node id such as ns=2;s=Name or "
        "ns=2;i=1001; got 'Tank.Level'",
        id="csv-not-a-node-id",
    ),
    pytest.param(
        "tags.csv",
        "node_id,tag\nns=2;s=A,\n",
        "tag map tags.csv line 2: tag is required; got nothing",
        id="csv-tag-missing",
    ),
    pytest.param(
        "tags.toml",
        '[[tag]]\nnode_id = "ns=2;s=A"\ntag = "FT-1.PV"\n\n[[tag]]\nnode_id = "ns=2;s=B"\n'
        'tag = "FT-2.PV"\ndeadband = "abc"\n',
        "tag map tags.toml [[tag]] #2 (line 5): deadband must be a finite number >= 0; got 'abc'",
        id="toml-deadband-abc",
    ),
    pytest.param(
        "tags.toml",
        '[[tag]]\nnode_id = "ns=2;s=A\ntag = "FT-1.PV"\n',
        "tag map tags.toml line 2: must be valid TOML (Illegal character '\\n' at column 20); "
        "got 'node_id = \"ns=2;s=A'",
        id="toml-open-quote",
    ),
    pytest.param(
        "tags.toml",
        "",
        "tag map tags.toml: must hold one or more [[tag]] tables; got an empty file",
        id="toml-empty",
    ),
    pytest.param(
        "tags.xlsx",
        "node_id,tag\n",
        "must be a .csv or .toml file; got .xlsx",
        id="unknown-format",
    ),
]


@pytest.mark.parametrize(("name", "text", "message"), MALFORMED)
def test_a_malformed_tag_map_is_refused_naming_file_line_field_and_value(
    tmp_path, name, text, message
):
    with pytest.raises(TagMapError) as err:
        read_tag_map(_map(tmp_path, text, name))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_good_tag_map_reads_the_same_from_csv_and_toml(tmp_path):
    csv_path = _map(
        tmp_path,
        "\ufeffnode_id,tag,unit,eng_unit,deadband\n"
        'ns=2;s=Tank.Level,LT-1.PV,SKID,"%",0.5\n\nns=2;i=1001,FT-1.PV,,,\n',
    )
    toml_path = _map(
        tmp_path,
        '[[tag]]\nnode_id = "ns=2;s=Tank.Level"\ntag = "LT-1.PV"\nunit = "SKID"\n'
        'eng_unit = "%"\ndeadband = 0.5\n\n[[tag]]\nnode_id = "ns=2;i=1001"\ntag = "FT-1.PV"\n',
        "tags.toml",
    )
    for path in (csv_path, toml_path):
        specs = read_tag_map(path)
        assert [(s.node_id, s.tag, s.unit, s.eng_unit, s.deadband) for s in specs] == [
            ("ns=2;s=Tank.Level", "LT-1.PV", "SKID", "%", 0.5),
            ("ns=2;i=1001", "FT-1.PV", None, None, None),
        ]


def test_ingest_refuses_a_duplicate_tag_in_one_line_and_creates_nothing(tmp_path):
    from tests.test_opcua import free_port

    path = _map(tmp_path, "node_id,tag\nns=2;s=A,FT-1.PV\nns=2;s=B,FT-1.PV\n")
    store = tmp_path / "store"
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    line = _error_line(*_cli("ingest", url, "--tag-map", path, "--data-dir", store, cwd=tmp_path))
    assert line == (
        "error: tag map tags.csv line 3: tag must be unique; got 'FT-1.PV' for node ns=2;s=B, "
        "already the name of node ns=2;s=A (line 2)"
    )
    assert not store.exists()


# ----------------------------------------------------------------------------- plant files


@pytest.fixture()
def raw():
    return tomllib.loads(DEFAULT_CONFIG_PATH.read_text())


def _set(data: dict, path: tuple, value) -> dict:
    data = copy.deepcopy(data)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


HOURS = "must be a finite number of hours, 0 to 1e5 (about 11 years)"
NUMBER = "must be finite and within -1e9 to 1e9"
PLANT = [  # each passed the field rules and then crashed `simulate` or filled it with NaN
    pytest.param(
        ("demand", "lead_time_h"), np.inf, f"demand.lead_time_h {HOURS}; got inf", id="lead-inf"
    ),
    pytest.param(
        ("sensor_faults", "dropout_duration_h", "high"),
        1e300,
        f"sensor_faults.dropout_duration_h.high {HOURS}; got 1e+300",
        id="distribution-1e300",
    ),
    pytest.param(
        ("demand", "batch_interval_h", "high"),
        np.inf,
        f"demand.batch_interval_h.high {HOURS}; got inf",
        id="interval-inf",
    ),
    pytest.param(
        ("recipe", "steps", 2, "duration_h"),
        {"dist": "normal", "mean": 48, "sd": 2, "minimum": -5},
        f"recipe.steps[2].duration_h.minimum {HOURS}; got -5",
        id="negative-duration",
    ),
    pytest.param(
        ("unit_classes", "production_bioreactor", "bioreactor", "kinetics", "ks_g_per_l"),
        1e300,
        f"unit_classes.production_bioreactor.bioreactor.kinetics.ks_g_per_l {NUMBER}; got 1e+300",
        id="rate-1e300",
    ),
    pytest.param(
        ("unit_classes", "filler", "signals", 0, "noise_sd"),
        np.nan,
        f"unit_classes.filler.signals[0].noise_sd {NUMBER}; got nan",
        id="noise-nan",
    ),
    pytest.param(
        ("plant", "start"),
        "9999-01-01T00:00:00Z",
        "plant.start: must be within the years 1970-2100; got '9999-01-01T00:00:00Z'",
        id="year-9999",
    ),
    pytest.param(
        ("plant", "start"),
        "2026-02-30T00:00:00Z",
        "plant.start: must be a real UTC date and time; got '2026-02-30T00:00:00Z'",
        id="february-30",
    ),
]


@pytest.mark.parametrize(("path", "value", "message"), PLANT)
def test_a_number_simulate_crashed_on_is_refused_by_the_config(raw, path, value, message):
    with pytest.raises(ConfigError) as err:
        parse_config(_set(raw, path, value), "plant.toml")
    assert str(err.value) == f"invalid plant configuration plant.toml: {message}"


def test_several_bad_numbers_give_one_line_each(raw):
    data = _set(raw, ("demand", "lead_time_h"), np.inf)
    data = _set(data, ("qc_lab", "hands_on_h", "high"), 1e300)
    with pytest.raises(ConfigError) as err:
        parse_config(data, "plant.toml")
    assert str(err.value).splitlines() == [
        "invalid plant configuration plant.toml (2 problems):",
        f"  qc_lab.hands_on_h.high {HOURS}; got 1e+300",
        f"  demand.lead_time_h {HOURS}; got inf",
    ]


def test_a_plant_at_the_edges_the_rules_allow_simulates(raw, tmp_path):
    from twin.output import simulate_to

    data = _set(raw, ("plant", "start"), "2100-12-31T00:00:00Z")
    data = _set(data, ("demand", "lead_time_h"), 1e5)
    data = _set(data, ("sensor_faults", "dropout_duration_h", "high"), 1e5)
    data = _set(data, ("sensor_faults", "spike_sd"), 1e9)
    bioreactor = ("unit_classes", "production_bioreactor", "bioreactor")
    data = _set(data, (*bioreactor, "aeration", "kla_ref_per_h"), 1e9)
    _sim, manifest = simulate_to(parse_config(data), tmp_path / "out", days=1, seed=7)
    assert manifest["rows"] and (tmp_path / "out" / "batches.parquet").exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        pytest.param(
            ("lead_time_h = 336", "lead_time_h = inf"),
            f"demand.lead_time_h {HOURS}; got inf",
            id="inf",
        ),
        pytest.param(
            ('start = "2026-', 'start = "9999-'),
            "plant.start: must be within the years 1970-2100; got '9999-01-01T00:00:00Z'",
            id="year-9999",
        ),
    ],
)
def test_check_config_refuses_what_simulate_would_crash_on_and_simulate_writes_nothing(
    tmp_path, edit, message
):
    text = DEFAULT_CONFIG_PATH.read_text()
    assert edit[0] in text
    plant = tmp_path / "plant.toml"
    plant.write_text(text.replace(edit[0], edit[1], 1))
    line = _error_line(*_cli("check-config", "--config", plant, cwd=tmp_path))
    assert line == f"error: invalid plant configuration {plant}: {message}"
    out = tmp_path / "out"
    line = _error_line(
        *_cli("simulate", "--days", 1, "--config", plant, "--out", out, cwd=tmp_path)
    )
    assert message in line
    assert not out.exists() and list(tmp_path.iterdir()) == [plant]


def test_a_kind_rule_shows_its_table_name_not_rich_markup(raw, tmp_path):
    del raw["unit_classes"]["homogenizer"]["homogenizer"]
    text = DEFAULT_CONFIG_PATH.read_text()
    start = text.index("[unit_classes.homogenizer.homogenizer]")
    end = text.index("[unit_classes.sterile_filter]")
    plant = tmp_path / "plant.toml"
    plant.write_text(text[:start] + text[end:])
    line = _error_line(*_cli("check-config", "--config", plant, cwd=tmp_path))
    assert "kind 'homogenizer' requires a [homogenizer] table; got none" in line


# ----------------------------------------------------------------------------- fit / predict


def _series() -> pd.DataFrame:
    """Long form: pH and temperature every half hour of four batches."""
    rows = []
    for batch in ("B1", "B2", "B3", "B4"):
        for k in range(20):
            rows.append((batch, 0.5 * k, "pH", 7.0 + 0.001 * k))
            rows.append((batch, 0.5 * k, "temp", 37.0))
    return pd.DataFrame(rows, columns=["batch", "hours", "tag", "value"])


def _long(series: pd.DataFrame, outcomes: pd.DataFrame | None = None, **kw):
    if outcomes is None:
        outcomes = pd.DataFrame({"batch": ["B1", "B2", "B3", "B4"], "oos": [0, 1, 0, 1]})
    return batch_history(
        series,
        outcomes,
        batch_col="batch",
        time_col="hours",
        tag_col="tag",
        value_col="value",
        min_batches=0,
        **kw,
    )


def _runs() -> pd.DataFrame:
    rows = [(f"U{a}", c, 0.1 * c, 5.0) for a in range(3) for c in range(1, 11)]
    return pd.DataFrame(rows, columns=["unit", "cycle", "wear", "temp"])


def test_nan_and_inf_are_counted_per_tag_in_one_warning_line_each(caplog):
    series = _series()
    ph = series.index[series["tag"] == "pH"]
    series.loc[ph[[1, 2, 3]], "value"] = np.nan
    series.loc[ph[5], "value"] = np.inf
    with caplog.at_level(logging.WARNING, logger="quality.data"):
        history = _long(series)
    assert history.input_report["nan"] == 3 and history.input_report["inf"] == 1
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("series tag")]
    assert lines == [
        "series tag 'pH': 3 NaN, 1 inf of 80 values, kept as bad-quality samples "
        f"(first inf at row {ph[5] + 1})"
    ]


def test_a_huge_value_is_named_with_its_column_row_and_value(caplog):
    table = _runs()
    table.loc[7, "temp"] = 1e308
    with caplog.at_level(logging.WARNING, logger="quality.data"):
        runs = run_history(table, asset_col="unit", time_col="cycle", min_runs=1)
    assert runs.rows["temp"].isna().sum() == 1
    assert (
        "runs column 'temp': 1 huge (abs > 1e15) of 30 values, NaN kept missing, inf and huge "
        "set to missing (first 1e+308 at row 8)"
    ) in caplog.text


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(
            lambda: run_history(
                _runs()
                .astype({"temp": object})
                .assign(temp=lambda t: t["temp"].where(t.index != 12, "abc")),
                asset_col="unit",
                time_col="cycle",
                min_runs=1,
            ),
            "runs.temp: sensor columns must be numeric; got 'abc' (row 13, asset 'U1')",
            id="sensor-text",
        ),
        pytest.param(
            lambda: _long(
                _series()
                .astype({"value": object})
                .assign(value=lambda s: s["value"].where(s.index != 41, "n/a"))
            ),
            "series.value: values must be numbers; got 'n/a' (row 42, batch 'B2')",
            id="series-text",
        ),
        pytest.param(
            lambda: _long(
                _series(),
                pd.DataFrame(
                    {"batch": ["B1", "B2", "B3", "B4"], "titer": ["7.1", "6.9", "high", "7.0"]}
                ),
                cqa_cols=["titer"],
            ),
            "outcomes.titer: CQA values must be numbers; got 'high' (row 3, batch 'B3')",
            id="cqa-text",
        ),
        pytest.param(
            lambda: _long(_series().assign(hours=lambda s: s["hours"].where(s.index != 5, 1e18))),
            "series.hours: time must be hours or cycles below 1e9; got 1e+18 (batch 'B1')",
            id="cycle-1e18",
        ),
        pytest.param(
            lambda: _long(
                _series().assign(
                    hours=lambda s: (
                        (pd.Timestamp("2026-01-01") + pd.to_timedelta(s["hours"], unit="h"))
                        .astype(str)
                        .where(s.index != 7, "2300-01-01 00:00:00")
                    )
                )
            ),
            "series.hours: timestamps must be within the years 1970-2200; got "
            "'2300-01-01 00:00:00' (batch 'B1')",
            id="year-2300",
        ),
    ],
)
def test_a_bad_value_is_shown_as_given_not_an_example(make, message):
    with pytest.raises(InputError) as err:
        make()
    assert str(err.value) == message


def test_maintenance_fit_refuses_text_in_a_sensor_column_and_writes_no_model(tmp_path):
    table = _runs().astype({"temp": object})
    table.loc[12, "temp"] = "abc"
    table.to_csv(tmp_path / "runs.csv", index=False)
    model = tmp_path / "model"
    args = ["maintenance", "fit", "--runs", tmp_path / "runs.csv", "--asset-col", "unit"]
    line = _error_line(*_cli(*args, "--time-col", "cycle", "--model", model, cwd=tmp_path))
    assert (
        line == "error: runs.temp: sensor columns must be numeric; got 'abc' (row 13, asset 'U1')"
    )
    assert not model.exists()


def test_deviation_fit_refuses_a_conflicting_duplicate_and_leaves_the_model_unchanged(tmp_path):
    series = _series()
    series.loc[len(series)] = ("B3", 2.5, "pH", 7.4)  # B3 pH at 2.5 h was 7.005
    series.to_csv(tmp_path / "series.csv", index=False)
    pd.DataFrame({"batch": ["B1", "B2", "B3", "B4"], "oos": [0, 1, 0, 1]}).to_csv(
        tmp_path / "outcomes.csv", index=False
    )
    model = tmp_path / "model"
    model.mkdir()
    (model / "meta.json").write_text('{"version": "before"}')
    args = ["deviation", "fit", "--series", tmp_path / "series.csv", "--outcomes"]
    args += [tmp_path / "outcomes.csv", "--batch-col", "batch", "--time-col", "hours"]
    args += ["--label-col", "oos", "--tag-col", "tag", "--value-col", "value"]
    line = _error_line(*_cli(*args, "--model", model, cwd=tmp_path))
    assert line == (
        "error: series: one value per batch, time and tag; batch 'B3' tag 'pH' at time 2.5 "
        "has 2 different values (7.005, 7.4)"
    )
    assert [p.name for p in model.iterdir()] == ["meta.json"]
    assert (model / "meta.json").read_text() == '{"version": "before"}'
