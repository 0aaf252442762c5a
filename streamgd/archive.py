"""The on-disk container for models and checkpoints: npz arrays plus JSON metadata, a SHA-256
checksum verified on load, written atomically. No pickle anywhere: loading a file from
somewhere else can never run code.

Layout (a zip written by ``numpy.savez``): one ``.npy`` member per array, ``__meta__`` (the JSON
text as bytes) and ``__sha256__`` (the digest of the metadata and of every array's name, dtype,
shape and bytes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from typing import IO, Any

import numpy as np

from .errors import CheckpointError

__all__ = ["write_archive", "read_archive", "atomic_write", "atomic_path", "fsync_dir"]

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


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto
    ``path`` (and the directory fsynced), on failure removed. Readers never see a half file."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(directory)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file through ``write(fileobj)`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_archive(
    path: str, *, kind: str, version: int, meta: dict, arrays: dict[str, np.ndarray]
) -> None:
    """Atomically write ``meta`` and ``arrays`` as one checksummed file."""
    full = {"format": MAGIC, "kind": kind, "version": version, **meta}
    meta_bytes = json.dumps(full, sort_keys=True, default=_jsonable).encode()
    for name, a in arrays.items():
        if a.dtype == object:
            raise TypeError(f"array {name!r} has dtype object; archives hold plain arrays only")
    members = {
        **arrays,
        "__meta__": np.frombuffer(meta_bytes, dtype=np.uint8),
        "__sha256__": np.frombuffer(_digest(meta_bytes, arrays).encode(), dtype=np.uint8),
    }
    atomic_write(path, lambda fh: np.savez(fh, **members))


def read_archive(
    path: str, *, kind: str | tuple[str, ...], max_version: int
) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify a file written by :func:`write_archive`.

    Raises :class:`CheckpointError` for a missing, truncated, corrupt, foreign or too-new file.
    """
    kinds = (kind,) if isinstance(kind, str) else kind
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
    except (
        OSError,
        ValueError,
        EOFError,
        zipfile.BadZipFile,
        NotImplementedError,
        RuntimeError,
    ) as exc:  # everything zipfile and numpy raise for damaged or foreign files
        raise CheckpointError(f"{path}: not a readable streamgd file ({exc})") from None
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
        raise CheckpointError(f"{path}: checksum mismatch, the file is corrupt")
    if int(meta.get("version", 0)) > max_version:
        raise CheckpointError(
            f"{path}: written by a newer streamgd (format {meta['version']}, "
            f"this one reads up to {max_version}); upgrade streamgd"
        )
    return meta, members
