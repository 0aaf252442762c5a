"""What identifies an input file's content, taken cheaply enough to check at every open.

A :class:`Stamp` holds a file's size, its modification time (ns) and a digest of a small part
of its bytes that changes with its content:

- **Parquet**: SHA-256 of the footer, the serialized ``FileMetaData`` read from the file's end
  (two reads: the last 8 bytes say the footer's length, then the footer). The footer holds the
  schema, every row group's row count and every column chunk's offsets, sizes and statistics
  (min, max, null count), so rewritten values almost always change it. No data page is read.
- **CSV**: SHA-256 of the first and the last :data:`BLOCK` bytes (and the size), so a header,
  an appended row or a rewritten file changes it; never more than ``2 * BLOCK`` bytes read.
- **URIs** (``s3://`` and other ``pyarrow.fs`` filesystems): the same, from what the filesystem
  says (size; modification time when it gives one) and ranged reads of the same bytes.

**A changed modification time alone (a ``touch``) counts as a change.** The digest covers the
footer (or the ends of a CSV file), not the data pages: a value rewritten in place inside a
Parquet file without compression whose statistics stay the same, or a same-length edit in the
middle of a CSV file, leaves it as it was, and the modification time is then the only witness.
Accepting a newer time with an equal digest would accept exactly those edits; refusing it costs a
user whose file was only touched one ``touch -d`` (restoring the time, which the message gives)
or a fresh start. Messages say when the digest is unchanged, so such a user knows it.

Local files are also identified by device and inode (not part of the saved fingerprint: a file
copied back with its time kept keeps its stamp), so :func:`verify`, called on every row group a run
reads, costs one ``stat`` while the file is the one stamped and reads the footer again only
when the file behind the path is another one. A URI's object has no inode and its modification
time may be to the second, so after each row group read from it :func:`check_footer` reads the
stamped footer's range again (one small ranged request) and compares it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..errors import DataError
from .paths import is_uri, short_error

__all__ = [
    "BLOCK",
    "FINGERPRINT_VERSION",
    "Stamp",
    "stamp_file",
    "stamp_parquet",
    "verify",
    "footer_matches",
    "differences",
    "check_footer",
]

# Version of the saved fingerprint (``Dataset.fingerprint()["version"]``). Version 1, without
# this key, held paths, sizes and row-group layouts only.
FINGERPRINT_VERSION = 2
BLOCK = 64 << 10  # bytes of a CSV file's head and of its tail in its digest
_PARQUET_MAGIC = (b"PAR1", b"PARE")  # plain and encrypted footers


@dataclass(frozen=True)
class Stamp:
    """A file's size (-1 when its filesystem does not say), modification time in ns (None when
    its filesystem does not say) and content digest (see the module docstring)."""

    size: int
    mtime_ns: int | None
    digest: str
    # (device, inode, size, mtime_ns) of the local file stamped; () for a URI
    identity: tuple[int, ...] = field(default=(), compare=False)
    # a Parquet file's rows per row group, as its footer says (only when asked: layout=True)
    row_groups: tuple[int, ...] | None = field(default=None, compare=False)
    footer_size: int = field(default=0, compare=False)  # a Parquet file's footer, in bytes

    def to_dict(self) -> dict[str, Any]:
        # "" for in-memory data not hashed (a run without checkpoints): None in fingerprints
        return {"size": self.size, "mtime_ns": self.mtime_ns, "digest": self.digest or None}


class _Reader:
    """Random reads of one open file, local or behind a URI, with its size and mtime."""

    def __init__(self, path: str) -> None:
        self.path = path
        if is_uri(path):
            try:  # as paths.input_file opens it, with the file's info from the same filesystem
                fs, inner = pafs.FileSystem.from_uri(path)
                info = fs.get_file_info(inner)
                self._file = fs.open_input_file(inner)
                size = self._file.size() if info.size is None else info.size
            except (OSError, pa.ArrowException) as exc:
                why = short_error(exc)
                raise DataError(f"cannot access the file ({why})", path=path) from None
            self.size, self.mtime_ns = int(size), info.mtime_ns
            self.identity: tuple[int, ...] = ()
        else:
            try:
                self._local = open(path, "rb")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise DataError(f"cannot open the file ({short_error(exc)})", path=path) from None
            st = os.fstat(self._local.fileno())
            self.size, self.mtime_ns = st.st_size, st.st_mtime_ns
            self.identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def read_at(self, offset: int, n: int) -> bytes:
        try:
            if is_uri(self.path):
                return bytes(self._file.read_at(n, offset))
            return os.pread(self._local.fileno(), n, offset)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"cannot read the file ({short_error(exc)})", path=self.path) from None

    def close(self) -> None:
        (self._file if is_uri(self.path) else self._local).close()


def stamp_file(path: str, fmt: str, *, layout: bool = False) -> Stamp:
    """The stamp of the file at ``path`` (``fmt`` ``"parquet"`` or ``"csv"``), taken from one
    open file, so that size, time and digest describe the same file even while it is replaced.
    With ``layout``, a Parquet stamp also holds the row groups its footer says (parsed again:
    about as costly as opening the file).

    Raises:
        DataError: the file cannot be read, or a Parquet file has no Parquet footer.
    """
    if fmt == "parquet" and layout:
        return stamp_parquet(path)[0]
    reader = _Reader(path)
    try:
        if fmt == "parquet":
            footer = _parquet_footer(reader)
            digest = hashlib.sha256(footer).hexdigest()[:32]
        else:
            footer, digest = b"", _csv_digest(reader)
    finally:
        reader.close()
    return Stamp(reader.size, reader.mtime_ns, digest, reader.identity, None, len(footer))


def stamp_parquet(path: str) -> tuple[Stamp, pq.FileMetaData]:
    """A Parquet file's stamp with its layout, and its footer parsed: the metadata of the very
    bytes the digest was taken of (one read of the footer; opening a dataset parses each
    footer once, for its schema, its layout and its stamp)."""
    reader = _Reader(path)
    try:
        footer = _parquet_footer(reader)
    finally:
        reader.close()
    md = _footer_metadata(footer, path)
    groups = tuple(md.row_group(i).num_rows for i in range(md.num_row_groups))
    digest = hashlib.sha256(footer).hexdigest()[:32]
    stamp = Stamp(reader.size, reader.mtime_ns, digest, reader.identity, groups, len(footer))
    return stamp, md


def footer_matches(read_at: Callable[[int, int], bytes], expect: Stamp) -> bool:
    """Whether a Parquet file open for reading (``read_at(offset, n)``: a memory map, say) ends
    in the footer ``expect`` stamped: its bytes, length and magic where they were (one copy of
    the footer, a few KB, and its hash: ~0.01 ms)."""
    n = expect.footer_size
    if not n or expect.size < n + 12:
        return False
    try:
        end = bytes(read_at(expect.size - n - 8, n + 8))
    except (OSError, pa.ArrowException):
        return False
    return (
        len(end) == n + 8
        and hashlib.sha256(end[:n]).hexdigest()[:32] == expect.digest
        and int.from_bytes(end[n : n + 4], "little") == n
        and end[n + 4 :] in _PARQUET_MAGIC
    )


def _parquet_footer(reader: _Reader) -> bytes:
    """The serialized FileMetaData: the ``n`` bytes before the file's last 8, which are ``n``
    (4 bytes, little-endian) and the magic ``PAR1``. Two small reads (two ranged requests to
    an object store), neither touching a data page."""
    size = max(reader.size, 0)
    tail = reader.read_at(size - 8, 8) if size >= 12 else b""
    n = int.from_bytes(tail[:4], "little") if len(tail) == 8 else -1
    if n < 0 or tail[4:] not in _PARQUET_MAGIC or not 0 < n <= size - 12:
        raise DataError(
            "not a readable Parquet file (no Parquet footer at its end)", path=reader.path
        )
    footer = reader.read_at(size - 8 - n, n)
    if len(footer) != n:
        raise DataError("not a readable Parquet file (its footer is cut short)", path=reader.path)
    return footer


def _csv_digest(reader: _Reader) -> str:
    h = hashlib.sha256(str(reader.size).encode() + b";")
    h.update(reader.read_at(0, BLOCK))
    if reader.size > BLOCK:
        h.update(reader.read_at(max(BLOCK, reader.size - BLOCK), BLOCK))
    return h.hexdigest()[:32]


def _footer_metadata(footer: bytes, path: str) -> pq.FileMetaData:
    """A Parquet footer parsed: the footer framed as a file of its own (pyarrow parses the
    metadata without touching the column chunks it points to, whose offsets are the file's)."""
    framed = b"PAR1" + footer + len(footer).to_bytes(4, "little") + b"PAR1"
    try:
        return pq.read_metadata(pa.BufferReader(framed))
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"not a readable Parquet file ({short_error(exc)})", path=path) from None


def verify(
    path: str, fmt: str, expect: Stamp, *, known: tuple[int, ...] = (), full: bool = False
) -> tuple[int, ...]:
    """Check that the file at ``path`` is still the one ``expect`` stamped; return its local
    identity, to pass back as ``known`` on the next call.

    Cheap on the common path: a local file whose identity (device, inode, size, mtime) is the
    stamped one or ``known`` costs one ``stat``. Otherwise (and always with ``full``, and for a
    URI) the file is stamped again, which reads its footer or its ends, and compared.

    Raises:
        DataError: the file changed since ``expect`` was taken, naming it and what changed.
    """
    if not full and not is_uri(path):
        try:
            st = os.stat(path)
        except OSError as exc:
            why = f"it cannot be opened now: {short_error(exc)}"
            raise DataError(_changed(why), path=path) from None
        now = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if now in (expect.identity, known):
            return now
    stamp = stamp_file(path, fmt)
    what = differences(expect.to_dict(), stamp.to_dict())
    if what:
        raise DataError(_changed(what), path=path)
    return stamp.identity


def check_footer(read_at: Callable[[int, int], bytes], path: str, expect: Stamp) -> None:
    """Check a Parquet file already open (``read_at(offset, n)`` reads it) against ``expect``
    by one read: the stamped footer's range, its length and magic, which must be where and
    what they were. For a file behind a URI, whose row groups are fetched by ranged requests
    of the object's key as it is now, this is one more small request per row group, and shows
    that the object the row group came from is still the stamped one.

    Raises:
        DataError: the footer is not there any more, or differs.
    """
    if not footer_matches(read_at, expect):
        raise DataError(_changed("content changed"), path=path)


def _changed(what: str) -> str:
    return (
        f"the file changed during the run ({what}); stopped rather than train on a mix of "
        "its old and new versions: rerun to train on the new version"
    )


def differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What differs between two stamps as :meth:`Stamp.to_dict` gives them, in words ("" when
    nothing does).

    >>> old = {"size": 10, "mtime_ns": 1, "digest": "a"}
    >>> differences(old, {"size": 12, "mtime_ns": 2, "digest": "b"})
    'size 10 -> 12 bytes, modification time changed, content changed'
    >>> differences(old, {"size": 10, "mtime_ns": 2, "digest": "a"})
    'modification time changed (content digest the same)'
    """
    parts = []
    if old.get("size") != new.get("size"):
        parts.append(f"size {old.get('size')} -> {new.get('size')} bytes")
    if old.get("mtime_ns") != new.get("mtime_ns"):
        parts.append("modification time changed")
    if old.get("digest") != new.get("digest"):
        parts.append("content changed")
    elif parts == ["modification time changed"]:
        return "modification time changed (content digest the same)"
    return ", ".join(parts)
