"""One Arrow column as float values: the conversions every decoder shares (see
:mod:`streamgd.decode`), and :func:`to_matrix`, which writes a piece's columns one at a time
into a column-major matrix.

A piece is anything with ``num_rows`` and ``column(name)``: an Arrow table or record batch,
or a row group read one column at a time (:class:`streamgd.sources.RowGroupColumns`), so that
Arrow holds one column's memory at a time instead of the whole piece's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa

__all__ = [
    "ConvertedColumns",
    "as_float",
    "float_array",
    "float_values",
    "integer_values",
    "to_matrix",
]


def to_matrix(
    table,
    columns: Sequence[str],
    out: np.ndarray | None = None,
    *,
    center: np.ndarray | None = None,
    check: Callable[[int, np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Decode the named columns into one float matrix, nulls as NaN.

    Column-major, since Arrow data is columnar: filling a Fortran-ordered matrix one contiguous
    column at a time is several times faster than a row-major one. With ``out`` (a
    Fortran-ordered float64 or float32 matrix with at least ``num_rows`` rows) the result is a
    view of it: reusing warm memory avoids the page faults that dominate filling a freshly
    allocated matrix. Without, a new float64 matrix.

    With ``center``, ``center[j]`` is subtracted from column ``j`` before the values are stored,
    so a float32 matrix keeps full relative precision of the centred values even for float64
    data with a large offset (a float32 column is centred in float32: ``center`` should then be
    float32-representable, as the statistics pass makes it).

    ``check(j, values)`` sees column ``j``'s raw values first and returns them, clipped, or
    raises (the ``--outliers`` bounds, see :func:`streamgd.features.outliers.guard`).
    """
    n = table.num_rows
    out = np.empty((n, len(columns)), dtype=np.float64, order="F") if out is None else out[:n]
    for j, name in enumerate(columns):
        col = table.column(name)
        if pa.types.is_integer(col.type):
            values = integer_values(col)
        else:
            values = float_values(col if pa.types.is_floating(col.type) else as_float(col))
        if check is not None:
            values = check(j, values)
        c = 0.0 if center is None else center[j]
        # an infinity or NaN is the row preparation's to report, not numpy's to warn about
        with np.errstate(invalid="ignore", over="ignore"):
            if not c:
                out[:, j] = values
            else:  # one pass: 3x faster than a copy followed by an in-place subtract
                if values.dtype == out.dtype:  # subtract in that precision, not via float64
                    c = out.dtype.type(c)
                np.subtract(values, c, out=out[:, j], casting="same_kind")
    return out


def float_array(values: np.ndarray) -> pa.Array:
    """A 1-d float array as an Arrow array without nulls (NaN stays NaN) sharing its memory,
    as ``pa.array(values)`` makes it but without the conversion that imports pandas (see
    :func:`float_values`): predictions, for the file they are written to.

    >>> float_array(np.array([0.5, np.nan])).type
    DataType(double)
    """
    values = np.ascontiguousarray(values)
    buffers = [None, pa.py_buffer(values)]
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), buffers)


def float_values(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A floating-point column's values as a numpy array, nulls as NaN: a read-only view of
    its buffer when it is one chunk without nulls. Not ``to_numpy``: pyarrow's conversion
    imports pandas whenever it is installed (0.2 s and 30 MB that training never uses).

    >>> float_values(pa.chunked_array([[1.5, None], [3.0]], pa.float32()))
    array([1.5, nan, 3. ], dtype=float32)
    """
    values, valid = _buffer_values(col)
    if valid is None:
        return values
    # (Arrow's own fill_null would convert a Python NaN: pandas again)
    return np.where(valid, values, values.dtype.type("nan"))


def integer_values(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An integer column's values as float64, nulls as NaN: each the nearest float64, as
    Arrow's cast rounds it (exact up to 2**53 in magnitude), converted by numpy from the
    column's buffer, so that integer features need no Arrow compute functions (7 MiB of RSS).

    >>> integer_values(pa.chunked_array([[2**53 + 1, None], [3]]))
    array([9.00719925e+15,            nan, 3.00000000e+00])
    """
    values, valid = _buffer_values(col)
    values = values.astype(np.float64)
    if valid is not None:
        values[~valid] = np.nan
    return values


def _buffer_values(col: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray | None]:
    """A fixed-width column's values as a read-only view of its (one) data buffer, in its own
    numpy type, and a mask of its valid values (None without nulls)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    dtype = np.dtype(col.type.to_pandas_dtype())
    validity, data = col.buffers()[:2]
    n, offset = len(col), col.offset
    if data is None:  # no rows
        return np.empty(0, dtype=dtype), None
    values = np.frombuffer(data, dtype=dtype, count=n, offset=offset * dtype.itemsize)
    if not col.null_count:
        return values, None
    bits = np.unpackbits(np.frombuffer(validity, np.uint8), bitorder="little")
    return values, bits[offset : offset + n].astype(bool)


# seconds per unit of Arrow's time units
_SECONDS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def as_float(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """A numeric column as float64, nulls kept:

    - integers: rounded to the nearest float64 (exact up to 2**53 in magnitude; beyond,
      the nearest of the float64 values, which are 2**(e-52) apart: a relative error below
      1.2e-16, as any float64 arithmetic has);
    - decimals: through their text, so each is the float64 nearest its exact value;
    - timestamps: seconds since 1970-01-01 00:00 UTC (the instant, whatever the time zone);
      dates: seconds since the epoch at midnight UTC; times of day: seconds since midnight;
      durations: seconds; fractions of a second kept as fractions;
    - booleans: 0 and 1.

    >>> as_float(pa.array([2**53 + 1, 3])).to_pylist()
    [9007199254740992.0, 3.0]
    >>> import datetime
    >>> as_float(pa.array([datetime.date(1970, 1, 2)])).to_pylist()
    [86400.0]
    """
    import pyarrow.compute as pc  # not on the common path: float columns need none

    kind = col.type
    if pa.types.is_decimal(kind):
        return pc.cast(pc.cast(col, pa.string()), pa.float64())
    if pa.types.is_date32(kind):
        return pc.multiply(pc.cast(pc.cast(col, pa.int32()), pa.float64()), 86400.0)
    if pa.types.is_date64(kind):
        return pc.divide(pc.cast(pc.cast(col, pa.int64()), pa.float64(), safe=False), 1000.0)
    if pa.types.is_timestamp(kind) or pa.types.is_time(kind) or pa.types.is_duration(kind):
        width = pa.int32() if kind.bit_width == 32 else pa.int64()
        ticks = pc.cast(pc.cast(col, width), pa.float64(), safe=False)
        per_second = _SECONDS[kind.unit]
        return ticks if per_second == 1 else pc.divide(ticks, float(per_second))
    return pc.cast(col, pa.float64(), safe=False)


class ConvertedColumns:
    """A piece read one column at a time (``num_rows``, ``schema``, ``column(name)``) whose
    columns named in ``converters`` come out converted (``convert(column, path, first_row)``:
    labels to codes), each as it is read."""

    def __init__(
        self, piece, converters: Mapping[str, Callable], path: str, first_row: int
    ) -> None:
        self._piece, self._converters = piece, converters
        self._where = (path, first_row)
        self.num_rows, self.schema = piece.num_rows, piece.schema

    def column(self, name: str):
        col = self._piece.column(name)
        convert = self._converters.get(name)
        return col if convert is None else convert(col, *self._where)
