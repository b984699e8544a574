"""Compressor run to failure: two fault modes (erosion, bearing wear), six operating regimes."""

from __future__ import annotations

from .compressor import make_variant

__all__ = ["DESCRIPTION", "make"]

DESCRIPTION = (
    "Four-stage centrifugal compressor, one row per cycle, run to failure (120-350 cycles), "
    "3 settings + 23 sensors; impeller erosion or bearing wear (half each, seen in different "
    "sensors), six operating regimes drawn per cycle. RUL capped at 125."
)


def make(seed: int = 0, size: str = "full") -> dict:
    """100 training and 100 test units (20 and 20 for ``size="small"``).

    Raises
    ------
    ValueError
        If ``size`` is not "full" or "small".
    """
    data = make_variant(seed + 1000, size, modes=2, regimes=6, prefix="C2")
    data["description"] = DESCRIPTION
    return data
