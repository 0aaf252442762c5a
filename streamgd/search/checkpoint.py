"""Checkpoints of a grid: every model's :class:`~streamgd.training.state.TrainState` in one
checksummed, atomically written npz archive (no pickle), so that a killed grid resumes with
every model exactly where it was (the models share one stream position).

Model ``i``'s state is stored under the prefix ``m<i>/`` (its arrays) and as ``members[i]``
(its JSON half); the grid's settings (``labels``) are stored to refuse a resume with another
grid.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Callable, Sequence
from typing import Any

from ..archive import read_archive, write_archive
from ..errors import CheckpointError, UsageError
from ..training.state import TrainState

__all__ = ["GridCheckpoints", "GRID_CHECKPOINT_VERSION"]

GRID_CHECKPOINT_VERSION = 1
KIND = "grid-checkpoint"


class GridCheckpoints:
    """The grid checkpoints of ``directory`` (``grid-<batches>.npz``), newest ``keep`` kept."""

    def __init__(self, directory: str, *, keep: int, warn: Callable[[str], None]) -> None:
        self.directory, self.keep, self.warn = directory, keep, warn
        os.makedirs(directory, exist_ok=True)
        self.superseded: list[str] = []

    def supersede_existing(self) -> None:
        """A fresh run: the grid checkpoints now in the directory are an earlier run's, removed
        once this run's first checkpoint is written (not before)."""
        self.superseded = self.paths()

    def paths(self) -> list[str]:
        """Newest first."""
        return sorted(glob.glob(os.path.join(self.directory, "grid-*.npz")), reverse=True)

    def save(self, states: Sequence[TrainState], labels: Sequence[dict], batches: int) -> str:
        meta: dict[str, Any] = {"labels": list(labels), "batches": batches, "members": []}
        arrays = {}
        for i, state in enumerate(states):
            m, a = state.to_archive()
            meta["members"].append(m)
            arrays |= {f"m{i}/{k}": v for k, v in a.items()}
        path = os.path.join(self.directory, f"grid-{batches:012d}.npz")
        write_archive(
            path,
            kind=KIND,
            version=GRID_CHECKPOINT_VERSION,
            meta=meta,
            arrays=arrays,
            what="the grid checkpoint",
            option="--checkpoint-dir",
        )
        stale, self.superseded = [p for p in self.superseded if p != path], []
        for old in stale + self.paths()[self.keep :]:
            with contextlib.suppress(OSError):
                os.unlink(old)
        return path

    def latest(self, labels: Sequence[dict]) -> tuple[str, list[TrainState], int] | None:
        """The newest grid checkpoint that loads (damaged ones skipped with a warning), as
        (path, each model's state, batches); None when there is none. A checkpoint of
        another grid is a UsageError."""
        for path in self.paths():
            try:
                meta, arrays = read_archive(path, kind=KIND, max_version=GRID_CHECKPOINT_VERSION)
            except CheckpointError as exc:
                self.warn(f"grid checkpoint {path} cannot be used ({exc}); trying an older one")
                continue
            if meta["labels"] != [dict(label) for label in labels]:
                raise UsageError(
                    f"{path}: a checkpoint of another grid ({len(meta['labels'])} models); "
                    "resume with the same settings, or rerun without --resume"
                )
            states = []
            for i, member in enumerate(meta["members"]):
                prefix = f"m{i}/"
                own = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
                states.append(TrainState.from_archive(member, own))
            return path, states, int(meta["batches"])
        return None
