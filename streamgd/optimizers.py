"""Optimisers as pairs of pure functions over explicit state (in the style of optax).

``init(params) -> state`` and ``update(grad, state, params, lr) -> (step, state)``, where the
new parameters are ``params + step`` and the state is a dict of numpy arrays, so it goes into a
checkpoint as it is. Hyperparameters are bound when the optimiser is built; factories ignore
hyperparameters they do not take, and the newer ones read ``None`` as their default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .constraints import Interval
from .errors import UsageError

__all__ = ["Optimizer", "OPTIMIZERS", "make_optimizer"]

Array = np.ndarray
State = dict[str, Array]


@dataclass(frozen=True)
class Optimizer:
    name: str
    init: Callable[[Array], State]
    update: Callable[[Array, State, Array, float], tuple[Array, State]]


def sgd(**_: float) -> Optimizer:
    """Plain gradient descent: ``step = -lr * g``."""
    return Optimizer("sgd", lambda params: {}, lambda g, s, params, lr: (-lr * g, s))


def momentum(*, momentum: float = 0.9, **_: float) -> Optimizer:
    """Heavy-ball momentum: ``v = beta * v + g``; ``step = -lr * v``."""

    def init(params: Array) -> State:
        return {"velocity": np.zeros_like(params)}

    def update(g: Array, s: State, params: Array, lr: float) -> tuple[Array, State]:
        v = momentum * s["velocity"] + g
        return -lr * v, {"velocity": v}

    return Optimizer("momentum", init, update)


def adam(*, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, **_: float) -> Optimizer:
    """Adam (Kingma & Ba 2015) with bias correction:
    ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``,
    ``step = -lr * m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1 - b1^t)``.
    """

    def init(params: Array) -> State:
        z = np.zeros_like(params)
        return {"count": np.zeros((), dtype=np.int64), "mu": z, "nu": z.copy()}

    def update(g: Array, s: State, params: Array, lr: float) -> tuple[Array, State]:
        t = np.asarray(s["count"] + 1)
        mu = beta1 * s["mu"] + (1.0 - beta1) * g
        nu = beta2 * s["nu"] + (1.0 - beta2) * (g * g)
        m_hat = mu / (1.0 - beta1**t)
        v_hat = nu / (1.0 - beta2**t)
        return -lr * m_hat / (np.sqrt(v_hat) + eps), {"count": t, "mu": mu, "nu": nu}

    return Optimizer("adam", init, update)


def nesterov(*, momentum: float | None = None, **_: object) -> Optimizer:
    """Nesterov momentum in PyTorch's form: ``v = mu v + g``; ``step = -lr (g + mu v)``, the
    gradient step plus the look-ahead of the next momentum step (``momentum`` mu, 0.9).

    >>> opt = nesterov(momentum=0.5)
    >>> step, _ = opt.update(np.array([2.0]), opt.init(np.zeros(1)), np.zeros(1), 0.1)
    >>> step.tolist()  # v = 2: -0.1 * (2 + 0.5 * 2)
    [-0.30000000000000004]
    """
    mu = Interval(lo=0.0, hi=1.0).get("momentum", momentum, 0.9)

    def init(params: Array) -> State:
        return {"velocity": np.zeros_like(params)}

    def update(g: Array, s: State, params: Array, lr: float) -> tuple[Array, State]:
        v = mu * s["velocity"] + g
        return -lr * (g + mu * v), {"velocity": v}

    return Optimizer("nesterov", init, update)


def adagrad(
    *, eps: float | None = None, initial_accumulator: float | None = None, **_: object
) -> Optimizer:
    """AdaGrad (Duchi et al. 2011): ``a = a + g^2``; ``step = -lr g / (sqrt(a) + eps)``, with
    ``a`` starting at ``initial_accumulator`` (0) and ``eps`` 1e-10, as in PyTorch.

    >>> opt = adagrad()
    >>> step, s = opt.update(np.array([2.0]), opt.init(np.zeros(1)), np.zeros(1), 0.1)
    >>> step.round(9).tolist(), s["sum_sq"].tolist()
    ([-0.1], [4.0])
    """
    eps = Interval(lo=0.0, lo_open=True).get("eps", eps, 1e-10)
    a0 = Interval(lo=0.0).get("initial_accumulator", initial_accumulator, 0.0)

    def init(params: Array) -> State:
        return {"sum_sq": np.full_like(params, a0)}

    def update(g: Array, s: State, params: Array, lr: float) -> tuple[Array, State]:
        a = s["sum_sq"] + g * g
        return -lr * g / (np.sqrt(a) + eps), {"sum_sq": a}

    return Optimizer("adagrad", init, update)


def rmsprop(*, decay: float | None = None, eps: float | None = None, **_: object) -> Optimizer:
    """RMSprop (Hinton 2012): ``v = d v + (1-d) g^2``; ``step = -lr g / (sqrt(v) + eps)``, with
    ``decay`` d 0.9 and ``eps`` 1e-8 added outside the root (as PyTorch; optax adds it inside).

    >>> opt = rmsprop()
    >>> step, s = opt.update(np.array([2.0]), opt.init(np.zeros(1)), np.zeros(1), 0.1)
    >>> step.round(6).tolist(), s["nu"].round(12).tolist()  # -0.1 * 2 / sqrt(0.4)
    ([-0.316228], [0.4])
    """
    d = Interval(lo=0.0, hi=1.0, hi_open=True).get("decay", decay, 0.9)
    eps = Interval(lo=0.0, lo_open=True).get("eps", eps, 1e-8)

    def init(params: Array) -> State:
        return {"nu": np.zeros_like(params)}

    def update(g: Array, s: State, params: Array, lr: float) -> tuple[Array, State]:
        nu = d * s["nu"] + (1.0 - d) * (g * g)
        return -lr * g / (np.sqrt(nu) + eps), {"nu": nu}

    return Optimizer("rmsprop", init, update)


def adamw(
    *,
    beta1: float | None = None,
    beta2: float | None = None,
    eps: float | None = None,
    weight_decay: float | None = None,
    decay_last: bool = False,
    **_: object,
) -> Optimizer:
    """AdamW (Loshchilov & Hutter 2019): Adam's step plus decoupled weight decay,
    ``step = adam_step - lr * weight_decay * params`` (``weight_decay`` 0.01). The trainer
    keeps the intercept last in ``params``; it is not decayed unless ``decay_last``. With
    ``weight_decay=0`` the steps are Adam's to the bit; the state is Adam's too.

    >>> opt = adamw(weight_decay=0.5)
    >>> params = np.array([2.0, 2.0])  # a weight and the intercept
    >>> step, _ = opt.update(np.zeros(2), opt.init(params), params, 0.1)
    >>> (step + 0.0).tolist()  # zero gradient: only the weight decays, by 0.1 * 0.5 * 2
    [-0.1, 0.0]
    """
    wd = Interval(lo=0.0).get("weight_decay", weight_decay, 0.01)
    given = {"beta1": beta1, "beta2": beta2, "eps": eps}
    base = adam(**{k: v for k, v in given.items() if v is not None})

    def update(g: Array, s: State, params: Array, lr: float) -> tuple[Array, State]:
        step, state = base.update(g, s, params, lr)
        if wd:
            decay = lr * wd * params
            if not decay_last and len(decay):
                decay[-1] = 0.0
            step = step - decay
        return step, state

    return Optimizer("adamw", base.init, update)


OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "sgd": sgd,
    "momentum": momentum,
    "nesterov": nesterov,
    "adagrad": adagrad,
    "rmsprop": rmsprop,
    "adam": adam,
    "adamw": adamw,
}


def make_optimizer(name: str, **hyper: float) -> Optimizer:
    if name not in OPTIMIZERS:
        raise UsageError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    return OPTIMIZERS[name](**hyper)
