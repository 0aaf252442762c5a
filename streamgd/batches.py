"""Batches: take the units a prefetch thread decodes (:mod:`streamgd.prefetch`), pass rows
through the shuffle buffer, and cut exact-size batches, with a cursor that says precisely where
the stream stands.

The thread only decodes (Arrow releases the GIL, so decoding overlaps the gradient step); the
cursor, the shuffle buffer and the batching run on the consuming thread, so the stream's state
after any batch is known exactly and cheaply: ``(epoch, position, offset)`` plus the buffered
rows and the buffer's RNG state. Resuming decodes only the current unit again, never the
epoch's start.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np

from .cursor import Cursor
from .decode import Decoder
from .errors import CheckpointError
from .lanes import Chunk, LaneState
from .prefetch import GROUP_CHUNKS, Interleaving, Prefetcher
from .shuffle import (
    BUFFER_STREAM,
    ShuffleBuffer,
    epoch_order,
    epoch_rng,
    lane_count,
    slice_rows_for,
)
from .sources import Dataset

__all__ = ["Chunk", "Cursor", "Interleaving", "Prefetcher", "BatchStream"]

ShuffleState = tuple[np.ndarray, np.ndarray, np.ndarray, dict]  # slots, free, tail, rng


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
