"""The statistics pass: one read of a sample of the data (or all of it) through the same
prefetcher and :class:`~streamgd.decode.Decoder` as training, merged into
:class:`~streamgd.features.Stats`.

It lives here, not in :mod:`streamgd.features`, because it reads through
:mod:`streamgd.batches`, which decodes with :mod:`streamgd.decode`, which prepares rows with
:mod:`streamgd.features.rows`: kept in ``features`` it would close an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from time import monotonic

import numpy as np

from .batches import Prefetcher
from .decode import Decoder
from .errors import DataError
from .features import Stats
from .sources import Dataset

__all__ = [
    "stats_order",
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


def _summarise(weighted: bool, n_classes: int):
    """``rows -> [Stats]``: one of all rows (``n_classes`` 0), or one per class code."""

    def summarise(m: np.ndarray) -> list[Stats]:
        x, w = (m[:, :-1], m[:, -1]) if weighted else (m, None)
        if not n_classes:
            return [Stats.of(x, overwrite=True, weights=w)]  # released right after
        codes = x[:, -1]
        parts = []
        for c in range(n_classes):
            rows = codes == c
            parts.append(Stats.of(x[rows], weights=None if w is None else w[rows]))
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
        # float64, unlike training: the statistics see raw values, before any centring
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
                # about what one of 5,000 does); a larger piece alone, as it always was
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
    """``acc`` with the summaries of ``m``'s rows merged in (``m`` None or empty: as it is)."""
    if m is None or not len(m):
        return acc
    parts = summarise(m)
    return parts if acc is None else [a.merge(p) for a, p in zip(acc, parts, strict=True)]


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
