"""Optimisers as pairs of pure functions over explicit state (in the style of optax).

``init(params) -> state`` and ``update(grad, state, params, lr) -> (step, state)``, where the
new parameters are ``params + step`` and the state is a dict of numpy arrays, so it goes into a
checkpoint as it is. Hyperparameters are bound when the optimiser is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

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


OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {"sgd": sgd, "momentum": momentum, "adam": adam}


def make_optimizer(name: str, **hyper: float) -> Optimizer:
    from .errors import UsageError

    if name not in OPTIMIZERS:
        raise UsageError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    return OPTIMIZERS[name](**hyper)
