"""Shuffling: the seeded order of units in an epoch, and a bounded shuffle buffer of rows.

Both are pure functions of ``(seed, epoch)`` plus explicit state, so an epoch's order can be
recomputed anywhere and a buffer can be saved in a checkpoint and restored exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "ORDERS",
    "BUFFER_STREAM",
    "DRAW_BLOCK",
    "epoch_order",
    "epoch_rng",
    "lane_count",
    "lane_draws",
    "piece_slices",
    "slice_rows_for",
    "ShuffleBuffer",
]

_PLAN_STREAM = 0x504C414E  # "PLAN": independent random streams for order and buffer
BUFFER_STREAM = 0x42554646  # "BUFF"
_LANE_STREAM = 0x4C414E45  # "LANE": which lane hands on the next slice
_SLICE_STREAM = 0x534C4943  # "SLIC": the order of a piece's slices


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


# Interleaved reading (see streamgd.lanes): how many units are open at once. Each lane holds
# one decoded piece (a row group, a slice of a huge one, a CSV block), so the lanes' memory is
# about LANE_BYTES whatever the piece size, but never fewer than MIN_LANES units; CSV files
# (of unknown size, and each read by its own parsing thread) get CSV_LANES.
LANE_BYTES = 32 << 20
MIN_LANES, MAX_LANES, CSV_LANES = 2, 32, 8
DRAW_BLOCK = 4096  # lane draws are made in blocks of this many, each block seeded on its own


def lane_count(piece_bytes: int | None) -> int:
    """Lanes for pieces of ``piece_bytes`` decoded bytes (None: unknown, CSV).

    >>> lane_count(17 << 20), lane_count(3 << 20), lane_count(None), lane_count(100 << 20)
    (2, 10, 8, 2)
    >>> lane_count(180 << 10)  # 5,000 rows of 9 float32 columns
    32
    """
    if not piece_bytes:
        return CSV_LANES
    return max(MIN_LANES, min(MAX_LANES, LANE_BYTES // piece_bytes))


def slice_rows_for(capacity: int) -> int:
    """The rows a lane hands on at a time, for a shuffle buffer of ``capacity`` rows: a
    64th of it (1024 rows by default), so that the buffer holds slices of every lane at once
    and a slice of sorted data is a narrow band of it (on 300,000 target-sorted rows in
    50,000-row groups, 3 epochs: at most 0.21% above the optimum over 4 seeds, against 0.9%
    with a 16th); not below 256 rows, so that a slice is worth its handover.

    >>> slice_rows_for(65536), slice_rows_for(50)
    (1024, 256)
    """
    return max(256, capacity // 64)


def lane_draws(seed: int, epoch: int, block: int) -> np.ndarray:
    """Block ``block`` of an epoch's lane draws: DRAW_BLOCK uniform numbers in [0, 1); draw
    ``i`` of the epoch is ``lane_draws(seed, epoch, i // DRAW_BLOCK)[i % DRAW_BLOCK]``, so a
    resume needs only the number of draws made."""
    return np.random.default_rng([seed, epoch, _LANE_STREAM, block]).random(DRAW_BLOCK)


def piece_slices(
    n_rows: int, slice_rows: int, *, seed: int, epoch: int, key: tuple[int, int]
) -> list[tuple[int, int]]:
    """A piece of ``n_rows`` rows cut into slices of ``slice_rows`` (the last shorter), as
    ``(start, stop)`` in a random order seeded by ``(seed, epoch, key)`` (``key``: the unit's
    position and the piece's index in it), so a lane hands on a piece in no fixed direction.

    >>> sorted(piece_slices(10, 4, seed=0, epoch=0, key=(0, 0)))
    [(0, 4), (4, 8), (8, 10)]
    """
    starts = np.arange(0, n_rows, slice_rows)
    if len(starts) > 1:
        starts = starts[
            np.random.default_rng([seed, epoch, _SLICE_STREAM, *key]).permutation(len(starts))
        ]
    return [(int(a), min(int(a) + slice_rows, n_rows)) for a in starts]


class ShuffleBuffer:
    """A bounded pool of rows from which batches are drawn uniformly at random, in runs.

    The pool holds ``capacity + block`` rows in slots of ``run`` consecutive rows. Incoming
    rows fill the free slots (a final partial run waits in ``tail``); a draw takes ``k / run``
    filled slots uniformly without replacement, emits their rows and frees them for the next
    incoming rows. Filled completely and then exchanging one batch for one batch, every batch
    is a uniform sample of the pool's runs; at the end of an epoch the pool drains. The state
    is the slots, the free list, the tail and the generator: nothing else decides what comes
    out.

    Rounds: the exchange happens ``block`` rows at a time, which may be several batches
    (``draw(k)`` with ``k`` dividing ``block``): an exchange draws ``block`` rows at once and
    emits them ``k`` at a time, each batch freeing its slots, and the pool takes new rows
    only between exchanges. Each batch is still a uniform sample of a pool of ``capacity +
    block`` rows; per 8192-row exchange instead of per 1024-row batch, the fixed costs of a
    fill and a draw (Python calls, small copies) are paid an eighth as often. An exchange in
    progress is part of the state (its slots, in order, and how many rows are out), kept
    under the key ``"exchange"`` of the generator's state dict.

    Why runs: every row is copied twice (in and out); moving ``run`` rows at a time as
    contiguous blocks makes both copies cache-friendly (measured: 2.7x less time than single
    rows at run 16, 8192-row batches). ``run=1`` is a row-level buffer.

    Where the rows are kept is not part of the state: a slot's rows live at some position of
    a store of ``STORE_FACTOR`` times as many positions, laid out column by column
    (``store[column, position, row of the run]``, on 64-byte boundaries, so that a run of a
    float32 column at run 16 is one cache line). A fill writes its runs to consecutive
    positions at the head of the store, as a ring: one plain copy of each incoming column,
    instead of a scatter to the scattered free slots (2-4x slower). The runs still held where
    the head comes back (a fraction ``exp(-STORE_FACTOR)`` of them, 14%) are packed to the
    start of the window first (moving them to scattered free positions cost as much as the
    whole fill). A draw is one ``take`` along the position axis straight into a
    column-major batch. :attr:`slots` and :meth:`state` gather the slots in slot order, as
    ``[slot, column, row of the run]``, the layout of checkpoints.
    """

    def __init__(
        self,
        capacity: int,
        width: int,
        rng: np.random.Generator,
        *,
        block: int,
        dtype: np.dtype | type = np.float64,
        run: int = 1,
    ) -> None:
        if block % run:
            raise ValueError("the block (batch size) must be a multiple of the run")
        self.capacity, self.run, self.width = int(capacity), int(run), int(width)
        self.block = int(block)
        self.n_slots = n_slots = -(-self.capacity // self.run) + self.block // self.run
        self.store = _aligned_empty((width, STORE_FACTOR * n_slots, self.run), dtype)
        self.where = np.arange(n_slots)  # store position of each slot's rows (if filled)
        self.owner = np.full(self.store.shape[1], -1)  # slot held at each position, or -1
        self.head = 0  # where the next fill writes
        self.free = np.arange(n_slots)  # empty slots, filled in this order
        self.tail = np.empty((0, width), dtype=dtype)  # rows short of a whole run
        self.rng = rng
        # the exchange in progress: its slots in draw order, its rows, whether the tail is in
        # it, and how many of its rows are out (see draw)
        self._exchange: tuple[np.ndarray, np.ndarray, bool] | None = None
        self._out = 0

    @property
    def slots(self) -> np.ndarray:
        """The slots as ``[slot, column, row of the run]`` (a copy; free slots hold
        leftovers)."""
        return np.ascontiguousarray(self.store.take(self.where, axis=1).transpose(1, 0, 2))

    @property
    def n(self) -> int:
        """Rows in the pool."""
        return (self.n_slots - len(self.free)) * self.run + len(self.tail)

    def space(self) -> int:
        """Rows :meth:`fill` can take now (none while an exchange is being emitted)."""
        if self._exchange is not None:
            return 0
        return len(self.free) * self.run - len(self.tail)

    def fill(self, incoming: np.ndarray | list[np.ndarray]) -> None:
        """Write rows (one matrix, or several in order: the same as their concatenation,
        without making it) into the first free slots, whole runs at a time."""
        if self._exchange is not None:
            raise ValueError("an exchange is being emitted: draw it out before filling")
        parts = [incoming] if isinstance(incoming, np.ndarray) else [p for p in incoming if len(p)]
        if len(self.tail):
            parts.insert(0, self.tail)
        n = sum(len(p) for p in parts)
        q = n // self.run
        if q > len(self.free) or (q == len(self.free) and n > q * self.run):
            raise ValueError("more incoming rows than free slots")
        if not q:
            rest = np.concatenate(parts) if len(parts) > 1 else (parts[0] if parts else self.tail)
        else:
            at, held = self._claim(q)
            start = at + held
            rest = self._write(parts, start)
            dest = self.free[:q]
            self.owner[start : start + q] = dest
            self.where[dest] = np.arange(start, start + q)
        self.free = self.free[q:]
        # canonical C order: a batch's memory layout decides BLAS's summation order, and a
        # resumed run must sum exactly as an uninterrupted one
        self.tail = np.ascontiguousarray(rest, dtype=self.store.dtype).reshape(-1, self.width)

    def _write(self, parts: list[np.ndarray], pos: int) -> np.ndarray:
        """Copy the whole runs of ``parts`` (in order, a run may straddle two) to store
        positions from ``pos``; returns the rows short of a run at the end."""
        run, width = self.run, self.width
        carry: np.ndarray | None = None  # rows short of a run, waiting for the next part
        for rows in parts:
            if carry is not None:
                need = run - len(carry)
                carry = np.concatenate([carry, rows[:need]])
                rows = rows[need:]
                if len(carry) < run:
                    continue
                self.store[:, pos] = carry.T
                pos, carry = pos + 1, None
            k = len(rows) // run
            if k:  # a view of column-major rows: [column, run, row of the run]
                self.store[:, pos : pos + k] = rows[: k * run].T.reshape(width, k, run)
                pos += k
            if len(rows) > k * run:
                carry = rows[k * run :]
        return carry if carry is not None else self.tail[:0]

    def _claim(self, q: int) -> tuple[int, int]:
        """Make room for ``q`` runs at the head: the shortest window from the head holding
        ``q`` free positions (from the start of the store if the rest of it has not), its
        runs still held packed to its start. Returns where the window starts and how many
        runs were packed; the ``q`` free positions follow them."""
        start = self.head
        for start in (self.head, 0):
            free = np.cumsum(self.owner[start:] < 0)
            if len(free) and free[-1] >= q:
                break
        end = start + int(np.searchsorted(free, q)) + 1  # the q-th free position, included
        held = start + np.flatnonzero(self.owner[start:end] >= 0)
        if len(held):  # few (~14%) and close together: one gather, one contiguous write
            self.store[:, start : start + len(held)] = self.store.take(held, axis=1)
            moved = self.owner[held]
            self.owner[start:end] = -1
            self.owner[start : start + len(held)] = moved
            self.where[moved] = np.arange(start, start + len(held))
        self.head = end
        return start, len(held)

    def draw(self, k: int) -> np.ndarray:
        """Emit the next ``k`` rows (a multiple of the run dividing ``block``) of the exchange,
        drawing a new exchange first if none is in progress; at the end of the drain, everything
        left (fewer rows). The batch is a view, valid until the next draw."""
        if self._exchange is None:
            self._start_exchange()
        sel, rows, with_tail = self._exchange  # type: ignore[misc]
        lo = self._out
        hi = self._out = min(lo + k, len(rows))
        self.free = np.concatenate([self.free, sel[lo // self.run : -(-hi // self.run)]])
        if hi == len(rows):  # the exchange is out
            self._exchange = None
            if with_tail:
                self.tail = self.tail[:0]
        return rows[lo:hi]

    def _start_exchange(self) -> None:
        """Draw ``block`` rows' runs uniformly without replacement (all that is left, and the
        tail, when that is not more), in random order, as one column-major matrix."""
        filled = self.n_slots - len(self.free)
        last = filled * self.run + len(self.tail) <= self.block
        count = filled if last else self.block // self.run
        if len(self.free) == 0:
            sel = self.rng.choice(filled, count, replace=False)
        else:  # the ragged end and the drain of an epoch
            mask = np.ones(self.n_slots, dtype=bool)
            mask[self.free] = False
            sel = np.flatnonzero(mask)[self.rng.choice(filled, count, replace=False)]
        self._gather(sel, with_tail=bool(last and len(self.tail)))

    def _gather(self, sel: np.ndarray, *, with_tail: bool) -> None:
        at = self.where[sel]
        # [column, run, row of the run] -> a column-major (rows, columns) matrix, one copy
        rows = self.store.take(at, axis=1).reshape(self.width, -1).T
        self.owner[at] = -1  # no fill comes before the exchange is out
        if with_tail:
            rows = np.asfortranarray(np.concatenate([rows, self.tail]))
        self._exchange, self._out = (sel, rows, with_tail), 0

    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        rng_state = self.rng.bit_generator.state
        if self._exchange is not None:
            sel, _, with_tail = self._exchange
            rng_state["exchange"] = {"slots": sel.tolist(), "out": self._out, "tail": with_tail}
        return self.slots, self.free.copy(), self.tail.copy(), rng_state

    def restore(
        self, slots: np.ndarray, free: np.ndarray, tail: np.ndarray, rng_state: dict
    ) -> None:
        expected = (self.n_slots, self.width, self.run)
        if slots.shape != expected or slots.dtype != self.store.dtype:
            raise ValueError(
                f"shuffle buffer of {slots.dtype}{slots.shape}, "
                f"expected {self.store.dtype}{expected}"
            )
        n = self.n_slots
        self.store[:, :n] = slots.transpose(1, 0, 2)
        self.free = np.asarray(free, dtype=np.int64).copy()
        self.where = np.arange(n)
        self.owner[:] = -1
        self.owner[:n] = self.where
        self.owner[self.free] = -1
        self.head = n
        self.tail = np.ascontiguousarray(tail, dtype=self.store.dtype).reshape(-1, self.width)
        rng_state = dict(rng_state)
        in_progress = rng_state.pop("exchange", None)
        self.rng.bit_generator.state = rng_state
        self._exchange = None
        if in_progress is not None:  # the same matrix again, so batches keep their layout
            sel = np.asarray(in_progress["slots"], dtype=np.int64)
            self._gather(sel, with_tail=bool(in_progress["tail"]))
            self._out = int(in_progress["out"])


# Store positions per slot (see ShuffleBuffer): memory against moves. A run is still held
# when the ring's head comes back with probability about exp(-STORE_FACTOR): 14% at 2.
STORE_FACTOR = 2


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype | type, align: int = 64) -> np.ndarray:
    """An uninitialised C-ordered array whose data starts on an ``align``-byte boundary (numpy
    only promises 16): a 64-byte run of a column then fills one cache line, not two."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + align, dtype=np.uint8)
    skip = -raw.ctypes.data % align
    return raw[skip : skip + nbytes].view(dtype).reshape(shape)
