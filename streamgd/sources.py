"""Sources: resolve paths to Parquet/CSV files, fix one schema up front, decode pieces to numpy.

The unit of reading is a :class:`Unit`: one row group of a Parquet file, or one whole CSV file
(a CSV file has no row groups, so it is streamed block by block with pyarrow's CSV reader). Nothing
here ever reads a whole Parquet file or a whole dataset at once.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .errors import DataError, UsageError

__all__ = [
    "FORMATS",
    "SourceFile",
    "Unit",
    "Dataset",
    "open_dataset",
    "resolve_paths",
    "is_numeric",
    "to_matrix",
]

PARQUET_EXTENSIONS = (".parquet", ".parq", ".pq")
CSV_EXTENSIONS = (".csv", ".tsv", ".csv.gz", ".csv.bz2", ".csv.zst", ".tsv.gz")
FORMATS = ("auto", "parquet", "csv")
CSV_BLOCK_SIZE = 4 << 20  # bytes of text per decoded CSV block
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class SourceFile:
    """One input file and the metadata that identifies it (used in fingerprints)."""

    path: str
    format: str
    size: int
    row_groups: tuple[int, ...] = ()  # rows per row group; empty for CSV

    @property
    def num_rows(self) -> int | None:
        return sum(self.row_groups) if self.format == "parquet" else None


@dataclass(frozen=True)
class Unit:
    """A piece of an epoch that is read in one go: a Parquet row group or a whole CSV file."""

    file: int
    row_group: int  # -1 for a CSV file
    rows: int | None  # None when unknown (CSV)


def detect_format(path: str) -> str | None:
    low = path.lower()
    if low.endswith(PARQUET_EXTENSIONS):
        return "parquet"
    if low.endswith(CSV_EXTENSIONS):
        return "csv"
    return None


def resolve_paths(paths: Sequence[str], fmt: str = "auto") -> list[tuple[str, str]]:
    """Expand files, globs and directories into a list of ``(path, format)``.

    Paths keep the order given; each glob and directory expands in sorted order. Directories
    are searched recursively for files with a Parquet or CSV extension; globs and directories
    skip hidden files and ``_``-prefixed marker files such as ``_SUCCESS``. A path or glob
    that matches nothing is an error naming it; a file named explicitly is always used.
    """
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not paths:
        raise UsageError("no input paths given")
    found: list[str] = []
    for raw in paths:
        path = os.path.expanduser(str(raw))
        if _GLOB_CHARS & set(path):
            matches = sorted(
                p
                for p in glob.glob(path, recursive=True)
                if os.path.isfile(p) and not os.path.basename(p).startswith((".", "_"))
            )
            if not matches:
                raise UsageError(f"{raw}: the pattern matches no file")
            found.extend(matches)
        elif os.path.isdir(path):
            matches = _walk(path, fmt)
            if not matches:
                raise UsageError(f"{raw}: the directory holds no Parquet or CSV file")
            found.extend(matches)
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise UsageError(f"{raw}: no such file or directory")
    result = []
    for path in dict.fromkeys(found):  # keep order, drop repeats
        kind = fmt if fmt != "auto" else detect_format(path)
        if kind is None:
            raise UsageError(
                f"{path}: cannot tell the format from the extension; expected one of "
                f"{', '.join(PARQUET_EXTENSIONS + CSV_EXTENSIONS)}, or pass --format parquet|csv"
            )
        result.append((path, kind))
    return result


def _walk(directory: str, fmt: str) -> list[str]:
    out = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for name in sorted(files):
            if name.startswith((".", "_")):
                continue
            full = os.path.join(root, name)
            kind = detect_format(full)
            if kind is not None and (fmt == "auto" or kind == fmt):
                out.append(full)
    return out


def is_numeric(dtype: pa.DataType) -> bool:
    """Whether a column of this Arrow type can be used as a numeric feature or target."""
    return (
        pa.types.is_integer(dtype)
        or pa.types.is_floating(dtype)
        or pa.types.is_boolean(dtype)
        or pa.types.is_decimal(dtype)
        or pa.types.is_null(dtype)
    )


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
        elif values.dtype == out.dtype:
            out[:, j] = values
            out[:, j] -= c  # in cache, and faster than a casting subtract
        else:
            np.subtract(values, c, out=out[:, j], casting="same_kind")
    return out


@dataclass
class Dataset:
    """A resolved set of files with one schema fixed up front."""

    files: tuple[SourceFile, ...]
    schema: pa.Schema
    csv_schema: pa.Schema | None = None  # the types every CSV block is parsed with
    units: tuple[Unit, ...] = field(default=())

    @property
    def num_rows(self) -> int | None:
        counts = [f.num_rows for f in self.files]
        return None if any(c is None for c in counts) else sum(counts)  # type: ignore[misc]

    def fingerprint(self) -> dict:
        """What identifies the input: paths, sizes and row-group layout of every file."""
        return {
            "files": [
                {"path": f.path, "size": f.size, "row_groups": list(f.row_groups)}
                for f in self.files
            ]
        }

    def digest(self) -> str:
        blob = json.dumps(self.fingerprint(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def iter_unit(
        self, unit: Unit, columns: Sequence[str], handle: _HandleCache | None = None
    ) -> Iterator[tuple[pa.Table | pa.RecordBatch, int]]:
        """Yield ``(table, first_row)`` pieces of one unit; ``first_row`` is the piece's row
        number within its file (0-based), for error messages."""
        src = self.files[unit.file]
        if src.format == "parquet":
            pf = (handle or _HandleCache()).parquet(src.path)
            first = sum(src.row_groups[: unit.row_group])
            try:
                table = pf.read_row_group(unit.row_group, columns=list(columns))
            except (OSError, pa.ArrowException) as exc:
                raise DataError(
                    f"cannot read row group {unit.row_group} ({_short(exc)})", path=src.path
                ) from None
            yield table, first
        else:
            yield from self._iter_csv(src, columns)

    def _iter_csv(self, src: SourceFile, columns: Sequence[str]):
        assert self.csv_schema is not None
        types = {name: self.csv_schema.field(name).type for name in columns}
        reader = _open_csv(src.path, types, list(columns))
        row = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except (OSError, pa.ArrowException) as exc:
                raise DataError(
                    f"cannot parse CSV after data row {row}: {_short(exc)}", path=src.path
                ) from None
            yield batch, row
            row += batch.num_rows


class _HandleCache:
    """Keeps the most recently opened Parquet file open; one handle, so memory stays flat."""

    def __init__(self) -> None:
        self._path: str | None = None
        self._file: pq.ParquetFile | None = None

    def parquet(self, path: str) -> pq.ParquetFile:
        if path != self._path:
            self._file = _open_parquet(path)
            self._path = path
        assert self._file is not None
        return self._file


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _open_parquet(path: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path, pre_buffer=False)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"not a readable Parquet file ({_short(exc)})", path=path) from None


def _csv_parse_options(path: str) -> pacsv.ParseOptions:
    delimiter = "\t" if os.path.basename(path).lower().endswith((".tsv", ".tsv.gz")) else ","
    return pacsv.ParseOptions(delimiter=delimiter)


def _open_csv(path: str, types: dict | None, include: list[str] | None):
    convert = pacsv.ConvertOptions(
        column_types=types or {}, include_columns=include or [], strings_can_be_null=True
    )
    try:
        return pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_SIZE, use_threads=True),
            parse_options=_csv_parse_options(path),
            convert_options=convert,
        )
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"not a readable CSV file ({_short(exc)})", path=path) from None


def _csv_schema(path: str) -> pa.Schema:
    """Infer column types once, from the first block; integer and all-null columns become
    float64 so that a later 1.5 or a later value cannot break a type guessed from a few rows."""
    schema = _open_csv(path, None, None).schema
    fields = []
    for f in schema:
        if pa.types.is_integer(f.type) or pa.types.is_null(f.type):
            f = f.with_type(pa.float64())
        fields.append(f)
    return pa.schema(fields)


def open_dataset(paths: Sequence[str], fmt: str = "auto") -> Dataset:
    """Resolve paths, read every file's metadata and fix one schema for all of them."""
    resolved = resolve_paths(paths, fmt)
    files: list[SourceFile] = []
    schemas: list[pa.Schema] = []
    csv_schema: pa.Schema | None = None
    for path, kind in resolved:
        size = os.path.getsize(path)
        if kind == "parquet":
            pf = _open_parquet(path)
            md = pf.metadata
            groups = tuple(md.row_group(i).num_rows for i in range(md.num_row_groups))
            files.append(SourceFile(path, kind, size, groups))
            schemas.append(pf.schema_arrow)
        else:
            if size == 0:
                raise DataError("the CSV file is empty (expected a header line)", path=path)
            schema = _csv_schema(path)
            if csv_schema is None:
                csv_schema = schema
            files.append(SourceFile(path, kind, size))
            schemas.append(schema)
    schema = _unify(schemas, [f.path for f in files])
    units = []
    for i, f in enumerate(files):
        if f.format == "parquet":
            units.extend(Unit(i, g, n) for g, n in enumerate(f.row_groups))
        else:
            units.append(Unit(i, -1, None))
    if csv_schema is not None:
        csv_schema = pa.schema([schema.field(n) for n in csv_schema.names])
    return Dataset(tuple(files), schema, csv_schema, tuple(units))


def _unify(schemas: list[pa.Schema], paths: list[str]) -> pa.Schema:
    """One schema for all files: the same column names, and for each column either the same
    type or numeric types in every file (all numbers are decoded to float64 anyway)."""
    first = schemas[0]
    fields = {f.name: f for f in first}
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
            if f.type == ref.type:
                continue
            if is_numeric(f.type) and is_numeric(ref.type):
                if not pa.types.is_floating(ref.type):
                    fields[f.name] = ref.with_type(pa.float64())
                continue
            raise DataError(
                f"schemas disagree: type {f.type} here but {ref.type} in {paths[0]}",
                path=path,
                column=f.name,
            )
    return pa.schema([fields[n] for n in first.names])
