"""What the scenarios page computes, without Streamlit (tests reach it directly).

- :func:`run_pair`: a scenario and its baseline in one process pool (their chunks
  interleaved), from one starting point with the same replication seeds (paired);
- :func:`predicted_failure_events`: the maintenance model's failure risk as
  :class:`~twin.scenarios.FailureRisk` events;
- :func:`with_batch_risk` and :func:`good_rate`: the deviation model's risk of the batches
  in progress, and the rate for batches not started yet, for expected good lots;
- :func:`read_scores` and :func:`batch_outcomes`: the scores and outcomes they come from.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import pandas as pd

from twin.config import PlantConfig
from twin.scenarios import (
    FailureRisk,
    ScenarioResult,
    replication_seeds,
    run_replication,
    validate_events,
)
from twin.state import PlantState, validate_state

__all__ = [
    "RISK_THRESHOLD",
    "BaselineCache",
    "batch_outcomes",
    "good_rate",
    "predicted_failure_events",
    "read_scores",
    "run_pair",
    "run_sweeps",
    "with_batch_risk",
]

RISK_THRESHOLD = 0.05  # default: assets with P(fail in 7 d) >= 5 % get the model's risk
WEEK_H = 168.0


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
    outcomes. Empty when neither exists.
    """
    store = Path(store)
    parts = []
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
        from dashboard.audit import AuditTrail

        decided = AuditTrail(audit, store / "users.toml").decisions()
        rows = [
            {"batch_id": b, "good": r["decision"] == "release", "source": "QA disposition"}
            for b, r in decided.items()
            if r["decision"] in ("release", "reject")
        ]
        if rows:
            parts.append(pd.DataFrame(rows))
    if not parts:
        return pd.DataFrame(columns=["batch_id", "good", "source"])
    out = pd.concat(parts, ignore_index=True)
    return out.drop_duplicates("batch_id", keep="last").reset_index(drop=True)


def good_rate(outcomes: pd.DataFrame, batch_scores: pd.DataFrame | None) -> tuple[float, str]:
    """P(a batch not started yet ends good) and where it comes from.

    The historical good rate of finished batches when outcomes are known, else 1 - the
    mean predicted deviation risk of the scored batches, else 1 (no information: new
    batches count as good, which is what the twin's own disposition does on average).
    """
    if len(outcomes):
        rate = float(outcomes["good"].astype(bool).mean())
        return rate, f"historical good rate of {len(outcomes)} finished batches"
    if batch_scores is not None and batch_scores["p_deviation"].notna().any():
        rate = 1.0 - float(batch_scores["p_deviation"].mean())
        return rate, f"1 - mean predicted risk of {len(batch_scores)} scored batches"
    return 1.0, "no outcomes and no scores: new batches counted by the twin's disposition"


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
def _chunk(payload: tuple) -> tuple[str, list[tuple[int, object]]]:
    """Replications of one chunk (in a worker): fewer GC passes, as twin.scenarios does."""
    tag, config, state, events, horizon_h, seeds, indices, default_risk = payload
    old = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        return tag, [
            (
                i,
                run_replication(
                    config,
                    state,
                    events,
                    horizon_h,
                    s,
                    keep_schedule=(i == 0),
                    default_risk=default_risk,
                ),
            )
            for i, s in zip(indices, seeds, strict=True)
        ]
    finally:
        gc.set_threshold(*old)


def _chunks(n: int, lanes: int) -> list[list[int]]:
    """Replication indices ``0..n-1`` in chunks that shrink as the sweep goes (guided
    scheduling): each chunk is the remaining replications over ``lanes`` (workers x
    sweeps), at least 2. Large chunks first keep the per-chunk overhead low; small ones
    last leave a worker little to finish alone after the other has run out of work (with
    equal chunks of 25, up to ~0.1 s at the end of a 200 x 30-day pair)."""
    if lanes <= 1:
        return [list(range(n))]
    out, start = [], 0
    while start < n:
        size = max(2, -(-(n - start) // lanes))
        out.append(list(range(start, min(n, start + size))))
        start += size
    return out


def _collect(name, horizon_h, reps, seconds, state: PlantState) -> ScenarioResult:
    kpis = pd.DataFrame([{"seed": r.seed, **r.kpis} for r in reps])
    t0 = state.clock_h
    schedule = pd.DataFrame(
        reps[0].schedule, columns=["unit", "batch_id", "step", "activity", "start_h", "end_h"]
    )
    schedule["start_h"] = schedule["start_h"] - t0
    schedule["end_h"] = schedule["end_h"].astype("float64").fillna(t0 + horizon_h) - t0
    schedule = schedule.sort_values(["unit", "start_h"], kind="stable").reset_index(drop=True)
    return ScenarioResult(
        name=name,
        horizon_h=horizon_h,
        kpis=kpis,
        utilization=pd.DataFrame([r.utilization for r in reps]),
        availability=pd.DataFrame([r.availability for r in reps]),
        schedule=schedule,
        seconds=seconds,
        meta={"start": state.start, "clock_h": state.clock_h},
    )


def run_sweeps(
    config: PlantConfig,
    state: PlantState,
    runs: dict[str, Sequence],
    *,
    horizon_h: float,
    replications: int,
    seed: int = 0,
    default_risk: float | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, ScenarioResult]:
    """Several sweeps (name -> events) from one starting point in one process pool.

    Every sweep uses the same replication seeds (paired, common random numbers) and gives
    the same result as :func:`twin.scenarios.run_scenario` with that seed (a replication is
    a pure function of its seed); the chunks of all sweeps share one pool, so one pool is
    started instead of one per sweep and no sweep waits for another's stragglers.
    """
    runs = {tag: list(evs) for tag, evs in runs.items()}
    validate_state(state, config)
    for evs in runs.values():
        validate_events(evs, config)
    seeds = replication_seeds(seed, replications)
    workers = max(1, min(workers or os.cpu_count() or 1, replications))
    chunks = _chunks(replications, 1 if workers == 1 else workers * len(runs))
    payloads = [
        (tag, config, state, evs, horizon_h, [seeds[i] for i in c], c, default_risk)
        for c in chunks
        for tag, evs in runs.items()
    ]
    total = len(runs) * replications
    out = {tag: [None] * replications for tag in runs}
    done = 0
    t0 = time.perf_counter()

    def take(tag, reps):
        nonlocal done
        for i, rep in reps:
            out[tag][i] = rep
        done += len(reps)
        if progress:
            progress(done, total)

    if workers == 1:
        for p in payloads:
            take(*_chunk(p))
    else:
        ctx = get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            for fut in as_completed([pool.submit(_chunk, p) for p in payloads]):
                take(*fut.result())
    seconds = time.perf_counter() - t0
    return {tag: _collect(tag, horizon_h, reps, seconds, state) for tag, reps in out.items()}


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
    progress: Callable[[int, int], None] | None = None,
) -> tuple[ScenarioResult, ScenarioResult]:
    """The baseline (no events) and the scenario, paired, in one pool: (baseline, scenario).

    A ``baseline`` already computed for this starting point and sweep is reused (then
    only the scenario runs).
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
