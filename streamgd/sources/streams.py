"""Streams of batches: an iterator or generator (read once), or a callable that returns a fresh
one on every call (read again for every pass, like a file).

A stream is read like a CSV file: one unit whose rows are known only once it has been read.
Its items may be pyarrow Tables or RecordBatches, or pandas or polars DataFrames; the column
types are fixed by the first item, and every later item is cast to them (an item that cannot
be is a :class:`~streamgd.errors.DataError` naming the item and the column).

**One-shot iterators.** The passes before training (statistics, categories, classes) read the
first rows of the data. A one-shot stream keeps the items those passes read, up to
``head_rows`` rows (the statistics pass's sample) and a few items more (what a pass that stops
there may have read ahead), and hands them to the next read before going
on with the iterator; the rest is read once, by the training pass. A second read past those
first rows is an error that says to pass a callable instead.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa

from ..errors import DataError, UsageError

__all__ = ["StreamReader", "as_arrow"]

READ_AHEAD_ITEMS = 4  # items a one-shot stream keeps past its first rows (prefetch read-ahead)


def as_arrow(item: Any, where: str) -> pa.Table | None:
    """An in-memory table as a pyarrow Table (zero-copy where Arrow allows), or None when
    ``item`` is not one."""
    if isinstance(item, pa.Table):
        return item
    if isinstance(item, pa.RecordBatch):
        return pa.Table.from_batches([item])
    module = type(item).__module__.split(".")[0]
    if module == "pandas" and type(item).__name__ == "DataFrame":
        try:
            return pa.Table.from_pandas(item, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise DataError(f"cannot convert the DataFrame to Arrow ({exc})", path=where) from None
    if module == "polars" and type(item).__name__ == "DataFrame":
        return item.to_arrow()
    return None


class StreamReader:
    """A stream of batches (see the module docstring): ``make()`` returns an iterable of
    batches; with ``one_shot`` it is called once and its items are read once."""

    def __init__(
        self, make: Callable[[], Iterable[Any]], name: str, *, one_shot: bool, head_rows: int
    ) -> None:
        self.name, self.one_shot, self.head_rows = name, one_shot, head_rows
        self._make = make
        self._pending: Iterator[Any] | None = self._open()
        first = next(self._pending, None)
        if first is None:
            raise DataError("the stream gave no batch", path=name)
        table = self._table(first, 0, None)
        self.schema = table.schema
        self.kind = "iterator" if one_shot else "callable"
        self._digest = _table_digest(table)
        self._pending = itertools.chain([first], self._pending)
        self._head: list[pa.Table] = []  # one-shot: the first items, replayable
        self._head_held = 0
        self._head_extra = 0  # items kept past head_rows
        self._live = self._pending if one_shot else None
        self._read_past_head = False

    def _open(self) -> Iterator[Any]:
        try:
            items = self._make()
        except Exception as exc:  # the caller's callable failed: say so, with its message
            raise DataError(
                f"the callable that makes the stream failed: {exc!r}", path=self.name
            ) from exc
        try:
            return iter(items)
        except TypeError:
            raise UsageError(
                f"{self.name}: the callable returned {type(items).__name__}, not an iterable "
                "of batches"
            ) from None

    def digest(self) -> str:
        """SHA-256 of the schema and the first item's content: another stream behind the same
        callable is refused on resume (a change after its first item is not seen)."""
        return self._digest

    def _table(self, item: Any, index: int, schema: pa.Schema | None) -> pa.Table:
        table = as_arrow(item, self.name)
        if table is None:
            raise UsageError(
                f"{self.name}: item {index} of the stream is {type(item).__module__}."
                f"{type(item).__name__}; expected a pyarrow Table or RecordBatch, or a pandas "
                "or polars DataFrame"
            )
        if schema is None:
            return table
        if table.schema.names != schema.names:
            missing = [n for n in schema.names if n not in table.schema.names]
            if missing:
                raise DataError(
                    f"item {index} of the stream has no column {missing[0]!r} (the first item's "
                    f"columns: {', '.join(schema.names)})",
                    path=self.name,
                )
            table = table.select(schema.names)
        if table.schema != schema:
            try:
                table = table.cast(schema)
            except (pa.ArrowException, ValueError) as exc:
                raise DataError(
                    f"item {index} of the stream does not convert to the first item's types "
                    f"({str(exc).splitlines()[0]})",
                    path=self.name,
                ) from None
        return table

    def pieces(self, columns: Sequence[str]) -> Iterator[tuple[pa.Table, int]]:
        """``(table, first_row)`` for every item, with the named columns."""
        columns = [c for c in columns if c in self.schema.names]  # as memory._present
        if self.one_shot:
            yield from self._one_shot(columns)
            return
        items, self._pending = (self._pending or self._open()), None
        row = 0
        for index, item in enumerate(items):
            table = self._table(item, index, self.schema)
            yield table.select(columns), row
            row += table.num_rows

    def _one_shot(self, columns: list[str]) -> Iterator[tuple[pa.Table, int]]:
        row, index = 0, 0
        if self._read_past_head:
            raise DataError(
                "a one-shot iterator can be read only once, and this run needs it again; pass "
                "a callable that returns a fresh iterator (for example lambda: batches())",
                path=self.name,
            )
        for table in list(self._head):
            yield table.select(columns), row
            row, index = row + table.num_rows, index + 1
        assert self._live is not None
        for item in self._live:
            table = self._table(item, index, self.schema)
            # a few items past the first rows too: a pass that stops there may have read ahead
            if self._head_held < self.head_rows or self._head_extra < READ_AHEAD_ITEMS:
                self._head_extra += self._head_held >= self.head_rows
                self._head.append(table)
                self._head_held += table.num_rows
            elif not self._read_past_head:
                self._read_past_head = True
                self._head = []  # the rest is read once: nothing more is kept
            yield table.select(columns), row
            row, index = row + table.num_rows, index + 1


def _table_digest(table: pa.Table) -> str:
    h = hashlib.sha256(str(table.schema).encode())
    for batch in table.combine_chunks().to_batches():
        h.update(batch.serialize().to_pybytes())
    return h.hexdigest()
