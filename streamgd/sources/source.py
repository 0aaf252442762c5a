"""One notion of a source: whatever a user hands to ``fit``, ``evaluate``, ``predict_files`` or
``schema`` becomes a :class:`~streamgd.sources.Dataset`.

Accepted (see :func:`open_source`):

- a path, glob, directory or URI (a ``str`` or ``os.PathLike``: always one path), or a list of
  them: Parquet and CSV files, read unit by unit;
- a pyarrow ``Table`` or ``RecordBatch``, a pandas or polars ``DataFrame``, a numpy ``X`` (with
  ``y``), or a list of such tables: read again for every pass, in slices;
- a ``pyarrow.dataset.Dataset``: its files when it is a Parquet or CSV dataset on a local or
  S3/GCS filesystem, otherwise a stream of its batches, made again for every pass;
- an object that exports an Arrow stream (``__arrow_c_stream__``: a DuckDB relation, ...): a
  stream made again for every pass;
- a callable returning an iterable of batches (a stream made again for every pass), or an
  iterator, generator or ``pyarrow.RecordBatchReader`` (a one-shot stream: one pass).
"""

from __future__ import annotations

import collections.abc
import os
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import UsageError
from .csv_options import CsvOptions
from .dataset import Dataset, SourceFile, memory_units, open_dataset
from .fingerprint import Stamp
from .memory import ArrowReader, MemoryReader, NumpyReader, PandasReader
from .streams import StreamReader

__all__ = ["ACCEPTED", "open_source", "with_target", "is_paths", "source_kind"]

ACCEPTED = (
    "a path, glob, directory or URI (str), a list of them, a pyarrow Table, RecordBatch, "
    "RecordBatchReader or dataset, a pandas or polars DataFrame, a numpy array (X, with y), "
    "an iterator of batches, or a callable returning one"
)
HEAD_ROWS = 250_000  # rows a one-shot stream keeps for the passes before training


def is_paths(source: Any) -> bool:
    """Whether ``source`` names files: a str or PathLike, or a non-empty list of them."""
    if isinstance(source, str | os.PathLike):
        return True
    return (
        isinstance(source, list | tuple)
        and bool(source)
        and all(isinstance(s, str | os.PathLike) for s in source)
    )


def open_source(
    source: Any,
    fmt: str = "auto",
    csv: CsvOptions | None = None,
    *,
    head_rows: int = HEAD_ROWS,
    digest: bool = True,
) -> Dataset:
    """The :class:`Dataset` that reads ``source`` (see the module docstring).

    In-memory data is hashed for the fingerprint (its ``digest``) only with ``digest``: the
    hash is a pass over the data (about 0.5 s per GB), needed only to check a checkpoint's
    data on resume, so a run without checkpoints skips it (``"digest": None``).

    Raises:
        UsageError: for anything else, naming the type received and the types accepted.
    """
    if isinstance(source, Dataset):
        return source
    if is_paths(source):
        paths = [source] if isinstance(source, str | os.PathLike) else list(source)
        return open_dataset([os.fspath(p) for p in paths], fmt, csv=csv)
    files = _paths_of_arrow_dataset(source)
    if files is not None:
        return open_dataset(files, fmt, csv=csv)
    if isinstance(source, list | tuple) and source:
        readers = [_reader(s, f"<{source_kind(s)} {i}>", head_rows) for i, s in enumerate(source)]
    else:
        readers = [_reader(source, f"<{source_kind(source)}>", head_rows)]
    return memory_dataset(readers, digest=digest)


def memory_dataset(readers: list[MemoryReader | StreamReader], *, digest: bool = True) -> Dataset:
    """A dataset of in-memory readers (slices of a known number of rows) and streams, their
    content hashed for the fingerprint with ``digest``."""
    from .schema import unify

    files = []
    for r in readers:
        if isinstance(r, MemoryReader):
            layout = memory_units(r.num_rows)
            stamp = Stamp(r.nbytes, None, r.digest() if digest else "")
            files.append(SourceFile(r.name, "memory", r.nbytes, layout, stamp, reader=r))
        else:
            files.append(
                SourceFile(r.name, "stream", -1, (), Stamp(-1, None, r.digest()), reader=r)
            )
    schema, notes = unify([r.schema for r in readers], [r.name for r in readers])
    return Dataset.of(tuple(files), schema, notes=notes)


def with_target(data: Any, y: Any, target: str | None) -> tuple[Any, str | None]:
    """``data`` with ``y`` as its target column (``fit(X, y)``), and the target's name: ``y``'s
    own name (a pandas Series'), else ``target``, else ``"y"``. Without ``y``, ``data`` as it is."""
    if y is None:
        return data, target
    name = getattr(y, "name", None)
    if not isinstance(name, str):
        name = target or "y"
    elif target is not None and target != name:
        raise UsageError(f"target={target!r} but y is named {name!r}; give one of them")
    values = _labels(y)
    if isinstance(data, np.ndarray):
        return NumpyReader(data, values, "<numpy array>", target=name), name
    table = as_table(data)
    if table is not None:
        if name in table.column_names:
            raise UsageError(f"the target name {name!r} is also a column of X")
        if len(values) != table.num_rows:
            raise UsageError(f"y has {len(values)} values for {table.num_rows} rows of X")
        return table.append_column(name, pa.array(values)), name
    module = type(data).__module__.split(".")[0]
    if module == "pandas" and type(data).__name__ == "DataFrame":
        if name in data.columns:
            raise UsageError(f"the target name {name!r} is also a column of X")
        if len(values) != len(data):
            raise UsageError(f"y has {len(values)} values for {len(data)} rows of X")
        return data.assign(**{name: values}), name
    raise UsageError(
        f"y is given, so X must be a numpy array, a pandas or polars DataFrame or a pyarrow "
        f"Table; got {type(data).__module__}.{type(data).__name__}"
    )


def as_table(data: Any) -> pa.Table | None:
    """A pyarrow Table, RecordBatch or polars DataFrame as a Table (no copy), else None."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if type(data).__module__.split(".")[0] == "polars" and type(data).__name__ == "DataFrame":
        return data.to_arrow()
    return None


def _labels(y: Any) -> np.ndarray:
    values = y.to_numpy() if hasattr(y, "to_numpy") else np.asarray(y)
    if values.ndim != 1:
        raise UsageError(f"y must be 1-D, got shape {values.shape}")
    return values


def _reader(source: Any, name: str, head_rows: int) -> MemoryReader | StreamReader:
    if isinstance(source, MemoryReader):
        return source
    table = as_table(source)
    if table is not None:
        return ArrowReader(table, name)
    module = type(source).__module__.split(".")[0]
    if module == "pandas" and type(source).__name__ == "DataFrame":
        return PandasReader(source, name)
    if isinstance(source, np.ndarray):
        return NumpyReader(source, None, name)
    if _is_arrow_dataset(source):
        return StreamReader(source.to_batches, name, one_shot=False, head_rows=head_rows)
    if isinstance(source, pa.RecordBatchReader):
        return StreamReader(lambda: source, name, one_shot=True, head_rows=head_rows)
    if isinstance(source, collections.abc.Iterator):
        return StreamReader(lambda: source, name, one_shot=True, head_rows=head_rows)
    if hasattr(source, "__arrow_c_stream__"):

        def make():
            return pa.RecordBatchReader.from_stream(source)

        return StreamReader(make, name, one_shot=False, head_rows=head_rows)
    if callable(source) and not isinstance(source, type):
        return StreamReader(source, name, one_shot=False, head_rows=head_rows)
    raise UsageError(
        f"cannot read {type(source).__module__}.{type(source).__name__} as data; "
        f"expected {ACCEPTED}"
    )


def source_kind(source: Any) -> str:
    """What ``source`` is, as named in messages (``pandas.DataFrame``, ``iterator``, ...)."""
    if isinstance(source, pa.Table):
        return "pyarrow.Table"
    if isinstance(source, pa.RecordBatch):
        return "pyarrow.RecordBatch"
    if isinstance(source, pa.RecordBatchReader):
        return "pyarrow.RecordBatchReader"
    if isinstance(source, np.ndarray):
        return "numpy array"
    module = type(source).__module__.split(".")[0]
    if module in ("pandas", "polars"):
        return f"{module}.{type(source).__name__}"
    if isinstance(source, MemoryReader):
        return source.kind
    if isinstance(source, collections.abc.Iterator):
        return "iterator"
    if _is_arrow_dataset(source):
        return "pyarrow.dataset"
    return "callable" if callable(source) else type(source).__name__


def _is_arrow_dataset(source: Any) -> bool:
    if not type(source).__module__.startswith("pyarrow"):
        return False
    import pyarrow.dataset as pads

    return isinstance(source, pads.Dataset)


def _paths_of_arrow_dataset(source: Any) -> list[str] | None:
    """A Parquet or CSV ``pyarrow.dataset`` on a local or S3/GCS filesystem as its files (read
    like any files: with exact resume, fingerprints and Dask); None for anything else."""
    if not _is_arrow_dataset(source):
        return None
    import pyarrow.dataset as pads

    if not isinstance(source, pads.FileSystemDataset):
        return None
    if not isinstance(source.format, pads.ParquetFileFormat | pads.CsvFileFormat):
        return None
    scheme = {"local": "", "s3": "s3://", "gcs": "gs://"}.get(source.filesystem.type_name)
    if scheme is None or not source.files:
        return None
    return [scheme + f for f in source.files]
