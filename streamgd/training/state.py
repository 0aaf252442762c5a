"""The explicit state of a training run: everything that decides its future, serialisable
to a checkpoint archive. Resume = load this and continue.

:class:`TrainState` groups its fields into named records (the stream, the epoch's totals,
early stopping, the recorded trajectory, the Dask rounds). One generic codec turns any such
dataclass into an archive's two halves and back: arrays go to the npz side, scalars, lists
and dicts to the JSON meta, a nested record's fields under its name as a prefix
(``stream.cursor.epoch``), and a field with a :class:`Codec` in its metadata through that
codec. A field missing from an archive takes its default, so adding a field is one line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..cursor import Cursor
from ..features import FeatureSpec
from ..losses import get_loss
from ..spec_archive import spec_arrays, spec_from, spec_meta

__all__ = [
    "TrainState",
    "StreamState",
    "EpochTotals",
    "EarlyStopping",
    "Trajectory",
    "DaskRounds",
    "Continual",
    "Codec",
    "record_to_archive",
    "record_from_archive",
]

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Codec:
    """How a field that is neither a plain value, an array nor a record is archived:
    ``save(value) -> (JSON value, arrays)`` and ``load(JSON value, arrays) -> value``; the
    arrays are stored under the field's name as a prefix."""

    save: Callable[[Any], tuple[Any, Arrays]]
    load: Callable[[Any, Arrays], Any]


# A dict of named arrays (an optimiser's state, running metric sums): the names in the meta.
ARRAY_DICT = Codec(
    save=lambda d: (sorted(d), {k: np.asarray(v) for k, v in d.items()}),
    load=lambda names, arrays: {k: arrays[k] for k in names},
)
CURSORS = Codec(
    save=lambda cursors: ([dataclasses.asdict(c) for c in cursors], {}),
    load=lambda rows, _: [Cursor(**row) for row in rows],
)
SPEC = Codec(
    save=lambda spec: (spec_meta(spec), spec_arrays(spec)),
    load=lambda meta, arrays: spec_from(meta, arrays),
)


def _codec(codec: Codec) -> dict[str, Codec]:
    return {"codec": codec}


@dataclass
class StreamState:
    """Where the epoch's stream stands: the data cursor and the shuffle buffer's contents."""

    cursor: Cursor = field(default_factory=Cursor)  # cursor.epoch is the current epoch
    slots: np.ndarray | None = None  # the shuffle buffer's slots (rows)
    free: np.ndarray | None = None  # its empty slots, in fill order
    tail: np.ndarray | None = None  # rows short of a whole run
    rng: dict | None = None  # the shuffle buffer's generator

    def shuffle_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict] | None:
        """The shuffle buffer as :class:`~streamgd.batches.BatchStream` takes it."""
        if self.slots is None or self.free is None or self.rng is None:
            return None
        tail = self.tail
        if tail is None:
            tail = np.empty((0, self.slots.shape[1]), dtype=self.slots.dtype)
        return self.slots, self.free, tail, self.rng

    @classmethod
    def of(cls, cursor: Cursor, shuffled: tuple | None) -> StreamState:
        """The state of a stream at ``cursor`` with the buffer ``shuffled`` (or none)."""
        lanes = None if cursor.lanes is None else [list(lane) for lane in cursor.lanes]
        copy = Cursor(
            cursor.epoch, cursor.position, cursor.offset, lanes, cursor.draws, cursor.slices
        )
        if shuffled is None:
            return cls(copy)
        return cls(copy, *shuffled)

    @property
    def buffered_rows(self) -> int:
        if self.slots is None or self.free is None:
            return 0
        tail = 0 if self.tail is None else len(self.tail)
        return (len(self.slots) - len(self.free)) * self.slots.shape[2] + tail


@dataclass
class EpochTotals:
    """What the epoch in progress has added up so far."""

    start: np.ndarray | None = None  # params at the start of the epoch (for --tol)
    counts: np.ndarray | None = None  # [null targets, imputed per feature]
    loss: float = 0.0  # sum of per-row losses (before each update)
    rows: int = 0
    metrics: dict[str, np.ndarray] | None = field(default=None, metadata=_codec(ARRAY_DICT))


@dataclass
class EarlyStopping:
    """Early stopping on the validation loss (--patience)."""

    best_loss: float | None = None
    best_params: np.ndarray | None = None
    best_epoch: int = 0
    bad_epochs: int = 0


@dataclass
class Trajectory:
    """The recorded weight-space trajectory (--record-path): rows of [step, params...], one
    every ``stride`` steps (0: not recording)."""

    rows: np.ndarray | None = None
    stride: int = 0


@dataclass
class DaskRounds:
    """Distributed training (--cluster): one cursor per shard, and the rounds so far."""

    shards: list[Cursor] | None = field(default=None, metadata=_codec(CURSORS))
    round: int = 0


@dataclass
class Continual:
    """--continual (see :mod:`.continual`): the files trained on, one record per run, the
    increment in progress and the replay reservoir."""

    ledger: list[dict[str, Any]] | None = None  # path, digest, size, mtime_ns, rows, increment
    runs: list[dict[str, Any]] = field(default_factory=list)  # one record per increment
    pending: dict[str, Any] | None = None  # the increment in progress (files, pre-score, ...)
    replay: np.ndarray | None = None  # --replay: the reservoir's raw rows
    replay_seen: int = 0  # rows offered to the reservoir so far


@dataclass
class TrainState:
    """Everything that decides the rest of a run. Resume = load this and continue."""

    params: np.ndarray  # [weights..., intercept] in standardised units
    opt_state: dict[str, np.ndarray] = field(metadata=_codec(ARRAY_DICT))
    spec: FeatureSpec = field(metadata=_codec(SPEC))
    config: dict[str, Any]  # FitConfig.to_dict()
    data: dict[str, Any]  # Dataset.fingerprint()
    step: int = 0
    rows_trained: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False
    stop_reason: str | None = None
    stream: StreamState = field(default_factory=StreamState)
    totals: EpochTotals = field(default_factory=EpochTotals)
    early: EarlyStopping = field(default_factory=EarlyStopping)
    trajectory: Trajectory = field(default_factory=Trajectory)
    dask: DaskRounds = field(default_factory=DaskRounds)
    continual: Continual = field(default_factory=Continual)

    @property
    def epoch(self) -> int:
        return self.stream.cursor.epoch

    @property
    def buffered_rows(self) -> int:
        return self.stream.buffered_rows

    def __repr__(self) -> str:  # one line: the arrays would fill a notebook
        where = "finished" if self.finished else f"epoch {self.epoch + 1} in progress"
        return f"<TrainState step {self.step}, {len(self.history)} epoch(s) done, {where}>"

    def running_loss(self) -> float | None:
        """Mean loss of this epoch's rows so far, in the target's units."""
        if not self.totals.rows:
            return None
        power = get_loss(self.config["loss"]).scale_power
        return self.totals.loss / self.totals.rows * self.spec.target_scale**power

    def to_archive(self) -> tuple[dict[str, Any], Arrays]:
        return record_to_archive(self)

    @classmethod
    def from_archive(cls, meta: dict[str, Any], arrays: Arrays) -> TrainState:
        return record_from_archive(cls, meta, arrays)


# -- the generic codec ---------------------------------------------------------------------------
def _is_record(f: dataclasses.Field) -> bool:
    """A nested record: a field whose default is a fresh instance of a dataclass."""
    return isinstance(f.default_factory, type) and dataclasses.is_dataclass(f.default_factory)


def _under(arrays: Arrays, prefix: str) -> Arrays:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def record_to_archive(record: Any, prefix: str = "") -> tuple[dict[str, Any], Arrays]:
    """``record`` (a dataclass) as archive meta and arrays, keys prefixed by ``prefix``.

    >>> record_to_archive(Trajectory(np.zeros((1, 2)), 5))[0]
    {'stride': 5}
    """
    meta: dict[str, Any] = {}
    arrays: Arrays = {}
    for f in dataclasses.fields(record):
        key, value = prefix + f.name, getattr(record, f.name)
        if value is None:
            meta[key] = None
        elif "codec" in f.metadata:
            meta[key], saved = f.metadata["codec"].save(value)
            arrays |= {f"{key}.{k}": v for k, v in saved.items()}
        elif dataclasses.is_dataclass(value):
            sub_meta, sub_arrays = record_to_archive(value, f"{key}.")
            meta |= sub_meta
            arrays |= sub_arrays
        elif isinstance(value, np.ndarray):
            arrays[key] = np.ascontiguousarray(value)
        else:
            meta[key] = value
    return meta, arrays


def record_from_archive(cls: type, meta: dict[str, Any], arrays: Arrays, prefix: str = "") -> Any:
    """The ``cls`` record that :func:`record_to_archive` wrote; fields the archive lacks take
    their defaults.

    >>> meta, arrays = record_to_archive(Trajectory(np.zeros((1, 2)), 5))
    >>> record_from_archive(Trajectory, meta, arrays).stride
    5
    >>> record_from_archive(Trajectory, {}, {})  # an archive from before the field existed
    Trajectory(rows=None, stride=0)
    """
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if key in arrays:
            values[f.name] = arrays[key]
        elif key in meta:
            value = meta[key]
            if value is not None and "codec" in f.metadata:
                value = f.metadata["codec"].load(value, _under(arrays, f"{key}."))
            values[f.name] = value
        elif _is_record(f):
            values[f.name] = record_from_archive(f.default_factory, meta, arrays, f"{key}.")
    return cls(**values)
