"""Registry of the external data sets, each module exposing ``make(seed=0, size="full")``.

``BATCH`` data sets return long batch series with outcomes (label, fault type, fault start);
``DEGRADATION`` data sets return run-to-failure tables with test units cut before failure.
"""

from __future__ import annotations

from . import (
    cho_fedbatch,
    cho_fedbatch_few,
    compressor_1mode_1regime,
    compressor_2modes_6regimes,
    ecoli_hcd,
    exo_reactor,
    membrane_fouling,
)

__all__ = ["ALL", "BATCH", "DEGRADATION"]

BATCH = {
    "cho_fedbatch": cho_fedbatch,
    "cho_fedbatch_few": cho_fedbatch_few,
    "ecoli_hcd": ecoli_hcd,
    "exo_reactor": exo_reactor,
}
DEGRADATION = {
    "compressor_1mode_1regime": compressor_1mode_1regime,
    "compressor_2modes_6regimes": compressor_2modes_6regimes,
    "membrane_fouling": membrane_fouling,
}
ALL = {**BATCH, **DEGRADATION}
