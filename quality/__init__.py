"""biotwin quality: early deviation prediction for QA and failure prediction for maintenance.

The pieces, each named after what it does for the plant:

- :mod:`quality.data`: the tables the models read (batch histories, run-to-failure
  histories), from files a user brings or from the twin's output, validated with clear errors.
- :mod:`quality.features`: per-tag trajectory features at a batch progress, golden-batch
  envelope, controller saturation, bad-quality time.
- :mod:`quality.mspc`: batch multivariate statistical process control (multiway PCA,
  Hotelling T2 and SPE against normal-batch limits) with a logistic classifier on top.
- :mod:`quality.selection`: grouped cross-validation and the choice among candidate pipelines.
- :mod:`quality.calibration`: calibration maps chosen by cross-validation, with guards.
- :mod:`quality.deviation`: the batch deviation model (probability, class, CQA intervals).
- :mod:`quality.maintenance`: the asset model (failure within a horizon, remaining life).
- :mod:`quality.explain`, :mod:`quality.sensors`: reasons in words and sensor-health gating.
- :mod:`quality.registry`, :mod:`quality.drift`, :mod:`quality.report`: governance.

See docs/quality.md for the data contracts and the validation protocol.
"""

from biotwin.memory import prefer_small_pages

# large short-lived arrays: no transparent-hugepage advice (see biotwin.memory)
prefer_small_pages()
