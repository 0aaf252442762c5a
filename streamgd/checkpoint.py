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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .archive import read_archive, write_archive
from .batches import Cursor
from .errors import CheckpointError
from .features import FeatureSpec
from .losses import get_loss
from .model import spec_arrays, spec_from, spec_meta

__all__ = ["TrainState", "CheckpointManager", "CHECKPOINT_VERSION", "load_checkpoint"]

CHECKPOINT_VERSION = 1
_NAME = re.compile(r"^ckpt-(\d{12})\.npz$")
LOCK_NAME = "LOCK"


@dataclass
class TrainState:
    """Everything that decides the rest of a run. Resume = load this and continue."""

    params: np.ndarray  # [weights..., intercept] in standardised units
    opt_state: dict[str, np.ndarray]
    spec: FeatureSpec
    config: dict[str, Any]  # FitConfig.to_dict()
    data: dict[str, Any]  # Dataset.fingerprint()
    step: int = 0
    cursor: Cursor = field(default_factory=Cursor)  # cursor.epoch is the current epoch
    buffer: np.ndarray | None = None  # the shuffle buffer's slots (rows)
    buffer_free: np.ndarray | None = None  # its empty slots, in fill order
    buffer_tail: np.ndarray | None = None  # rows short of a whole run
    rng_state: dict | None = None  # the shuffle buffer's generator
    epoch_counts: np.ndarray | None = None  # [null targets, imputed per feature] this epoch
    epoch_loss: float = 0.0  # sum of per-row losses this epoch (before each update)
    epoch_rows: int = 0
    epoch_start: np.ndarray | None = None  # params at the start of the epoch (for --tol)
    epoch_metrics: dict[str, np.ndarray] | None = None  # running training metrics' sums
    rows_trained: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False
    stop_reason: str | None = None
    # early stopping on the validation loss (--patience)
    best_loss: float | None = None
    best_params: np.ndarray | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    # the recorded weight-space trajectory (--record-path): rows of [step, params...]
    path: np.ndarray | None = None
    path_stride: int = 0
    # distributed training (--cluster): one cursor per shard, and the round counter
    shards: list[dict[str, Any]] | None = None
    round: int = 0

    @property
    def epoch(self) -> int:
        return self.cursor.epoch

    def shuffle_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict] | None:
        if self.buffer is None or self.buffer_free is None or self.rng_state is None:
            return None
        tail = self.buffer_tail
        if tail is None:
            tail = np.empty((0, self.buffer.shape[1]), dtype=self.buffer.dtype)
        return self.buffer, self.buffer_free, tail, self.rng_state

    @property
    def buffered_rows(self) -> int:
        if self.buffer is None or self.buffer_free is None:
            return 0
        tail = 0 if self.buffer_tail is None else len(self.buffer_tail)
        return (len(self.buffer) - len(self.buffer_free)) * self.buffer.shape[2] + tail

    def running_loss(self) -> float | None:
        """Mean loss of this epoch's rows so far, in the target's units."""
        if not self.epoch_rows:
            return None
        power = get_loss(self.config["loss"]).scale_power
        return self.epoch_loss / self.epoch_rows * self.spec.target_scale**power

    def to_archive(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {"params": self.params, **spec_arrays(self.spec)}
        arrays |= {f"opt.{k}": np.asarray(v) for k, v in self.opt_state.items()}
        arrays |= {f"metric.{k}": np.asarray(v) for k, v in (self.epoch_metrics or {}).items()}
        for name in (
            "buffer",
            "buffer_free",
            "buffer_tail",
            "epoch_counts",
            "epoch_start",
            "best_params",
            "path",
        ):
            value = getattr(self, name)
            if value is not None:
                arrays[name] = np.ascontiguousarray(value)
        meta = {
            "step": self.step,
            "cursor": {
                "epoch": self.cursor.epoch,
                "position": self.cursor.position,
                "offset": self.cursor.offset,
            },
            "rng_state": self.rng_state,
            "epoch_loss": self.epoch_loss,
            "epoch_rows": self.epoch_rows,
            "rows_trained": self.rows_trained,
            "history": self.history,
            "finished": self.finished,
            "stop_reason": self.stop_reason,
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "path_stride": self.path_stride,
            "shards": self.shards,
            "round": self.round,
            "config": self.config,
            "data": self.data,
            **spec_meta(self.spec),
            "opt_keys": sorted(self.opt_state),
        }
        return meta, arrays

    @classmethod
    def from_archive(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> TrainState:
        c = meta["cursor"]
        return cls(
            params=arrays["params"],
            opt_state={k: arrays[f"opt.{k}"] for k in meta["opt_keys"]},
            spec=spec_from(meta, arrays),
            config=meta["config"],
            data=meta["data"],
            step=int(meta["step"]),
            cursor=Cursor(int(c["epoch"]), int(c["position"]), int(c["offset"])),
            buffer=arrays.get("buffer"),
            buffer_free=arrays.get("buffer_free"),
            buffer_tail=arrays.get("buffer_tail"),
            rng_state=meta["rng_state"],
            epoch_counts=arrays.get("epoch_counts"),
            epoch_loss=float(meta["epoch_loss"]),
            epoch_rows=int(meta["epoch_rows"]),
            epoch_start=arrays.get("epoch_start"),
            epoch_metrics={k[7:]: v for k, v in arrays.items() if k.startswith("metric.")} or None,
            rows_trained=int(meta["rows_trained"]),
            history=list(meta["history"]),
            finished=bool(meta["finished"]),
            stop_reason=meta.get("stop_reason"),
            best_loss=meta.get("best_loss"),
            best_params=arrays.get("best_params"),
            best_epoch=int(meta.get("best_epoch", 0)),
            bad_epochs=int(meta.get("bad_epochs", 0)),
            path=arrays.get("path"),
            path_stride=int(meta.get("path_stride", 0)),
            shards=meta.get("shards"),
            round=int(meta.get("round", 0)),
        )


def load_checkpoint(path: str) -> TrainState:
    meta, arrays = read_archive(path, kind="checkpoint", max_version=CHECKPOINT_VERSION)
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
        warning. ``None`` when there is none at all; an error when all are corrupt."""
        paths = self.paths()
        errors = []
        for path in paths:
            try:
                return path, load_checkpoint(path)
            except CheckpointError as exc:
                errors.append(str(exc))
                self.warn(f"skipping unusable checkpoint: {exc}")
        if errors:
            raise CheckpointError(
                f"{self.directory}: none of the {len(paths)} checkpoint(s) can be used "
                f"({errors[0]}); nothing was overwritten"
            )
        return None
