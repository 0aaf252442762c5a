"""Locating a CSV parse error: the line, row and column of the record pyarrow failed on."""

from __future__ import annotations

import csv as pycsv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa

from ..errors import DataError
from .csv_options import CSV_DTYPES, CsvError, CsvOptions, sniff
from .paths import input_stream, short_error

__all__ = ["csv_error"]

# -- locating a CSV error ------------------------------------------------------------------
# pyarrow (checked with 26.0) says what is wrong but not where: a conversion error names the
# column by index and the value ("In CSV column #2: CSV conversion error to double: invalid
# value 'abc'") and a ragged row its field counts ("Expected 3 columns, got 4: <text>"), but
# neither names the row (a "Row #N" appears only for a ragged row without threads, and it
# counts records, not lines). So the file is read again with Python's csv module, which has
# the same quoting rules, up to the first record of the failing block (or later) that shows
# the problem; that costs a pass over the file up to there, on the error path only.

_CONVERSION = re.compile(
    r"conversion error to (?P<type>[^:]+): invalid value '(?P<value>.*)'$", re.S
)
_COLUMN_INDEX = re.compile(r"In CSV column #(?P<index>\d+)")
_FIELD_COUNT = re.compile(r"Expected (?P<expected>\d+) columns, got (?P<got>\d+)")
_ARROW_NAMES = {"double": "float64", "float": "float32"}


@dataclass(frozen=True)
class _Record:
    line: int  # physical line where the record starts, 1-based
    row: int  # data row, 1-based
    fields: list[str]


def csv_error(
    exc: BaseException,
    path: str,
    options: CsvOptions,
    types: dict[str, pa.DataType],
    *,
    first_row: int,
) -> DataError:
    """A one-line error for pyarrow's ``exc`` about the block after data row ``first_row``
    (0-based): a :class:`CsvError` with line, row and column when the record is found, else a
    :class:`DataError` saying from which row on."""
    problem = _problem(str(exc).strip())
    if problem is None:
        return DataError(
            f"cannot read the CSV file at or after row {first_row + 1} ({short_error(exc)})",
            path=path,
        )
    kind, index, detail, match = problem
    names, record = _locate(path, options, first_row, match)
    column = None
    if index is not None:
        column = names[index] if names is not None and index < len(names) else f"#{index + 1}"
    if kind == "value":
        arrow_name, value = detail
        dtype = _type_name(types.get(column) if column else None, arrow_name)
        what = f"cannot parse {_clip(value)} as {dtype}"
        if column is not None and dtype in ("float64", "float32", "int64"):
            what += (
                f" (--dtype {column}=string reads the column as text; --null-values sets "
                "the tokens read as missing)"
            )
    elif kind == "utf8":
        what = "the text is not valid UTF-8"
    else:
        expected, got = detail
        got = len(record.fields) if record is not None else got
        what = f"expected {expected} fields, got {got}"
        if record is not None and record.row == 1 and not options.header:
            what = f"the first row has {got} fields but {expected} column names were given"
    if record is not None:
        return CsvError(what, path=path, line=record.line, row=record.row, column=column)
    where = f"at or after row {first_row + 1}: " + (f"column {column!r}: " if column else "")
    error = DataError(where + what, path=path)
    error.column = column
    return error


def _problem(text: str) -> tuple[str, int | None, tuple, Callable[[list[str]], bool]] | None:
    """What pyarrow's error message says: ``(kind, column index, details, match)`` where
    ``match(fields)`` tells the record at fault; None for a message of another form."""
    index = _COLUMN_INDEX.search(text)
    k = int(index["index"]) if index else None
    conversion, count = _CONVERSION.search(text), _FIELD_COUNT.search(text)
    if conversion and k is not None:
        value = conversion["value"]  # pyarrow reports it without spaces and tabs around it
        return (
            "value",
            k,
            (conversion["type"], value),
            lambda fields: len(fields) > k and fields[k].strip(" \t") == value,
        )
    if "invalid UTF8" in text and k is not None:
        return "utf8", k, (), lambda fields: len(fields) > k and _undecodable(fields[k])
    if count:
        expected = int(count["expected"])
        return "fields", None, (expected, int(count["got"])), lambda f: len(f) != expected
    return None


def _locate(
    path: str, options: CsvOptions, first_row: int, match: Callable[[list[str]], bool]
) -> tuple[list[str] | None, _Record | None]:
    """The column names, and the first data record after ``first_row`` rows that ``match``es
    (None when there is none or the file cannot be read this way)."""
    names = list(options.columns) if options.columns is not None else None
    row = 0
    try:
        for line, fields in _records(path, options):
            if names is None:
                names = fields
                continue
            if len(names) > 1 and len(fields) == 1 and not fields[0].strip(" \t\r"):
                continue  # a line of spaces: blank, as pyarrow is told to read it
            row += 1
            if row > first_row and match(fields):
                return names, _Record(line, row, fields)
    except (OSError, UnicodeError, pycsv.Error, pa.ArrowException, DataError):
        pass
    return names, None


def _records(path: str, options: CsvOptions) -> Iterator[tuple[int, list[str]]]:
    """``(first line, fields)`` of every non-blank record of a CSV file, header included,
    streamed (decompressed like pyarrow does: by the file name's extension; decoded as its
    byte-order mark says; after a leading ``sep=`` line, which counts as a line)."""
    sniffed = sniff(path)
    with (
        input_stream(path) as raw,
        io.TextIOWrapper(
            raw, encoding=sniffed.encoding, errors="surrogateescape", newline=""
        ) as text,
    ):
        for _ in range(sniffed.skip_lines):
            text.readline()
        reader = pycsv.reader(text, delimiter=sniffed.delimiter(options, path), strict=False)
        line = sniffed.skip_lines  # physical lines consumed so far
        for fields in reader:
            if fields:  # blank lines give []: pyarrow skips them too
                yield line + 1, fields
            line = sniffed.skip_lines + reader.line_num


def _undecodable(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def _clip(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")


def _type_name(kind: pa.DataType | None, arrow_name: str) -> str:
    for name, dtype in CSV_DTYPES.items():
        if kind is not None and kind.equals(dtype):
            return name
    return _ARROW_NAMES.get(arrow_name.strip(), arrow_name.strip())
