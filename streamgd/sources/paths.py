"""Paths and URIs: formats by extension, globs and directories expanded, remote listings,
files opened through ``pyarrow.fs``.

A path may also be a URI of any filesystem ``pyarrow.fs`` opens by URI (``s3://bucket/key``,
``gs://``, ``abfs://``, ``hdfs://``, ``file:///abs/path``): files, globs and directories work as
local ones do, read through ``pyarrow.fs`` by ranged reads (Parquet) or streams (CSV), never
downloaded whole. See :func:`is_uri`.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import posixpath
import re
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.fs as pafs

from ..choices import FORMATS
from ..errors import DataError, UsageError

__all__ = [
    "PARQUET_EXTENSIONS",
    "TSV_EXTENSIONS",
    "CSV_EXTENSIONS",
    "FORMATS",
    "detect_format",
    "resolve_paths",
    "resolve_with_sizes",
    "is_uri",
    "split_uri",
    "file_name",
    "input_file",
    "input_stream",
    "path_parts",
    "short_error",
]

PARQUET_EXTENSIONS = (".parquet", ".parq", ".pq")
TSV_EXTENSIONS = (".tsv", ".tsv.gz", ".tsv.bz2", ".tsv.zst")  # tab-separated by default
CSV_EXTENSIONS = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst", *TSV_EXTENSIONS)
_GLOB_CHARS = set("*?[")


def detect_format(path: str) -> str | None:
    """``"parquet"`` or ``"csv"`` by the file name's extension (a URI's query aside), else None.

    >>> detect_format("s3://bucket/part-0.csv.gz?scheme=http"), detect_format("a.txt")
    ('csv', None)
    """
    low = file_name(path).lower()
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
    return [(path, kind) for path, kind, _ in resolve_with_sizes(paths, fmt)]


def resolve_with_sizes(paths: Sequence[str], fmt: str) -> list[tuple[str, str, int]]:
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
            raise _no_match(raw, path)
    elif os.path.isdir(path):
        matches = _walk(path, fmt)
        if not matches:
            raise UsageError(f"{raw}: the directory holds no Parquet or CSV file")
    elif os.path.isfile(path):
        matches = [path]
    else:
        raise UsageError(f"{raw}: no such file or directory")
    return [(p, os.path.getsize(p)) for p in matches]


def _no_match(raw: str, path: str) -> UsageError:
    """The error of a local pattern matching no file; when the files it names are further
    down (``data/*.csv`` with ``data/`` holding only directories of them), it says where."""
    head, tail = os.path.split(path)
    if not _GLOB_CHARS & set(head) and os.path.isdir(head or "."):
        # one or two levels down only: a pattern in a home directory must not walk it all
        deeper = [p for d in ("*", "*/*") for p in glob.glob(os.path.join(head, d, tail))]
        places = sorted({os.path.dirname(p) for p in deeper if os.path.isfile(p)})
        if places:
            shown = ", ".join(places[:5]) + (", ..." if len(places) > 5 else "")
            return UsageError(
                f"{raw}: the pattern matches no file; files in subdirectories do ({shown}): "
                f"give one of those directories, or '{os.path.join(head, '**', tail)}' "
                "(quoted) for all of them"
            )
    return UsageError(f"{raw}: the pattern matches no file")


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


def split_uri(uri: str) -> tuple[str, str, str]:
    """``(scheme://authority, path, query)``.

    >>> split_uri("s3://bucket/data/part-?.parquet?scheme=http")
    ('s3://bucket', '/data/part-?.parquet', '?scheme=http')
    """
    match = _QUERY.search(uri)
    head, query = (uri[: match.start()], match.group()) if match else (uri, "")
    start = _URI.match(head).end()  # type: ignore[union-attr]
    slash = head.find("/", start)
    return (head, "", query) if slash < 0 else (head[:slash], head[slash:], query)


def file_name(path: str) -> str:
    """The file name: the last component of a local path, or of a URI's (decoded) path."""
    if not is_uri(path):
        return os.path.basename(path)
    return unquote(posixpath.basename(split_uri(path)[1]))


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem for ``uri`` and the path within it. A URI pyarrow cannot use (no
    such scheme, a bad query parameter, a syntax error) is a usage error; a filesystem it cannot
    set up (HDFS without its library, say) a data error."""
    try:
        return pafs.FileSystem.from_uri(uri)
    except OSError as exc:
        raise DataError(f"cannot access the filesystem ({short_error(exc)})", path=uri) from None
    except pa.ArrowException as exc:
        raise UsageError(f"{uri}: not a usable URI ({short_error(exc)})") from None


def _access(uri: str, call: Callable[[], _T]) -> _T:
    """``call()``, a request to a filesystem: its failure (unreachable endpoint, denied
    credentials) becomes one line naming ``uri`` and pyarrow's reason."""
    try:
        return call()
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"cannot access the file ({short_error(exc)})", path=uri) from None


def _expand_uri(raw: str, fmt: str) -> list[tuple[str, int]]:
    prefix, path, query = split_uri(raw)
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


def input_file(path: str) -> str | pa.NativeFile:
    """What :class:`pq.ParquetFile` opens: a local path as it is, or a URI's random-access file,
    which fetches by ranged reads only the footer and the column chunks asked for."""
    if not is_uri(path):
        return path
    fs, inner = _filesystem(path)
    return _access(path, lambda: fs.open_input_file(inner))


def input_stream(path: str) -> pa.NativeFile:
    """A file's bytes as a stream, decompressed by the file name's extension."""
    if not is_uri(path):
        return pa.input_stream(path, compression="detect")
    fs, inner = _filesystem(path)
    return _access(path, lambda: fs.open_input_stream(inner, compression="detect"))


def short_error(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def path_parts(path: str) -> list[str]:
    """A path's components (a URI's, decoded), the file name last."""
    if is_uri(path):
        return unquote(split_uri(path)[1]).split("/")
    return os.path.normpath(path).replace(os.sep, "/").split("/")
