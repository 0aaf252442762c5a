"""Scoring files with a trained model: streaming predictions and evaluation in bounded memory.

Both read unit by unit (a row group or a CSV block at a time) and apply the model's own
training-time feature settings: the same columns, imputation values and standardisation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .archive import as_path, atomic_path
from .blas import single_blas_thread
from .config import csv_options_from
from .decode import Decoder, float_array
from .errors import DataError, UsageError
from .features import count_vector, describe_counts
from .metrics import Accumulator
from .model import Model, as_model
from .prefetch import Prefetcher
from .sources import HandleCache, is_numeric, open_source, with_target

__all__ = ["predict_files", "evaluate", "evaluate_model", "check_columns", "check_scored_input"]


def check_columns(
    schema: pa.Schema, names: Sequence[str], path: str, *, what: str, numeric: bool
) -> None:
    """Every named column exists (and is numeric, for features and targets)."""
    missing = [n for n in names if n not in schema.names]
    if missing:
        raise DataError(f"lacks {what} column(s) {', '.join(missing)}", path=path)
    for name in names if numeric else ():
        if not is_numeric(schema.field(name).type):
            raise DataError(
                f"is not numeric (type {schema.field(name).type}), but the model uses it as a "
                f"{what}",
                path=path,
                column=name,
            )


def _check_model_columns(schema: pa.Schema, model: Model, path: str) -> None:
    """The model's numeric features are there and numeric; its categorical ones are there."""
    spec = model.spec  # (the columns that --interactions are made of)
    names = spec.read_columns([c.name for c in spec.categoricals])
    numeric = [n for n in spec.read_columns(model.features) if n not in names]
    check_columns(schema, numeric, path, what="feature", numeric=True)
    check_columns(schema, names, path, what="categorical feature", numeric=False)
    texts = [t.column for t in spec.texts]
    check_columns(schema, texts, path, what="text column", numeric=False)


def check_scored_input(schema: pa.Schema, model: Model, path: str) -> str | None:
    """What scoring ``model`` on data of ``schema`` needs is there (its features, the columns
    its interactions are made of, the target); its ``--weight`` column to weight the metrics
    by, when the data has it."""
    _check_model_columns(schema, model, path)
    multiclass = model.classes is not None
    check_columns(schema, [model.target], path, what="target", numeric=not multiclass)
    return _weight_column(model, schema, path)


def _weight_column(model: Model, schema: pa.Schema, path: str) -> str | None:
    """The model's ``--weight`` column when the evaluated data has it (then the metrics are
    weighted by it), else None."""
    column = model.spec.weight_column
    if column is None or column not in schema.names:
        return None
    check_columns(schema, [column], path, what="weight", numeric=True)
    return column


def predict_files(
    model: Model,
    paths: Any,
    out: str,
    *,
    id_columns: Sequence[str] = (),
    fmt: str = "auto",
    column: str = "prediction",
) -> int:
    """Write one prediction per input row to ``out`` (Parquet, or CSV by extension), keeping
    ``id_columns`` (one name or a list). Rows keep their input order. Returns the number of
    rows written. ``model``: a :class:`Model` or the path of a model file.

    ``paths`` is any source :func:`streamgd.sources.open_source` reads: files (one ``str`` is
    one path) or in-memory data."""
    model, out = as_model(model), as_path(out, "the output")
    output_format(out)  # an extension that says neither format: refused before any work
    id_columns = [id_columns] if isinstance(id_columns, str) else list(id_columns)
    with single_blas_thread():
        return _predict_files(model, paths, out, id_columns, fmt, column)


OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".parq": "parquet", ".pq": "parquet"}


def output_format(out: str) -> str:
    """The format of a prediction file, by its extension: ``csv`` or ``parquet``.

    >>> output_format("pred.CSV")
    'csv'
    >>> output_format("pred.txt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streamgd.errors.UsageError: pred.txt: cannot tell the output format from '.txt'; ...
    """
    ext = os.path.splitext(out)[1].lower()
    if ext not in OUTPUT_FORMATS:
        raise UsageError(
            f"{out}: cannot tell the output format from '{ext or 'no extension'}'; name the "
            "file .parquet (or .parq, .pq) or .csv"
        )
    return OUTPUT_FORMATS[ext]


def _predict_files(
    model: Model, paths: Any, out: str, id_columns: Sequence[str], fmt: str, column: str
) -> int:
    # the per-chunk loop stays inline: a helper per chunk would add Python calls per chunk
    dataset = open_source(paths, fmt, csv=csv_options_from(model.config))
    _check_prediction_columns(dataset.schema, model, id_columns, column, dataset.files[0].path)
    out_format = output_format(out)
    link = model.make_loss().link
    decoder = Decoder.for_prediction(model)  # one prediction per input row
    handles = HandleCache()
    inputs = model.spec.read_columns(model.spec.input_columns(has_target=False, text=True))
    cols = [*inputs, *[c for c in id_columns if c not in inputs]]
    rows = 0
    with atomic_path(out) as tmp:
        writer = None
        try:
            for unit in dataset.units:
                path = dataset.files[unit.file].path
                for table, first_row in dataset.iter_unit(unit, cols, handles):
                    x, _ = decoder.decode(table, path, first_row)
                    codes, text = model.spec.table_codes(table), model.spec.table_text(table)
                    pred = link(model.decision(x, codes, text))
                    ids = {c: table.column(c) for c in id_columns}
                    if model.classes is None:
                        result = pa.table({**ids, column: float_array(pred)})
                    else:  # the most probable label, then each class's probability
                        labels = np.asarray(model.classes, dtype=object)[pred.argmax(axis=1)]
                        probs = {
                            f"proba_{c}": pa.array(pred[:, k]) for k, c in enumerate(model.classes)
                        }
                        result = pa.table({**ids, column: pa.array(labels.tolist()), **probs})
                    if writer is None:
                        writer = _open_writer(tmp, result.schema, out_format)
                    writer.write_table(result)
                    rows += result.num_rows
        finally:
            if writer is not None:
                writer.close()
        if writer is None:  # no rows at all: still write a valid, empty file
            id_types = {c: dataset.schema.field(c).type for c in id_columns}
            _write_empty(tmp, out_format, id_types, column)
    return rows


def _check_prediction_columns(
    schema: pa.Schema, model: Model, id_columns: Sequence[str], column: str, path: str
) -> None:
    _check_model_columns(schema, model, path)
    check_columns(schema, id_columns, path, what="--id", numeric=False)
    if column in id_columns:
        raise UsageError(f"the prediction column {column!r} clashes with an --id column")


def _open_writer(tmp: str, schema: pa.Schema, out_format: str):
    if out_format == "csv":
        return pacsv.CSVWriter(tmp, schema)
    return pq.ParquetWriter(tmp, schema)


def _write_empty(tmp: str, out_format: str, id_types: dict[str, pa.DataType], column: str) -> None:
    """The id columns and a float prediction column, with no rows."""
    empty = pa.table(
        {
            **{c: pa.array([], t) for c, t in id_types.items()},
            column: pa.array([], pa.float64()),
        }
    )
    if out_format == "csv":
        pacsv.write_csv(empty, tmp)
    else:
        pq.write_table(empty, tmp)


def evaluate(model: Model, data: Any, y: Any = None, *, fmt: str = "auto") -> dict[str, Any]:
    """Metrics of ``model`` (a :class:`Model` or the path of a model file) on labelled data;
    rows whose target is null are skipped and counted (``skipped_null_target``), missing
    features imputed as in training. A model trained with ``--weight`` weighs the rows by that
    column when the data has it (the result then names it, ``weighted_by``, and gives
    ``total_weight``); class weights are a training device and do not weigh the metrics.

    ``data`` is any source :func:`streamgd.sources.open_source` reads: files (one ``str`` is
    one path, a list several), a pyarrow Table, a pandas or polars DataFrame, a numpy ``X``
    with ``y``, an iterator of batches, ...; with ``y``, the target column is ``y``."""
    model = as_model(model)
    data, _ = with_target(data, y, None if y is None else model.target)
    with single_blas_thread():
        return _evaluate(model, data, fmt)


def evaluate_model(model: Model, paths: Any, *, fmt: str = "auto", select=None) -> dict[str, Any]:
    """:func:`evaluate` for callers that already limit BLAS threads (the trainer); ``select``
    keeps only some rows (the holdout split, see holdout.selector)."""
    return _evaluate(model, paths, fmt, select)


def _evaluate(model: Model, paths: Any, fmt: str, select=None) -> dict[str, Any]:
    dataset = open_source(paths, fmt, csv=csv_options_from(model.config))
    first = dataset.files[0].path
    weight = check_scored_input(dataset.schema, model, first)
    loss = model.make_loss()
    acc = Accumulator(loss.task)
    n_feat = len(model.features)
    counts = count_vector(n_feat)
    loss_sum = 0.0
    prefetch = Prefetcher(
        dataset,
        range(len(dataset.units)),
        Decoder.for_scoring(model, select=select, weighted=weight is not None),
    )
    try:
        for chunk in prefetch:
            counts += chunk.counts
            raw = chunk.rows
            if len(raw) == 0:
                continue
            y = raw[:, n_feat]
            p = model.decision(raw[:, :n_feat], model.spec.codes(raw), model.spec.text(raw))
            values = loss.value(p, y)
            w = None if weight is None else raw[:, -1]
            loss_sum += float(values.sum() if w is None else w @ values)
            acc.update(y, loss.link(p), w)
            prefetch.release(chunk)
    finally:
        prefetch.close()
    total = max(acc.n, 1) if acc.total is None else (acc.total or 1.0)
    result: dict[str, Any] = {"rows": acc.n, **acc.result(), "loss": loss_sum / total}
    if weight is not None:  # said in the output: these metrics are weighted
        result["weighted_by"] = weight
        result["total_weight"] = float(acc.total or 0.0)
    result |= describe_counts(counts, model.features, model.spec.missing)
    result["files"] = len(dataset.files)
    return result
