"""What the regressor and the classifier share: parameters to a :class:`FitConfig`, ``fit``
and ``partial_fit`` over arrays or files, and streamgd's errors as the ``ValueError``
scikit-learn expects."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted, validate_data

from ..config import CONFIG_SETTINGS, FitConfig, RunOptions
from ..errors import DataError, UsageError
from ..features.select import resolve_target
from ..model import Model
from ..sources import is_paths
from ..training import train
from ..training.callbacks import CallbackList, api_callbacks
from ..training.continuation import continue_state, open_for, start_state
from ..training.loop import model_from_state
from ..training.state import TrainState
from .data import ArraySource, column_names, free_name, predict_source, sample_weights
from .params import FILE_SETTINGS

__all__ = ["StreamGDEstimator", "ParameterError", "InputError", "Prepared"]

# settings a partial_fit cannot change between calls: they shape the state it continues
FIXED_BY_STATE = (
    "loss",
    "huber_delta",
    "quantile",
    "solver",
    "optimizer",
    "standardize",
    "class_weight",
)


class ParameterError(UsageError, ValueError):
    """A parameter has a value streamgd does not allow: a :class:`UsageError` that is also
    the ``ValueError`` scikit-learn's conventions expect from ``fit``."""


class InputError(DataError, ValueError):
    """The data cannot be trained on (a label the loss cannot take, ...): a
    :class:`DataError` that is also a ``ValueError``."""


@contextlib.contextmanager
def value_errors() -> Iterator[None]:
    """streamgd's usage and data errors raised as :class:`ParameterError` and
    :class:`InputError` (same message)."""
    try:
        yield
    except (ParameterError, InputError):
        raise
    except UsageError as exc:
        raise ParameterError(str(exc)) from exc
    except DataError as exc:
        raise InputError(str(exc)) from exc


@dataclasses.dataclass
class Prepared:
    """Training data made ready by a subclass: the target values, the loss to use, and for a
    softmax loss the class codes and their counts (``start_state``'s ``classes``)."""

    y: np.ndarray
    loss: str
    classes: tuple[tuple, np.ndarray] | None = None
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. class weights


class StreamGDEstimator(BaseEstimator):
    """The shared machinery (not an estimator by itself)."""

    _regressor = True  # whether y must be numeric

    # -- what subclasses define -----------------------------------------------------------
    def _prepare_y(self, y: np.ndarray, *, first: bool, classes: Any = None) -> Prepared:
        raise NotImplementedError

    def _prepare_files(self, dataset: Any, config: FitConfig) -> str:
        """The loss for training on files (and the subclass's learned labels)."""
        raise NotImplementedError

    def _finish(self, model: Model) -> Model:
        """The fitted model as ``model_`` shows it (a classifier's labels)."""
        return model

    # -- settings -------------------------------------------------------------------------
    def _settings(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.get_params(deep=False)}

    def _config(self, *, files: bool, **overrides: Any) -> FitConfig:
        settings = self._settings()
        if not files:
            given = [
                n
                for n in sorted(FILE_SETTINGS & set(settings))
                if settings[n] != CONFIG_SETTINGS[n].default
            ]
            if given:
                raise ParameterError(
                    f"{', '.join(given)}: these settings describe files; with an array or "
                    "DataFrame X, X's columns, y and sample_weight stand for them (leave them "
                    "at their defaults, or pass X as a list of files)"
                )
        settings.update(overrides)
        with value_errors():
            return FitConfig(**settings)

    def _hooks(self) -> list:
        return api_callbacks((), verbose=False, quiet=False)

    # -- fitting --------------------------------------------------------------------------
    def _fit(self, x: Any, y: Any, sample_weight: Any) -> StreamGDEstimator:
        self._forget()
        if is_paths(x):
            return self._fit_files(x, y, sample_weight)
        source, config, prepared = self._arrays(x, y, sample_weight, first=True)
        with value_errors():
            result = train(source, config, RunOptions(), callbacks=self._hooks())
        self._keep(result.state, config, passes=len(result.state.history))
        return self

    def _partial_fit(self, x: Any, y: Any, sample_weight: Any, classes: Any) -> StreamGDEstimator:
        first = not hasattr(self, "state_")
        if is_paths(x):
            raise ParameterError(
                "partial_fit takes the rows to learn from as an array or DataFrame; to learn "
                "from files, use fit (it streams them)"
            )
        if getattr(self, "fitted_on_files_", False):
            raise ParameterError(
                "this estimator was fitted on files, whose columns and labels partial_fit "
                "cannot continue from arrays: fit it on arrays, or fit again on the files"
            )
        if self.solver != "sgd":
            raise ParameterError(
                f"partial_fit takes gradient steps: solver must be 'sgd', got {self.solver!r}"
            )
        if not first:
            sample_weight = self._weights_as_before(sample_weight)
        source, config, prepared = self._arrays(x, y, sample_weight, first=first, classes=classes)
        hooks = self._hooks()
        with value_errors():
            if first:
                state = start_state(source, config, classes=prepared.classes, callbacks=hooks)
            else:
                state = self.state_
                self._check_unchanged(config)
            continue_state(state, source, config, callbacks=hooks)
        self._keep(state, config, passes=1)
        return self

    def _arrays(
        self, x: Any, y: Any, sample_weight: Any, *, first: bool, classes: Any = None
    ) -> tuple[ArraySource, FitConfig, Prepared]:
        """Validated ``X``, ``y`` and ``sample_weight`` as a source, and the config."""
        x, y = validate_data(
            self,
            x,
            y,
            reset=first,
            dtype=[np.float64, np.float32],
            y_numeric=self._regressor,
            ensure_min_samples=2,
        )
        prepared = self._prepare_y(y, first=first, classes=classes)
        names = column_names(getattr(self, "feature_names_in_", None), x.shape[1])
        target = free_name("y", names)
        overrides: dict[str, Any] = {"target": target, "loss": prepared.loss, **prepared.settings}
        weight = None
        if sample_weight is not None:
            weight = sample_weights(sample_weight, len(x))
            overrides["weight"] = free_name("sample_weight", (*names, target))
        source = ArraySource(
            x,
            prepared.y,
            names=names,
            target=target,
            weight=weight,
            weight_name=overrides.get("weight", "sample_weight"),
        )
        return source, self._config(files=False, **overrides), prepared

    def _fit_files(self, paths: Any, y: Any, sample_weight: Any) -> StreamGDEstimator:
        if y is not None or sample_weight is not None:
            raise ParameterError(
                "X names files, so the target and the weights are columns of the files: give "
                "target= (and weight=) and pass y=None, sample_weight=None"
            )
        # a classifier's loss is decided by the labels the files hold (_prepare_files)
        config = self._config(files=True, loss=self.loss or "softmax")
        hooks = self._hooks()
        self.fitted_on_files_ = True
        with value_errors():
            dataset = open_for(paths, config)
            config = resolve_target(config, dataset.schema, warn=CallbackList(hooks).on_warning)
            config = dataclasses.replace(config, loss=self._prepare_files(dataset, config))
            result = train(dataset, config, RunOptions(), callbacks=hooks)
        self._keep(result.state, config, passes=len(result.state.history))
        self.n_features_in_ = self.model_.n_features_in_
        self.feature_names_in_ = self.model_.feature_names_in_
        return self

    def _weights_as_before(self, sample_weight: Any) -> Any:
        """Whether rows are weighted is decided by the first partial_fit (the weights are
        normalised by its rows' mean weight): later calls without weights weigh rows 1."""
        weighted = self.state_.spec.weight_column is not None
        if weighted and sample_weight is None:
            return 1.0
        if not weighted and sample_weight is not None:
            raise ParameterError(
                "sample_weight was not given to the first partial_fit, which decides whether "
                "rows are weighted: give it there too (np.ones for rows that weigh 1), or fit"
            )
        return sample_weight

    def _check_unchanged(self, config: FitConfig) -> None:
        saved = self.state_.config
        changed = [k for k in FIXED_BY_STATE if saved.get(k) != getattr(config, k)]
        if changed:
            raise ParameterError(
                f"{', '.join(changed)} changed since the first partial_fit; they shape the "
                "state it continues: call fit to start afresh"
            )

    def _forget(self) -> None:
        for name in ("state_", "fitted_on_files_", "n_features_in_", "feature_names_in_"):
            self.__dict__.pop(name, None)

    def _keep(self, state: TrainState, config: FitConfig, *, passes: int) -> None:
        self.state_ = state
        self.model_ = self._finish(model_from_state(state, config))
        self.n_iter_ = passes
        self.coef_ = self.model_.coef_
        self.intercept_ = self.model_.intercept_

    # -- predicting -----------------------------------------------------------------------
    def _output(self, x: Any) -> np.ndarray:
        """The model's linear output (``decision``, in target units) for array input, or
        its prediction (after the link) for files."""
        check_is_fitted(self, "model_")
        if is_paths(x):
            model = self.model_
            with value_errors():
                return predict_source(
                    model, x, fmt=model.config.get("format", "auto"), csv=_csv(model)
                )
        x = validate_data(self, x, reset=False, dtype=[np.float64, np.float32])
        with value_errors():
            if self.model_.spec.deriver is not None:  # --interactions: from X's columns
                return _derived_decision(self.model_, np.asarray(x, dtype=np.float64))
            return self.model_.decision(np.asarray(x, dtype=np.float64))

    def _score_files(self, x: Any, metric: str) -> float:
        from ..scoring import evaluate

        with value_errors():
            return float(evaluate(self.model_, x)[metric])


def _csv(model: Model):
    from ..config import csv_options_from

    return csv_options_from(model.config)


def _derived_decision(model, x: np.ndarray) -> np.ndarray:
    """The linear output for array rows of the model's input columns
    (:attr:`Model.feature_names_in_`), with the interactions derived from them."""
    import pyarrow as pa

    from ..decode import Decoder

    names = model.feature_names_in_
    table = pa.table({str(n): x[:, j] for j, n in enumerate(names)})
    rows = Decoder.for_prediction(model).decode(table, "<array>", 0)[0]
    return model.decision(rows, model.spec.table_codes(table))
