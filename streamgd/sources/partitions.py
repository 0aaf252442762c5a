"""Hive partitions: ``key=value`` directories above a file become constant columns of its rows.

A dataset laid out as ``data/region=eu/year=2024/part-0.parquet`` has the columns ``region``
and ``year`` although no file holds them. A file's partition directories are the run of
``key=value`` directories directly above it (``data/`` ends the run), whichever way the file
was named: in a directory, by a glob, on its own, or by a URI. pyarrow's own hive partitioning
infers the types from all the files' directories at once (int32 when every value is an
integer that fits, else string; ``__HIVE_DEFAULT_PARTITION__`` is null) and parses each
file's values (percent-encoded, as writers encode them); a file without a key has null there,
as in ``pyarrow.dataset``. The values come from the paths alone, so they cost no I/O, and the
fingerprint of the input (which holds every path) already covers them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ..errors import DataError

__all__ = [
    "Partitions",
    "NO_PARTITIONS",
    "discover_partitions",
    "parse_partitions",
    "partition_dirs",
]

_BASE = "/"  # the common root of the stand-in paths pyarrow infers and parses from
_FILE = "f"  # the stand-in file name: pyarrow ignores a path's last component


@dataclass(frozen=True)
class Partitions:
    """The partition columns of a dataset (``schema``; empty when none) and each file's values
    (``values[file]``, in schema order, None for null)."""

    schema: pa.Schema
    values: tuple[tuple[Any, ...], ...]

    @property
    def names(self) -> list[str]:
        return self.schema.names

    def of(self, file: int) -> tuple[Any, ...]:
        """File ``file``'s values, in schema order (empty without partitions)."""
        return self.values[file] if self.values else ()

    def add_columns(
        self, table: pa.Table | pa.RecordBatch, file: int, columns: Sequence[str]
    ) -> pa.Table | pa.RecordBatch:
        """``table`` (a piece of file ``file``) with the partition columns among ``columns``
        added as constants, and its columns in the order of ``columns``.

        >>> parts = Partitions(pa.schema([("year", pa.int32())]), ((2024,),))
        >>> parts.add_columns(pa.table({"x": [1.0, 2.0]}), 0, ["year", "x"]).to_pydict()
        {'year': [2024, 2024], 'x': [1.0, 2.0]}
        """
        n = table.num_rows
        for f, value in zip(self.schema, self.of(file), strict=True):
            if f.name in columns:
                table = table.append_column(f, pa.repeat(pa.scalar(value, f.type), n))
        return table.select(list(columns))


NO_PARTITIONS = Partitions(pa.schema([]), ())


def partition_dirs(parts: Sequence[str]) -> list[str]:
    """The ``key=value`` directories directly above the file that path components ``parts``
    end with (the file name last).

    >>> partition_dirs(["data", "region=eu", "year=2024", "part-0.parquet"])
    ['region=eu', 'year=2024']
    >>> partition_dirs(["x=1", "data", "part-0.parquet"])
    []
    """
    dirs = list(parts[:-1])
    k = len(dirs)
    while k > 0 and dirs[k - 1].partition("=")[0] and "=" in dirs[k - 1]:
        k -= 1
    return dirs[k:]


def discover_partitions(paths: Sequence[str], dirs: Sequence[Sequence[str]]) -> Partitions:
    """The partitions of files ``paths`` whose partition directories are ``dirs``
    (:func:`partition_dirs`), typed once over all of them; :data:`NO_PARTITIONS` when no file
    has any. A value that does not parse as its column's type is an error naming the file."""
    if not any(dirs):
        return NO_PARTITIONS
    import pyarrow.dataset as ds  # only for datasets that have partitions
    import pyarrow.fs as pafs

    stand_ins = [_stand_in(parts) for parts in dirs]
    options = ds.FileSystemFactoryOptions(partition_base_dir=_BASE)
    options.partitioning_factory = ds.HivePartitioning.discover()
    # fragments=0: the types come from the paths alone; no file is opened (they do not exist)
    factory = ds.FileSystemDatasetFactory(
        pafs.LocalFileSystem(), stand_ins, ds.ParquetFileFormat(), options
    )
    schema = factory.inspect(fragments=0)
    return Partitions(schema, parse_partitions(schema, paths, dirs))


def parse_partitions(
    schema: pa.Schema, paths: Sequence[str], dirs: Sequence[Sequence[str]]
) -> tuple[tuple[Any, ...], ...]:
    """Each file's values of the partition columns ``schema`` (None for a key it lacks, or a
    null value); a value that does not parse as its column's type is an error naming the file.
    """
    import pyarrow.dataset as ds

    hive = ds.HivePartitioning(schema)
    values = []
    for path, parts in zip(paths, dirs, strict=True):
        try:
            keys = ds.get_partition_keys(hive.parse(_stand_in(parts)))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            message = str(exc).strip().splitlines()[0]
            raise DataError(
                f"cannot read the hive partition directories {'/'.join(parts)} ({message})",
                path=path,
            ) from None
        values.append(tuple(keys.get(name) for name in schema.names))
    return tuple(values)


def _stand_in(dirs: Sequence[str]) -> str:
    """What pyarrow reads a file's partitions from: ``/region=eu/year=2024/f``."""
    return _BASE + "".join(d + "/" for d in dirs) + _FILE
