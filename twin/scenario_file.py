"""Scenario files: the command center's levers as TOML, for sweeps outside the page.

A planner's script or a cluster job describes a what-if in a file
(``biotwin scenario run FILE``, docs/scenarios.md)::

    name = "BR-202 down 3 days, +10 % demand"
    horizon_days = 30
    replications = 200
    seed = 0
    [[outage]]
    unit = "BR-202"
    start = "+24h"        # or an ISO date-time
    duration = "72h"
    [demand]
    change_pct = 10

with ``[[failure_risk]]`` (asset, probability, within), ``[[pm_move]]`` (asset, start),
``[[shift_removed]]`` (start, duration, operators) and ``[predicted_risk]`` (threshold)
likewise. :func:`load_scenario_file` validates the file's form (pydantic);
:meth:`ScenarioFile.to_events` turns its times into hours from the plant's *now* and checks
them against the horizon and the plant, as the page's form does. Every refusal is one
line naming the field, the rule and the value.

Times: ``start`` is ``+<duration>`` from the plant's now, or an ISO date-time (with an
offset or ``Z``; without one, the plant's local time, as on the page). Durations are a
number and a unit: ``90min``, ``72h``, ``3d``.
"""

from __future__ import annotations

import math
import re
import tomllib
from datetime import datetime, timedelta, tzinfo
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from twin.config import PlantConfig
from twin.errors import ScenarioError
from twin.scenarios import AssetOutage, DemandChange, FailureRisk, PMMove, ShiftRemoved

__all__ = [
    "DemandSpec",
    "FailureRiskSpec",
    "OutageSpec",
    "PMMoveSpec",
    "PredictedRiskSpec",
    "ScenarioFile",
    "ShiftRemovedSpec",
    "load_scenario_file",
    "parse_duration_h",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(min|h|d)\s*$")
_HOURS_PER = {"min": 1 / 60, "h": 1.0, "d": 24.0}
_DURATION_RULE = "must be a number and a unit, such as '90min', '72h' or '3d'"
_START_RULE = "must be '+<duration>' (such as '+24h') or an ISO date-time"


def parse_duration_h(text: str) -> float:
    """Hours of a duration such as ``"90min"``, ``"72h"`` or ``"3d"``.

    Raises
    ------
    ValueError
        If ``text`` is not a number and one of the units min, h, d.
    """
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(_DURATION_RULE)
    return float(match.group(1)) * _HOURS_PER[match.group(2)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("start", check_fields=False)
    @classmethod
    def _a_start(cls, text: str) -> str:
        if text.strip().startswith("+"):
            try:
                parse_duration_h(text.strip()[1:])
            except ValueError:
                raise ValueError(_START_RULE) from None
            return text
        try:
            datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(_START_RULE) from None
        return text

    @field_validator("duration", "within", check_fields=False)
    @classmethod
    def _a_duration(cls, text: str) -> str:
        if not parse_duration_h(text) > 0:
            raise ValueError("must be > 0")
        return text


class OutageSpec(_Part):
    """``[[outage]]``: a unit (or one of its assets) down for ``duration`` from ``start``."""

    unit: str = Field(description="Unit id (BR-202) or asset id (BR-202/agitator).")
    start: str
    duration: str


class FailureRiskSpec(_Part):
    """``[[failure_risk]]``: the asset fails within ``within`` with ``probability``."""

    asset: str
    probability: float = Field(ge=0, le=1)
    within: str


class DemandSpec(_Part):
    """``[demand]``: new batches released ``change_pct`` % more (or less) often."""

    change_pct: float = Field(gt=-100, le=900)


class PMMoveSpec(_Part):
    """``[[pm_move]]``: the asset's next planned maintenance starts at ``start``."""

    asset: str
    start: str


class ShiftRemovedSpec(_Part):
    """``[[shift_removed]]``: operators off the roster (all, or ``operators``) for
    ``duration`` from ``start``."""

    start: str
    duration: str
    operators: int | None = Field(None, ge=1)


class PredictedRiskSpec(_Part):
    """``[predicted_risk]``: every asset whose predicted P(fail in 7 days) is at least
    ``threshold`` fails with it (the page's "use predicted failure risk")."""

    threshold: float = Field(0.05, ge=0, le=1)


class ScenarioFile(_Part):
    """A scenario file: the sweep and the page's levers."""

    name: str = Field(min_length=1)
    horizon_days: float = Field(gt=0, le=3650)
    replications: int = Field(ge=1, le=1_000_000)
    seed: int = Field(0, ge=0)
    outage: list[OutageSpec] = Field(default_factory=list)
    failure_risk: list[FailureRiskSpec] = Field(default_factory=list)
    demand: DemandSpec | None = None
    pm_move: list[PMMoveSpec] = Field(default_factory=list)
    shift_removed: list[ShiftRemovedSpec] = Field(default_factory=list)
    predicted_risk: PredictedRiskSpec | None = None

    @property
    def horizon_h(self) -> float:
        return self.horizon_days * 24.0

    def to_events(
        self, config: PlantConfig, now: datetime, tz: tzinfo, *, where: str = "scenario"
    ) -> list:
        """The file's levers as events, in hours from ``now``, checked like the page's form.

        Parameters
        ----------
        config : PlantConfig
            The plant the units and assets must belong to.
        now : datetime
            The plant's now (timezone-aware).
        tz : tzinfo
            The plant's time zone, for ISO times without an offset.
        where : str
            What to name in messages (the file's name).

        Raises
        ------
        ScenarioError
            ``<where>: <field>: <rule>; got <value>``: a time outside the horizon, a unit
            or asset not of this plant, too many operators.
        """
        units = {u.id for u in config.units}
        specs = {u.id: config.unit_classes[u.unit_class] for u in config.units}
        assets = {f"{u}/{a.name}" for u, spec in specs.items() for a in spec.assets}
        pm_assets = {f"{u}/{a.name}" for u, s in specs.items() for a in s.assets if a.pm_interval_h}
        horizon = self.horizon_h
        end = now + timedelta(hours=horizon)
        span = f"{_show(now, tz)} to {_show(end, tz)}"

        def fail(field: str, rule: str, value) -> ScenarioError:
            return ScenarioError(f"{where}: {field}: {rule}; got {value}")

        def start_h(field: str, text: str) -> float:
            text = text.strip()
            if text.startswith("+"):
                h = parse_duration_h(text[1:])
            else:
                t = datetime.fromisoformat(text)
                t = t.replace(tzinfo=tz) if t.tzinfo is None else t
                h = (t - now).total_seconds() / 3600.0
            if not 0 <= h < horizon:
                raise fail(field, f"must be within the scenario horizon ({span})", repr(text))
            return h

        def window(field: str, start: str, duration: str) -> tuple[float, float]:
            a = start_h(f"{field}.start", start)
            b = a + parse_duration_h(duration)
            if b > horizon + 1e-9:
                raise fail(
                    f"{field}.duration",
                    f"must end within the scenario horizon (by {_show(end, tz)}): shorten "
                    "it or lengthen horizon_days",
                    f"{duration!r} from {start!r}",
                )
            return a, b

        events: list = []
        for i, o in enumerate(self.outage):
            if o.unit not in units | assets:
                raise fail(
                    f"outage[{i}].unit", "must be a unit or asset of this plant", repr(o.unit)
                )
            a, b = window(f"outage[{i}]", o.start, o.duration)
            events.append(AssetOutage(target=o.unit, start_h=a, end_h=b))
        for i, r in enumerate(self.failure_risk):
            if r.asset not in assets:
                raise fail(
                    f"failure_risk[{i}].asset", "must be an asset of this plant", repr(r.asset)
                )
            if r.probability > 0:
                within = parse_duration_h(r.within)
                events.append(
                    FailureRisk(asset=r.asset, probability=r.probability, within_h=within)
                )
        if self.demand is not None and self.demand.change_pct != 0:
            events.append(DemandChange(factor=1 + self.demand.change_pct / 100))
        for i, p in enumerate(self.pm_move):
            if p.asset not in pm_assets:
                raise fail(f"pm_move[{i}].asset", "must be an asset with a PM plan", repr(p.asset))
            events.append(PMMove(asset=p.asset, to_h=start_h(f"pm_move[{i}].start", p.start)))
        max_ops = max(s.operators for s in config.shifts)
        for i, s in enumerate(self.shift_removed):
            if s.operators is not None and s.operators > max_ops:
                raise fail(f"shift_removed[{i}].operators", f"must be <= {max_ops}", s.operators)
            a, b = window(f"shift_removed[{i}]", s.start, s.duration)
            events.append(ShiftRemoved(start_h=a, end_h=b, operators=s.operators))
        return events


def _show(t: datetime, tz: tzinfo) -> str:
    return t.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z").strip()


_BOUNDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


def _rule(error: dict) -> str:
    """A pydantic error as the project's rule wording."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _BOUNDS:
        key, sign = _BOUNDS[kind]
        return f"must be {sign} {ctx.get(key)}"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a field of a scenario file (see docs/scenarios.md)"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be a whole number"
    if kind in ("float_parsing", "float_type"):
        return "must be a number"
    if kind in ("string_type",):
        return "must be text (in quotes)"
    if kind == "string_too_short":
        return "must not be empty"
    name = next((p for p in reversed(error["loc"]) if isinstance(p, str)), "name")
    if kind == "list_type":
        return f"must be an array of tables ([[{name}]])"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"must be a table ([{name}])"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return error["msg"]


def _where(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(file)"


def _got(error: dict) -> str:
    if error["type"] == "missing":
        return "nothing"
    value = error.get("input")
    if isinstance(value, dict | list):
        return type(value).__name__
    return repr(value)


def load_scenario_file(path: str | Path) -> ScenarioFile:
    """Read and validate a scenario file (TOML; see the module docstring).

    Raises
    ------
    ScenarioError
        One line naming the file, the field, the rule and the value: unreadable file,
        invalid TOML, a missing or unknown field, a value out of range, a malformed time.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: must be UTF-8 text; got {exc.reason}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: must be valid TOML; got {exc}") from None
    try:
        spec = ScenarioFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ScenarioError(
            f"{path}: {_where(first['loc'])}: {_rule(first)}; got {_got(first)}"
        ) from None
    if not math.isfinite(spec.horizon_days):
        raise ScenarioError(f"{path}: horizon_days: must be finite; got {spec.horizon_days}")
    return spec
