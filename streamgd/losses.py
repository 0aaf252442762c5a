"""Losses: per-sample value and gradient with respect to the prediction, behind a registry.

Conventions: ``p`` is the model's raw output (the linear predictor ``X @ w + b``), ``y`` the
target. A batch's loss is the mean of the per-sample values; the trainer chains the gradient
through the linear model (``X.T @ g / n``). At a kink the gradient is one fixed subgradient: 0
where the subdifferential holds 0 (absolute and quantile at ``p = y``, hinge at ``s p = 1``).

Registry: :data:`LOSS_FACTORIES` maps each name to a factory taking the loss's parameters as
keywords (unknown ones ignored, ``None`` meaning the default); :func:`make_loss` builds one and
:data:`LOSSES` holds each with its default parameters (:func:`get_loss`).

Target scaling: the trainer centres and scales a ``scale_target`` loss's target,
``t = (y - c) / s`` (and the prediction with it). Such losses depend on ``p - y`` only, and
``loss.rescaled(s)`` is the loss to train with on ``t``: its value is the original value
divided by ``s ** scale_power``. Only parameters in the target's units change (huber's delta
becomes ``delta / s``).

Custom losses come from two functions through :meth:`Loss.custom` (the README's "Python API"
section defines one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .constraints import Interval
from .errors import UsageError

__all__ = [
    "Loss",
    "LOSSES",
    "LOSS_FACTORIES",
    "TASKS",
    "get_loss",
    "make_loss",
    "register_loss",
    "identity",
    "sigmoid",
    "softmax",
]

Array = np.ndarray
LossFunction = Callable[[Array, Array], Array]
# regression: identity-like link, regression metrics; binary: link gives P(y = 1), log loss;
# margin: the link gives a decision score (> 0 means class 1), classification metrics but no
# log loss.
TASKS = ("regression", "binary", "margin", "multiclass")


def identity(p: Array) -> Array:
    """The identity link: ``predict`` returns the raw output."""
    return p


def sigmoid(p: Array) -> Array:
    """Numerically stable logistic function, ``1 / (1 + exp(-p))``.

    >>> float(sigmoid(np.array([0.0]))[0])
    0.5
    """
    return 0.5 * (1.0 + np.tanh(0.5 * p))


@dataclass(frozen=True)
class Loss:
    """A loss: ``value(p, y)`` and ``gradient(p, y)`` per sample, ``d value / d p``.

    ``link`` maps the raw output to what ``predict`` returns (identity, a probability, a
    mean); ``invalid_target`` flags target values the loss cannot take; ``task`` (one of
    :data:`TASKS`) picks the metrics. Two losses are equal when their names, parameters and
    settings agree; the functions are not compared.
    """

    name: str
    value: LossFunction = field(compare=False)
    gradient: LossFunction = field(compare=False)
    link: Callable[[Array], Array] = field(compare=False)
    invalid_target: Callable[[Array], Array] | None = field(compare=False)
    task: str  # one of TASKS
    expected_target: str = "a finite number"
    # How the value scales when the target (and prediction) are scaled by s: s**power, with
    # the parameters rescaled as by `rescaled`. The trainer reports losses in the target's
    # own units. Unused (0) where scale_target is False.
    scale_power: int = 0
    # Per-sample d2 value / d p2 when it depends on p. None: the trainer takes it to be 1,
    # which is exact for squared, an upper bound for huber (so a preconditioned step of lr 1
    # cannot overshoot) and a plain scaling for the piecewise-linear losses, whose curvature
    # is 0 wherever it exists. Used to scale preconditioned steps (see trainer.train_step).
    curvature: LossFunction | None = field(default=None, compare=False)
    # Whether the trainer centres and scales the target (regression losses of p - y).
    scale_target: bool = False
    # The parameters the loss was built with, as (keyword, value) pairs for make_loss.
    params: tuple[tuple[str, float], ...] = ()
    # Those of `params` in the target's units: `rescaled` divides them by the target scale.
    target_unit_params: tuple[str, ...] = ()
    # The inverse link at the target's mean (see `initial_intercept`); None: an intercept of 0.
    inverse_link: Callable[[Array], Array] | None = field(default=None, compare=False)

    def initial_intercept(self, mean: float | Array) -> float | Array:
        """The intercept training starts from: the best constant model's, the inverse link at
        the target's ``mean`` (the class frequencies for a multi-class loss), so the first steps
        fit the features, not the base rate. 0 without an inverse link (a centred target).

        >>> round(float(get_loss("logistic").initial_intercept(0.75)), 6)  # log(0.75 / 0.25)
        1.098612
        >>> get_loss("squared").initial_intercept(12.5)
        0.0
        """
        if self.inverse_link is None:
            return 0.0 if np.ndim(mean) == 0 else np.zeros(np.shape(mean))
        return self.inverse_link(mean)

    def rescaled(self, target_scale: float) -> Loss:
        """The same loss for targets and predictions divided by ``target_scale`` (``s``):
        ``self.value(s * p, s * y) == s ** scale_power * self.rescaled(s).value(p, y)``.

        >>> huber = make_loss("huber", huber_delta=3.0)
        >>> huber.rescaled(2.0).params
        (('huber_delta', 1.5),)
        """
        if not (np.isfinite(target_scale) and target_scale > 0):
            raise ValueError(f"target_scale must be a finite number > 0, got {target_scale!r}")
        if target_scale == 1.0 or (self.scale_target and not self.target_unit_params):
            return self
        if not self.scale_target:
            raise ValueError(f"the {self.name} loss takes its target unscaled")
        units = self.target_unit_params
        return make_loss(
            self.name, **{k: v / target_scale if k in units else v for k, v in self.params}
        )

    @classmethod
    def custom(
        cls,
        name: str,
        value: LossFunction,
        gradient: LossFunction,
        *,
        curvature: LossFunction | None = None,
        link: Callable[[Array], Array] = identity,
        task: str = "regression",
        invalid_target: Callable[[Array], Array] | None = None,
        expected_target: str = "a finite number",
    ) -> Loss:
        """A loss from your own functions, for the Python API.

        ``value(p, y)`` and ``gradient(p, y)`` take arrays of predictions and targets and
        return one number per sample; ``gradient`` is ``d value / d p`` (check it with finite
        differences). ``curvature`` is ``d2 value / d p2``: give it only for a convex loss, as
        the trainer divides preconditioned steps by it. The target reaches the functions in
        its own units (``scale_target`` is False).

        >>> mse = Loss.custom("mse", lambda p, y: (p - y) ** 2, lambda p, y: 2 * (p - y))
        >>> float(mse.gradient(np.array([3.0]), np.array([1.0]))[0])
        4.0
        """
        if task not in TASKS:
            raise UsageError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        for what, f in (("value", value), ("gradient", gradient), ("link", link)):
            if not callable(f):
                raise UsageError(f"the {what} of a custom loss must be a function, got {f!r}")
        return cls(
            name,
            value,
            gradient,
            link,
            invalid_target,
            task,
            expected_target=expected_target,
            curvature=curvature,
        )


def _not_binary(y: Array) -> Array:
    return (y != 0.0) & (y != 1.0)


# -- squared -----------------------------------------------------------------------------------
def _squared_value(p: Array, y: Array) -> Array:
    r"""Half the squared error, :math:`\tfrac12 (p - y)^2`.

    >>> float(_squared_value(np.array([3.0]), np.array([1.0]))[0])
    2.0
    """
    d = p - y
    return 0.5 * d * d


def _squared_gradient(p: Array, y: Array) -> Array:
    return p - y


_SQUARED = Loss(
    "squared",
    _squared_value,
    _squared_gradient,
    identity,
    None,
    "regression",
    scale_power=2,
    scale_target=True,
)


def squared(**_: object) -> Loss:
    """Half the squared error, ``(p - y)^2 / 2``; gradient ``p - y``."""
    return _SQUARED


# -- logistic ----------------------------------------------------------------------------------
def _logistic_value(p: Array, y: Array) -> Array:
    r"""Log loss of a 0/1 target on the logit, :math:`\log(1 + e^{p}) - y p`.

    >>> round(float(_logistic_value(np.array([0.0]), np.array([1.0]))[0]), 6)
    0.693147
    """
    # log(1 + e^p) as max(p, 0) + log1p(e^-|p|): exact to 1 ulp, and 3x faster than logaddexp
    return np.maximum(p, 0.0) + np.log1p(np.exp(-np.abs(p))) - y * p


def _logistic_gradient(p: Array, y: Array) -> Array:
    return sigmoid(p) - y


def _log_odds(rate: float) -> float:
    rate = min(max(rate, 1e-6), 1 - 1e-6)  # off 0 and 1: a constant target would give inf
    return np.log(rate / (1 - rate))


def _logistic_curvature(p: Array, y: Array) -> Array:
    q = sigmoid(p)
    return q * (1.0 - q)


_LOGISTIC = Loss(
    "logistic",
    _logistic_value,
    _logistic_gradient,
    sigmoid,
    _not_binary,
    "binary",
    expected_target="0 or 1 for --loss logistic",
    curvature=_logistic_curvature,
    inverse_link=_log_odds,
)


def logistic(**_: object) -> Loss:
    """Log loss on the logit, ``log(1 + e^p) - y p``; gradient ``sigmoid(p) - y``."""
    return _LOGISTIC


# -- huber -------------------------------------------------------------------------------------
def huber(*, huber_delta: float | None = None, **_: object) -> Loss:
    r"""Huber loss of ``r = p - y``: ``r^2 / 2`` for ``|r| <= delta``, else
    ``delta (|r| - delta / 2)``; gradient ``clip(r, -delta, delta)``. ``delta`` is in the
    target's units (``rescaled`` divides it by the target scale). Its curvature is left to the
    trainer's default of 1, an upper bound of the true 0-or-1.

    >>> loss = huber(huber_delta=1.0)
    >>> p, y = np.array([0.5, 3.0]), np.array([0.0, 0.0])
    >>> loss.value(p, y).tolist(), loss.gradient(p, y).tolist()
    ([0.125, 2.5], [0.5, 1.0])
    """
    delta = Interval(lo=0.0, lo_open=True).get("huber_delta", huber_delta, 1.0)

    def value(p: Array, y: Array) -> Array:
        r"""Huber loss, :math:`\tfrac12 r^2` for :math:`|r| \le \delta`, else
        :math:`\delta (|r| - \tfrac12 \delta)`, with :math:`r = p - y`."""
        a = np.abs(p - y)
        return np.where(a <= delta, 0.5 * a * a, delta * (a - 0.5 * delta))

    def gradient(p: Array, y: Array) -> Array:
        return np.clip(p - y, -delta, delta)

    return Loss(
        "huber",
        value,
        gradient,
        identity,
        None,
        "regression",
        scale_power=2,
        scale_target=True,
        params=(("huber_delta", delta),),
        target_unit_params=("huber_delta",),
    )


# -- absolute and quantile ---------------------------------------------------------------------
def _absolute_value(p: Array, y: Array) -> Array:
    r"""Absolute error, :math:`|p - y|`.

    >>> float(_absolute_value(np.array([1.0]), np.array([3.0]))[0])
    2.0
    """
    return np.abs(p - y)


def _absolute_gradient(p: Array, y: Array) -> Array:
    return np.sign(p - y)


_ABSOLUTE = Loss(
    "absolute",
    _absolute_value,
    _absolute_gradient,
    identity,
    None,
    "regression",
    scale_power=1,
    scale_target=True,
)


def absolute(**_: object) -> Loss:
    """Absolute error ``|p - y|`` (fits the median); gradient ``sign(p - y)``, 0 at ``p = y``."""
    return _ABSOLUTE


def quantile(*, quantile: float | None = None, **_: object) -> Loss:
    r"""Pinball loss of the ``quantile`` q: ``max(q r, (q - 1) r)`` with ``r = y - p`` (fits
    the q-quantile); gradient ``-q`` below the target, ``1 - q`` above it, 0 at ``p = y``.

    >>> loss = quantile(quantile=0.9)
    >>> p, y = np.array([0.0, 2.0]), np.array([1.0, 1.0])
    >>> loss.value(p, y).round(6).tolist(), loss.gradient(p, y).round(6).tolist()
    ([0.9, 0.1], [-0.9, 0.1])
    """
    q = Interval(lo=0.0, lo_open=True, hi=1.0, hi_open=True).get("quantile", quantile, 0.5)

    def value(p: Array, y: Array) -> Array:
        r"""Pinball loss, :math:`\max(q r, (q - 1) r)` with :math:`r = y - p`."""
        r = y - p
        return np.maximum(q * r, (q - 1.0) * r)

    def gradient(p: Array, y: Array) -> Array:
        d = p - y
        return np.where(d > 0, 1.0 - q, np.where(d < 0, -q, 0.0))

    return Loss(
        "quantile",
        value,
        gradient,
        identity,
        None,
        "regression",
        scale_power=1,
        scale_target=True,
        params=(("quantile", q),),
    )


# -- poisson -----------------------------------------------------------------------------------
# Beyond this raw output exp(p) is continued by its second-order Taylor polynomial (so the
# mean, exp'(p), continues linearly): the value, gradient and curvature stay finite and remain
# each other's derivatives, and no real count comes near exp(50) ~ 5e21.
_POISSON_MAX = 50.0


def _poisson_mean(p: Array) -> Array:
    """``exp(p)``, continued linearly beyond ``p = 50``."""
    return np.exp(np.minimum(p, _POISSON_MAX)) * (1.0 + np.maximum(p - _POISSON_MAX, 0.0))


def _poisson_value(p: Array, y: Array) -> Array:
    r"""Poisson negative log-likelihood on the log of the mean, :math:`e^{p} - y p` (without
    the constant :math:`\log y!`); :math:`e^p` is continued quadratically beyond ``p = 50``.

    >>> float(_poisson_value(np.array([0.0]), np.array([3.0]))[0])
    1.0
    """
    d = np.maximum(p - _POISSON_MAX, 0.0)
    return np.exp(np.minimum(p, _POISSON_MAX)) * (1.0 + d + 0.5 * d * d) - y * p


def _poisson_gradient(p: Array, y: Array) -> Array:
    return _poisson_mean(p) - y


def _poisson_curvature(p: Array, y: Array) -> Array:
    return np.exp(np.minimum(p, _POISSON_MAX))


def _not_count(y: Array) -> Array:
    return ~(np.isfinite(y) & (y >= 0.0))


_POISSON = Loss(
    "poisson",
    _poisson_value,
    _poisson_gradient,
    _poisson_mean,
    _not_count,
    "regression",
    expected_target="a number >= 0 for --loss poisson",
    curvature=_poisson_curvature,
    inverse_link=lambda mean: np.log(max(mean, 1e-6)),  # the log of the mean count
)


def poisson(**_: object) -> Loss:
    """Poisson regression with a log link: ``exp(p) - y p``; gradient ``exp(p) - y``; predicts
    the mean ``exp(p)``. Targets are counts or rates, any number >= 0."""
    return _POISSON


# -- hinge -------------------------------------------------------------------------------------
def _hinge_value(p: Array, y: Array) -> Array:
    r"""Hinge loss of a 0/1 target on a decision score, :math:`\max(0, 1 - s p)` with
    :math:`s = 2y - 1`.

    >>> _hinge_value(np.array([0.25, 3.0]), np.array([1.0, 0.0])).tolist()
    [0.75, 4.0]
    """
    return np.maximum(0.0, 1.0 - (2.0 * y - 1.0) * p)


def _hinge_gradient(p: Array, y: Array) -> Array:
    s = 2.0 * y - 1.0
    return np.where(s * p < 1.0, -s, 0.0)


_HINGE = Loss(
    "hinge",
    _hinge_value,
    _hinge_gradient,
    identity,
    _not_binary,
    "margin",
    expected_target="0 or 1 for --loss hinge",
)


def hinge(**_: object) -> Loss:
    """Linear SVM loss ``max(0, 1 - s p)``, ``s = 2y - 1``; gradient ``-s`` where ``s p < 1``,
    else 0 (also at the kink). Predicts the score ``p``: class 1 where it is > 0."""
    return _HINGE


# -- multi-class ---------------------------------------------------------------------------------
def softmax(p: Array) -> Array:
    """Row-wise softmax of logits ``p`` (n, K), shifted by the row maximum for stability.

    >>> softmax(np.array([[0.0, np.log(3.0)]])).round(6).tolist()
    [[0.25, 0.75]]
    """
    e = np.exp(p - p.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _labels(y: Array) -> Array:
    return np.asarray(y).astype(np.int64)


def _softmax_value(p: Array, y: Array) -> Array:
    r"""Cross-entropy of class codes ``y`` under logits ``p`` (n, K):
    :math:`\log \sum_k e^{p_k} - p_y` per sample.

    >>> round(float(_softmax_value(np.zeros((1, 4)), np.array([2]))[0]), 6)
    1.386294
    """
    m = p.max(axis=1)
    lse = m + np.log(np.exp(p - m[:, None]).sum(axis=1))
    return lse - p[np.arange(len(p)), _labels(y)]


def _softmax_gradient(p: Array, y: Array) -> Array:
    g = softmax(p)
    g[np.arange(len(p)), _labels(y)] -= 1.0
    return g


def _softmax_curvature(p: Array, y: Array) -> Array:
    q = softmax(p)  # the diagonal of the Hessian with respect to each logit
    return q * (1.0 - q)


_SOFTMAX = Loss(
    "softmax",
    _softmax_value,
    _softmax_gradient,
    softmax,
    None,
    "multiclass",
    expected_target="a class label",
    curvature=_softmax_curvature,
    inverse_link=np.log,  # of the class frequencies: softmax(log f) = f
)


def softmax_loss(**_: object) -> Loss:
    """Multinomial logistic regression on class codes ``y`` in ``0..K-1`` and logits ``p``
    of shape (n, K): value ``logsumexp(p) - p_y``; gradient ``softmax(p) - onehot(y)``;
    ``link`` gives the class probabilities. The trainer maps integer or string labels to codes
    (the classes are found by a scan of the target column) and back."""
    return _SOFTMAX


# -- the registry ------------------------------------------------------------------------------
LOSS_FACTORIES: dict[str, Callable[..., Loss]] = {
    "squared": squared,
    "logistic": logistic,
    "huber": huber,
    "absolute": absolute,
    "quantile": quantile,
    "poisson": poisson,
    "hinge": hinge,
    "softmax": softmax_loss,
}

LOSSES: dict[str, Loss] = {name: factory() for name, factory in LOSS_FACTORIES.items()}
_BUILTIN = frozenset(LOSSES)


def make_loss(name: str, **params: object) -> Loss:
    """The loss ``name`` with its parameters (``huber_delta``, ``quantile``); parameters it
    does not take are ignored, ``None`` means the default.

    >>> make_loss("quantile", quantile=0.25, huber_delta=2.0).params
    (('quantile', 0.25),)
    """
    if name not in LOSS_FACTORIES:
        raise UsageError(f"--loss must be one of {', '.join(LOSS_FACTORIES)}, got {name!r}")
    return LOSS_FACTORIES[name](**params)


def register_loss(loss: Loss, *, replace: bool = False) -> Loss:
    """Make a custom loss (see :meth:`Loss.custom`) usable by name: ``fit(loss=name)``,
    checkpoints, and models saved with it. A process that loads such a model registers the
    same loss first. Built-in names cannot be replaced.

    >>> register_loss(Loss.custom("mine", value, gradient))  # doctest: +SKIP
    >>> streamgd.fit(paths, target="y", loss="mine")  # doctest: +SKIP
    """
    if loss.name in _BUILTIN or (loss.name in LOSSES and not replace):
        raise UsageError(f"a loss named {loss.name!r} exists already")
    LOSS_FACTORIES[loss.name] = lambda **_: loss
    LOSSES[loss.name] = loss
    return loss


def get_loss(name: str) -> Loss:
    """The loss ``name`` with its default parameters (equal to ``make_loss(name)``)."""
    if name not in LOSSES:
        raise UsageError(f"--loss must be one of {', '.join(LOSSES)}, got {name!r}")
    return LOSSES[name]
