"""scikit-learn estimators over streamgd's trainer: :class:`StreamGDRegressor` and
:class:`StreamGDClassifier`."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets, unique_labels

from ..config import FitConfig
from ..features import scan_classes
from ..features.weights import class_weight_pairs
from ..losses import get_loss
from ..model import Model
from ..sources import is_paths
from .base import ParameterError, Prepared, StreamGDEstimator, value_errors
from .params import estimator_settings, make_init, params_doc

__all__ = ["StreamGDRegressor", "StreamGDClassifier"]

_FILES_HELP = """
``X`` is an array or DataFrame (with ``y``), or files: a path or a list of paths (Parquet, CSV;
globs and directories too) whose columns hold the features and the target (``target=``,
``y=None``), streamed without being loaded; ``predict`` and ``score`` take files too, and in a
``GridSearchCV`` a list of files is split into folds of whole files.
"""


def _pairs(mapping: Any) -> list[tuple[Any, Any]]:
    if not isinstance(mapping, dict):
        raise ParameterError(
            f"class_weight must be 'balanced', a {{label: weight}} dict or 'label=weight,...' "
            f"text, got {mapping!r}"
        )
    return list(mapping.items())


def _loss(name: str) -> Any:
    with value_errors():
        return get_loss(name)


class StreamGDRegressor(RegressorMixin, StreamGDEstimator):
    _defaults = estimator_settings(exclude={"class_weight"})
    __init__ = make_init(_defaults)

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> StreamGDRegressor:
        """Train afresh on ``X`` and ``y`` for ``epochs`` passes (or on files, ``y=None``)."""
        return self._fit(X, y, sample_weight)

    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> StreamGDRegressor:
        """One pass over these rows, continuing from the previous call (the first call also
        fixes the feature statistics)."""
        return self._partial_fit(X, y, sample_weight, None)

    def predict(self, X: Any) -> np.ndarray:
        out = self._output(X)
        return out if is_paths(X) else self.model_.make_loss().link(out)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """R^2 of the predictions (on files: of their target column, streamed)."""
        if is_paths(X) and y is None:
            return self._score_files(X, "r2")
        return super().score(X, y, sample_weight=sample_weight)

    def _prepare_y(self, y: np.ndarray, *, first: bool, classes: Any = None) -> Prepared:
        if _loss(self.loss).task != "regression":
            raise ParameterError(
                f"loss={self.loss!r} is a classification loss: use StreamGDClassifier"
            )
        return Prepared(y, self.loss)

    def _prepare_files(self, dataset: Any, config: FitConfig) -> str:
        return self._prepare_y(np.empty(0), first=True).loss


class StreamGDClassifier(ClassifierMixin, StreamGDEstimator):
    _regressor = False
    _defaults = {**estimator_settings(), "loss": None}
    __init__ = make_init(_defaults)

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> StreamGDClassifier:
        """Train afresh on ``X`` and ``y`` for ``epochs`` passes (or on files, ``y=None``)."""
        self.__dict__.pop("classes_", None)
        return self._fit(X, y, sample_weight)

    def partial_fit(
        self, X: Any, y: Any, classes: Any = None, sample_weight: Any = None
    ) -> StreamGDClassifier:
        """One pass over these rows, continuing from the previous call; the first call names
        every class in ``classes`` (and fixes the feature statistics)."""
        if not hasattr(self, "state_"):
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            self.__dict__.pop("classes_", None)
        return self._partial_fit(X, y, sample_weight, classes)

    # -- outputs ------------------------------------------------------------------------------
    def decision_function(self, X: Any) -> np.ndarray:
        """The linear output: (rows,) for two classes (positive: ``classes_[1]``), (rows,
        classes) for more."""
        if is_paths(X):
            raise ParameterError("decision_function takes an array or DataFrame, not files")
        out = self._output(X)
        if out.ndim == 2 and out.shape[1] == 2:
            return out[:, 1] - out[:, 0]
        return out

    def _probabilistic(self) -> bool:
        loss = getattr(self, "model_", None)
        name = loss.loss if loss is not None else (self.loss or "logistic")
        return name in ("logistic", "softmax")

    @available_if(_probabilistic)
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, (rows, classes) in ``classes_`` order."""
        out = self._output(X)
        if not is_paths(X):
            out = self.model_.make_loss().link(out)
        return out if out.ndim == 2 else np.column_stack([1.0 - out, out])

    @available_if(_probabilistic)
    def predict_log_proba(self, X: Any) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        out = self._output(X)
        if out.ndim == 2:
            return self.classes_[out.argmax(axis=1)]
        threshold = 0.5 if is_paths(X) and self.model_.loss == "logistic" else 0.0
        return self.classes_[(out > threshold).astype(int)]

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Accuracy (on files: against their target column, streamed)."""
        if is_paths(X) and y is None:
            return self._score_files(X, "accuracy")
        return super().score(X, y, sample_weight=sample_weight)

    # -- labels -------------------------------------------------------------------------------
    def _prepare_y(self, y: np.ndarray, *, first: bool, classes: Any = None) -> Prepared:
        check_classification_targets(y)
        if first:
            self.classes_ = unique_labels(y) if classes is None else unique_labels(classes)
        elif classes is not None and not np.array_equal(unique_labels(classes), self.classes_):
            raise ValueError(
                f"classes={unique_labels(classes)!r} is not the same as on the first call to "
                f"partial_fit, was: {self.classes_!r}"
            )
        known = np.isin(y, self.classes_)
        if not known.all():
            raise ValueError(
                f"y holds labels not in classes: {np.unique(y[~known])[:10].tolist()} "
                f"(classes: {self.classes_.tolist()})"
            )
        n = len(self.classes_)
        if n < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the data, but the "
                f"data contains only one class: {self.classes_[0]!r}"
            )
        loss = self._choose_loss(n)
        codes = np.searchsorted(self.classes_, y)
        counts = None
        if loss == "softmax":  # every class, also those these rows lack (counted as one row)
            counts = (tuple(range(n)), np.maximum(np.bincount(codes, minlength=n), 1))
        weights = {"class_weight": self._class_weight_codes()}
        return Prepared(codes.astype(np.float64), loss, counts, weights)

    def _class_weight_codes(self) -> Any:
        """``class_weight`` keyed by class code (the labels train as codes): a
        ``{label: weight}`` mapping or ``"label=weight,..."`` text; ``"balanced"`` as it is."""
        given = self.class_weight
        if given is None or (isinstance(given, str) and given == "balanced"):
            return given
        with value_errors():
            pairs = class_weight_pairs(given) if isinstance(given, str) else _pairs(given)
        names = [str(label) for label in self.classes_.tolist()]
        codes = {}
        for label, weight in pairs:
            if str(label) not in names:
                raise ParameterError(
                    f"class_weight names {label!r}, which is not a class (classes: "
                    f"{', '.join(names[:10])})"
                )
            codes[names.index(str(label))] = weight
        return codes

    def _choose_loss(self, n_classes: int) -> str:
        """The loss: as given, else logistic for two classes and softmax for more."""
        name = self.loss or ("logistic" if n_classes == 2 else "softmax")
        task = _loss(name).task
        if task == "regression":
            raise ParameterError(
                f"loss={name!r} is a regression loss; StreamGDClassifier takes logistic, "
                "hinge (two classes) or softmax"
            )
        if n_classes > 2 and task != "multiclass":
            raise ParameterError(
                f"loss={name!r} separates two classes and y has {n_classes}: use "
                "loss='softmax' (the default for more than two classes)"
            )
        return name

    def _prepare_files(self, dataset: Any, config: FitConfig) -> str:
        """Files hold the labels themselves: 0/1 labels train a logistic model (unless
        ``loss`` says otherwise), any others softmax over the labels found."""
        with value_errors():
            labels, _ = scan_classes(dataset, config.target)
        self.classes_ = np.array(labels)
        binary = set(labels) == {0, 1}
        if self.loss is None:
            return "logistic" if binary else "softmax"
        name = self._choose_loss(len(labels))
        if _loss(name).task != "multiclass" and not binary:
            raise ParameterError(
                f"loss={name!r} reads the files' target as 0/1, and it holds "
                f"{', '.join(map(repr, labels[:5]))}: use loss='softmax' (the default)"
            )
        return name

    def _finish(self, model: Model) -> Model:
        """A softmax model trained on class codes predicts the labels themselves."""
        if model.classes is None or getattr(self, "fitted_on_files_", False):
            return model
        labels = tuple(self.classes_.tolist())
        return dataclasses.replace(model, spec=dataclasses.replace(model.spec, classes=labels))


for _cls, _what in (
    (StreamGDRegressor, "A linear regressor"),
    (StreamGDClassifier, "A linear classifier (two classes or more, labels of any kind)"),
):
    _cls.__doc__ = (
        f"{_what} trained by streamgd's streaming mini-batch gradient descent.\n"
        + _FILES_HELP
        + "\nThe parameters are streamgd's settings (``streamgd fit --help``).\n\n"
        + params_doc(
            _cls._defaults,
            {"loss": "logistic (default for two classes), hinge or softmax (default for more)."}
            if _cls is StreamGDClassifier
            else None,
        )
    )
