"""Files on disk for the historian: unique names, atomic commits, abandoned writes, locks.

A file is committed by writing ``<name>.<pid>-<n>.tmp``, fsyncing it, renaming it onto
``<name>`` (atomic on POSIX) and fsyncing the directory: a reader sees the whole file or
nothing, and a ``kill -9`` leaves at most a ``.tmp`` file, which :func:`remove_abandoned`
deletes once its writer is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "STALE_TMP_S",
    "flock",
    "remove_abandoned",
    "replacement_name",
    "segment_name",
    "write_atomic",
    "write_parquet",
    "write_table",
]

logger = logging.getLogger(__name__)

#: A temporary file whose writer's pid is alive is still removed after this long (pid reuse).
STALE_TMP_S = 3600.0
ROW_GROUP = 1 << 20
_COUNTER = itertools.count()
_COUNTER_LOCK = threading.Lock()


def next_number() -> int:
    """A number unique in this process (thread-safe)."""
    with _COUNTER_LOCK:
        return next(_COUNTER)


def segment_name(prefix: str = "seg") -> str:
    """A name no other writer (process or thread) can choose: time, pid and a counter."""
    return f"{prefix}-{time.time_ns():020d}-{os.getpid()}-{next_number():06d}.parquet"


#: Names of replacement segments start with this: it sorts before ``cmp-`` and ``seg-``.
REPLACEMENT_PREFIX = "arp-"
_NS_CEILING = 10**20


def replacement_name() -> str:
    """A name for a segment of replacement rows (``Historian.append(..., replace=True)``).

    It sorts before every compacted (``cmp-``) and ordinary (``seg-``) segment, and a later
    replacement sorts before an earlier one (the time is counted down from 10**20 ns), so
    that the first-file-wins de-duplication of the queries shows the newest replacement.
    """
    countdown = _NS_CEILING - time.time_ns()
    return f"{REPLACEMENT_PREFIX}{countdown:020d}-{os.getpid()}-{next_number():06d}.parquet"


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's) data and metadata to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path, write: Callable[[Path], None], *, land: Callable[[Path], None] | None = None
) -> None:
    """Commit a file: ``write(tmp)``, fsync, rename onto ``path``, fsync the directory.

    The temporary name carries the writer's pid so that a later open can tell an
    abandoned file (its writer is gone) from one being written right now. ``land(tmp)``,
    if given, does the rename itself (with what must land with it: a manifest entry).
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{next_number()}.tmp")
    try:
        write(tmp)
        fsync_path(tmp)
        if land is None:
            os.replace(tmp, path)
        else:
            land(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        fsync_path(path.parent)


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write ``table`` as a Parquet file (zstd, large row groups); not atomic by itself."""
    pq.write_table(table, path, compression="zstd", row_group_size=ROW_GROUP)


def write_table(table: pa.Table, path: Path) -> None:
    """Commit ``table`` as the Parquet file ``path``, see :func:`write_atomic`."""
    write_atomic(path, lambda tmp: write_parquet(table, tmp))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tmp_writer(name: str) -> int | None:
    """The pid in ``<name>.<pid>-<n>.tmp``, or None for a name of another form."""
    parts = name.rsplit(".", 2)
    pid = parts[-2].split("-", 1)[0] if len(parts) == 3 else ""
    return int(pid) if pid.isdigit() else None


def is_abandoned(tmp: Path, now: float) -> bool:
    """True if the temporary file's writer is gone (or it is older than ``STALE_TMP_S``)."""
    pid = tmp_writer(tmp.name)
    try:
        age = now - tmp.stat().st_mtime
    except FileNotFoundError:
        return False  # its writer just renamed it
    if pid is not None and pid_alive(pid):
        return age > STALE_TMP_S
    return True


@contextlib.contextmanager
def flock(path: Path, mode: int) -> Iterator[bool]:
    """Hold ``flock(mode)`` on ``path``; yields False if ``LOCK_NB`` was given and it is taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def remove_abandoned(root: Path) -> None:
    """Delete the temporary files under ``root`` whose writer is gone."""
    now = time.time()
    for tmp in root.rglob("*.tmp"):
        if is_abandoned(tmp, now):
            with contextlib.suppress(OSError):
                tmp.unlink()
                logger.warning("historian: removed an unfinished write %s", tmp)
