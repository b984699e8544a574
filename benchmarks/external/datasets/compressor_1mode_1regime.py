"""Compressor run to failure: one fault mode (impeller erosion), one operating regime."""

from __future__ import annotations

from .compressor import make_variant

__all__ = ["DESCRIPTION", "make"]

DESCRIPTION = (
    "Four-stage centrifugal compressor, one row per cycle, run to failure (120-350 cycles), "
    "3 settings + 23 sensors; impeller erosion only, one operating regime. Test units stop at a "
    "random cycle; RUL capped at 125."
)


def make(seed: int = 0, size: str = "full") -> dict:
    """100 training and 100 test units (20 and 20 for ``size="small"``).

    Raises
    ------
    ValueError
        If ``size`` is not "full" or "small".
    """
    data = make_variant(seed, size, modes=1, regimes=1, prefix="C1")
    data["description"] = DESCRIPTION
    return data
