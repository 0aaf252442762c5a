"""Tiny units read and decoded together: a group of small Parquet row groups, one matrix.

A dataset of thousands of small files (50-row files written by a streaming job, say) pays a
fixed cost per unit: opening the file, Arrow's read of its row group, then the per-column
work of :meth:`~streamgd.decode.Decoder.matrix` (conversion, outlier guard, centring), about
as costly for 50 rows as for 50,000. A reader that meets a tiny unit (at most
:data:`TINY_ROWS` rows) therefore reads the tiny units it will read next along with it (the
next positions of the order for a sequential stream, or of its lane: ``position + stride``,
``position + 2 stride``, ...) up to :data:`GROUP_ROWS` rows and :data:`GROUP_BYTES` decoded
bytes, reads their row groups on a second thread while the previous group is decoded, and
decodes them as one matrix (:meth:`~streamgd.decode.Decoder.decode_units`), handing each
unit's rows on as if it had been decoded alone.

The plan does not change: the epoch's order, the lanes, the cursor and a resume still see
units one by one, and a group is only how the reader gets there. A unit's rows and counts are
bit for bit those it has decoded alone, so a resume that starts a group elsewhere gives the
same rows, and data without tiny units is read exactly as before.

The statistics pass keeps what it read (each group's tables combined into one table, up
to ``KEEP_BUDGET``, 16 MB of Arrow buffers: see :class:`~streamgd.sources.parquet.KeptTables`)
for the first epoch, which then reads none of those files again (a ``stat`` each shows they
are still the stamped files).

Memory, bounded in rows and bytes: a reader holds, per lane (one for a sequential stream),
one group decoded and not yet handed on (at most ``GROUP_BYTES / lanes`` of decoded rows,
4 MiB in all, or one unit of at most ``TINY_ROWS`` rows when a single unit is larger) and the
Arrow tables of its next group being read (as many rows); the kept tables add at most
``KEEP_BUDGET`` until the first epoch has taken them (or a later pass ends).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from .decode import Decoder
from .sources import Dataset, HandleCache

__all__ = ["TINY_ROWS", "GROUP_ROWS", "GROUP_BYTES", "Groups", "group_rows"]

TINY_ROWS = 4096  # a Parquet row group of at most this many rows is read in a group
GROUP_ROWS = 16_384  # rows of a group at most
GROUP_BYTES = 4 << 20  # decoded bytes of a group at most

# (rows, counts, pooled buffer or None): a unit's prepared rows; the group's buffer goes with
# the last unit of the group, which its reader hands on after the others
Decoded = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]


def group_rows(width: int, itemsize: int, share: int = 1) -> int:
    """Rows a group holds at most (its first unit aside) for decoded rows of ``width``
    columns of ``itemsize`` bytes, with ``share`` groups decoded ahead at once (the lanes).

    >>> group_rows(33, 4), group_rows(33, 8), group_rows(33, 4, share=32), group_rows(2000, 8)
    (16384, 15887, 992, 262)
    """
    per_row = max(1, width * itemsize)
    return max(1, min(GROUP_ROWS, GROUP_BYTES // max(1, share) // per_row))


class Groups:
    """The decoded tiny units of one reader (the units at ``order``'s positions), each
    decoded once, in groups: :meth:`take` gives a unit's rows, or None for a unit read
    alone. ``stride``: a unit at ``position`` is followed by the one at ``position +
    stride`` (1 for a sequential stream, the number of lanes for an interleaved one)."""

    def __init__(
        self,
        dataset: Dataset,
        order: Sequence[int],
        decoder: Decoder,
        *,
        stride: int,
        get_buffer: Callable[[int], np.ndarray],
        keep: bool = False,
    ) -> None:
        self.dataset, self.order, self.decoder = dataset, order, decoder
        self.stride, self._get_buffer = stride, get_buffer
        self.keep = keep  # the statistics pass: offer the tables read to dataset.kept
        self._tiny = self._tiny_units(dataset)
        # the lanes share the bytes: one group decoded ahead per lane
        itemsize = np.dtype(decoder.dtype).itemsize
        self._limit = group_rows(decoder.matrix_width, itemsize, share=stride)
        self._decoded: dict[int, Decoded] = {}
        # the next group's read, started when a group is decoded: (positions, future tables)
        self._ahead: dict[int, tuple[list[int], Future]] = {}
        self._reader: ThreadPoolExecutor | None = None
        self._handles = HandleCache()  # the reading thread's own

    @classmethod
    def of(
        cls,
        dataset: Dataset,
        order: Sequence[int],
        decoder: Decoder,
        *,
        stride: int,
        get_buffer: Callable[[int], np.ndarray],
        keep: bool = False,
    ) -> Groups:
        """The groups of a reader; none (every unit read alone) when ``decoder`` cannot
        decode several units as one (see :attr:`~streamgd.decode.Decoder.groupable`)."""
        groups = cls(dataset, order, decoder, stride=stride, get_buffer=get_buffer, keep=keep)
        if not decoder.groupable:
            groups._tiny = [False] * len(dataset.units)
        return groups

    @staticmethod
    def _tiny_units(dataset: Dataset) -> list[bool]:
        """Per unit of ``dataset``: a Parquet row group of 1 to ``TINY_ROWS`` rows, read in one
        piece."""
        files = dataset.files
        return [
            files[u.file].format == "parquet"
            and 0 < (u.rows or 0) <= TINY_ROWS
            and dataset.single_piece(u)
            for u in dataset.units
        ]

    def tiny(self, position: int) -> bool:
        """Whether the unit at ``position`` is read in a group."""
        return 0 <= position < len(self.order) and self._tiny[self.order[position]]

    def take(self, position: int) -> Decoded | None:
        """The rows of the tiny unit at ``position`` (decoding its group when it is the first
        asked for), or None when it is not tiny."""
        found = self._decoded.pop(position, None)
        if found is not None:
            return found
        if not self.tiny(position):
            return None
        positions, tables = self._ahead.pop(position, None) or self._submit(position)
        tables = tables.result()  # raises what reading them raised, in reading order
        following = positions[-1] + self.stride
        if self.tiny(following):  # read the next group while this one is decoded
            self._ahead[following] = self._submit(following)
        decoded = self._decode(tables)
        self._decoded.update(zip(positions[1:], decoded[1:], strict=True))
        return decoded[0]

    def close(self) -> None:
        """Stop reading ahead; a reader that does not keep tables ends what the statistics
        pass kept (they are for the pass after it only)."""
        if self._reader is not None:
            self._reader.shutdown(wait=True, cancel_futures=True)
            self._reader = None
        self._ahead.clear()
        self._decoded.clear()
        if not self.keep:
            self.dataset.kept.clear()

    def _group(self, position: int) -> list[int]:
        """``position`` and the tiny units after it (by ``stride``) while the group has room."""
        units = self.dataset.units
        positions, rows = [position], units[self.order[position]].rows or 0
        nxt = position + self.stride
        while self.tiny(nxt):
            rows += units[self.order[nxt]].rows or 0
            if rows > self._limit:
                break
            positions.append(nxt)
            nxt += self.stride
        return positions

    def _read(self, positions: list[int], handles: HandleCache) -> list[tuple[pa.Table, str, int]]:
        """The units' tables (one piece each: tiny row groups), with their file and first row:
        kept by the statistics pass, or read (and kept, when this reader keeps them)."""
        dataset, columns, kept = self.dataset, self.decoder.reads, self.dataset.kept
        out = []
        for p in positions:
            index = self.order[p]
            unit = dataset.units[index]
            src = dataset.files[unit.file]
            found = None if self.keep else kept.take(index, columns, src.path, src.stamp)
            if found is not None:
                out.append((found[0], src.path, found[1]))
                continue
            for table, first_row in dataset.iter_unit(unit, columns, handles):
                out.append((table, src.path, first_row))
        if not self.keep:
            return out
        # the group's tables as one (its columns in one chunk each), for the next pass
        kept_units = [
            (self.order[p], t.num_rows, r) for p, (t, _, r) in zip(positions, out, strict=True)
        ]
        try:
            table = pa.concat_tables([t for t, _, _ in out]).combine_chunks()
        except pa.ArrowInvalid:  # tables of other schemas: read again in the next pass
            return out
        kept.offer(kept_units, table, columns)
        at = 0
        for i, (t, path, first_row) in enumerate(out):
            out[i] = (table.slice(at, t.num_rows), path, first_row)
            at += t.num_rows
        return out

    def _decode(self, tables: list[tuple[pa.Table, str, int]]) -> list[Decoded]:
        rows = sum(t.num_rows for t, _, _ in tables)
        buffer = self._get_buffer(rows)
        results = self.decoder.decode_units(tables, out=buffer)
        last = len(results) - 1
        return [(r, c, buffer if i == last else None) for i, (r, c) in enumerate(results)]

    def _submit(self, position: int) -> tuple[list[int], Future]:
        """The group from ``position``, its tables read on the reading thread (one thread:
        Arrow's reads of a group go on while the caller decodes the previous one)."""
        if self._reader is None:
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="streamgd-read")
        positions = self._group(position)
        return positions, self._reader.submit(self._read, positions, self._handles)
