"""Sample weights: a ``--weight`` column of per-row weights and ``--class-weight`` for the
classification losses, checked once as settings and resolved once from the statistics pass.

The objective is the weighted mean loss ``sum_i w_i l_i / sum_i w_i`` (plus the penalties),
with ``w_i`` the row's weight times its class's weight. A step uses each row's *normalised*
weight ``w_i / mean_w``, ``mean_w`` the mean effective weight over the statistics pass's rows,
so that ``sum_i w_i g_i / (batch rows x mean_w)`` is an unbiased estimate of the objective's
gradient and weights all equal to one change nothing. :class:`Weighting` is saved with the
feature spec; the weight column travels as the last column of the raw matrix (see
:attr:`FeatureSpec.columns`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError, UsageError

__all__ = [
    "Weighting",
    "check_weight_settings",
    "class_weight_pairs",
    "resolve_class_weights",
    "bad_weight",
    "BALANCED",
    "CLASS_WEIGHT_TASKS",
]

BALANCED = "balanced"
# the tasks of the losses --class-weight applies to (logistic, hinge, softmax)
CLASS_WEIGHT_TASKS = ("binary", "margin", "multiclass")
# the labels a binary target's classes go by: its codes, and the booleans' names
_BINARY_NAMES = {"0": 0, "1": 1, "false": 0, "true": 1}


@dataclass(frozen=True, eq=False)
class Weighting:
    """How rows are weighted: the ``column`` of row weights (None: every row weighs 1), the
    ``class_weights`` by target code (None: every class weighs 1), and ``mean``, the mean
    effective weight over the statistics pass's rows, which normalises the weights steps use."""

    column: str | None
    class_weights: np.ndarray | None
    mean: float

    def effective(self, raw: np.ndarray, n_features: int) -> np.ndarray:
        """Each row's normalised weight, ``row weight x class weight / mean``, of a raw matrix
        laid out as :attr:`FeatureSpec.columns` (the target's class codes at ``n_features``,
        the row weights last)."""
        w = (
            raw[:, -1].astype(np.float64)
            if self.column is not None
            else np.ones(len(raw), dtype=np.float64)
        )
        if self.class_weights is not None:
            w *= self.class_weights[raw[:, n_features].astype(np.intp)]
        return w / self.mean

    def to_meta(self) -> dict[str, Any]:
        return {"column": self.column, "mean": self.mean}


def class_weight_pairs(text: str) -> list[tuple[str, float]]:
    """``"a=2,b=1"`` as ``[("a", 2.0), ("b", 1.0)]``: finite weights >= 0, each label once.

    >>> class_weight_pairs("a=2, b = 0.5")
    [('a', 2.0), ('b', 0.5)]
    """
    pairs: list[tuple[str, float]] = []
    for item in text.split(","):
        label, sep, value = item.rpartition("=")
        label = label.strip()
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not sep or not label or not (math.isfinite(weight) and weight >= 0):
            raise UsageError(
                "--class-weight must be 'balanced' or LABEL=WEIGHT pairs with finite weights "
                f">= 0, like 'a=2,b=1'; got {item.strip()!r} in {text!r}"
            )
        if label in (seen := [p[0] for p in pairs]):
            raise UsageError(f"--class-weight names the class {label!r} twice ({seen + [label]})")
        pairs.append((label, weight))
    return pairs


def _as_text(value: Any) -> str | None:
    """A ``class_weight`` setting as its text: ``"balanced"``, ``"a=2,b=1"`` (also from a
    ``{label: weight}`` mapping, the Python API's form), or None."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, Mapping):
        raise UsageError(
            "--class-weight must be 'balanced', LABEL=WEIGHT pairs or a {label: weight} "
            f"mapping, got {value!r}"
        )
    items = []
    for label, weight in value.items():
        text = str(label).lower() if isinstance(label, bool) else str(label)
        if "," in text or not text:
            raise UsageError(f"--class-weight: a class label {label!r} cannot be weighted")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise UsageError(f"--class-weight: the weight of {label!r} must be a number")
        items.append(f"{text}={float(weight)!r}")
    return ",".join(items)


def check_weight_settings(config: Any) -> str | None:
    """Check ``weight`` and ``class_weight`` of a FitConfig; returns ``class_weight`` as text
    (see :func:`_as_text`). The weight column cannot be the target or a feature;
    ``class_weight`` needs a classification loss."""
    weight = config.weight
    if weight is not None:
        if not isinstance(weight, str) or not weight:
            raise UsageError(f"--weight must be a column name, got {weight!r}")
        if weight == config.target:
            raise UsageError(f"--weight {weight!r} is the target; it cannot also be the weight")
        if weight in (config.features or ()) or weight in (config.categorical or ()):
            raise UsageError(f"--weight {weight!r} is a feature; it cannot also be the weight")
    text = _as_text(config.class_weight)
    if text is not None:
        if text.strip() != BALANCED:
            class_weight_pairs(text)
        task = config.make_loss().task
        if task not in CLASS_WEIGHT_TASKS:
            raise UsageError(
                f"--class-weight applies to classification (--loss logistic, hinge, softmax), "
                f"not --loss {config.loss}"
            )
        text = text.strip()
    return text


def _code_of(label: str, classes: Sequence | None) -> int | None:
    """The code of a label given as text: a binary target's 0/1 (or false/true, or a number
    equal to 0 or 1), a multi-class target's label by its text (numbers also by value)."""
    if classes is None:
        key = label.strip().lower()
        if key in _BINARY_NAMES:
            return _BINARY_NAMES[key]
        try:
            number = float(key)
        except ValueError:
            return None
        return int(number) if number in (0.0, 1.0) else None
    for code, c in enumerate(classes):
        if str(c) == label:
            return code
    for code, c in enumerate(classes):
        if not isinstance(c, str):
            try:
                if float(label) == float(c):
                    return code
            except ValueError:
                return None
    return None


def resolve_class_weights(text: str, classes: Sequence | None, totals: np.ndarray) -> np.ndarray:
    """Each class's weight, by code: ``balanced`` gives ``total / (classes x total of the
    class)`` (as scikit-learn; a class the statistics pass did not see weighs 1), pairs give
    their weights (classes not named weigh 1). ``classes``: a multi-class target's labels
    (None: a binary target, codes 0 and 1); ``totals``: each class's (row-weighted) rows in
    the statistics pass. An unknown label is a UsageError naming it and the known ones.

    >>> resolve_class_weights("balanced", None, np.array([30.0, 10.0])).tolist()
    [0.6666666666666666, 2.0]
    >>> resolve_class_weights("1=3", None, np.array([30.0, 10.0])).tolist()
    [1.0, 3.0]
    """
    k = len(totals)
    if text == BALANCED:
        total = float(totals.sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            weights = total / (k * totals)
        return np.where(totals > 0, weights, 1.0)
    weights = np.ones(k)
    for label, weight in class_weight_pairs(text):
        code = _code_of(label, classes)
        if code is None:
            known = "0, 1 (or false, true)" if classes is None else ", ".join(map(str, classes))
            raise UsageError(
                f"--class-weight: unknown class label {label!r}; the target's labels are: {known}"
            )
        weights[code] = weight
    return weights


def bad_weight(w: np.ndarray, column: str, path: str, first_row: int) -> DataError | None:
    """The error naming the first row whose weight is missing, NaN, infinite or negative
    (None when every weight is a finite number >= 0)."""
    with np.errstate(invalid="ignore"):
        if np.isfinite(np.add.reduce(w, dtype=np.float64)) and not (w < 0).any():
            return None
        bad = ~(np.isfinite(w) & (w >= 0))
    if not bad.any():  # only the sum overflowed
        return None
    i = int(np.flatnonzero(bad)[0])
    what = "missing" if np.isnan(w[i]) else f"{w[i]:g}"
    return DataError(
        f"weight {what} is not allowed (expected a finite number >= 0)",
        path=path,
        column=column,
        row=first_row + i + 1,
    )
