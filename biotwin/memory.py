"""How biotwin's large arrays get their memory: NumPy's transparent-hugepage advice.

On Linux, NumPy asks the kernel for transparent huge pages (``madvise(MADV_HUGEPAGE)``) for
every array of 4 MB or more. Where the kernel's THP ``defrag`` setting is ``madvise`` (the
default of Debian and Ubuntu), a page fault in such an array may compact memory directly,
and model training allocates many short-lived arrays of 50-100 MB (running sums over batch
x bin x tag cubes). Measured on the 2-core reference machine, one set of running sums for
864 batches x 115 bins x 107 tags: 17.7 s of system time with the advice, 1.0 s without it;
training both model families on two plant-years: about 90 s against 55 s
(``benchmarks/bench_quality.py``, docs/quality.md).

biotwin therefore turns the advice off when :mod:`quality` is imported, unless the user has
chosen with NumPy's own switch, ``NUMPY_MADVISE_HUGEPAGE`` (0 or 1), which is then left as
it is (https://numpy.org/devdocs/reference/global_state.html).
"""

from __future__ import annotations

import logging
import os

__all__ = ["hugepage_advice", "prefer_small_pages"]

logger = logging.getLogger(__name__)


def _toggle():
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # NumPy < 2
        from numpy.core.multiarray import _set_madvise_hugepage
    return _set_madvise_hugepage


def hugepage_advice() -> bool:
    """Whether NumPy currently advises huge pages for large arrays."""
    toggle = _toggle()
    current = bool(toggle(False))
    toggle(current)
    return current


def prefer_small_pages() -> bool:
    """Turn NumPy's hugepage advice off unless ``NUMPY_MADVISE_HUGEPAGE`` is set.

    Returns
    -------
    bool
        The advice in force afterwards.
    """
    try:
        if os.environ.get("NUMPY_MADVISE_HUGEPAGE", "").strip() not in ("0", "1"):
            _toggle()(False)
        return hugepage_advice()
    except (ImportError, AttributeError):  # a NumPy without the switch: nothing to change
        logger.debug("NumPy has no hugepage switch; memory advice left as it is")
        return False
