"""How CSV files are parsed (:class:`CsvOptions`), and the error a row that does not parse
raises (:class:`CsvError`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pyarrow as pa

from ..errors import DataError, UsageError
from .paths import TSV_EXTENSIONS, file_name, input_stream

__all__ = ["CSV_DTYPES", "CsvOptions", "CsvError", "DEFAULT_CSV", "Sniffed", "sniff"]


# name -> Arrow type, for CsvOptions.dtypes (the names are also the ones error messages use)
CSV_DTYPES: dict[str, pa.DataType] = {
    "float64": pa.float64(),
    "float32": pa.float32(),
    "int64": pa.int64(),
    "bool": pa.bool_(),
    "string": pa.string(),
}
_DELIMITER_ALIASES = {"\\t": "\t", "tab": "\t"}  # what a shell or a TOML literal string gives


@dataclass(frozen=True)
class CsvOptions:
    """How CSV files are parsed; the defaults read what streamgd always read.

    Attributes:
        delimiter: one ASCII character (``"\\\\t"`` and ``"tab"`` mean a tab); None: a tab for
            ``.tsv`` files (also compressed), a comma otherwise.
        header: whether the first line names the columns.
        columns: the column names when ``header`` is false (required then, and only then);
            every row must have exactly this many fields.
        null_values: the tokens read as null, exactly (``("", "NA", "?")``); None: pyarrow's
            defaults (``""``, ``NA``, ``NULL``, ``NaN``, ``null``, ``N/A``, ``#N/A`` and a few
            more). A quoted token is null too.
        dtypes: column -> one of :data:`CSV_DTYPES`, overriding inference for those columns.

    Options apply to every CSV file of a dataset and to no Parquet file.

    >>> CsvOptions(delimiter="tab", header=False, columns=["a", "b"]).to_dict()["delimiter"]
    '\\t'
    """

    delimiter: str | None = None
    header: bool = True
    columns: tuple[str, ...] | None = None
    null_values: tuple[str, ...] | None = None
    dtypes: dict[str, str] | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # normalising a frozen dataclass's own fields
        delimiter = self.delimiter
        if isinstance(delimiter, str):
            delimiter = _DELIMITER_ALIASES.get(delimiter.lower(), delimiter)
        if delimiter is not None and (
            not isinstance(delimiter, str)
            or len(delimiter) != 1
            or not delimiter.isascii()
            or delimiter in '"\r\n'
        ):
            raise UsageError(
                "the CSV delimiter must be one ASCII character other than a quote or a line "
                f"break (or 'tab'), got {self.delimiter!r}"
            )
        set_(self, "delimiter", delimiter)
        if not isinstance(self.header, bool):
            raise UsageError(f"the CSV header setting must be true or false, got {self.header!r}")
        set_(self, "columns", _names(self.columns, "CSV column names"))
        set_(self, "null_values", _names(self.null_values, "CSV null values", unique=False))
        if self.header and self.columns is not None:
            raise UsageError("CSV column names are given only for files without a header line")
        if not self.header and not self.columns:
            raise UsageError("CSV files without a header line need their column names")
        if self.dtypes is not None:
            if not isinstance(self.dtypes, dict):
                raise UsageError(f"CSV dtypes must map columns to types, got {self.dtypes!r}")
            for name, kind in self.dtypes.items():
                if kind not in CSV_DTYPES:
                    raise UsageError(
                        f"CSV dtype of column {name!r} must be one of "
                        f"{', '.join(CSV_DTYPES)}, got {kind!r}"
                    )
            set_(self, "dtypes", dict(self.dtypes) or None)

    def __hash__(self) -> int:  # dtypes is a dict: hash the canonical JSON form instead
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def delimiter_for(self, path: str) -> str:
        """The delimiter of this file: the option, else by its name (tab for ``.tsv``)."""
        return self.delimiter if self.delimiter is not None else _default_delimiter(path)

    def to_dict(self) -> dict:
        """Every field as plain JSON values (tuples as lists)."""
        return {
            "delimiter": self.delimiter,
            "header": self.header,
            "columns": None if self.columns is None else list(self.columns),
            "null_values": None if self.null_values is None else list(self.null_values),
            "dtypes": None if self.dtypes is None else dict(self.dtypes),
        }

    @classmethod
    def from_dict(cls, data: dict) -> CsvOptions:
        """The inverse of :meth:`to_dict`; missing keys take their defaults."""
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise UsageError(f"unknown CSV option(s): {', '.join(unknown)}")
        return cls(**data)

    def fingerprint(self, path: str) -> dict:
        """The settings that parse this file differently from the defaults (empty when none),
        so that default options leave a dataset's fingerprint as it was before they existed."""
        out: dict = {}
        if self.delimiter_for(path) != _default_delimiter(path):
            out["delimiter"] = self.delimiter
        for key, value in self.to_dict().items():
            if key != "delimiter" and value != DEFAULT_CSV.to_dict()[key]:
                out[key] = value
        return out


def _names(values, what: str, *, unique: bool = True) -> tuple[str, ...] | None:
    if values is None:
        return None
    if isinstance(values, str) or not all(isinstance(v, str) for v in values):
        raise UsageError(f"{what} must be a list of strings, got {values!r}")
    values = tuple(values)
    if unique and len(set(values)) != len(values):
        repeated = sorted({v for v in values if values.count(v) > 1})
        raise UsageError(f"{what} repeat {', '.join(map(repr, repeated))}")
    return values


def _default_delimiter(path: str) -> str:
    return "\t" if file_name(path).lower().endswith(TSV_EXTENSIONS) else ","


DEFAULT_CSV = CsvOptions()


class CsvError(DataError):
    """A CSV row or value that cannot be parsed, located as exactly as the file allows.

    ``line`` is the physical line where the record starts (1-based, counting the header line,
    blank lines and the line breaks inside quoted values); ``row`` is the data row (1-based, not
    counting the header or blank lines), as in other errors; ``column`` is None for a row with
    the wrong number of fields. The message names the line:
    ``data.csv: line 12: column 'x3': cannot parse 'abc' as float64``.
    """

    def __init__(
        self, message: str, *, path: str, line: int, row: int, column: str | None = None
    ) -> None:
        where = f"line {line}: " + (f"column {column!r}: " if column is not None else "")
        super().__init__(where + message, path=path)
        self.line, self.row, self.column = line, row, column


# Byte-order marks, longest first (UTF-32 LE starts like UTF-16 LE), and the codec that
# decodes the text after them.
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
_SEP_LINE = re.compile(r"sep=(.)\r?\n")  # Excel's first line naming the delimiter
_SNIFF_BYTES = 64


@dataclass(frozen=True)
class Sniffed:
    """What a CSV file's first bytes say about how to read it: its byte-order mark and the
    codec of the text after it (UTF-8 without one), and the delimiter of a leading Excel
    ``sep=X`` line (None without one; such a line is skipped)."""

    bom: bytes = b""
    codec: str = "utf-8"
    sep: str | None = None

    @property
    def encoding(self) -> str:
        """The encoding as Python's codecs take it, reading (and dropping) the BOM."""
        return "utf-8-sig" if self.codec == "utf-8" else self.codec[:6]  # utf-16, utf-32

    @property
    def transcoded(self) -> bool:
        """Whether pyarrow must transcode the file (it reads UTF-8 itself)."""
        return self.codec != "utf-8"

    @property
    def skip_lines(self) -> int:
        return 1 if self.sep is not None else 0

    def delimiter(self, options: CsvOptions, path: str) -> str:
        """The file's delimiter: its ``sep=`` line's, else the options'."""
        return self.sep if self.sep is not None else options.delimiter_for(path)


def sniff(path: str) -> Sniffed:
    """Read a CSV file's first bytes (decompressed) for a byte-order mark and a ``sep=`` line."""
    with input_stream(path) as stream:
        head = stream.read(_SNIFF_BYTES)
    bom, codec = next(((b, c) for b, c in _BOMS if head.startswith(b)), (b"", "utf-8"))
    text = head[len(bom) :].decode(codec, errors="replace")
    match = _SEP_LINE.match(text)
    return Sniffed(bom, codec, match[1] if match else None)
