"""The dataset: resolved files with one schema fixed up front, read unit by unit.

The unit of reading is a :class:`Unit`: one row group of a Parquet file, or one whole CSV file
(a CSV file has no row groups, so it is streamed block by block with pyarrow's CSV reader). Nothing
here ever reads a whole Parquet file or a whole dataset at once.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ..errors import DataError, UsageError
from .csv import (
    ReadAhead,
    check_dtypes,
    check_head,
    empty_message,
    fixed_types,
    given_types,
    open_csv,
    probe_csv,
)
from .csv_errors import csv_error
from .csv_options import DEFAULT_CSV, CsvOptions
from .fingerprint import (
    FINGERPRINT_VERSION,
    Stamp,
    differences,
    stamp_file,
    stamp_parquet,
    verify,
)
from .memory import MEMORY_ROWS
from .parquet import FooterCache, HandleCache, KeptTables, RowGroupColumns, open_parquet
from .partitions import NO_PARTITIONS, Partitions, discover_partitions, partition_dirs
from .paths import is_uri, path_parts, resolve_with_sizes, short_error
from .schema import unify

__all__ = ["SLICE_ROWS", "SourceFile", "Unit", "Dataset", "open_dataset", "memory_units"]

SLICE_ROWS = 262_144
SLICE_READ_BUFFER = 64 << 10  # bytes each column's reader buffers of a row group read in slices
THREADED_ROWS = 65_536  # row groups at least this large are decoded on Arrow's thread pool
# Row groups at least this large are read one column at a time by readers that ask for it
# (HandleCache(columnwise=True): the decoders), so Arrow holds one column, not the whole
# table (see RowGroupColumns); below, one read of all columns costs less than one per column.
COLUMNWISE_ROWS = 16_384


@dataclass(frozen=True)
class SourceFile:
    """One input file and the metadata that identifies it (used in fingerprints)."""

    path: str
    format: str
    size: int
    row_groups: tuple[int, ...] = ()  # rows per row group; empty for CSV
    # size, mtime and content digest, taken when the dataset is opened (see fingerprint.py);
    # every read of the file is checked against it
    stamp: Stamp | None = None
    # an in-memory source's reader (format "memory": slices of known rows; "stream": batches
    # read like a CSV file), see sources.memory and sources.streams; None for a file
    reader: Any = field(default=None, compare=False, repr=False)

    @property
    def num_rows(self) -> int | None:
        return sum(self.row_groups) if self.format in ("parquet", "memory") else None

    @property
    def in_memory(self) -> bool:
        return self.reader is not None


@dataclass(frozen=True)
class Unit:
    """A piece of an epoch that is read in one go: a Parquet row group, a whole CSV file, a
    slice of an in-memory source or a whole stream."""

    file: int
    row_group: int  # -1 for a CSV file or a stream
    rows: int | None  # None when unknown (CSV, stream)


@dataclass
class _Parked:
    """Pieces of a unit already decoded and the iterator that continues after them."""

    unit: Unit
    columns: frozenset[str]  # the pieces hold these columns (and maybe more)
    pieces: collections.deque
    rest: Iterator[tuple[pa.Table | pa.RecordBatch, int]]


@dataclass
class Dataset:
    """A resolved set of files with one schema fixed up front."""

    files: tuple[SourceFile, ...]
    schema: pa.Schema
    csv_schema: pa.Schema | None = None  # the types every CSV block is parsed with
    units: tuple[Unit, ...] = field(default=())
    csv: CsvOptions = DEFAULT_CSV  # how every CSV file is parsed
    # hive partition columns (the last of ``schema``) and each file's values of them
    partitions: Partitions = NO_PARTITIONS
    notes: tuple[str, ...] = ()  # what a user should know: columns widened between files
    # pieces of one CSV unit already parsed, and its reader after them (see park)
    _parked: dict[Unit, _Parked] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # values derived from the files' content once and kept as long as the dataset (the
    # --holdout-rows draw: see holdout.drawn_rows)
    memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    # rows a whole read of each CSV file gave (path -> rows): a later read must agree
    _csv_rows: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    # parsed footers of local Parquet files, bounded (see FooterCache): later passes and
    # epochs do not parse them again
    footers: FooterCache = field(default_factory=FooterCache, init=False, repr=False, compare=False)
    # rows of the pieces a larger row group is read in (None: SLICE_ROWS); --piece-rows
    piece_rows: int | None = field(default=None, init=False, repr=False, compare=False)
    # small units' tables the statistics pass read, for the first epoch (see streamgd.groups)
    kept: KeptTables = field(default_factory=KeptTables, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if any(f.stamp is None for f in self.files):
            self.files = tuple(_stamped(f) for f in self.files)

    @classmethod
    def of(cls, files: tuple[SourceFile, ...], schema: pa.Schema, **kwargs: Any) -> Dataset:
        """A dataset of ``files`` read in their units (row groups, CSV files, in-memory
        slices, streams)."""
        return cls(files, schema, units=_units(files), **kwargs)

    @property
    def in_memory(self) -> bool:
        """Whether the data is held by this process (Dask workers cannot read it)."""
        return any(f.in_memory for f in self.files)

    @property
    def one_shot(self) -> bool:
        """Whether a source is a one-shot iterator: read once, one pass."""
        return any(getattr(f.reader, "one_shot", False) for f in self.files)

    @property
    def num_rows(self) -> int | None:
        counts = [f.num_rows for f in self.files]
        return None if any(c is None for c in counts) else sum(counts)  # type: ignore[misc]

    def fingerprint(self) -> dict:
        """What identifies the input (``"version"`` :data:`FINGERPRINT_VERSION`): for every
        file its path, row-group layout and stamp (size, ``mtime_ns``, content ``digest``: see
        :mod:`streamgd.sources.fingerprint`), and for a CSV file the parse options that differ
        from the defaults (key ``"csv"``, only then), so that a resume with other parse
        options is refused."""
        files = []
        for f in self.files:
            entry = {"path": f.path, "size": f.size, "row_groups": list(f.row_groups)}
            entry.update(f.stamp.to_dict() if f.stamp is not None else {})
            parse = self.csv.fingerprint(f.path) if f.format == "csv" else {}
            if parse:
                entry["csv"] = parse
            files.append(entry)
        return {"version": FINGERPRINT_VERSION, "files": files}

    def digest(self) -> str:
        blob = json.dumps(self.fingerprint(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def check_fingerprint(self, expected: dict) -> None:
        """Refuse to go on when this dataset's files are not those of ``expected`` (another
        opening's :meth:`fingerprint`): for a process that opens the input again during a run
        (a Dask worker), so that a file replaced between the run's start and that opening is
        reported like one replaced while it is read.

        Raises:
            DataError: naming the first file that differs and what changed.
        """
        now = self.fingerprint()
        if now == expected:
            return
        old = {f["path"]: f for f in expected.get("files", [])}
        for entry in now["files"]:
            before = old.get(entry["path"])
            if before != entry:
                what = "not an input at the start" if before is None else differences(before, entry)
                raise DataError(
                    f"the file changed during the run ({what or 'layout or options changed'}); "
                    "rerun to train on the new version",
                    path=entry["path"],
                )
        raise DataError(
            "the input files changed during the run (a file is gone); rerun to train on the "
            "files as they are now"
        )

    def iter_unit(
        self, unit: Unit, columns: Sequence[str], handle: HandleCache | None = None
    ) -> Iterator[tuple[pa.Table | pa.RecordBatch, int]]:
        """Yield ``(table, first_row)`` pieces of one unit; ``first_row`` is the piece's row
        number within its file (0-based), for error messages. Partition columns among
        ``columns`` are constant columns of every piece, like the file's own."""
        parked = self._unpark(unit, columns)
        if parked is not None:
            while parked.pieces:  # handed over one by one, so each is freed once used
                yield parked.pieces.popleft()
            yield from parked.rest
            return
        if not self.partitions.names:
            yield from self._iter_pieces(unit, columns, handle)
            return
        own = [c for c in columns if c not in self.partitions.names]
        if not own and self.files[unit.file].format == "csv":
            own = [self.schema.names[0]]  # a CSV reader without columns reads all: count one
        for table, first_row in self._iter_pieces(unit, own, handle):
            if isinstance(table, RowGroupColumns):  # constant columns are added to tables
                table = table.read()
            yield self.partitions.add_columns(table, unit.file, columns), first_row

    def park(
        self,
        unit: Unit,
        columns: Sequence[str],
        pieces: Sequence[tuple[pa.Table | pa.RecordBatch, int]],
        rest: Iterator[tuple[pa.Table | pa.RecordBatch, int]],
    ) -> None:
        """Keep the first ``pieces`` of ``unit`` as :meth:`iter_unit` gave them for
        ``columns``, and ``rest`` (that iterator, past them), for the next read of the unit:
        the statistics pass hands the epoch the CSV blocks it parsed (a CSV file cannot be
        entered in the middle, so parsing them again was ~10% of a fit). A read of a parked
        unit takes its pieces; a read that cannot use them, or of a unit not parked (another
        order, another pass), drops them all."""
        self._drop(self._parked.pop(unit, None))
        self._parked[unit] = _Parked(unit, frozenset(columns), collections.deque(pieces), rest)

    def _unpark(self, unit: Unit, columns: Sequence[str]) -> _Parked | None:
        if not self._parked:
            return None
        parked = self._parked.pop(unit, None)
        if parked is not None and parked.columns.issuperset(columns):
            return parked
        for other in [parked, *self._parked.values()]:
            self._drop(other)
        self._parked.clear()
        return None

    @staticmethod
    def _drop(parked: _Parked | None) -> None:
        close = getattr(parked and parked.rest, "close", None)
        if close is not None:
            close()

    def _iter_pieces(
        self, unit: Unit, columns: Sequence[str], handle: HandleCache | None
    ) -> Iterator[tuple[pa.Table | pa.RecordBatch, int]]:
        src = self.files[unit.file]
        if src.format == "memory":
            start = unit.row_group * MEMORY_ROWS
            yield src.reader.read(start, start + (unit.rows or 0), columns), start
        elif src.format == "stream":
            yield from src.reader.pieces(columns)
        elif src.format == "parquet" and self.single_piece(unit):
            first = sum(src.row_groups[: unit.row_group])
            # no reference kept here while suspended: the consumer may drop the table (and
            # the memory map behind it) as soon as it has converted it
            yield self._read_row_group(src, unit, columns, handle or HandleCache()), first
        elif src.format == "parquet":
            yield from self._iter_slices(src, unit, columns)
        else:
            yield from self._iter_csv(src, columns)

    def _read_row_group(
        self, src: SourceFile, unit: Unit, columns: Sequence[str], handle: HandleCache
    ) -> pa.Table | RowGroupColumns:
        pf = handle.parquet(src.path, src.stamp, self.footers)  # checked against its stamp
        if handle.columnwise and (unit.rows or 0) >= COLUMNWISE_ROWS and not is_uri(src.path):
            return RowGroupColumns(pf, unit.row_group, columns, src.path, unit.rows or 0)
        try:
            # Arrow's thread pool only for large row groups: for a small one its dispatch costs
            # more than the decode (50 rows x 9 columns: 0.26 ms threaded, 0.09 ms not), and
            # the training thread wants the other core
            threads = (unit.rows or 0) >= THREADED_ROWS
            table = pf.read_row_group(unit.row_group, columns=list(columns), use_threads=threads)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(
                f"cannot read row group {unit.row_group} ({short_error(exc)})", path=src.path
            ) from None
        handle.confirm(src.path, src.stamp)
        _check_rows(src, unit, table.num_rows)
        return table

    def single_piece(self, unit: Unit) -> bool:
        """Whether the unit is read in one piece: a row group of at most ``SLICE_ROWS`` rows, or
        a slice of an in-memory source."""
        return unit.row_group >= 0 and (unit.rows or 0) <= self.slice_rows

    @property
    def slice_rows(self) -> int:
        """Rows of the pieces a row group larger than that is read in."""
        return self.piece_rows or SLICE_ROWS

    def _iter_slices(self, src: SourceFile, unit: Unit, columns: Sequence[str]):
        """A row group larger than ``SLICE_ROWS`` in slices of that many rows, through a
        buffered reader, so one huge row group never sits decoded in memory whole (measured:
        a 2M-row group peaked Arrow's pool at 208 MB read whole, 79 MB in slices)."""
        # a small read buffer: one per column, kept while the row group is read (1 MiB each
        # was 33 MiB more of Arrow's memory on 33 columns, BENCHMARKS.md "Footprint")
        pf = open_parquet(src.path, buffer_size=SLICE_READ_BUFFER)
        # the footer just parsed is the stamped file's, and each slice was read from it
        seen = () if src.stamp is None else verify(src.path, src.format, src.stamp, full=True)
        row = first = sum(src.row_groups[: unit.row_group])
        try:
            for batch in pf.iter_batches(
                batch_size=self.slice_rows, row_groups=[unit.row_group], columns=list(columns)
            ):
                if src.stamp is not None:
                    seen = verify(src.path, src.format, src.stamp, known=seen)
                yield batch, row
                row += batch.num_rows
        except (OSError, pa.ArrowException) as exc:
            raise DataError(
                f"cannot read row group {unit.row_group} ({short_error(exc)})", path=src.path
            ) from None
        _check_rows(src, unit, row - first)

    def _iter_csv(self, src: SourceFile, columns: Sequence[str]):
        assert self.csv_schema is not None
        types = {name: self.csv_schema.field(name).type for name in columns}
        reader = open_csv(src.path, self.csv, types, list(columns))
        # the file just opened is the stamped one (head, tail, size, mtime), and still is
        # when the last block has been read: an append or a rewrite while it was read stops
        # the run instead of ending the unit early or late
        seen = () if src.stamp is None else verify(src.path, src.format, src.stamp, full=True)
        ahead = ReadAhead(reader)
        row = 0
        try:
            for batch in ahead:
                yield batch, row
                row += batch.num_rows
        except (OSError, pa.ArrowException) as exc:
            raise csv_error(exc, src.path, self.csv, types, first_row=row) from None
        finally:
            ahead.close()
        if src.stamp is not None:
            verify(src.path, src.format, src.stamp, known=seen)
        if self._csv_rows.setdefault(src.path, row) != row:
            raise DataError(
                f"the file changed during the run ({row} rows read now, "
                f"{self._csv_rows[src.path]} before); rerun to train on the new version",
                path=src.path,
            )


def open_dataset(paths: Sequence[str], fmt: str = "auto", csv: CsvOptions | None = None) -> Dataset:
    """Resolve paths, read every file's metadata and fix one schema for all of them.

    CSV files are parsed as ``csv`` says (default :class:`CsvOptions`). Their column types are
    fixed once, from the first block of the first CSV file with a data row (a header-only file
    says nothing about types); the first 64 KB of every other CSV file are parsed with those
    types here (its first block, if it has columns those types do not cover), so a bad value
    there is reported before training starts.
    """
    options = CsvOptions() if csv is None else csv
    if not isinstance(options, CsvOptions):
        raise UsageError(f"csv must be CsvOptions or None, got {type(options).__name__}")
    footers = FooterCache()
    files, schemas, csv_types = _read_metadata(resolve_with_sizes(paths, fmt), options, footers)
    schema, notes = unify(schemas, [f.path for f in files])
    partitions = discover_partitions(
        [f.path for f in files], [partition_dirs(path_parts(f.path)) for f in files]
    )
    _check_partitions(partitions, schema, files)
    csv_schema = None if csv_types is None else pa.schema(list(csv_types.items()))
    dataset = Dataset(
        tuple(files),
        pa.schema([*schema, *partitions.schema]),
        csv_schema,
        _units(files),
        options,
        partitions=partitions,
        notes=notes,
    )
    dataset.footers = footers
    return dataset


def _read_metadata(
    resolved: Sequence[tuple[str, str, int]], options: CsvOptions, footers: FooterCache
) -> tuple[list[SourceFile], list[pa.Schema], dict[str, pa.DataType] | None]:
    """Every file's source record (stamped) and schema, and the CSV column types fixed for
    them all (None without CSV files); CSV schemas come back already cast to those types. A
    Parquet footer is read and parsed once, for the stamp, layout and schema (and offered
    to ``footers``)."""
    files: list[SourceFile] = []
    schemas: list[pa.Schema] = []
    csv_types: dict[str, pa.DataType] | None = None
    csv_files: list[int] = []
    for path, kind, size in resolved:
        if kind == "parquet":
            stamp, md = stamp_parquet(path)
            if min(size, stamp.size) >= 0 and size != stamp.size:
                raise DataError(_CHANGED_WHILE_OPENED, path=path)
            try:
                schema = md.schema.to_arrow_schema()
            except (OSError, pa.ArrowException) as exc:
                why = short_error(exc)
                raise DataError(f"not a readable Parquet file ({why})", path=path) from None
            files.append(SourceFile(path, kind, size, stamp.row_groups or (), stamp))
            schemas.append(schema)
            if not is_uri(path):
                footers.offer(path, stamp, md)
            continue
        schema, has_rows = _csv_schema(path, size, options, csv_types, first=not csv_files)
        if csv_types is None and has_rows:
            csv_types = fixed_types(schema, options)
        csv_files.append(len(schemas))
        files.append(SourceFile(path, kind, size))
        schemas.append(schema)
    if csv_files and csv_types is None:  # header-only files only: nothing to infer from
        csv_types = fixed_types(schemas[csv_files[0]], options)
    for i in csv_files:  # header-only files read before the types were fixed say nothing
        own = fixed_types(schemas[i], options)
        fixed = {**own, **{n: t for n, t in (csv_types or {}).items() if n in own}}
        schemas[i] = pa.schema(list(fixed.items()))
    return files, schemas, csv_types


def _csv_schema(
    path: str,
    size: int,
    options: CsvOptions,
    csv_types: dict[str, pa.DataType] | None,
    *,
    first: bool,
) -> tuple[pa.Schema, bool | None]:
    """One CSV file's schema and whether it has a data row: its head checked against the fixed
    types, or probed (inferring types only while none are fixed)."""
    if size == 0:
        raise DataError(empty_message(options), path=path)
    typed = csv_types is not None
    schema, has_rows = check_head(path, options, csv_types) if typed else (None, None)
    if schema is None:
        schema, has_rows = probe_csv(
            path, options, csv_types or given_types(options), rows=not typed
        )
    if first:
        check_dtypes(options, schema, path)
    return schema, has_rows


def _units(files: Sequence[SourceFile]) -> tuple[Unit, ...]:
    """The units read one at a time: a Parquet file's row groups, a CSV file whole."""
    units = []
    for i, f in enumerate(files):
        if f.format in ("parquet", "memory"):
            units.extend(Unit(i, g, n) for g, n in enumerate(f.row_groups))
        else:
            units.append(Unit(i, -1, None))
    return tuple(units)


def memory_units(num_rows: int) -> tuple[int, ...]:
    """The rows of each slice ("row group") of an in-memory source of ``num_rows`` rows."""
    full, rest = divmod(num_rows, MEMORY_ROWS)
    return (MEMORY_ROWS,) * full + ((rest,) if rest else ())


def _stamped(src: SourceFile) -> SourceFile:
    """``src`` with its stamp, taken now; a Parquet file whose footer no longer gives the
    layout read a moment ago, or a file of another size than listed, was replaced while the
    dataset was opened."""
    stamp = stamp_file(src.path, src.format, layout=src.format == "parquet")
    other_layout = stamp.row_groups is not None and stamp.row_groups != src.row_groups
    if other_layout or (min(src.size, stamp.size) >= 0 and src.size != stamp.size):
        raise DataError(_CHANGED_WHILE_OPENED, path=src.path)
    return dataclasses.replace(src, stamp=stamp)


_CHANGED_WHILE_OPENED = (
    "the file changed while the input was being opened; rerun to train on the new version"
)


def _check_rows(src: SourceFile, unit: Unit, rows: int) -> None:
    """A row group must give the rows the layout at the start promised."""
    if unit.rows is not None and rows != unit.rows:
        raise DataError(
            f"the file changed during the run (row group {unit.row_group} has {rows} rows, "
            f"{unit.rows} when the run started); rerun to train on the new version",
            path=src.path,
        )


def _check_partitions(partitions: Partitions, schema: pa.Schema, files: list[SourceFile]) -> None:
    """A partition key must not also be a column inside the files: which would it be?"""
    for name in partitions.names:
        if name not in schema.names:
            continue
        for f in files:
            hit = [d for d in partition_dirs(path_parts(f.path)) if d.partition("=")[0] == name]
            if hit:
                raise DataError(
                    f"a hive partition key of the file's directories ({hit[0]}) is also a "
                    "column inside the file; rename one of them",
                    path=f.path,
                    column=name,
                )
