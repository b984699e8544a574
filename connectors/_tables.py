"""Small append-only tables of the historian, each in its own folder under ``tables/``.

The time series have their day-partitioned segments (:mod:`connectors.historian`); the
tables here hold what is not a (tag, time, number) row and comes in small volumes:
lab results and lot attributes (:mod:`connectors.lab_results`), text values of String tags
and the record of corrected values (:mod:`connectors.receive_store`). Each commit is one
Parquet file written like a historian segment (temporary file, fsync, rename, folder
fsync) with its manifest entry (:func:`connectors.manifest.commit_table`), so a reader
never sees a partial commit, a ``kill -9`` leaves only a temporary file, and damaged
files are quarantined by the same checks (``history verify`` includes these folders).

Readers list a table's files under ``.files.lock`` (shared), check them against the
manifest and read them with DuckDB, with ``filename`` and ``file_row_number`` so that a
reader can say which of two rows of one key was committed first. Nothing here compacts:
at the volumes of lab results, a file per commit stays small.
"""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from connectors import _segments, manifest

__all__ = ["TABLES_DIR", "SideTable"]

logger = logging.getLogger(__name__)

#: Folder of the side tables under the historian's root.
TABLES_DIR = "tables"
_READ_ATTEMPTS = 20
_ALL = "SELECT * EXCLUDE (filename, file_row_number) FROM t"


class SideTable:
    """One append-only table in ``<historian root>/tables/<name>/``.

    Parameters
    ----------
    root : path
        The historian's root (``DATA_DIR/historian``).
    name : str
        The table's folder name.
    schema : pyarrow.Schema
        Columns and types of every commit.
    """

    def __init__(self, root: str | Path, name: str, schema: pa.Schema) -> None:
        self.root = Path(root)
        self.name = name
        self.schema = schema
        self.folder = self.root / TABLES_DIR / name
        self.folder.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"SideTable({self.name!r}, {str(self.folder)!r})"

    def append(self, rows: pd.DataFrame | pa.Table) -> int:
        """Commit ``rows`` (cast to the schema) as one file; returns the number of rows.

        Raises
        ------
        ValueError
            If a column is missing or cannot be cast to the schema's type.
        """
        if isinstance(rows, pd.DataFrame):
            missing = [c for c in self.schema.names if c not in rows.columns]
            if missing:
                raise ValueError(
                    f"{self.name}.{missing[0]}: required column is missing; "
                    f"got columns {list(rows.columns)}"
                )
            table = pa.Table.from_pandas(
                rows[self.schema.names], schema=self.schema, preserve_index=False
            )
        else:
            table = rows.select(self.schema.names).cast(self.schema)
        if table.num_rows == 0:
            return 0
        manifest.commit_table(self.root, table, self.folder / _segments.segment_name())
        return table.num_rows

    def files(self) -> list[Path]:
        """The committed files that pass their checksum check (damaged ones are quarantined)."""
        for _ in range(_READ_ATTEMPTS):
            with _segments.flock(self.root / manifest.LOCK, fcntl.LOCK_SH):
                listed = sorted(self.folder.glob("*.parquet"))
            good, vanished = manifest.check(self.root, listed)
            if not vanished:
                return good
        return good

    def read(self, sql: str = _ALL) -> pd.DataFrame:
        """Run ``sql`` over the table's rows, named ``t`` (with ``filename`` and
        ``file_row_number`` columns); an empty frame of the schema when nothing is stored."""
        for attempt in range(_READ_ATTEMPTS):
            files = self.files()
            if not files:
                return self.schema.empty_table().to_pandas()
            con = duckdb.connect()
            try:
                con.execute("SET TimeZone = 'UTC'")
                listed = "[" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in files) + "]"
                con.execute(
                    "CREATE VIEW t AS SELECT * FROM read_parquet("
                    f"{listed}, filename = true, file_row_number = true, union_by_name = true)"
                )
                return con.execute(sql).df()
            except duckdb.IOException:
                if attempt == _READ_ATTEMPTS - 1:
                    raise
            finally:
                con.close()
        raise AssertionError("unreachable")
