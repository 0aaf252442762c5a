"""Interleaved reading: several units open at once, their rows handed on in seeded slices.

Files written by upstream jobs are often in order (by time, user or label), so one row group
holds similar rows. A shuffle buffer fed one unit after another then holds the rows of about
one unit at a time, and its batches are far from a uniform sample (on data sorted by the
target, 50k-row row groups and the default 65,536-row buffer, three epochs ended 9.3% above
the least-squares optimum). Here the units are read through ``W`` lanes: lane ``j`` reads
the units at positions ``j, j + W, j + 2W, ...`` of the epoch's order, each front to back in
its own pieces (a row group, a slice of a huge one, a CSV block), a piece's slices of at most
``slice_rows`` rows in a seeded random order. Every step draws a lane with probability
proportional to the rows it has left (so the lanes end together) and hands on its next
slice. The buffer behind it then holds rows of ``W`` units at all times, so a batch is a
sample of ``W`` row groups instead of one.

The schedule is a pure function of ``(seed, epoch)`` and the units' pieces: draw ``i`` of
an epoch is the ``i``-th number of :func:`streamgd.shuffle.lane_draws`, and the state
between two slices is small (:class:`LaneState`: ``W``, each lane's unit and the rows handed
on of it, the draws made). A resume opens each lane's unit again and skips the rows handed
on, so every later slice, piece boundary and count is as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .shuffle import DRAW_BLOCK, lane_draws, piece_slices

__all__ = ["Chunk", "LaneState", "Piece", "interleave"]


@dataclass
class Chunk:
    """Decoded rows of one unit; ``last`` marks the unit's final chunk."""

    position: int  # index of the unit in the epoch order
    rows: np.ndarray
    counts: np.ndarray | None  # [rows dropped for a null target, values imputed per feature...]
    last: bool
    buffer: np.ndarray | None = None  # pooled memory behind ``rows``; see Prefetcher.release
    # interleaved reading: the schedule's state before this chunk, and how many of its rows
    # were dropped because a resumed stream had consumed them already
    before: LaneState | None = None
    skip: int = 0


@dataclass(frozen=True)
class LaneState:
    """Where an interleaved epoch stands between two slices: lane ``j`` of ``width`` reads
    the units at positions ``j, j + width, j + 2 width, ...`` of the epoch's order, one after
    another; ``lanes`` holds each lane still reading, in lane order: its unit's position and
    the rows of that unit handed on; ``draws`` counts the draws made."""

    width: int
    lanes: tuple[tuple[int, int], ...]
    draws: int


# (rows, counts, pooled buffer) of one decoded piece of a unit
Piece = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]


class _Lane:
    """One open unit: its pieces read as the schedule asks, each handed on in slices taken in
    a seeded random order, ``taken`` rows of the unit handed on so far. The next piece is
    read as soon as the last slice of one is taken, so that slice knows whether it ends the
    unit."""

    def __init__(self, position: int, skip: int, pieces: Iterator[Piece], cut, release) -> None:
        self.position, self.taken = position, skip
        self._pieces, self._cut, self._release = pieces, cut, release
        self._index = -1  # of the current piece in the unit
        self.rows: np.ndarray | None = None
        self.slices: list[tuple[int, int]] = []  # the current piece's, in the order handed on
        self.k = 0  # slices of the current piece handed on
        self.buffer: np.ndarray | None = None
        self.counts: np.ndarray | None = None
        self.done = False
        self._advance(skip)

    def _advance(self, skip: int = 0) -> None:
        """Read pieces until one has a slice left (dropping ``skip`` rows, whole slices, on
        the way), or the unit ends (``done``)."""
        while self.k >= len(self.slices):
            self._release(self.buffer)  # a piece no slice took (empty, or skipped)
            self.buffer = None
            try:
                rows, counts, self.buffer = next(self._pieces)
            except StopIteration:
                self.rows, self.slices, self.done = None, [], True
                return
            self._index += 1
            self.counts = counts.copy() if self.counts is None else self.counts + counts
            self.rows, self.slices, self.k = (
                rows,
                self._cut(len(rows), self.position, self._index),
                0,
            )
            while skip > 0 and self.k < len(self.slices):
                lo, hi = self.slices[self.k]
                skip -= hi - lo
                self.k += 1

    def next_slice(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The next slice of rows, and the piece's buffer if it is the piece's last."""
        lo, hi = self.slices[self.k]
        rows = self.rows[lo:hi]  # type: ignore[index]
        self.k += 1
        self.taken += hi - lo
        buffer = None
        if self.k == len(self.slices):  # the piece's last slice carries its memory
            buffer, self.buffer = self.buffer, None
            self._advance()
        return rows, buffer

    def close(self) -> None:
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()


def _pick(weights: list[int], u: float) -> int:
    """The index ``j`` with ``sum(weights[:j]) <= u * sum(weights) < sum(weights[:j + 1])``
    (a few lanes: plain Python is quicker than numpy here).

    >>> _pick([1, 2, 1], 0.0), _pick([1, 2, 1], 0.5), _pick([1, 2, 1], 0.99)
    (0, 1, 2)
    """
    target = u * sum(weights)
    for j, w in enumerate(weights):
        target -= w
        if target < 0:
            return j
    return len(weights) - 1


def interleave(
    state: LaneState | None,
    *,
    n_lanes: int,
    skip: int,
    slice_rows: int,
    seed: int,
    epoch: int,
    unit_rows: list[int | None],
    pieces: Callable[[int], Iterator[Piece]],
    release: Callable[[np.ndarray | None], None],
    zero_counts: Callable[[int], np.ndarray],
    empty: np.ndarray,
) -> Iterator[Chunk]:
    """The epoch's chunks from ``state`` (None: the epoch's start, ``n_lanes`` lanes), the
    first with ``skip`` rows dropped.

    Each step draws a lane with probability proportional to the rows it has left (its
    unit's ``unit_rows[position]`` less those handed on, and its later units': a unit of
    unknown size, a CSV file, counts as the median known unit, or ``slice_rows``), so that
    the lanes end together and each unit is spread over the whole time it is read, and
    hands on that lane's next slice. ``pieces(position)`` reads the unit at that position of
    the order; ``release`` takes back a piece's pooled buffer that no chunk carries;
    ``zero_counts(position)`` gives the counts of a unit that had no piece; ``empty`` is a
    matrix of no rows. A slice that ends its piece carries the piece's buffer (the consumer
    releases it once done with that chunk, and so with every earlier slice of the piece);
    the slice that ends a unit is marked ``last`` and carries the unit's counts (a unit
    without rows is an empty chunk so marked).
    """
    n_units = len(unit_rows)
    width = n_lanes if state is None else state.width
    draws = 0 if state is None else state.draws
    known = [r for r in unit_rows if r is not None]
    typical = int(np.median(known)) if known else slice_rows
    size = [typical if r is None else r for r in unit_rows]
    after = [0] * (n_units + width)  # rows of the units at q, q + width, ... (estimated)
    for q in range(n_units - 1, -1, -1):
        after[q] = size[q] + after[q + width]

    def cut(n_rows: int, position: int, index: int) -> list[tuple[int, int]]:
        return piece_slices(n_rows, slice_rows, seed=seed, epoch=epoch, key=(position, index))

    def weight(lane: _Lane) -> int:
        return max(size[lane.position] - lane.taken, 1) + after[lane.position + width]

    def opened(position: int) -> Iterator[Chunk]:
        """Open the lane's unit at ``position``, or the next one with rows (yielding the
        ends of those without); the lane is ``found[0]`` (None: the lane is done)."""
        found[0] = None
        while position < n_units:
            lane = _Lane(position, 0, pieces(position), cut, release)
            if not lane.done:
                found[0] = lane
                return
            counts = lane.counts if lane.counts is not None else zero_counts(position)
            yield Chunk(position, empty, counts, last=True)
            position += width

    found: list[_Lane | None] = [None]
    if state is None:
        lanes: list[_Lane] = []
        for j in range(min(width, n_units)):
            yield from opened(j)
            if found[0] is not None:
                lanes.append(found[0])
    else:
        lanes = [_Lane(p, t, pieces(p), cut, release) for p, t in state.lanes]
    block, numbers = -1, np.empty(0)
    try:
        while lanes:
            before = LaneState(width, tuple((lane.position, lane.taken) for lane in lanes), draws)
            if draws // DRAW_BLOCK != block:
                block = draws // DRAW_BLOCK
                numbers = lane_draws(seed, epoch, block)
            j = _pick([weight(lane) for lane in lanes], float(numbers[draws % DRAW_BLOCK]))
            draws += 1
            lane = lanes[j]
            rows, buffer = lane.next_slice()
            chunk = Chunk(lane.position, rows, None, last=lane.done, buffer=buffer, before=before)
            if skip:
                chunk.rows, chunk.skip, skip = chunk.rows[skip:], skip, 0
            if not lane.done:
                yield chunk
                continue
            # the unit's last slice: its counts; the lane goes on to its next unit
            chunk.counts = lane.counts
            lane.close()
            yield chunk
            yield from opened(lane.position + width)
            if found[0] is None:
                del lanes[j]
            else:
                lanes[j] = found[0]
    finally:
        for lane in lanes:
            lane.close()
