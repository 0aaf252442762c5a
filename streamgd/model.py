"""A trained linear model: predicts, evaluates, explains itself, and saves without pickle.

Weights live in standardised units (``z = (x - center) / scale``); :meth:`Model.coefficients`
reports them in the features' original units.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from .archive import read_archive, write_archive
from .decode import Decoder
from .errors import CheckpointError, DataError, UsageError
from .features import OTHER, FeatureSpec
from .sources import MEMORY_ROWS, is_numeric, is_paths, open_source
from .sources.streams import as_arrow
from .spec_archive import spec_arrays, spec_from, spec_meta

PREDICT_ROWS = MEMORY_ROWS  # rows scored at once by Model.predict

__all__ = ["Model", "load", "as_model"]

# 2: categorical code weights and the infinite policy. A model without either is still written
# as version 1, so that older streamgd versions keep reading it; they refuse a version 2 file
# rather than predict without its categorical weights. 3: --interactions (only then). 4: --text
# columns (only then: a version 3 reader would not know the text buckets' weights).
MODEL_VERSION = 4


@dataclass
class Model:
    """A linear model ``link(z @ weights + intercept)`` over standardised features.

    For a multi-class (softmax) model ``weights`` is (features, classes) and ``intercept`` one
    per class; :attr:`classes` holds the labels.
    """

    spec: FeatureSpec
    loss: str
    weights: np.ndarray  # standardised units
    intercept: float | np.ndarray
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    # the recorded weight trajectory: rows of [step, weights..., intercept] (--record-path)
    trajectory: np.ndarray | None = None
    code_weights: np.ndarray | None = None  # one per categorical code (spec.categoricals)

    @property
    def features(self) -> tuple[str, ...]:
        return self.spec.names

    @property
    def target(self) -> str:
        return self.spec.target

    @property
    def classes(self) -> tuple | None:
        return self.spec.classes

    # -- scikit-learn style accessors (original units, like coefficients()) ------------------
    @property
    def coef_(self) -> np.ndarray:
        """The coefficients in original units: shape (n,) for a regression or logistic model,
        (n_classes, n) for softmax; n is the numeric features in :attr:`features` order, then
        one entry per categorical code (named as in :meth:`coefficients`)."""
        coef, _ = self.coefficients()
        if self.classes is None:
            return np.array(list(coef.values()), dtype=np.float64)
        return np.array([list(per.values()) for per in coef.values()], dtype=np.float64)

    @property
    def intercept_(self) -> float | np.ndarray:
        """The intercept in original units: a float, or (n_classes,) for softmax."""
        _, b = self.coefficients()
        return b if self.classes is None else np.array(list(b.values()), dtype=np.float64)

    @property
    def feature_names_in_(self) -> np.ndarray:
        """The input columns the model reads: numeric features, categorical columns (the
        columns that --interactions are made of, not the derived ones), then text columns."""
        names = [*self.features, *(c.name for c in self.spec.categoricals)]
        return np.array(self.spec.read_columns([*names, *(t.name for t in self.spec.texts)]), "O")

    @property
    def n_features_in_(self) -> int:
        return len(self.feature_names_in_)

    @property
    def classes_(self) -> np.ndarray | None:
        """The class labels of a softmax model (None otherwise), as :attr:`classes`."""
        return None if self.classes is None else np.array(self.classes, dtype=object)

    def __repr__(self) -> str:
        """One line, e.g. ``<Model squared, 6 features -> y, 5 epochs, final loss 0.125>``."""
        n = len(self.features)
        what = f"{n} feature{'s' if n != 1 else ''}"
        if self.spec.categoricals:
            what += f" + {len(self.spec.categoricals)} categorical"
        target = self.target + (f" ({len(self.classes)} classes)" if self.classes else "")
        parts = [f"{self.loss}, {what} -> {target}"]
        epochs = self.summary.get("epochs")
        if epochs is not None:
            parts.append(f"{epochs} epoch{'s' if epochs != 1 else ''}")
        loss = self.summary.get("final_loss")
        if isinstance(loss, int | float):
            parts.append(f"final loss {loss:.4g}")
        return f"<Model {', '.join(parts)}>"

    @property
    def needs_version_2(self) -> bool:
        return bool(self.spec.categoricals or self.spec.texts) or self.spec.infinite != "error"

    def params(self) -> np.ndarray:
        """The weights as the trainer holds them: numeric features, intercept, codes."""
        parts = [self.weights, np.asarray(self.intercept)[None]]
        if self.code_weights is not None:
            parts.append(self.code_weights)
        return np.concatenate(parts)

    # -- prediction ---------------------------------------------------------------------------
    def decision(self, x: np.ndarray, codes=None, text=None, *, z=None) -> np.ndarray:
        """Linear output in target units for a raw feature matrix (missing values filled), its
        codes (:meth:`FeatureSpec.codes`), text slots (``table_text``), z: spec.transform(x)."""
        s = self.spec
        out = (s.transform(x) if z is None else z) @ self.weights + self.intercept
        if s.categoricals:
            if codes is None:
                raise DataError("the model has categorical features: their codes are needed")
            # unseen values: the neutral "(other)" weight, not what training left there
            table = s.neutral_code_weights(self.code_weights)[codes]
            values = s.code_values(x, centred=False)  # slopes (--interactions)
            if values is not None:
                table = table * (values if table.ndim == 2 else values[:, :, None])
            out = out + table.sum(axis=1)
        if s.texts:
            out = out + s.text_sum(self.code_weights, text)
        return out * s.target_scale + s.target_center

    def predict(self, data: Any) -> np.ndarray:
        """Predictions (a probability of class 1 for logistic; the class label for softmax)
        for a pyarrow Table, pandas or polars DataFrame (columns by name), numpy array
        (columns in :attr:`features` order), or any other source
        :func:`streamgd.sources.open_source` reads (files, streams: one prediction per row,
        in their order). The data is scored in slices of 65,536 rows, so it is never copied
        whole. Missing feature values are imputed with the training mean (an error for a
        model trained with ``missing="error"``)."""
        return self._each_piece(data, self._predict_piece)

    def predict_proba(self, data: Any) -> np.ndarray:
        """Class probabilities, (rows, classes) in :attr:`classes` order (softmax models), or
        the probability of class 1 (logistic); ``data`` as for :meth:`predict`."""
        if self.classes is None:
            return self.predict(data)
        return self._each_piece(data, self._proba_piece)

    def _predict_piece(self, data: Any, first_row: int) -> np.ndarray:
        x, codes, text = self._inputs(data)
        x = self._finite(x, first_row)
        missing = np.isnan(x)
        if missing.any():
            if self.spec.missing == "error":
                r, c = np.argwhere(missing)[0]
                raise DataError(
                    "value is missing and the model was trained with --missing error",
                    column=self.features[c],
                    row=first_row + int(r) + 1,
                )
            x = np.where(missing, self.spec.fill, x)
        if self.classes is not None:
            return np.asarray(self.classes, dtype=object)[self.decision(x, codes, text).argmax(1)]
        return self.make_loss().link(self.decision(x, codes, text))

    def _proba_piece(self, data: Any, first_row: int) -> np.ndarray:
        x, codes, text = self._inputs(data)
        x = self._finite(x, first_row)
        x = np.where(np.isnan(x), self.spec.fill, x)
        return self.make_loss().link(self.decision(x, codes, text))

    def _each_piece(self, data: Any, score) -> np.ndarray:
        """``score(piece, first_row)`` of every slice of ``data``, concatenated."""
        out = [score(piece, first) for piece, first in self._pieces(data)]
        return np.concatenate(out) if len(out) > 1 else out[0]

    def _pieces(self, data: Any):
        """``data`` in slices of at most ``PREDICT_ROWS`` rows (one empty slice when it has no
        row), with each slice's first row."""
        if isinstance(data, np.ndarray) or isinstance(data, list | tuple) and not is_paths(data):
            x = self._array(data)
            for start in range(0, max(len(x), 1), PREDICT_ROWS):
                yield x[start : start + PREDICT_ROWS], start
            return
        if _is_frame(data) or isinstance(data, pa.Table | pa.RecordBatch):
            n = data.num_rows if isinstance(data, pa.Table | pa.RecordBatch) else len(data)
            for start in range(0, max(n, 1), PREDICT_ROWS):
                if isinstance(data, pa.Table | pa.RecordBatch):
                    yield data.slice(start, PREDICT_ROWS), start
                else:
                    yield data.iloc[start : start + PREDICT_ROWS], start
            return
        try:
            dataset = open_source(data)
        except UsageError:
            raise UsageError(self._expected(data)) from None
        columns = self.spec.read_columns(self.spec.input_columns(has_target=False, text=True))
        missing = [n for n in columns if n not in dataset.schema.names]
        if missing:
            raise DataError(
                f"input lacks feature column(s) {', '.join(missing)}", path=dataset.files[0].path
            )
        empty = True
        row = 0
        for unit in dataset.units:
            for table, _ in dataset.iter_unit(unit, columns):
                empty = False
                yield table, row
                row += table.num_rows
        if empty:
            yield pa.table({n: pa.array([], dataset.schema.field(n).type) for n in columns}), 0

    def _finite(self, x: np.ndarray, first_row: int = 0) -> np.ndarray:
        """Infinities are an error, or missing values for a model trained with
        ``infinite="missing"``."""
        inf = np.isinf(x)
        if not inf.any():
            return x
        if self.spec.infinite == "missing":
            return np.where(inf, np.nan, x)
        r, c = np.argwhere(inf)[0]
        raise DataError(
            "infinite value; expected a finite number",
            column=self.features[c],
            row=first_row + int(r) + 1,
        )

    def _inputs(self, data) -> tuple[np.ndarray, np.ndarray | None, tuple | None]:
        """The numeric features, categorical codes and text slots of ``data``: a table, a
        DataFrame (columns by name), or a numeric array (features in order, no codes or text)."""
        if _is_frame(data):
            data = as_arrow(data, "<DataFrame>")
        categorical = [c.name for c in self.spec.categoricals] + [t.name for t in self.spec.texts]
        if isinstance(data, pa.Table | pa.RecordBatch):
            # (the columns that --interactions are made of, not the derived ones)
            needed = self.spec.read_columns([*self.features, *categorical])
            missing = [n for n in needed if n not in data.schema.names]
            if missing:
                raise DataError(f"input lacks feature column(s) {', '.join(missing)}")
            derived = () if self.spec.deriver is None else self.spec.deriver.outputs
            for name in (n for n in self.features if n not in derived):  # pyarrow's refusal
                typ = data.schema.field(name).type
                if not is_numeric(typ):
                    raise DataError(f"feature is not numeric (type {typ})", column=name)
            x = Decoder.for_prediction(self).matrix(data)
            return x, self.spec.table_codes(data), self.spec.table_text(data)
        if categorical:
            raise DataError(
                f"the model has categorical features ({', '.join(categorical)}): "
                "pass a pyarrow Table or a pandas DataFrame, not an array"
            )
        if self.spec.deriver is not None:  # products: the array holds what they are made of
            x, names = self._array(data), self._array_columns()
            return self._inputs(pa.table({n: x[:, j] for j, n in enumerate(names)}))
        return self._array(data), None, None

    def _expected(self, data: Any) -> str:
        return (
            "expected a pyarrow Table, a pandas or polars DataFrame, a 2-d numeric array of "
            f"{len(self.features)} feature columns ({', '.join(self.features)}) or another "
            f"source of data (files, a stream), got {_kind(data)}"
        )

    def _array_columns(self) -> list[str]:
        """The columns of array input: the features, or what --interactions derive them from."""
        names = self.features if self.spec.deriver is None else self.feature_names_in_
        return [str(n) for n in names]

    def _array(self, data) -> np.ndarray:
        """A numeric array (or list) of rows of :meth:`_array_columns`, as float64 only slice
        by slice."""
        names = self._array_columns()
        try:
            x = np.asarray(data)
            if x.dtype.kind not in "biuf":
                x = np.asarray(data, dtype=np.float64)
        except (TypeError, ValueError):
            x = None
        if x is None or x.ndim not in (1, 2):
            raise UsageError(self._expected(data))
        if x.ndim == 1:
            x = x.reshape(1, -1) if len(names) > 1 else x.reshape(-1, 1)
        if x.shape[1] != len(names):
            raise DataError(
                f"expected {len(names)} feature columns ({', '.join(names)}), got {x.shape[1]}"
            )
        return x

    def make_loss(self):
        """The training loss, with the parameters it was trained with."""
        from .losses import make_loss

        return make_loss(
            self.loss,
            huber_delta=self.config.get("huber_delta"),
            quantile=self.config.get("quantile"),
        )

    def coefficients(self) -> tuple[dict, Any]:
        """Coefficients keyed by feature and the intercept, in original units; for a
        multi-class model both keyed by class first (``{class: {feature: c}}``)."""
        coef, b = self.spec.to_original(self.weights, self.intercept)
        names = list(self.features)
        if self.code_weights is not None:  # one-hot columns: unscaled, in target units
            coef = np.concatenate([coef, self.spec.original_code_weights(self.code_weights)])
            names += self.spec.code_labels()
        if self.classes is None:
            return dict(zip(names, map(float, coef), strict=True)), float(b)
        per_class = {
            str(c): dict(zip(names, map(float, coef[:, k]), strict=True))
            for k, c in enumerate(self.classes)
        }
        return per_class, {str(c): float(b[k]) for k, c in enumerate(self.classes)}

    def inspect(self) -> dict[str, Any]:
        coef, b = self.coefficients()
        hashed = any(c.bits is not None for c in self.spec.categoricals) or bool(self.spec.texts)
        if hashed:  # 2**bits buckets each: list the numeric features and the largest codes
            coef = _largest(coef, set(self.features))
        return {
            "kind": "model",
            "target": self.target,
            "loss": self.loss,
            "features": list(self.features),
            "categorical": {
                c.name: (
                    {"encoding": "hash", "bits": c.bits, "buckets": c.size}
                    if c.bits is not None
                    else {"encoding": "one-hot", "categories": c.size, "other": OTHER}
                )
                for c in self.spec.categoricals
            },
            **(
                {"interactions": {i.name: i.kind for i in self.spec.interactions}}
                if self.spec.interactions
                else {}
            ),
            "classes": None if self.classes is None else list(self.classes),
            "coefficients": coef,
            "intercept": b,
            "target_scaling": {"center": self.spec.target_center, "scale": self.spec.target_scale},
            "standardization": {
                n: {"center": float(c), "scale": float(s)}
                for n, c, s in zip(self.features, self.spec.center, self.spec.scale, strict=True)
            },
            "weights": self._weights(),
            "summary": self.summary,
            "history": self.history,
            "recorded_path_rows": 0 if self.trajectory is None else len(self.trajectory),
            "settings": self.config,
        }

    def _weights(self) -> dict[str, Any] | None:
        """How training weighed the rows (``inspect``): the --weight column, each class's
        weight (by label) and the mean weight that normalised them; None: unweighted."""
        w = self.spec.weighting
        if w is None:
            return None
        labels = self.classes if self.classes is not None else (0, 1)
        return {
            "column": w.column,
            "class_weight": self.config.get("class_weight"),
            "class_weights": None
            if w.class_weights is None
            else {str(c): float(v) for c, v in zip(labels, w.class_weights, strict=True)},
            "mean_weight": w.mean,
        }

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str, *, option: str | None = None) -> str:
        """Write the model atomically as one checksummed npz+JSON file (no pickle); returns its
        digest (:meth:`digest`). ``option`` names the setting that chose ``path`` in the message
        of a failed write (:class:`~streamgd.errors.WriteError`)."""
        version, meta, arrays = self._archive()
        return write_archive(
            path,
            kind="model",
            version=version,
            meta=meta,
            arrays=arrays,
            what="the model",
            option=option,
        )

    def digest(self) -> str:
        """The SHA-256 that :meth:`save` stores in the file (the same model, the same digest)."""
        from .archive import archive_digest

        version, meta, arrays = self._archive()
        return archive_digest(kind="model", version=version, meta=meta, arrays=arrays)

    def _archive(self) -> tuple[int, dict, dict]:
        meta = {
            "loss": self.loss,
            **spec_meta(self.spec),
            "intercept": None if np.ndim(self.intercept) else self.intercept,
            "config": self.config,
            "summary": self.summary,
            "history": self.history,
        }
        arrays = (
            spec_arrays(self.spec)
            | {"weights": self.weights}
            | ({"intercepts": np.asarray(self.intercept)} if np.ndim(self.intercept) else {})
            | ({} if self.code_weights is None else {"code_weights": self.code_weights})
            | ({} if self.trajectory is None else {"trajectory": self.trajectory})
        )
        version = 2 if self.needs_version_2 else 1
        version = 4 if self.spec.texts else 3 if self.spec.interactions else version
        return version, meta, arrays

    def save_history(
        self, model_path: str, *, option: str | None = None, only_changed: bool = False
    ) -> tuple[str, str]:
        """Write the per-epoch history beside ``model_path`` as ``<stem>.history.csv`` and
        ``<stem>.history.json`` (atomically); returns both paths. With ``only_changed``, a file
        that already holds exactly this history is left as it is."""
        from .history_files import write_history

        return write_history(self.history, model_path, option=option, only_changed=only_changed)


def _is_frame(data: Any) -> bool:
    """A pandas or polars DataFrame (without importing either)."""
    module = type(data).__module__.split(".")[0]
    return module in ("pandas", "polars") and type(data).__name__ == "DataFrame"


def _kind(data: Any) -> str:
    """What ``data`` is, for a message: its type, and a numpy array's dtype and shape."""
    if isinstance(data, np.ndarray):
        return f"a numpy array of {data.dtype} with shape {data.shape}"
    return f"{type(data).__module__}.{type(data).__qualname__}".removeprefix("builtins.")


def as_model(model: Any) -> Model:
    """``model`` itself, or the model file it names (loaded); anything else is a UsageError.

    >>> as_model(3)
    Traceback (most recent call last):
    ...
    streamgd.errors.UsageError: expected a streamgd Model or the path of a model file, got int
    """
    if isinstance(model, Model):
        return model
    if isinstance(model, str | os.PathLike):
        return load(os.fspath(model))
    raise UsageError(f"expected a streamgd Model or the path of a model file, got {_kind(model)}")


def load(path: str) -> Model:
    """Load a model written by :meth:`Model.save` (verifying its checksum)."""
    meta, arrays = read_archive(path, kind="model", max_version=MODEL_VERSION)
    try:
        return Model(
            spec=spec_from(meta, arrays),
            loss=meta["loss"],
            weights=arrays["weights"],
            intercept=float(meta["intercept"])
            if meta["intercept"] is not None
            else arrays["intercepts"],
            config=meta.get("config", {}),
            summary=meta.get("summary", {}),
            history=meta.get("history", []),
            # files before the rename call it "path"
            trajectory=arrays.get("trajectory", arrays.get("path")),
            code_weights=arrays.get("code_weights"),
        )
    except KeyError as exc:
        raise CheckpointError(f"{path}: model file lacks {exc}") from None


# Hashed code weights listed by inspect: the largest in magnitude (all the others are kept in the
# model file; Model.code_weights holds them).
LARGEST_CODES = 20


def _largest(coef: dict, keep: set[str]) -> dict:
    """``coef`` limited to the ``keep`` names and the LARGEST_CODES largest other entries
    (per class: by their largest magnitude over classes)."""

    def size(v):
        return max(abs(x) for x in v.values()) if isinstance(v, dict) else abs(v)

    if coef and isinstance(next(iter(coef.values())), dict):  # {class: {name: c}}
        names = next(iter(coef.values())).keys()
        by_name = {n: {k: per[n] for k, per in coef.items()} for n in names}
        chosen = _largest(by_name, keep)
        return {k: {n: per[n] for n in chosen} for k, per in coef.items()}
    others = sorted((n for n in coef if n not in keep), key=lambda n: -size(coef[n]))
    chosen = [n for n in coef if n in keep] + others[:LARGEST_CODES]
    return {n: coef[n] for n in chosen}
