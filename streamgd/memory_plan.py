"""What a fit holds in memory, by design, and the settings that keep it within a limit.

A fit's peak RSS is the interpreter with its imports (the floor), the open dataset (parsed
footers), and the larger of two phases' working sets (BENCHMARKS.md, "Footprint", has the
measurements behind each term):

- the statistics pass: ``3`` decoded pieces (one queued, one being decoded, one being
  summarised) in the pass's dtype (float32 when the columns it reads are all exact in
  float32, else float64: :func:`streamgd.stats_pass.pass_dtype`), the float64 block it
  summarises at a time and ``Stats.of``'s temporaries of it (``4`` blocks of at most
  ``stats_pass.BLOCK_ROWS`` rows), and Arrow's read of a piece (a row group read in slices:
  with a slice's table more, measured while the pass reads);
- training: the decoded float32 pieces in flight (each lane's piece, pieces whose last
  slices wait in the prefetch queue or the consumer still views, the one being decoded:
  ``W + D + 2`` with ``W`` lanes and a prefetch depth ``D``, ``D + 2`` unshuffled; the
  decode matrices are recycled, each as large as the largest piece), the shuffle
  buffer (its store of ``STORE_FACTOR x (capacity + exchange)`` rows and the exchange), the
  batch's arrays and Arrow's read of a piece.

Arrow's read of a piece is a column at a time for row groups of at least
``COLUMNWISE_ROWS`` rows (:class:`streamgd.sources.RowGroupColumns`), else its table (the
piece's rows in the files' column types) and the mapped pages it was decoded from; a row
group read in slices instead keeps column readers open (pages and a read buffer per column,
whatever the slice), one per open lane. Tiny row groups (at most ``groups.TINY_ROWS``
rows, read in groups: :mod:`streamgd.groups`) add, in both phases, a decoded group and the
next one's tables (``2 x GROUP_BYTES``) and the tables the statistics pass keeps for the
first epoch (``KEEP_BUDGET``). Each phase carries an allowance for what is not a matrix
(Python objects, the allocators' slack).

:func:`plan` sizes a run for a limit from the files' layout alone (footers: rows per row
group, column types), never from the machine's state, so the same limit on the same files
gives the same settings, and so the same model, anywhere: the shuffle buffer, the lanes, the
pieces' rows and the prefetch depth. Only the refusal also looks at this process's own RSS.

The benchmark's 4M rows of 33 float32 columns in 32 row groups of 131,072 rows, defaults
(measured peaks: 196-198 MB; training's term is the larger here):

>>> layout = Layout(columns=33, row_bytes=132, largest_unit=131_072, units=32, stats_float32=True)
>>> round(footprint(layout, Sizes(buffer=65_536, lanes=2, piece_rows=262_144)).total / 1e6)
238
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .batches import exchange_rows
from .constraints import parse_size
from .errors import UsageError
from .groups import GROUP_BYTES, TINY_ROWS
from .shuffle import STORE_FACTOR, lane_count
from .sources import SLICE_ROWS, WHOLE_ROWS
from .sources.dataset import COLUMNWISE_ROWS
from .sources.parquet import FOOTER_BUDGET, FOOTER_COST, KEEP_BUDGET
from .stats_pass import BLOCK_ROWS, pass_dtype

__all__ = [
    "IMPORTS_BYTES",
    "Footprint",
    "Layout",
    "Plan",
    "Sizes",
    "footprint",
    "layout_of",
    "measured_peak",
    "memory_report",
    "current_rss",
    "plan",
    "plan_run",
]

MB = 1_000_000  # what the messages count in, as the user's "200MB" does
MIB = 1 << 20

# The floor a plan is sized with: the RSS of an interpreter that has imported what a fit
# needs (numpy, pyarrow.parquet, streamgd's training path), measured at 70-71 MiB on Python
# 3.11, numpy 2.4, pyarrow 26 (77-81 before pyarrow.compute was left out of numeric fits), and
# 73 MiB in `streamgd fit` (click, the command) once the files are open. A constant, so that
# the plan does not depend on the machine.
IMPORTS_BYTES = 74 * MIB
# Arrow's column readers while a row group is read in slices, per column: its pages (a
# dictionary page and a data page, decompressed: about 2 MiB on 2M-row groups of float32,
# at most about twice the column's values) and the read buffer (streamgd.sources: 64 KiB),
# with what Arrow keeps beside them (measured: 2.3 MiB a column on 2M-row groups, 1.2 MiB
# on 131,072-row groups).
READER_BYTES = 2 * MIB
READER_BUFFER = MIB // 4
# Arrow's memory while a row group is read one column at a time (sources.RowGroupColumns), in
# widest values (8 bytes) of its rows: the column chunk's bytes, its values and scratch
# (measured: 3 MiB at most on 131,072-row groups of float32)
COLUMN_READS = 3
# What else an open lane holds (its unit's reader state, chunk objects).
LANE_OVERHEAD = MIB // 4
# The open dataset, per file: a parsed footer costs about FOOTER_COST times its serialized
# size (streamgd.sources.parquet), kept up to FOOTER_BUDGET, plus one being read; and the
# file's stamp and source objects.
FILE_BYTES = 32 << 10
# What is not a matrix, per phase: Python objects, chunk lists, allocator slack (measured).
SLACK_BYTES = 20 * MIB
SLACK_SHARE = 0.25
FLOOR_TOLERANCE = 4 * MIB  # measured floors above the design's by less are within the slack

# what the plan may choose from, largest first
BUFFERS = (65_536, 32_768, 16_384, 8_192, 4_096)
PREFERRED_LANES = 4
MIN_PIECE_ROWS = 4_096


@dataclass(frozen=True)
class Layout:
    """What the plan needs of the files: ``columns`` decoded per row (the matrix's width),
    ``row_bytes`` of a row in Arrow (the read columns' widths), the rows of the largest
    row group, the number of units, the batch size, what the open dataset holds, and whether
    the statistics pass decodes in float32 (see :func:`streamgd.stats_pass.pass_dtype`)."""

    columns: int
    row_bytes: int
    largest_unit: int
    units: int
    batch_size: int = 1024
    shuffle: bool = True
    files_bytes: int = 0  # the open dataset: parsed footers, stamps (see layout_of)
    largest_whole: int = 0  # rows of the largest unit of at most WHOLE_ROWS rows
    stats_float32: bool = False  # the statistics pass's pieces: float32 (else float64)


@dataclass(frozen=True)
class Sizes:
    """The settings a plan decides: shuffle-buffer rows, lanes, piece rows (0: the default,
    see :func:`_pieces`), prefetch depth."""

    buffer: int
    lanes: int
    piece_rows: int
    prefetch: int = 1


@dataclass(frozen=True)
class Footprint:
    """Bytes by term: ``floor`` and the two phases' terms; ``total`` the estimated peak."""

    floor: int
    statistics: dict[str, int]
    training: dict[str, int]

    @property
    def working(self) -> int:
        return max(sum(self.statistics.values()), sum(self.training.values()))

    @property
    def total(self) -> int:
        return self.floor + self.working

    def describe(self) -> str:
        """``imports 82MB + training 60MB (pieces 34MB, buffer 10MB, ...)``."""
        stats, train = sum(self.statistics.values()), sum(self.training.values())
        name, terms = (
            ("training", self.training) if train >= stats else ("statistics pass", self.statistics)
        )
        parts = ", ".join(f"{k} {_mb(v)}" for k, v in terms.items() if v)
        return f"imports {_mb(self.floor)} + {name} {_mb(max(stats, train))} ({parts})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimate_mb": round(self.total / MB, 1),
            "floor_mb": round(self.floor / MB, 1),
            "statistics_mb": {k: round(v / MB, 1) for k, v in self.statistics.items()},
            "training_mb": {k: round(v / MB, 1) for k, v in self.training.items()},
        }


def _mb(n: int) -> str:
    return f"{n / MB:.0f}MB"


def _pieces(layout: Layout, piece_rows: int) -> tuple[int, bool]:
    """Rows of the largest piece, and whether the largest row group is read in slices, for
    ``--piece-rows piece_rows`` (0: the default, whole up to WHOLE_ROWS rows, else slices of
    SLICE_ROWS; see streamgd.sources.dataset)."""
    if piece_rows:
        return min(piece_rows, layout.largest_unit), layout.largest_unit > piece_rows
    if layout.largest_unit <= WHOLE_ROWS:
        return layout.largest_unit, False
    return max(SLICE_ROWS, layout.largest_whole), True


def footprint(layout: Layout, sizes: Sizes, *, floor: int = IMPORTS_BYTES) -> Footprint:
    """The estimated peak RSS of a fit of ``layout`` with ``sizes`` (see the module's
    docstring for the terms)."""
    rows, sliced = _pieces(layout, sizes.piece_rows)  # the largest piece
    table = rows * layout.row_bytes
    shuffled = layout.shuffle and sizes.buffer > 0
    lanes = min(sizes.lanes, layout.units) if shuffled else 1
    reader = 0
    if sliced:  # buffered column readers (pages, dictionary, read buffer), no map
        chunk = 2 * layout.largest_unit * layout.row_bytes // layout.columns
        reader = layout.columns * (min(chunk, READER_BYTES) + READER_BUFFER)
        arrow = table + reader
    elif rows >= COLUMNWISE_ROWS:  # one column at a time: its bytes, its values, scratch
        arrow = COLUMN_READS * rows * 8
    else:  # the table, and the pages of the map it was decoded from
        arrow = 2 * table
    stats = {
        "files": layout.files_bytes,
        "pieces": 3 * rows * layout.columns * (4 if layout.stats_float32 else 8),
        "blocks": 4 * min(rows, BLOCK_ROWS) * layout.columns * 8,
        # (a row group read in slices: 136-173 MiB of Arrow on 1x2M, table + readers 107 MiB)
        "arrow": arrow + (table if sliced else 0),
    }
    piece = rows * layout.columns * 4
    if shuffled:
        in_flight = lanes + sizes.prefetch + 2
        exchange = exchange_rows(layout.batch_size, sizes.buffer)
        buffer = (STORE_FACTOR * (sizes.buffer + exchange) + exchange) * layout.columns * 4
    else:
        in_flight, buffer = sizes.prefetch + 2, 0
    train = {
        "files": layout.files_bytes,
        "pieces": in_flight * piece,
        "buffer": buffer,
        "batch": 4 * layout.batch_size * layout.columns * 8,
        # each open lane keeps its row group's reader (sliced) or its handles (whole)
        "arrow": arrow + (lanes - 1) * reader + lanes * LANE_OVERHEAD,
    }
    if layout.largest_unit <= TINY_ROWS and not sliced:  # tiny units: read in groups
        for terms in (stats, train):  # a group decoded and the next one's tables; the kept
            terms["groups"] = 2 * GROUP_BYTES  # tables until the first epoch takes them
            terms["kept"] = KEEP_BUDGET
    for terms in (stats, train):
        terms["other"] = SLACK_BYTES + int(SLACK_SHARE * sum(terms.values()))
    return Footprint(floor, stats, train)


@dataclass(frozen=True)
class Plan:
    """A run sized for ``limit`` bytes: its ``sizes`` and their ``footprint``."""

    limit: int
    sizes: Sizes
    footprint: Footprint


def _candidates(layout: Layout, given: Sizes, prefetch: int) -> list[Sizes]:
    """Every choice the plan considers, in order of preference: up to PREFERRED_LANES lanes
    first (on ordered data, how many row groups a batch samples matters most), then the
    largest buffer (how well rows mix), then more lanes (at most the default for the
    pieces), then the largest pieces (fewer, cheaper reads), then the deepest prefetch (up
    to the run's). A size ``given`` (not 0) is the user's, the only one of its kind."""
    found = sorted(
        _choices(layout, given, prefetch),
        key=lambda s: (min(s.lanes, PREFERRED_LANES), s.buffer, s.lanes, s.piece_rows, s.prefetch),
        reverse=True,
    )
    return found


def _choices(layout: Layout, given: Sizes, prefetch: int):
    buffers = (given.buffer,) if given.buffer >= 0 else BUFFERS
    pieces = []
    p = min(layout.largest_unit, WHOLE_ROWS)
    while True:
        pieces.append(p)
        if p <= MIN_PIECE_ROWS:
            break
        p = max(MIN_PIECE_ROWS, p // 2)
    if given.piece_rows:
        pieces = [given.piece_rows]
    for b in buffers:
        lane_options = [1]
        if given.lanes:
            lane_options = [given.lanes]
        elif layout.shuffle and b > 0:
            most = max(lane_count(min(p, layout.largest_unit) * layout.columns * 4) for p in pieces)
            lane_options = list(range(min(most, max(layout.units, 2)), 0, -1))
        for w in lane_options:
            for p in pieces:
                rows = min(p, layout.largest_unit)
                if not given.lanes and w > lane_count(rows * layout.columns * 4):
                    continue  # more lanes than the default for these pieces: no gain
                for d in range(prefetch, 0, -1):
                    yield Sizes(buffer=b, lanes=w, piece_rows=p, prefetch=d)


def plan(
    limit: int,
    layout: Layout,
    *,
    buffer: int | None = None,
    lanes: int | None = None,
    piece_rows: int | None = None,
    prefetch: int = 1,
    floor: int = IMPORTS_BYTES,
    what: str = "",
) -> Plan:
    """The preferred :class:`Sizes` (see :func:`_candidates`) whose estimated peak with
    :data:`IMPORTS_BYTES` as the floor is at most ``limit``; ``buffer``, ``lanes``,
    ``piece_rows``: the user's, kept. A UsageError naming the minimum when none fits, or
    when ``floor`` (this process's RSS, if larger than the design's) leaves too little
    room."""
    best = None
    smallest: tuple[int, Sizes, Footprint] | None = None
    given = Sizes(-1 if buffer is None else buffer, lanes or 0, piece_rows or 0)
    for sizes in _candidates(layout, given, prefetch):
        fp = footprint(layout, sizes)
        if smallest is None or fp.total < smallest[0]:
            smallest = (fp.total, sizes, fp)
        if fp.total <= limit:
            best = (sizes, fp)
            break
    text = what or f"{limit / MB:.0f}MB"
    if best is None:
        assert smallest is not None
        kept = ", ".join(
            f"--{name} {value}"
            for name, value in (
                ("shuffle-buffer", buffer),
                ("lanes", lanes),
                ("piece-rows", piece_rows),
            )
            if value is not None
        )
        kept = f" with {kept}" if kept else ""
        raise UsageError(
            f"--memory-limit {text} is below the minimum for these files{kept}: "
            f"{_mb(smallest[0])} ({smallest[2].describe()})"
        )
    sizes, fp = best
    # more than the plan expects the process to hold now (beyond what the slack absorbs)
    if _floor(floor, layout) > IMPORTS_BYTES:
        fp = replace(fp, floor=_floor(floor, layout))
        if fp.total > limit:
            opened = IMPORTS_BYTES + layout.files_bytes
            raise UsageError(
                f"--memory-limit {text} is too small here: this process holds "
                f"{_mb(floor)} after its imports and opening the files, "
                f"{_mb(floor - opened)} more than planned for ({fp.describe()})"
            )
    return Plan(limit, sizes, fp)


def check_recorded(limit: int, layout: Layout, sizes: Sizes, *, floor: int, what: str) -> Plan:
    """A resumed run's recorded sizes, checked against ``limit`` (a UsageError if they no
    longer fit: the model depends on them, so they are not changed)."""
    fp = footprint(layout, sizes, floor=_floor(floor, layout))
    if fp.total > limit:
        raise UsageError(
            f"--memory-limit {what}: the checkpoint's recorded sizes (--shuffle-buffer "
            f"{sizes.buffer}, --lanes {sizes.lanes}, "
            f"--piece-rows {sizes.piece_rows or 'default'}) need "
            f"{_mb(fp.total)} ({fp.describe()}); give a larger limit, or start afresh"
        )
    return Plan(limit, sizes, fp)


def _floor(measured: int, layout: Layout) -> int:
    """The floor to report: the design's, or more when this process holds more than the
    design's floor and open files (``measured``, its RSS after opening the files)."""
    return IMPORTS_BYTES + max(0, measured - IMPORTS_BYTES - layout.files_bytes - FLOOR_TOLERANCE)


def layout_of(dataset: Any, config: Any) -> Layout:
    """The :class:`Layout` of ``dataset``'s Parquet files for ``config`` (its columns, batch
    size, shuffling); a UsageError for files of unknown layout (CSV, in-memory streams)."""
    if any(u.rows is None or u.row_group < 0 for u in dataset.units) or dataset.in_memory:
        raise UsageError(
            "--memory-limit plans from Parquet footers (rows per row group, column types): "
            f"{dataset.files[0].path} is not a Parquet file; leave out --memory-limit"
        )
    names = list(config.features or [n for n in dataset.schema.names if n != config.target])
    names += [config.target] + ([config.weight] if config.weight else [])
    row_bytes = sum(_value_bytes(dataset.schema, name) for name in dict.fromkeys(names))
    clip, derived = config.outliers == "clip", bool(config.interactions)
    stats_dtype = pass_dtype(dataset.schema, names, derived=derived, clip=clip)
    footers = [FOOTER_COST * max(f.stamp.footer_size if f.stamp else 0, 1) for f in dataset.files]
    files = min(FOOTER_BUDGET, sum(footers)) + max(footers) + FILE_BYTES * len(footers)
    return Layout(
        files_bytes=files,
        columns=len(dict.fromkeys(names)),
        row_bytes=row_bytes,
        largest_unit=max([u.rows for u in dataset.units] or [1]) or 1,
        largest_whole=max([u.rows for u in dataset.units if u.rows <= WHOLE_ROWS] or [0]),
        units=len(dataset.units),
        batch_size=config.batch_size,
        shuffle=config.shuffle,
        stats_float32=stats_dtype == np.float32,
    )


def _value_bytes(schema: Any, name: str) -> int:
    """Bytes of one value of column ``name`` in Arrow: a fixed width's, else 8 (an offset and
    a short value: strings are counted as categorical codes; text columns need more)."""
    if name not in schema.names:
        return 8  # a partition column, or one the fit derives
    try:
        bits = schema.field(name).type.bit_width
    except ValueError:  # not of a fixed width
        return 8
    return max(1, bits // 8)


def sizes_of(config: Any, layout: Layout, prefetch: int) -> Sizes:
    """The sizes ``config`` runs with (its defaults where it leaves them to the layout)."""
    piece = config.piece_rows or 0
    rows = _pieces(layout, piece)[0]
    lanes = config.lanes or lane_count(rows * layout.columns * 4)
    return Sizes(config.shuffle_buffer, lanes, piece, prefetch)


def plan_run(dataset: Any, config: Any, options: Any, recorded: dict | None = None):
    """``(config, options, plan)`` for ``options.memory_limit``: the config with the plan's
    buffer, lanes and piece rows (or the ``recorded`` ones of a checkpoint's settings), the
    options with its prefetch depth. Without a limit: unchanged, and the plan of the
    settings as they are (its estimate is reported beside the measured peak)."""
    layout = None
    try:
        layout = layout_of(dataset, config)
    except UsageError:
        if options.memory_limit:
            raise
    if not options.memory_limit:
        if layout is None:
            return config, options, None
        sizes = sizes_of(config, layout, options.prefetch)
        floor = _floor(current_rss() or 0, layout)
        return config, options, Plan(0, sizes, footprint(layout, sizes, floor=floor))
    limit = parse_size(options.memory_limit)
    assert layout is not None and limit is not None  # RunOptions checked the size
    floor = current_rss()
    if recorded is not None:
        sizes = Sizes(
            recorded["shuffle_buffer"],
            recorded.get("lanes") or 0,
            recorded.get("piece_rows") or 0,
            options.prefetch,
        )
        if not sizes.lanes:  # a checkpoint of a run without a limit: its defaults
            sizes = replace(sizes, lanes=sizes_of(config, layout, 1).lanes)
        found = check_recorded(limit, layout, sizes, floor=floor or 0, what=options.memory_limit)
        found = _shrink_prefetch(found, layout)
    else:
        from .data_settings import DataSettings

        default = DataSettings.__dataclass_fields__["shuffle_buffer"].default
        buffer = None if config.shuffle_buffer == default else config.shuffle_buffer
        found = plan(
            limit,
            layout,
            buffer=buffer,
            lanes=config.lanes,
            piece_rows=config.piece_rows,
            prefetch=options.prefetch,
            floor=floor or 0,
            what=options.memory_limit,
        )
    s = found.sizes
    piece_rows = s.piece_rows or None
    config = replace(config, shuffle_buffer=s.buffer, lanes=s.lanes, piece_rows=piece_rows)
    options = replace(options, prefetch=s.prefetch)
    return config, options, found


def _shrink_prefetch(found: Plan, layout: Layout) -> Plan:
    """A recorded plan with the deepest prefetch (run-only) that still fits its limit."""
    for d in range(found.sizes.prefetch, 0, -1):
        sizes = replace(found.sizes, prefetch=d)
        fp = footprint(layout, sizes, floor=found.footprint.floor)
        if fp.total <= found.limit or d == 1:
            return Plan(found.limit, sizes, fp)
    return found


def memory_report(found: Plan | None, options: Any) -> dict[str, Any] | None:
    """What a run reports of its memory: the limit, the plan's estimate and sizes, and the
    measured peak RSS (``VmHWM``), in MB; None when there is no plan (CSV, in memory)."""
    peak = measured_peak()
    if found is None:
        return None if peak is None else {"peak_mb": round(peak / MB, 1)}
    s = found.sizes
    return {
        "limit": options.memory_limit,
        "limit_mb": round(found.limit / MB, 1) if found.limit else None,
        **found.footprint.to_dict(),
        "peak_mb": None if peak is None else round(peak / MB, 1),
        "shuffle_buffer": s.buffer,
        "lanes": s.lanes,
        "piece_rows": s.piece_rows or None,
        "prefetch": s.prefetch,
    }


def current_rss() -> int | None:
    """This process's resident set now (``VmRSS``), in bytes; None where /proc has none."""
    return _status("VmRSS")


def measured_peak() -> int | None:
    """This process's peak resident set so far (``VmHWM``), in bytes."""
    return _status("VmHWM")


def _status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
