"""Small data writers and stream helpers shared by the unit tests (plain functions)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from streamgd.batches import BatchStream
from streamgd.decode import Decoder

COLUMNS = ["row_id", "y"]


def trivial_prepare(m: np.ndarray, path: str, first_row: int) -> tuple[np.ndarray, np.ndarray]:
    """Keeps every row; no counts worth reporting."""
    return m, np.zeros(1, dtype=np.int64)


def id_table(lo: int, hi: int) -> pa.Table:
    """Rows ``lo..hi-1``: ``row_id`` and ``y = 0.5 * row_id + 3`` (so a row's columns can be
    checked to travel together)."""
    ids = np.arange(lo, hi, dtype=np.int64)
    return pa.table({"row_id": ids, "y": 0.5 * ids + 3.0})


def write_parquet(path: str, lo: int, hi: int, row_group_size: int) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(id_table(lo, hi), path, row_group_size=max(1, row_group_size))
    return path


def write_csv(path: str, lo: int, hi: int) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pacsv.write_csv(id_table(lo, hi), path)
    return path


# name -> list of (format, rows, row_group_size); rows are numbered consecutively across files
LAYOUTS: dict[str, list[tuple[str, int, int]]] = {
    # one file, row groups of 64: divides batch sizes 1 and 64 but not 7 or 1000
    "one_file_rg64": [("parquet", 997, 64)],
    # one file whose single row group holds every row
    "one_row_group": [("parquet", 997, 997)],
    # several files with row groups that divide nothing, one of them a single row group
    "several_files": [
        ("parquet", 300, 70),
        ("parquet", 1, 1),
        ("parquet", 400, 128),
        ("parquet", 296, 296),
    ],
    # an empty file between two others
    "with_empty_file": [("parquet", 500, 100), ("parquet", 0, 1), ("parquet", 497, 33)],
    # CSV files, each read in several blocks (the tests shrink CSV_BLOCK_SIZE)
    "csv_files": [("csv", 600, 0), ("csv", 397, 0)],
    # Parquet and CSV together
    "mixed": [("parquet", 500, 77), ("csv", 497, 0)],
}

SMALL_CSV_BLOCK = 1024  # bytes: about a hundred rows per block, so each CSV file has several


def write_layout(directory: str, name: str) -> tuple[list[str], int]:
    """Write layout ``name``; returns the paths in row order and the total number of rows."""
    paths, lo = [], 0
    for i, (fmt, rows, rg) in enumerate(LAYOUTS[name]):
        if fmt == "parquet":
            path = write_parquet(os.path.join(directory, f"part-{i}.parquet"), lo, lo + rows, rg)
        else:
            path = write_csv(os.path.join(directory, f"part-{i}.csv"), lo, lo + rows)
        paths.append(path)
        lo += rows
    return paths, lo


def collect(stream: BatchStream) -> list[np.ndarray]:
    """Every batch of a stream, copied as it arrives (a consumer that keeps batches must copy:
    see test_batches.test_yielded_batches_stay_valid)."""
    return [b.copy() for b in stream]


def make_stream(
    dataset,
    *,
    columns: Sequence[str] = COLUMNS,
    prepare=trivial_prepare,
    center=None,
    dtype=np.float64,
    converters=None,
    **kw,
):
    args = {"epoch": 0, "seed": 0, "batch_size": 64, "shuffle": True, "buffer_size": 50}
    args.update(kw)
    decoder = Decoder(tuple(columns), prepare, converters or {}, center, dtype)
    return BatchStream(dataset, decoder, **args)
