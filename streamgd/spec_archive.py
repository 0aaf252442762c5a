"""A :class:`FeatureSpec` as stored in model and checkpoint files: its arrays (npz side) and its
JSON part, and back. Both file kinds import this; neither imports the other."""

from __future__ import annotations

from typing import Any

import numpy as np

from .features import FeatureSpec
from .features.categorical import Categorical
from .features.interactions import Interaction
from .features.text import TextColumn
from .features.weights import Weighting

__all__ = ["spec_arrays", "spec_meta", "spec_from"]


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
    if spec.bounds is not None:  # older files have none: no outlier check
        arrays["bounds"] = spec.bounds
    if spec.weighting is not None and spec.weighting.class_weights is not None:
        arrays["class_weights"] = spec.weighting.class_weights
    return arrays


def spec_meta(spec: FeatureSpec) -> dict[str, Any]:
    """The JSON part of a FeatureSpec, as stored in model and checkpoint files."""
    return {
        "features": list(spec.names),
        "target": spec.target,
        "missing": spec.missing,
        "classes": None if spec.classes is None else list(spec.classes),
        "categoricals": [c.to_meta() for c in spec.categoricals],
        "infinite": spec.infinite,
        "outliers": spec.outliers,
        # --weight / --class-weight (absent: unweighted, as every older file)
        **({} if spec.weighting is None else {"weighting": spec.weighting.to_meta()}),
        # --interactions (absent: none, as every older file)
        **({"interactions": [i.to_meta() for i in spec.interactions]} if spec.interactions else {}),
        **({"texts": [t.to_meta() for t in spec.texts]} if spec.texts else {}),
    }


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
        tuple(Categorical.from_meta(c) for c in meta.get("categoricals") or ()),
        meta.get("infinite", "error"),
        meta.get("outliers", "warn"),
        arrays.get("bounds"),
        _weighting(meta.get("weighting"), arrays.get("class_weights")),
        tuple(Interaction.from_meta(i) for i in meta.get("interactions") or ()),
        tuple(TextColumn.from_meta(t) for t in meta.get("texts") or ()),
    )


def _weighting(meta: dict | None, class_weights: np.ndarray | None) -> Weighting | None:
    if meta is None:
        return None
    return Weighting(meta.get("column"), class_weights, float(meta["mean"]))
