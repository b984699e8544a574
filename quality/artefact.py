"""The model file: a fitted model as data, never as code (skops format, no pickle).

A model file (``model.skops``) is a zip of a JSON schema and NumPy arrays written by
:mod:`skops.io`; LightGBM boosters are kept as LightGBM's own model text inside it. Loading
builds only the types of an allow-list: numpy, scipy and scikit-learn types that skops
trusts, LightGBM's estimators and booster, and the model classes of this package
(:data:`MODEL_TYPES`). A file that names any other type is refused before anything of it
is built, so a crafted file cannot run code (pickle, which joblib uses, runs whatever the
file names). In the registry the file's bytes are also checked against the signed
fingerprint before this loader sees them (:mod:`quality.registry`).

Files written by earlier versions (``model.joblib``, pickle) are not loaded: train again.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import zipfile
from pathlib import Path

import skops.io as sio

from quality.errors import RegistryError

__all__ = ["LEGACY_FILE", "MODEL_FILE", "MODEL_TYPES", "dump_model", "load_model_bytes"]

logger = logging.getLogger(__name__)

MODEL_FILE = "model.skops"
LEGACY_FILE = "model.joblib"
#: Types a model file may hold besides what skops trusts by default (numpy, scipy,
#: scikit-learn): LightGBM's, and the model classes of quality/.
MODEL_TYPES = frozenset(
    {
        "collections.OrderedDict",
        "lightgbm.basic.Booster",
        "lightgbm.sklearn.LGBMClassifier",
        "lightgbm.sklearn.LGBMRegressor",
        "quality.calibration.Beta",
        "quality.calibration.EvidenceGate",
        "quality.calibration.Identity",
        "quality.calibration.Isotonic",
        "quality.calibration.Platt",
        "quality.calibration.PlattGrid",
        "quality.deviation.DeviationModel",
        "quality.features.BatchFeaturizer",
        "quality.maintenance.MaintenanceModel",
        "quality.maintenance._Regimes",
        "quality.mspc.TrajectoryModel",
        "quality.mspc._GridModel",
        "quality.mspc._PCA",
        "quality.sensors.SensorCheck",
    }
)


def dump_model(model, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` in the skops format (the caller makes it atomic).

    The same model gives the same bytes: skops names the parts of a file by the objects'
    memory addresses and stamps the zip entries with the time; here parts are numbered in
    the order the schema first names them and every entry carries one fixed date.
    """
    path = Path(path)
    path.write_bytes(_canonical(sio.dumps(model)))
    return path


def _canonical(data: bytes) -> bytes:
    """A skops file with its object ids renumbered in schema order and fixed zip dates."""
    src = zipfile.ZipFile(io.BytesIO(data))
    schema = json.loads(src.read("schema.json"))
    ids: dict[int, int] = {}

    def renumber(node):
        if isinstance(node, dict):
            if isinstance(node.get("__id__"), int):
                node["__id__"] = ids.setdefault(node["__id__"], len(ids))
            file = node.get("file")
            if isinstance(file, str) and (m := re.fullmatch(r"(\d+)(\.\w+)", file)):
                node["file"] = f"{ids.setdefault(int(m[1]), len(ids))}{m[2]}"
            for value in node.values():
                renumber(value)
        elif isinstance(node, list):
            for value in node:
                renumber(value)

    renumber(schema)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        entries = {"schema.json": json.dumps(schema, indent=2).encode()}
        for name in src.namelist():
            if name != "schema.json":
                m = re.fullmatch(r"(\d+)(\.\w+)", name)
                entries[f"{ids[int(m[1])]}{m[2]}" if m else name] = src.read(name)
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(info, entries[name])
    return out.getvalue()


def load_model_bytes(data: bytes, where: str):
    """Build the model held by ``data`` (the bytes of a model file read from ``where``).

    Raises
    ------
    RegistryError
        Not a model file, or a file that names a type outside :data:`MODEL_TYPES` (named
        in the message; nothing of the file is built).
    """
    try:
        named = sio.get_untrusted_types(data=data)
    except Exception as exc:  # a zip / schema error of any kind: not a model file
        raise RegistryError(
            f"model: {where} is not a model file in the skops format ({type(exc).__name__}: "
            f"{exc}); refused, not loaded"
        ) from None
    foreign = sorted(set(named) - MODEL_TYPES)
    if foreign:
        raise RegistryError(
            f"model: {where} names types a biotwin model never holds ({', '.join(foreign[:3])}"
            f"{', ...' if len(foreign) > 3 else ''}); refused, not loaded"
        )
    try:
        return sio.loads(data, trusted=list(named))
    except Exception as exc:
        raise RegistryError(
            f"model: {where} cannot be read as a model ({type(exc).__name__}: {exc})"
        ) from None
