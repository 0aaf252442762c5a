"""Memory stays bounded while streaming a dataset many times larger than what is in flight.

numpy reports its data allocations to tracemalloc, so the traced peak covers every decoded
matrix, the shuffle buffer and every batch (Arrow's own buffers are not traced; they are
freed row group by row group).
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamgd.batches import BatchStream
from streamgd.decode import Decoder
from streamgd.shuffle import lane_count
from streamgd.sources import open_dataset

from .helpers import trivial_prepare

ROWS, WIDTH, ROW_GROUP = 800_000, 8, 2_500
BUFFER, BATCH, PREFETCH = 2_000, 256, 2


def test_streaming_memory_is_bounded_by_what_is_in_flight(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.random((ROWS, WIDTH))
    names = [f"c{j}" for j in range(WIDTH)]
    path = str(tmp_path / "big.parquet")
    pq.write_table(
        pa.table({n: data[:, j] for j, n in enumerate(names)}),
        path,
        row_group_size=ROW_GROUP,
        compression="none",
    )
    column_sums = data.sum(axis=0)
    del data
    ds = open_dataset([path])
    assert len(ds.units) == ROWS // ROW_GROUP

    stream = BatchStream(
        ds,
        Decoder(tuple(names), trivial_prepare),
        epoch=0,
        seed=0,
        batch_size=BATCH,
        shuffle=True,
        buffer_size=BUFFER,
        prefetch=PREFETCH,
    )
    started = time.monotonic()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        rows, sums = 0, np.zeros(WIDTH)
        for batch in stream:
            rows += len(batch)
            sums += batch.sum(axis=0)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    elapsed = time.monotonic() - started

    # it really streamed everything, once
    assert rows == ROWS
    np.testing.assert_allclose(sums, column_sums, rtol=1e-9)

    row_bytes = WIDTH * 8
    dataset_bytes = ROWS * row_bytes
    # in flight: the shuffle buffer (plus one batch of slots) and, per row group, one per
    # lane (row groups read at once: see streamgd.lanes), the queue (PREFETCH), the one being
    # decoded, and the one the consumer reads; a factor 2 for transient copies (a batch,
    # Arrow-to-numpy columns)
    lanes = lane_count(ROW_GROUP * row_bytes)
    in_flight = (BUFFER + BATCH + (lanes + PREFETCH + 2) * ROW_GROUP) * row_bytes
    bound = 2 * in_flight
    assert peak < bound, f"peak {peak / 1e6:.1f} MB > bound {bound / 1e6:.1f} MB"
    assert peak < dataset_bytes / 4
    assert elapsed < 40  # a generous ceiling: about 4 s on 2 cores
