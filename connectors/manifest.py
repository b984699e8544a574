"""Checksums of the historian's files: a manifest per folder, a check before every read,
and a quarantine for what fails it.

Every committed Parquet file of the historian (day segments, compacted files, batch context,
``tags.parquet``) has an entry in the ``manifest.jsonl`` of its folder, one JSON object a
line, the last line about a file winning::

    {"name":"seg-....parquet","sha256":"9f2c...","size":81234,"rows":3000,
     "first":"2026-03-01T00:00:00+00:00","last":"2026-03-01T00:59:00+00:00"}

``first`` and ``last`` (the time span of the rows: min and max of the ``time`` column) are
recorded for files that have one (day segments, compacted files), so that the rows of a
quarantined segment can be read again from the server's history
(:meth:`connectors.ingest.Ingest` recovers them, :func:`mark_recovered` records it).

How an entry lands with its file: the file is written and fsynced under a temporary name,
hashed, then -- holding ``.files.lock`` exclusively, the lock under which readers list
files -- renamed into place and its entry appended to the manifest in one ``write``, and
the folder fsynced. A reader lists files under the same lock (shared), so it never lists a
file whose entry is not written yet. A deletion (compaction, quarantine) rewrites the
manifest without the deleted files (temporary file, ``os.replace``). A crash between the
rename and the append leaves a file without an entry (a crash inside the append, a torn
last line, which is skipped); such a file, and every file written before manifests
existed, is checked by reading its Parquet footer and adopted: hashed, its entry written.

Before a file is read it is checked: its size, then its sha256, against the entry. The
verdict is cached in this process by (path, inode, mtime, size), so each file is hashed
once per process; damage that changes none of these (bit rot under an unchanged mtime) is
found by the next process or by :func:`verify`. A file that fails is moved to
``<root>/quarantine/`` with a JSON note beside it (what was wrong, when, rows expected),
logged as a warning, and shown as an alarm (:func:`connectors.alarms.historian_alarms`);
the read goes on with the other files.

Exceptions: none of its own; a damaged file is never an error for the caller.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from connectors import _segments

__all__ = [
    "LOCK",
    "MANIFEST",
    "QUARANTINE",
    "Finding",
    "check",
    "commit",
    "commit_table",
    "forget",
    "mark_recovered",
    "quarantine",
    "quarantined",
    "read_manifest",
    "remove",
    "stored_files",
    "verify",
]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
QUARANTINE = "quarantine"
LOCK = ".files.lock"
MISSING = "listed in the manifest but missing from the disk"
_CHUNK = 1 << 20
_HASH_THREADS = min(4, os.cpu_count() or 1)

# folder -> {file name: (inode, mtime_ns, size) when it last passed its check here}
_VERDICTS: dict[str, dict[str, tuple[int, int, int]]] = {}
# manifest path -> ((inode, mtime_ns, size), its entries)
_MANIFESTS: dict[str, tuple[tuple[int, int, int], dict[str, dict]]] = {}


@dataclass(frozen=True)
class Finding:
    """The outcome of checking one file.

    ``problem`` is empty for a good file; ``moved_to`` is where a bad one went (None if it
    is missing); ``rows_expected`` comes from its manifest entry (None without one).
    """

    path: Path
    problem: str = ""
    moved_to: Path | None = None
    rows_expected: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problem


def _signature(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _remember(path: Path, sig: tuple[int, int, int]) -> None:
    _VERDICTS.setdefault(str(path.parent), {})[path.name] = sig


def _forget_gone(files: list[Path]) -> None:
    """Drop the cached verdicts of files no longer listed in their folder (compacted away
    by another process), so that a long-running reader's cache does not grow. ``files``
    lists whole folders (as every caller of :func:`check` does)."""
    listed: dict[str, set[str]] = {}
    for p in files:
        listed.setdefault(str(p.parent), set()).add(p.name)
    for folder, names in listed.items():
        cached = _VERDICTS.get(folder)
        if cached is not None and len(cached) > len(names):
            for name in [n for n in cached if n not in names]:
                cached.pop(name, None)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat()


def _table_span(table: pa.Table) -> dict:
    """``{"first", "last"}`` of a table's ``time`` column (empty without one)."""
    if "time" not in table.column_names or table.num_rows == 0:
        return {}
    if not pa.types.is_timestamp(table.schema.field("time").type):
        return {}
    span = pc.min_max(table["time"])
    if not span["min"].is_valid:
        return {}
    return {"first": _iso(span["min"].as_py()), "last": _iso(span["max"].as_py())}


def _footer_span(meta: pq.FileMetaData) -> dict:
    """``{"first", "last"}`` from the ``time`` column's statistics (empty if any row group
    has none): a compacted or adopted file, whose table is not at hand."""
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    if "time" not in names or meta.num_rows == 0:
        return {}
    col = names.index("time")
    lows, highs = [], []
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(col).statistics
        if meta.row_group(i).num_rows == 0:
            continue
        if stats is None or not stats.has_min_max or not isinstance(stats.min, datetime):
            return {}
        lows.append(stats.min)
        highs.append(stats.max)
    if not lows:
        return {}
    first, last = min(lows), max(highs)
    if first.tzinfo is None:  # a time column without a time zone: taken as UTC
        first, last = first.replace(tzinfo=UTC), last.replace(tzinfo=UTC)
    return {"first": _iso(first), "last": _iso(last)}


def _entry(path: Path, rows: int | None, span: dict | None = None) -> dict:
    if rows is None:
        meta = pq.read_metadata(path)
        rows, span = meta.num_rows, _footer_span(meta)
    entry = {"sha256": _sha256(path), "size": path.stat().st_size, "rows": int(rows)}
    return {**entry, **(span or {})}


# ---------------------------------------------------------------------- the manifest
def _parse(text: str, path: Path) -> dict[str, dict]:
    """The entries of a manifest's lines: the last line about a file wins; a line that
    does not parse (the torn tail of an append cut by a crash) is skipped."""
    files: dict[str, dict] = {}
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line:
            continue
        try:
            record = json.loads(line)
            name = record.pop("name")
        except (ValueError, KeyError, TypeError, AttributeError):
            if i < len(lines) - 1:  # not a tail still being written: worth a line in the log
                logger.warning("historian: manifest %s line %d unreadable; skipped", path, i + 1)
            continue
        files[name] = record
    return files


def read_manifest(folder: Path, *, fresh: bool = False) -> dict[str, dict]:
    """The entries of ``folder``'s manifest, ``{file name: {sha256, size, rows}}``.

    A missing manifest has no entries; unreadable lines are skipped (their files are then
    adopted again from their footers). Cached by the manifest's inode, mtime and size
    unless ``fresh``.
    """
    path = folder / MANIFEST
    try:
        sig = _signature(path.stat())
    except FileNotFoundError:
        return {}
    cached = _MANIFESTS.get(str(path))
    if not fresh and cached is not None and cached[0] == sig:
        return cached[1]
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return {}
    files = _parse(text, path)
    _MANIFESTS[str(path)] = (sig, files)
    return files


def _append(folder: Path, name: str, entry: dict) -> None:
    """Add one entry: one line, one ``write`` (the caller holds ``.files.lock``
    exclusively). An append does not replace the file, so it costs no flush of its own;
    the caller fsyncs the folder, and entries lost to a power cut only mean adoptions."""
    path = folder / MANIFEST
    line = json.dumps({"name": name, **entry}, separators=(",", ":")) + "\n"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = "\n" + line  # after the torn tail of a crashed append
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _write_manifest(folder: Path, files: dict[str, dict]) -> None:
    """Rewrite ``folder``'s manifest with ``files`` only (temporary file, ``os.replace``;
    the caller holds ``.files.lock`` exclusively): after deletions, so that it stays short.
    """
    path = folder / MANIFEST
    tmp = path.with_name(f"{MANIFEST}.{os.getpid()}-{_segments.next_number()}.tmp")
    body = "".join(
        json.dumps({"name": name, **entry}, separators=(",", ":")) + "\n"
        for name, entry in sorted(files.items())
    )
    try:
        tmp.write_text(body)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def commit(
    root: Path,
    path: Path,
    write: Callable[[Path], None],
    rows: int | None = None,
    span: dict | None = None,
) -> None:
    """Commit ``path`` (``write(tmp)`` makes it) together with its manifest entry.

    Parameters
    ----------
    root : Path
        The historian's root (where ``.files.lock`` is).
    path : Path
        The file to commit.
    write : callable
        Writes the file's content to the temporary path it is given.
    rows : int, optional
        Rows in the file (read from its footer, with the span, if not given).
    span : dict, optional
        ``{"first", "last"}``: the ISO UTC times of the file's first and last rows.
    """

    def land(tmp: Path) -> None:
        entry = _entry(tmp, rows, span)
        with _segments.flock(root / LOCK, fcntl.LOCK_EX):
            if path.exists():  # a file replaced in place (tags.parquet): one entry, not more
                files = dict(read_manifest(path.parent, fresh=True))
                os.replace(tmp, path)
                _write_manifest(path.parent, {**files, path.name: entry})
            else:
                os.replace(tmp, path)
                _append(path.parent, path.name, entry)
        with contextlib.suppress(OSError):
            _remember(path, _signature(path.stat()))

    _segments.write_atomic(path, write, land=land)


def commit_table(root: Path, table: pa.Table, path: Path) -> None:
    """Commit ``table`` as the Parquet file ``path`` with its manifest entry (with the
    span of its ``time`` column, if it has one)."""
    commit(
        root,
        path,
        lambda tmp: _segments.write_parquet(table, tmp),
        rows=table.num_rows,
        span=_table_span(table),
    )


def remove(root: Path, paths: Iterable[Path]) -> None:
    """Delete committed files and their entries, under ``.files.lock`` (exclusive)."""
    by_folder: dict[Path, list[Path]] = {}
    for p in paths:
        by_folder.setdefault(p.parent, []).append(p)
    with _segments.flock(root / LOCK, fcntl.LOCK_EX):
        for folder, gone in by_folder.items():
            for p in gone:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                _VERDICTS.get(str(p.parent), {}).pop(p.name, None)
            files = dict(read_manifest(folder, fresh=True))
            if any(p.name in files for p in gone):
                for p in gone:
                    files.pop(p.name, None)
                _write_manifest(folder, files)


def forget(paths: Iterable[Path]) -> None:
    """Drop cached verdicts: the next check of these files hashes them again."""
    for p in paths:
        _VERDICTS.get(str(p.parent), {}).pop(p.name, None)


# ---------------------------------------------------------------------- checking
def _problem(path: Path, entry: dict, size: int) -> str:
    """What is wrong with ``path`` against its entry ("" if nothing)."""
    if size != entry.get("size"):
        return f"size is {size} bytes; the manifest says {entry.get('size')}"
    found = _sha256(path)
    if found != entry.get("sha256"):
        return f"sha256 is {found[:16]}...; the manifest says {str(entry.get('sha256'))[:16]}..."
    return ""


def _adopt(root: Path, path: Path) -> tuple[str, dict | None]:
    """Check a file without an entry by its Parquet footer; record its entry if it is good.

    Returns (problem, entry): the entry found or made, None if the footer is unreadable.
    """
    try:
        entry = _entry(path, None)
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as exc:
        return f"no manifest entry and its Parquet footer is unreadable ({exc})", None
    with _segments.flock(root / LOCK, fcntl.LOCK_EX):
        files = dict(read_manifest(path.parent, fresh=True))
        if path.name in files:  # its writer recorded it meanwhile: compare with that
            known = files[path.name]
            same = known.get("sha256") == entry["sha256"] and known.get("size") == entry["size"]
            return ("" if same else _problem(path, known, entry["size"])), known
        if not path.exists():
            raise FileNotFoundError(path)
        _append(path.parent, path.name, entry)
    logger.info("historian: adopted %s (%d rows) into its manifest", path, entry["rows"])
    return "", entry


def _check_one(root: Path, path: Path, trust_cache: bool) -> Finding | None:
    """None if ``path`` vanished (compacted away); else its finding (moved if bad)."""
    try:
        st = path.stat()
        sig = _signature(st)
        if trust_cache and _VERDICTS.get(str(path.parent), {}).get(path.name) == sig:
            return Finding(path)
        entry = read_manifest(path.parent).get(path.name)
        if entry is None:
            problem, entry = _adopt(root, path)
        else:
            problem = _problem(path, entry, st.st_size)
    except FileNotFoundError:
        return None
    if not problem:
        _remember(path, sig)
        return Finding(path, rows_expected=entry.get("rows") if entry else None)
    return quarantine(root, path, problem, entry)


def check(root: Path, files: list[Path], *, trust_cache: bool = True) -> tuple[list[Path], bool]:
    """The files of ``files`` that pass their check, and whether any vanished meanwhile.

    Bad files are quarantined (see the module docstring). A vanished file was deleted by a
    compaction after the listing: the caller lists again to find the file holding its rows.
    """
    _forget_gone(files)
    found = _check_all(root, files, trust_cache)
    good = [f.path for f in found if f is not None and f.ok]
    return good, any(f is None for f in found)


def _cached(path: Path) -> bool:
    try:
        return _VERDICTS.get(str(path.parent), {}).get(path.name) == _signature(path.stat())
    except FileNotFoundError:
        return False


def _check_all(root: Path, files: list[Path], trust_cache: bool) -> list[Finding | None]:
    """:func:`_check_one` of each file, in order; the files to hash are hashed in
    ``_HASH_THREADS`` threads (hashlib releases the GIL) when there are several."""
    todo = [p for p in files if not (trust_cache and _cached(p))]
    if len(todo) < 4 or _HASH_THREADS < 2:
        return [_check_one(root, p, trust_cache) for p in files]
    with ThreadPoolExecutor(_HASH_THREADS, thread_name_prefix="historian-hash") as pool:
        done = dict(zip(todo, pool.map(lambda p: _check_one(root, p, False), todo), strict=True))
    return [done[p] if p in done else Finding(p) for p in files]


# ---------------------------------------------------------------------- quarantine
def _note_path(moved: Path) -> Path:
    return moved.with_name(moved.name + ".json")


def _confirm(path: Path, files: dict[str, dict]) -> tuple[str | None, dict | None]:
    """What is wrong with ``path`` now, against the fresh manifest ``files`` (the caller
    holds the lock exclusively, so no commit or compaction is half-way): "" if nothing
    (a file replaced while it was checked, as ``tags.parquet`` is), None if it is gone
    without an entry."""
    entry = files.get(path.name)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return (None, None) if entry is None else (MISSING, entry)
    if entry is not None:
        return _problem(path, entry, size), entry
    try:
        pq.read_metadata(path)
    except (OSError, pa.ArrowException) as exc:
        return f"no manifest entry and its Parquet footer is unreadable ({exc})", None
    return "", None


def _span_of_note(relative: str, entry: dict | None) -> dict:
    """The span a quarantine note copies from the entry (what the ingest can recover), or,
    for a data segment whose entry has none (written before spans were recorded), why not.
    """
    if entry and entry.get("first") and entry.get("last"):
        return {"first_time": entry["first"], "last_time": entry["last"]}
    if not relative.startswith("segments/"):
        return {}
    return {
        "first_time": None,
        "last_time": None,
        "recovery": "no time span in its manifest entry: cannot be recovered automatically",
    }


def quarantine(root: Path, path: Path, problem: str, entry: dict | None) -> Finding | None:
    """Move a bad file to ``<root>/quarantine/`` with a JSON note; drop its entry.

    The problem is confirmed first, holding ``.files.lock`` exclusively, so that a race
    with a writer never quarantines a good file. A file listed in its manifest but absent
    from the disk gets a note too. Returns the finding (``ok`` if the problem did not
    hold), or None if the file vanished without a trace (a compaction deleted it and its
    entry, or another process quarantined it first).
    """
    folder = root / QUARANTINE
    folder.mkdir(exist_ok=True)
    relative = path.relative_to(root).as_posix()
    moved: Path | None = folder / relative.replace("/", "__")
    if moved.exists() or _note_path(moved).exists():
        moved = moved.with_name(f"{time.time_ns()}-{moved.name}")
    note_path = _note_path(moved)
    with _segments.flock(root / LOCK, fcntl.LOCK_EX):
        files = dict(read_manifest(path.parent, fresh=True))
        problem, entry = _confirm(path, files)
        if problem is None:
            return None
        if not problem:
            return Finding(path, rows_expected=entry.get("rows") if entry else None)
        if problem == MISSING:
            moved = None
        else:
            os.replace(path, moved)
        if files.pop(path.name, None) is not None:
            _write_manifest(path.parent, files)
    _VERDICTS.get(str(path.parent), {}).pop(path.name, None)
    rows = entry.get("rows") if entry else None
    note = {
        "file": relative,
        "quarantined_as": moved.relative_to(root).as_posix() if moved else None,
        "problem": problem,
        "detected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows_expected": rows,
        "size_expected": entry.get("size") if entry else None,
        "sha256_expected": entry.get("sha256") if entry else None,
        "detected_by_pid": os.getpid(),
        **_span_of_note(relative, entry),
    }
    _segments.write_atomic(note_path, lambda tmp: tmp.write_text(json.dumps(note, indent=2)))
    logger.warning(
        "historian: %s is damaged (%s); moved to %s, %s rows expected",
        relative,
        problem,
        note["quarantined_as"] or "nowhere (missing)",
        rows if rows is not None else "unknown",
    )
    return Finding(path, problem, moved, rows)


def quarantined(root: Path) -> list[dict]:
    """The notes of ``<root>/quarantine/``, oldest first (unreadable notes skipped)."""
    notes = []
    for path in sorted((root / QUARANTINE).glob("*.json")):
        try:
            note = json.loads(path.read_text())
        except (OSError, ValueError):
            logger.warning("historian: quarantine note %s unreadable", path)
            continue
        if isinstance(note, dict):
            notes.append({**note, "note": path.relative_to(root).as_posix()})
    return sorted(notes, key=lambda n: (str(n.get("detected_at")), n["note"]))


def mark_recovered(
    root: Path, note: str, *, endpoint: str, tags: Iterable[str], values: int
) -> dict:
    """Record in the quarantine note ``note`` (its path under ``root``) that the values of
    ``tags`` in its span were read again from ``endpoint`` (``values`` of them were
    missing and are stored again).

    The note keeps its record: ``recovered_at`` (UTC, the latest recovery),
    ``values_recovered`` (summed over recoveries), ``endpoint`` and ``recovered_tags``
    (sorted, the union). Read, changed and written again (temporary file, ``os.replace``)
    under ``.files.lock``, so that two ingests (shards) recovering their tags at once
    both count. Returns the note as written.

    Raises
    ------
    FileNotFoundError
        If the note is gone (an operator cleared the quarantine).
    ValueError
        If the note is not a JSON object.
    """
    path = Path(root) / note
    with _segments.flock(Path(root) / LOCK, fcntl.LOCK_EX):
        body = json.loads(path.read_text())
        if not isinstance(body, dict):
            raise ValueError(f"quarantine note {note}: must be a JSON object; got {body!r:.80}")
        body["recovered_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body["values_recovered"] = int(body.get("values_recovered") or 0) + int(values)
        body["endpoint"] = endpoint
        body["recovered_tags"] = sorted({*body.get("recovered_tags", []), *tags})
        _segments.write_atomic(path, lambda tmp: tmp.write_text(json.dumps(body, indent=2)))
    return body


# ---------------------------------------------------------------------- verify
def stored_files(root: Path) -> list[Path]:
    """Every committed Parquet file of the historian (segments, batch context, the side
    tables of :mod:`connectors._tables`, tags)."""
    with _segments.flock(root / LOCK, fcntl.LOCK_SH):
        files = sorted((root / "segments").glob("date=*/*.parquet"))
        files += sorted((root / "batches").glob("*.parquet"))
        files += sorted((root / "tables").glob("*/*.parquet"))  # connectors/_tables.py
        files += [p for p in (root / "tags.parquet",) if p.exists()]
    return files


def verify(root: Path) -> list[Finding]:
    """Check every file against its manifest, ignoring cached verdicts.

    Bad files are quarantined; entries whose file is missing are reported and dropped
    (with a note in the quarantine). Returns one finding per file checked or missing.
    """
    root = Path(root)
    out = [f for f in _check_all(root, stored_files(root), False) if f is not None]
    folders = [root, root / "batches", *sorted((root / "segments").glob("date=*"))]
    folders += sorted(p for p in (root / "tables").glob("*") if p.is_dir())
    for folder in folders:
        for name, entry in sorted(read_manifest(folder, fresh=True).items()):
            path = folder / name
            if not path.exists():
                found = quarantine(root, path, MISSING, entry)
                if found is not None:
                    out.append(found)
    return out
