"""The tag file of ``biotwin receive``: which variables OT writers may push into.

A CSV file (UTF-8, a header line, one line per tag) with the columns (docs/receive.md):

========== ======== ===================================================================
column     required meaning
========== ======== ===================================================================
tag        yes      the name values are stored under; the node id is ``ns=<i>;s=<tag>``
unit       yes      the ISA-95 unit the tag belongs to (``BR-201``): its folder
eng_unit   numbers  the engineering unit, a UNECE Rec. 20 common code (``CEL``)
eu_low     numbers  the EURange: values outside are stored and flagged (2), not refused
eu_high    numbers
data_type  yes      Double, Float, Int32, Boolean or String
description no      shown as the variable's Description
hard_low   no       hard limits: a value outside them is refused with BadOutOfRange
hard_high  no       (either may be given alone)
site, area, line no the ISA-95 levels above the unit (default: the plant config's)
========== ======== ===================================================================

``eng_unit``, ``eu_low`` and ``eu_high`` are required for Double, Float and Int32 tags and
ignored for Boolean and String tags. The whole file is checked before the server starts;
the first broken rule is refused in one line naming the file, the line, the field, the
rule and the bad value (:class:`TagFileError`)::

    tag file tags.csv line 4: eu_high must be a number > eu_low (0.0); got '-5'

Without a tag file the receiver serves the tags of the plant config (every signal of every
unit, Double, with its EURange and engineering unit): :func:`plant_tags`.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from asyncua import ua

__all__ = [
    "COLUMNS",
    "CONTEXT_FIELDS",
    "DATA_TYPES",
    "NUMERIC_TYPES",
    "ReceiveTag",
    "TagFileError",
    "plant_tags",
    "read_tag_file",
    "receive_tags",
]

#: Columns of a tag file, required ones first (see the module docstring).
COLUMNS = (
    "tag",
    "unit",
    "eng_unit",
    "eu_low",
    "eu_high",
    "data_type",
    "description",
    "hard_low",
    "hard_high",
    "site",
    "area",
    "line",
)
REQUIRED = ("tag", "unit", "data_type")
#: data_type -> OPC UA built-in type of the variable
DATA_TYPES = {
    "Double": ua.VariantType.Double,
    "Float": ua.VariantType.Float,
    "Int32": ua.VariantType.Int32,
    "Boolean": ua.VariantType.Boolean,
    "String": ua.VariantType.String,
}
#: data types with an EURange and engineering unit (AnalogItemType variables)
NUMERIC_TYPES = ("Double", "Float", "Int32")
#: per unit, the batch context variables (String), as the ingest understands them
CONTEXT_FIELDS = ("BatchId", "Recipe", "Phase", "State")
MAX_TAG_LENGTH = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class TagFileError(ValueError):
    """A tag file breaks a rule; the message names the file, line, field, rule and value."""


@dataclass(frozen=True)
class ReceiveTag:
    """One variable of the receiver (a row of the tag file, checked)."""

    tag: str
    unit: str
    data_type: str
    eng_unit: str | None = None
    eu_low: float | None = None
    eu_high: float | None = None
    description: str = ""
    hard_low: float | None = None
    hard_high: float | None = None
    site: str | None = None
    area: str | None = None
    line: str | None = None

    @property
    def variant_type(self) -> ua.VariantType:
        return DATA_TYPES[self.data_type]

    @property
    def is_text(self) -> bool:
        return self.data_type == "String"


def _shown(text: object, limit: int = 80) -> str:
    text = str(text)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _number(row: dict, key: str, where: str) -> float | None:
    raw = (row.get(key) or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise TagFileError(f"{where}: {key} must be a finite number; got {_shown(raw)}")
    return value


def _check_row(row: dict, where: str) -> ReceiveTag:
    """One line of the file as a :class:`ReceiveTag`."""
    for key in REQUIRED:
        if not (row.get(key) or "").strip():
            raise TagFileError(f"{where}: {key} is required; got nothing")
    tag = row["tag"].strip()
    if len(tag) > MAX_TAG_LENGTH or _CONTROL.search(tag):
        raise TagFileError(
            f"{where}: tag must be at most {MAX_TAG_LENGTH} characters without control "
            f"characters; got {_shown(tag)} ({len(tag)} characters)"
        )
    data_type = row["data_type"].strip()
    if data_type not in DATA_TYPES:
        raise TagFileError(
            f"{where}: data_type must be one of {', '.join(DATA_TYPES)}; got {_shown(data_type)}"
        )
    eng_unit = (row.get("eng_unit") or "").strip() or None
    low, high = _number(row, "eu_low", where), _number(row, "eu_high", where)
    hard_low, hard_high = _number(row, "hard_low", where), _number(row, "hard_high", where)
    if data_type in NUMERIC_TYPES:
        if eng_unit is None:
            raise TagFileError(f"{where}: eng_unit is required for a {data_type} tag; got nothing")
        if low is None:
            raise TagFileError(f"{where}: eu_low is required for a {data_type} tag; got nothing")
        if high is None or not high > low:
            raise TagFileError(
                f"{where}: eu_high must be a number > eu_low ({low}); "
                f"got {_shown(row.get('eu_high') or '')}"
            )
        if hard_low is not None and hard_high is not None and not hard_high > hard_low:
            raise TagFileError(
                f"{where}: hard_high must be > hard_low ({hard_low}); got {hard_high}"
            )
    else:
        low = high = hard_low = hard_high = None
    text = {k: (row.get(k) or "").strip() or None for k in ("site", "area", "line")}
    return ReceiveTag(
        tag=tag,
        unit=row["unit"].strip(),
        data_type=data_type,
        eng_unit=eng_unit,
        eu_low=low,
        eu_high=high,
        description=(row.get("description") or "").strip(),
        hard_low=hard_low,
        hard_high=hard_high,
        **text,
    )


def _check_unique(specs: list[ReceiveTag], lines: list[int], name: str) -> None:
    """A tag appears once, and no tag is named like a unit's context variable."""
    seen: dict[str, int] = {}
    context = {f"{s.unit}.{f}" for s in specs for f in CONTEXT_FIELDS}
    for spec, line in zip(specs, lines, strict=True):
        where = f"tag file {name} line {line}"
        if spec.tag in seen:
            raise TagFileError(
                f"{where}: tag must be unique; got {spec.tag!r}, already on line {seen[spec.tag]}"
            )
        if spec.tag in context:
            raise TagFileError(
                f"{where}: tag must not be named like a unit's batch context variable "
                f"(<unit>.{'/'.join(CONTEXT_FIELDS)}); got {spec.tag!r}"
            )
        seen[spec.tag] = line


def read_tag_file(path: str | Path) -> pd.DataFrame:
    """Read and check a tag file; returns one row per tag with the :data:`COLUMNS`.

    Raises
    ------
    TagFileError
        The file is missing or unreadable, an unknown or missing column, a bad value (the
        first one, with its line), a tag twice.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise TagFileError(f"tag file {path}: cannot be read ({exc})") from None
    reader = csv.DictReader(io.StringIO(text), skipinitialspace=True)
    header = [h.strip() for h in reader.fieldnames or []]
    reader.fieldnames = header
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise TagFileError(
            f"tag file {path.name} line 1: column must be one of {', '.join(COLUMNS)}; "
            f"got {_shown(unknown[0])}"
        )
    for key in REQUIRED:
        if key not in header:
            raise TagFileError(
                f"tag file {path.name} line 1: column {key} is required; got columns {header}"
            )
    specs, lines = [], []
    for row in reader:
        line = reader.line_num
        if None in row or any(v is None for v in row.values()):
            raise TagFileError(
                f"tag file {path.name} line {line}: must have {len(header)} fields as the "
                f"header; got {len([v for v in row.values() if v is not None])}"
            )
        if not any((v or "").strip() for v in row.values()):
            continue
        specs.append(_check_row(row, f"tag file {path.name} line {line}"))
        lines.append(line)
    if not specs:
        raise TagFileError(f"tag file {path.name}: must hold at least one tag; got none")
    _check_unique(specs, lines, path.name)
    return frame(specs)


def frame(specs: list[ReceiveTag]) -> pd.DataFrame:
    """Tags as a DataFrame with the :data:`COLUMNS` (what ``read_tag_file`` returns)."""
    return pd.DataFrame([{c: getattr(s, c) for c in COLUMNS} for s in specs], columns=COLUMNS)


def plant_tags(config=None) -> pd.DataFrame:
    """The plant config's tags as a tag table (Double, EURange, engineering unit).

    Parameters
    ----------
    config : twin.config.PlantConfig, optional
        Default: the shipped plant.
    """
    if config is None:
        from twin.config import load_config

        config = load_config()
    plant = config.plant
    specs = []
    for unit in config.units:
        for sig in config.unit_classes[unit.unit_class].signals:
            specs.append(
                ReceiveTag(
                    tag=sig.tag.format(n=unit.loop_number),
                    unit=unit.id,
                    data_type="Double",
                    eng_unit=sig.eng_unit,
                    eu_low=float(sig.low),
                    eu_high=float(sig.high),
                    description=sig.description,
                    site=plant.site,
                    area=plant.area,
                    line=plant.line,
                )
            )
    return frame(specs)


def _optional(value) -> float | str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def receive_tags(tags: pd.DataFrame, *, site: str, area: str, line: str) -> list[ReceiveTag]:
    """The rows of a tag table as :class:`ReceiveTag` s, the ISA-95 levels filled in with
    ``site``, ``area`` and ``line`` where the table leaves them empty."""
    out = []
    for row in tags.to_dict("records"):
        values = {c: _optional(row.get(c)) for c in COLUMNS}
        values["description"] = values["description"] or ""
        values["site"] = values["site"] or site
        values["area"] = values["area"] or area
        values["line"] = values["line"] or line
        out.append(ReceiveTag(**values))
    return out
