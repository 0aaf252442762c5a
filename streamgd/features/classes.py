"""Class labels of a multi-class target: the scan that finds them, and the converter that
turns them into class codes while decoding."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa  # (pyarrow.compute where used: 7 MiB a numeric fit never needs)

from ..errors import DataError
from ..sources import Dataset, HandleCache

__all__ = ["MAX_CLASSES", "scan_classes", "label_encoder"]

MAX_CLASSES = 1000


def scan_classes(dataset: Dataset, target: str, *, max_rows: int = 0) -> tuple[tuple, np.ndarray]:
    """The distinct non-null labels of the target column and their counts, by one pass over
    that column alone (bounded memory: one row group or CSV block at a time), or over its
    first ``max_rows`` rows (a one-shot stream's first rows, which are all it can give twice).
    Labels are sorted; numbers that are whole become ints."""
    import pyarrow.compute as pc

    counts: dict = {}
    handles = HandleCache()
    seen = 0
    for unit in dataset.units:
        for table, _ in dataset.iter_unit(unit, [target], handles):
            seen += table.num_rows
            col = table.column(target)
            if pa.types.is_dictionary(col.type):
                col = col.cast(col.type.value_type)
            for item in pc.value_counts(col.drop_null()).to_pylist():
                counts[item["values"]] = counts.get(item["values"], 0) + item["counts"]
            if len(counts) > MAX_CLASSES:
                raise DataError(
                    f"more than {MAX_CLASSES} distinct values: not a class label for "
                    "--loss softmax",
                    path=dataset.files[unit.file].path,
                    column=target,
                )
            if max_rows and seen >= max_rows:
                break
    if len(counts) < 2:
        raise DataError(
            f"--loss softmax needs at least 2 classes, found {len(counts)}",
            path=dataset.files[0].path,
            column=target,
        )
    labels = sorted(counts, key=lambda v: (isinstance(v, str), v))
    frequencies = np.array([counts[v] for v in labels], dtype=np.int64)
    whole = [int(v) if isinstance(v, float) and v.is_integer() else v for v in labels]
    return tuple(whole), frequencies


def label_encoder(classes: Sequence, target: str):
    """A converter ``(column, path, first_row) -> float64 codes`` (NaN where null) for the
    prefetcher; a label outside ``classes`` is an error naming its row."""
    numeric = all(not isinstance(c, str) for c in classes)
    value_set = pa.array([float(c) for c in classes] if numeric else [str(c) for c in classes])

    def encode(col: pa.ChunkedArray, path: str, first_row: int) -> pa.Array:
        import pyarrow.compute as pc

        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        col = col.cast(pa.float64()) if numeric else col.cast(pa.string())
        codes = pc.index_in(col, value_set=value_set)
        unknown = pc.and_(pc.is_valid(col), pc.is_null(codes))
        if pc.any(unknown).as_py():
            i = pc.index(unknown, True).as_py()
            raise DataError(
                f"class {col[i].as_py()!r} was not among the training classes "
                f"({', '.join(map(str, classes[:10]))}{', ...' if len(classes) > 10 else ''})",
                path=path,
                column=target,
                row=first_row + i + 1,
            )
        return codes.cast(pa.float64())

    return encode
