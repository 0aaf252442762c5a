"""What the estimators hand to the trainer: validated arrays as an in-memory source (``X``'s
columns, the target and the sample weights read slice by slice, never copied whole), and
predictions streamed from files when ``X`` names files."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ..decode import Decoder
from ..model import Model
from ..sources import HandleCache, open_source
from ..sources.memory import NumpyReader

__all__ = ["ArraySource", "column_names", "free_name", "predict_source", "sample_weights"]


class ArraySource(NumpyReader):
    """A numpy ``X`` (columns ``names``), a 1-D target named ``target`` and, when given, a 1-D
    array of sample weights as one more column named ``weight_name``."""

    kind = "numpy array"

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        names: Sequence[str],
        target: str,
        weight: np.ndarray | None = None,
        weight_name: str = "sample_weight",
    ) -> None:
        super().__init__(x, y, "<X>", names=names, target=target)
        self.weight, self.weight_name = weight, weight_name
        if weight is not None:
            self.schema = self.schema.append(pa.field(weight_name, pa.float64()))
            self.nbytes += weight.nbytes

    def read(self, start: int, stop: int, columns: Sequence[str]) -> pa.Table:
        if self.weight is None or self.weight_name not in columns:
            return super().read(start, stop, columns)
        others = [c for c in columns if c != self.weight_name]
        table = super().read(start, stop, others)
        weights = pa.array(self.weight[start:stop], type=pa.float64())
        table = table.append_column(self.weight_name, weights)
        return table.select(list(columns))

    def _digest_slice(self, start: int, stop: int) -> bytes:
        part = super()._digest_slice(start, stop)
        if self.weight is None:
            return part
        return part + np.ascontiguousarray(self.weight[start:stop]).tobytes()


def sample_weights(sample_weight: Any, n: int) -> np.ndarray:
    """``sample_weight`` as n float64 weights (a number: the same weight for every row); a
    ``ValueError`` for another shape or when every weight is zero (whether they are finite
    and >= 0 is the trainer's check, which names the row).

    >>> sample_weights(2, 3).tolist()
    [2.0, 2.0, 2.0]
    """
    weights = np.asarray(sample_weight, dtype=np.float64)
    if weights.ndim == 0:
        weights = np.full(n, float(weights))
    if weights.shape != (n,):
        raise ValueError(
            f"sample_weight.shape == {weights.shape}, expected {(n,)}: one weight per row of X"
        )
    if n and not np.any(weights != 0):
        raise ValueError("every sample_weight is zero: there is nothing to train on")
    return weights


def column_names(feature_names: Any, n: int) -> tuple[str, ...]:
    """Names for ``X``'s ``n`` columns: a DataFrame's column names (scikit-learn's
    ``feature_names_in_``), else ``x0``, ``x1``, ..."""
    if feature_names is not None and len(feature_names) == n:
        return tuple(str(name) for name in feature_names)
    return tuple(f"x{j}" for j in range(n))


def free_name(wanted: str, taken: Sequence[str]) -> str:
    """``wanted``, or ``wanted`` with underscores appended until no column has that name.

    >>> free_name("y", ["x0", "y", "y_"])
    'y__'
    """
    while wanted in taken:
        wanted += "_"
    return wanted


def predict_source(model: Model, source: Any, *, fmt: str = "auto", csv=None) -> np.ndarray:
    """The model's output for every row of ``source`` (files, say), in reading order: the
    prediction (a probability of class 1 for a logistic model), or (rows, classes)
    probabilities for a softmax model. Missing features are filled as in training."""
    dataset = open_source(source, fmt, csv=csv, digest=False)
    decoder = Decoder.for_prediction(model)
    link = model.make_loss().link
    handles = HandleCache()
    inputs = model.spec.read_columns(model.spec.input_columns(has_target=False, text=True))
    parts = []
    for unit in dataset.units:
        path = dataset.files[unit.file].path
        for table, first_row in dataset.iter_unit(unit, inputs, handles):
            x, _ = decoder.decode(table, path, first_row)
            codes, text = model.spec.table_codes(table), model.spec.table_text(table)
            parts.append(link(model.decision(x, codes, text)))
    if not parts:
        width = () if model.classes is None else (len(model.classes),)
        return np.empty((0, *width))
    return np.concatenate(parts)
