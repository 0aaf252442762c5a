"""Sources: resolve paths to Parquet/CSV files, fix one schema up front, decode pieces to numpy.

The unit of reading is a :class:`Unit`: one row group of a Parquet file, or one whole CSV file
(a CSV file has no row groups, so it is streamed block by block with pyarrow's CSV reader). Nothing
here ever reads a whole Parquet file or a whole dataset at once.

CSV files are parsed as :class:`CsvOptions` say (delimiter, header or given column names, null
tokens, column types), the same way for every file of a dataset. Quoted fields may hold the
delimiter, quotes (doubled) and line breaks; CRLF line endings, a UTF-8 byte-order mark and blank
lines are accepted; ``.gz``, ``.bz2`` and ``.zst`` files are decompressed as they stream. A value
or row that does not parse is a :class:`CsvError` naming the file, the physical line (1-based,
counting the header) and the column.

A path may also be a URI of any filesystem ``pyarrow.fs`` opens by URI (``s3://bucket/key``,
``gs://``, ``abfs://``, ``hdfs://``, ``file:///abs/path``): files, globs and directories work as
local ones do, read through ``pyarrow.fs`` by ranged reads (Parquet) or streams (CSV), never
downloaded whole. See :func:`is_uri`.
"""

from __future__ import annotations

import collections
import csv as pycsv
import fnmatch
import glob
import hashlib
import io
import json
import os
import posixpath
import queue
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import quote, unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .errors import DataError, UsageError
from .partitions import NO_PARTITIONS, Partitions, discover_partitions, partition_dirs

__all__ = [
    "FORMATS",
    "CSV_DTYPES",
    "CsvOptions",
    "CsvError",
    "SourceFile",
    "Unit",
    "Dataset",
    "open_dataset",
    "resolve_paths",
    "is_uri",
    "is_numeric",
    "to_matrix",
]

PARQUET_EXTENSIONS = (".parquet", ".parq", ".pq")
TSV_EXTENSIONS = (".tsv", ".tsv.gz", ".tsv.bz2", ".tsv.zst")  # tab-separated by default
CSV_EXTENSIONS = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst", *TSV_EXTENSIONS)
FORMATS = ("auto", "parquet", "csv")
# Row groups with more rows than this are read in slices of this many rows (memory bound).
SLICE_ROWS = 262_144
PROBE_BLOCK_SIZE = 64 << 10  # bytes of each later CSV file checked by open_dataset
CSV_BLOCK_SIZE = 1 << 20  # bytes of text per CSV block (4 MB blocks parsed 1.2-1.3x slower)
_GLOB_CHARS = set("*?[")


# name -> Arrow type, for CsvOptions.dtypes (the names are also the ones error messages use)
CSV_DTYPES: dict[str, pa.DataType] = {
    "float64": pa.float64(),
    "float32": pa.float32(),
    "int64": pa.int64(),
    "bool": pa.bool_(),
    "string": pa.string(),
}
_DELIMITER_ALIASES = {"\\t": "\t", "tab": "\t"}  # what a shell or a TOML literal string gives


@dataclass(frozen=True)
class CsvOptions:
    """How CSV files are parsed; the defaults read what streamgd always read.

    Attributes:
        delimiter: one ASCII character (``"\\\\t"`` and ``"tab"`` mean a tab); None: a tab for
            ``.tsv`` files (also compressed), a comma otherwise.
        header: whether the first line names the columns.
        columns: the column names when ``header`` is false (required then, and only then);
            every row must have exactly this many fields.
        null_values: the tokens read as null, exactly (``("", "NA", "?")``); None: pyarrow's
            defaults (``""``, ``NA``, ``NULL``, ``NaN``, ``null``, ``N/A``, ``#N/A`` and a few
            more). A quoted token is null too.
        dtypes: column -> one of :data:`CSV_DTYPES`, overriding inference for those columns.

    Options apply to every CSV file of a dataset and to no Parquet file.

    >>> CsvOptions(delimiter="tab", header=False, columns=["a", "b"]).to_dict()["delimiter"]
    '\\t'
    """

    delimiter: str | None = None
    header: bool = True
    columns: tuple[str, ...] | None = None
    null_values: tuple[str, ...] | None = None
    dtypes: dict[str, str] | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # normalising a frozen dataclass's own fields
        delimiter = self.delimiter
        if isinstance(delimiter, str):
            delimiter = _DELIMITER_ALIASES.get(delimiter.lower(), delimiter)
        if delimiter is not None and (
            not isinstance(delimiter, str)
            or len(delimiter) != 1
            or not delimiter.isascii()
            or delimiter in '"\r\n'
        ):
            raise UsageError(
                "the CSV delimiter must be one ASCII character other than a quote or a line "
                f"break (or 'tab'), got {self.delimiter!r}"
            )
        set_(self, "delimiter", delimiter)
        if not isinstance(self.header, bool):
            raise UsageError(f"the CSV header setting must be true or false, got {self.header!r}")
        set_(self, "columns", _names(self.columns, "CSV column names"))
        set_(self, "null_values", _names(self.null_values, "CSV null values", unique=False))
        if self.header and self.columns is not None:
            raise UsageError("CSV column names are given only for files without a header line")
        if not self.header and not self.columns:
            raise UsageError("CSV files without a header line need their column names")
        if self.dtypes is not None:
            if not isinstance(self.dtypes, dict):
                raise UsageError(f"CSV dtypes must map columns to types, got {self.dtypes!r}")
            for name, kind in self.dtypes.items():
                if kind not in CSV_DTYPES:
                    raise UsageError(
                        f"CSV dtype of column {name!r} must be one of "
                        f"{', '.join(CSV_DTYPES)}, got {kind!r}"
                    )
            set_(self, "dtypes", dict(self.dtypes) or None)

    def __hash__(self) -> int:  # dtypes is a dict: hash the canonical JSON form instead
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def delimiter_for(self, path: str) -> str:
        """The delimiter of this file: the option, else by its name (tab for ``.tsv``)."""
        return self.delimiter if self.delimiter is not None else _default_delimiter(path)

    def to_dict(self) -> dict:
        """Every field as plain JSON values (tuples as lists)."""
        return {
            "delimiter": self.delimiter,
            "header": self.header,
            "columns": None if self.columns is None else list(self.columns),
            "null_values": None if self.null_values is None else list(self.null_values),
            "dtypes": None if self.dtypes is None else dict(self.dtypes),
        }

    @classmethod
    def from_dict(cls, data: dict) -> CsvOptions:
        """The inverse of :meth:`to_dict`; missing keys take their defaults."""
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise UsageError(f"unknown CSV option(s): {', '.join(unknown)}")
        return cls(**data)

    def fingerprint(self, path: str) -> dict:
        """The settings that parse this file differently from the defaults (empty when none),
        so that default options leave a dataset's fingerprint as it was before they existed."""
        out: dict = {}
        if self.delimiter_for(path) != _default_delimiter(path):
            out["delimiter"] = self.delimiter
        for key, value in self.to_dict().items():
            if key != "delimiter" and value != _DEFAULT_CSV.to_dict()[key]:
                out[key] = value
        return out


def _names(values, what: str, *, unique: bool = True) -> tuple[str, ...] | None:
    if values is None:
        return None
    if isinstance(values, str) or not all(isinstance(v, str) for v in values):
        raise UsageError(f"{what} must be a list of strings, got {values!r}")
    values = tuple(values)
    if unique and len(set(values)) != len(values):
        repeated = sorted({v for v in values if values.count(v) > 1})
        raise UsageError(f"{what} repeat {', '.join(map(repr, repeated))}")
    return values


def _default_delimiter(path: str) -> str:
    return "\t" if _file_name(path).lower().endswith(TSV_EXTENSIONS) else ","


_DEFAULT_CSV = CsvOptions()


class CsvError(DataError):
    """A CSV row or value that cannot be parsed, located as exactly as the file allows.

    ``line`` is the physical line where the record starts (1-based, counting the header line,
    blank lines and the line breaks inside quoted values); ``row`` is the data row (1-based, not
    counting the header or blank lines), as in other errors; ``column`` is None for a row with
    the wrong number of fields. The message names the line:
    ``data.csv: line 12: column 'x3': cannot parse 'abc' as float64``.
    """

    def __init__(
        self, message: str, *, path: str, line: int, row: int, column: str | None = None
    ) -> None:
        where = f"line {line}: " + (f"column {column!r}: " if column is not None else "")
        super().__init__(where + message, path=path)
        self.line, self.row, self.column = line, row, column


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
    """``"parquet"`` or ``"csv"`` by the file name's extension (a URI's query aside), else None.

    >>> detect_format("s3://bucket/part-0.csv.gz?scheme=http"), detect_format("a.txt")
    ('csv', None)
    """
    low = _file_name(path).lower()
    if low.endswith(PARQUET_EXTENSIONS):
        return "parquet"
    if low.endswith(CSV_EXTENSIONS):
        return "csv"
    return None


def resolve_paths(paths: Sequence[str], fmt: str = "auto") -> list[tuple[str, str]]:
    """Expand files, globs and directories, local or URIs, into a list of ``(path, format)``.

    Paths keep the order given; each glob and directory expands in sorted order. Directories
    are searched recursively for files with a Parquet or CSV extension; globs and directories
    skip hidden files and ``_``-prefixed marker files such as ``_SUCCESS``. A path or glob
    that matches nothing is an error naming it; a file named explicitly is always used. A file
    found under a URI is named by a URI of its own (see :func:`is_uri`).
    """
    return [(path, kind) for path, kind, _ in _resolve(paths, fmt)]


def _resolve(paths: Sequence[str], fmt: str) -> list[tuple[str, str, int]]:
    """:func:`resolve_paths`, with each file's size in bytes (-1 when a filesystem says none)."""
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not paths:
        raise UsageError("no input paths given")
    found: dict[str, int] = {}  # keeps order, drops repeats
    for raw in map(str, paths):
        for path, size in _expand_uri(raw, fmt) if is_uri(raw) else _expand_local(raw, fmt):
            found.setdefault(path, size)
    result = []
    for path, size in found.items():
        kind = fmt if fmt != "auto" else detect_format(path)
        if kind is None:
            raise UsageError(
                f"{path}: cannot tell the format from the extension; expected one of "
                f"{', '.join(PARQUET_EXTENSIONS + CSV_EXTENSIONS)}, or pass --format parquet|csv"
            )
        result.append((path, kind, size))
    return result


def _expand_local(raw: str, fmt: str) -> list[tuple[str, int]]:
    path = os.path.expanduser(raw)
    if _GLOB_CHARS & set(path):
        matches = sorted(
            p
            for p in glob.glob(path, recursive=True)
            if os.path.isfile(p) and not os.path.basename(p).startswith((".", "_"))
        )
        if not matches:
            raise UsageError(f"{raw}: the pattern matches no file")
    elif os.path.isdir(path):
        matches = _walk(path, fmt)
        if not matches:
            raise UsageError(f"{raw}: the directory holds no Parquet or CSV file")
    elif os.path.isfile(path):
        matches = [path]
    else:
        raise UsageError(f"{raw}: no such file or directory")
    return [(p, os.path.getsize(p)) for p in matches]


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


# -- files behind a URI ----------------------------------------------------------------------
# Everything goes through pyarrow.fs.FileSystem.from_uri, so any filesystem pyarrow was built
# with works, configured as pyarrow configures it: S3 credentials and region from the AWS
# environment variables or files; the endpoint from the URI's query (?endpoint_override=HOST:PORT
# &scheme=http), else AWS_ENDPOINT_URL_S3 (pyarrow >= 15), else AWS_ENDPOINT_URL (>= 13). A file
# found by a glob or in a directory is named by its own URI, percent-encoded, with the query
# given, so that the name alone reopens it anywhere (a Dask worker, a resumed run) and the
# fingerprint and messages say it as the user would.

_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# a query is key=value pairs; any other "?" is a glob wildcard
_QUERY = re.compile(r"\?[A-Za-z_]\w*=[^&?]*(?:&[A-Za-z_]\w*=[^&?]*)*$")
# what stays as it is when a file's key becomes part of a URI (glob characters do not)
_PATH_SAFE = "/!$&'()+,;=:@"
_T = TypeVar("_T")


def is_uri(path: str) -> bool:
    """Whether ``path`` is a URI (``scheme://...``) read through ``pyarrow.fs`` rather than a
    local path.

    A URI is percent-encoded (a space is ``%20``); its globs use ``*``, ``**``, ``[...]`` and a
    ``?`` that does not start a ``?key=value`` query.

    >>> is_uri("s3://bucket/data/*.parquet"), is_uri("data/part-0.parquet")
    (True, False)
    """
    return _URI.match(path) is not None


def _split_uri(uri: str) -> tuple[str, str, str]:
    """``(scheme://authority, path, query)``.

    >>> _split_uri("s3://bucket/data/part-?.parquet?scheme=http")
    ('s3://bucket', '/data/part-?.parquet', '?scheme=http')
    """
    match = _QUERY.search(uri)
    head, query = (uri[: match.start()], match.group()) if match else (uri, "")
    start = _URI.match(head).end()  # type: ignore[union-attr]
    slash = head.find("/", start)
    return (head, "", query) if slash < 0 else (head[:slash], head[slash:], query)


def _file_name(path: str) -> str:
    """The file name: the last component of a local path, or of a URI's (decoded) path."""
    if not is_uri(path):
        return os.path.basename(path)
    return unquote(posixpath.basename(_split_uri(path)[1]))


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem for ``uri`` and the path within it. A URI pyarrow cannot use (no
    such scheme, a bad query parameter, a syntax error) is a usage error; a filesystem it cannot
    set up (HDFS without its library, say) a data error."""
    try:
        return pafs.FileSystem.from_uri(uri)
    except OSError as exc:
        raise DataError(f"cannot access the filesystem ({_short(exc)})", path=uri) from None
    except pa.ArrowException as exc:
        raise UsageError(f"{uri}: not a usable URI ({_short(exc)})") from None


def _access(uri: str, call: Callable[[], _T]) -> _T:
    """``call()``, a request to a filesystem: its failure (unreachable endpoint, denied
    credentials) becomes one line naming ``uri`` and pyarrow's reason."""
    try:
        return call()
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"cannot access the file ({_short(exc)})", path=uri) from None


def _expand_uri(raw: str, fmt: str) -> list[tuple[str, int]]:
    prefix, path, query = _split_uri(raw)
    if _GLOB_CHARS & set(path):
        return _glob_uri(raw, prefix, path, query)
    fs, inner = _filesystem(raw)
    info = _access(raw, lambda: fs.get_file_info(inner))
    if info.type == pafs.FileType.File:
        return [(raw, _size(info))]
    if info.type == pafs.FileType.NotFound:
        raise UsageError(f"{raw}: no such file or directory")
    base = prefix + (path if path.endswith("/") else path + "/")
    found = []
    for info, names in _listing(raw, fs, inner, recursive=True):
        if any(n.startswith((".", "_")) for n in names):
            continue
        kind = detect_format(names[-1])
        if kind is not None and fmt in ("auto", kind):
            order = (*((1, n) for n in names[:-1]), (0, names[-1]))  # os.walk's: files first
            found.append((order, base + quote("/".join(names), safe=_PATH_SAFE) + query, info))
    if not found:
        raise UsageError(f"{raw}: the directory holds no Parquet or CSV file")
    return [(uri, _size(info)) for _, uri, info in sorted(found, key=lambda f: f[0])]


def _glob_uri(raw: str, prefix: str, path: str, query: str) -> list[tuple[str, int]]:
    """The files matching a glob URI: the filesystem lists the directory above the first
    wildcard, and :func:`_glob_match` picks the keys, as :func:`glob.glob` would."""
    parts = path.lstrip("/").split("/")
    k = next(i for i, part in enumerate(parts) if _GLOB_CHARS & set(part))
    base = prefix + "/" + "".join(part + "/" for part in parts[:k])
    pattern = [unquote(part) for part in parts[k:]]
    fs, inner = _filesystem(base + query)
    deep = len(pattern) > 1 or "**" in pattern
    matches = sorted(  # by key, as sorted local paths are, not by its encoding
        ("/".join(names), info)
        for info, names in _listing(raw, fs, inner, recursive=deep, missing_ok=True)
        if not names[-1].startswith((".", "_")) and _glob_match(names, pattern)
    )
    if not matches:
        raise UsageError(f"{raw}: the pattern matches no file")
    return [(base + quote(key, safe=_PATH_SAFE) + query, _size(info)) for key, info in matches]


def _listing(
    raw: str, fs: pafs.FileSystem, directory: str, *, recursive: bool, missing_ok: bool = False
) -> Iterator[tuple[pafs.FileInfo, list[str]]]:
    """Every file under ``directory`` with its path components below it."""
    selector = pafs.FileSelector(directory, recursive=recursive, allow_not_found=missing_ok)
    infos = _access(raw, lambda: fs.get_file_info(selector))
    top = directory.rstrip("/") + "/"
    for info in infos:
        if info.type == pafs.FileType.File and info.path.startswith(top):
            yield info, info.path[len(top) :].split("/")


def _size(info: pafs.FileInfo) -> int:
    return -1 if info.size is None else int(info.size)


def _glob_match(names: Sequence[str], pattern: Sequence[str]) -> bool:
    """Whether path components ``names`` match glob components ``pattern`` as
    :func:`glob.glob` with ``recursive=True`` has it: each component by :mod:`fnmatch`, ``**``
    for any number of components, and no wildcard matching a name that starts with a dot.

    >>> _glob_match(["a", "b", "x.csv"], ["**", "*.csv"]), _glob_match(["a", "x.csv"], ["*.csv"])
    (True, False)
    """
    if not pattern:
        return not names
    first, rest = pattern[0], pattern[1:]
    if first == "**":
        return _glob_match(names, rest) or (
            bool(names) and not names[0].startswith(".") and _glob_match(names[1:], pattern)
        )
    return (
        bool(names)
        and (first.startswith(".") or not names[0].startswith("."))
        and fnmatch.fnmatchcase(names[0], first)
        and _glob_match(names[1:], rest)
    )


def _input_file(path: str) -> str | pa.NativeFile:
    """What :class:`pq.ParquetFile` opens: a local path as it is, or a URI's random-access file,
    which fetches by ranged reads only the footer and the column chunks asked for."""
    if not is_uri(path):
        return path
    fs, inner = _filesystem(path)
    return _access(path, lambda: fs.open_input_file(inner))


def _input_stream(path: str) -> pa.NativeFile:
    """A file's bytes as a stream, decompressed by the file name's extension."""
    if not is_uri(path):
        return pa.input_stream(path, compression="detect")
    fs, inner = _filesystem(path)
    return _access(path, lambda: fs.open_input_stream(inner, compression="detect"))


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
        else:  # one pass: 3x faster than a copy followed by an in-place subtract
            if values.dtype == out.dtype:  # subtract in that precision, not via float64
                c = out.dtype.type(c)
            np.subtract(values, c, out=out[:, j], casting="same_kind")
    return out


@dataclass
class _Parked:
    """Pieces of a unit already decoded and the iterator that continues after them."""

    unit: Unit
    columns: frozenset[str]  # the pieces hold these columns (and maybe more)
    pieces: collections.deque
    rest: Iterator[tuple[pa.Table | pa.RecordBatch, int]]


@dataclass
class Dataset:
    """A resolved set of files with one schema fixed up front."""

    files: tuple[SourceFile, ...]
    schema: pa.Schema
    csv_schema: pa.Schema | None = None  # the types every CSV block is parsed with
    units: tuple[Unit, ...] = field(default=())
    csv: CsvOptions = _DEFAULT_CSV  # how every CSV file is parsed
    # hive partition columns (the last of ``schema``) and each file's values of them
    partitions: Partitions = NO_PARTITIONS
    notes: tuple[str, ...] = ()  # what a user should know: columns widened between files
    # pieces of one CSV unit already parsed, and its reader after them (see park)
    _parked: dict[Unit, _Parked] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def num_rows(self) -> int | None:
        counts = [f.num_rows for f in self.files]
        return None if any(c is None for c in counts) else sum(counts)  # type: ignore[misc]

    def fingerprint(self) -> dict:
        """What identifies the input: paths, sizes and row-group layout of every file, and for
        a CSV file the parse options that differ from the defaults (key ``"csv"``, only then),
        so that a resume with other parse options is refused."""
        files = []
        for f in self.files:
            entry = {"path": f.path, "size": f.size, "row_groups": list(f.row_groups)}
            parse = self.csv.fingerprint(f.path) if f.format == "csv" else {}
            if parse:
                entry["csv"] = parse
            files.append(entry)
        return {"files": files}

    def digest(self) -> str:
        blob = json.dumps(self.fingerprint(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def iter_unit(
        self, unit: Unit, columns: Sequence[str], handle: _HandleCache | None = None
    ) -> Iterator[tuple[pa.Table | pa.RecordBatch, int]]:
        """Yield ``(table, first_row)`` pieces of one unit; ``first_row`` is the piece's row
        number within its file (0-based), for error messages. Partition columns among
        ``columns`` are constant columns of every piece, like the file's own."""
        parked = self._unpark(unit, columns)
        if parked is not None:
            while parked.pieces:  # handed over one by one, so each is freed once used
                yield parked.pieces.popleft()
            yield from parked.rest
            return
        if not self.partitions.names:
            yield from self._iter_pieces(unit, columns, handle)
            return
        own = [c for c in columns if c not in self.partitions.names]
        if not own and self.files[unit.file].format == "csv":
            own = [self.schema.names[0]]  # a CSV reader without columns reads all: count one
        for table, first_row in self._iter_pieces(unit, own, handle):
            yield self.partitions.add_columns(table, unit.file, columns), first_row

    def park(
        self,
        unit: Unit,
        columns: Sequence[str],
        pieces: Sequence[tuple[pa.Table | pa.RecordBatch, int]],
        rest: Iterator[tuple[pa.Table | pa.RecordBatch, int]],
    ) -> None:
        """Keep the first ``pieces`` of ``unit`` as :meth:`iter_unit` gave them for
        ``columns``, and ``rest`` (that iterator, past them), for the next read of the unit:
        the statistics pass hands the epoch the CSV blocks it parsed (a CSV file cannot be
        entered in the middle, so parsing them again was ~10% of a fit). A read of a parked
        unit takes its pieces; a read that cannot use them, or of a unit not parked (another
        order, another pass), drops them all."""
        self._drop(self._parked.pop(unit, None))
        self._parked[unit] = _Parked(unit, frozenset(columns), collections.deque(pieces), rest)

    def _unpark(self, unit: Unit, columns: Sequence[str]) -> _Parked | None:
        if not self._parked:
            return None
        parked = self._parked.pop(unit, None)
        if parked is not None and parked.columns.issuperset(columns):
            return parked
        for other in [parked, *self._parked.values()]:
            self._drop(other)
        self._parked.clear()
        return None

    @staticmethod
    def _drop(parked: _Parked | None) -> None:
        close = getattr(parked and parked.rest, "close", None)
        if close is not None:
            close()

    def _iter_pieces(
        self, unit: Unit, columns: Sequence[str], handle: _HandleCache | None
    ) -> Iterator[tuple[pa.Table | pa.RecordBatch, int]]:
        src = self.files[unit.file]
        if src.format == "parquet" and self.single_piece(unit):
            first = sum(src.row_groups[: unit.row_group])
            # no reference kept here while suspended: the consumer may drop the table (and
            # the memory map behind it) as soon as it has converted it
            yield self._read_row_group(src, unit, columns, handle or _HandleCache()), first
        elif src.format == "parquet":
            yield from self._iter_slices(src, unit, columns)
        else:
            yield from self._iter_csv(src, columns)

    def _read_row_group(
        self, src: SourceFile, unit: Unit, columns: Sequence[str], handle: _HandleCache
    ) -> pa.Table:
        pf = handle.parquet(src.path)
        try:
            return pf.read_row_group(unit.row_group, columns=list(columns))
        except (OSError, pa.ArrowException) as exc:
            raise DataError(
                f"cannot read row group {unit.row_group} ({_short(exc)})", path=src.path
            ) from None

    def single_piece(self, unit: Unit) -> bool:
        """Whether the unit is read in one piece: a row group of at most ``SLICE_ROWS`` rows."""
        return unit.row_group >= 0 and (unit.rows or 0) <= SLICE_ROWS

    def _iter_slices(self, src: SourceFile, unit: Unit, columns: Sequence[str]):
        """A row group larger than ``SLICE_ROWS`` in slices of that many rows, through a
        buffered reader, so one huge row group never sits decoded in memory whole (measured:
        a 2M-row group peaked Arrow's pool at 208 MB read whole, 79 MB in slices)."""
        pf = _open_parquet(src.path, buffer_size=1 << 20)
        row = sum(src.row_groups[: unit.row_group])
        try:
            for batch in pf.iter_batches(
                batch_size=SLICE_ROWS, row_groups=[unit.row_group], columns=list(columns)
            ):
                yield batch, row
                row += batch.num_rows
        except (OSError, pa.ArrowException) as exc:
            raise DataError(
                f"cannot read row group {unit.row_group} ({_short(exc)})", path=src.path
            ) from None

    def _iter_csv(self, src: SourceFile, columns: Sequence[str]):
        assert self.csv_schema is not None
        types = {name: self.csv_schema.field(name).type for name in columns}
        reader = _open_csv(src.path, self.csv, types, list(columns))
        ahead = _ReadAhead(reader)
        row = 0
        try:
            for batch in ahead:
                yield batch, row
                row += batch.num_rows
        except (OSError, pa.ArrowException) as exc:
            raise _csv_error(exc, src.path, self.csv, types, first_row=row) from None
        finally:
            ahead.close()


class _ReadAhead:
    """A CSV reader's next blocks, parsed on a thread while the consumer converts the last.

    pyarrow parses a stream's blocks one after another on one core (its threads made no
    difference here), and converting a block to a matrix took ~7% beside it on the same
    thread; parsing ahead overlaps the two. At most ``READ_AHEAD`` blocks wait (1 MB of text
    each, ~1 MB parsed).
    """

    _END = object()

    def __init__(self, reader: pacsv.CSVStreamingReader) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(reader,), name="streamgd-csv", daemon=True
        )
        self._thread.start()

    def _run(self, reader: pacsv.CSVStreamingReader) -> None:
        while not self._stop.is_set():
            try:
                item = reader.read_next_batch()
            except StopIteration:
                item = self._END
            except BaseException as exc:  # raised where the block would have been
                item = exc
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item is self._END or isinstance(item, BaseException):
                return

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


READ_AHEAD = 2  # CSV blocks parsed ahead of the consumer (see _ReadAhead)


class _HandleCache:
    """Opens Parquet files for reading one row group at a time, one file at a time.

    A URI's file stays open while its row groups are read. A local file is read through a
    memory map, opened afresh for each row group from the footer parsed once (0.05 ms): the
    decoder then reads the page cache in place instead of copying each column chunk into
    allocated memory first (decoding was 1.3x faster), and the pages it touched leave the
    process's RSS as soon as the row group is done (a map held open for a whole file keeps
    every page read so far resident: 365 MB instead of 155 MB over four 250 MB files).
    """

    def __init__(self) -> None:
        self._path: str | None = None
        self._file: pq.ParquetFile | None = None

    def parquet(self, path: str) -> pq.ParquetFile:
        if path != self._path:
            self._file = _open_parquet(path)
            self._path = path
        assert self._file is not None
        if is_uri(path):
            return self._file
        return _open_parquet(path, memory_map=True, metadata=self._file.metadata)


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _open_parquet(
    path: str,
    *,
    buffer_size: int = 0,
    memory_map: bool = False,
    metadata: pq.FileMetaData | None = None,
) -> pq.ParquetFile:
    source = None if memory_map else _input_file(path)
    try:
        if source is None:
            source = pa.memory_map(path)
        return pq.ParquetFile(source, pre_buffer=False, buffer_size=buffer_size, metadata=metadata)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"not a readable Parquet file ({_short(exc)})", path=path) from None


_UTF8_BOM = b"\xef\xbb\xbf"
_HEAD_LIMIT = 1 << 20  # a header-only file without a line break is read whole up to this size


def _open_csv(
    path: str,
    options: CsvOptions,
    types: dict[str, pa.DataType] | None,
    include: list[str] | None,
    *,
    threads: bool = True,
    block_size: int | None = None,
) -> pacsv.CSVStreamingReader:
    """A streaming reader of one CSV file; pyarrow parses (and checks) the first block here.

    ``newlines_in_values`` is always on: without it a quoted line break that falls on a block
    boundary splits the record; on ordinary files it cost nothing measurable (0-3%).
    """
    read = {"block_size": block_size or CSV_BLOCK_SIZE, "use_threads": threads}
    if not options.header:
        read["column_names"] = list(options.columns or ())
    convert = {
        "column_types": types or {},
        "include_columns": include or [],
        "strings_can_be_null": True,
    }
    if options.null_values is not None:
        convert["null_values"] = list(options.null_values)
    kwargs = {
        "read_options": pacsv.ReadOptions(**read),
        "parse_options": pacsv.ParseOptions(
            delimiter=options.delimiter_for(path), newlines_in_values=True
        ),
        "convert_options": pacsv.ConvertOptions(**convert),
    }
    try:
        try:
            return pacsv.open_csv(_input_stream(path), **kwargs)
        except pa.ArrowInvalid as exc:
            if "Empty CSV" not in str(exc) and "infer number of columns" not in str(exc):
                raise
            return pacsv.open_csv(_terminated_head(path, options, exc), **kwargs)
    except (OSError, pa.ArrowException) as exc:
        raise _csv_error(exc, path, options, types or {}, first_row=0) from None


def _terminated_head(path: str, options: CsvOptions, exc: Exception) -> pa.BufferReader:
    """pyarrow cannot parse a file whose only line lacks a line break (``a,b``): the whole
    (small) file with one added. A file of nothing but blank lines or a byte-order mark is
    empty."""
    with _input_stream(path) as stream:
        head = stream.read(_HEAD_LIMIT + 1)
    if not head.removeprefix(_UTF8_BOM).strip():
        raise DataError(_empty_message(options), path=path)
    if len(head) > _HEAD_LIMIT:
        raise exc
    return pa.BufferReader(head + b"\n")


def _empty_message(options: CsvOptions) -> str:
    return "the CSV file is empty" + (" (expected a header line)" if options.header else "")


def _probe_csv(
    path: str, options: CsvOptions, types: dict[str, pa.DataType], *, rows: bool
) -> tuple[pa.Schema, bool | None]:
    """The schema pyarrow infers from the first block (``types`` forced; opening converts,
    and so checks, that block), and with ``rows`` whether the block holds a data row (None
    without: taking the batch costs as much again). No read-ahead."""
    reader = _open_csv(path, options, types, None, threads=False)
    if not rows:
        return reader.schema, None
    try:
        batch = reader.read_next_batch()
    except StopIteration:
        return reader.schema, False
    except (OSError, pa.ArrowException) as exc:
        raise _csv_error(exc, path, options, types, first_row=0) from None
    return reader.schema, batch.num_rows > 0


def _check_head(
    path: str, options: CsvOptions, types: dict[str, pa.DataType]
) -> tuple[pa.Schema | None, None]:
    """A file after the types are fixed: its header, and its first ``PROBE_BLOCK_SIZE``
    bytes parsed with those types. Parsing a whole first block of every file here was ~2%
    of a fit, and the epoch parsed it again. None if that cannot settle it (an error, which
    the full probe then reports as it did, or a column the types do not cover, whose type
    is inferred from a whole block as for the first file)."""
    try:
        reader = _open_csv(path, options, types, None, threads=False, block_size=PROBE_BLOCK_SIZE)
    except (DataError, OSError, pa.ArrowException):
        return None, None
    if not set(reader.schema.names) <= set(types):
        return None, None
    return reader.schema, None


def _given_types(options: CsvOptions) -> dict[str, pa.DataType]:
    return {name: CSV_DTYPES[kind] for name, kind in (options.dtypes or {}).items()}


def _fixed_types(schema: pa.Schema, options: CsvOptions) -> dict[str, pa.DataType]:
    """The types every CSV block is parsed with: as inferred, but integer and all-null columns
    become float64 so that a later 1.5 or a later value cannot break a type guessed from a few
    rows; ``options.dtypes`` win."""
    given = _given_types(options)
    types = {}
    for f in schema:
        kind = f.type
        if f.name in given:
            kind = given[f.name]
        elif pa.types.is_integer(kind) or pa.types.is_null(kind):
            kind = pa.float64()
        types[f.name] = kind
    return types


def _check_dtypes(options: CsvOptions, schema: pa.Schema, path: str) -> None:
    unknown = [name for name in options.dtypes or {} if name not in schema.names]
    if unknown:
        raise UsageError(
            f"{path}: a CSV dtype is given for no such column: {', '.join(map(repr, unknown))}; "
            f"columns are: {', '.join(schema.names)}"
        )


# -- locating a CSV error ------------------------------------------------------------------
# pyarrow (checked with 26.0) says what is wrong but not where: a conversion error names the
# column by index and the value ("In CSV column #2: CSV conversion error to double: invalid
# value 'abc'") and a ragged row its field counts ("Expected 3 columns, got 4: <text>"), but
# neither names the row (a "Row #N" appears only for a ragged row without threads, and it
# counts records, not lines). So the file is read again with Python's csv module, which has
# the same quoting rules, up to the first record of the failing block (or later) that shows
# the problem; that costs a pass over the file up to there, on the error path only.

_CONVERSION = re.compile(
    r"conversion error to (?P<type>[^:]+): invalid value '(?P<value>.*)'$", re.S
)
_COLUMN_INDEX = re.compile(r"In CSV column #(?P<index>\d+)")
_FIELD_COUNT = re.compile(r"Expected (?P<expected>\d+) columns, got (?P<got>\d+)")
_ARROW_NAMES = {"double": "float64", "float": "float32"}


@dataclass(frozen=True)
class _Record:
    line: int  # physical line where the record starts, 1-based
    row: int  # data row, 1-based
    fields: list[str]


def _csv_error(
    exc: BaseException,
    path: str,
    options: CsvOptions,
    types: dict[str, pa.DataType],
    *,
    first_row: int,
) -> DataError:
    """A one-line error for pyarrow's ``exc`` about the block after data row ``first_row``
    (0-based): a :class:`CsvError` with line, row and column when the record is found, else a
    :class:`DataError` saying from which row on."""
    problem = _problem(str(exc).strip())
    if problem is None:
        return DataError(
            f"cannot read the CSV file at or after row {first_row + 1} ({_short(exc)})",
            path=path,
        )
    kind, index, detail, match = problem
    names, record = _locate(path, options, first_row, match)
    column = None
    if index is not None:
        column = names[index] if names is not None and index < len(names) else f"#{index + 1}"
    if kind == "value":
        arrow_name, value = detail
        dtype = _type_name(types.get(column) if column else None, arrow_name)
        what = f"cannot parse {_clip(value)} as {dtype}"
    elif kind == "utf8":
        what = "the text is not valid UTF-8"
    else:
        expected, got = detail
        got = len(record.fields) if record is not None else got
        what = f"expected {expected} fields, got {got}"
        if record is not None and record.row == 1 and not options.header:
            what = f"the first row has {got} fields but {expected} column names were given"
    if record is not None:
        return CsvError(what, path=path, line=record.line, row=record.row, column=column)
    where = f"at or after row {first_row + 1}: " + (f"column {column!r}: " if column else "")
    error = DataError(where + what, path=path)
    error.column = column
    return error


def _problem(text: str) -> tuple[str, int | None, tuple, Callable[[list[str]], bool]] | None:
    """What pyarrow's error message says: ``(kind, column index, details, match)`` where
    ``match(fields)`` tells the record at fault; None for a message of another form."""
    index = _COLUMN_INDEX.search(text)
    k = int(index["index"]) if index else None
    conversion, count = _CONVERSION.search(text), _FIELD_COUNT.search(text)
    if conversion and k is not None:
        value = conversion["value"]  # pyarrow reports it without spaces and tabs around it
        return (
            "value",
            k,
            (conversion["type"], value),
            lambda fields: len(fields) > k and fields[k].strip(" \t") == value,
        )
    if "invalid UTF8" in text and k is not None:
        return "utf8", k, (), lambda fields: len(fields) > k and _undecodable(fields[k])
    if count:
        expected = int(count["expected"])
        return "fields", None, (expected, int(count["got"])), lambda f: len(f) != expected
    return None


def _locate(
    path: str, options: CsvOptions, first_row: int, match: Callable[[list[str]], bool]
) -> tuple[list[str] | None, _Record | None]:
    """The column names, and the first data record after ``first_row`` rows that ``match``es
    (None when there is none or the file cannot be read this way)."""
    names = list(options.columns) if options.columns is not None else None
    row = 0
    try:
        for line, fields in _records(path, options):
            if names is None:
                names = fields
                continue
            row += 1
            if row > first_row and match(fields):
                return names, _Record(line, row, fields)
    except (OSError, UnicodeError, pycsv.Error, pa.ArrowException, DataError):
        pass
    return names, None


def _records(path: str, options: CsvOptions) -> Iterator[tuple[int, list[str]]]:
    """``(first line, fields)`` of every non-blank record of a CSV file, header included,
    streamed (decompressed like pyarrow does: by the file name's extension)."""
    with (
        _input_stream(path) as raw,
        io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="") as text,
    ):
        reader = pycsv.reader(text, delimiter=options.delimiter_for(path), strict=False)
        line = 0  # physical lines consumed so far
        for fields in reader:
            if fields:  # blank lines give []: pyarrow skips them too
                yield line + 1, fields
            line = reader.line_num


def _undecodable(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def _clip(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")


def _type_name(kind: pa.DataType | None, arrow_name: str) -> str:
    for name, dtype in CSV_DTYPES.items():
        if kind is not None and kind.equals(dtype):
            return name
    return _ARROW_NAMES.get(arrow_name.strip(), arrow_name.strip())


def open_dataset(paths: Sequence[str], fmt: str = "auto", csv: CsvOptions | None = None) -> Dataset:
    """Resolve paths, read every file's metadata and fix one schema for all of them.

    CSV files are parsed as ``csv`` says (default :class:`CsvOptions`). Their column types are
    fixed once, from the first block of the first CSV file with a data row (a header-only file
    says nothing about types); the first 64 KB of every other CSV file are parsed with those
    types here (its first block, if it has columns those types do not cover), so a bad value
    there is reported before training starts.
    """
    options = CsvOptions() if csv is None else csv
    if not isinstance(options, CsvOptions):
        raise UsageError(f"csv must be CsvOptions or None, got {type(options).__name__}")
    resolved = _resolve(paths, fmt)
    files: list[SourceFile] = []
    schemas: list[pa.Schema] = []
    csv_types: dict[str, pa.DataType] | None = None
    csv_files: list[int] = []
    for path, kind, size in resolved:
        if kind == "parquet":
            pf = _open_parquet(path)
            md = pf.metadata
            groups = tuple(md.row_group(i).num_rows for i in range(md.num_row_groups))
            files.append(SourceFile(path, kind, size, groups))
            schemas.append(pf.schema_arrow)
            continue
        if size == 0:
            raise DataError(_empty_message(options), path=path)
        typed = csv_types is not None
        schema, has_rows = _check_head(path, options, csv_types) if typed else (None, None)
        if schema is None:
            schema, has_rows = _probe_csv(
                path, options, csv_types or _given_types(options), rows=not typed
            )
        if not csv_files:
            _check_dtypes(options, schema, path)
        if not typed and has_rows:
            csv_types = _fixed_types(schema, options)
        csv_files.append(len(schemas))
        files.append(SourceFile(path, kind, size))
        schemas.append(schema)
    if csv_files and csv_types is None:  # header-only files only: nothing to infer from
        csv_types = _fixed_types(schemas[csv_files[0]], options)
    for i in csv_files:  # header-only files read before the types were fixed say nothing
        own = _fixed_types(schemas[i], options)
        fixed = {**own, **{n: t for n, t in (csv_types or {}).items() if n in own}}
        schemas[i] = pa.schema(list(fixed.items()))
    schema, notes = _unify(schemas, [f.path for f in files])
    partitions = discover_partitions(
        [f.path for f in files], [partition_dirs(_path_parts(f.path)) for f in files]
    )
    _check_partitions(partitions, schema, files)
    units = []
    for i, f in enumerate(files):
        if f.format == "parquet":
            units.extend(Unit(i, g, n) for g, n in enumerate(f.row_groups))
        else:
            units.append(Unit(i, -1, None))
    csv_schema = None if csv_types is None else pa.schema(list(csv_types.items()))
    return Dataset(
        tuple(files),
        pa.schema([*schema, *partitions.schema]),
        csv_schema,
        tuple(units),
        options,
        partitions=partitions,
        notes=notes,
    )


def _path_parts(path: str) -> list[str]:
    """A path's components (a URI's, decoded), the file name last."""
    if is_uri(path):
        return unquote(_split_uri(path)[1]).split("/")
    return os.path.normpath(path).replace(os.sep, "/").split("/")


def _check_partitions(partitions: Partitions, schema: pa.Schema, files: list[SourceFile]) -> None:
    """A partition key must not also be a column inside the files: which would it be?"""
    for name in partitions.names:
        if name not in schema.names:
            continue
        for f in files:
            hit = [d for d in partition_dirs(_path_parts(f.path)) if d.partition("=")[0] == name]
            if hit:
                raise DataError(
                    f"a hive partition key of the file's directories ({hit[0]}) is also a "
                    "column inside the file; rename one of them",
                    path=f.path,
                    column=name,
                )


def _unify(schemas: list[pa.Schema], paths: list[str]) -> tuple[pa.Schema, tuple[str, ...]]:
    """One schema for all files, and a note for every column whose type differs between them.

    Every file must have the same column names. A column's types must be equal, or widen to
    one type without loss (:func:`_widen`: int32 to int64, float32 to float64, ...), or be
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
            common = _widen(ref.type, f.type)
            if common is None:
                kind, files = next(  # the first file whose type cannot meet this one
                    (t, files) for t, files in seen[f.name].items() if _widen(t, f.type) is None
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


def _widen(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The type that holds every value of ``a`` and of ``b``: the wider of two integers of the
    same signedness or two floats, a signed integer wide enough for an unsigned one, the other
    type for an all-null column; float64 for other numbers (int64 and float32, int64 and
    uint64, decimals); None when they are not both numbers.

    >>> _widen(pa.int32(), pa.int64()), _widen(pa.uint8(), pa.int8())
    (DataType(int64), DataType(int16))
    >>> _widen(pa.int64(), pa.float32()), _widen(pa.string(), pa.float64())
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
