"""A trained linear model: predicts, evaluates, explains itself, and saves without pickle.

Weights live in standardised units (``z = (x - center) / scale``); :meth:`Model.coefficients`
reports them in the features' original units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .archive import read_archive, write_archive
from .errors import CheckpointError, DataError
from .features import FeatureSpec

__all__ = ["Model", "load"]

MODEL_VERSION = 1


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
    path: np.ndarray | None = None  # recorded [step, weights..., intercept] rows (--record-path)

    @property
    def features(self) -> tuple[str, ...]:
        return self.spec.names

    @property
    def target(self) -> str:
        return self.spec.target

    @property
    def classes(self) -> tuple | None:
        return self.spec.classes

    # -- prediction ---------------------------------------------------------------------------
    def decision(self, x: np.ndarray) -> np.ndarray:
        """Linear output in target units for a raw feature matrix (missing values filled)."""
        s = self.spec
        return (s.transform(x) @ self.weights + self.intercept) * s.target_scale + s.target_center

    def predict(self, data: pa.Table | pd.DataFrame | np.ndarray) -> np.ndarray:
        """Predictions (a probability of class 1 for logistic) for a pyarrow Table, pandas
        DataFrame (columns by name) or numpy array (columns in :attr:`features` order).
        Missing feature values are imputed with the training mean (an error for a model trained
        with ``missing="error"``)."""
        x = self._matrix(data)
        missing = np.isnan(x)
        if missing.any():
            if self.spec.missing == "error":
                r, c = np.argwhere(missing)[0]
                raise DataError(
                    "value is missing and the model was trained with --missing error",
                    column=self.features[c],
                    row=int(r) + 1,
                )
            x = np.where(missing, self.spec.fill, x)
        if self.classes is not None:
            return np.asarray(self.classes, dtype=object)[self.decision(x).argmax(axis=1)]
        return self.make_loss().link(self.decision(x))

    def predict_proba(self, data: pa.Table | pd.DataFrame | np.ndarray) -> np.ndarray:
        """Class probabilities, (rows, classes) in :attr:`classes` order (softmax models), or
        the probability of class 1 (logistic)."""
        if self.classes is None:
            return self.predict(data)
        x = self._matrix(data)
        x = np.where(np.isnan(x), self.spec.fill, x)
        return self.make_loss().link(self.decision(x))

    def _matrix(self, data) -> np.ndarray:
        from .sources import to_matrix

        if isinstance(data, pd.DataFrame):
            data = pa.Table.from_pandas(data, preserve_index=False)
        if isinstance(data, pa.Table | pa.RecordBatch):
            missing = [n for n in self.features if n not in data.schema.names]
            if missing:
                raise DataError(f"input lacks feature column(s) {', '.join(missing)}")
            return to_matrix(data, self.features)
        x = np.asarray(data, dtype=np.float64)
        if x.ndim == 1:
            x = x.reshape(1, -1) if len(self.features) > 1 else x.reshape(-1, 1)
        if x.shape[1] != len(self.features):
            raise DataError(
                f"expected {len(self.features)} feature columns "
                f"({', '.join(self.features)}), got {x.shape[1]}"
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
        if self.classes is None:
            return dict(zip(self.features, map(float, coef), strict=True)), float(b)
        per_class = {
            str(c): dict(zip(self.features, map(float, coef[:, k]), strict=True))
            for k, c in enumerate(self.classes)
        }
        return per_class, {str(c): float(b[k]) for k, c in enumerate(self.classes)}

    def inspect(self) -> dict[str, Any]:
        coef, b = self.coefficients()
        return {
            "kind": "model",
            "target": self.target,
            "loss": self.loss,
            "features": list(self.features),
            "classes": None if self.classes is None else list(self.classes),
            "coefficients": coef,
            "intercept": b,
            "target_scaling": {"center": self.spec.target_center, "scale": self.spec.target_scale},
            "standardization": {
                n: {"center": float(c), "scale": float(s)}
                for n, c, s in zip(self.features, self.spec.center, self.spec.scale, strict=True)
            },
            "summary": self.summary,
            "history": self.history,
            "recorded_path_rows": 0 if self.path is None else len(self.path),
            "settings": self.config,
        }

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str) -> None:
        """Write the model atomically as one checksummed npz+JSON file (no pickle)."""
        write_archive(
            path,
            kind="model",
            version=MODEL_VERSION,
            meta={
                "loss": self.loss,
                "features": list(self.features),
                "target": self.target,
                "missing": self.spec.missing,
                "classes": None if self.classes is None else list(self.classes),
                "intercept": None if np.ndim(self.intercept) else self.intercept,
                "config": self.config,
                "summary": self.summary,
                "history": self.history,
            },
            arrays=spec_arrays(self.spec)
            | {"weights": self.weights}
            | ({"intercepts": np.asarray(self.intercept)} if np.ndim(self.intercept) else {})
            | ({} if self.path is None else {"path": self.path}),
        )

    def save_history(self, model_path: str) -> tuple[str, str]:
        """Write the per-epoch history beside ``model_path`` as ``<stem>.history.csv`` and
        ``<stem>.history.json`` (atomically); returns both paths."""
        import csv
        import io
        import json
        import os

        from .archive import atomic_write

        stem = os.path.splitext(model_path)[0]
        rows = [
            {k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in h.items()}
            for h in self.history
        ]
        columns = list(dict.fromkeys(k for row in rows for k in row))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        csv_path, json_path = f"{stem}.history.csv", f"{stem}.history.json"
        atomic_write(csv_path, lambda fh: fh.write(text.getvalue().encode()))
        blob = json.dumps(self.history, indent=2, allow_nan=True).encode()
        atomic_write(json_path, lambda fh: fh.write(blob))
        return csv_path, json_path


def spec_arrays(spec: FeatureSpec) -> dict[str, np.ndarray]:
    """The arrays of a FeatureSpec, as stored in model and checkpoint files."""
    target = np.array([spec.target_center, spec.target_scale])
    arrays = {
        "center": spec.center,
        "scale": spec.scale,
        "fill": spec.fill,
        "target_scaling": target,
    }
    if spec.precond is not None:
        arrays["precond"] = spec.precond
    return arrays


def spec_from(meta: dict, arrays: dict[str, np.ndarray]) -> FeatureSpec:
    return FeatureSpec(
        tuple(meta["features"]),
        meta["target"],
        arrays["center"],
        arrays["scale"],
        arrays["fill"],
        meta.get("missing", "impute"),
        float(arrays["target_scaling"][0]),
        float(arrays["target_scaling"][1]),
        arrays.get("precond"),
        tuple(meta["classes"]) if meta.get("classes") else None,
    )


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
            path=arrays.get("path"),
        )
    except KeyError as exc:
        raise CheckpointError(f"{path}: model file lacks {exc}") from None
