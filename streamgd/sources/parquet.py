"""Opening Parquet files, and the handle cache that reads one row group at a time."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DataError
from .fingerprint import Stamp, check_footer, verify
from .paths import input_file, is_uri, short_error

__all__ = [
    "FOOTER_BUDGET",
    "KEEP_BUDGET",
    "FooterCache",
    "HandleCache",
    "KeptTables",
    "RowGroupColumns",
    "open_parquet",
]

# Bytes of parsed footers a dataset keeps (see FooterCache), and the memory a parsed footer
# takes per byte of its serialized form (measured: 9-11x, for 33 columns in 1 row group and in 50)
FOOTER_BUDGET = 16 << 20
FOOTER_COST = 12


class FooterCache:
    """Parsed footers (``FileMetaData``) of local Parquet files, kept for the later reads of
    their row groups, so that a file is not parsed again on every pass (0.3 ms for a footer of
    33 columns: more than reading a 50-row row group of it).

    Bounded: at most ``budget`` bytes, a footer counted as :data:`FOOTER_COST` times its
    serialized size (a 33-column footer of one row group: ~65 KB, so 16 MB hold ~250 files).
    A footer is kept only while there is room and none is evicted: the passes over a dataset
    read its files in cycles, which would evict each footer of a least-recently-used cache
    before its next use, whereas keeping the first ones serves those on every pass. A footer is
    served only for the stamp it was parsed under (the file's digest), and only after the
    file was checked against that stamp (see :meth:`HandleCache.parquet`).
    """

    def __init__(self, budget: int = FOOTER_BUDGET) -> None:
        self.budget, self.used = budget, 0
        self._footers: dict[str, tuple[str, pq.FileMetaData]] = {}

    def __len__(self) -> int:
        return len(self._footers)

    def get(self, path: str, stamp: Stamp) -> pq.FileMetaData | None:
        kept = self._footers.get(path)
        return kept[1] if kept is not None and kept[0] == stamp.digest else None

    def offer(self, path: str, stamp: Stamp, md: pq.FileMetaData) -> None:
        cost = FOOTER_COST * max(stamp.footer_size, 1)
        if path not in self._footers and self.used + cost <= self.budget:
            self._footers[path] = (stamp.digest, md)
            self.used += cost


# Bytes of small units' tables the statistics pass may keep for the first epoch (KeptTables)
KEEP_BUDGET = 16 << 20


class KeptTables:
    """Tables of small units read by the statistics pass, kept for the first epoch's read of
    the same units (see :mod:`streamgd.groups`): a tiny row group costs Arrow about as much
    to read as a large one (~0.5 ms: a reader and 33 column chunks), so a dataset of
    thousands of small files is read once instead of twice when they fit.

    Bounded: at most ``budget`` bytes of tables (their Arrow buffers); beyond it, nothing more
    is kept. Each table is given out once, for columns it holds, and only while its file is
    still the stamped one (one ``stat``: see :func:`~streamgd.sources.fingerprint.verify`),
    so a file replaced between the passes is refused as a read of it would be. Thread-safe:
    a reading thread offers and takes them.
    """

    def __init__(self, budget: int = KEEP_BUDGET) -> None:
        self.budget, self.used = budget, 0
        # unit -> (table, offset and rows of the unit's in it, its first row in its file,
        # its share of the budget, the table's columns)
        self._units: dict[int, tuple[pa.Table, int, int, int, int, tuple[str, ...]]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._units)

    def offer(
        self, units: Sequence[tuple[int, int, int]], table: pa.Table, columns: Sequence[str]
    ) -> None:
        """Keep ``table`` (``columns`` of several units' rows, one after another: ``units``
        holds each one's index, rows and first row in its file) if there is room. One table
        for many units: a table of its own per tiny unit costs ~40 KB of Arrow objects
        (33 columns) for a few KB of values."""
        size = table.get_total_buffer_size()  # (not nbytes: 40x slower, for slices' sake)
        with self._lock:
            if self.used + size > self.budget or any(u in self._units for u, _, _ in units):
                return
            offset = 0
            for unit, rows, first_row in units:
                share = size * rows // max(1, table.num_rows)
                self._units[unit] = (table, offset, rows, first_row, share, tuple(columns))
                offset += rows
                self.used += share

    def take(
        self, unit: int, columns: Sequence[str], path: str, stamp: Stamp | None
    ) -> tuple[pa.Table, int] | None:
        """Unit ``unit``'s rows of ``columns`` and its first row, given out once; None when
        not kept (or not with those columns)."""
        with self._lock:
            kept = self._units.pop(unit, None)
            if kept is not None:
                self.used -= kept[4]
        if kept is None or not set(columns).issubset(kept[5]):
            return None
        if stamp is not None:
            verify(path, "parquet", stamp)
        table = kept[0].slice(kept[1], kept[2])
        return (table if tuple(columns) == kept[5] else table.select(list(columns))), kept[3]

    def clear(self) -> None:
        with self._lock:
            self._units.clear()
            self.used = 0


class HandleCache:
    """Opens Parquet files for reading one row group at a time, one file at a time.

    A URI's file stays open while its row groups are read. A local file is opened afresh for
    each row group (0.03 ms), with its footer parsed once while its row groups are read (or
    kept longer by the dataset's :class:`FooterCache`). With ``columnwise`` (the decoders'
    readers), large row groups are read one column at a time (:class:`RowGroupColumns`)
    through a plain file: each column chunk is read into Arrow's pool and freed with the
    column, so no more than a column is held. Otherwise through a memory map: a whole table
    is then decoded from the page cache in place instead of copies of its column chunks
    (1.3x faster), and the pages it touched leave the RSS when the row group is done (a map
    held open for a whole file keeps every page read so far resident: 365 MB instead of 155
    MB over four 250 MB files); read column by column through a map, the pages of the whole
    row group would stay resident until its last column.

    Given the file's ``stamp`` (taken when the dataset was opened), every open is checked
    against it (see :func:`~streamgd.sources.fingerprint.verify`): each memory map costs one
    ``stat`` after mapping, showing that the map is of the stamped file (device, inode, size,
    modification time), and the first map of a file also compares the footer in the map with
    the stamped digest. A file replaced or rewritten since is a :class:`DataError` (exit 1)
    rather than rows of another file read through the old footer's offsets.
    """

    def __init__(self, *, columnwise: bool = False) -> None:
        # whether the reader wants large row groups one column at a time (RowGroupColumns)
        self.columnwise = columnwise
        self._path: str | None = None
        self._file: pq.ParquetFile | None = None  # a URI's, open while its row groups are read
        self._metadata: pq.FileMetaData | None = None  # the local file's being read
        self._source = None  # a URI's open file, under self._file
        self._seen: tuple[int, ...] = ()  # identity of the file last verified

    def parquet(
        self, path: str, stamp: Stamp | None = None, footers: FooterCache | None = None
    ) -> pq.ParquetFile:
        """``path`` open for reading its row groups, checked against ``stamp``; ``footers``
        (a local file's) keeps or gives its parsed footer."""
        if is_uri(path):
            if path != self._path:
                self._source = input_file(path)
                self._file = open_parquet(path, source=self._source)
                self._path = path
                self._seen = () if stamp is None else verify(path, "parquet", stamp, full=True)
            assert self._file is not None
            return self._file
        first = path != self._path
        if first:
            md = None if footers is None or stamp is None else footers.get(path, stamp)
        else:
            md = self._metadata
        try:
            mapped = pa.OSFile(path) if self.columnwise else pa.memory_map(path)
        except (OSError, pa.ArrowException) as exc:
            why = short_error(exc)
            raise DataError(f"not a readable Parquet file ({why})", path=path) from None
        if stamp is not None:
            # the file opened is the stamped one: its identity (one stat), and on a first
            # open its footer's bytes, from which the footer below is parsed or was
            self._seen = verify(path, "parquet", stamp, known=self._seen)
            if first:
                check_footer(lambda at, n: mapped.read_at(n, at), path, stamp)
        pf = open_parquet(path, memory_map=True, metadata=md, source=mapped)
        if first and md is None and footers is not None and stamp is not None:
            footers.offer(path, stamp, pf.metadata)
        # the footer, not the map: the pages a row group touched leave the RSS with its table
        self._path, self._metadata, self._file, self._source = path, pf.metadata, None, None
        return pf

    def confirm(self, path: str, stamp: Stamp | None) -> None:
        """After a row group of ``path`` was read: a URI's object is still the stamped one
        (its footer, one ranged request; see :func:`check_footer`), so the row group's bytes
        were not fetched from an object put in its place meanwhile. A local file needs
        nothing more: its map was of the stamped file."""
        if stamp is not None and is_uri(path) and path == self._path and self._source is not None:
            source = self._source
            check_footer(lambda offset, n: source.read_at(n, offset), path, stamp)


def open_parquet(
    path: str,
    *,
    buffer_size: int = 0,
    memory_map: bool = False,
    metadata: pq.FileMetaData | None = None,
    source: str | pa.NativeFile | None = None,
) -> pq.ParquetFile:
    """``path`` as a ParquetFile (read from ``source`` when given: a URI's file already
    open); not a Parquet file is a :class:`DataError` naming it."""
    if source is None and not memory_map:
        source = input_file(path)
    try:
        if source is None:
            source = pa.memory_map(path)
        return pq.ParquetFile(source, pre_buffer=False, buffer_size=buffer_size, metadata=metadata)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"not a readable Parquet file ({short_error(exc)})", path=path) from None


class RowGroupColumns:
    """One row group of a local file, read one column at a time as :meth:`column` asks.

    The decoder (:func:`streamgd.columns.to_matrix`) converts a piece's columns one by one
    into its matrix; handed this instead of a table, it holds Arrow's memory of one column at
    a time (the column chunk's bytes and its decoded values) instead of the row group's whole
    table beside the matrix: on 131,072-row groups of 33 float32 columns Arrow's highest
    allocation went from 18 to 3 MiB and a default fit's peak RSS from 253 to 199 MiB,
    reading through a plain file instead of a memory map (whose touched pages stayed in the
    RSS until the row group was done). It runs on the reading thread alone: a decode-bound fit
    on an idle 2-core machine is 28% slower than with the whole table decoded on Arrow's
    threads (BENCHMARKS.md "Footprint, round 2"); four columns at a time on Arrow's threads
    held 34 MB more.
    ``schema`` and ``num_rows`` are the table's; :meth:`read` gives the whole table, for
    decoders that need one (derived columns, text). A column that cannot be read is a
    DataError naming the file and the row group; one of other than ``num_rows`` rows says
    the file changed.
    """

    def __init__(
        self, pf: pq.ParquetFile, row_group: int, columns: Sequence[str], path: str, rows: int
    ) -> None:
        self._pf, self._row_group, self.path, self.num_rows = pf, row_group, path, rows
        wanted = set(columns)
        self.schema = pa.schema([f for f in pf.schema_arrow if f.name in wanted])

    def column(self, name: str) -> pa.ChunkedArray:
        return self._read([name]).column(0)

    def read(self) -> pa.Table:
        """The row group's table of every column asked for."""
        return self._read(self.schema.names)

    def _read(self, columns: list[str]) -> pa.Table:
        try:
            table = self._pf.read_row_group(self._row_group, columns=columns, use_threads=False)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(
                f"cannot read row group {self._row_group} ({short_error(exc)})", path=self.path
            ) from None
        if table.num_rows != self.num_rows:
            raise DataError(
                f"the file changed during the run (row group {self._row_group} has "
                f"{table.num_rows} rows, {self.num_rows} when the run started); rerun to "
                "train on the new version",
                path=self.path,
            )
        return table
