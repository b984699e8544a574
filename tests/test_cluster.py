"""Sweeps on a real Dask cluster (docs/cluster.md): the same KPIs as the local pool, bit for
bit, with a worker killed mid-sweep too; one clear line for a scheduler that is not there;
``biotwin scenario run``; model selection's folds on the cluster choosing the same model;
the historian read by dask.dataframe as docs/historian.md shows.

The cluster is real: ``dask scheduler`` and two ``dask worker --nthreads 1`` processes on
127.0.0.1, started by this module, talking TCP.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import distributed
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from biotwin.execution import ENV_SCHEDULER, ExecutionError, executor
from twin.scenarios import AssetOutage, DemandChange, replication_seeds, run_scenario

ROOT = Path(__file__).resolve().parents[1]
SWEEP = {"horizon_h": 24.0 * 12, "replications": 200, "seed": 4}
EVENTS = [AssetOutage(target="BR-202", start_h=12, end_h=60), DemandChange(factor=1.1)]
START_TIMEOUT_S = 30


# ---------------------------------------------------------------------- the cluster
@dataclass
class Cluster:
    """A scheduler and its workers, processes of this test module."""

    address: str
    folder: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)  # name -> process

    def _start(self, argv: list[str], name: str) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k != ENV_SCHEDULER}
        log = open(self.folder / f"{name}.log", "w")  # noqa: SIM115 (kept open by the child)
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        log.close()
        self.procs.append(proc)
        return proc

    def add_worker(self, name: str) -> subprocess.Popen:
        """A worker process (no nanny: a SIGKILL kills the worker itself)."""
        proc = self._start(
            [sys.executable, "-m", "distributed.cli.dask_worker", self.address,
             "--name", name, "--nthreads", "1", "--no-nanny", "--no-dashboard",
             "--host", "127.0.0.1", "--memory-limit", "0", "--death-timeout", "60",
             "--local-directory", str(self.folder / name)],
            name,
        )  # fmt: skip
        self.workers[name] = proc
        return proc

    def client(self):
        return distributed.Client(self.address, timeout=10, set_as_default=False)

    def stop(self) -> None:
        """Workers first, then the scheduler: only the processes this module started."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def start_cluster(folder: Path, workers: int) -> Cluster:
    """``dask scheduler --port 0`` (its address from its scheduler file) and ``workers``
    workers, registered before this returns."""
    file = folder / "scheduler.json"
    c = Cluster("", folder)
    c._start(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", "0", "--no-dashboard", "--scheduler-file", str(file),
         "--idle-timeout", "600"],
        "scheduler",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not file.exists() or not file.read_text().strip():
            assert time.monotonic() < deadline, (folder / "scheduler.log").read_text()
            time.sleep(0.05)
        time.sleep(0.05)  # the file is written whole, but give the writer its close
        c.address = json.loads(file.read_text())["address"]
        for i in range(workers):
            c.add_worker(f"w{i}")
        if workers:
            with c.client() as client:
                client.wait_for_workers(workers, timeout=START_TIMEOUT_S)
    except BaseException:
        c.stop()
        raise
    return c


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_cluster(tmp_path_factory.mktemp("dask"), workers=2)
    yield c
    c.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------- sweeps
@pytest.fixture(scope="module")
def state(plant_100d):
    return plant_100d


@pytest.fixture(scope="module")
def local(config, state):
    """The sweep on the local process pool."""
    return run_scenario(config, state, EVENTS, workers=2, scheduler="local", **SWEEP)


def assert_same_sweep(a, b) -> None:
    """Every number of two sweeps equal, bit for bit."""
    for part in ("kpis", "utilization", "availability", "schedule", "lots"):
        pd.testing.assert_frame_equal(getattr(a, part), getattr(b, part), check_exact=True)


def test_seeds_derive_from_the_replication_index_alone():
    assert replication_seeds(4, 10) == replication_seeds(4, 10_000)[:10]
    assert replication_seeds(4, 10) != replication_seeds(5, 10)


def test_a_sweep_on_the_cluster_gives_exactly_the_local_kpis(cluster, config, state, local):
    seen = []
    remote = run_scenario(
        config,
        state,
        EVENTS,
        scheduler=cluster.address,
        progress=lambda d, n: seen.append(d),
        **SWEEP,
    )
    assert_same_sweep(remote, local)
    assert remote.meta["ran_on"] == f"Dask cluster at {cluster.address} (2 workers, 2 threads)"
    assert local.meta["ran_on"] == "local pool of 2 processes"
    # streamed as chunks finish: many steps, never backwards, ending at the total
    assert len(seen) > 5 and seen == sorted(seen) and seen[-1] == SWEEP["replications"]
    # and $DASK_SCHEDULER_ADDRESS is what a sweep without a scheduler uses
    small = {**SWEEP, "replications": 20}
    os.environ[ENV_SCHEDULER] = cluster.address
    try:
        env = run_scenario(config, state, EVENTS, **small)
    finally:
        del os.environ[ENV_SCHEDULER]
    assert env.meta["ran_on"].startswith("Dask cluster")
    in_process = run_scenario(config, state, EVENTS, workers=1, **small)
    assert in_process.meta["ran_on"] == "this process"
    assert_same_sweep(env, in_process)
    pd.testing.assert_frame_equal(env.kpis, local.kpis.iloc[:20], check_exact=True)


def test_a_worker_killed_mid_sweep_changes_nothing(cluster, config, state, local):
    victim = cluster.add_worker("victim")
    killed = threading.Event()
    with cluster.client() as client:
        client.wait_for_workers(3, timeout=START_TIMEOUT_S)
        address = next(
            a for a, w in client.scheduler_info()["workers"].items() if w["name"] == "victim"
        )

        def kill_when_busy() -> None:
            """SIGKILL the victim as soon as the scheduler shows it running a chunk."""
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if client.processing(workers=[address]).get(address):
                    os.kill(victim.pid, signal.SIGKILL)
                    killed.set()
                    return
                time.sleep(0.005)

        watcher = threading.Thread(target=kill_when_busy, daemon=True)
        watcher.start()
        remote = run_scenario(config, state, EVENTS, scheduler=cluster.address, **SWEEP)
        watcher.join(5)
        assert killed.is_set(), "the victim never got a chunk"
        assert victim.wait(5) == -signal.SIGKILL
        deadline = time.monotonic() + 20
        while address in client.nthreads() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert address not in client.nthreads()  # the scheduler lost it mid-sweep
    assert_same_sweep(remote, local)


def test_pm_window_candidates_on_the_cluster_are_the_local_ones(cluster, config, state):
    from dashboard.maintenance import best_pm_window

    kw = {"days": 2, "step_h": 24, "replications": 12, "horizon_days": 6}
    remote = best_pm_window(config, state, "BR-201/agitator", scheduler=cluster.address, **kw)
    local = best_pm_window(config, state, "BR-201/agitator", scheduler="local", **kw)
    pd.testing.assert_frame_equal(remote, local, check_exact=True)
    assert sorted(remote["start_h"]) == [0.0, 24.0, 48.0]


def test_up_sends_the_dashboards_sweeps_to_the_cluster(cluster, tmp_path):
    """``biotwin up --scheduler``: the address checked, then in the dashboard's environment;
    an unreachable one stops ``up`` before it starts anything, with one line."""
    from biotwin.cli import app
    from dashboard.cli import _sweeps_env

    env: dict = {}
    _sweeps_env(env, cluster.address, False)
    assert env == {ENV_SCHEDULER: cluster.address}
    address = f"tcp://127.0.0.1:{free_port()}"
    r = CliRunner().invoke(app, ["up", "--scheduler", address, "--data-dir", str(tmp_path / "d")])
    assert r.exit_code == 2
    assert r.output.startswith(f"error: cannot reach the Dask scheduler at {address} (")
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "d").exists()


def test_an_unreachable_scheduler_is_one_clear_error(config, state, caplog):
    address = f"tcp://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(
        ExecutionError,
        match=rf"^cannot reach the Dask scheduler at {address} \(connection refused\): start "
        r"it with 'dask scheduler', check --scheduler / \$DASK_SCHEDULER_ADDRESS, or pass "
        r"--fallback-local$",
    ):
        run_scenario(config, state, EVENTS, scheduler=address, **{**SWEEP, "replications": 4})
    assert time.monotonic() - t0 < 5
    with (
        pytest.raises(
            ExecutionError, match=r"at nonsense \(missing port number in address 'nonsense'\): "
        ),
        executor("nonsense"),
    ):
        pass
    # --fallback-local: a warning naming the address, then the local pool, same result
    with caplog.at_level(logging.WARNING, logger="biotwin.execution"):
        fell_back = run_scenario(
            config,
            state,
            EVENTS,
            scheduler=address,
            fallback_local=True,
            workers=1,
            **{**SWEEP, "replications": 4},
        )
    assert f"cannot reach the Dask scheduler at {address}" in caplog.text
    assert "running on the local pool instead" in caplog.text
    assert fell_back.meta["ran_on"] == "this process"


def test_a_scheduler_without_workers_is_one_line(tmp_path):
    lonely = start_cluster(tmp_path, workers=0)
    try:
        with (
            pytest.raises(
                ExecutionError,
                match=rf"^the Dask scheduler at {lonely.address} has no workers \(waited 1 s\): "
                rf"start some with 'dask worker {lonely.address} --nthreads 1', or pass "
                r"--fallback-local$",
            ),
            executor(lonely.address, timeout_s=1),
        ):
            pass
        with executor(lonely.address, 1, timeout_s=1, fallback_local=True) as pool:
            assert pool.where == "this process"
    finally:
        lonely.stop()


class _Workers:
    """A client whose workers answer ``client.run`` with ``versions``."""

    def __init__(self, versions: dict) -> None:
        self.versions = versions

    def run(self, function, *args, on_error: str = "raise"):
        return self.versions


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("0.0.1", r"runs biotwin 0\.0\.1; this is .*: install the same version on every worker"),
        (ModuleNotFoundError("No module named 'twin'"), r"cannot run biotwin tasks \(Module"),
    ],
    ids=["other-version", "not-installed"],
)
def test_workers_with_another_biotwin_are_refused(answer, message):
    from biotwin.execution import _check_workers, _installed_version

    if _installed_version() is None:
        pytest.skip("biotwin is not installed in this environment (run from the source)")
    with pytest.raises(
        ExecutionError, match=r"^Dask worker tcp://10\.0\.0\.7:4001 of tcp://s:1 " + message
    ):
        _check_workers(_Workers({"tcp://10.0.0.7:4001": answer}), "tcp://s:1")
    _check_workers(_Workers({"tcp://10.0.0.7:4001": _installed_version()}), "tcp://s:1")


# ---------------------------------------------------------------------- the command
SCENARIO = """\
name = "BR-202 down 3 days, +10 % demand"
horizon_days = 8
replications = 16
seed = 0
[[outage]]
unit = "BR-202"
start = "+24h"        # or an ISO date-time
duration = "72h"
[demand]
change_pct = 10
[[failure_risk]]
asset = "BR-201/agitator"
probability = 0.3
within = "7d"
[[pm_move]]
asset = "BR-203/agitator"
start = "+2d"
[[shift_removed]]
start = "+36h"
duration = "8h"
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A store whose historian holds the sample plant's batch context and one sample five
    days before its end (the plant's now: five batches are on units then)."""
    from connectors.historian import Historian
    from connectors.twin_import import batch_context_rows

    root = tmp_path_factory.mktemp("store")
    h = Historian(root / "historian")
    rows = batch_context_rows(ROOT / "sample_data" / "twin")
    h.append_batch_context(rows)
    now = rows["start_time"].max() - pd.Timedelta(days=5)
    h.append(
        pd.DataFrame(
            {"time": [now], "tag": ["BR-201.temperature"], "value": [37.0]}
            | {"status": [0], "quality": [0], "flags": [0]}
        )
    )
    return root


def scenario_cli(*args: str):
    from biotwin.cli import app

    return CliRunner().invoke(app, ["scenario", "run", *args])


def test_scenario_run_writes_kpis_and_summary(cluster, store, tmp_path, monkeypatch):
    monkeypatch.setenv("BIOTWIN_TZ", "UTC")
    file = tmp_path / "sweep.toml"
    file.write_text(SCENARIO)
    outs = {}
    for where in (cluster.address, "local"):
        out = tmp_path / where.replace(":", "_").replace("/", "_")
        r = scenario_cli(
            str(file), "--out", str(out), "--data-dir", str(store), "--scheduler", where
        )
        assert r.exit_code == 0, r.output
        assert sorted(p.name for p in out.iterdir()) == ["kpis.csv", "summary.json"]
        outs[where] = out
    remote, here = outs[cluster.address], outs["local"]
    kpis = pd.read_csv(remote / "kpis.csv")
    assert list(kpis.columns) == ["replication", "arm", "kpi", "value"]
    assert len(kpis) == 2 * 16 * 11 and set(kpis["arm"]) == {"baseline", "scenario"}
    assert (remote / "kpis.csv").read_bytes() == (here / "kpis.csv").read_bytes()
    summary = json.loads((remote / "summary.json").read_text())
    local_summary = json.loads((here / "summary.json").read_text())
    assert summary["ran_on"].startswith("Dask cluster") and local_summary["ran_on"].startswith(
        "local pool"
    )
    for key in ("ran_on", "seconds"):
        del summary[key], local_summary[key]
    assert summary == local_summary
    assert summary["started_from"] == f"the live plant state in {store}"
    assert [e["kind"] for e in summary["events"]] == [
        "outage", "failure_risk", "demand", "pm_move", "shift_removed"
    ]  # fmt: skip
    assert summary["events"][0]["start_h"] == 24 and summary["events"][0]["end_h"] == 96
    done = summary["kpis"]["completed"]
    wide = kpis.pivot_table(index="replication", columns=["arm", "kpi"], values="value")
    diff = wide["scenario"]["completed"] - wide["baseline"]["completed"]
    assert np.isclose(done["difference"]["mean"], diff.mean())
    assert (
        done["difference"]["ci95_low"]
        <= done["difference"]["mean"]
        <= done["difference"]["ci95_high"]
    )
    assert np.isclose(done["baseline"]["mean"], wide["baseline"]["completed"].mean())


def test_the_scenarios_page_runs_on_the_cluster_and_says_so(cluster, store, monkeypatch):
    """What ``biotwin up --scheduler`` gives the dashboard: $DASK_SCHEDULER_ADDRESS. The
    page's sweeps run there; an unreachable scheduler is an error box, nothing saved."""
    from conftest import sign_in_as, write_users
    from streamlit.testing.v1 import AppTest

    if not (store / "users.toml").exists():
        write_users(store / "users.toml")
    monkeypatch.setenv("BIOTWIN_DATA_DIR", str(store))
    monkeypatch.setenv("BIOTWIN_PREFETCH_BASELINE", "0")
    monkeypatch.setenv(ENV_SCHEDULER, cluster.address)
    at = AppTest.from_file(str(ROOT / "dashboard" / "views" / "scenarios.py"), default_timeout=120)
    sign_in_as(at, "engineer")
    at.run()
    at.number_input(key="sc_reps").set_value(20)
    at.button(key="sc_run").click().run()
    assert not at.exception and not at.error
    bar = at.get("progress")[-1].proto
    assert bar.text.endswith(f"s of replications on the Dask cluster at {cluster.address} "
                             "(2 workers, 2 threads)")  # fmt: skip
    saved = sorted((store / "scenarios").glob("*.json"))
    assert len(saved) == 1

    address = f"tcp://127.0.0.1:{free_port()}"
    monkeypatch.setenv(ENV_SCHEDULER, address)
    at.text_input(key="sc_name").input("not run")
    at.button(key="sc_run").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        f"Not run and not saved: cannot reach the Dask scheduler at {address} (connection "
        "refused): start it with 'dask scheduler', check --scheduler / $DASK_SCHEDULER_ADDRESS, "
        "or pass --fallback-local"
    ]
    assert sorted((store / "scenarios").glob("*.json")) == saved


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("horizon_days = 30", r"horizon_days: must be > 0"),  # replaced below by a bad value
        ('[[outage]]\nunit = "BR-999"\nstart = "+1h"\nduration = "2h"',
         r"outage\[0\]\.unit: must be a unit or asset of this plant; got 'BR-999'"),
        ('[[outage]]\nunit = "BR-202"\nstart = "+1h"\nduration = "72"',
         r"outage\[0\]\.duration: must be a number and a unit, such as '90min', '72h' or "
         r"'3d'; got '72'"),
        ('[[outage]]\nunit = "BR-202"\nstart = "tomorrow"\nduration = "2h"',
         r"outage\[0\]\.start: must be '\+<duration>' \(such as '\+24h'\) or an ISO "
         r"date-time; got 'tomorrow'"),
        ('[[pm_move]]\nasset = "BR-201/agitator"\nstart = "+40d"',
         r"pm_move\[0\]\.start: must be within the scenario horizon \(.*\); got '\+40d'"),
        ("[demand]\nchange_pct = -100", r"demand\.change_pct: must be > -100(\.0)?; got -100"),
        ("colour = 1", r"colour: is not a field of a scenario file"),
        ("replications = [", r"must be valid TOML; got "),
    ],
    ids=["horizon", "unknown-unit", "duration-unit", "start", "pm-after-horizon", "demand",
         "unknown-field", "toml"],
)  # fmt: skip
def test_a_bad_scenario_file_is_one_line_and_writes_nothing(tmp_path, change, message):
    head = "name = 'x'\nhorizon_days = 30\nreplications = 10\n"
    if change.startswith("horizon_days"):
        head, change = "name = 'x'\nhorizon_days = -3\nreplications = 10\n", ""
    file = tmp_path / "bad.toml"
    file.write_text(head + change + "\n")
    out = tmp_path / "out"
    r = scenario_cli(str(file), "--out", str(out), "--from-empty")
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {file}: "), r.output
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists()


def test_scenario_run_against_no_scheduler_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("BIOTWIN_SCHEDULER_TIMEOUT_S", "2")
    file = tmp_path / "sweep.toml"
    file.write_text(SCENARIO)
    address = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    r = scenario_cli(str(file), "--out", str(out), "--from-empty", "--scheduler", address)
    assert r.exit_code == 2
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: cannot reach the Dask scheduler at {address} (connection refused): start it "
        "with 'dask scheduler', check --scheduler / $DASK_SCHEDULER_ADDRESS, or pass "
        "--fallback-local"
    ]
    assert not out.exists()
    r = scenario_cli(
        str(file), "--out", str(out), "--from-empty", "--scheduler", address, "--fallback-local"
    )
    assert r.exit_code == 0, r.output
    assert "ran on the local pool" in r.output and (out / "summary.json").exists()


# ---------------------------------------------------------------------- history at scale
def documented_snippet() -> str:
    """The dask.dataframe example of docs/historian.md (the block marked as tested)."""
    text = (ROOT / "docs" / "historian.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return next(b for b in blocks if "tests/test_cluster.py" in b)


def test_the_documented_dask_query_gives_the_historians_answer(cluster, tmp_path):
    from connectors.historian import Historian

    h = Historian(tmp_path / "historian")
    t = pd.date_range("2026-03-01", periods=3 * 24 * 60, freq="1min", tz="UTC")
    rng = np.random.default_rng(0)
    for tag in ("BR-201.temperature", "BR-202.temperature", "BR-203.temperature"):
        h.append(
            pd.DataFrame(
                {"time": t, "tag": tag, "value": rng.normal(37, 0.3, len(t))}
                | {"status": 0, "quality": rng.choice([0, 0, 0, 1], len(t)), "flags": 0}
            )
        )
    h.compact(before=t[0] + pd.Timedelta(days=1))  # each day one compacted file
    # then a retried write of an hour of day 2 with other values: the first commit wins
    retry = h.query(["BR-201.temperature"], t[1440], t[1500]).assign(value=-1.0)
    h.append(retry[["time", "tag", "value", "status", "quality", "flags"]])
    assert (
        len(list((tmp_path / "historian" / "segments" / "date=2026-03-02").glob("*.parquet"))) == 2
    )

    namespace = {"__name__": "historian_docs", "DATA_DIR": str(tmp_path)}
    with distributed.Client(cluster.address, timeout=10):  # compute() runs on the cluster
        exec(compile(documented_snippet(), "docs/historian.md", "exec"), namespace)
    result = namespace["daily"]

    rows = h.query(["BR-201.temperature", "BR-202.temperature"], "2026-01-01", "2027-01-01")
    rows = rows[rows["quality"] == 0]
    expected = rows.groupby(["tag", rows["time"].dt.floor("D").rename("day")])["value"].mean()
    pd.testing.assert_series_equal(  # (Dask's strings are pyarrow strings: index dtype)
        result.sort_index(),
        expected.sort_index(),
        check_names=False,
        check_index_type=False,
        rtol=1e-12,
    )
    assert len(result) == 2 * 3
    assert (result > 30).all()  # the retried -1 values never counted


# ---------------------------------------------------------------------- model selection
def test_model_selection_on_the_cluster_chooses_the_local_model(cluster):
    """Both families' cross-validation folds as cluster tasks: the same candidates' CV
    figures, the same choice and the same fitted model as in this process."""
    from quality.data import run_history
    from quality.deviation import DeviationModel
    from quality.maintenance import MaintenanceModel
    from quality.service import model_fingerprint
    from tests.test_model_selection import _batches, _history, _units

    series, outcomes = _batches(n=24, seed=3, hours=20)
    history = _history(series, outcomes)
    here = DeviationModel(seed=0).fit(history, scheduler="local")
    there = DeviationModel(seed=0).fit(history, scheduler=cluster.address)
    assert there.selection == here.selection
    assert model_fingerprint(there) == model_fingerprint(here)

    runs = run_history(_units(n=8, seed=2), asset_col="unit", time_col="cycle")
    here = MaintenanceModel(seed=0).fit(runs, scheduler="local")
    there = MaintenanceModel(seed=0).fit(runs, scheduler=cluster.address)
    assert there.selection == here.selection
    assert model_fingerprint(there) == model_fingerprint(here)


def test_the_historians_batches_are_read_by_partition_on_the_cluster(cluster, tmp_path):
    """`train --outcomes --scheduler`: the workers read and bin the batches by partition,
    and the history they give is the one read in this process, bit for bit."""
    from connectors.historian import Historian
    from connectors.twin_import import import_simulation
    from quality import live
    from quality.live import batch_history_from_historian
    from twin.config import load_config

    root = ROOT / "sample_data" / "twin"
    hist = Historian(tmp_path / "historian")
    import_simulation(root, hist)
    ids = sorted(set(hist.batch_context()["batch_id"].dropna()))[:12]  # 3 partitions
    assert len(ids) == 12
    config = load_config()
    here = batch_history_from_historian(hist, config, batch_ids=ids)
    live.PARTITION_BATCHES, kept = 5, live.PARTITION_BATCHES  # several partitions
    try:
        there = batch_history_from_historian(hist, config, batch_ids=ids, scheduler=cluster.address)
    finally:
        live.PARTITION_BATCHES = kept
    pd.testing.assert_frame_equal(there.bins, here.bins, check_exact=True)
    pd.testing.assert_frame_equal(there.outcomes, here.outcomes, check_exact=True)
    assert there.context_cols == here.context_cols


def test_the_twins_unit_files_are_binned_on_the_cluster(cluster):
    """`biotwin train --scheduler` from twin output: one task per unit file, the same
    history as binned in this process."""
    from quality.data import batch_history_from_twin

    root = ROOT / "sample_data" / "twin"
    here = batch_history_from_twin(root)
    there = batch_history_from_twin(root, scheduler=cluster.address)
    pd.testing.assert_frame_equal(there.bins, here.bins, check_exact=True)
    pd.testing.assert_frame_equal(there.outcomes, here.outcomes, check_exact=True)
