"""Sources: resolve paths to Parquet/CSV files, fix one schema up front, read them unit by unit.

One job per module: :mod:`.paths` (paths, URIs, globs, listings, filesystems), :mod:`.csv_options`
(how CSV is parsed), :mod:`.csv` (opening and probing CSV files, read-ahead), :mod:`.csv_errors`
(locating a CSV parse error), :mod:`.parquet` (opening Parquet files, the handle cache),
:mod:`.schema` (one schema for all files), :mod:`.partitions` (hive partition columns) and
:mod:`.dataset` (the :class:`Dataset` and :func:`open_dataset`); in-memory data: :mod:`.memory`
(tables, frames and arrays read in slices), :mod:`.streams` (iterators and callables of batches)
and :mod:`.source` (:func:`open_source`: anything a user hands to the API, as a Dataset).
"""

from .csv import CSV_BLOCK_SIZE, PROBE_BLOCK_SIZE
from .csv_options import CSV_DTYPES, CsvError, CsvOptions
from .dataset import SLICE_ROWS, Dataset, SourceFile, Unit, open_dataset
from .memory import MEMORY_ROWS
from .parquet import HandleCache, RowGroupColumns, open_parquet
from .paths import FORMATS, is_uri, resolve_paths
from .schema import is_numeric
from .source import ACCEPTED, is_paths, open_source, source_kind, with_target

__all__ = [
    "FORMATS",
    "CSV_DTYPES",
    "CSV_BLOCK_SIZE",
    "PROBE_BLOCK_SIZE",
    "SLICE_ROWS",
    "CsvOptions",
    "CsvError",
    "SourceFile",
    "Unit",
    "Dataset",
    "HandleCache",
    "RowGroupColumns",
    "open_dataset",
    "open_source",
    "with_target",
    "is_paths",
    "source_kind",
    "ACCEPTED",
    "MEMORY_ROWS",
    "open_parquet",
    "resolve_paths",
    "is_uri",
    "is_numeric",
]
