"""The on-disk container for models and checkpoints: npz arrays plus JSON metadata, a SHA-256
checksum verified on load, written atomically. No pickle anywhere: loading a file from
somewhere else can never run code.

Layout (a zip written by ``numpy.savez``): one ``.npy`` member per array, ``__meta__`` (the JSON
text as bytes) and ``__sha256__`` (the digest of the metadata and of every array's name, dtype,
shape and bytes).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import stat
import zipfile
from collections.abc import Callable, Iterator
from typing import IO, Any

import numpy as np

from .errors import CheckpointError, UsageError, environment_failure

__all__ = [
    "write_archive",
    "read_archive",
    "archive_digest",
    "atomic_write",
    "atomic_path",
    "as_path",
    "fsync_dir",
    "is_temp_name",
    "remove_leftovers",
]

MAGIC = "streamgd"


def _digest(meta_bytes: bytes, arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(meta_bytes)
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def fsync_dir(directory: str) -> None:
    with contextlib.suppress(OSError):  # not every platform/filesystem allows it
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# Written by a write that failed halfway (8 random characters, as tempfile.mkstemp's):
# ``.<name>.<random>.tmp``. Only files of this form are ever removed as leftovers.
_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
# The errors of the machine (space, permissions, wrong kind of path) that a write can meet.
_ENVIRONMENT = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ENOENT,
        errno.EIO,
    }
)


def as_path(path: Any, what: str = "the path") -> str:
    """``path`` (a string or ``os.PathLike``) as a string; anything else is a UsageError (an
    integer would be taken by ``open`` as a file descriptor)."""
    if isinstance(path, str | os.PathLike) and not isinstance(path, bytes):
        text = os.fspath(path)
        if isinstance(text, str) and text:
            return text
    raise UsageError(f"{what} must be a file name (a str or pathlib.Path), got {path!r}")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a temporary file of :func:`atomic_path` (not yet renamed)."""
    return bool(_TEMP.match(name))


def remove_leftovers(directory: str, *, before: float, stem: str | None = None) -> list[str]:
    """Remove the temporary files a killed write left in ``directory`` (only names of
    :func:`atomic_path`'s form, beginning ``.<stem>.`` when ``stem`` is given, last modified
    before ``before``, a ``time.time()``); returns the paths removed."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not is_temp_name(name) or (stem is not None and not name.startswith(f".{stem}.")):
            continue
        path = os.path.join(directory, name)
        with contextlib.suppress(OSError):
            if os.path.isfile(path) and os.stat(path).st_mtime < before:
                os.unlink(path)
                removed.append(path)
    return removed


def _ours(exc: OSError, *paths: str) -> bool:
    """Whether ``exc``, raised inside the ``with`` block of :func:`atomic_path`, is the
    machine refusing our write (not, say, an input file read there that is unreadable)."""
    if exc.errno not in _ENVIRONMENT:
        return False
    if exc.filename is None:
        return exc.errno != errno.ENOENT
    name = os.path.abspath(os.fsdecode(exc.filename))
    return any(name == os.path.abspath(p) for p in paths)


@contextlib.contextmanager
def atomic_path(path: str, *, what: str = "the file", option: str | None = None) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto
    ``path`` (and the directory fsynced), on failure removed. Readers never see a half file.

    When the machine refuses the write (no space, permissions, a read-only filesystem, a path
    of the wrong kind), a :class:`~streamgd.errors.WriteError` names ``what`` and ``path`` and
    says what to do (``option``: the setting that chose the path); ``path`` is untouched."""
    path = as_path(path, option or what)
    directory = os.path.dirname(os.path.abspath(path)) or "."

    def failed(exc: OSError) -> Exception:
        return environment_failure(exc, path, what=what, option=option)

    try:
        os.makedirs(directory, exist_ok=True)
        tmp = _create_temp(directory, os.path.basename(path))
    except OSError as exc:
        raise failed(exc) from None
    try:
        yield tmp
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and _ours(exc, tmp, path):
            raise failed(exc) from None
        raise
    try:
        with open(tmp, "rb+") as fh:
            _keep_mode(fh.fileno(), path)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise failed(exc) from None
        raise
    fsync_dir(directory)


_TEMP_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"


def _create_temp(directory: str, name: str) -> str:
    """Create an empty ``.<name>.<8 random characters>.tmp`` in ``directory`` the way a
    plain ``open()`` creates a file: mode 0666 less the umask (``tempfile.mkstemp`` gives 0600,
    which left models unreadable to a serving process running as another user)."""
    for _ in range(100):
        random = "".join(secrets.choice(_TEMP_CHARS) for _ in range(8))
        tmp = os.path.join(directory, f".{name}.{random}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary name", directory)


def _keep_mode(fd: int, path: str) -> None:
    """Give the temporary file behind ``fd`` the permission bits of the file ``path`` it
    replaces, as writing that file in place would keep them (a new file keeps the umask's)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if stat.S_ISREG(mode):
        os.fchmod(fd, stat.S_IMODE(mode) & 0o777)


def atomic_write(
    path: str,
    write: Callable[[IO[bytes]], None],
    *,
    what: str = "the file",
    option: str | None = None,
) -> None:
    """Write a file through ``write(fileobj)`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, what=what, option=option) as tmp, open(tmp, "wb") as fh:
        write(fh)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _encode(kind: str, version: int, meta: dict, arrays: dict[str, np.ndarray]):
    full = {"format": MAGIC, "kind": kind, "version": version, **meta}
    meta_bytes = json.dumps(full, sort_keys=True, default=_jsonable).encode()
    for name, a in arrays.items():
        if a.dtype == object:
            raise TypeError(f"array {name!r} has dtype object; archives hold plain arrays only")
    return meta_bytes, _digest(meta_bytes, arrays)


def archive_digest(*, kind: str, version: int, meta: dict, arrays: dict[str, np.ndarray]) -> str:
    """The SHA-256 that :func:`write_archive` would store for these contents (without writing:
    the same contents always give the same digest, whatever the zip's timestamps)."""
    return _encode(kind, version, meta, arrays)[1]


def write_archive(
    path: str,
    *,
    kind: str,
    version: int,
    meta: dict,
    arrays: dict[str, np.ndarray],
    what: str | None = None,
    option: str | None = None,
) -> str:
    """Atomically write ``meta`` and ``arrays`` as one checksummed file; returns its digest
    (see :func:`archive_digest`). ``what`` and ``option`` word a failed write's message."""
    meta_bytes, digest = _encode(kind, version, meta, arrays)
    members = {
        **arrays,
        "__meta__": np.frombuffer(meta_bytes, dtype=np.uint8),
        "__sha256__": np.frombuffer(digest.encode(), dtype=np.uint8),
    }
    atomic_write(
        path, lambda fh: np.savez(fh, **members), what=what or f"the {kind}", option=option
    )
    return digest


def read_archive(
    path: str, *, kind: str | tuple[str, ...], max_version: int
) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify a file written by :func:`write_archive`.

    Raises :class:`CheckpointError` for a missing, truncated, corrupt, foreign or too-new file.
    """
    meta, members, _ = read_archive_digest(path, kind=kind, max_version=max_version)
    return meta, members


def read_archive_digest(
    path: str, *, kind: str | tuple[str, ...], max_version: int
) -> tuple[dict, dict[str, np.ndarray], str]:
    """:func:`read_archive`, and the file's verified digest."""
    kinds = (kind,) if isinstance(kind, str) else kind
    path = as_path(path, f"the {' or '.join(kinds)} file")
    try:
        with open(path, "rb") as fh:
            loaded = np.load(fh, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("not an npz archive")
            with loaded as z:
                members = {name: z[name] for name in z.files}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, expected a file") from None
    except OSError as exc:
        if exc.errno is None:  # zipfile/numpy reading a damaged file, not the OS refusing
            raise CheckpointError(f"{path}: {_damaged(path)}") from None
        reason = exc.strerror or str(exc)
        raise CheckpointError(f"{path}: cannot be read: {reason}") from None
    except (
        ValueError,
        EOFError,
        zipfile.BadZipFile,
        NotImplementedError,
        RuntimeError,
    ):  # everything zipfile and numpy raise for damaged or foreign files; their words
        # (numpy's "allow_pickle", say) would mislead, so ours say what the file is
        raise CheckpointError(f"{path}: {_damaged(path)}") from None
    try:
        meta_bytes = members.pop("__meta__").tobytes()
        stored = members.pop("__sha256__").tobytes().decode()
        meta = json.loads(meta_bytes)
    except (KeyError, ValueError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: not a streamgd file (no metadata)") from None
    if meta.get("format") != MAGIC or meta.get("kind") not in kinds:
        raise CheckpointError(
            f"{path}: is a {meta.get('kind', 'foreign')} file, expected a {' or '.join(kinds)}"
        )
    if _digest(meta_bytes, members) != stored:
        raise CheckpointError(f"{path}: damaged (checksum mismatch)")
    if int(meta.get("version", 0)) > max_version:
        raise CheckpointError(
            f"{path}: written by a newer streamgd (format {meta['version']}, "
            f"this one reads up to {max_version}); upgrade streamgd"
        )
    return meta, members, stored


def _damaged(path: str) -> str:
    """What a file that numpy or zipfile cannot open is, in our words."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
        size = os.path.getsize(path)
    except OSError:
        return "damaged (not a streamgd archive)"
    if size == 0:
        return "damaged (empty file)"
    if head != b"PK\x03\x04":
        return "damaged (not a streamgd archive: it does not begin like one)"
    return "damaged (not a streamgd archive: truncated or garbled)"
