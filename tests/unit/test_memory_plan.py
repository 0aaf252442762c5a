"""The memory plan's arithmetic (streamgd.memory_plan): the footprint's terms against the
formula written out by hand, the plan's choice against a brute-force search of every
candidate, and sizes that depend on (limit, layout) alone."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamgd import memory_plan as mp
from streamgd.config import FitConfig, RunOptions
from streamgd.constraints import parse_size
from streamgd.errors import UsageError
from streamgd.shuffle import STORE_FACTOR
from streamgd.sources import open_dataset

MIB = 1 << 20
LAYOUT = mp.Layout(columns=33, row_bytes=132, largest_unit=131_072, units=32, files_bytes=MIB)


def by_hand(layout: mp.Layout, s: mp.Sizes) -> int:
    """The module docstring's formula, written out independently."""
    c, rows = layout.columns, min(s.piece_rows, layout.largest_unit)
    table = rows * layout.row_bytes
    if layout.largest_unit > s.piece_rows:
        per_column = min(2 * layout.largest_unit * layout.row_bytes // c, 2 * MIB) + MIB // 4
        reader = c * per_column
        arrow = table + reader
    elif rows >= 16_384:  # read a column at a time: 3 x its rows of 8-byte values
        reader, arrow = 0, 3 * rows * 8
    else:
        reader, arrow = 0, 2 * table
    shuffled = layout.shuffle and s.buffer > 0
    lanes = min(s.lanes, layout.units) if shuffled else 1
    # three pieces in the pass's dtype, its float64 block of 16,384 rows at most and three
    # temporaries of it, Arrow's read (a sliced row group: a table more)
    stats = layout.files_bytes + 3 * rows * c * (4 if layout.stats_float32 else 8)
    stats += 4 * min(rows, 16_384) * c * 8 + arrow + (table if reader else 0)
    if shuffled:
        block = max(1, min(-(-8192 // layout.batch_size), s.buffer // (8 * layout.batch_size)))
        block *= layout.batch_size
        pieces = (lanes + s.prefetch + 2) * rows * c * 4
        buffer = (STORE_FACTOR * (s.buffer + block) + block) * c * 4
    else:
        pieces, buffer = (s.prefetch + 2) * rows * c * 4, 0
    lane_extra = (lanes - 1) * reader + lanes * (MIB // 4)
    train = layout.files_bytes + pieces + buffer + 4 * layout.batch_size * c * 8 + arrow
    train += lane_extra
    if layout.largest_unit <= 4096 and layout.largest_unit <= s.piece_rows:
        stats += 2 * 4 * MIB + 16 * MIB  # tiny units: two groups, the kept tables
        train += 2 * 4 * MIB + 16 * MIB

    def with_slack(x):
        return x + 20 * MIB + int(0.25 * x)

    return mp.IMPORTS_BYTES + max(with_slack(stats), with_slack(train))


@pytest.mark.parametrize(
    "layout",
    [
        LAYOUT,
        mp.Layout(columns=9, row_bytes=36, largest_unit=2_000_000, units=1, batch_size=8192),
        mp.Layout(columns=5, row_bytes=40, largest_unit=2_000, units=500, shuffle=False),
        mp.Layout(columns=33, row_bytes=132, largest_unit=2_000_000, units=1, stats_float32=True),
    ],
)
@pytest.mark.parametrize(
    "sizes",
    [
        mp.Sizes(buffer=65_536, lanes=2, piece_rows=262_144),
        mp.Sizes(buffer=4_096, lanes=7, piece_rows=16_384, prefetch=3),
        mp.Sizes(buffer=0, lanes=1, piece_rows=1_000),
    ],
)
def test_footprint_is_the_formula(layout, sizes):
    fp = mp.footprint(layout, sizes)
    assert abs(fp.total - by_hand(layout, sizes)) <= 2  # integer rounding of the slack
    assert fp.total == fp.floor + max(sum(fp.statistics.values()), sum(fp.training.values()))


def test_footprint_grows_with_each_size():
    base = mp.Sizes(buffer=16_384, lanes=2, piece_rows=16_384)
    total = mp.footprint(LAYOUT, base).total
    for bigger in (
        mp.Sizes(32_768, 2, 16_384),
        mp.Sizes(16_384, 3, 16_384),
        mp.Sizes(16_384, 2, 32_768),
        mp.Sizes(16_384, 2, 16_384, prefetch=2),
    ):
        assert mp.footprint(LAYOUT, bigger).total > total


def preference(s: mp.Sizes):
    return (min(s.lanes, mp.PREFERRED_LANES), s.buffer, s.lanes, s.piece_rows, s.prefetch)


def every_choice(layout: mp.Layout, buffer: int | None, prefetch: int) -> list[mp.Sizes]:
    """Every combination in the plan's ranges: buffers, 1-32 lanes (at most the default for
    the pieces and the units), pieces halved from the largest row group down to 4,096 rows,
    prefetch depths."""
    buffers = [buffer] if buffer is not None else list(mp.BUFFERS)
    pieces, p = [], min(layout.largest_unit, 262_144)
    while True:
        pieces.append(p)
        if p <= mp.MIN_PIECE_ROWS:
            break
        p = max(mp.MIN_PIECE_ROWS, p // 2)
    out = []
    for b, w, p, d in itertools.product(buffers, range(1, 33), pieces, range(1, prefetch + 1)):
        default_lanes = mp.lane_count(min(p, layout.largest_unit) * layout.columns * 4)
        if w <= default_lanes and w <= max(layout.units, 2):
            out.append(mp.Sizes(b, w, p, d))
    return out


def brute_force(limit: int, layout: mp.Layout, buffer: int | None, prefetch: int):
    """The most preferred of every choice that fits."""
    fits = [
        s for s in every_choice(layout, buffer, prefetch) if mp.footprint(layout, s).total <= limit
    ]
    return max(fits, key=preference) if fits else None


@pytest.mark.parametrize("limit_mb", [170, 190, 220, 260, 400])
@pytest.mark.parametrize("buffer", [None, 8_192])
def test_plan_takes_the_most_preferred_sizes_that_fit(limit_mb, buffer):
    limit = limit_mb * 1_000_000
    expected = brute_force(limit, LAYOUT, buffer, 2)
    if expected is None:
        with pytest.raises(UsageError, match="below the minimum for these files"):
            mp.plan(limit, LAYOUT, buffer=buffer, prefetch=2)
        return
    found = mp.plan(limit, LAYOUT, buffer=buffer, prefetch=2)
    assert found.sizes == expected
    assert found.footprint.total <= limit
    if buffer is not None:
        assert found.sizes.buffer == buffer  # the user's buffer is kept


def test_refusal_names_the_minimum_and_its_terms():
    smallest = min(mp.footprint(LAYOUT, s).total for s in every_choice(LAYOUT, None, 1))
    with pytest.raises(UsageError) as err:
        mp.plan(100_000_000, LAYOUT, what="100MB")
    text = str(err.value)
    assert text.startswith("--memory-limit 100MB is below the minimum for these files: ")
    assert f"{smallest / 1e6:.0f}MB (imports {mp.IMPORTS_BYTES / 1e6:.0f}MB + " in text
    assert "\n" not in text


def test_sizes_do_not_depend_on_the_process():
    """The floor measured in this process may refuse a plan, never change its sizes."""
    limit = 260_000_000
    planned = mp.plan(limit, LAYOUT).sizes
    opened = mp.IMPORTS_BYTES + LAYOUT.files_bytes
    assert mp.plan(limit, LAYOUT, floor=opened + 2 * MIB).sizes == planned
    spare = limit - mp.plan(limit, LAYOUT).footprint.total
    extra = mp.FLOOR_TOLERANCE + spare // 2
    roomy = mp.plan(limit, LAYOUT, floor=opened + extra)
    assert roomy.sizes == planned
    assert roomy.footprint.floor == mp.IMPORTS_BYTES + spare // 2
    with pytest.raises(UsageError, match="this process holds"):
        mp.plan(limit, LAYOUT, floor=opened + 200 * MIB)


def test_parse_size():
    assert parse_size("200MB") == 200_000_000
    assert parse_size("1.5GiB") == int(1.5 * (1 << 30))
    assert parse_size("512Mi") == 512 * MIB
    assert parse_size("2g") == 2_000_000_000
    assert parse_size("1000") == 1000
    for bad in ("", "MB", "-5MB", "12 parsecs", "nanMB", "0"):
        assert parse_size(bad) is None


def test_memory_limit_setting_is_checked():
    assert RunOptions(memory_limit="1.5GiB").memory_limit == "1.5GiB"
    with pytest.raises(UsageError, match="--memory-limit must be a size such as 200MB"):
        RunOptions(memory_limit="lots")
    with pytest.raises(UsageError, match="leave out --cluster"):
        RunOptions(memory_limit="1GB", cluster="local:2")


def test_layout_of_parquet_files(tmp_path):
    cols = {f"x{j}": pa.array(np.arange(1000, dtype=np.float32)) for j in range(3)}
    cols["y"] = pa.array(np.arange(1000, dtype=np.float64))
    cols["name"] = pa.array(["a"] * 1000)
    pq.write_table(pa.table(cols), tmp_path / "a.parquet", row_group_size=300)
    dataset = open_dataset([str(tmp_path / "a.parquet")])
    layout = mp.layout_of(dataset, FitConfig(target="y", features=("x0", "x2"), batch_size=64))
    assert (layout.columns, layout.row_bytes) == (3, 4 + 4 + 8)
    assert (layout.largest_unit, layout.units, layout.batch_size) == (300, 4, 64)
    layout = mp.layout_of(dataset, FitConfig(target="y"))
    assert (layout.columns, layout.row_bytes) == (5, 3 * 4 + 8 + 8)


def test_reading_sizes_are_refused_with_a_cluster(tmp_path):
    from streamgd.training import train

    table = pa.table({"x": np.arange(100.0), "y": np.arange(100.0)})
    pq.write_table(table, tmp_path / "a.parquet")
    for sizes in ({"lanes": 2}, {"piece_rows": 1024}):
        with pytest.raises(UsageError, match="leave them out with --cluster"):
            train(
                [str(tmp_path / "a.parquet")],
                FitConfig(target="y", **sizes),
                RunOptions(cluster="local:1"),
            )


def test_sizes_the_user_gave_are_kept():
    found = mp.plan(300_000_000, LAYOUT, lanes=3, piece_rows=10_000)
    assert (found.sizes.lanes, found.sizes.piece_rows) == (3, 10_000)
    assert found.footprint.total <= 300_000_000
    assert found.sizes.buffer == max(
        b for b in mp.BUFFERS if mp.footprint(LAYOUT, mp.Sizes(b, 3, 10_000)).total <= 300_000_000
    )
    with pytest.raises(UsageError, match="for these files with --lanes 32: "):
        mp.plan(150_000_000, LAYOUT, lanes=32, what="150MB")
