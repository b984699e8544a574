"""NumPy's hugepage advice: off once quality is imported, unless the user chose it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "import quality; from biotwin.memory import hugepage_advice; print(hugepage_advice())"


@pytest.mark.parametrize(
    ("env", "expected"),
    [(None, "False"), ("1", "True"), ("0", "False")],
)
def test_quality_import_turns_hugepage_advice_off_unless_the_user_chose(env, expected):
    environ = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    if env is not None:
        environ["NUMPY_MADVISE_HUGEPAGE"] = env
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=environ, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == expected
