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
import time
from collections.abc import Callable

from ..archive import read_archive, remove_leftovers, write_archive
from ..errors import CheckpointError, EnvironmentFailure, environment_failure
from .state import TrainState

__all__ = [
    "TrainState",
    "CheckpointManager",
    "CHECKPOINT_VERSION",
    "CheckpointVersionError",
    "load_checkpoint",
    "PathLock",
    "MODEL_DIGEST_KEY",
]

# 2: the state grouped into records (stream, totals, early stopping, trajectory, Dask rounds)
# 3: the epoch's order reads several units at once (lanes): a version 2 cursor points into an
#    order this streamgd no longer draws, so resuming it would see some rows twice, some never
CHECKPOINT_VERSION = 3
_NAME = re.compile(r"^ckpt-(\d{12})\.npz$")
LOCK_NAME = "LOCK"
# The finished state's checkpoint records the digest of the model it makes (see
# :func:`streamgd.archive.archive_digest`), so that a rerun can check the file at --output.
MODEL_DIGEST_KEY = "final_model_sha256"


class CheckpointVersionError(CheckpointError):
    """A checkpoint written by an older streamgd, in a format this one does not read."""


def load_checkpoint(path: str) -> TrainState:
    return _load(path)[0]


def _load(path: str) -> tuple[TrainState, dict]:
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
        return TrainState.from_archive(meta, arrays), meta
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: checkpoint lacks or garbles {exc}") from None


class PathLock:
    """An exclusive ``flock`` on the file ``path``, which holds its holder's PID. The OS
    releases it when its holder dies, so a lock file left by a killed job is simply taken
    over. ``busy`` words the refusal when another job holds it (``{pid}`` is filled in);
    ``option`` is the setting that chose the path."""

    def __init__(self, path: str, *, busy: str, option: str) -> None:
        self.path, self.busy, self.option = path, busy, option
        self._fd: int | None = None
        self.acquired_at: float | None = None

    def acquire(self) -> None:
        path = self.path
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except IsADirectoryError:
            raise EnvironmentFailure(
                f"{path}: is a directory where streamgd keeps its lock file; remove it or "
                f"choose another {self.option}",
                path=path,
                errno=errno.EISDIR,
            ) from None
        except OSError as exc:
            raise environment_failure(
                exc, path, what="the lock file", option=self.option, cls=EnvironmentFailure
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = "another process"
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or holder
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise CheckpointError(self.busy.format(pid=holder)) from None
            raise EnvironmentFailure(
                f"{path}: cannot be locked ({exc.strerror or exc}); put it on a filesystem "
                f"that supports locks (flock) or choose another {self.option}",
                path=path,
                errno=exc.errno,
            ) from None
        with contextlib.suppress(OSError):  # the PID is for messages only
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        self.acquired_at = time.time()

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            self._fd = None

    def __enter__(self) -> PathLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class CheckpointManager:
    """Saves and finds checkpoints in one directory, which it locks while in use."""

    def __init__(
        self, directory: str, *, keep: int = 3, warn: Callable[[str], None] | None = None
    ) -> None:
        self.directory = directory
        self.keep = keep
        self.warn = warn or (lambda msg: None)
        self._superseded: list[str] = []
        self._lock = PathLock(
            os.path.join(directory, LOCK_NAME),
            busy=f"{directory}: another streamgd job (pid {{pid}}) is training into this "
            "checkpoint directory; wait for it or use another --checkpoint-dir",
            option="--checkpoint-dir",
        )
        # Set by the trainer's owner: the digest of the model a finished state makes, recorded
        # in the last checkpoint; and the digest recorded in the checkpoint found by latest().
        self.model_digest: Callable[[TrainState], str] | None = None
        self.recorded_model_digest: str | None = None

    # -- the lock -----------------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the directory's lock (see :class:`PathLock`), or fail naming the process that
        holds it; then remove the temporary files a killed write left behind."""
        self._lock.acquire()
        remove_leftovers(self.directory, before=self._lock.acquired_at or time.time())

    def release(self) -> None:
        self._lock.release()

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
        if state.finished and self.model_digest is not None:
            meta[MODEL_DIGEST_KEY] = self.model_digest(state)
        path = os.path.join(self.directory, f"ckpt-{state.step:012d}.npz")
        write_archive(
            path,
            kind="checkpoint",
            version=CHECKPOINT_VERSION,
            meta=meta,
            arrays=arrays,
            what="the checkpoint",
            option="--checkpoint-dir",
        )
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
                state, meta = _load(path)
            except CheckpointVersionError:
                raise
            except CheckpointError as exc:
                errors.append((path, _reason(exc, path)))
                continue
            for bad, reason in errors:
                self.warn(f"checkpoint {bad} is {reason}; using the previous one {path}")
            self.recorded_model_digest = meta.get(MODEL_DIGEST_KEY)
            return path, state
        if errors:
            bad, reason = errors[0]
            raise CheckpointError(
                f"{self.directory}: none of the {len(paths)} checkpoint(s) can be used "
                f"(the newest, {bad}, is {reason}); nothing was overwritten: rerun without "
                "--resume to start afresh"
            )
        return None


def _reason(exc: CheckpointError, path: str) -> str:
    """The message of ``exc`` without the path it begins with."""
    text = str(exc)
    text = text[len(path) + 2 :] if text.startswith(f"{path}: ") else text
    if text.startswith("is "):
        return text[3:]
    return text if text.startswith("damaged") else f"unusable ({text})"
