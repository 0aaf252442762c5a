"""The core stream contract: every row exactly once per epoch, exact batch sizes, file order
without shuffle, seeded determinism, and exact resume from (cursor, buffer, rng state)."""

from __future__ import annotations

import copy
import dataclasses
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import streamgd.sources as sources
from streamgd import groups
from streamgd.batches import BatchStream, Cursor, Prefetcher
from streamgd.decode import Decoder
from streamgd.features.rows import preparer
from streamgd.shuffle import epoch_order
from streamgd.sources import open_dataset

from .helpers import (
    COLUMNS,
    LAYOUTS,
    SMALL_CSV_BLOCK,
    collect,
    make_stream,
    trivial_prepare,
    write_layout,
    write_parquet,
)

BATCH_SIZES = [1, 7, 64, 1000]
# (shuffle, buffer size): 10_000 is larger than any layout; without shuffle the buffer is unused
SHUFFLES = [(False, 0), (False, 50), (True, 0), (True, 1), (True, 50), (True, 10_000)]


@pytest.fixture(autouse=True)
def small_csv_blocks(monkeypatch):
    """CSV files are read in many blocks, so a unit yields several chunks."""
    monkeypatch.setattr(sources.csv, "CSV_BLOCK_SIZE", SMALL_CSV_BLOCK)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    return {name: write_layout(str(root / name), name) for name in LAYOUTS}


def test_layouts_cover_what_they_claim(layouts):
    """Guard the grid: CSV units really arrive in several chunks (with the right first rows),
    the empty file is a unit with no rows, and one layout is a single row group."""
    ds = open_dataset(layouts["csv_files"][0])
    for unit in ds.units:
        pieces = list(ds.iter_unit(unit, COLUMNS))
        assert len(pieces) >= 3
        starts = [first for _, first in pieces]
        sizes = [t.num_rows for t, _ in pieces]
        assert starts == list(np.cumsum([0, *sizes[:-1]]))
    ds = open_dataset(layouts["with_empty_file"][0])
    assert any(u.rows == 0 for u in ds.units)
    ds = open_dataset(layouts["one_row_group"][0])
    assert len(ds.units) == 1


def _unit_ranges(ds, paths: list[str]) -> list[np.ndarray]:
    """The row_ids of each unit, from the layout (rows are numbered consecutively by file)."""
    starts, lo = {}, 0
    for path, f in zip(paths, ds.files, strict=True):
        starts[path] = lo
        lo += f.num_rows if f.num_rows is not None else _csv_rows(path)
    out = []
    for unit in ds.units:
        f = ds.files[unit.file]
        base = starts[f.path]
        if unit.row_group < 0:
            out.append(np.arange(base, base + _csv_rows(f.path)))
        else:
            first = base + sum(f.row_groups[: unit.row_group])
            out.append(np.arange(first, first + f.row_groups[unit.row_group]))
    return out


def _csv_rows(path: str) -> int:
    return pacsv.read_csv(path).num_rows


@pytest.mark.parametrize("shuffle,buffer_size", SHUFFLES)
@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_row_exactly_once_in_exact_batches(layouts, layout, batch_size, shuffle, buffer_size):
    paths, n = layouts[layout]
    ds = open_dataset(paths)
    stream = make_stream(
        ds, batch_size=batch_size, shuffle=shuffle, buffer_size=buffer_size, seed=11, epoch=2
    )
    batches = collect(stream)
    sizes = [len(b) for b in batches]
    assert len(batches) == -(-n // batch_size)
    assert all(s == batch_size for s in sizes[:-1]), sizes
    assert 0 < sizes[-1] <= batch_size
    rows = np.concatenate(batches)
    assert rows.dtype == np.float64 and rows.shape == (n, 2)
    ids = rows[:, 0]
    assert np.array_equal(np.sort(ids), np.arange(n))
    assert np.array_equal(rows[:, 1], 0.5 * ids + 3.0)  # rows travel whole
    if not shuffle:
        assert np.array_equal(ids, np.arange(n))
    elif buffer_size == 0:
        # units in the epoch's order, each unit's rows in file order
        order = epoch_order(len(ds.units), seed=11, epoch=2, shuffle=True)
        units = _unit_ranges(ds, paths)
        assert np.array_equal(ids, np.concatenate([units[i] for i in order]))
    # the cursor ends past the last unit
    assert stream.cursor.position == len(ds.units) and stream.cursor.offset == 0


def _ids(batches: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(batches)[:, 0]


@pytest.mark.parametrize("buffer_size", [0, 1, 50, 10_000])
@pytest.mark.parametrize("layout", ["several_files", "mixed", "one_file_rg64"])
def test_shuffled_order_is_seeded(layouts, layout, buffer_size):
    ds = open_dataset(layouts[layout][0])

    def run(seed, epoch):
        return collect(
            make_stream(ds, batch_size=7, buffer_size=buffer_size, seed=seed, epoch=epoch)
        )

    base = run(5, 0)
    again = run(5, 0)
    assert len(base) == len(again)
    assert all(np.array_equal(a, b) for a, b in zip(base, again, strict=True))
    for seed, epoch in [(6, 0), (5, 1), (0, 3)]:
        other = _ids(run(seed, epoch))
        assert not np.array_equal(other, _ids(base)), (seed, epoch)
        assert np.array_equal(np.sort(other), np.sort(_ids(base)))
    assert not np.array_equal(_ids(base), np.arange(len(_ids(base))))


def test_buffer_larger_than_data_mixes_the_whole_epoch(layouts):
    """With a buffer that holds everything, the first batch is drawn from the whole epoch,
    not from the first unit (a check that the buffer really shuffles rows across units)."""
    paths, n = layouts["several_files"]
    ds = open_dataset(paths)
    first = collect(make_stream(ds, batch_size=64, buffer_size=10_000, seed=1))[0][:, 0]
    assert first.max() - first.min() > n / 2


# -- resume -----------------------------------------------------------------------------------

RESUME_SETTINGS = [(False, 0), (True, 0), (True, 50), (True, 10_000)]


def _capture(stream: BatchStream) -> dict:
    """The stream's state as BatchStream keyword arguments, copied (the cursor is live)."""
    return {
        "cursor": Cursor(**dataclasses.asdict(stream.cursor)),
        "shuffle_state": copy.deepcopy(stream.shuffle_state()),
    }


def _interrupt(ds, k: int, **kw) -> tuple[list[np.ndarray], dict, list[np.ndarray]]:
    """Run ``k`` batches, capture the state, then run the rest of the same stream."""
    stream = make_stream(ds, **kw)
    it = iter(stream)
    head = [next(it).copy() for _ in range(k)]
    state = _capture(stream)
    tail = [b.copy() for b in it]
    return head, state, tail


def _assert_same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)


@pytest.mark.parametrize("batch_size", [7, 64])
@pytest.mark.parametrize("shuffle,buffer_size", RESUME_SETTINGS)
@pytest.mark.parametrize("layout", ["several_files", "csv_files", "with_empty_file", "mixed"])
def test_resume_continues_exactly(layouts, layout, shuffle, buffer_size, batch_size):
    ds = open_dataset(layouts[layout][0])
    kw = dict(batch_size=batch_size, shuffle=shuffle, buffer_size=buffer_size, seed=3, epoch=1)
    full = collect(make_stream(ds, **kw))
    n = len(full)
    for k in sorted({0, 1, n // 3, n // 2 + 1, n - 1, n}):
        head, state, tail = _interrupt(ds, k, **kw)
        _assert_same(head + tail, full)  # capturing the state does not disturb the stream
        resumed = collect(make_stream(ds, **kw, **state))
        _assert_same(resumed, tail)


@pytest.mark.parametrize("shuffle,buffer_size", RESUME_SETTINGS)
def test_resume_twice(layouts, shuffle, buffer_size):
    ds = open_dataset(layouts["mixed"][0])
    kw = dict(batch_size=7, shuffle=shuffle, buffer_size=buffer_size, seed=8, epoch=0)
    full = collect(make_stream(ds, **kw))
    k1, k2 = 30, 45
    _, state, _ = _interrupt(ds, k1, **kw)
    second = make_stream(ds, **kw, **state)
    it = iter(second)
    middle = [next(it).copy() for _ in range(k2)]
    _assert_same(middle, full[k1 : k1 + k2])
    state2 = _capture(second)
    it.close()
    _assert_same(collect(make_stream(ds, **kw, **state2)), full[k1 + k2 :])


@pytest.fixture
def null_target_files(tmp_path):
    """Parquet with some null targets (one row group entirely null) and a CSV with some."""
    rng = np.random.default_rng(4)
    ids = np.arange(900)
    y = 0.5 * ids + 3.0
    null = rng.random(900) < 0.2
    null[200:250] = True  # a whole row group of the Parquet file
    pa_y = pa.array(y, mask=null)
    table = pa.table({"row_id": ids[:600], "y": pa_y[:600]})
    p1 = str(tmp_path / "a.parquet")
    pq.write_table(table, p1, row_group_size=50)
    p2 = str(tmp_path / "b.csv")
    with open(p2, "w") as fh:
        fh.write("row_id,y\n")
        for i in range(600, 900):
            fh.write(f"{i},{'' if null[i] else float(y[i])}\n")
    return [p1, p2], ids[~null], int(null.sum())


@pytest.mark.parametrize("shuffle,buffer_size", RESUME_SETTINGS)
def test_null_targets_dropped_counted_and_resumable(null_target_files, shuffle, buffer_size):
    paths, kept, n_null = null_target_files
    ds = open_dataset(paths)
    prepare = preparer(["row_id"], "y", missing="impute", fill=np.zeros(1), check_target=None)
    kw = dict(
        prepare=prepare, batch_size=16, shuffle=shuffle, buffer_size=buffer_size, seed=2, epoch=0
    )
    stream = make_stream(ds, **kw)
    full = collect(stream)
    ids = _ids(full)
    assert np.array_equal(np.sort(ids), kept)
    assert all(len(b) == 16 for b in full[:-1])
    assert stream.counts is not None and stream.counts[0] == n_null
    for k in (1, len(full) // 2, len(full) - 1):
        _, state, tail = _interrupt(ds, k, **kw)
        _assert_same(collect(make_stream(ds, **kw, **state)), tail)


# -- the prefetcher ---------------------------------------------------------------------------


def _count_decodes(ds) -> list:
    """Wrap ``ds.iter_unit`` to record each unit it decodes."""
    calls = []
    original = ds.iter_unit

    def counting(unit, columns, handle=None):
        calls.append(unit)
        yield from original(unit, columns, handle)

    ds.iter_unit = counting
    return calls


@pytest.mark.parametrize("shuffle", [False, True])
def test_resume_mid_epoch_decodes_only_from_the_cursor(layouts, shuffle):
    ds = open_dataset(layouts["several_files"][0])
    kw = dict(batch_size=64, shuffle=shuffle, buffer_size=0, seed=1, epoch=0)
    _, state, tail = _interrupt(ds, 6, **kw)
    position, offset = state["cursor"].position, state["cursor"].offset
    assert 0 < position < len(ds.units) and offset > 0  # mid-unit
    calls = _count_decodes(ds)
    stream = make_stream(ds, **kw, **state)
    _assert_same(collect(stream), tail)
    assert calls == [ds.units[i] for i in stream.order[position:]]


def test_prefetcher_start_and_offset_skip_exactly(layouts):
    ds = open_dataset(layouts["csv_files"][0])
    order = list(range(len(ds.units)))
    # a CSV file's blocks end with an empty end-of-unit chunk
    full = [
        c.rows.copy()
        for c in Prefetcher(ds, order, Decoder(tuple(COLUMNS), trivial_prepare))
        if len(c.rows)
    ]
    unit1 = np.concatenate(full[next(i for i, c in enumerate(full) if c[0, 0] >= 600) :])
    chunks = list(
        Prefetcher(ds, order, Decoder(tuple(COLUMNS), trivial_prepare), start=1, offset=250)
    )
    rows = np.concatenate([c.rows for c in chunks])
    assert np.array_equal(rows, unit1[250:])
    assert all(c.position == 1 for c in chunks)
    assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]


def test_prefetcher_decodes_a_bounded_number_of_units_ahead(layouts, monkeypatch):
    # units read one by one (tiny ones are read in groups bounded in rows and bytes: see
    # tests/integration/test_tiny_files.py)
    monkeypatch.setattr(groups, "TINY_ROWS", 0)
    ds = open_dataset(layouts["one_file_rg64"][0])
    calls = _count_decodes(ds)
    depth = 2
    pre = Prefetcher(
        ds, range(len(ds.units)), Decoder(tuple(COLUMNS), trivial_prepare), depth=depth
    )
    try:
        deadline = time.monotonic() + 5
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert calls, "the prefetcher never started"
        time.sleep(0.3)  # ample time to decode all 16 units if nothing held it back
        assert len(calls) <= depth + 2
    finally:
        pre.close()


def _prefetch_threads(baseline=frozenset()) -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t.name == "streamgd-prefetch" and t.is_alive() and t not in baseline
    ]


def test_errors_in_prepare_reach_the_consumer_and_stop_the_thread(layouts):
    baseline = frozenset(_prefetch_threads())
    ds = open_dataset(layouts["one_file_rg64"][0])

    def failing(m, path, first_row):
        if first_row >= 256:
            raise ValueError(f"bad chunk at {first_row}")
        return trivial_prepare(m, path, first_row)

    with pytest.raises(ValueError, match="bad chunk at 256"):
        collect(make_stream(ds, prepare=failing, shuffle=False, buffer_size=0))
    deadline = time.monotonic() + 5
    while _prefetch_threads(baseline) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _prefetch_threads(baseline)


@pytest.mark.parametrize("buffer_size", [0, 50])  # one unit at a time; lanes
def test_abandoning_a_stream_stops_its_thread(tmp_path, buffer_size):
    baseline = frozenset(_prefetch_threads())
    # enough units that the thread is still reading (or waiting to hand over) after a batch
    ds = open_dataset([write_parquet(str(tmp_path / "many.parquet"), 0, 20_000, 64)])
    it = iter(make_stream(ds, batch_size=1, buffer_size=buffer_size))
    next(it)
    assert _prefetch_threads(baseline)
    it.close()
    assert not _prefetch_threads(baseline)


@pytest.mark.parametrize("shuffle,buffer_size", [(False, 0), (True, 50)])
def test_center_is_subtracted_while_decoding(layouts, shuffle, buffer_size):
    ds = open_dataset(layouts["mixed"][0])
    center = np.array([100.0, -2.5])
    kw = dict(batch_size=7, shuffle=shuffle, buffer_size=buffer_size, seed=1)
    plain = collect(make_stream(ds, **kw))
    centred = collect(make_stream(ds, **kw, center=center))
    _assert_same(centred, [b - center for b in plain])


def test_a_batch_is_valid_until_the_next_is_requested(layouts):
    # documented contract: unshuffled batches view recycled decode buffers, so a consumer
    # that keeps batches must copy them; copies taken in the loop are all intact
    paths, n = layouts["one_file_rg64"]
    ds = open_dataset(paths)
    kept = [b.copy() for b in make_stream(ds, batch_size=7, shuffle=False, buffer_size=0)]
    assert np.array_equal(_ids(kept), np.arange(n))


# -- the statistics pass's parsed CSV blocks, parked for the epoch ------------------------------


def _count_csv_parses(ds) -> list:
    calls = []
    original = ds._iter_csv

    def counting(src, columns):
        calls.append(src.path)
        yield from original(src, columns)

    ds._iter_csv = counting
    return calls


@pytest.mark.parametrize("stop_after", [1, 3, 1000])
def test_parked_csv_blocks_are_read_once_and_continue_exactly(layouts, stop_after):
    """A prefetcher with ``park`` stopped after some chunks (or after the whole first file)
    leaves what it parsed to the next read of that unit, which continues the same reader."""
    ds = open_dataset(layouts["csv_files"][0])
    order = list(range(len(ds.units)))
    full = [c.rows.copy() for c in Prefetcher(ds, order, Decoder(tuple(COLUMNS), trivial_prepare))]
    calls = _count_csv_parses(ds)
    pre = Prefetcher(ds, order, Decoder(tuple(COLUMNS), trivial_prepare), park=True)
    for i, _ in enumerate(pre):
        if i + 1 >= stop_after:
            break
    pre.close()
    again = [c.rows.copy() for c in Prefetcher(ds, order, Decoder(tuple(COLUMNS), trivial_prepare))]
    _assert_same(again, full)
    # every file parsed once in all: what the first pass read ahead of the second file too
    assert calls == [ds.files[0].path, ds.files[1].path]


def test_parked_blocks_are_dropped_by_another_read(layouts):
    ds = open_dataset(layouts["csv_files"][0])
    pre = Prefetcher(ds, [0], Decoder(tuple(COLUMNS), trivial_prepare), park=True)
    next(iter(pre))
    pre.close()
    assert ds._parked
    # another unit first (a shuffled epoch), or other columns: parsed afresh, memory freed
    other = [c.rows.copy() for c in Prefetcher(ds, [1, 0], Decoder(("y",), trivial_prepare))]
    assert not ds._parked
    assert sum(len(r) for r in other) == 997


def test_nothing_is_parked_after_an_error(layouts):
    ds = open_dataset(layouts["csv_files"][0])

    def failing(m, path, first_row):
        if first_row >= 200:
            raise ValueError("bad block")
        return trivial_prepare(m, path, first_row)

    pre = Prefetcher(ds, [0], Decoder(tuple(COLUMNS), failing), park=True)
    with pytest.raises(ValueError, match="bad block"):
        list(pre)
    pre.close()
    assert not ds._parked
