"""Opening CSV files: streaming readers, probing the first block for types, reading ahead.

CSV files are parsed as :class:`CsvOptions` say (delimiter, header or given column names, null
tokens, column types), the same way for every file of a dataset. Quoted fields may hold the
delimiter, quotes (doubled) and line breaks; CRLF line endings, a UTF-8 byte-order mark and blank
lines are accepted; ``.gz``, ``.bz2`` and ``.zst`` files are decompressed as they stream. A value
or row that does not parse is a :class:`CsvError` naming the file, the physical line (1-based,
counting the header) and the column.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import pyarrow as pa  # (pyarrow.compute where used: 7 MiB a numeric fit never needs)
import pyarrow.csv as pacsv

from ..errors import DataError, UsageError
from .csv_errors import csv_error
from .csv_options import CSV_DTYPES, CsvOptions, Sniffed, sniff
from .paths import input_stream
from .schema import check_unique

__all__ = [
    "CSV_BLOCK_SIZE",
    "PROBE_BLOCK_SIZE",
    "READ_AHEAD",
    "ReadAhead",
    "open_csv",
    "probe_csv",
    "check_head",
    "given_types",
    "fixed_types",
    "check_dtypes",
    "empty_message",
    "numbers_as_text",
]

PROBE_BLOCK_SIZE = 64 << 10  # bytes of each later CSV file checked by open_dataset
CSV_BLOCK_SIZE = 1 << 20  # bytes of text per CSV block (4 MB blocks parsed 1.2-1.3x slower)


class ReadAhead:
    """A CSV reader's next blocks, parsed on a thread while the consumer converts the last.

    pyarrow parses a stream's blocks one after another on one core (its threads made no
    difference here), and converting a block to a matrix took ~7% beside it on the same
    thread; parsing ahead overlaps the two. At most ``READ_AHEAD`` blocks wait (1 MB of text
    each, ~1 MB parsed).
    """

    _END = object()

    def __init__(self, reader: pacsv.CSVStreamingReader) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(reader,), name="streamgd-csv", daemon=True
        )
        self._thread.start()

    def _run(self, reader: pacsv.CSVStreamingReader) -> None:
        while not self._stop.is_set():
            try:
                item = reader.read_next_batch()
            except StopIteration:
                item = self._END
            except BaseException as exc:  # raised where the block would have been
                item = exc
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item is self._END or isinstance(item, BaseException):
                return

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


READ_AHEAD = 2  # CSV blocks parsed ahead of the consumer (see ReadAhead)


_HEAD_LIMIT = 1 << 20  # a header-only file without a line break is read whole up to this size


def open_csv(
    path: str,
    options: CsvOptions,
    types: dict[str, pa.DataType] | None,
    include: list[str] | None,
    *,
    threads: bool = True,
    block_size: int | None = None,
) -> pacsv.CSVStreamingReader:
    """A streaming reader of one CSV file; pyarrow parses (and checks) the first block here.

    ``newlines_in_values`` is always on: without it a quoted line break that falls on a block
    boundary splits the record; on ordinary files it cost nothing measurable (0-3%).
    """
    try:
        sniffed = sniff(path)
    except OSError as exc:
        raise csv_error(exc, path, options, types or {}, first_row=0) from None
    read = {
        "block_size": block_size or CSV_BLOCK_SIZE,
        "use_threads": threads,
        "skip_rows": sniffed.skip_lines,
    }
    if sniffed.transcoded:
        read["encoding"] = sniffed.encoding
    if not options.header:
        read["column_names"] = list(options.columns or ())
    convert = {
        "column_types": types or {},
        "include_columns": include or [],
        "strings_can_be_null": True,
    }
    if options.null_values is not None:
        convert["null_values"] = list(options.null_values)
    kwargs = {
        "read_options": pacsv.ReadOptions(**read),
        "parse_options": pacsv.ParseOptions(
            delimiter=sniffed.delimiter(options, path),
            newlines_in_values=True,
            invalid_row_handler=_skip_blank,
        ),
        "convert_options": pacsv.ConvertOptions(**convert),
    }
    try:
        try:
            reader = pacsv.open_csv(input_stream(path), **kwargs)
        except pa.ArrowInvalid as exc:
            if "Empty CSV" not in str(exc) and "infer number of columns" not in str(exc):
                raise
            reader = pacsv.open_csv(_terminated_head(path, options, sniffed, exc), **kwargs)
    except (OSError, pa.ArrowException) as exc:
        raise csv_error(exc, path, options, types or {}, first_row=0) from None
    check_unique(reader.schema.names, path)
    if options.header and options.delimiter is None and sniffed.sep is None:
        check_one_column(reader.schema.names, path)
    return reader


# Delimiters a header read as one column is checked for (see check_one_column), with the
# way to name each in --delimiter.
_OTHER_DELIMITERS = {";": "';'", "\t": "tab", "|": "'|'"}


def check_one_column(names: list[str], path: str) -> None:
    """A header that parses as one column holding ``;``, a tab or ``|`` is a file with
    another delimiter, read with the default one: a UsageError saying which ``--delimiter``
    to pass (guessing it instead would make the same file parse differently depending on
    its first line; a real one-column file with such a name passes ``--delimiter ,``)."""
    if len(names) != 1:
        return
    for char, flag in _OTHER_DELIMITERS.items():
        if char in names[0]:
            shown = names[0] if len(names[0]) <= 60 else names[0][:57] + "..."
            raise UsageError(
                f"{path}: the header reads as one column ({shown!r}); if {flag} separates "
                f"the fields, pass --delimiter {flag}"
            )


def _skip_blank(row) -> str:
    """pyarrow's handler of a row with the wrong number of fields: a line of only spaces or
    tabs is a blank line (skipped, as empty lines are); anything else stays an error."""
    return "skip" if not row.text.strip(" \t\r") else "error"


def _terminated_head(
    path: str, options: CsvOptions, sniffed: Sniffed, exc: Exception
) -> pa.BufferReader:
    """pyarrow cannot parse a file whose only line lacks a line break (``a,b``): the whole
    (small) file with one added. A file of nothing but blank lines or a byte-order mark is
    empty."""
    with input_stream(path) as stream:
        head = stream.read(_HEAD_LIMIT + 1)
    text = head[len(sniffed.bom) :].decode(sniffed.codec, errors="replace")
    if not text.strip():
        raise DataError(empty_message(options), path=path)
    if len(head) > _HEAD_LIMIT:
        raise exc
    return pa.BufferReader(head + "\n".encode(sniffed.codec))


def empty_message(options: CsvOptions) -> str:
    return "the CSV file is empty" + (" (expected a header line)" if options.header else "")


def probe_csv(
    path: str, options: CsvOptions, types: dict[str, pa.DataType], *, rows: bool
) -> tuple[pa.Schema, bool | None]:
    """The schema pyarrow infers from the first block (``types`` forced; opening converts,
    and so checks, that block), and with ``rows`` whether the block holds a data row (None
    without: taking the batch costs as much again). No read-ahead."""
    reader = open_csv(path, options, types, None, threads=False)
    if not rows:
        return reader.schema, None
    try:
        batch = reader.read_next_batch()
    except StopIteration:
        return reader.schema, False
    except (OSError, pa.ArrowException) as exc:
        raise csv_error(exc, path, options, types, first_row=0) from None
    return numbers_as_text(reader.schema, batch, types), batch.num_rows > 0


# A number as pyarrow's CSV reader parses one (and inf, nan), spaces around allowed.
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$|^\s*[-+]?(inf|infinity|nan)\s*$"
MOSTLY_NUMERIC = 0.9  # share of a text column's values that makes it a numeric column


def numbers_as_text(
    schema: pa.Schema, batch: pa.RecordBatch, given: dict[str, pa.DataType]
) -> pa.Schema:
    """The inferred schema, with float64 for each text column whose values in the first block
    are mostly numbers (at least ``MOSTLY_NUMERIC`` of them): a numeric column with a few bad
    tokens, which would otherwise be read as text and silently left out of the default
    features. Parsed as float64, its first bad token is then an error naming its line (and
    saying how to read the column as text instead). Columns of ``given`` types are left as
    they are."""
    import pyarrow.compute as pc

    fields = []
    for f in schema:
        if f.name not in given and pa.types.is_string(f.type):
            col = batch.column(f.name).drop_null()
            if len(col):
                numeric = pc.match_substring_regex(col, _NUMBER, ignore_case=True)
                if pc.sum(numeric).as_py() >= MOSTLY_NUMERIC * len(col):
                    f = f.with_type(pa.float64())
        fields.append(f)
    return pa.schema(fields)


def check_head(
    path: str, options: CsvOptions, types: dict[str, pa.DataType]
) -> tuple[pa.Schema | None, None]:
    """A file after the types are fixed: its header, and its first ``PROBE_BLOCK_SIZE``
    bytes parsed with those types. Parsing a whole first block of every file here was ~2%
    of a fit, and the epoch parsed it again. None if that cannot settle it (an error, which
    the full probe then reports as it did, or a column the types do not cover, whose type
    is inferred from a whole block as for the first file)."""
    try:
        reader = open_csv(path, options, types, None, threads=False, block_size=PROBE_BLOCK_SIZE)
    except (DataError, OSError, pa.ArrowException):
        return None, None
    if not set(reader.schema.names) <= set(types):
        return None, None
    return reader.schema, None


def given_types(options: CsvOptions) -> dict[str, pa.DataType]:
    return {name: CSV_DTYPES[kind] for name, kind in (options.dtypes or {}).items()}


def fixed_types(schema: pa.Schema, options: CsvOptions) -> dict[str, pa.DataType]:
    """The types every CSV block is parsed with: as inferred, but integer and all-null columns
    become float64 so that a later 1.5 or a later value cannot break a type guessed from a few
    rows; ``options.dtypes`` win."""
    given = given_types(options)
    types = {}
    for f in schema:
        kind = f.type
        if f.name in given:
            kind = given[f.name]
        elif pa.types.is_integer(kind) or pa.types.is_null(kind):
            kind = pa.float64()
        types[f.name] = kind
    return types


def check_dtypes(options: CsvOptions, schema: pa.Schema, path: str) -> None:
    unknown = [name for name in options.dtypes or {} if name not in schema.names]
    if unknown:
        raise UsageError(
            f"{path}: a CSV dtype is given for no such column: {', '.join(map(repr, unknown))}; "
            f"columns are: {', '.join(schema.names)}"
        )
