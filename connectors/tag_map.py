"""The tag map: which OPC UA node the ingest stores under which tag name.

``biotwin ingest URL --tag-map FILE`` reads a CSV file (a header line, then one line per
tag) or a TOML file (one ``[[tag]]`` table per tag) with the columns or keys:

- ``node_id`` (required): an OPC UA node id as text, ``ns=2;s=Tank.Level`` or ``ns=2;i=1001``;
- ``tag`` (required): the name the values are stored under;
- ``unit`` (optional): the ISA-95 unit the tag belongs to (``BR-201``);
- ``eng_unit`` (optional): the engineering unit, when the server does not give one;
- ``deadband`` (optional): an absolute data-change deadband, a finite number >= 0.

The whole file is checked before anything is read from a server or written to the
historian; the first broken rule is refused in one line naming the file, the line, the field,
the rule and the bad value (:class:`TagMapError`, an :class:`~connectors.ingest.IngestError`)::

    tag map tags.csv line 3: deadband must be a finite number >= 0; got 'abc'

Rules: the file is UTF-8 CSV (``.csv``, ``.txt``) or TOML (``.toml``) and holds at least one
tag; every column or key is one of the five above; every CSV line has as many fields as the
header and every quote is closed; ``node_id`` parses as a node id; ``tag`` is non-empty, at
most 200 characters and holds no control characters; a tag name and a node id each appear
once (two nodes under one name would be stored as one tag, under one of their units).
"""

from __future__ import annotations

import csv
import io
import math
import re
import tomllib
from pathlib import Path

from asyncua import ua

from connectors.ingest import IngestError, TagSpec

__all__ = ["COLUMNS", "TagMapError", "read_tag_map"]

#: the columns (CSV) or keys (TOML) a tag map may have; the first two are required
COLUMNS = ("node_id", "tag", "unit", "eng_unit", "deadband")
MAX_TAG_LENGTH = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TOML_TABLE = re.compile(r"^\s*\[\[\s*tag\s*\]\]")
_TOML_AT = re.compile(r"\(at line (\d+), column (\d+)\)")


class TagMapError(IngestError, ValueError):
    """A tag map breaks a rule; the message names the file, line, field, rule and value."""


def _shown(text: str, limit: int = 80) -> str:
    """A bad value as a message shows it (quoted, cut to ``limit`` characters)."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _location_text(line: int | None, table: int | None) -> str:
    if table is not None:
        return f" [[tag]] #{table}" + (f" (line {line})" if line is not None else "")
    return f" line {line}" if line is not None else ""


def _check_row(row: dict, where: str) -> TagSpec:
    """One row of the map (keys from :data:`COLUMNS`) as a :class:`TagSpec`."""

    def text(key: str, required: bool) -> str | None:
        value = row.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise TagMapError(f"{where}: {key} is required; got nothing")
            return None
        if not isinstance(value, str):
            raise TagMapError(f"{where}: {key} must be text; got {value!r}")
        return value.strip()

    node_id, tag = text("node_id", True), text("tag", True)
    try:
        ua.NodeId.from_string(node_id)
    except ua.UaError:
        raise TagMapError(
            f"{where}: node_id must be an OPC UA node id such as ns=2;s=Name or ns=2;i=1001; "
            f"got {_shown(node_id)}"
        ) from None
    if len(tag) > MAX_TAG_LENGTH or _CONTROL.search(tag):
        raise TagMapError(
            f"{where}: tag must be at most {MAX_TAG_LENGTH} characters without control "
            f"characters; got {_shown(tag)} ({len(tag)} characters)"
        )
    deadband = row.get("deadband")
    if isinstance(deadband, str):
        deadband = deadband.strip() or None
    if deadband is not None:
        try:
            number = float(deadband) if not isinstance(deadband, bool) else math.nan
        except ValueError:
            number = math.nan
        if not (math.isfinite(number) and number >= 0):
            raise TagMapError(f"{where}: deadband must be a finite number >= 0; got {deadband!r}")
        deadband = number
    return TagSpec(
        node_id=node_id,
        tag=tag,
        unit=text("unit", False),
        eng_unit=text("eng_unit", False),
        deadband=deadband,
    )


def _unique(specs: list[TagSpec], places: list[str], name: str) -> None:
    """Refuse a tag name, or a node id, that appears twice."""
    seen_tag: dict[str, int] = {}
    seen_node: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if spec.tag in seen_tag:
            j = seen_tag[spec.tag]
            raise TagMapError(
                f"tag map {name}{places[i]}: tag must be unique; got {spec.tag!r} for node "
                f"{spec.node_id}, already the name of node {specs[j].node_id} "
                f"({places[j].strip()})"
            )
        if spec.node_id in seen_node:
            j = seen_node[spec.node_id]
            raise TagMapError(
                f"tag map {name}{places[i]}: node_id must be unique; got {spec.node_id} for "
                f"tag {spec.tag!r}, already mapped to tag {specs[j].tag!r} ({places[j].strip()})"
            )
        seen_tag[spec.tag] = i
        seen_node[spec.node_id] = i


def _columns(names: list[str], name: str, where: str, word: str = "column") -> None:
    """Refuse an unknown column (CSV) or key (TOML), or a missing required one."""
    unknown = [c for c in names if c not in COLUMNS]
    if unknown:
        raise TagMapError(
            f"tag map {name}{where}: {word}s must be among {', '.join(COLUMNS)}; "
            f"got {_shown(unknown[0])}"
        )
    for required in COLUMNS[:2]:
        if required not in names:
            raise TagMapError(
                f"tag map {name}{where}: {word} {required} is required; got {word}s "
                f"{', '.join(names) or 'none'}"
            )


def _csv_rows(text: str, name: str) -> tuple[list[dict], list[str]]:
    """The rows of a CSV map, each with the place (`` line N``) it starts on."""
    lines = text.splitlines()
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for fields in reader:
            if any(f.strip() for f in fields):
                records.append((start, fields))
            start = reader.line_num + 1
    except csv.Error as exc:
        shown = _shown(lines[start - 1]) if start <= len(lines) else "the end of the file"
        if "unexpected end of data" in str(exc):
            raise TagMapError(
                f"tag map {name} line {start}: a quoted field must end with a closing quote; "
                f"got an open quote in {shown} that runs to the end of the file"
            ) from None
        raise TagMapError(
            f"tag map {name} line {start}: must be valid CSV ({exc}); got {shown}"
        ) from None
    if not records:
        raise TagMapError(
            f"tag map {name} line 1: must start with a header line "
            f"({','.join(COLUMNS)}); got {'an empty file' if not text.strip() else 'no fields'}"
        )
    (head_line, header), body = records[0], records[1:]
    header = [h.strip() for h in header]
    _columns(header, name, f" line {head_line}")
    if not body:
        raise TagMapError(
            f"tag map {name} line {head_line + 1}: at least one tag is needed after the header; "
            "got none"
        )
    rows, places = [], []
    for line, fields in body:
        if len(fields) != len(header):
            raise TagMapError(
                f"tag map {name} line {line}: must have {len(header)} fields like the header "
                f"({','.join(header)}); got {len(fields)} in {_shown(lines[line - 1])}"
            )
        rows.append(dict(zip(header, fields, strict=True)))
        places.append(f" line {line}")
    return rows, places


def _toml_rows(text: str, name: str) -> tuple[list[dict], list[str]]:
    """The ``[[tag]]`` tables of a TOML map, each with its place (`` [[tag]] #N (line L)``)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_AT.search(str(exc))
        if found is None:
            raise TagMapError(f"tag map {name}: must be valid TOML; got {exc}") from None
        line, column = int(found[1]), int(found[2])
        lines = text.splitlines()
        shown = _shown(lines[line - 1]) if line <= len(lines) else "the end of the file"
        reason = str(exc)[: found.start()].strip()
        raise TagMapError(
            f"tag map {name} line {line}: must be valid TOML ({reason} at column {column}); "
            f"got {shown}"
        ) from None
    other = [k for k in data if k != "tag"]
    if other:
        raise TagMapError(
            f"tag map {name}: the only top-level key must be [[tag]] tables; got {other[0]!r}"
        )
    tables = data.get("tag")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        got = "an empty file" if not text.strip() else repr(tables)[:80]
        raise TagMapError(f"tag map {name}: must hold one or more [[tag]] tables; got {got}")
    heads = [i + 1 for i, line in enumerate(text.splitlines()) if _TOML_TABLE.match(line)]
    places = []
    for i, table in enumerate(tables, start=1):
        place = _location_text(heads[i - 1] if len(heads) == len(tables) else None, i)
        _columns(list(table), name, place, "key")
        places.append(place)
    return tables, places


def read_tag_map(path: str | Path) -> list[TagSpec]:
    """Read and check a tag map (CSV or TOML; the rules are in the module docstring).

    Parameters
    ----------
    path : str or Path
        The tag map file.

    Returns
    -------
    list of TagSpec
        One per line or table, in file order.

    Raises
    ------
    TagMapError
        The file is missing, unreadable, not UTF-8, empty, malformed, or a row breaks a
        rule; the message names the file, the line, the field, the rule and the bad value.
    """
    path = Path(path)
    name = path.name
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".txt", ".toml"):
        raise TagMapError(f"tag map {path}: must be a .csv or .toml file; got {suffix or 'none'}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise TagMapError(f"tag map {path}: cannot read the file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise TagMapError(
            f"tag map {name} line {line}: must be UTF-8 text; got byte "
            f"0x{exc.object[exc.start]:02x}"
        ) from None
    rows, places = _toml_rows(text, name) if suffix == ".toml" else _csv_rows(text, name)
    specs = [
        _check_row(row, f"tag map {name}{place}") for row, place in zip(rows, places, strict=True)
    ]
    _unique(specs, places, name)
    return specs
