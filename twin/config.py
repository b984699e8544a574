"""The plant configuration: the line, its recipe, its people, its assets and its risks.

A plant is described by one TOML file (the shipped default is ``twin/plant.toml``). Every
figure of the model lives there with its unit in the field name; nothing physical is
hard-coded. :func:`load_config` reads and validates a file and raises :class:`ConfigError`
whose message names the field, the rule and the offending value, for instance::

    units[2].volume_l: Input should be less than or equal to 4000; got 5000

Before any field's own rule, every number of the file passes the rules of
:func:`check_numbers` (one place): finite, at most 1e9 in magnitude, durations (``*_h``)
0-1e5 hours and volumes (``*_l``) 0-1e6 litres; the start is a real date-time within the
years 1970-2100. What passes ``check-config`` therefore never crashes ``simulate`` on an
infinite, absurd or out-of-range number (docs/data-contracts.md, "Plant files").

Structure (ISA-95 for equipment, ISA-88 for the recipe):

- ``[plant]`` site / area / line names, simulation start, sample interval.
- ``[[shifts]]`` operators per shift; ``[qc_lab]``; ``[maintenance]``; ``[demand]``.
- ``[recipe]`` with ``[[recipe.steps]]``: unit procedures in order, each with its phases.
- ``[unit_classes.NAME]``: signals (ISA-5.1 tag templates, engineering units, ranges,
  noise), assets (life and repair distributions, PM interval) and process parameters.
- ``[[units]]``: the equipment instances, e.g. ``BR-201`` of class ``production_bioreactor``.
- ``[deviations.NAME]``: injection rates, onset windows and consequences.
- ``[specs.NAME]``: critical quality attribute limits.
- ``[sensor_faults]``: rates of drift, freeze, spike and dropout per tag-year.
"""

from __future__ import annotations

import tomllib
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from twin.distributions import Distribution, Fixed
from twin.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "DEVIATION_CLASSES",
    "AerationSpec",
    "AssetSpec",
    "BioreactorSpec",
    "DeviationSpec",
    "FeedSpec",
    "KineticsSpec",
    "PhaseSpec",
    "PlantConfig",
    "SignalSpec",
    "SpecLimit",
    "UnitClassSpec",
    "UnitProcedureSpec",
    "UnitSpec",
    "check_numbers",
    "load_config",
]

DEFAULT_CONFIG_PATH = Path(__file__).with_name("plant.toml")

#: Rules every number of a plant file follows (see :func:`check_numbers`): beyond these, the
#: simulation overflows pandas' time range (years 1677-2262), divides inf by inf or never ends.
MAX_MAGNITUDE = 1e9
MAX_DURATION_H = 1e5  # about 11 years
MAX_VOLUME_L = 1e6
#: the twin clock's origin; with the longest ``simulate --days`` (36,500) and the longest
#: duration every time stays within pandas' range
FIRST_START_YEAR, LAST_START_YEAR = 1970, 2100
#: parameters of a distribution that carry its field's unit (shape and sigma do not)
_SCALE_PARAMETERS = {"low", "mode", "high", "value", "mean", "sd", "median", "scale", "minimum"}

#: The deviation classes of DOMAIN.md; each has a mechanism in :mod:`twin.deviations`.
DEVIATION_CLASSES = (
    "do_crash",
    "temperature_excursion",
    "ph_drift",
    "contamination",
    "feed_failure",
    "raw_material",
    "oversized_droplets",
    "filter_fouling",
)
DeviationClass = Literal[
    "do_crash",
    "temperature_excursion",
    "ph_drift",
    "contamination",
    "feed_failure",
    "raw_material",
    "oversized_droplets",
    "filter_fouling",
]

#: Unit classes the model knows how to give signals to.
UnitKind = Literal[
    "media_prep",
    "bioreactor",
    "harvest",
    "chromatography",
    "premix",
    "homogenizer",
    "sterile_filter",
    "filler",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlantInfo(_Model):
    """ISA-95 names of where the line sits, and the twin clock's origin."""

    site: str = "Site"
    area: str = "Adjuvant"
    line: str = "Line 1"
    start: str = Field("2026-01-01T00:00:00Z", pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
    sample_interval_min: int = Field(1, ge=1, le=60)

    @field_validator("start")
    @classmethod
    def _start_in_range(cls, value: str) -> str:
        try:
            when = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            raise ValueError(f"must be a real UTC date and time; got {value!r}") from None
        if not FIRST_START_YEAR <= when.year <= LAST_START_YEAR:
            raise ValueError(
                f"must be within the years {FIRST_START_YEAR}-{LAST_START_YEAR}; got {value!r}"
            )
        return value


class ShiftSpec(_Model):
    """One shift of the daily roster."""

    name: str
    start_h: float = Field(ge=0, lt=24)
    length_h: float = Field(gt=0, le=24)
    operators: int = Field(ge=0, le=100)


class QCLabSpec(_Model):
    """Release testing: analysts are the finite resource, incubation is waiting."""

    analysts: int = Field(ge=1, le=50)
    hands_on_h: Distribution
    turnaround_h: Distribution
    investigation_h: Distribution


class MaintenanceSpec(_Model):
    """The maintenance crew that repairs failures and performs PMs."""

    technicians: int = Field(ge=1, le=100)


class DemandSpec(_Model):
    """Planned batches: one is released every ``batch_interval_h``, due ``lead_time_h`` later."""

    product: str
    batch_interval_h: Distribution
    lead_time_h: float = Field(gt=0)
    max_wip: int = Field(8, ge=1, le=1000)


class PhaseSpec(_Model):
    """An ISA-88 phase: a share of its unit procedure's duration."""

    name: str
    fraction: float = Field(gt=0, le=1)


class UnitProcedureSpec(_Model):
    """An ISA-88 unit procedure: one recipe step on one unit of a class."""

    name: str
    unit_class: str
    duration_h: Distribution
    operators: int = Field(1, ge=0, le=20)
    setup_h: float = Field(0.5, ge=0, le=24)
    phases: list[PhaseSpec] = Field(min_length=1)
    cip_h: Distribution | None = None
    sip_h: Distribution | None = None

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> UnitProcedureSpec:
        total = sum(p.fraction for p in self.phases)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"phases fractions must sum to 1; got {total:.4f}")
        return self


class RecipeSpec(_Model):
    """The master recipe (ISA-88 procedure)."""

    name: str
    steps: list[UnitProcedureSpec] = Field(min_length=1)


class SignalSpec(_Model):
    """One process or condition tag of a unit class.

    ``tag`` is an ISA-5.1 template; ``{n}`` becomes the unit's loop number (``BR-201`` -> 201).
    ``eng_unit`` is a UNECE Rec. 20 code (CEL, P1 for percent, RPM, ...).
    """

    name: str
    tag: str
    description: str
    eng_unit: str
    low: float
    high: float
    noise_sd: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _range(self) -> SignalSpec:
        if self.high <= self.low:
            raise ValueError(f"high must be > low ({self.low}); got {self.high}")
        if "{n}" not in self.tag:
            raise ValueError(f"tag must contain '{{n}}' for the loop number; got {self.tag!r}")
        return self


class AssetSpec(_Model):
    """A wearing component of a unit: its life, repair, PM, and what its failure does."""

    name: str
    description: str = ""
    life_h: Distribution
    age_basis: Literal["operating", "calendar"] = "operating"
    repair_h: Distribution
    pm_interval_h: float | None = Field(None, gt=0)
    pm_duration_h: Distribution = Fixed(value=4.0)
    abort_probability: float = Field(0.0, ge=0, le=1)
    deviation: DeviationClass | None = None


class KineticsSpec(_Model):
    """Monod / Luedeking-Piret parameters (see docs/kinetics.md)."""

    mu_max_per_h: float = Field(gt=0, le=2)
    ks_g_per_l: float = Field(gt=0)
    ko_pct: float = Field(gt=0, le=100)
    yxs_g_per_g: float = Field(gt=0, le=1)
    maintenance_g_per_g_h: float = Field(ge=0)
    yxo_g_per_g: float = Field(gt=0)
    alpha_g_per_g: float = Field(ge=0)
    beta_g_per_g_h: float = Field(ge=0)
    respiratory_quotient: float = Field(1.0, gt=0, le=3)
    initial_biomass_g_per_l: float = Field(gt=0)
    initial_substrate_g_per_l: float = Field(ge=0)
    lot_mu_cv: float = Field(0.03, ge=0, le=0.5)


class FeedSpec(_Model):
    """Exponential fed-batch feed."""

    feed_start_h: float = Field(ge=0)
    initial_feed_l_per_h: float = Field(ge=0)
    feed_growth_per_h: float = Field(ge=0, le=2)
    max_feed_l_per_h: float = Field(ge=0)
    feed_substrate_g_per_l: float = Field(gt=0)


class AerationSpec(_Model):
    """DO cascade: agitation, then airflow, then O2 enrichment."""

    do_setpoint_pct: float = Field(gt=0, le=100)
    agitation_min_rpm: float = Field(gt=0)
    agitation_max_rpm: float = Field(gt=0)
    airflow_min_vvm: float = Field(gt=0)
    airflow_max_vvm: float = Field(gt=0)
    o2_fraction_max: float = Field(ge=0.21, le=1.0)
    kla_ref_per_h: float = Field(gt=0)
    power_exponent_a: float = Field(gt=0, le=1.5)
    gas_exponent_b: float = Field(gt=0, le=1.5)
    o2_saturation_mmol_per_l: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> AerationSpec:
        if self.agitation_max_rpm < self.agitation_min_rpm:
            raise ValueError(
                f"agitation_max_rpm must be >= agitation_min_rpm ({self.agitation_min_rpm}); "
                f"got {self.agitation_max_rpm}"
            )
        if self.airflow_max_vvm < self.airflow_min_vvm:
            raise ValueError(
                f"airflow_max_vvm must be >= airflow_min_vvm ({self.airflow_min_vvm}); "
                f"got {self.airflow_max_vvm}"
            )
        return self


class BioreactorSpec(_Model):
    """Process parameters of a bioreactor class."""

    vessel_volume_l: float = Field(gt=0, le=25000)
    working_volume_l: float = Field(gt=0)
    initial_volume_l: float = Field(gt=0)
    temperature_setpoint_c: float = Field(ge=20, le=45)
    ph_setpoint: float = Field(ge=5, le=8.5)
    pressure_setpoint_barg: float = Field(ge=0, le=2)
    kinetics: KineticsSpec
    feed: FeedSpec
    aeration: AerationSpec

    @model_validator(mode="after")
    def _volumes(self) -> BioreactorSpec:
        if self.working_volume_l > self.vessel_volume_l:
            raise ValueError(
                f"working_volume_l must be <= vessel_volume_l ({self.vessel_volume_l}); "
                f"got {self.working_volume_l}"
            )
        if self.initial_volume_l > self.working_volume_l:
            raise ValueError(
                f"initial_volume_l must be <= working_volume_l ({self.working_volume_l}); "
                f"got {self.initial_volume_l}"
            )
        return self


class HomogenizerSpec(_Model):
    """High-pressure homogenizer: pressure per pass, cooling, droplet size."""

    passes: int = Field(ge=1, le=20)
    pressure_setpoint_bar: float = Field(ge=100, le=2000)
    outlet_temperature_c: float = Field(ge=0, le=60)
    droplet_nm_at_setpoint: float = Field(gt=0)
    droplet_nm_per_bar_loss: float = Field(ge=0)


class FilterSpec(_Model):
    """Sterile filtration skid: clean differential pressure and flux."""

    clean_dp_bar: float = Field(gt=0)
    nominal_flux_lmh: float = Field(gt=0)
    fouling_per_h: float = Field(ge=0)


class FillerSpec(_Model):
    """Filling line: target fill and weight variability."""

    target_fill_ml: float = Field(gt=0)
    fill_sd_pct: float = Field(ge=0, le=10)
    vials_per_h: float = Field(gt=0)


class UnitClassSpec(_Model):
    """What every unit of a class has: signals, assets and process parameters."""

    kind: UnitKind
    description: str
    signals: list[SignalSpec] = Field(min_length=8)
    assets: list[AssetSpec] = Field(default_factory=list)
    idle_temperature_c: float = 21.0
    bioreactor: BioreactorSpec | None = None
    homogenizer: HomogenizerSpec | None = None
    filter: FilterSpec | None = None
    filler: FillerSpec | None = None

    @model_validator(mode="after")
    def _kind_parameters(self) -> UnitClassSpec:
        needed = {
            "bioreactor": "bioreactor",
            "homogenizer": "homogenizer",
            "sterile_filter": "filter",
            "filler": "filler",
        }.get(self.kind)
        if needed and getattr(self, needed) is None:
            raise ValueError(f"kind {self.kind!r} requires a [{needed}] table; got none")
        # every wearing asset has an hour meter (operating hours, or calendar hours for
        # probes, since its last renewal), as PLCs keep for maintenance
        for i, asset in enumerate(self.assets, start=1):
            name = f"{asset.name}_hours"
            if any(s.name == name for s in self.signals):
                continue
            basis = "operating hours" if asset.age_basis == "operating" else "hours"
            self.signals.append(
                SignalSpec(
                    name=name,
                    tag=f"KQI-{{n}}{i}.PV",
                    description=f"{asset.description or asset.name}: {basis} since renewal",
                    eng_unit="HUR",
                    low=0.0,
                    high=100_000.0,
                )
            )
        names = [s.name for s in self.signals]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"signal names must be unique; got duplicates {dupes}")
        return self


class UnitSpec(_Model):
    """One piece of equipment (ISA-95 unit), e.g. ``BR-201``."""

    id: str = Field(pattern=r"^[A-Z]{2,4}-\d{3}$")
    unit_class: str

    @property
    def loop_number(self) -> str:
        """The ISA-5.1 loop number taken from the unit id (``BR-201`` -> ``201``)."""
        return self.id.split("-")[1]


class DeviationSpec(_Model):
    """How often a deviation is injected, when it starts and what it does to quality."""

    root_cause: str
    rate_per_batch: float = Field(ge=0, le=1)
    step: str
    onset_fraction_low: float = Field(0.0, ge=0, le=1)
    onset_fraction_high: float = Field(1.0, ge=0, le=1)
    severity: Distribution = Fixed(value=1.0)
    oos_probability: float = Field(ge=0, le=1)
    driver_asset: str | None = Field(
        None,
        description=(
            "Asset (by name, on the unit running the step) whose wear raises the odds: the "
            "occurrence probability is rate_per_batch * (k + 1) * x**k, x = the asset's age over "
            "its characteristic age (PM interval or Weibull scale, the smaller), clipped to 1.5; "
            "for x uniform in [0, 1] the mean rate is rate_per_batch."
        ),
    )
    wear_exponent: float = Field(3.0, ge=0, le=10)
    precursor_lead_h: float = Field(
        0.0,
        ge=0,
        le=72,
        description=(
            "Hours before the onset in which the root cause already shows in the signals (a "
            "worn bearing vibrates, a sticky valve opens further, a worn pump delivers less), "
            "growing from nothing to its full size at the onset; 0 for a sudden cause."
        ),
    )

    @model_validator(mode="after")
    def _window(self) -> DeviationSpec:
        if self.onset_fraction_high < self.onset_fraction_low:
            raise ValueError(
                f"onset_fraction_high must be >= onset_fraction_low ({self.onset_fraction_low}); "
                f"got {self.onset_fraction_high}"
            )
        return self


class SpecLimit(_Model):
    """A CQA specification: lower and/or upper limit with its unit."""

    low: float | None = None
    high: float | None = None
    unit: str
    description: str = ""

    @model_validator(mode="after")
    def _some_limit(self) -> SpecLimit:
        if self.low is None and self.high is None:
            raise ValueError("a spec needs low, high or both; got neither")
        if self.low is not None and self.high is not None and self.high < self.low:
            raise ValueError(f"high must be >= low ({self.low}); got {self.high}")
        return self


class SensorFaultSpec(_Model):
    """Sensor fault episodes per tag-year and their durations."""

    drift_per_tag_year: float = Field(ge=0, le=100)
    freeze_per_tag_year: float = Field(ge=0, le=100)
    spike_per_tag_year: float = Field(ge=0, le=1000)
    dropout_per_tag_year: float = Field(ge=0, le=100)
    drift_duration_h: Distribution
    freeze_duration_h: Distribution
    dropout_duration_h: Distribution
    drift_rate_sd_per_h: float = Field(ge=0, le=0.1)  # fraction of the EU span per hour
    spike_sd: float = Field(ge=0)  # in multiples of the tag noise_sd


class PlantConfig(_Model):
    """The whole plant file, cross-checked (classes exist, recipe steps have units...)."""

    plant: PlantInfo = PlantInfo()
    shifts: list[ShiftSpec] = Field(min_length=1)
    qc_lab: QCLabSpec
    maintenance: MaintenanceSpec
    demand: DemandSpec
    recipe: RecipeSpec
    unit_classes: dict[str, UnitClassSpec]
    units: list[UnitSpec] = Field(min_length=1)
    deviations: dict[DeviationClass, DeviationSpec] = Field(default_factory=dict)
    specs: dict[str, SpecLimit]
    sensor_faults: SensorFaultSpec

    @model_validator(mode="after")
    def _cross_checks(self) -> PlantConfig:
        ids = [u.id for u in self.units]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"units ids must be unique; got duplicates {dupes}")
        for i, unit in enumerate(self.units):
            if unit.unit_class not in self.unit_classes:
                raise ValueError(
                    f"units[{i}].unit_class must be one of {sorted(self.unit_classes)}; "
                    f"got {unit.unit_class!r}"
                )
        step_names = [s.name for s in self.recipe.steps]
        for i, step in enumerate(self.recipe.steps):
            if not any(u.unit_class == step.unit_class for u in self.units):
                raise ValueError(
                    f"recipe.steps[{i}].unit_class must name a class with at least one unit; "
                    f"got {step.unit_class!r}"
                )
        for name, dev in self.deviations.items():
            if dev.step not in step_names:
                raise ValueError(
                    f"deviations.{name}.step must be one of {step_names}; got {dev.step!r}"
                )
        production = [u for u in self.units if u.unit_class == "production_bioreactor"]
        if "production_bioreactor" in self.unit_classes and not 1 <= len(production) <= 8:
            raise ValueError(f"units must hold 1-8 production bioreactors; got {len(production)}")
        covered = sum(s.length_h for s in self.shifts)
        if abs(covered - 24.0) > 1e-6:
            raise ValueError(f"shifts length_h must sum to 24; got {covered}")
        return self

    @cached_property
    def horizon_start(self):
        """The simulation start as a timezone-aware pandas Timestamp (UTC)."""
        import pandas as pd

        return pd.Timestamp(self.plant.start)

    def unit_class_of(self, unit_id: str) -> UnitClassSpec:
        """Return the class of a unit by id."""
        for unit in self.units:
            if unit.id == unit_id:
                return self.unit_classes[unit.unit_class]
        raise KeyError(f"unknown unit {unit_id!r}; known: {[u.id for u in self.units]}")

    def units_of_class(self, unit_class: str) -> list[UnitSpec]:
        """Units of one class, in file order."""
        return [u for u in self.units if u.unit_class == unit_class]

    def step(self, name: str) -> UnitProcedureSpec:
        """A recipe step by name."""
        for step in self.recipe.steps:
            if step.name == name:
                return step
        raise KeyError(f"unknown recipe step {name!r}")


_DIST_TAGS = {"fixed", "uniform", "triangular", "normal", "lognormal", "exponential", "weibull"}


def _format_location(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in _DIST_TAGS:  # pydantic puts the union's tag in the location
            out += f".{part}" if out else str(part)
    return out


def _number_rule(loc: tuple, parent: dict | None) -> tuple[str, float, float]:
    """The rule of the number at ``loc``: (words, lowest, highest).

    A field's unit is its name's suffix (``*_h`` hours, ``*_l`` litres; ``*_per_*`` is a
    rate, not a duration or a volume); a distribution's scale parameters (``low``, ``mode``,
    ``high``, ``mean``...) carry the unit of the field that holds the distribution.
    """
    name = loc[-1]
    if parent is not None and "dist" in parent and name in _SCALE_PARAMETERS and len(loc) > 1:
        name = loc[-2]
    name = str(name)
    if "_per_" not in name and name.endswith("_h"):
        words = f"a finite number of hours, 0 to {_e(MAX_DURATION_H)} (about 11 years)"
        return words, 0.0, MAX_DURATION_H
    if "_per_" not in name and name.endswith("_l"):
        return f"a finite number of litres, 0 to {_e(MAX_VOLUME_L)}", 0.0, MAX_VOLUME_L
    return (
        f"finite and within -{_e(MAX_MAGNITUDE)} to {_e(MAX_MAGNITUDE)}",
        -MAX_MAGNITUDE,
        MAX_MAGNITUDE,
    )


def _e(x: float) -> str:
    """A round power of ten as people write it: ``1e9``."""
    return f"{x:.0e}".replace("e+0", "e").replace("e+", "e")


def check_numbers(data, loc: tuple = (), parent: dict | None = None) -> list[str]:
    """Every number of a plant file (as read from TOML) against the rules of its kind.

    The rules, which come before any field's own rule: every number is finite and at most
    1e9 in magnitude; a duration (a field ending in ``_h``, or a distribution held by one)
    is 0 to 1e5 hours; a volume (``_l``) 0 to 1e6 litres. Each is a number ``simulate``
    crashed on, or ran forever with, while the field rules let it through.

    Returns
    -------
    list of str
        One line per broken rule, naming the field, the rule and the value, e.g.
        ``recipe.steps[2].duration_h.high must be a finite number of hours, 0 to 1e5
        (about 11 years); got inf``.
    """
    if isinstance(data, dict):
        return [e for k, v in data.items() for e in check_numbers(v, (*loc, k), data)]
    if isinstance(data, list):
        return [e for i, v in enumerate(data) for e in check_numbers(v, (*loc, i), None)]
    if isinstance(data, bool) or not isinstance(data, int | float):
        return []
    words, low, high = _number_rule(loc, parent)
    if low <= data <= high:  # False for NaN and inf too
        return []
    if isinstance(data, int):
        digits = len(str(abs(data)))
        shown = str(data) if digits <= 18 else f"an integer of {digits} digits"
    else:
        shown = repr(data)
    return [f"{_format_location(loc)} must be {words}; got {shown}"]


def _format_validation_error(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors(include_url=False):
        where = _format_location(err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] in {"missing"}:
            lines.append(f"{where}: field required; got nothing")
        elif "; got" in msg:
            lines.append(f"{where}: {msg}")
        else:
            lines.append(f"{where}: {msg}; got {err.get('input')!r}")
    return lines


def _config_error(lines: list[str], source: str) -> ConfigError:
    """One line for one broken rule; a head line and one line per rule for several."""
    if len(lines) == 1:
        return ConfigError(f"invalid plant configuration {source}: {lines[0]}")
    head = f"invalid plant configuration {source} ({len(lines)} problems):"
    return ConfigError(head + "\n  " + "\n  ".join(lines))


def parse_config(data: dict, source: str = "<dict>") -> PlantConfig:
    """Validate a plant configuration given as a dict (as read from TOML).

    Raises
    ------
    ConfigError
        If a number breaks a rule of :func:`check_numbers` or any field breaks its own
        rule; one line per bad field, naming the field, the rule and the value.
    """
    lines = check_numbers(data)
    if lines:
        raise _config_error(lines, source)
    try:
        return PlantConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(_format_validation_error(exc), source) from None


def load_config(path: str | Path | None = None) -> PlantConfig:
    """Read and validate a plant TOML file (default: the shipped line).

    Raises
    ------
    ConfigError
        If the file is missing, is not valid TOML, or breaks a rule.
    """
    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read plant configuration {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"plant configuration {path} must be UTF-8 text; got byte "
            f"0x{exc.object[exc.start]:02x} at offset {exc.start}"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"plant configuration {path} is not valid TOML: {exc}") from None
    return parse_config(data, str(path))
