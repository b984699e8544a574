"""The plant file: the shipped line is valid, bad files give errors naming field and value."""

from __future__ import annotations

import copy
import tomllib

import pytest

from twin.config import DEFAULT_CONFIG_PATH, load_config, parse_config
from twin.errors import ConfigError


@pytest.fixture()
def raw():
    return tomllib.loads(DEFAULT_CONFIG_PATH.read_text())


def test_shipped_line_describes_the_whole_plant(config):
    kinds = {config.unit_classes[u.unit_class].kind for u in config.units}
    assert kinds == {
        "media_prep",
        "bioreactor",
        "harvest",
        "chromatography",
        "premix",
        "homogenizer",
        "sterile_filter",
        "filler",
    }
    assert 2 <= len(config.units_of_class("production_bioreactor")) <= 4
    assert all(len(config.unit_classes[u.unit_class].signals) >= 8 for u in config.units)
    assert sum(len(config.unit_classes[u.unit_class].signals) for u in config.units) >= 100
    assert [s.name for s in config.recipe.steps][:3] == [
        "media_preparation",
        "seed_culture",
        "production",
    ]


def _set(data, path, value):
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


BAD = [
    pytest.param(
        ("unit_classes", "production_bioreactor", "bioreactor", "working_volume_l"),
        2500.0,
        r"working_volume_l must be <= vessel_volume_l \(2000.0\); got 2500.0",
        id="working-volume-above-vessel",
    ),
    pytest.param(
        ("deviations", "contamination", "rate_per_batch"),
        1.5,
        r"deviations.contamination.rate_per_batch: .*less than or equal to 1; got 1.5",
        id="rate-above-one",
    ),
    pytest.param(
        ("qc_lab", "analysts"),
        0,
        r"qc_lab.analysts: .*greater than or equal to 1; got 0",
        id="no-analysts",
    ),
    pytest.param(
        ("units", 3, "unit_class"),
        "fermenter",
        r"units\[3\].unit_class must be one of .*; got 'fermenter'",
        id="unknown-class",
    ),
    pytest.param(
        ("units", 3, "id"), "BR201", r"units\[3\].id: String should match pattern", id="bad-unit-id"
    ),
    pytest.param(
        ("recipe", "steps", 2, "duration_h"),
        {"dist": "triangular", "low": 50, "mode": 48, "high": 52},
        r"recipe.steps\[2\].duration_h: must satisfy low <= mode <= high",
        id="triangular-misordered",
    ),
    pytest.param(
        ("shifts", 1, "length_h"),
        10,
        r"shifts length_h must sum to 24; got 22",
        id="shifts-do-not-cover-the-day",
    ),
    pytest.param(
        ("deviations", "do_crash", "step"),
        "fermentation",
        r"deviations.do_crash.step must be one of .*; got 'fermentation'",
        id="deviation-on-unknown-step",
    ),
    pytest.param(
        ("unit_classes", "homogenizer", "homogenizer", "pressure_setpoint_bar"),
        5000,
        r"pressure_setpoint_bar: .*less than or equal to 2000; got 5000",
        id="homogenizer-pressure-out-of-range",
    ),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD)
def test_bad_field_is_named_with_rule_and_value(raw, path, value, message):
    data = copy.deepcopy(raw)
    _set(data, path, value)
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_missing_section_is_reported(raw):
    del raw["qc_lab"]
    with pytest.raises(ConfigError, match=r"qc_lab: field required"):
        parse_config(raw)


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read plant configuration"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[plant\nsite = 1")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(bad)
