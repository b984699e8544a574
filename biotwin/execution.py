"""One execution seam for independent work: a local process pool, or a Dask cluster.

Scenario replications, PM-window candidates and model-selection folds are many
pure tasks. :func:`executor` gives them one ``concurrent.futures.Executor`` to run on,
whatever is behind it:

- nothing configured: a local process pool (``workers`` processes, default all cores);
  ``workers=1``: this process, no pool;
- a scheduler address (``scheduler=``, the CLI's ``--scheduler``, or
  ``$DASK_SCHEDULER_ADDRESS``): the executor of a ``distributed.Client``
  (:meth:`distributed.Client.get_executor`), whose futures are plain
  ``concurrent.futures`` futures, so callers stream results with ``as_completed`` (or
  :meth:`Pool.stream`) the same way on both.

Callers ship parameters and seeds, never live objects (docs/cluster.md); a lost worker's
tasks are re-run by Dask elsewhere, which is safe because the tasks are pure.

This module imports nothing of biotwin's, so every package may use it; ``distributed``
is imported only when a scheduler is named (``pip install biotwin[cluster]``).

Exceptions::

    RuntimeError
     └── ExecutionError    no cluster to run on (unreachable, no workers, not installed,
                           other biotwin on the workers) or a task that kept killing workers
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from multiprocessing import get_context

__all__ = [
    "ENV_FALLBACK",
    "ENV_SCHEDULER",
    "ENV_TIMEOUT",
    "LOCAL",
    "ExecutionError",
    "Pool",
    "check_scheduler",
    "executor",
    "resolve_scheduler",
]

logger = logging.getLogger(__name__)

#: The scheduler's address when none is given (the variable Dask itself reads).
ENV_SCHEDULER = "DASK_SCHEDULER_ADDRESS"
#: ``1``: run on the local pool, with a warning, when the scheduler cannot be reached.
ENV_FALLBACK = "BIOTWIN_FALLBACK_LOCAL"
#: Seconds to wait for the scheduler (and for its first worker); default 10.
ENV_TIMEOUT = "BIOTWIN_SCHEDULER_TIMEOUT_S"
#: ``scheduler=LOCAL`` forces the local pool even when ``$DASK_SCHEDULER_ADDRESS`` is set.
LOCAL = "local"
DEFAULT_TIMEOUT_S = 10.0


class ExecutionError(RuntimeError):
    """No cluster to run on, or a task that kept killing its workers.

    Attributes
    ----------
    address : str or None
        The scheduler address concerned.
    summary : str
        What went wrong, without the advice on what to do.
    """

    def __init__(
        self, message: str, *, address: str | None = None, advice: str | None = None
    ) -> None:
        super().__init__(f"{message}: {advice}" if advice else message)
        self.address = address
        self.summary = message


# ---------------------------------------------------------------------- the pool
class _InProcess(Executor):
    """Runs each task when it is submitted, in this process (``workers=1``)."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:
            future.set_exception(exc)
        return future


class Pool(Executor):
    """An executor, how many tasks it runs at once and where.

    Parameters
    ----------
    inner : concurrent.futures.Executor
        What runs the tasks.
    slots : int
        Tasks that run at once (processes, or the cluster's threads).
    where : str
        For people: ``"local pool of 2 processes"``, ``"Dask cluster at tcp://... (2
        workers, 2 threads)"``.
    """

    def __init__(self, inner: Executor, *, slots: int, where: str) -> None:
        self._inner = inner
        self.slots = max(1, int(slots))
        self.where = where

    def __repr__(self) -> str:
        return f"Pool({self.where!r}, slots={self.slots})"

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return self._inner.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if isinstance(self._inner, ProcessPoolExecutor):
            self._inner.shutdown(wait=wait, cancel_futures=cancel_futures)
        else:
            self._inner.shutdown(wait=wait)

    def stream(self, fn: Callable, payloads: Iterable) -> Iterator:
        """``fn(payload)`` of every payload, yielded as each finishes (any order).

        In this process (``workers=1``) each runs when the previous one has been consumed,
        so progress moves there too. On the first task that raises, the others are
        cancelled and the error is raised.

        Raises
        ------
        ExecutionError
            If Dask gave up on a task that killed its workers (``KilledWorker``).
        Exception
            Whatever a task raised.
        """
        if isinstance(self._inner, _InProcess):
            for payload in payloads:
                yield fn(payload)
            return
        futures = [self.submit(fn, p) for p in payloads]
        try:
            for future in as_completed(futures):
                yield future.result()
        except Exception as exc:
            if type(exc).__name__ == "KilledWorker":
                raise ExecutionError(
                    f"{self.where}: a task was lost with every worker that ran it "
                    f"(Dask's allowed-failures): {_first_line(exc)}"
                ) from exc
            raise
        finally:
            for future in futures:
                future.cancel()


# ---------------------------------------------------------------------- where to run
def resolve_scheduler(scheduler: str | None) -> str | None:
    """The scheduler address to use: ``scheduler``, else ``$DASK_SCHEDULER_ADDRESS``;
    None for the local pool (also when ``scheduler`` is :data:`LOCAL` or empty)."""
    if scheduler is None:
        scheduler = os.environ.get(ENV_SCHEDULER) or None
    if scheduler is None or scheduler.strip() in ("", LOCAL):
        return None
    return scheduler.strip()


def _timeout(timeout_s: float | None) -> float:
    if timeout_s is not None:
        return float(timeout_s)
    text = os.environ.get(ENV_TIMEOUT, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ExecutionError(f"${ENV_TIMEOUT}: must be a number of seconds; got {text!r}") from None
    if not value > 0:
        raise ExecutionError(f"${ENV_TIMEOUT}: must be > 0 s; got {text!r}")
    return value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _unreachable(address: str, why: str) -> ExecutionError:
    return ExecutionError(
        f"cannot reach the Dask scheduler at {address} ({why})",
        address=address,
        advice=f"start it with 'dask scheduler', check --scheduler / ${ENV_SCHEDULER}, "
        "or pass --fallback-local",
    )


def _probe(address: str, timeout_s: float) -> None:
    """Check the address's form and, for TCP, that something listens there.

    A ``distributed.Client`` that cannot connect waits the whole timeout and then prints
    tracebacks while it is collected; a plain socket says "refused" at once.
    """
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
    except ValueError as exc:
        raise _unreachable(address, f"not a scheduler address: {exc}") from None
    if scheme not in ("tcp", "tls"):
        return
    try:
        host, port = parse_host_port(location)
    except ValueError as exc:
        raise _unreachable(address, str(exc)) from None
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except ConnectionRefusedError:
        raise _unreachable(address, "connection refused") from None
    except TimeoutError:
        raise _unreachable(address, f"no answer within {timeout_s:g} s") from None
    except socket.gaierror as exc:
        raise _unreachable(address, f"unknown host {host!r}: {exc.strerror}") from None
    except OSError as exc:
        raise _unreachable(address, exc.strerror or _first_line(exc)) from None


def _installed_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("biotwin")
    except PackageNotFoundError:
        return None


def _check_workers(client, address: str) -> None:
    """Refuse workers without biotwin or with another version of it (their results would
    not be this biotwin's)."""
    from importlib.metadata import version

    mine = _installed_version()
    if mine is None:
        return
    found = client.run(version, "biotwin", on_error="return")
    for worker, theirs in sorted(found.items()):
        if isinstance(theirs, BaseException):
            raise ExecutionError(
                f"Dask worker {worker} of {address} cannot run biotwin tasks "
                f"({type(theirs).__name__}: {_first_line(theirs)}): install biotwin "
                f"{mine} there (pip install 'biotwin[cluster]')",
                address=address,
            )
        if theirs != mine:
            raise ExecutionError(
                f"Dask worker {worker} of {address} runs biotwin {theirs}; this is {mine}: "
                "install the same version on every worker",
                address=address,
            )


def _connect(address: str, timeout_s: float):
    """A ``distributed.Client`` of ``address`` with at least one worker.

    Raises
    ------
    ExecutionError
        If distributed is not installed, the scheduler cannot be reached, it has no worker
        within ``timeout_s``, or a worker runs another biotwin.
    """
    try:
        from distributed import Client
    except ImportError:
        raise ExecutionError(
            f"--scheduler {address}: dask.distributed is not installed; "
            "pip install 'biotwin[cluster]'",
            address=address,
        ) from None
    _probe(address, timeout_s)
    try:
        client = Client(address, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise _unreachable(address, _first_line(exc)) from None
    try:
        try:
            client.wait_for_workers(1, timeout=timeout_s)
        except TimeoutError:
            raise ExecutionError(
                f"the Dask scheduler at {address} has no workers (waited {timeout_s:g} s)",
                address=address,
                advice=f"start some with 'dask worker {address} --nthreads 1', or pass "
                "--fallback-local",
            ) from None
        _check_workers(client, address)
    except BaseException:
        client.close()
        raise
    return client


def check_scheduler(scheduler: str | None, *, timeout_s: float | None = None) -> str | None:
    """Connect to the scheduler once and describe it; None when none is configured.

    What ``biotwin up --scheduler`` does before it starts the dashboard.

    Raises
    ------
    ExecutionError
        As :func:`executor` does without a fallback.
    """
    address = resolve_scheduler(scheduler)
    if address is None:
        return None
    client = _connect(address, _timeout(timeout_s))
    try:
        return _describe(address, client.nthreads())
    finally:
        client.close()


def _describe(address: str, nthreads: dict) -> str:
    return f"Dask cluster at {address} ({len(nthreads)} workers, {sum(nthreads.values())} threads)"


def _fallback(fallback_local: bool | None) -> bool:
    if fallback_local is not None:
        return bool(fallback_local)
    return os.environ.get(ENV_FALLBACK, "") == "1"


@contextmanager
def _local_pool(workers: int | None) -> Iterator[Pool]:
    n = max(1, workers or os.cpu_count() or 1)
    if n == 1:
        yield Pool(_InProcess(), slots=1, where="this process")
        return
    # fork where it is safe and fast (Linux), spawn elsewhere
    context = get_context("fork" if sys.platform.startswith("linux") else "spawn")
    inner = ProcessPoolExecutor(n, mp_context=context)
    try:
        yield Pool(inner, slots=n, where=f"local pool of {n} processes")
    except BaseException:
        inner.shutdown(wait=True, cancel_futures=True)
        raise
    inner.shutdown(wait=True)


@contextmanager
def _dask_pool(client, address: str) -> Iterator[Pool]:
    inner = client.get_executor(pure=False)  # a task's key is not a hash of its payload
    nthreads = client.nthreads()
    pool = Pool(inner, slots=sum(nthreads.values()), where=_describe(address, nthreads))
    try:
        yield pool
    except BaseException:
        inner.shutdown(wait=False)  # cancels what is still pending
        raise
    finally:
        client.close()


@contextmanager
def executor(
    scheduler: str | None = None,
    workers: int | None = None,
    *,
    fallback_local: bool | None = None,
    timeout_s: float | None = None,
) -> Iterator[Pool]:
    """Where independent tasks run: the local pool, or a Dask cluster if one is named.

    Parameters
    ----------
    scheduler : str, optional
        A Dask scheduler address (``tcp://HOST:8786``); None: ``$DASK_SCHEDULER_ADDRESS``,
        else the local pool; :data:`LOCAL`: the local pool whatever the environment.
    workers : int, optional
        Local processes (default: all cores; 1 runs in this process). Ignored on a
        cluster: its workers decide.
    fallback_local : bool, optional
        When the scheduler cannot be reached (or has no worker), log a warning and use the
        local pool instead of raising. None: ``$BIOTWIN_FALLBACK_LOCAL`` is ``1``.
    timeout_s : float, optional
        How long to wait for the scheduler and its first worker (default:
        ``$BIOTWIN_SCHEDULER_TIMEOUT_S``, else 10 s).

    Yields
    ------
    Pool
        A ``concurrent.futures.Executor`` with ``slots``, ``where`` and :meth:`Pool.stream`.
        Pending tasks are cancelled if the block raises; the client is closed on exit.

    Raises
    ------
    ExecutionError
        If a scheduler is named and cannot be used (see :func:`check_scheduler`), without
        ``fallback_local``.
    """
    address = resolve_scheduler(scheduler)
    client = None
    if address is not None:
        try:
            client = _connect(address, _timeout(timeout_s))
        except ExecutionError as exc:
            if not _fallback(fallback_local):
                raise
            logger.warning("%s; running on the local pool instead (fallback)", exc.summary)
    if client is None:
        with _local_pool(workers) as pool:
            logger.info("tasks run on the %s", pool.where)
            yield pool
        return
    with _dask_pool(client, address) as pool:
        logger.info("tasks run on the %s", pool.where)
        yield pool
