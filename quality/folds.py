"""Cross-validation folds as independent tasks: in this process, or on a Dask cluster.

Model selection fits every candidate on every fold; the folds of one candidate are
independent, pure tasks (data, parameters and the seed in, out-of-fold scores out). They run
through the project's one execution seam (:mod:`biotwin.execution`):

- no scheduler named (no ``scheduler=``, no ``$DASK_SCHEDULER_ADDRESS``): in this process,
  one fold after the other, as before (LightGBM uses both cores inside each fold);
- a scheduler: each fold is a task on the cluster, and the results are put back in fold
  order, so the out-of-fold scores, the choice and the fitted model are the same bytes as in
  this process (tested against a real cluster in tests/test_cluster.py).

Each task ships its fold's training data (docs/cluster.md: the cost is the data's size per
fold; for histories of gigabytes, scatter them to the workers first, not done yet).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence

from biotwin.execution import LOCAL, Pool, executor, resolve_scheduler

__all__ = ["fold_pool", "run_folds"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def fold_pool(scheduler: str | None = None) -> Iterator[Pool]:
    """Where the folds of one fit run: this process, or the cluster ``scheduler`` (or
    ``$DASK_SCHEDULER_ADDRESS``) names.

    Raises
    ------
    biotwin.execution.ExecutionError
        If a scheduler is named and cannot be used.
    """
    address = resolve_scheduler(scheduler)
    if address is None:
        with executor(LOCAL, workers=1) as pool:
            yield pool
        return
    with executor(address) as pool:
        logger.info("cross-validation folds run on the %s", pool.where)
        yield pool


def run_folds(pool: Pool | None, fn: Callable, payloads: Sequence) -> list:
    """``fn(payload)`` for every payload, results in the payloads' order (``pool`` None:
    here and now). Every task is submitted first, so a cluster runs them side by side."""
    if pool is None:
        return [fn(p) for p in payloads]
    futures = [pool.submit(fn, p) for p in payloads]
    return [f.result() for f in futures]
