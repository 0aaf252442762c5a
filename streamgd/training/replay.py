"""``--continual --replay ROWS``: a seeded reservoir sample of the rows trained on so far, kept
in the checkpoint and mixed into each increment, so that old patterns are not forgotten.

The reservoir holds at most ROWS rows of the columns the model reads (numeric features, the
target, the ``--weight`` column) as float64: ``ROWS x columns x 8`` bytes, in memory and in
the checkpoint (an npz array, no pickle). After an increment has trained, its files are read
once more and offered to the reservoir (Algorithm R: every row seen so far has the same chance
``ROWS / seen`` to be in it), with draws from (seed, increment) only. The next increment trains
on its new files and the reservoir as one more in-memory "file" named ``<replay>``: the
shuffle mixes its rows with the new ones.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa  # (pyarrow.compute where used: 7 MiB a numeric fit never needs)

from ..decode import float_values
from ..errors import UsageError
from ..features import FeatureSpec
from ..sources import Dataset
from ..sources.memory import ArrowReader
from ..sources.partitions import Partitions
from ..sources.source import memory_dataset
from .state import TrainState

__all__ = ["REPLAY_NAME", "replay_columns", "with_replay", "update_reservoir"]

REPLAY_NAME = "<replay>"
_RESERVOIR_STREAM = 0x5E5E7


def replay_columns(spec: FeatureSpec, dataset: Dataset) -> list[str]:
    """The columns the reservoir keeps; a UsageError when the model reads a column it cannot
    keep as a number (a categorical feature, a class label, a partition column)."""
    if spec.categoricals or spec.texts or spec.classes is not None:
        raise UsageError(
            "--replay keeps numeric columns only; the model has categorical features, text "
            "columns or class labels: leave out --replay"
        )
    columns = list(spec.input_columns(has_target=True, weight=True))
    parted = [c for c in columns if c in dataset.partitions.names]
    if parted:
        raise UsageError(
            f"--replay keeps the files' own columns; {parted[0]} is a partition column "
            "(from the directory names): leave out --replay or that feature"
        )
    return columns


def with_replay(sub: Dataset, state: TrainState) -> tuple[Dataset, int]:
    """``sub`` with the reservoir of ``state`` as one more in-memory file, and its rows (0 and
    ``sub`` itself when the reservoir is empty)."""
    rows = state.continual.replay
    if rows is None or not len(rows):
        return sub, 0
    columns = replay_columns(state.spec, sub)
    table = pa.table({name: rows[:, j] for j, name in enumerate(columns)})
    extra = memory_dataset([ArrowReader(table, REPLAY_NAME)]).files
    parts = sub.partitions
    values = (*parts.values, (None,) * len(parts.names)) if parts.values else ()
    mixed = Dataset.of(
        (*sub.files, *extra),
        sub.schema,
        csv_schema=sub.csv_schema,
        csv=sub.csv,
        partitions=Partitions(parts.schema, values),
    )
    return mixed, len(rows)


def update_reservoir(
    state: TrainState, sub: Dataset, capacity: int, *, seed: int, increment: int
) -> None:
    """Offer every row of ``sub`` whose target is present to the reservoir of ``state``
    (Algorithm R, in the order of ``sub``'s units), drawing from (``seed``, ``increment``)."""
    import pyarrow.compute as pc

    columns = replay_columns(state.spec, sub)
    books = state.continual
    reservoir = books.replay
    if reservoir is None or reservoir.shape[1] != len(columns):
        reservoir, books.replay_seen = np.empty((0, len(columns))), 0
    rng = np.random.default_rng([_RESERVOIR_STREAM, seed, increment])
    seen = books.replay_seen
    target = columns.index(state.spec.target)
    for unit in sub.units:
        for table, _ in sub.iter_unit(unit, columns):
            block = np.column_stack(
                [float_values(pc.cast(table.column(c), pa.float64())) for c in columns]
            )
            block = block[~np.isnan(block[:, target])]
            reservoir, seen = _offer(reservoir, block, seen, capacity, rng)
    books.replay, books.replay_seen = reservoir, seen


def _offer(
    reservoir: np.ndarray, block: np.ndarray, seen: int, capacity: int, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Algorithm R over the rows of ``block``: the first ``capacity`` rows ever seen fill the
    reservoir; row number ``i`` (0-based, over all rows seen) then replaces slot ``j`` drawn
    uniformly from ``0..i`` when ``j < capacity``.

    >>> rng = np.random.default_rng(0)
    >>> r, n = _offer(np.empty((0, 1)), np.arange(2.0)[:, None], 0, 3, rng)
    >>> r.ravel().tolist(), n
    ([0.0, 1.0], 2)
    >>> r, n = _offer(r, np.arange(2.0, 100.0)[:, None], n, 3, rng)
    >>> r.shape, n
    ((3, 1), 100)
    """
    free = max(capacity - len(reservoir), 0)
    head, rest = block[:free], block[free:]
    reservoir = np.concatenate([reservoir, head]) if len(head) else reservoir
    seen += len(head)
    if len(rest):
        slots = rng.integers(0, np.arange(seen + 1, seen + len(rest) + 1))
        keep = np.flatnonzero(slots < capacity)
        # a slot drawn twice keeps the later row, as one row at a time would
        last = {int(slots[k]): k for k in keep}
        reservoir = reservoir.copy()
        for slot, k in last.items():
            reservoir[slot] = rest[k]
        seen += len(rest)
    return reservoir, seen
