"""The holdout split: which rows of the training files are held out for validation.

Two ways, both fixed for a run (the same rows every epoch, after a resume, on every Dask
worker): ``--holdout F`` hashes (path, row number) and holds out a row when the hash falls
below ``F`` (:func:`holdout_mask`: no I/O, no state); ``--holdout-rows K`` draws ``K`` rows
uniformly by reservoir sampling over all the files (:func:`reservoir_rows`: one pass over the
row counts). :func:`selector` turns either into the ``select`` function row preparation
applies (see :class:`streamgd.decode.Decoder`).
"""

from __future__ import annotations

import zlib

import numpy as np

from .errors import UsageError
from .features.rows import Select
from .sources import Dataset, HandleCache

__all__ = [
    "holdout_mask",
    "row_uniform",
    "reservoir_rows",
    "RESERVOIR_BLOCK",
    "selector",
    "drawn_rows",
]


def selector(config, *, keep: bool, dataset: Dataset | None = None) -> Select | None:
    """``select(path, row_numbers) -> mask`` for row preparation: the training rows
    (``keep=False`` drops the held-out ones) or only the held-out rows (``keep=True``); None
    without --holdout or --holdout-rows. ``config`` is a FitConfig; --holdout-rows needs the
    ``dataset`` to draw its rows from (see :func:`drawn_rows`)."""
    if config.holdout_rows:
        held = drawn_rows(dataset, config.holdout_rows, config.seed)
        empty = np.empty(0, dtype=np.int64)

        def select_rows(path: str, rows: np.ndarray) -> np.ndarray:
            mask = np.isin(rows, held.get(path, empty))
            return mask if keep else ~mask

        return select_rows
    if not config.holdout:
        return None
    fraction = config.holdout

    def select(path: str, rows: np.ndarray) -> np.ndarray:
        mask = holdout_mask(path, rows, fraction)
        return mask if keep else ~mask

    return select


def drawn_rows(dataset: Dataset | None, k: int, seed: int) -> dict[str, np.ndarray]:
    """The --holdout-rows draw for ``dataset``: :func:`reservoir_rows`, kept in the dataset's
    ``memo``. The draw is a pure function of the files, ``k`` and ``seed``, so it belongs to
    the dataset and lives exactly as long as it: one draw per run (the statistics pass, every
    epoch and every validation share the run's dataset), one per Dask worker process (workers
    keep their opened datasets), and no module-global cache that outlives a run or is shared
    between two runs in one process."""
    if dataset is None:
        raise UsageError("--holdout-rows needs the dataset to draw its rows from")
    key = ("holdout_rows", k, seed)
    if key not in dataset.memo:
        dataset.memo[key] = reservoir_rows(dataset, k, seed)
    return dataset.memo[key]


def holdout_mask(path: str, rows: np.ndarray, fraction: float) -> np.ndarray:
    """Whether each row (0-based row number within the file ``path``) is held out: a fixed
    hash of (path, row) compared with ``fraction``, so the same rows every epoch, after a
    resume and whatever the seed or the reading order.

    >>> holdout_mask("a.parquet", np.arange(100_000), 0.1).mean().round(2)
    np.float64(0.1)
    """
    return row_uniform(path, rows) < fraction


def row_uniform(path: str, rows: np.ndarray, salt: int = 0) -> np.ndarray:
    """A fixed uniform number in [0, 1) for each row number of the file ``path``: splitmix64
    of (path, row), and with a ``salt`` (the --cv folds mix in the seed) of that hash and the
    salt again. Pure: no I/O, no state."""
    key = np.uint64(zlib.crc32(str(path).encode())) << np.uint64(32)
    z = _splitmix(np.asarray(rows, dtype=np.uint64) + key)
    if salt:
        z = _splitmix(z ^ _splitmix(np.array([salt], dtype=np.uint64)))
    return (z >> np.uint64(11)).astype(np.float64) / 2.0**53


def _splitmix(z):
    z = z * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


# Rows drawn per block by the reservoir: bounds its memory however large a file is.
RESERVOIR_BLOCK = 1 << 20


def reservoir_rows(dataset: Dataset, k: int, seed: int) -> dict[str, np.ndarray]:
    """``k`` rows drawn uniformly from all the files' rows by reservoir sampling (Algorithm R
    over the files in order, seeded): ``{path: sorted row numbers}``. Parquet row counts come
    from metadata; a CSV file is counted by streaming it once. Memory: the reservoir and one
    block of random numbers.

    """
    rng = np.random.default_rng([seed, 0x484F4C44])  # "HOLD"
    files = np.empty(k, dtype=np.int64)
    rows = np.empty(k, dtype=np.int64)
    seen = 0
    for index, source in enumerate(dataset.files):
        n = source.num_rows if source.num_rows is not None else _count_rows(dataset, index)
        fill = min(max(k - seen, 0), n)  # the reservoir's first k rows go straight in
        files[seen : seen + fill] = index
        rows[seen : seen + fill] = np.arange(fill)
        for start in range(fill, n, RESERVOIR_BLOCK):
            m = min(RESERVOIR_BLOCK, n - start)
            position = seen + start + np.arange(m)  # 0-based index of each row in the stream
            slot = np.floor(rng.random(m) * (position + 1)).astype(np.int64)
            for a in np.flatnonzero(slot < k):  # in stream order: a later row replaces
                files[slot[a]], rows[slot[a]] = index, start + a
        seen += n
    if seen <= k:
        raise UsageError(f"--holdout-rows {k} would hold out every row: the data has {seen} rows")
    return {dataset.files[i].path: np.sort(rows[files == i]) for i in np.unique(files).tolist()}


def _count_rows(dataset: Dataset, index: int) -> int:
    handles = HandleCache()
    first = dataset.schema.names[:1]
    return sum(
        table.num_rows
        for unit in dataset.units
        if unit.file == index
        for table, _ in dataset.iter_unit(unit, first, handles)
    )
