"""In-memory sources that can be read again: a pyarrow Table or RecordBatch, a pandas or polars
DataFrame, a numpy ``X`` (with ``y``).

Each is read like a Parquet file whose row groups are slices of :data:`MEMORY_ROWS` rows: a
Table is sliced without copying, a DataFrame or an array is converted one slice at a time, so
the whole source is never copied (the Arrow pieces in flight are the slices the training holds
anyway). The column types are fixed up front (a DataFrame's from its dtypes, object columns from
their first non-null values), and a slice that does not convert to them is a
:class:`~streamgd.errors.DataError` naming the source, the row and the column.

A reader's :meth:`digest` hashes the whole content, slice by slice, so a checkpoint resumed on a
changed frame is refused like one resumed on a changed file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import DataError, UsageError

__all__ = ["MEMORY_ROWS", "MemoryReader", "ArrowReader", "PandasReader", "NumpyReader"]

MEMORY_ROWS = 65_536  # rows per slice ("row group") of an in-memory source


class MemoryReader:
    """What every re-readable in-memory source gives: a ``name`` used where a file's path would
    be (messages, fingerprints, the holdout split), the fixed ``schema``, ``num_rows``,
    ``nbytes`` and slices as Arrow tables."""

    kind = "in-memory data"
    name: str
    schema: pa.Schema
    num_rows: int
    nbytes: int

    def read(self, start: int, stop: int, columns: Sequence[str]) -> pa.Table:
        raise NotImplementedError

    def _digest_slice(self, start: int, stop: int) -> bytes:
        """Bytes that identify rows ``start:stop`` (hashed by :meth:`digest`)."""
        table = self.read(start, stop, self.schema.names).combine_chunks()
        batches = table.to_batches()
        return b"".join(b.serialize().to_pybytes() for b in batches)

    def digest(self) -> str:
        """SHA-256 of the schema, the row count and every slice's content."""
        h = hashlib.sha256(str(self.schema).encode())
        h.update(str(self.num_rows).encode())
        for start in range(0, self.num_rows, MEMORY_ROWS):
            h.update(self._digest_slice(start, min(start + MEMORY_ROWS, self.num_rows)))
        return h.hexdigest()


class ArrowReader(MemoryReader):
    """A pyarrow Table (or RecordBatch), sliced without copying."""

    kind = "pyarrow.Table"

    def __init__(self, table: pa.Table | pa.RecordBatch, name: str) -> None:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        self.table = _plain_columns(table)
        self.name, self.schema = name, self.table.schema
        self.num_rows, self.nbytes = self.table.num_rows, self.table.nbytes

    def read(self, start: int, stop: int, columns: Sequence[str]) -> pa.Table:
        return self.table.slice(start, stop - start).select(_present(columns, self.schema))


class PandasReader(MemoryReader):
    """A pandas DataFrame, converted to Arrow one slice at a time (the index is not a column)."""

    kind = "pandas.DataFrame"

    def __init__(self, frame: Any, name: str) -> None:
        _check_names(frame.columns, name)
        self.frame, self.name = frame, name
        self.schema = _pandas_schema(frame, name)
        self.num_rows = len(frame)
        self.nbytes = int(frame.memory_usage(index=False, deep=False).sum())
        # numpy-backed number columns, read by slicing their arrays (no pandas per slice)
        self._arrays = {
            name: frame[name].to_numpy()
            for name in frame.columns
            if isinstance(frame[name].dtype, np.dtype) and frame[name].dtype.kind in "biuf"
        }

    def read(self, start: int, stop: int, columns: Sequence[str]) -> pa.Table:
        columns = _present(columns, self.schema)
        part = None if all(c in self._arrays for c in columns) else self.frame.iloc[start:stop]
        arrays = [self._column(part, name, start, stop) for name in columns]
        return pa.Table.from_arrays(
            arrays, schema=pa.schema([self.schema.field(c) for c in columns])
        )

    def _column(self, part: Any, name: str, start: int, stop: int) -> pa.Array:
        kind = self.schema.field(name).type
        values = self._arrays.get(name)
        if values is not None:  # NaN is a missing value in pandas: a null, as from_pandas says
            values = values[start:stop]
            nan = values.dtype.kind == "f" and bool(np.isnan(values).any())
            return pa.array(values, type=kind, from_pandas=nan)
        try:
            return pa.Array.from_pandas(part[name], type=kind)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            row = start + _first_bad(part[name], kind)
            raise DataError(
                f"cannot convert {part[name].iloc[row - start]!r} to {kind}, the type of the "
                f"column's first values ({_short(exc)})",
                path=self.name,
                row=row + 1,  # rows count from 1 in messages, as in files
                column=name,
            ) from None

    def digest(self) -> str:
        """SHA-256 of the schema, the row count and every column's content: a number column's
        bytes, any other column's pandas hashes (by slice)."""
        import pandas as pd

        h = hashlib.sha256(str(self.schema).encode())
        h.update(str(self.num_rows).encode())
        for name in self.frame.columns:
            values = self._arrays.get(name)
            if values is not None:
                h.update(memoryview(np.ascontiguousarray(values)).cast("B"))
                continue
            column = self.frame[name]
            for start in range(0, self.num_rows, MEMORY_ROWS):
                part = column.iloc[start : start + MEMORY_ROWS]
                h.update(pd.util.hash_pandas_object(part, index=False).to_numpy().tobytes())
        return h.hexdigest()


class NumpyReader(MemoryReader):
    """A 2-D numpy ``X`` whose columns are named ``x0``, ``x1``, ... (or ``names``) and, when
    given, a 1-D ``y`` (named ``target``) as one more column."""

    kind = "numpy array"

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray | None,
        name: str,
        *,
        names: Sequence[str] | None = None,
        target: str = "y",
    ) -> None:
        if x.ndim != 2:
            raise UsageError(f"{name}: X must be 2-D (rows, features), got shape {x.shape}")
        if y is not None and (y.ndim != 1 or len(y) != len(x)):
            raise UsageError(
                f"{name}: y must be 1-D with one value per row of X ({len(x)}), got shape {y.shape}"
            )
        self.x, self.y, self.name = x, y, name
        self.names = (
            tuple(names) if names is not None else tuple(f"x{j}" for j in range(x.shape[1]))
        )
        if len(self.names) != x.shape[1]:
            raise UsageError(f"{name}: {len(self.names)} names for {x.shape[1]} columns of X")
        fields = [pa.field(n, _numpy_type(x.dtype, name)) for n in self.names]
        if y is not None:
            if target in self.names:
                raise UsageError(f"{name}: the target name {target!r} is also a column of X")
            self.target = target
            fields.append(pa.field(target, _label_type(y)))
        _check_names([f.name for f in fields], name)
        self.schema = pa.schema(fields)
        self.num_rows = len(x)
        self.nbytes = x.nbytes + (0 if y is None else y.nbytes)

    def read(self, start: int, stop: int, columns: Sequence[str]) -> pa.Table:
        arrays = []
        columns = _present(columns, self.schema)
        for name in columns:
            if self.y is not None and name == self.target:
                arrays.append(pa.array(self.y[start:stop], type=self.schema.field(name).type))
            else:
                arrays.append(pa.array(self.x[start:stop, self.names.index(name)]))
        return pa.Table.from_arrays(
            arrays, schema=pa.schema([self.schema.field(c) for c in columns])
        )

    def _digest_slice(self, start: int, stop: int) -> bytes:
        part = np.ascontiguousarray(self.x[start:stop]).tobytes()
        if self.y is None:
            return part
        y = self.y[start:stop]
        return part + (y.tobytes() if y.dtype != object else repr(y.tolist()).encode())


def _present(columns: Sequence[str], schema: pa.Schema) -> list[str]:
    """The ``columns`` this source has: in a list of sources, a column some lack is read as
    the files of a dataset read it (the decoder names the source that lacks a used one)."""
    return [c for c in columns if c in schema.names]


def _plain_columns(table: pa.Table) -> pa.Table:
    """Dictionary-encoded columns (pandas categoricals, polars' categoricals) as their values:
    the pipeline reads plain columns, as from Parquet."""
    if not any(pa.types.is_dictionary(f.type) for f in table.schema):
        return table
    columns = [
        col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col
        for col in table.columns
    ]
    return pa.table(columns, names=table.column_names)


def _check_names(names: Sequence[Any], source: str) -> None:
    seen: set[str] = set()
    for name in names:
        if not isinstance(name, str):
            raise UsageError(
                f"{source}: column names must be strings, got {name!r} "
                f"({type(name).__name__}); rename the columns"
            )
        if name in seen:
            raise UsageError(f"{source}: the column name {name!r} appears twice")
        seen.add(name)


def _pandas_schema(frame: Any, source: str) -> pa.Schema:
    """Arrow types for a DataFrame's columns without converting it whole: from the dtypes, and
    for an object column from its first non-null values (like the first block of a CSV file)."""
    fields = []
    for name in frame.columns:
        column = frame[name]
        head = column.iloc[:MEMORY_ROWS]
        if column.dtype == object:
            first = column.first_valid_index()
            if first is not None:
                at = frame.index.get_loc(first)
                head = column.iloc[at : at + MEMORY_ROWS] if isinstance(at, int) else head
        try:
            kind = pa.Array.from_pandas(head).type
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise _mixed(column, head, source, name, exc) from None
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if pa.types.is_null(kind):
            kind = pa.float64()  # a column with no value at all: nulls of a number
        fields.append(pa.field(name, kind))
    return pa.schema(fields)


def _mixed(column: Any, head: Any, source: str, name: str, exc: BaseException) -> DataError:
    """The error for an object column whose first values have no one Arrow type: the first
    value that does not convert to the type of the column's first value."""
    first = head.first_valid_index()
    try:
        at = column.index.get_loc(first)
        kind = pa.Array.from_pandas(column.iloc[at : at + 1]).type
    except (pa.ArrowException, TypeError, ValueError, KeyError):
        return DataError(
            f"the column's values have no Arrow type ({_short(exc)})", path=source, column=name
        )
    row = _first_bad(column, kind)
    return DataError(
        f"cannot convert {column.iloc[row]!r} to {kind}, the type of the column's first value",
        path=source,
        row=row + 1,  # rows count from 1 in messages, as in files
        column=name,
    )


def _first_bad(column: Any, kind: pa.DataType) -> int:
    """The position of the first value of ``column`` that does not convert to ``kind``."""
    for i, value in enumerate(column.to_numpy(dtype=object)):
        try:
            pa.array([value], type=kind, from_pandas=True)
        except (pa.ArrowException, TypeError, ValueError):
            return i
    return 0


def _numpy_type(dtype: np.dtype, source: str) -> pa.DataType:
    if dtype.kind not in "biuf":
        raise UsageError(f"{source}: X must hold numbers (bool, int or float), got dtype {dtype}")
    return pa.from_numpy_dtype(dtype)


def _label_type(y: np.ndarray) -> pa.DataType:
    if y.dtype.kind in "biuf":
        return pa.from_numpy_dtype(y.dtype)
    kind = pa.array(y[:MEMORY_ROWS]).type
    return pa.float64() if pa.types.is_null(kind) else kind


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
