"""Output of the external shuffle: a stream of tables written as Parquet part files of a fixed
number of rows, in row groups of a fixed size, with at most one row group waiting in memory."""

from __future__ import annotations

import contextlib
import os

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["PartWriter", "output_options", "COMPRESSION"]

COMPRESSION = "snappy"


def output_options(schema: pa.Schema) -> dict:
    """Snappy, and dictionary encoding for text and categorical columns only: it is what
    shrinks them, while on numeric columns it rarely pays and its encoder holds ~1.6 MB per
    column between row groups (pyarrow 26), more than a row group of a few columns."""
    text = [
        f.name
        for f in schema
        if pa.types.is_string(f.type)
        or pa.types.is_large_string(f.type)
        or pa.types.is_binary(f.type)
        or pa.types.is_large_binary(f.type)
        or pa.types.is_dictionary(f.type)
    ]
    return {"compression": COMPRESSION, "use_dictionary": text or False}


class PartWriter:
    """Writes a stream of tables as files of ``rows_per_file`` rows in row groups of exactly
    ``row_group_size`` rows (shorter only at the end of a file), named ``part-00000.parquet``
    and on. At most one row group waits in memory."""

    def __init__(
        self, directory: str, schema: pa.Schema, rows_per_file: int, row_group_size: int
    ) -> None:
        self.directory, self.schema = directory, schema
        self.rows_per_file, self.row_group_size = rows_per_file, row_group_size
        self.names: list[str] = []
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._file_rows = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def write(self, table: pa.Table) -> None:
        offset = 0
        while offset < table.num_rows:
            target = min(self.row_group_size, self.rows_per_file - self._file_rows)
            piece = table.slice(offset, target - self._pending_rows)
            self._pending.append(piece)
            self._pending_rows += piece.num_rows
            offset += piece.num_rows
            if self._pending_rows == target:
                self._flush()

    def close(self) -> list[str]:
        """Write what waits and close the last file; the names of the files written."""
        self._flush()
        if self._writer is None and not self.names:  # no rows: one empty file keeps the schema
            self._open()
        self._close_file()
        return self.names

    def abort(self) -> None:
        """Close an open file after a failure (its directory is about to be removed)."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None

    def _open(self) -> None:
        self.names.append(f"part-{len(self.names):05d}.parquet")
        path = os.path.join(self.directory, self.names[-1])
        self._writer = pq.ParquetWriter(path, self.schema, **output_options(self.schema))

    def _flush(self) -> None:
        if not self._pending_rows:
            return
        if self._writer is None:
            self._open()
        assert self._writer is not None
        self._writer.write_table(
            pa.concat_tables(self._pending), row_group_size=self.row_group_size
        )
        self._file_rows += self._pending_rows
        self.rows += self._pending_rows
        self._pending, self._pending_rows = [], 0
        if self._file_rows == self.rows_per_file:
            self._close_file()

    def _close_file(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._writer, self._file_rows = None, 0
        with open(os.path.join(self.directory, self.names[-1]), "rb+") as fh:
            os.fsync(fh.fileno())
