"""Decoding: the one place where a piece of a unit (an Arrow table, or a row group read one
column at a time) becomes prepared rows.

Every reader of rows, the prefetcher (training, the statistics pass, evaluation, plots), the
Dask workers and prediction, goes through a :class:`Decoder`, built once from the feature spec,
the loss's target check, the missing/infinite/fill policy and the row selection. Decoding a
piece is three steps, always in this order:

1. converters replace columns by numbers (categorical codes, class codes);
2. :func:`to_matrix` turns the columns into one column-major float matrix (centred on the way
   when the decoder has a ``center``), into a reused buffer when one is given;
3. row preparation (:func:`streamgd.features.rows.preparer`) drops, imputes or rejects rows
   and keeps only the selected ones, returning counts of what it did.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from .columns import ConvertedColumns, as_float, float_array, float_values, to_matrix
from .errors import DataError
from .features.classes import label_encoder
from .features.rows import Prepare, Select, preparer, target_check
from .sources import RowGroupColumns

__all__ = ["to_matrix", "as_float", "float_array", "float_values", "Decoder", "Converter"]

# converter(column, path, first_row) -> a numeric Arrow array replacing the column (labels)
Converter = Callable[[pa.ChunkedArray, str, int], pa.Array]


def _but_last(screen: Callable[[np.ndarray, str, int], np.ndarray] | None):
    """``screen`` applied to every column but the last (the weights, which it does not
    check): the matrix as it was, or with those columns as ``screen`` returned them."""
    if screen is None:
        return None

    def apply(m: np.ndarray, path: str, first_row: int) -> np.ndarray:
        head = m[:, :-1]
        out = screen(head, path, first_row)
        return m if out is head else np.asfortranarray(np.column_stack([out, m[:, -1]]))

    quiet = getattr(screen, "quiet", None)
    if quiet is not None:
        apply.quiet = lambda m: quiet(m[:, :-1])  # type: ignore[attr-defined]
    return apply


@dataclass(frozen=True, eq=False)
class Decoder:
    """How pieces of a unit become prepared rows: which ``columns`` to read (and in which
    order: the matrix's columns), the ``converters`` applied to some of them first, the
    ``center`` subtracted while decoding, the matrix ``dtype``, and the row preparation
    ``prepare(matrix, path, first_row) -> (rows, counts)``.

    Build one with a named constructor (``for_statistics``, ``for_training``, ``for_scoring``,
    ``for_prediction``), once per pass; the constructor is the only place that decides the
    policies, so the trainer, the Dask workers, evaluation and prediction cannot drift apart.
    """

    columns: tuple[str, ...]
    prepare: Prepare
    converters: Mapping[str, Converter] = field(default_factory=dict)
    center: np.ndarray | None = None
    dtype: type = np.float64
    # the --outliers check of each column's raw values (see features.outliers.guard), and the
    # statistics pass's screen of whole raw matrices (see features.outliers.Screen)
    guard: Callable | None = None
    screen: Callable[[np.ndarray, str, int], np.ndarray] | None = None
    # text columns among ``columns`` (see features.text), each ``2 * slots`` matrix columns
    texts: tuple = ()

    @property
    def matrix_width(self) -> int:
        """Columns of the decoded matrix: ``columns``, each text column expanded to its slots."""
        return len(self.columns) + sum(2 * t.slots - 1 for t in self.texts)

    # --interactions: adds the derived columns (products, crosses) to each piece first (see
    # features.interactions.Deriver); the data is read for ``reads``, their sources
    derive: Callable | None = None
    # --cv: prepared rows end with one more column, each row's fold (see streamgd.folds)
    tagged: bool = False

    @property
    def width(self) -> int:
        """Columns of the prepared rows: :attr:`matrix_width`, and the fold when tagged."""
        return self.matrix_width + self.tagged

    @property
    def reads(self) -> list[str]:
        """The data's columns this decoder reads: :attr:`columns`, derived ones replaced by
        the columns they are made of."""
        columns = list(self.columns) if self.derive is None else self.derive.sources(self.columns)
        crosses = {t.name: t.reads for t in self.texts if t.by}  # text x categorical
        return list(dict.fromkeys(c for n in columns for c in crosses.get(n, (n,))))

    @classmethod
    def for_statistics(
        cls,
        names: Sequence[str],
        target: str,
        *,
        loss,
        missing: str,
        infinite: str,
        classes: Sequence | None = None,
        select: Select | None = None,
        screen: Callable[[np.ndarray, str, int], np.ndarray] | None = None,
        weight: str | None = None,
        derive: Callable | None = None,
        dtype: type = np.float64,
    ) -> Decoder:
        """The statistics pass: raw values of the features and the target (and, last, the
        ``weight`` column) in ``dtype`` (float32 only where that is exact: see
        :func:`streamgd.stats_pass.pass_dtype`), missing values left as NaN for the statistics
        to skip (no fill yet), class labels as codes, each matrix passed through ``screen``
        (the outlier check) before row preparation."""
        converters = {} if classes is None else {target: label_encoder(classes, target)}
        prepare = preparer(
            names,
            target,
            missing=missing,
            infinite=infinite,
            fill=None,
            check_target=target_check(loss),
            select=select,
            weight=weight,
        )
        columns = (*names, target) if weight is None else (*names, target, weight)
        screen = screen if weight is None else _but_last(screen)
        return cls(columns, prepare, converters, dtype=dtype, screen=screen, derive=derive)

    @classmethod
    def for_training(
        cls,
        spec,
        *,
        loss,
        select: Select | None = None,
        dtype: type = np.float32,
        notes=None,
        tag: Callable[[str, np.ndarray], np.ndarray] | None = None,
    ) -> Decoder:
        """Training (one process or a Dask worker): the spec's columns, centred while decoding
        into ``dtype`` (the centring in float64 first, so no precision is lost to an offset),
        missing features filled with the centred mean; scaling is left to the step.
        ``notes``: an :class:`~streamgd.features.outliers.OutlierNotes` that records the
        outliers met under ``--outliers warn`` (see :func:`~streamgd.features.outliers.guard`).
        ``tag``: each row's ``--cv`` fold, appended as the last column (:mod:`streamgd.folds`)."""
        prepare = preparer(
            spec.names,
            spec.target,
            missing=spec.missing,
            infinite=spec.infinite,
            fill=(spec.fill - spec.center).astype(dtype),
            check_target=target_check(loss),
            select=select,
            weight=spec.weight_column,
            tag=tag,
        )
        return cls(
            spec.columns,
            prepare,
            spec.converters() or {},
            spec.stream_center(),
            dtype,
            guard=spec.outlier_guard(has_target=True, notes=notes),
            texts=spec.texts,
            derive=spec.deriver,
            tagged=tag is not None,
        )

    @classmethod
    def for_scoring(
        cls,
        model,
        *,
        select: Select | None = None,
        weighted: bool = False,
        tag: Callable[[str, np.ndarray], np.ndarray] | None = None,
    ) -> Decoder:
        """Evaluation (and the plots' loss surface) of a trained ``model``: raw float64 rows
        with the target, the model's own training-time missing/infinite policy and fill;
        ``weighted``: with the model's ``--weight`` column last (the data has it); ``tag``:
        each row's ``--cv`` fold after it (scoring every fold's model in one pass)."""
        spec = model.spec
        weight = spec.weight_column if weighted else None
        prepare = preparer(
            spec.names,
            spec.target,
            missing=spec.missing,
            infinite=spec.infinite,
            fill=spec.fill,
            check_target=target_check(model.make_loss()),
            select=select,
            weight=weight,
            tag=tag,
        )
        return cls(
            spec.input_columns(has_target=True, weight=weight is not None, text=True),
            prepare,
            spec.converters() or {},
            guard=spec.outlier_guard(has_target=True),
            texts=spec.texts,
            derive=spec.deriver,
            tagged=tag is not None,
        )

    @classmethod
    def for_prediction(cls, model) -> Decoder:
        """Prediction: the numeric features only (no target is needed, and categorical codes
        come from :meth:`FeatureSpec.table_codes`). One prediction per input row, so a model
        trained with --missing drop imputes here; only --missing error refuses a missing
        value."""
        spec = model.spec
        prepare = preparer(
            spec.names,
            spec.target,
            missing="error" if spec.missing == "error" else "impute",
            infinite=spec.infinite,
            fill=spec.fill,
            check_target=None,
            has_target=False,
        )
        guard = spec.outlier_guard(has_target=False)
        return cls(spec.names, prepare, guard=guard, derive=spec.deriver)

    def matrix(
        self,
        table: pa.Table | pa.RecordBatch,
        *,
        path: str = "",
        first_row: int = 0,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Steps 1 and 2: the piece's columns, converted, as one matrix (a view of ``out``
        when given, else a new ``dtype`` matrix). ``path`` and ``first_row`` locate errors."""
        m = self._raw_matrix(table, path, first_row, out)
        return m if self.screen is None else self.screen(m, path, first_row)

    def _raw_matrix(
        self,
        table: pa.Table | pa.RecordBatch,
        path: str,
        first_row: int,
        out: np.ndarray | None,
        check: Callable | None = None,
    ) -> np.ndarray:
        """Steps 1 and 2 without the screen; ``check`` replaces the guard's call."""
        names = set(table.schema.names)
        lacking = [name for name in self.reads if name not in names]
        if lacking:  # a column only some files have (see sources.schema.missing_in)
            raise DataError(
                f"this file has no column(s) {', '.join(map(repr, lacking))}, which are used",
                path=path,
            )
        if isinstance(table, RowGroupColumns):  # read one column at a time, as asked
            if self.derive is not None or self.texts:  # made from whole tables
                table = table.read()
            elif self.converters:
                table = ConvertedColumns(table, self.converters, path, first_row)
        if self.derive is not None:
            table = self.derive(table, self.columns)
        raw = table  # (a text x categorical cross reads the values, not their codes)
        for name, convert in self.converters.items():
            if isinstance(table, ConvertedColumns):  # converted as each column is read
                break
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, convert(table.column(name), path, first_row))
        if out is None:
            out = np.empty((table.num_rows, self.matrix_width), dtype=self.dtype, order="F")
        guard = self.guard
        if check is None and guard is not None:
            check = lambda j, v: guard(j, v, path, first_row)  # noqa: E731
        if self.texts:
            return self._with_text(table, raw, out, guard, path, first_row)
        return to_matrix(table, self.columns, out, center=self.center, check=check)

    def _with_text(self, table, raw, out: np.ndarray, guard, path: str, first_row: int):
        """Step 2 with text columns: the other columns by :func:`to_matrix` in runs, each text
        column's slots (bucket indices, then values) from its hashed bag of words (of ``raw``,
        the table before the converters)."""
        texts = {t.name: t for t in self.texts}
        out = out[: table.num_rows]
        j = at = 0  # read column, matrix column
        while j < len(self.columns):
            text = texts.get(self.columns[j])
            if text is not None:
                idx, val = text.encode(raw)
                out[:, at : at + text.slots] = idx
                out[:, at + text.slots : at + 2 * text.slots] = val
                j, at = j + 1, at + 2 * text.slots
                continue
            end = j
            while end < len(self.columns) and self.columns[end] not in texts:
                end += 1
            first = j
            check = (
                None
                if guard is None
                else (lambda k, v, first=first: guard(first + k, v, path, first_row))
            )
            center = None if self.center is None else self.center[j:end]
            to_matrix(
                table, self.columns[j:end], out[:, at : at + end - j], center=center, check=check
            )
            at, j = at + end - j, end
        return out

    def decode(
        self,
        table: pa.Table | pa.RecordBatch,
        path: str,
        first_row: int,
        *,
        out: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """All three steps: the prepared rows of a piece whose first row is ``first_row``
        (0-based, within the file ``path``) and the counts of what preparation did."""
        return self.prepare(
            self.matrix(table, path=path, first_row=first_row, out=out), path, first_row
        )

    @property
    def groupable(self) -> bool:
        """Whether :meth:`decode_units` may decode several pieces as one matrix: no text
        columns or interactions (decoded row by row from the raw table), and a guard and a
        screen, if any, that can tell when a whole group passes them untouched."""
        return (
            not self.texts
            and self.derive is None
            and (self.guard is None or hasattr(self.guard, "quiet"))
            and (self.screen is None or hasattr(self.screen, "quiet"))
        )

    def decode_units(
        self, parts: Sequence[tuple[pa.Table, str, int]], *, out: np.ndarray | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`decode` of each ``(table, path, first_row)`` of ``parts`` (whole small units,
        in the order they are read), the per-column work of steps 1 and 2 done once for each
        run of parts with one schema: their tables concatenated, decoded into one matrix
        (rows of ``out``, one part after another). Each part's rows and counts are those
        :meth:`decode` gives it alone, bit for bit: conversion and centring work value by
        value, and what names a file and row works part by part on the part's rows (the
        guard's and the screen's findings, when the whole group is not quiet for them, row
        preparation always); an error of steps 1-2 is raised by decoding the parts one by one
        again, so that it names the part's file and row. Needs :attr:`groupable`."""
        if out is None:
            rows = sum(t.num_rows for t, _, _ in parts)
            out = np.empty((rows, self.matrix_width), dtype=self.dtype, order="F")
        results, at = [], 0
        for run in _same_schema(parts):
            n = sum(t.num_rows for t, _, _ in run)
            m, screen = self._run_matrix(run, out[at : at + n])
            first = 0
            for table, path, first_row in run:
                view = m[first : first + table.num_rows]
                if screen is not None:
                    screened = screen(view, path, first_row)
                    if screened is not view:
                        view[...] = screened
                results.append(self.prepare(view, path, first_row))
                first += table.num_rows
            at += n
        return results

    def _run_matrix(
        self, run: list[tuple[pa.Table, str, int]], out: np.ndarray
    ) -> tuple[np.ndarray, Callable | None]:
        """Steps 1 and 2 of parts of one schema as one matrix, and the screen its parts must
        still pass one by one (None when the whole matrix is quiet for it)."""
        spans, at = [], 0
        for table, path, first_row in run:
            spans.append((path, first_row, at, at + table.num_rows))
            at += table.num_rows
        # one chunk per column: a column of many small chunks costs one combine each
        table = run[0][0] if len(run) == 1 else pa.concat_tables([t for t, _, _ in run])
        table = table.combine_chunks() if len(run) > 1 else table
        guard = self.guard
        check = None if guard is None else _span_check(guard, spans)
        try:
            m = self._raw_matrix(table, *run[0][1:], out, check)
        except DataError:
            # as the parts alone: the first error in reading order, naming its file and row
            for (part, path, first_row), (_, _, a, b) in zip(run, spans, strict=True):
                self.decode(part, path, first_row, out=out[a:b])
            raise
        screen = self.screen
        if screen is not None and screen.quiet(m):  # type: ignore[attr-defined]
            screen = None
        return m, screen


def _same_schema(parts: Sequence[tuple[pa.Table, str, int]]) -> list[list]:
    """``parts`` cut into runs of consecutive tables of one schema (concatenated as they are:
    no type is widened on the way)."""
    runs: list[list] = []
    for part in parts:
        table = part[0]
        if isinstance(table, pa.RecordBatch):
            part = (pa.Table.from_batches([table]), *part[1:])
        if runs and runs[-1][0][0].schema.equals(part[0].schema):
            runs[-1].append(part)
        else:
            runs.append([part])
    return runs


def _span_check(guard: Callable, spans: list[tuple[str, int, int, int]]):
    """The guard over a group's column: once for the whole column when it is quiet there
    (nothing to clip, refuse or note), else part by part, each naming its own file and row."""

    def check(j: int, values: np.ndarray) -> np.ndarray:
        if guard.quiet(j, values):  # type: ignore[attr-defined]
            return values
        parts, changed = [], False
        for path, first_row, a, b in spans:
            view = values[a:b]
            checked = guard(j, view, path, first_row)
            changed = changed or checked is not view
            parts.append(checked)
        return np.concatenate(parts) if changed else values

    return check
