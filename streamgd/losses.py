"""Losses: per-sample value and gradient with respect to the prediction, behind a registry.

Conventions: ``p`` is the model's raw output (the linear predictor ``X @ w + b``), ``y`` the
target. A batch's loss is the mean of the per-sample values; the trainer chains the gradient
through the linear model (``X.T @ g / n``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Loss", "LOSSES", "get_loss", "sigmoid"]

Array = np.ndarray


def sigmoid(p: Array) -> Array:
    """Numerically stable logistic function, ``1 / (1 + exp(-p))``.

    >>> float(sigmoid(np.array([0.0]))[0])
    0.5
    """
    return 0.5 * (1.0 + np.tanh(0.5 * p))


@dataclass(frozen=True)
class Loss:
    """A loss: ``value(p, y)`` and ``gradient(p, y)`` per sample, ``d value / d p``.

    ``link`` maps the raw output to what ``predict`` returns (identity, or a probability);
    ``invalid_target`` flags target values the loss cannot take; ``task`` picks the metrics.
    """

    name: str
    value: Callable[[Array, Array], Array]
    gradient: Callable[[Array, Array], Array]
    link: Callable[[Array], Array]
    invalid_target: Callable[[Array], Array] | None
    task: str  # "regression" | "binary"
    expected_target: str = "a finite number"
    # How the value scales when the target (and prediction) are scaled by s: s**power. The
    # trainer standardises regression targets and reports losses in the target's own units.
    scale_power: int = 0
    # Per-sample d2 value / d p2 when it depends on p (None: constant, as for squared). Used to
    # scale preconditioned steps (see trainer.train_step).
    curvature: Callable[[Array, Array], Array] | None = None


def _squared_value(p: Array, y: Array) -> Array:
    r"""Half the squared error, :math:`\tfrac12 (p - y)^2`.

    >>> float(_squared_value(np.array([3.0]), np.array([1.0]))[0])
    2.0
    """
    d = p - y
    return 0.5 * d * d


def _squared_gradient(p: Array, y: Array) -> Array:
    return p - y


def _logistic_value(p: Array, y: Array) -> Array:
    r"""Log loss of a 0/1 target on the logit, :math:`\log(1 + e^{p}) - y p`.

    >>> round(float(_logistic_value(np.array([0.0]), np.array([1.0]))[0]), 6)
    0.693147
    """
    return np.logaddexp(0.0, p) - y * p


def _logistic_gradient(p: Array, y: Array) -> Array:
    return sigmoid(p) - y


def _logistic_curvature(p: Array, y: Array) -> Array:
    q = sigmoid(p)
    return q * (1.0 - q)


def _not_binary(y: Array) -> Array:
    return (y != 0.0) & (y != 1.0)


LOSSES: dict[str, Loss] = {
    "squared": Loss(
        "squared",
        _squared_value,
        _squared_gradient,
        lambda p: p,
        None,
        "regression",
        scale_power=2,
    ),
    "logistic": Loss(
        "logistic",
        _logistic_value,
        _logistic_gradient,
        sigmoid,
        _not_binary,
        "binary",
        expected_target="0 or 1 for --loss logistic",
        curvature=_logistic_curvature,
    ),
}


def get_loss(name: str) -> Loss:
    from .errors import UsageError

    try:
        return LOSSES[name]
    except KeyError:
        raise UsageError(f"--loss must be one of {', '.join(LOSSES)}, got {name!r}") from None
