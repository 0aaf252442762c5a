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
    """A bounded pool of rows from which batches are drawn uniformly at random.

    The pool is an array of ``capacity + block`` slots. Incoming rows are written into the
    free slots; a draw takes ``k`` filled slots uniformly without replacement (in random
    order), emits their rows and frees them for the next incoming rows. Filled completely and
    then exchanging one batch for one batch, every batch is a uniform sample of the
    ``capacity + block`` rows in the pool; at the end of an epoch the pool drains.

    Rows never move once written (one scatter in, one gather out), which keeps the cost per
    row at two row copies. The state is the slot array, the free-slot list and the generator:
    nothing else decides what comes out.
    """

    def __init__(
        self,
        capacity: int,
        width: int,
        rng: np.random.Generator,
        *,
        block: int,
        dtype: np.dtype | type = np.float64,
    ) -> None:
        self.capacity = int(capacity)
        self.slots = np.empty((self.capacity + block, width), dtype=dtype)
        self.free = np.arange(len(self.slots))  # empty slots, filled in this order
        self.rng = rng

    @property
    def n(self) -> int:
        """Rows in the pool."""
        return len(self.slots) - len(self.free)

    def fill(self, incoming: np.ndarray) -> None:
        """Write rows into the first free slots (at most ``len(free)`` rows)."""
        m = len(incoming)
        if m > len(self.free):
            raise ValueError("more incoming rows than free slots")
        self.slots[self.free[:m]] = incoming
        self.free = self.free[m:]

    def draw(self, k: int) -> np.ndarray:
        """Emit ``min(k, n)`` rows drawn uniformly without replacement, in random order."""
        n = self.n
        k = min(k, n)
        if len(self.free) == 0:
            sel = self.rng.choice(n, k, replace=False)
        else:  # the ragged end and the drain of an epoch
            filled = np.ones(len(self.slots), dtype=bool)
            filled[self.free] = False
            sel = np.flatnonzero(filled)[self.rng.choice(n, k, replace=False)]
        out = self.slots[sel]
        self.free = np.concatenate([self.free, sel])
        return out

    def state(self) -> tuple[np.ndarray, np.ndarray, dict]:
        return self.slots.copy(), self.free.copy(), self.rng.bit_generator.state

    def restore(self, slots: np.ndarray, free: np.ndarray, rng_state: dict) -> None:
        if slots.shape != self.slots.shape or slots.dtype != self.slots.dtype:
            raise ValueError(
                f"shuffle buffer of {slots.dtype}{slots.shape}, "
                f"expected {self.slots.dtype}{self.slots.shape}"
            )
        self.slots[...] = slots
        self.free = np.asarray(free, dtype=np.int64).copy()
        self.rng.bit_generator.state = rng_state
