"""Shuffle primitives: the epoch order of units and the bounded shuffle buffer."""

from __future__ import annotations

import numpy as np
import pytest

from streamgd.shuffle import ORDERS, ShuffleBuffer, epoch_order, epoch_rng

SEEDS = [0, 1, 7, 2**31 - 1]
EPOCHS = [0, 1, 5]


@pytest.mark.parametrize("name", sorted(ORDERS))
@pytest.mark.parametrize("n_units", [0, 1, 2, 7, 100])
def test_every_order_is_a_deterministic_permutation(name, n_units):
    for seed in SEEDS:
        for epoch in EPOCHS:
            order = ORDERS[name](n_units, seed, epoch)
            assert np.array_equal(np.sort(order), np.arange(n_units))
            assert np.array_equal(order, ORDERS[name](n_units, seed, epoch))


@pytest.mark.parametrize("n_units", [0, 1, 5, 100])
def test_epoch_order_without_shuffle_is_file_order(n_units):
    for seed in SEEDS:
        for epoch in EPOCHS:
            order = epoch_order(n_units, seed=seed, epoch=epoch, shuffle=False)
            assert np.array_equal(order, np.arange(n_units))


def test_epoch_order_shuffled_is_a_pure_function_of_seed_and_epoch():
    orders = {
        (seed, epoch): epoch_order(100, seed=seed, epoch=epoch, shuffle=True)
        for seed in SEEDS
        for epoch in EPOCHS
    }
    for (seed, epoch), order in orders.items():
        assert np.array_equal(np.sort(order), np.arange(100))
        # recomputed later, after other draws: the same order
        assert np.array_equal(order, epoch_order(100, seed=seed, epoch=epoch, shuffle=True))
    # 100! orders: any two (seed, epoch) pairs agreeing would mean they share a stream
    distinct = {tuple(o) for o in orders.values()}
    assert len(distinct) == len(orders)
    assert not np.array_equal(orders[(0, 0)], np.arange(100))


def test_global_numpy_random_state_is_neither_used_nor_disturbed():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = epoch_order(50, seed=4, epoch=2, shuffle=True)
    assert np.array_equal(np.random.get_state()[1], before)
    np.random.seed(999)
    assert np.array_equal(a, epoch_order(50, seed=4, epoch=2, shuffle=True))


def test_epoch_rng_streams_are_independent():
    a = epoch_rng(3, 0, 1).random(8)
    assert np.array_equal(a, epoch_rng(3, 0, 1).random(8))
    for other in (epoch_rng(3, 0, 2), epoch_rng(3, 1, 1), epoch_rng(4, 0, 1)):
        assert not np.array_equal(a, other.random(8))


def _rows(lo: int, hi: int) -> np.ndarray:
    ids = np.arange(lo, hi, dtype=np.float64)
    return np.c_[ids, -ids]


def test_buffer_fill_past_the_free_slots_is_refused():
    buf = ShuffleBuffer(5, 2, np.random.default_rng(0), block=2)
    buf.fill(_rows(0, 4))
    with pytest.raises(ValueError):
        buf.fill(_rows(4, 8))
    assert buf.n == 4


def _run_buffer(buf: ShuffleBuffer, n_rows: int, batch: int) -> list[np.ndarray]:
    """Drive the buffer as the stream does: top up the free slots, draw a batch; drain."""
    out, lo = [], 0
    while True:
        if lo < n_rows and len(buf.free):
            hi = min(lo + len(buf.free), n_rows)
            buf.fill(_rows(lo, hi))
            lo = hi
            continue
        pool = buf.n
        got = buf.draw(batch)
        assert len(got) == min(batch, pool)  # a full batch whenever the pool holds enough
        assert buf.n + len(buf.free) == len(buf.slots)
        if not len(got):
            return out
        out.append(got)


@pytest.mark.parametrize("capacity,batch", [(1, 1), (1, 10), (10, 3), (10, 10), (10, 25)])
def test_buffer_conserves_rows_and_stays_bounded(capacity, batch):
    """Every row comes out exactly once, whole; the slots never grow."""
    buf = ShuffleBuffer(capacity, 2, np.random.default_rng(1), block=batch)
    slots = len(buf.slots)
    rows = np.concatenate(_run_buffer(buf, 103, batch))
    assert np.array_equal(np.sort(rows[:, 0]), np.arange(103))
    assert np.array_equal(rows[:, 1], -rows[:, 0])
    assert len(buf.slots) == slots == capacity + batch and buf.n == 0


def test_buffer_draws_uniformly_from_the_pool():
    """Over many draws, the rows that arrived in the latest fill come out in proportion to
    their share of the pool (10 of 20 slots: about half)."""
    buf = ShuffleBuffer(10, 2, np.random.default_rng(2), block=10)
    buf.fill(_rows(0, 20))
    lo, newest, total = 20, 0, 0
    for _ in range(500):
        got = buf.draw(10)
        newest += int((got[:, 0] >= lo - 10).sum())
        total += len(got)
        buf.fill(_rows(lo, lo + 10))
        lo += 10
    assert 0.45 < newest / total < 0.55


def test_buffer_restore_reproduces_the_future_exactly():
    a = ShuffleBuffer(20, 2, np.random.default_rng(5), block=7)
    a.fill(_rows(0, 27))
    for i in range(3):
        a.draw(7)
        a.fill(_rows(27 + 7 * i, 34 + 7 * i))
    a.draw(7)
    slots, free, tail, state = a.state()
    b = ShuffleBuffer(20, 2, np.random.default_rng(999), block=7)
    b.restore(slots, free, tail, state)
    assert np.array_equal(_run_buffer(a, 0, 7)[0], _run_buffer(b, 0, 7)[0])
    with pytest.raises(ValueError):
        ShuffleBuffer(21, 2, np.random.default_rng(0), block=7).restore(slots, free, tail, state)


@pytest.mark.parametrize("run", [1, 2, 4, 8])
def test_runs_keep_every_row_once_and_restore_exactly(run):
    rows = _rows(0, 203)  # not a multiple of any run: a tail at the end
    a = ShuffleBuffer(37, 2, np.random.default_rng(6), block=8, run=run)
    out, fed = [], 0
    while True:
        if fed < len(rows) and a.space():
            take = min(a.space(), len(rows) - fed)
            a.fill(rows[fed : fed + take])
            fed += take
            continue
        batch = a.draw(8)
        if not len(batch):
            break
        out.append(batch)
        if len(out) == 5:  # restore mid-way into a fresh buffer and carry on with it
            b = ShuffleBuffer(37, 2, np.random.default_rng(0), block=8, run=run)
            b.restore(*a.state())
            a = b
    got = np.concatenate(out)
    assert sorted(got[:, 0].tolist()) == rows[:, 0].tolist()  # every row exactly once
    assert all(len(b) == 8 for b in out[:-1])  # exact batch sizes but the last
    if run > 1:  # whole runs of consecutive rows travel together
        first = out[0][:, 0]
        assert np.all(np.diff(first.reshape(-1, run), axis=1) == 1)


def _stream(buf: ShuffleBuffer, rows: np.ndarray, batch: int, *, restore_after: int | None = None):
    """Feed ``rows`` as the stream does (fill while there is space, then draw), optionally
    moving to a fresh buffer restored from the state after ``restore_after`` batches."""
    out, fed = [], 0
    while True:
        if fed < len(rows) and buf.space():
            take = min(buf.space(), len(rows) - fed)
            buf.fill(rows[fed : fed + take])
            fed += take
            continue
        got = buf.draw(batch)
        if not len(got):
            return out
        out.append(np.array(got))
        if len(out) == restore_after:
            fresh = ShuffleBuffer(
                buf.capacity, buf.width, np.random.default_rng(0), block=buf.block, run=buf.run
            )
            fresh.restore(*buf.state())
            buf = fresh


@pytest.mark.parametrize("run", [1, 4])
def test_rounds_of_several_batches_keep_rows_once_and_restore_at_any_batch(run):
    """Rounds of 4 batches: every row once, exact batch sizes, and a restore after any batch
    (inside a round, at its end, in the drain) gives the same batches as no restore."""
    rows = _rows(0, 333)  # a tail at the end for run 4
    make = lambda: ShuffleBuffer(40, 2, np.random.default_rng(8), block=32, run=run)  # noqa: E731
    whole = _stream(make(), rows, 8)
    got = np.concatenate(whole)
    assert sorted(got[:, 0].tolist()) == rows[:, 0].tolist()
    assert all(len(b) == 8 for b in whole[:-1])
    for k in range(1, len(whole)):
        again = _stream(make(), rows, 8, restore_after=k)
        assert len(again) == len(whole)
        assert all(np.array_equal(a, b) for a, b in zip(again, whole, strict=True)), (
            f"restored after {k}"
        )


def test_no_fill_while_a_round_is_out():
    buf = ShuffleBuffer(8, 2, np.random.default_rng(0), block=8)
    buf.fill(_rows(0, 16))
    buf.draw(2)
    assert buf.space() == 0
    with pytest.raises(ValueError):
        buf.fill(_rows(16, 18))
    for _ in range(3):
        buf.draw(2)
    assert buf.space() == 8


@pytest.mark.parametrize("run", [1, 4, 16])
def test_filling_several_parts_is_filling_their_concatenation(run):
    """The stream fills the buffer with the views of several chunks at once: the slots,
    free list and tail (the state) are those of one fill with the joined rows."""
    sizes = [5, 0, 16, 3, 33, 1, 7]  # runs straddle parts; an empty part; a tail at the end
    rows = _rows(0, sum(sizes))
    parts, lo = [], 0
    for n in sizes:
        parts.append(np.asfortranarray(rows[lo : lo + n]))
        lo += n
    a = ShuffleBuffer(100, 2, np.random.default_rng(3), block=16, run=run)
    b = ShuffleBuffer(100, 2, np.random.default_rng(3), block=16, run=run)
    a.fill(rows[:3])
    b.fill(rows[:3])
    a.fill(parts)
    b.fill(np.concatenate(parts))
    (slots_a, free_a, tail_a, _), (slots_b, free_b, tail_b, _) = a.state(), b.state()
    assert np.array_equal(free_a, free_b) and np.array_equal(tail_a, tail_b)
    filled = np.setdiff1d(np.arange(len(slots_a)), free_a)  # free slots hold leftovers
    assert np.array_equal(slots_a[filled], slots_b[filled])
    assert np.array_equal(a.draw(16), b.draw(16))
