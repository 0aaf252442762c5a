"""One schema for all files: column types unified, widened without loss, and notes saying
which columns were widened."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..errors import DataError

__all__ = ["is_numeric", "unify", "widen", "check_unique", "MISSING_IN", "missing_in"]

# Field metadata key of a column that some files lack: the paths of those files, one a line.
MISSING_IN = b"streamgd.missing_in"


def missing_in(field: pa.Field) -> list[str]:
    """The files that lack this column of a unified schema (empty: every file has it)."""
    meta = field.metadata or {}
    return meta[MISSING_IN].decode().split("\n") if MISSING_IN in meta else []


def is_numeric(dtype: pa.DataType) -> bool:
    """Whether a column of this Arrow type can be used as a numeric feature or target:
    numbers, booleans, and times (timestamps, dates, times of day and durations, as seconds:
    see :func:`streamgd.decode.as_float`)."""
    return (
        pa.types.is_integer(dtype)
        or pa.types.is_floating(dtype)
        or pa.types.is_boolean(dtype)
        or pa.types.is_decimal(dtype)
        or pa.types.is_null(dtype)
        or pa.types.is_temporal(dtype)
    )


def unify(schemas: list[pa.Schema], paths: list[str]) -> tuple[pa.Schema, tuple[str, ...]]:
    """One schema for all files, and a note for every column whose type differs between them
    or that some files lack.

    A column's types must be equal, or widen to one type without loss (:func:`widen`: int32
    to int64, float32 to float64, ...), or be numbers of other kinds (read as float64, since
    every number is decoded to float64 anyway); anything else (a string here, a number there)
    is an error naming both files. Two columns of one name in a file are an error. A column
    that only some files have is kept, marked with the files that lack it
    (:func:`missing_in`): it is left out of the default features, and naming it as a feature,
    target or categorical column is an error naming such a file.
    """
    # each distinct schema once (thousands of files usually share a few): in the order of
    # its first file, with the indices of the files that have it
    distinct: dict[pa.Schema, list[int]] = {}
    for i, schema in enumerate(schemas):
        distinct.setdefault(schema, []).append(i)
    for schema, where in distinct.items():
        check_unique(schema.names, paths[where[0]])
    fields: dict[str, pa.Field] = {}
    seen: dict[str, dict[pa.DataType, list[int]]] = {}  # column -> type -> files with it
    for schema, where in distinct.items():
        path = paths[where[0]]
        for f in schema:
            if f.name not in fields:
                fields[f.name] = f
                seen[f.name] = {f.type: list(where)}
                continue
            ref = fields[f.name]
            seen[f.name].setdefault(f.type, []).extend(where)
            if f.type == ref.type:
                continue
            common = widen(ref.type, f.type)
            if common is None:
                kind, files = next(  # the first file whose type cannot meet this one
                    (t, files) for t, files in seen[f.name].items() if widen(t, f.type) is None
                )
                raise DataError(
                    f"schemas disagree: type {f.type} here but {kind} in {paths[min(files)]}",
                    path=path,
                    column=f.name,
                )
            fields[f.name] = ref.with_type(common)
    named = {
        name: {t: [paths[i] for i in sorted(files)] for t, files in types.items()}
        for name, types in seen.items()
    }
    notes = [
        _widening_note(name, fields[name].type, named[name])
        for name in fields
        if len([t for t in seen[name] if not pa.types.is_null(t)]) > 1
    ]
    for name, f in fields.items():
        lacking = sorted(
            i for schema, where in distinct.items() if name not in schema.names for i in where
        )
        if lacking:
            lacking_paths = [paths[i] for i in lacking]
            meta = {**(f.metadata or {}), MISSING_IN: "\n".join(lacking_paths)}
            fields[name] = f.with_metadata(meta)
            notes.append(_partial_note(name, lacking_paths, len(paths)))
    return pa.schema(list(fields.values())), tuple(notes)


def check_unique(names: list[str], path: str) -> None:
    """Two columns of one name: which would a feature be? An error naming them."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(
            f"duplicate column name(s) {', '.join(map(repr, repeated))}; rename them so that "
            "each column has its own name",
            path=path,
        )


def _partial_note(name: str, lacking: list[str], n_files: int) -> str:
    shown = ", ".join(lacking[:_FILES_NAMED])
    more = f" and {len(lacking) - _FILES_NAMED} more" if len(lacking) > _FILES_NAMED else ""
    return (
        f"column {name!r} is not in {len(lacking)} of {n_files} files ({shown}{more}): "
        "it is left out of the default features"
    )


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
