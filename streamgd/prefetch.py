"""Prefetching: decode the units of an epoch on a thread, one after another or several at
once (interleaved lanes, see :mod:`streamgd.lanes`), into recycled matrices.

The thread only reads and decodes (Arrow releases the GIL, so decoding overlaps the gradient
step); what it decodes is handed to the consumer through a bounded queue, with the memory
behind each piece, which the consumer gives back (:meth:`Prefetcher.release`) once it is done
with every view of it. :class:`streamgd.batches.BatchStream` cuts the batches.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .decode import Decoder
from .groups import Groups
from .lanes import Chunk, LaneState, Piece, interleave
from .sources import Dataset, HandleCache

__all__ = ["BufferPool", "GROUP_CHUNKS", "Interleaving", "PARK_BYTES", "Prefetcher"]


@dataclass(frozen=True)
class Interleaving:
    """How a :class:`Prefetcher` reads several units at once (see :mod:`streamgd.lanes`):
    from ``state``, the first chunk less ``skip`` rows, slices of ``slice_rows``."""

    state: LaneState | None
    skip: int
    n_lanes: int
    slice_rows: int
    seed: int
    epoch: int


class BufferPool:
    """Recycles decode matrices between the prefetch thread and the consumer.

    A fresh 30 MB matrix costs more in page faults than decoding into it; recycling keeps the
    number of matrices at the prefetch depth plus the few in use, and memory flat. Matrices
    are made of at least ``rows`` rows (the largest piece's), so that any free one fits the
    next piece: a file's shorter last row group would otherwise leave one too small for the
    others, and a new one be made beside it.
    """

    def __init__(self, width: int, dtype: np.dtype | type = np.float64, rows: int = 0) -> None:
        self.width, self.dtype, self.rows = width, dtype, rows
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def get(self, rows: int) -> np.ndarray:
        with self._lock:
            for i, buf in enumerate(self._free):
                if buf.shape[0] >= rows:
                    return self._free.pop(i)
        return np.empty((max(rows, self.rows), self.width), dtype=self.dtype, order="F")

    def put(self, buf: np.ndarray | None) -> None:
        if buf is not None:
            with self._lock:
                self._free.append(buf)


class Prefetcher:
    """Decodes the units of an epoch, in order, from ``(position, offset)``, on a thread,
    with ``decoder`` (its columns, converters, centring, dtype and row preparation).

    Holds at most ``depth`` decoded chunks in its queue, plus the one being decoded.
    """

    _DONE = object()

    def __init__(
        self,
        dataset: Dataset,
        order: Sequence[int],
        decoder: Decoder,
        *,
        start: int = 0,
        offset: int = 0,
        depth: int = 2,
        park: bool = False,
        interleaving: Interleaving | None = None,
    ) -> None:
        self._args = (dataset, list(order), decoder, start, offset)
        self._interleaving = interleaving
        # with ``park``, what the first unit's reader gave (a CSV file's blocks, raw), so
        # that close() can leave it to the dataset's next read of that unit (Dataset.park)
        self._recordings: list[_Recording] = []
        self._park = [PARK_BYTES] if park else None  # bytes the recordings may still keep
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        rows = (min(dataset.units[i].rows or 0, dataset.slice_rows) for i in order)
        # the matrices are as wide as the decoded columns (before the --cv fold)
        self.pool = BufferPool(decoder.matrix_width, decoder.dtype, max(rows, default=0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamgd-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        if self._interleaving is not None:
            return self._run_interleaved(self._interleaving)
        dataset, order, decoder, start, offset = self._args
        columns = decoder.reads
        handles = HandleCache(columnwise=True)
        empty = np.empty((0, decoder.width))
        groups = self._groups(stride=1)
        batch: list[Chunk] = []
        try:
            for position in range(start, len(order)):
                skip = offset if position == start else 0
                grouped = groups.take(position)
                if grouped is not None:  # a tiny unit, decoded with the next ones; the
                    rows, counts, buf = grouped  # group's last one carries its memory
                    batch.append(Chunk(position, rows[skip:], counts, True, buffer=buf))
                    if buf is not None:  # the group's chunks go through the queue at once
                        if not self._put(batch):
                            return
                        batch = []
                    continue
                unit = dataset.units[order[position]]
                path = dataset.files[unit.file].path
                # A row group is one chunk, marked last at once; CSV blocks or a huge row group's
                # slices are followed by an empty end-of-unit chunk (no lookahead holds one more)
                single = dataset.single_piece(unit)
                pieces = dataset.iter_unit(unit, columns, handles)
                if self._park is not None and unit.row_group < 0 and not skip:
                    pieces = _Recording(unit, columns, pieces, self._park)
                    self._recordings.append(pieces)
                for table, first_row in pieces:
                    buf = self.pool.get(table.num_rows)
                    # decoder.decode in its two halves, so that the table is not held (17 MB
                    # a row group) while rows are prepared or the queue is full
                    matrix = decoder.matrix(table, path=path, first_row=first_row, out=buf)
                    del table
                    rows, counts = decoder.prepare(matrix, path, first_row)
                    if skip:
                        dropped = min(skip, len(rows))
                        rows, skip = rows[dropped:], skip - dropped
                    if not self._put(Chunk(position, rows, counts, last=single, buffer=buf)):
                        return
                if not single:
                    end = Chunk(position, empty, decoder.prepare(empty, path, 0)[1], last=True)
                    if not self._put(end):
                        return
            self._put(self._DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._recordings = []
            self._put(exc)
        finally:
            groups.close()

    def _groups(self, stride: int) -> Groups:
        """Tiny units decoded several at once (see :mod:`streamgd.groups`)."""
        keep = self._park is not None  # the statistics pass: its tables, for the epoch
        return Groups.of(*self._args[:3], stride=stride, get_buffer=self.pool.get, keep=keep)

    def _run_interleaved(self, how: Interleaving) -> None:
        dataset, order, decoder, _, _ = self._args
        handles = HandleCache(columnwise=True)
        empty = np.empty((0, decoder.width), dtype=decoder.dtype)
        # a lane reads the units at position, position + width, ...: its next tiny ones
        groups = self._groups(stride=how.n_lanes if how.state is None else how.state.width)

        def zero_counts(position: int) -> np.ndarray:
            path = dataset.files[dataset.units[order[position]].file].path
            return decoder.prepare(empty, path, 0)[1]

        chunks = interleave(
            how.state,
            n_lanes=how.n_lanes,
            skip=how.skip,
            slice_rows=how.slice_rows,
            seed=how.seed,
            epoch=how.epoch,
            unit_rows=[dataset.units[i].rows for i in order],
            pieces=lambda position: self._pieces(position, handles, groups),
            release=self.pool.put,
            zero_counts=zero_counts,
            empty=empty,
        )
        # handed over GROUP_CHUNKS at a time: a queue handover per 1024-row slice cost more
        # than making the slice
        group: list[Chunk] = []
        try:
            for chunk in chunks:
                group.append(chunk)
                if len(group) >= GROUP_CHUNKS:
                    if not self._put(group):
                        return
                    group = []
            if group and not self._put(group):
                return
            self._put(self._DONE)
        except BaseException as exc:  # handed to the consumer (after what came before it)
            if not group or self._put(group):
                self._put(exc)
        finally:
            chunks.close()
            groups.close()

    def _pieces(self, position: int, handles: HandleCache, groups: Groups) -> Iterator[Piece]:
        """The decoded pieces of the unit at ``position`` of the order, each in pooled memory."""
        grouped = groups.take(position)
        if grouped is not None:
            yield grouped
            return
        dataset, order, decoder, _, _ = self._args
        unit = dataset.units[order[position]]
        path = dataset.files[unit.file].path
        for table, first_row in dataset.iter_unit(unit, decoder.reads, handles):
            buf = self.pool.get(table.num_rows)
            matrix = decoder.matrix(table, path=path, first_row=first_row, out=buf)
            del table
            rows, counts = decoder.prepare(matrix, path, first_row)
            yield rows, counts, buf

    def __iter__(self) -> Iterator[Chunk]:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, list):  # an interleaved stream's group of chunks
                yield from item
            else:
                yield item

    def release(self, chunk: Chunk) -> None:
        """The consumer is done with ``chunk`` (and every view of it): reuse its memory."""
        self.pool.put(chunk.buffer)
        chunk.buffer = None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            for rec in self._recordings:
                if rec.pieces is not None:
                    self._args[0].park(rec.unit, rec.columns, rec.pieces, rec.source)
        self._recordings = []
        # Arrow's allocator keeps freed row groups' memory for reuse: after the statistics
        # pass (float64) that was 40-60 MB of RSS carried through training (0.3-0.8 ms)
        pa.default_memory_pool().release_unused()


class _Recording:
    """Passes on a unit's pieces, keeping them while ``budget[0]`` (bytes, shared by the
    recordings of one prefetcher) lasts; beyond it, or on an error, nothing (``pieces`` is
    None). ``source`` continues after them."""

    def __init__(self, unit, columns: Sequence[str], source: Iterator, budget: list) -> None:
        self.unit, self.columns, self.source = unit, list(columns), source
        self.pieces: list | None = []
        self._budget = budget

    def __iter__(self) -> Iterator:
        try:
            for piece in self.source:
                if self.pieces is not None:
                    self._budget[0] -= piece[0].nbytes
                    if self._budget[0] < 0:
                        self.pieces = None
                    else:
                        self.pieces.append(piece)
                yield piece
        except Exception:  # not GeneratorExit: a stopped prefetcher leaves it unfinished
            self.pieces = None
            raise


# What the statistics pass may leave parsed for the epoch (Prefetcher park): its 250,000-row
# sample of 32 float64 columns is 63 MiB. Bounded, so that wide data is parsed again instead.
PARK_BYTES = 80 << 20


# An interleaved stream's chunks go through the prefetch queue this many at a time.
GROUP_CHUNKS = 16
