"""Shuffling: the seeded order of units in an epoch, and a bounded shuffle buffer of rows.

Both are pure functions of ``(seed, epoch)`` plus explicit state, so an epoch's order can be
recomputed anywhere and a buffer can be saved in a checkpoint and restored exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["ORDERS", "epoch_order", "epoch_rng", "ShuffleBuffer"]

_PLAN_STREAM = 0x504C414E  # "PLAN": independent random streams for order and buffer
_BUFFER_STREAM = 0x42554646  # "BUFF"


def epoch_rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    """A generator that depends only on ``(seed, epoch, stream)``."""
    return np.random.default_rng([seed, epoch, stream])


def _sequential(n_units: int, seed: int, epoch: int) -> np.ndarray:
    return np.arange(n_units)


def _shuffled(n_units: int, seed: int, epoch: int) -> np.ndarray:
    # One permutation over every row group of every file mixes files better than shuffling
    # files, then row groups within each file, at no cost: one file handle is open at a time.
    return epoch_rng(seed, epoch, _PLAN_STREAM).permutation(n_units)


ORDERS: dict[str, Callable[[int, int, int], np.ndarray]] = {
    "sequential": _sequential,
    "shuffled": _shuffled,
}


def epoch_order(n_units: int, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """Indices of the units in the order epoch ``epoch`` reads them.

    >>> epoch_order(4, seed=0, epoch=0, shuffle=False).tolist()
    [0, 1, 2, 3]
    >>> sorted(epoch_order(4, seed=0, epoch=0, shuffle=True).tolist())
    [0, 1, 2, 3]
    """
    return ORDERS["shuffled" if shuffle else "sequential"](n_units, seed, epoch)


class ShuffleBuffer:
    """A bounded pool of rows from which batches are drawn at random.

    Each step adds ``m`` incoming rows to the ``n`` buffered ones and emits ``k`` rows drawn
    uniformly without replacement from the ``n + m`` (in random order); the rest stay. Filling
    first to ``capacity`` and then exchanging one batch for one batch keeps memory at
    ``capacity`` rows; at the end of an epoch the buffer is drained. The state is the buffered
    rows and the generator's state: nothing else decides what comes out.
    """

    def __init__(self, capacity: int, width: int, rng: np.random.Generator) -> None:
        self.capacity = int(capacity)
        self.rows = np.empty((self.capacity, width), dtype=np.float64)
        self.n = 0
        self.rng = rng

    def absorb(self, incoming: np.ndarray) -> None:
        """Add rows without emitting (the fill phase); must fit in the capacity."""
        m = len(incoming)
        if self.n + m > self.capacity:
            raise ValueError("absorb past capacity")
        self.rows[self.n : self.n + m] = incoming
        self.n += m

    def exchange(self, incoming: np.ndarray, k: int) -> np.ndarray:
        """Add ``incoming`` and emit ``min(k, n + m)`` rows drawn at random from the pool."""
        n, m = self.n, len(incoming)
        k = min(k, n + m)
        sel = self.rng.choice(n + m, k, replace=False, shuffle=True)
        from_buf = sel < n
        holes = sel[from_buf]
        picked_in = sel[~from_buf] - n
        out = np.empty((k, self.rows.shape[1]), dtype=np.float64)
        out[from_buf] = self.rows[holes]
        out[~from_buf] = incoming[picked_in]
        keep_in = np.ones(m, dtype=bool)
        keep_in[picked_in] = False
        rest = incoming[keep_in]
        if len(rest) == len(holes):  # steady state: one batch in, one batch out
            self.rows[holes] = rest
        else:  # an epoch's ragged end or the drain: compact
            keep = np.ones(n, dtype=bool)
            keep[holes] = False
            kept = self.rows[:n][keep]
            new_n = len(kept) + len(rest)
            self.rows[: len(kept)] = kept
            self.rows[len(kept) : new_n] = rest
            self.n = new_n
        return out

    def contents(self) -> np.ndarray:
        return self.rows[: self.n]

    def restore(self, rows: np.ndarray, rng_state: dict) -> None:
        self.rows[: len(rows)] = rows
        self.n = len(rows)
        self.rng.bit_generator.state = rng_state
