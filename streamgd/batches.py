"""Batches: decode units on a prefetch thread, pass rows through the shuffle buffer, and cut
exact-size batches, with a cursor that says precisely where the stream stands.

The thread only decodes (Arrow releases the GIL, so decoding overlaps the gradient step); the
cursor, the shuffle buffer and the batching run on the consuming thread, so the stream's state
after any batch is known exactly and cheaply: ``(epoch, position, offset)`` plus the buffered
rows and the buffer's RNG state. Resuming decodes only the current unit again, never the
epoch's start.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .cursor import Cursor
from .decode import Decoder
from .errors import CheckpointError
from .groups import Groups
from .lanes import Chunk, LaneState, Piece, interleave
from .shuffle import (
    BUFFER_STREAM,
    ShuffleBuffer,
    epoch_order,
    epoch_rng,
    lane_count,
    slice_rows_for,
)
from .sources import Dataset, HandleCache

__all__ = ["Chunk", "Cursor", "Interleaving", "Prefetcher", "BatchStream"]

ShuffleState = tuple[np.ndarray, np.ndarray, np.ndarray, dict]  # slots, free, tail, rng


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
    number of matrices at the prefetch depth plus the few in use, and memory flat.
    """

    def __init__(self, width: int, dtype: np.dtype | type = np.float64) -> None:
        self.width, self.dtype = width, dtype
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def get(self, rows: int) -> np.ndarray:
        with self._lock:
            for i, buf in enumerate(self._free):
                if buf.shape[0] >= rows:
                    return self._free.pop(i)
        return np.empty((rows, self.width), dtype=self.dtype, order="F")

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
        self.pool = BufferPool(decoder.matrix_width, decoder.dtype)  # before the --cv fold
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
        handles = HandleCache()
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
        handles = HandleCache()
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


def piece_bytes(dataset: Dataset, width: int, dtype: np.dtype) -> int | None:
    """Decoded bytes of the largest piece a Parquet unit is read in (a row group, or a slice
    of at most ``dataset.slice_rows`` rows); None without Parquet units (CSV blocks: about
    1 MB)."""
    rows = [min(u.rows, dataset.slice_rows) for u in dataset.units if u.rows is not None]
    return max(rows) * width * np.dtype(dtype).itemsize if rows and max(rows) else None


# The shuffle buffer exchanges rows in blocks of about this many (whole batches), at most an
# eighth of the buffer: see ShuffleBuffer. Batches of 8192 rows or more are exchanges of one batch.
EXCHANGE_ROWS = 8192


def exchange_rows(batch_size: int, capacity: int) -> int:
    """The shuffle buffer's exchange: the smallest multiple of the batch size >= EXCHANGE_ROWS, but
    no more batches than fit eight times in ``capacity`` (and at least one batch).

    >>> exchange_rows(1024, 65536), exchange_rows(1000, 65536), exchange_rows(8192, 65536)
    (8192, 8000, 8192)
    >>> exchange_rows(32, 200), exchange_rows(1024, 16384)
    (32, 2048)
    """
    batches = min(-(-EXCHANGE_ROWS // batch_size), capacity // (8 * batch_size))
    return max(1, batches) * batch_size


class BatchStream:
    """One epoch of exact-size batches (only the last may be shorter), resumable from a cursor.

    Iterating yields matrices as ``decoder`` decodes them (its columns, centred, in its dtype).
    A batch is valid until the next one is requested: without a shuffle buffer it is a
    view of a recycled decode buffer (copy it to keep it). After each batch, :attr:`cursor`
    and :meth:`shuffle_state` describe the stream exactly; pass them back to continue it.
    """

    def __init__(
        self,
        dataset: Dataset,
        decoder: Decoder,
        *,
        epoch: int,
        seed: int,
        batch_size: int,
        shuffle: bool,
        buffer_size: int,
        prefetch: int = 1,
        cursor: Cursor | None = None,
        shuffle_state: ShuffleState | None = None,
        run: int = 1,
        on_first_fill: Callable[[np.ndarray], None] | None = None,
        lanes: int | None = None,
    ) -> None:
        self.dataset, self.decoder = dataset, decoder
        self.columns, self.dtype = list(decoder.columns), decoder.dtype
        self.width = decoder.width  # prepared rows: text slots, and under --cv each row's fold
        # called once with the last column (the target) of the rows that first fill an empty
        # buffer, in arrival order, as a one-column matrix
        self.on_first_fill = on_first_fill
        self.batch_size, self.prefetch = batch_size, prefetch
        self.order = epoch_order(len(dataset.units), seed=seed, epoch=epoch, shuffle=shuffle)
        self.cursor = cursor if cursor is not None else Cursor(epoch=epoch)
        self.counts: np.ndarray | None = None  # summed chunk counts of units finished here
        self.buffer: ShuffleBuffer | None = None
        if shuffle and buffer_size > 0:
            rng = epoch_rng(seed, epoch, BUFFER_STREAM)
            self.buffer = ShuffleBuffer(
                buffer_size,
                self.width,
                rng,
                block=exchange_rows(batch_size, buffer_size),
                dtype=self.dtype,
                run=math.gcd(batch_size, run),
            )
            if shuffle_state is not None:
                try:
                    self.buffer.restore(*shuffle_state)
                except ValueError as exc:  # a checkpoint of a version with other exchanges
                    raise CheckpointError(
                        f"cannot restore the checkpoint's shuffle buffer ({exc}): it was "
                        "written by a streamgd with another buffer layout; finish the epoch "
                        "with that version, or start afresh"
                    ) from None
        # with a buffer, units are read several at once (see streamgd.lanes): ``lanes`` of
        # them (None: as many as LANE_BYTES of decoded pieces hold)
        self._lanes = lanes
        self.interleaving = self._interleaving(seed, epoch) if self.buffer is not None else None
        self._unit_counts: np.ndarray | None = None
        self._chunks: Iterator[Chunk] | None = None
        self._prefetcher: Prefetcher | None = None
        self._retired: list[Chunk] = []  # finished chunks whose rows a batch may still view
        self._current: Chunk | None = None
        self._used = 0  # rows of the current chunk consumed
        self._exhausted = False

    def _interleaving(self, seed: int, epoch: int) -> Interleaving:
        """The lanes from the cursor: a fresh epoch's first units, or a resumed one's state."""
        assert self.buffer is not None
        c = self.cursor
        state = None
        if c.lanes is not None:
            state = LaneState(c.position, tuple((p, t) for p, t in c.lanes), c.draws)
        elif (c.position, c.offset) != (0, 0):
            raise CheckpointError(
                "the checkpoint's cursor is of a streamgd that read one unit at a time; "
                "finish the epoch with that version, or start afresh"
            )
        return Interleaving(
            state,
            skip=c.offset if state is not None else 0,
            n_lanes=self._lanes or lane_count(piece_bytes(self.dataset, self.width, self.dtype)),
            slice_rows=slice_rows_for(self.buffer.capacity),
            seed=seed,
            epoch=epoch,
        )

    # -- reading rows in order, keeping the cursor ------------------------------------------
    def _next_chunk(self) -> bool:
        assert self._chunks is not None
        if self._current is not None:
            self._retired.append(self._current)
        for chunk in self._chunks:
            self._current, self._used = chunk, 0
            if chunk.before is not None:  # interleaved: where the schedule stood before it
                b, c = chunk.before, self.cursor
                c.position, c.offset, c.lanes, c.draws = b.width, chunk.skip, b.lanes, b.draws
            return True
        self._current, self._exhausted = None, True
        if self.interleaving is not None:
            c = self.cursor
            c.position, c.offset, c.lanes, c.draws = len(self.order), 0, [], 0
        return False

    def _take(self, m: int) -> np.ndarray:
        """The next ``m`` rows in unit order (fewer only when the epoch's data is exhausted)."""
        parts = self._take_parts(m)
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return np.empty((0, self.width), dtype=self.dtype)
        return np.asfortranarray(np.concatenate(parts))  # one layout, however it was cut

    def _take_parts(self, m: int) -> list[np.ndarray]:
        """The next ``m`` rows in unit order as views of the chunks they are in."""
        parts: list[np.ndarray] = []
        need = m
        while need > 0 and not self._exhausted:
            chunk = self._current
            if chunk is None or self._used >= len(chunk.rows):
                if chunk is not None:
                    self._finish_chunk(chunk)
                if not self._next_chunk():
                    break
                continue
            piece = chunk.rows[self._used : self._used + need]
            self._used += len(piece)
            self.cursor.offset += len(piece)
            need -= len(piece)
            parts.append(piece)
        return parts

    def _finish_chunk(self, chunk: Chunk) -> None:
        if chunk.counts is not None:  # interleaved slices carry none: the unit's end has them
            unit = self._unit_counts
            self._unit_counts = chunk.counts.copy() if unit is None else unit + chunk.counts
        if chunk.last:
            done = self.counts
            self.counts = self._unit_counts if done is None else done + self._unit_counts
            self._unit_counts = None
            if self.interleaving is None:
                self.cursor.position = chunk.position + 1
                self.cursor.offset = 0

    def _settle(self) -> None:
        """Move past finished chunks so the cursor never points at the end of a unit."""
        while (
            self._current is not None
            and self._used >= len(self._current.rows)
            and not self._exhausted
        ):
            self._finish_chunk(self._current)
            self._next_chunk()

    # -- batches ----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[np.ndarray]:
        self._prefetcher = prefetcher = Prefetcher(
            self.dataset,
            self.order,
            self.decoder,
            start=self.cursor.position,
            offset=self.cursor.offset,
            depth=self.prefetch if self.interleaving is None else self._slice_depth(),
            interleaving=self.interleaving,
        )
        self._chunks = iter(prefetcher)
        try:
            yield from self._batches()
        finally:
            prefetcher.close()

    def _slice_depth(self) -> int:
        """Groups of slices queued ahead when interleaving: ``prefetch`` pieces' worth (at
        least two groups), so that the next piece is decoded while the consumer takes slices
        of the others."""
        assert self.interleaving is not None
        size = piece_bytes(self.dataset, self.width, self.dtype)
        itemsize = np.dtype(self.dtype).itemsize
        rows = self.dataset.slice_rows if size is None else size // (self.width * itemsize)
        slices = max(1, self.prefetch) * max(1, -(-rows // self.interleaving.slice_rows))
        return max(2, -(-slices // GROUP_CHUNKS))

    def _batches(self) -> Iterator[np.ndarray]:
        bs, buf = self.batch_size, self.buffer
        while True:
            # the consumer is done with the previous batch: recycle the chunks it viewed
            self._release_retired()
            if buf is None:
                batch = self._take(bs)
            else:
                arrivals = [] if (self.on_first_fill is not None and buf.n == 0) else None
                while buf.space() > 0 and not self._exhausted:
                    # the chunks' views as they are: the buffer copies them in anyway, so
                    # joining the slices of several chunks first would copy every row twice
                    incoming = self._take_parts(buf.space())
                    if arrivals is not None:  # the target only: a copy of all would be 17 MB
                        last = len(self.columns)  # not the --cv fold after it
                        arrivals += [np.array(part[:, last - 1 : last]) for part in incoming]
                    buf.fill(incoming)
                    # the rows were copied: a finished chunk's memory is free for the decoder
                    # now (not after the exchange, which would keep one more matrix in use)
                    self._release_retired()
                if arrivals:
                    self.on_first_fill(np.concatenate(arrivals))
                    self.on_first_fill = None
                batch = buf.draw(bs)
            self._settle()
            if len(batch) == 0:
                return
            yield batch

    def _release_retired(self) -> None:
        for chunk in self._retired:
            self._prefetcher.release(chunk)  # type: ignore[union-attr]
        self._retired.clear()

    def shuffle_state(self) -> ShuffleState | None:
        """``(slots, free, tail, rng_state)`` of the shuffle buffer (copies), or None."""
        return None if self.buffer is None else self.buffer.state()
