"""One schema for all files: column types unified, widened without loss, and notes saying
which columns were widened."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..errors import DataError

__all__ = ["is_numeric", "unify", "widen"]


def is_numeric(dtype: pa.DataType) -> bool:
    """Whether a column of this Arrow type can be used as a numeric feature or target."""
    return (
        pa.types.is_integer(dtype)
        or pa.types.is_floating(dtype)
        or pa.types.is_boolean(dtype)
        or pa.types.is_decimal(dtype)
        or pa.types.is_null(dtype)
    )


def unify(schemas: list[pa.Schema], paths: list[str]) -> tuple[pa.Schema, tuple[str, ...]]:
    """One schema for all files, and a note for every column whose type differs between them.

    Every file must have the same column names. A column's types must be equal, or widen to
    one type without loss (:func:`widen`: int32 to int64, float32 to float64, ...), or be
    numbers of other kinds (read as float64, since every number is decoded to float64 anyway);
    anything else (a string here, a number there) is an error naming both files.
    """
    first = schemas[0]
    fields = {f.name: f for f in first}
    seen: dict[str, dict[pa.DataType, list[str]]] = {  # column -> type -> files with it
        f.name: {f.type: [paths[0]]} for f in first
    }
    for schema, path in zip(schemas[1:], paths[1:], strict=True):
        names = set(schema.names)
        missing = [n for n in first.names if n not in names]
        extra = [n for n in schema.names if n not in fields]
        if missing or extra:
            what = []
            if missing:
                what.append(f"lacks column(s) {', '.join(missing)}")
            if extra:
                what.append(f"has extra column(s) {', '.join(extra)}")
            raise DataError(
                f"schemas disagree: this file {' and '.join(what)} compared with {paths[0]}",
                path=path,
            )
        for f in schema:
            ref = fields[f.name]
            seen[f.name].setdefault(f.type, []).append(path)
            if f.type == ref.type:
                continue
            common = widen(ref.type, f.type)
            if common is None:
                kind, files = next(  # the first file whose type cannot meet this one
                    (t, files) for t, files in seen[f.name].items() if widen(t, f.type) is None
                )
                raise DataError(
                    f"schemas disagree: type {f.type} here but {kind} in {files[0]}",
                    path=path,
                    column=f.name,
                )
            fields[f.name] = ref.with_type(common)
    notes = tuple(
        _widening_note(name, fields[name].type, seen[name])
        for name in first.names
        if len([t for t in seen[name] if not pa.types.is_null(t)]) > 1
    )
    return pa.schema([fields[n] for n in first.names]), notes


def widen(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The type that holds every value of ``a`` and of ``b``: the wider of two integers of the
    same signedness or two floats, a signed integer wide enough for an unsigned one, the other
    type for an all-null column; float64 for other numbers (int64 and float32, int64 and
    uint64, decimals); None when they are not both numbers.

    >>> widen(pa.int32(), pa.int64()), widen(pa.uint8(), pa.int8())
    (DataType(int64), DataType(int16))
    >>> widen(pa.int64(), pa.float32()), widen(pa.string(), pa.float64())
    (DataType(double), None)
    """
    if a.equals(b) or pa.types.is_null(b):
        return a
    if pa.types.is_null(a):
        return b
    ints = pa.types.is_integer(a) and pa.types.is_integer(b)
    if ints and pa.types.is_signed_integer(a) == pa.types.is_signed_integer(b):
        return a if a.bit_width >= b.bit_width else b
    if ints:
        signed, unsigned = (a, b) if pa.types.is_signed_integer(a) else (b, a)
        if signed.bit_width > unsigned.bit_width:
            return signed
        if unsigned.bit_width < 64:
            return pa.from_numpy_dtype(np.dtype(f"int{2 * unsigned.bit_width}"))
    if pa.types.is_floating(a) and pa.types.is_floating(b):
        return a if a.bit_width >= b.bit_width else b
    if is_numeric(a) and is_numeric(b):
        return pa.float64()
    return None


_FILES_NAMED = 3  # a note names this many files of each type, then counts the rest


def _widening_note(name: str, to: pa.DataType, types: dict[pa.DataType, list[str]]) -> str:
    """``column 'x' is read as int64: widened from int32 in a.parquet, b.parquet``."""
    parts = []
    for kind, files in types.items():
        if kind.equals(to) or pa.types.is_null(kind):
            continue
        shown = ", ".join(files[:_FILES_NAMED])
        more = f" and {len(files) - _FILES_NAMED} more file(s)" if len(files) > _FILES_NAMED else ""
        parts.append(f"from {_arrow_name(kind)} in {shown}{more}")
    return f"column {name!r} is read as {_arrow_name(to)}: widened " + "; ".join(parts)


def _arrow_name(kind: pa.DataType) -> str:
    """A type's name as numpy says it (float32, not Arrow's "float")."""
    return f"float{kind.bit_width}" if pa.types.is_floating(kind) else str(kind)
