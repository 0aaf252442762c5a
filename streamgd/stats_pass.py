"""The statistics pass: one read of a sample of the data (or all of it) through the same
prefetcher and :class:`~streamgd.decode.Decoder` as training, merged into
:class:`~streamgd.features.Stats`.

It lives here, not in :mod:`streamgd.features`, because it reads through
:mod:`streamgd.batches`, which decodes with :mod:`streamgd.decode`, which prepares rows with
:mod:`streamgd.features.rows`: kept in ``features`` it would close an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from time import monotonic

import numpy as np
import pyarrow as pa

from .batches import Prefetcher
from .decode import Decoder
from .errors import DataError
from .features import Stats
from .sources import Dataset

__all__ = [
    "stats_order",
    "pass_dtype",
    "float32_exact",
    "BLOCK_ROWS",
    "compute_stats",
    "compute_class_stats",
    "Progress",
    "PROGRESS_INTERVAL",
]

# progress(rows, total, done): see streamgd.training.callbacks.Callback.on_stats_progress
Progress = Callable[[int, int | None, bool], None]
PROGRESS_INTERVAL = 0.25  # seconds between progress calls: a few a second, whatever the data


def stats_order(dataset: Dataset, *, max_rows: int, seed: int) -> np.ndarray:
    """The order in which the statistics pass (and the categorical scan) read units: the file
    order, or a seeded random one when a sample of ``max_rows`` rows is all they read."""
    n_units = len(dataset.units)
    total = dataset.num_rows
    if max_rows and total is not None and total > max_rows:
        return np.random.default_rng([seed, 0x53544154]).permutation(n_units)
    return np.arange(n_units)


def float32_exact(kind: pa.DataType) -> bool:
    """Whether every value of a column of Arrow type ``kind``, as the decoder converts it
    (:func:`~streamgd.decode.to_matrix`), is a float32 value: float16 and float32, integers of
    at most 16 bits, booleans and all-null columns. Not float64, integers of 32 bits or more,
    decimals, dates, times or durations (converted in float64, beyond float32's 24 bits).

    >>> [float32_exact(t) for t in (pa.float32(), pa.uint16(), pa.int32(), pa.float64())]
    [True, True, False, False]
    """
    if pa.types.is_floating(kind) or pa.types.is_integer(kind):
        return kind.bit_width <= (32 if pa.types.is_floating(kind) else 16)
    return pa.types.is_boolean(kind) or pa.types.is_null(kind)


def pass_dtype(
    schema: pa.Schema,
    columns: Iterable[str],
    *,
    converted: Collection[str] = (),
    derived: bool = False,
    clip: bool = False,
) -> type:
    """The dtype the statistics pass decodes ``columns`` of ``schema`` (the files' one
    schema, of types every file's widen to) into: float32 when every value it will hold is
    a float32 value, so that the statistics (summed in float64, see :data:`BLOCK_ROWS`) see
    the very values float64 would hold, at half the memory; float64 otherwise. Float32 needs
    every column :func:`float32_exact`, or among ``converted`` (class codes: small integers),
    and nothing that computes new values in the matrix: no ``derived`` columns
    (--interactions' products) and no ``clip`` (--outliers clip's float64 bounds)."""
    if derived or clip:
        return np.float64
    for name in columns:
        if name in converted:
            continue
        if name not in schema.names or not float32_exact(schema.field(name).type):
            return np.float64
    return np.float32


def compute_stats(
    dataset: Dataset,
    decoder: Decoder,
    *,
    max_rows: int,
    seed: int,
    weighted: bool = False,
    progress: Progress | None = None,
) -> Stats:
    """The statistics pass: NaN-aware mean and std of every column of ``decoder`` (the
    features, then the target: see :meth:`Decoder.for_statistics`); with ``weighted``, the
    decoder's last column holds the row weights, and the statistics of the others are
    weighted by them.

    Reads whole row groups, or CSV blocks, until ``max_rows`` rows were seen; with Parquet and
    more rows than that, the row groups are picked in a seeded random order so that the sample
    spans the data (a CSV file's rows are counted only by reading it: CSV gives the first
    rows). ``max_rows=0`` reads everything.

    ``progress(rows, total, done)`` hears of the rows in the sample so far: once as the pass
    begins, then at most every :data:`PROGRESS_INTERVAL` seconds, and once with ``done``.
    """
    return _read(dataset, decoder, max_rows, seed, _summarise(weighted, 0), progress)[0]


def compute_class_stats(
    dataset: Dataset,
    decoder: Decoder,
    *,
    max_rows: int,
    seed: int,
    weighted: bool,
    n_classes: int,
    progress: Progress | None = None,
) -> list[Stats]:
    """:func:`compute_stats` of the rows of each class apart (the target's codes ``0`` to
    ``n_classes - 1``), so that class weights known only at the end of the pass can weight
    them (see :meth:`Stats.scaled`)."""
    return _read(dataset, decoder, max_rows, seed, _summarise(weighted, n_classes), progress)


# Rows summarised at a time: each block of a piece is copied into one float64 scratch matrix
# (float32 values exactly) and summarised there, the summaries merged. The pass's float64
# memory is then this block and Stats.of's temporaries of it (a few MB), whatever the size of
# the pieces, which stay in the decoder's dtype (float32 for float32 data: half of float64).
BLOCK_ROWS = 16_384


def _summarise(weighted: bool, n_classes: int):
    """``rows -> [Stats]`` of at most :data:`BLOCK_ROWS` rows (any float dtype, left as they
    are): one of all rows (``n_classes`` 0), or one per class code."""
    scratch: list[np.ndarray] = []  # the float64 block, allocated once for the pass

    def summarise(m: np.ndarray) -> list[Stats]:
        if not scratch:
            scratch.append(np.empty((BLOCK_ROWS, m.shape[1]), dtype=np.float64, order="F"))
        b = scratch[0][: len(m)]
        b[...] = m
        x, w = (b[:, :-1], b[:, -1]) if weighted else (b, None)
        if not n_classes:
            return [Stats.of(x, overwrite=True, weights=w)]
        codes = x[:, -1]
        parts = []
        for c in range(n_classes):
            rows = codes == c
            parts.append(Stats.of(x[rows], overwrite=True, weights=None if w is None else w[rows]))
        return parts

    return summarise


def _read(
    dataset: Dataset,
    decoder: Decoder,
    max_rows: int,
    seed: int,
    summarise,
    progress: Progress | None = None,
) -> list[Stats]:
    order = stats_order(dataset, max_rows=max_rows, seed=seed)
    n_units = len(order)
    acc: list[Stats] | None = None
    seen = 0
    start = 0
    report = _Reporter(progress, _sample_size(dataset, max_rows))
    while start < n_units and not (max_rows and acc is not None and seen >= max_rows):
        # Hand the prefetcher only the units that can still be needed: one that decodes past
        # the sample wastes a row group's decode (and a wait to stop it) on every fit.
        stop = _units_for(dataset, order, start, max_rows - seen)
        # raw values, before any centring, in float32 only when that is exact (pass_dtype)
        # park: the CSV blocks it parsed of the epoch's first file are not parsed again
        prefetch = Prefetcher(
            dataset,
            order[:stop],
            decoder,
            start=start,
            depth=1,
            park=start == 0,
        )
        small = _Small()
        try:
            for chunk in prefetch:
                # rows of small pieces are summarised together (a summary of 50 rows costs
                # about what one of 5,000 does); a larger piece alone, block by block
                rows = small.add(chunk.rows) if len(chunk.rows) < SMALL_ROWS else chunk.rows
                for m in (small.take(len(rows) > 0), rows):
                    acc = _merged(acc, summarise, m)
                prefetch.release(chunk)
                seen = small.rows + (0 if acc is None else sum(a.rows for a in acc))
                report(seen)
                # whole row groups (a seeded sample); a CSV file may stop after any block
                whole = chunk.last or dataset.units[order[chunk.position]].rows is None
                if max_rows and seen >= max_rows and whole:
                    break
        finally:
            prefetch.close()
        acc = _merged(acc, summarise, small.take(True))
        seen = 0 if acc is None else sum(a.rows for a in acc)
        start = stop
    if acc is None or seen == 0:
        raise DataError(
            f"no rows with a target value in {len(dataset.files)} file(s)",
            path=dataset.files[0].path,
        )
    report(seen, done=True)
    return acc


def _merged(acc: list[Stats] | None, summarise, m: np.ndarray | None) -> list[Stats] | None:
    """``acc`` with the summaries of ``m``'s rows merged in, block by block (see
    :data:`BLOCK_ROWS`; ``m`` None or empty: as it is)."""
    if m is None:
        return acc
    for start in range(0, len(m), BLOCK_ROWS):
        parts = summarise(m[start : start + BLOCK_ROWS])
        acc = parts if acc is None else [a.merge(p) for a, p in zip(acc, parts, strict=True)]
    return acc


# Pieces of fewer rows than this are summarised together, SMALL_BATCH rows at a time
SMALL_ROWS = 512
SMALL_BATCH = 4096


class _Small:
    """Copies of small pieces' rows (a piece's memory goes back to the prefetcher at once),
    given out together once they hold ``SMALL_BATCH`` rows, or before a larger piece (so the
    pieces are summarised in the order they were read)."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.rows = 0

    def add(self, rows: np.ndarray) -> np.ndarray:
        """Keep ``rows``; what is then to be summarised besides (nothing: an empty matrix)."""
        self.parts.append(np.array(rows, order="F"))
        self.rows += len(rows)
        return rows[:0]

    def take(self, now: bool) -> np.ndarray | None:
        """The rows kept, once they are ``SMALL_BATCH`` or ``now``; else None."""
        if not self.parts or not (now or self.rows >= SMALL_BATCH):
            return None
        m = self.parts[0] if len(self.parts) == 1 else np.concatenate(self.parts)
        self.parts, self.rows = [], 0
        return np.asfortranarray(m)


def _sample_size(dataset: Dataset, max_rows: int) -> int | None:
    """The rows the pass means to read: ``max_rows``, or every row when there are fewer or
    ``max_rows`` is 0 (None when that is unknown, as for CSV files)."""
    total = dataset.num_rows
    if total is None:
        return max_rows or None
    return min(total, max_rows) if max_rows else total


class _Reporter:
    """Calls ``progress`` as the pass begins, then at most every :data:`PROGRESS_INTERVAL`
    seconds (one clock read per decoded piece: nothing next to decoding it), and at the end."""

    def __init__(self, progress: Progress | None, total: int | None) -> None:
        self.progress, self.total = progress, total
        self.last = monotonic()
        if progress is not None:
            progress(0, total, False)

    def __call__(self, rows: int, *, done: bool = False) -> None:
        if self.progress is None:
            return
        now = monotonic()
        if done or now - self.last >= PROGRESS_INTERVAL:
            self.last = now
            self.progress(rows, self.total, done)


def _units_for(dataset: Dataset, order: np.ndarray, start: int, rows: int) -> int:
    """The end of the shortest run of ``order`` from ``start`` holding at least ``rows`` rows
    (all of it when ``rows`` is not positive or a unit's row count is unknown, as for CSV)."""
    if rows <= 0:
        return len(order)
    for stop in range(start, len(order)):
        n = dataset.units[order[stop]].rows
        if n is None:
            return len(order)
        rows -= n
        if rows <= 0:
            return stop + 1
    return len(order)
