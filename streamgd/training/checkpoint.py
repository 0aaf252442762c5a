"""Checkpoints: a :class:`TrainState` written atomically, kept K deep, verified on load, and a
lock so that two jobs never train into one directory.

A checkpoint is ``ckpt-<step>.npz`` in the checkpoint directory, in the archive format of
:mod:`streamgd.archive` (npz + JSON + SHA-256, no pickle). Loading tries the newest first and
falls back to older ones when it is corrupt or truncated, with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
from collections.abc import Callable

from ..archive import read_archive, write_archive
from ..errors import CheckpointError
from .state import TrainState

__all__ = [
    "TrainState",
    "CheckpointManager",
    "CHECKPOINT_VERSION",
    "CheckpointVersionError",
    "load_checkpoint",
]

# 2: the state grouped into records (stream, totals, early stopping, trajectory, Dask rounds)
CHECKPOINT_VERSION = 2
_NAME = re.compile(r"^ckpt-(\d{12})\.npz$")
LOCK_NAME = "LOCK"


class CheckpointVersionError(CheckpointError):
    """A checkpoint written by an older streamgd, in a format this one does not read."""


def load_checkpoint(path: str) -> TrainState:
    meta, arrays = read_archive(path, kind="checkpoint", max_version=CHECKPOINT_VERSION)
    found = meta.get("version")
    if found != CHECKPOINT_VERSION:
        raise CheckpointVersionError(
            f"{path}: a version {found} checkpoint, written by an older streamgd; this one "
            f"resumes version {CHECKPOINT_VERSION} checkpoints only. Rerun without --resume "
            "to start afresh (its first checkpoint replaces the old ones), or delete the "
            f"checkpoint directory {os.path.dirname(path) or '.'}"
        )
    try:
        return TrainState.from_archive(meta, arrays)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: checkpoint lacks or garbles {exc}") from None


class CheckpointManager:
    """Saves and finds checkpoints in one directory, which it locks while in use."""

    def __init__(
        self, directory: str, *, keep: int = 3, warn: Callable[[str], None] | None = None
    ) -> None:
        self.directory = directory
        self.keep = keep
        self.warn = warn or (lambda msg: None)
        self._lock_fd: int | None = None
        self._superseded: list[str] = []

    # -- the lock -----------------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the directory's lock, or fail naming the process that holds it. The lock is an
        ``flock`` on a file, so the OS releases it when its holder dies: a stale lock file left
        by a killed job is simply taken over."""
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, LOCK_NAME)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise CheckpointError(
                    f"{self.directory}: another streamgd job (pid {holder}) is training into "
                    "this checkpoint directory; wait for it or use another --checkpoint-dir"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> CheckpointManager:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- saving and loading -------------------------------------------------------------------
    def paths(self) -> list[str]:
        """Checkpoint files, newest (highest step) first."""
        if not os.path.isdir(self.directory):
            return []
        names = sorted((n for n in os.listdir(self.directory) if _NAME.match(n)), reverse=True)
        return [os.path.join(self.directory, n) for n in names]

    def supersede_existing(self) -> None:
        """A fresh run: the checkpoints now in the directory belong to an earlier run and are
        removed after this run's first checkpoint is safely written (not before)."""
        self._superseded = self.paths()

    def save(self, state: TrainState) -> str:
        """Write ``state`` atomically as ``ckpt-<step>.npz``, then prune to the newest K."""
        meta, arrays = state.to_archive()
        path = os.path.join(self.directory, f"ckpt-{state.step:012d}.npz")
        write_archive(path, kind="checkpoint", version=CHECKPOINT_VERSION, meta=meta, arrays=arrays)
        stale = [p for p in self._superseded if p != path]
        self._superseded = []
        for old in stale + self.paths()[self.keep :]:
            with contextlib.suppress(OSError):
                os.unlink(old)
        return path

    def latest(self) -> tuple[str, TrainState] | None:
        """The newest checkpoint that loads and verifies; corrupt ones are skipped with a
        warning. ``None`` when there is none at all; an error when all are corrupt. A
        checkpoint of an older format is never skipped for an older one (or for a fresh
        start): it ends the search with an error saying what to do."""
        paths = self.paths()
        errors = []
        for path in paths:
            try:
                return path, load_checkpoint(path)
            except CheckpointVersionError:
                raise
            except CheckpointError as exc:
                errors.append(str(exc))
                self.warn(f"skipping unusable checkpoint: {exc}")
        if errors:
            raise CheckpointError(
                f"{self.directory}: none of the {len(paths)} checkpoint(s) can be used "
                f"({errors[0]}); nothing was overwritten"
            )
        return None
