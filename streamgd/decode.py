"""Decoding: Arrow columns of a unit's piece into a float matrix (:func:`to_matrix`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["to_matrix"]


def to_matrix(
    table: pa.Table | pa.RecordBatch,
    columns: Sequence[str],
    out: np.ndarray | None = None,
    *,
    center: np.ndarray | None = None,
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
    """
    n = table.num_rows
    out = np.empty((n, len(columns)), dtype=np.float64, order="F") if out is None else out[:n]
    for j, name in enumerate(columns):
        col = table.column(name)
        if not pa.types.is_floating(col.type):
            col = pc.cast(col, pa.float64())
        values = (
            col.to_numpy()
            if isinstance(col, pa.ChunkedArray)
            else col.to_numpy(zero_copy_only=False)
        )
        c = 0.0 if center is None else center[j]
        if not c:
            out[:, j] = values
        else:  # one pass: 3x faster than a copy followed by an in-place subtract
            if values.dtype == out.dtype:  # subtract in that precision, not via float64
                c = out.dtype.type(c)
            np.subtract(values, c, out=out[:, j], casting="same_kind")
    return out
