"""The explicit state of a training run: everything that decides its future, serialisable
to a checkpoint archive. Resume = load this and continue."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..cursor import Cursor
from ..features import FeatureSpec
from ..losses import get_loss
from ..spec_archive import spec_arrays, spec_from, spec_meta

__all__ = ["TrainState"]


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
    trajectory: np.ndarray | None = None
    trajectory_stride: int = 0
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
            "trajectory",
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
            "trajectory_stride": self.trajectory_stride,
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
            trajectory=arrays.get("trajectory"),
            trajectory_stride=int(meta.get("trajectory_stride", 0)),
            shards=meta.get("shards"),
            round=int(meta.get("round", 0)),
        )
