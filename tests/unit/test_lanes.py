"""Interleaved reading (streamgd.lanes): every row once, slices of several units at a time,
and a resume from any chunk's state continues exactly (pieces, counts and buffers too)."""

from __future__ import annotations

import numpy as np
import pytest

from streamgd.lanes import Chunk, LaneState, interleave

# units as lists of pieces (row counts); rows are numbered consecutively across units
UNITS = [[40], [7, 0, 30], [], [25], [1], [60, 60], [0], [33]]


def _layout(units: list[list[int]]) -> tuple[list[list[np.ndarray]], int]:
    out, lo = [], 0
    for pieces in units:
        got = []
        for n in pieces:
            got.append(np.arange(lo, lo + n, dtype=np.float64)[:, None])
            lo += n
        out.append(got)
    return out, lo


def _run(
    units, state=None, skip=0, *, known=True, n_lanes=3, slice_rows=4, seed=1
) -> tuple[list[Chunk], list]:
    data, _ = _layout(units)
    released: list = []

    def pieces(position):
        for i, rows in enumerate(data[position]):
            # counts: [rows, 1 per piece] so that a unit's total is checkable
            yield rows, np.array([len(rows), 1]), ("buf", position, i)

    chunks = list(
        interleave(
            state,
            n_lanes=n_lanes,
            skip=skip,
            slice_rows=slice_rows,
            seed=seed,
            epoch=2,
            unit_rows=[sum(u) if known else None for u in units],
            pieces=pieces,
            release=lambda b: released.append(b) if b is not None else None,
            zero_counts=lambda p: np.zeros(2, dtype=np.int64),
            empty=np.empty((0, 1)),
        )
    )
    return chunks, released


def _ids(chunks: list[Chunk]) -> np.ndarray:
    return np.concatenate([c.rows[:, 0] for c in chunks])


@pytest.mark.parametrize("known", [True, False])
@pytest.mark.parametrize("n_lanes", [1, 2, 3, 8])
def test_every_row_once_every_unit_ends_once_with_its_counts(known, n_lanes):
    chunks, released = _run(UNITS, known=known, n_lanes=n_lanes)
    _, n = _layout(UNITS)
    assert np.array_equal(np.sort(_ids(chunks)), np.arange(n))
    ends = [c for c in chunks if c.last]
    assert sorted(c.position for c in ends) == list(range(len(UNITS)))
    for c in ends:  # the unit's total: rows, and one per piece read
        assert c.counts.tolist() == (
            [sum(UNITS[c.position]), len(UNITS[c.position])] if UNITS[c.position] else [0, 0]
        )
    assert all(c.counts is None for c in chunks if not c.last)
    # every piece's memory is handed back once: by the chunk that ends it, or released
    carried = [c.buffer for c in chunks if c.buffer is not None]
    every = [("buf", p, i) for p, u in enumerate(UNITS) for i in range(len(u))]
    assert sorted(carried + released) == sorted(every)
    # slices are at most slice_rows, of one unit, each a run of consecutive rows
    for c in chunks:
        assert len(c.rows) <= 4
        assert np.all(np.diff(c.rows[:, 0]) == 1)


def test_lanes_interleave_units_and_shuffle_slices_within_a_piece():
    chunks, _ = _run([[40], [40], [40]], n_lanes=3)
    positions = [c.position for c in chunks if len(c.rows)]
    assert positions[:6] != sorted(positions[:6])  # not one unit after another
    assert len(set(positions[:6])) >= 2
    first = [int(c.rows[0, 0]) for c in chunks if c.position == 0 and len(c.rows)]
    assert first != sorted(first)  # a piece's slices in no fixed direction
    # with one lane, units come one after another
    single, _ = _run([[40], [40], [40]], n_lanes=1)
    assert [c.position for c in single] == sorted(c.position for c in single)


def test_lanes_opened_together_end_together():
    """Draws weighted by the rows left: no unit is left alone at the end of the epoch."""
    chunks, _ = _run([[400]] * 4, n_lanes=4, slice_rows=8)
    tail = [c.position for c in chunks[-12:]]
    assert len(set(tail)) >= 3


@pytest.mark.parametrize("known", [True, False])
def test_resume_from_any_chunk_continues_exactly(known):
    full, released_full = _run(UNITS, known=known)
    for k, chunk in enumerate(full):
        if chunk.before is None:  # an empty unit's end: the stream never rests there
            continue
        for u in sorted({0, len(chunk.rows) // 2}):
            again, _ = _run(UNITS, chunk.before, skip=u, known=known)
            assert np.array_equal(again[0].rows, chunk.rows[u:]) and again[0].skip == u
            rest = [c for c in full[k + 1 :]]
            assert len(again) - 1 == len(rest)
            for a, b in zip(again[1:], rest, strict=True):
                assert np.array_equal(a.rows, b.rows) and (a.position, a.last) == (
                    b.position,
                    b.last,
                )
                assert (a.counts is None) == (b.counts is None)
                if a.counts is not None:
                    assert np.array_equal(a.counts, b.counts)
                assert a.before == b.before


def test_the_schedule_is_seeded():
    a, _ = _run(UNITS, seed=1)
    b, _ = _run(UNITS, seed=1)
    c, _ = _run(UNITS, seed=2)
    assert np.array_equal(_ids(a), _ids(b))
    assert not np.array_equal(_ids(a), _ids(c))


def test_state_is_small_and_plain():
    chunks, _ = _run(UNITS)
    state = chunks[5].before
    assert isinstance(state, LaneState)
    assert all(isinstance(x, int) for lane in state.lanes for x in lane)
