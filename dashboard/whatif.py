"""What the scenarios page computes, without Streamlit (tests reach it directly).

- :func:`run_pair`: a scenario and its baseline in one pool (their chunks interleaved),
  from one starting point with the same replication seeds (paired); the pool is local
  processes or a Dask cluster (:func:`twin.scenarios.run_sweeps`, docs/cluster.md);
- :func:`predicted_failure_events`: the maintenance model's failure risk as
  :class:`~twin.scenarios.FailureRisk` events;
- :func:`with_batch_risk` and :func:`good_rate`: the deviation model's risk of the batches
  in progress, and the rate for batches not started yet, for expected good lots;
- :func:`read_scores` and :func:`batch_outcomes`: the scores and outcomes they come from;
- :func:`plant_tz`, :class:`Horizon` and :func:`scenario_events`: the form's local dates and
  durations as events in hours from the plant's now, with one message per bad field;
- :func:`lever_runs` and :func:`run_study`: each lever alone and all together, against one
  baseline with the same replication seeds; run only for an :class:`Author` with one of
  :data:`RUN_ROLES` (:func:`check_may_run`: viewers cannot run or save scenarios);
- :func:`twin_good_rate` and :func:`good_rate`: the good rate of new lots, a Beta prior
  centred on the twin's rate updated by the known outcomes;
- :func:`lot_kpis` and :func:`lot_schedule`: per replication, the planner's counts (good,
  rejected and lost add up to the lots finished) and, per lot, its finish date and delay
  across the replications.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from datetime import time as clock_time
from pathlib import Path

import numpy as np
import pandas as pd

from dashboard import localtime
from dashboard.localtime import tz_name
from twin.config import PlantConfig
from twin.scenarios import (
    AssetOutage,
    DemandChange,
    FailureRisk,
    PMMove,
    ScenarioResult,
    ShiftRemoved,
    run_sweeps,
)
from twin.state import PlantState

__all__ = [
    "DASH",
    "PLANNER_KPIS",
    "PRIOR_WEIGHT",
    "RISK_THRESHOLD",
    "RUN_ROLES",
    "Author",
    "BaselineCache",
    "GoodRate",
    "Horizon",
    "Kpi",
    "batch_outcomes",
    "check_may_run",
    "good_rate",
    "kpi_changes",
    "lever_runs",
    "lot_kpis",
    "lot_schedule",
    "may_run",
    "plant_now",
    "plant_tz",
    "predicted_failure_events",
    "read_scores",
    "run_pair",
    "run_study",
    "run_sweeps",
    "scenario_events",
    "show_lot_schedule",
    "twin_good_rate",
    "tz_name",
    "with_batch_risk",
]

RISK_THRESHOLD = 0.05  # default: assets with P(fail in 7 d) >= 5 % get the model's risk
WEEK_H = 168.0
#: Roles that may run and save scenarios (and search PM windows); viewers may not.
RUN_ROLES = ("engineer", "maintenance", "qa")


# ---------------------------------------------------------------------- who runs
@dataclass(frozen=True)
class Author:
    """Who asks for a run: the signed-in user, their full name and roles (saved with it)."""

    user: str
    full_name: str
    roles: tuple[str, ...]

    def to_dict(self) -> dict:
        """JSON-safe: ``{"user", "full_name", "roles"}``."""
        return {"user": self.user, "full_name": self.full_name, "roles": list(self.roles)}


def may_run(roles: Sequence[str]) -> bool:
    """Whether a user with ``roles`` may run and save scenarios (:data:`RUN_ROLES`)."""
    return bool(set(roles) & set(RUN_ROLES))


def check_may_run(author: Author | None) -> None:
    """Refuse a run or a save by nobody or by a user without one of :data:`RUN_ROLES`.

    Raises
    ------
    PermissionError
        Naming the user, the roles needed and the roles they have.
    """
    if author is None or not author.user:
        raise PermissionError("scenario run: sign in first; got nobody signed in")
    if not may_run(author.roles):
        raise PermissionError(
            f"scenario run: user {author.user!r} needs one of the roles "
            f"{', '.join(RUN_ROLES)}; has {', '.join(author.roles) or 'none'}"
        )


# ---------------------------------------------------------------------- scores, outcomes
def read_scores(store: Path, kind: str) -> tuple[pd.DataFrame | None, str | None]:
    """``scores/<kind>_scores.parquet`` (kind: batch or asset) and a message if unusable.

    Returns ``(None, why)`` when the file is absent or unreadable (no model trained yet,
    or a write in progress elsewhere): the caller shows ``why`` and goes on without.
    """
    path = Path(store) / "scores" / f"{kind}_scores.parquet"
    if not path.exists():
        return None, f"no {kind} scores yet ({path} is absent: the model has not scored)"
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        return None, f"{path} could not be read: {exc}"
    key = "batch_id" if kind == "batch" else "asset"
    need = {key, "p_deviation" if kind == "batch" else "p_fail_7d"}
    if not need <= set(frame.columns):
        return None, f"{path}: columns {sorted(need - set(frame.columns))} are missing"
    return frame, None


def batch_outcomes(store: Path) -> pd.DataFrame:
    """Known outcomes of finished batches: batch_id, good (bool), source.

    From the store: the twin's batch records (``simulation/batches.parquet``: good = no
    deviation and nothing out of specification), overridden by the QA dispositions signed
    in the audit trail (release = good, reject = not good). The historian itself holds no
    outcomes. Empty when neither exists. Only verified audit records count; when the trail
    does not verify, ``attrs["integrity"]`` holds the line to show.
    """
    store = Path(store)
    parts, integrity = [], None
    sim = store / "simulation" / "batches.parquet"
    if sim.exists():
        try:
            b = pd.read_parquet(sim)
        except (OSError, ValueError):
            b = None
        if b is not None and {"batch_id", "disposition"} <= set(b.columns):
            b = b[b["disposition"].notna()]
            good = b["disposition"].eq("released")
            if "n_deviations" in b:
                good &= b["n_deviations"].fillna(0).eq(0)
            if "any_oos" in b:
                good &= ~b["any_oos"].fillna(False).astype(bool)
            parts.append(pd.DataFrame({"batch_id": b["batch_id"], "good": good, "source": "twin"}))
    audit = store / "audit"
    if audit.exists() and (store / "users.toml").exists():
        from dashboard.audit import AuditTrail, integrity_banner

        decided = AuditTrail(audit, store / "users.toml").decisions()
        integrity = integrity_banner(decided.verification)
        rows = [
            {"batch_id": b, "good": r["decision"] == "release", "source": "QA disposition"}
            for b, r in decided.items()
            if r["decision"] in ("release", "reject")
        ]
        if rows:
            parts.append(pd.DataFrame(rows))
    out = pd.DataFrame(columns=["batch_id", "good", "source"])
    if parts:
        out = pd.concat(parts, ignore_index=True)
        out = out.drop_duplicates("batch_id", keep="last").reset_index(drop=True)
    out.attrs["integrity"] = integrity
    return out


def with_batch_risk(state: PlantState, batch_scores: pd.DataFrame | None) -> PlantState:
    """The state with each batch's predicted deviation risk (``p_deviation``) set."""
    if batch_scores is None or not len(state.batches):
        return state
    risk = batch_scores.dropna(subset=["p_deviation"]).set_index("batch_id")["p_deviation"]
    risk = risk[~risk.index.duplicated(keep="last")]
    batches = tuple(
        b.model_copy(update={"risk": float(min(max(risk[b.batch_id], 0.0), 1.0))})
        if b.batch_id in risk.index
        else b
        for b in state.batches
    )
    queue = tuple(
        q.model_copy(update={"risk": float(min(max(risk[q.batch_id], 0.0), 1.0))})
        if q.batch_id in risk.index
        else q
        for q in state.queue
    )
    return state.model_copy(update={"batches": batches, "queue": queue})


def predicted_failure_events(
    asset_scores: pd.DataFrame, config: PlantConfig, threshold: float = RISK_THRESHOLD
) -> tuple[list[FailureRisk], list[str]]:
    """One ``FailureRisk(asset, p_fail_7d, within_h=168)`` per asset at or above
    ``threshold``; returns the events and notes on what was left out.

    Assets below the threshold keep the twin's own wear-out model (their life redrawn from
    their age); above it, the model's 7-day hazard replaces it (``replaces_wear``).
    """
    known = {
        f"{u.id}/{a.name}" for u in config.units for a in config.unit_classes[u.unit_class].assets
    }
    events, notes = [], []
    scores = asset_scores.dropna(subset=["p_fail_7d"])
    unknown = sorted(set(scores["asset"]) - known)
    if unknown:
        notes.append(f"scores for assets not in this plant ignored: {', '.join(unknown)}")
    scores = scores[scores["asset"].isin(known)]
    scores = scores.drop_duplicates("asset", keep="last").sort_values("asset")
    for row in scores.itertuples():
        p = float(min(max(row.p_fail_7d, 0.0), 1.0))
        if p >= threshold and p > 0:
            events.append(FailureRisk(asset=row.asset, probability=p, within_h=WEEK_H))
    below = len(scores) - len(events)
    if below:
        notes.append(f"{below} assets below P = {threshold:g} keep the twin's wear model")
    return events, notes


# ---------------------------------------------------------------------- the sweep
# run_sweeps is twin.scenarios.run_sweeps: the one loop that sends replication chunks to
# the local pool or a Dask cluster (biotwin/execution.py, docs/cluster.md)


def run_pair(
    config: PlantConfig,
    state: PlantState,
    events: Sequence,
    *,
    horizon_h: float,
    replications: int,
    seed: int = 0,
    name: str = "scenario",
    baseline: ScenarioResult | None = None,
    default_risk: float | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    fallback_local: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[ScenarioResult, ScenarioResult]:
    """The baseline (no events) and the scenario, paired, in one pool: (baseline, scenario).

    A ``baseline`` already computed for this starting point and sweep is reused (then
    only the scenario runs). ``scheduler``: a Dask scheduler address (None:
    ``$DASK_SCHEDULER_ADDRESS``, else the local pool; docs/cluster.md).

    Raises
    ------
    twin.errors.ScenarioError
        If the state or an event does not fit the plant.
    biotwin.execution.ExecutionError
        If a named scheduler cannot be used (and no fallback was asked for).
    """
    runs = {"scenario": list(events)}
    if baseline is None:
        runs = {"baseline": [], **runs}
    out = run_sweeps(
        config,
        state,
        runs,
        horizon_h=horizon_h,
        replications=replications,
        seed=seed,
        default_risk=default_risk,
        workers=workers,
        scheduler=scheduler,
        fallback_local=fallback_local,
        progress=progress,
    )
    what = out["scenario"]
    what.name = name
    return out.get("baseline", baseline), what


class BaselineCache:
    """Baselines by (starting point, horizon, replications, seed, default risk), shared by
    the sessions of one server; a baseline can be computed ahead, in a background thread,
    while the user is still filling in the scenario (:meth:`prefetch`)."""

    def __init__(self, size: int = 8) -> None:
        import threading
        from concurrent.futures import ThreadPoolExecutor

        self._lock = threading.Lock()
        self._items: dict[tuple, object] = {}  # key -> Future or ScenarioResult
        self._size = size
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="baseline")

    def get(self, key: tuple, wait: bool = True) -> ScenarioResult | None:
        """The cached baseline (waiting for one being computed if ``wait``), else None."""
        with self._lock:
            item = self._items.get(key)
        if item is None or isinstance(item, ScenarioResult):
            return item
        if not wait and not item.done():
            return None
        try:
            return item.result()
        except Exception:  # a failed prefetch: compute it again in the foreground
            with self._lock:
                self._items.pop(key, None)
            return None

    def put(self, key: tuple, result: ScenarioResult) -> None:
        with self._lock:
            self._items[key] = result
            while len(self._items) > self._size:
                self._items.pop(next(iter(self._items)))

    def prefetch(self, key: tuple, config: PlantConfig, state: PlantState, **kw) -> bool:
        """Start computing the baseline of ``key`` unless cached or under way."""
        with self._lock:
            if key in self._items:
                return False

            def job():
                return run_sweeps(config, state, {"baseline": []}, **kw)["baseline"]

            self._items[key] = self._executor.submit(job)
            return True


def run_study(
    config: PlantConfig,
    state: PlantState,
    events: Sequence,
    *,
    author: Author,
    levers: dict[str, list] | None = None,
    horizon_h: float,
    replications: int,
    seed: int = 0,
    name: str = "scenario",
    baseline: ScenarioResult | None = None,
    default_risk: float | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    fallback_local: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[ScenarioResult, ScenarioResult, dict[str, ScenarioResult]]:
    """The baseline, the scenario (all events) and each lever alone, in one pool and with
    the same replication seeds: ``(baseline, scenario, {lever label: result})``.

    ``levers`` (from :func:`lever_runs`) is run only when it has two levers or more (one
    lever alone is the scenario itself). A ``baseline`` already computed is reused.

    Raises
    ------
    PermissionError
        If ``author`` may not run scenarios (:func:`check_may_run`); nothing is run.
    biotwin.execution.ExecutionError
        If a named scheduler cannot be used (and no fallback was asked for).
    """
    check_may_run(author)
    runs: dict[str, list] = {}
    if baseline is None:
        runs["baseline"] = []
    runs["scenario"] = list(events)
    alone = levers if levers and len(levers) > 1 else {}
    for label, evs in alone.items():
        runs[f"lever:{label}"] = list(evs)
    out = run_sweeps(
        config,
        state,
        runs,
        horizon_h=horizon_h,
        replications=replications,
        seed=seed,
        default_risk=default_risk,
        workers=workers,
        scheduler=scheduler,
        fallback_local=fallback_local,
        progress=progress,
    )
    what = out["scenario"]
    what.name = name
    parts = {}
    for label in alone:
        parts[label] = out[f"lever:{label}"]
        parts[label].name = f"{label} alone"
    return out.get("baseline", baseline), what, parts


# ---------------------------------------------------------------------- local time
DASH = "—"  # what an empty cell shows


def plant_tz() -> tuple[tzinfo, str | None]:
    """The plant's local time zone and, if $BIOTWIN_TZ could not be used, why
    (:mod:`dashboard.localtime`)."""
    return localtime.plant_tz(), localtime.tz_problem()


def plant_now(state: PlantState, config: PlantConfig | None = None) -> pd.Timestamp:
    """The plant's *now* of a starting point (UTC): its start plus its clock.

    ``state.start`` is the historian's time origin (``live_state``), else the plant's
    configured start.
    """
    origin = state.start or (config.plant.start if config is not None else None)
    if origin is None:
        origin = "2026-01-01T00:00:00Z"
    t = pd.Timestamp(origin)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t + pd.Timedelta(hours=state.clock_h)


@dataclass(frozen=True)
class Horizon:
    """The window a scenario covers: from the plant's ``now`` for ``hours``, shown in ``tz``."""

    now: pd.Timestamp  # tz-aware
    hours: float
    tz: tzinfo

    @property
    def end(self) -> pd.Timestamp:
        return self.now + pd.Timedelta(hours=self.hours)

    def at(self, hours_from_now: float) -> pd.Timestamp:
        """The local time ``hours_from_now`` after now."""
        return (self.now + pd.Timedelta(hours=hours_from_now)).tz_convert(self.tz)

    def hours_to(self, when: datetime) -> float:
        """Hours from now to ``when`` (aware, or naive meaning local time)."""
        t = pd.Timestamp(when)
        t = t.tz_localize(self.tz) if t.tzinfo is None else t
        return (t - self.now).total_seconds() / 3600.0

    def local(self, day: date, clock: clock_time) -> pd.Timestamp:
        """A local date and time of day as a time of the plant's zone."""
        return pd.Timestamp(datetime.combine(day, clock)).tz_localize(self.tz)

    def show(self, t: pd.Timestamp | float, *, with_time: bool = True) -> str:
        """A time (or hours from now) as a local date, e.g. ``Mon 02 Mar 2026 06:00``."""
        t = self.at(t) if not isinstance(t, pd.Timestamp) else t.tz_convert(self.tz)
        return t.strftime("%a %d %b %Y %H:%M" if with_time else "%a %d %b %Y")


def _window(
    label: str,
    key_start: str,
    key_hours: str,
    start: pd.Timestamp | None,
    hours: float,
    horizon: Horizon,
    errors: dict[str, str],
) -> tuple[float, float] | None:
    """``(start_h, end_h)`` of a window given as a local start and a duration, else None
    with the problem in ``errors`` (by the key of the field to show it beside)."""
    if start is None:
        errors[key_start] = f"{label} start: a date and a time are needed; got none"
        return None
    if not hours > 0:
        errors[key_hours] = (
            f"{label} duration: must be > 0 h (the end must come after the start); got {hours:g} h"
        )
        return None
    a = horizon.hours_to(start)
    b = a + hours
    span = f"{horizon.show(horizon.now)} to {horizon.show(horizon.end)}"
    if a < 0 or a >= horizon.hours:
        errors[key_start] = (
            f"{label} start: must be within the scenario horizon ({span}); "
            f"got {horizon.show(start)}"
        )
        return None
    if b > horizon.hours + 1e-9:
        errors[key_hours] = (
            f"{label} end: must be within the scenario horizon (by {horizon.show(horizon.end)}); "
            f"got {horizon.show(horizon.at(b))} ({hours:g} h from the start): shorten it or "
            "lengthen the horizon"
        )
        return None
    return a, b


def _when(ss: Mapping, prefix: str, horizon: Horizon) -> pd.Timestamp | None:
    day, clock = ss.get(f"{prefix}_date"), ss.get(f"{prefix}_time")
    if day is None or clock is None:
        return None
    return horizon.local(day, clock)


def scenario_events(
    inputs: Mapping, horizon: Horizon, *, none: str = "(none)"
) -> tuple[list, dict[str, str]]:
    """The events of the scenario form and the problems found, by field key.

    ``inputs`` holds the form's values by widget key (``sc_outage_unit``,
    ``sc_outage_date``, ``sc_outage_time``, ``sc_outage_hours``, ``sc_risk_asset``,
    ``sc_risk_p``, ``sc_risk_days``, ``sc_demand``, ``sc_pm_asset``, ``sc_pm_date``,
    ``sc_pm_time``, ``sc_shift_date``, ``sc_shift_time``, ``sc_shift_hours``); dates and
    times are local (``horizon.tz``). Each problem names the field, the rule and the bad
    value; with any problem the scenario must not run (the events are then incomplete).
    """
    events: list = []
    errors: dict[str, str] = {}
    if inputs.get("sc_outage_unit", none) != none:
        w = _window(
            "Outage",
            "sc_outage_date",
            "sc_outage_hours",
            _when(inputs, "sc_outage", horizon),
            float(inputs.get("sc_outage_hours") or 0.0),
            horizon,
            errors,
        )
        if w:
            events.append(AssetOutage(target=inputs["sc_outage_unit"], start_h=w[0], end_h=w[1]))
    if inputs.get("sc_risk_asset", none) != none and inputs.get("sc_risk_p", 0) > 0:
        days = float(inputs.get("sc_risk_days") or 0.0)
        if not days > 0:
            errors["sc_risk_days"] = f"Failure risk window: must be > 0 days; got {days:g} days"
        else:
            events.append(
                FailureRisk(
                    asset=inputs["sc_risk_asset"],
                    probability=float(inputs["sc_risk_p"]),
                    within_h=days * 24,
                )
            )
    demand = inputs.get("sc_demand") or 0
    if demand:
        if not -100 < demand <= 900:
            errors["sc_demand"] = f"Demand change: must be > -100 % and <= 900 %; got {demand} %"
        else:
            events.append(DemandChange(factor=1 + demand / 100))
    if inputs.get("sc_pm_asset", none) != none:
        when = _when(inputs, "sc_pm", horizon)
        if when is None:
            errors["sc_pm_date"] = "PM start: a date and a time are needed; got none"
        else:
            h = horizon.hours_to(when)
            if not 0 <= h < horizon.hours:
                errors["sc_pm_date"] = (
                    f"PM start: must be within the scenario horizon ({horizon.show(horizon.now)} "
                    f"to {horizon.show(horizon.end)}); got {horizon.show(when)}"
                )
            else:
                events.append(PMMove(asset=inputs["sc_pm_asset"], to_h=h))
    shift_h = float(inputs.get("sc_shift_hours") or 0.0)
    if shift_h != 0:
        w = _window(
            "Operators off",
            "sc_shift_date",
            "sc_shift_hours",
            _when(inputs, "sc_shift", horizon),
            shift_h,
            horizon,
            errors,
        )
        if w:
            events.append(ShiftRemoved(start_h=w[0], end_h=w[1]))
    return events, errors


# ---------------------------------------------------------------------- levers
def lever_runs(
    events: Sequence, horizon: Horizon | None = None, predicted: Sequence[str] = ()
) -> dict[str, list]:
    """The scenario's events by lever (label -> events), in the form's order: outages,
    failure risk (by hand and predicted), demand change, PM moves, operators off.

    Each lever can then run alone against the same baseline (:func:`run_study`), so its
    effect can be told from the others'.
    """

    def when(h: float) -> str:
        return horizon.show(h) if horizon is not None else f"{h:g} h from now"

    groups: dict[str, list] = {}
    outages = [e for e in events if isinstance(e, AssetOutage)]
    if outages:
        e = outages[0]
        label = f"Outage {e.target} {e.end_h - e.start_h:g} h from {when(e.start_h)}"
        if len(outages) > 1:
            label = f"Outages of {', '.join(sorted({o.target for o in outages}))}"
        groups[label] = outages
    risks = [e for e in events if isinstance(e, FailureRisk)]
    if risks:
        names = sorted({e.asset for e in risks})
        tag = "predicted " if set(names) <= set(predicted) else ""
        groups[f"Failure risk, {tag}{', '.join(names)}"] = risks
    demand = [e for e in events if isinstance(e, DemandChange)]
    if demand:
        pct = (math.prod(e.factor for e in demand) - 1) * 100
        groups[f"Demand {pct:+.0f} %"] = demand
    pms = [e for e in events if isinstance(e, PMMove)]
    if pms:
        groups[f"PM of {', '.join(e.asset for e in pms)} moved"] = pms
    shifts = [e for e in events if isinstance(e, ShiftRemoved)]
    if shifts:
        hours = sum(e.end_h - e.start_h for e in shifts)
        groups[f"Operators off {hours:g} h"] = shifts
    return groups


# ---------------------------------------------------------------------- good rate
PRIOR_WEIGHT = 20.0  # batches: how much the twin's good rate weighs against outcomes


@dataclass(frozen=True)
class GoodRate:
    """P(a lot not scored yet ends good): the mean of a Beta posterior.

    The prior is centred on the twin's good rate (``prior``) with the weight of
    ``prior_weight`` batches; ``good`` of ``known`` finished batches ended good.
    """

    rate: float
    prior: float
    prior_weight: float
    good: int
    known: int
    low: float  # 10 % of the posterior
    high: float  # 90 % of the posterior

    def describe(self) -> str:
        return (
            f"{self.rate:.1%} (80 % interval {self.low:.1%} to {self.high:.1%}): the twin's "
            f"{self.prior:.1%} weighted as {self.prior_weight:g} batches, updated by "
            f"{self.good} good of {self.known} finished batches (QA dispositions and "
            "outcomes)"
        )


def twin_good_rate(result: ScenarioResult) -> float | None:
    """The share of lots filled within the horizon that the twin ends good (no deviation,
    not rejected), over all replications of ``result`` (the baseline: the plant as it is,
    asset ages included). None without lot records or lots filled."""
    lots = result.lots
    if lots is None or not len(lots):
        return None
    filled = lots[(lots["filled_h"] > 0) & (lots["filled_h"] <= result.horizon_h)]
    if not len(filled):
        return None
    return float(filled["sim_good"].astype(bool).mean())


def good_rate(
    outcomes: pd.DataFrame, prior: float, *, prior_weight: float = PRIOR_WEIGHT
) -> GoodRate:
    """The good rate of new lots: a Beta(w p, w (1 - p)) prior (``prior`` = p, the twin's
    rate; ``prior_weight`` = w batches) updated by the finished batches' outcomes.

    One outcome moves the rate by at most 1 / (w + n + 1) (under 5 % with w = 20), so a
    single QA release cannot swing the expected good lots.

    Raises
    ------
    ValueError
        If ``prior`` is not in [0, 1] or ``prior_weight`` is not > 0.
    """
    from scipy.stats import beta

    if not 0 <= prior <= 1:
        raise ValueError(f"prior: must be in [0, 1]; got {prior!r}")
    if not prior_weight > 0:
        raise ValueError(f"prior_weight: must be > 0; got {prior_weight!r}")
    good = int(outcomes["good"].astype(bool).sum()) if len(outcomes) else 0
    n = len(outcomes)
    a = prior_weight * prior + good
    b = prior_weight * (1 - prior) + (n - good)
    rate = a / (a + b)
    if a > 0 and b > 0:
        low, high = (float(x) for x in beta.ppf([0.1, 0.9], a, b))
    else:
        low = high = rate
    return GoodRate(rate, prior, prior_weight, good, n, low, high)


# ---------------------------------------------------------------------- planner's KPIs
@dataclass(frozen=True)
class Kpi:
    """A planner's KPI: label, unit, good direction (+1 more is better, -1 less is
    better, 0 neither) and the decimals it is shown with."""

    label: str
    unit: str
    better: int
    decimals: int = 1

    @property
    def delta_color(self) -> str:
        """``st.metric``'s delta_color: green when the change is in the good direction."""
        return {1: "normal", -1: "inverse"}.get(self.better, "off")

    def show(self, value: float, *, sign: bool = False) -> str:
        if value is None or not np.isfinite(value):
            return DASH
        text = f"{value:{'+' if sign else ''}.{self.decimals}f}"
        return f"{text} {self.unit}" if self.unit != "%" else f"{text} %"


PLANNER_KPIS = {
    "expected_good": Kpi("Expected good lots", "lots", +1),
    "expected_rejected": Kpi("Expected rejected lots", "lots", -1),
    "lost": Kpi("Lots lost", "lots", -1),
    "finished": Kpi("Lots finished (filled or lost)", "lots", +1),
    "late": Kpi("Lots late", "lots", -1),
    "delay_days": Kpi("Delay of late lots, summed", "lot-days", -1),
    "worst_delay_days": Kpi("Worst delay of a lot", "days", -1),
    "utilization_pct": Kpi("Mean unit utilization", "%", 0, 0),
}


def lot_kpis(result: ScenarioResult, rate: float) -> pd.DataFrame:
    """The planner's KPIs (:data:`PLANNER_KPIS`) per replication of ``result``.

    A lot finishes in the horizon when it is filled or lost in it. Each lot filled counts
    ``1 - risk`` good lots (its predicted deviation risk, batches in progress that were
    scored) or ``rate`` (:func:`good_rate`), and the rest of it rejected; so expected
    good + expected rejected + lost = lots finished, in every replication. A lot is late
    when its due date falls in the horizon and it is not dispositioned by then (lost lots
    included); its delay runs to its disposition, or to the horizon's end if it has none
    by then (a lower bound).

    Raises
    ------
    ValueError
        If ``result`` has no lot records (a run saved before they were kept).
    """
    lots = result.lots
    if lots is None:
        raise ValueError(f"result {result.name!r}: no lot records (saved by an older version)")
    h = result.horizon_h
    reps = pd.RangeIndex(len(result.kpis), name="replication")
    filled = (lots["filled_h"] > 0) & (lots["filled_h"] <= h)
    lost = lots["status"].eq("lost") & lots["finish_h"].between(0, h)
    risk = pd.to_numeric(lots["risk"], errors="coerce")
    p_good = (1.0 - risk.clip(0, 1)).fillna(rate)
    due_in = lots["due_h"] <= h
    finish = lots["finish_h"].fillna(np.inf)
    late = due_in & (finish > lots["due_h"])
    delay = np.where(late, (np.minimum(finish, h) - lots["due_h"]) / 24.0, 0.0)
    frame = pd.DataFrame(
        {
            "replication": lots["replication"],
            "expected_good": p_good * filled,
            "expected_rejected": (1.0 - p_good) * filled,
            "lost": lost.astype(float),
            "finished": (filled | lost).astype(float),
            "late": late.astype(float),
            "delay_days": delay,
            "worst_delay_days": delay,
        }
    )
    g = frame.groupby("replication")
    out = g.sum().drop(columns="worst_delay_days").join(g["worst_delay_days"].max())
    out = out.reindex(reps, fill_value=0.0)
    out["utilization_pct"] = result.kpis["mean_utilization"].to_numpy() * 100
    return out[list(PLANNER_KPIS)]


def kpi_changes(base: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """Paired changes (other - base) per KPI of :func:`lot_kpis` tables of the same
    replication seeds: mean, 95 % interval of the mean (low, high)."""
    diff = other - base
    n = len(diff)
    half = 1.96 * diff.std(ddof=1) / math.sqrt(n) if n > 1 else diff.mean() * 0.0
    return pd.DataFrame(
        {"mean": diff.mean(), "low": diff.mean() - half, "high": diff.mean() + half}
    )


# ---------------------------------------------------------------------- lot schedule
def _q(values: np.ndarray) -> tuple[float, float, float]:
    """10th, 50th and 90th percentile (observed values: an infinite one stays infinite)."""
    if not len(values):
        return (np.nan, np.nan, np.nan)
    return tuple(float(x) for x in np.quantile(values, [0.1, 0.5, 0.9], method="inverted_cdf"))


def lot_schedule(
    baseline: ScenarioResult, scenario: ScenarioResult, *, min_share: float = 0.5
) -> pd.DataFrame:
    """Per lot: when it finishes (QA disposition) in the baseline and the scenario, its
    due date, its delay and how often it misses its due date, over the replications.

    One row per lot released in at least ``min_share`` of the replications of either run
    and due, or finished, within the horizon. Times are hours from now; a lot not
    dispositioned within the horizon finishes at ``inf``. Columns: ``lot``, ``due_h``
    (median), ``base_p10/p50/p90`` and ``scen_p10/p50/p90`` (finish), ``slip_p10/p50/p90``
    (scenario - baseline finish in the same replication, finishes after the horizon
    counted at its end), ``delay_p10/p50/p90`` (hours late in the scenario, ``inf`` when
    due in the horizon and not finished by its end), ``p_miss`` (share of the scenario's
    replications in which it misses its due date), ``in_baseline``, ``in_scenario``
    (shares of replications it was released in). Sorted by delay, largest first.

    Raises
    ------
    ValueError
        If either result has no lot records.
    """
    if baseline.lots is None or scenario.lots is None:
        raise ValueError("lot_schedule: both results need lot records; got a run without")
    h = scenario.horizon_h
    n_base, n_scen = max(len(baseline.kpis), 1), max(len(scenario.kpis), 1)
    b = baseline.lots.assign(finish=lambda d: d["finish_h"].fillna(np.inf))
    s = scenario.lots.assign(finish=lambda d: d["finish_h"].fillna(np.inf))
    s = s.assign(
        delay=np.where(
            s["finish"] > s["due_h"],
            np.where((s["due_h"] <= h) | np.isfinite(s["finish"]), s["finish"] - s["due_h"], 0),
            0.0,
        ),
        miss=(s["finish"] > s["due_h"]) & ((s["due_h"] <= h) | np.isfinite(s["finish"])),
    )
    paired = s.merge(
        b[["replication", "lot", "finish"]], on=["replication", "lot"], suffixes=("", "_b")
    )
    paired["slip"] = np.minimum(paired["finish"], h) - np.minimum(paired["finish_b"], h)
    rows = []
    b_by, s_by = dict(tuple(b.groupby("lot"))), dict(tuple(s.groupby("lot")))
    slip_by = dict(tuple(paired.groupby("lot")))
    for lot in sorted(set(b_by) | set(s_by)):
        lb, ls = b_by.get(lot), s_by.get(lot)
        share_b = 0.0 if lb is None else len(lb) / n_base
        share_s = 0.0 if ls is None else len(ls) / n_scen
        if max(share_b, share_s) < min_share:
            continue
        main = ls if ls is not None else lb
        due = float(main["due_h"].median())
        fin_b = _q(lb["finish"].to_numpy()) if lb is not None else (np.nan,) * 3
        fin_s = _q(ls["finish"].to_numpy()) if ls is not None else (np.nan,) * 3
        if due > h and not (fin_b[1] <= h or fin_s[1] <= h):
            continue
        sl = slip_by.get(lot)
        rows.append(
            {
                "lot": lot,
                "due_h": due,
                **dict(zip(("base_p10", "base_p50", "base_p90"), fin_b, strict=True)),
                **dict(zip(("scen_p10", "scen_p50", "scen_p90"), fin_s, strict=True)),
                **dict(
                    zip(
                        ("slip_p10", "slip_p50", "slip_p90"),
                        _q(sl["slip"].to_numpy()) if sl is not None else (np.nan,) * 3,
                        strict=True,
                    )
                ),
                **dict(
                    zip(
                        ("delay_p10", "delay_p50", "delay_p90"),
                        _q(ls["delay"].to_numpy()) if ls is not None else (np.nan,) * 3,
                        strict=True,
                    )
                ),
                "p_miss": float(ls["miss"].mean()) if ls is not None else np.nan,
                "in_baseline": share_b,
                "in_scenario": share_s,
            }
        )
    table = pd.DataFrame(rows)
    if not len(table):
        return table
    order = table[["delay_p50", "delay_p90", "p_miss"]].fillna(-1)
    table = table.assign(_a=order["delay_p50"], _b=order["delay_p90"], _c=order["p_miss"])
    table = table.sort_values(
        ["_a", "_b", "_c", "due_h"], ascending=[False, False, False, True], kind="stable"
    )
    return table.drop(columns=["_a", "_b", "_c"]).reset_index(drop=True)


def _date_range(horizon: Horizon, p10: float, p90: float) -> str:
    def one(x: float) -> str:
        if not np.isfinite(x):
            return f"after {horizon.show(horizon.end, with_time=False)[4:]}"
        return horizon.at(x).strftime("%d %b")

    return one(p10) if one(p10) == one(p90) else f"{one(p10)} – {one(p90)}"


def _finish(horizon: Horizon, p10: float, p50: float, p90: float) -> str:
    if np.isnan(p50):
        return DASH
    if not np.isfinite(p50):
        return f"after the horizon ({_date_range(horizon, p10, p90)})"
    return f"{horizon.at(p50).strftime('%a %d %b %H:%M')} ({_date_range(horizon, p10, p90)})"


def _days(p10: float, p50: float, p90: float, due_h: float, h: float, *, sign=False) -> str:
    if np.isnan(p50):
        return DASH

    def one(x: float) -> str:
        if not np.isfinite(x):
            return f"> {(h - due_h) / 24:.1f}"
        return f"{x / 24:{'+' if sign else ''}.1f}"

    return f"{one(p50)} ({one(p10)} to {one(p90)})"


def show_lot_schedule(table: pd.DataFrame, horizon: Horizon) -> pd.DataFrame:
    """:func:`lot_schedule` as the page shows it: local dates, days, labels, ``—`` for
    nothing (a lot not planned in one of the runs)."""
    h = horizon.hours
    tzn = tz_name(horizon.tz)
    cols = [
        "Lot",
        f"Due ({tzn})",
        "Finish, baseline: median (P10 – P90)",
        "Finish, scenario: median (P10 – P90)",
        "Slip vs baseline, days: median (P10 to P90)",
        "Late by, days: median (P10 to P90)",
        "Misses its due date",
    ]
    if not len(table):
        return pd.DataFrame(columns=cols)
    out = []
    for r in table.itertuples():
        if np.isnan(r.p_miss):
            miss = DASH
        else:
            miss = f"{'yes' if r.p_miss >= 0.5 else 'no'} ({r.p_miss * 100:.0f} % of replications)"
        late = _days(r.delay_p10, r.delay_p50, r.delay_p90, r.due_h, h)
        if r.delay_p90 == 0:
            late = "on time"
        out.append(
            [
                r.lot,
                horizon.at(r.due_h).strftime("%a %d %b %H:%M"),
                _finish(horizon, r.base_p10, r.base_p50, r.base_p90),
                _finish(horizon, r.scen_p10, r.scen_p50, r.scen_p90),
                _days(r.slip_p10, r.slip_p50, r.slip_p90, r.due_h, h, sign=True),
                late,
                miss,
            ]
        )
    return pd.DataFrame(out, columns=cols)
