"""Learning-rate schedules: pure functions of the global step, so they continue exactly across
a resume or a warm start.

Factories take the base rate and their hyperparameters as keywords; they ignore those they do
not take, read ``None`` as the default, and raise :class:`~streamgd.errors.UsageError` naming
the option (``--step-size``) for a value out of range.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .constraints import Integer, Interval
from .errors import UsageError

__all__ = ["SCHEDULES", "make_schedule"]

Schedule = Callable[[int], float]


def constant(lr: float, **_: float) -> Schedule:
    """``lr`` at every step.

    >>> constant(0.1)(1000)
    0.1
    """
    return lambda step: lr


def invscaling(lr: float, *, power_t: float = 0.25, **_: float) -> Schedule:
    """Inverse scaling, ``lr / (step + 1) ** power_t`` (scikit-learn's ``invscaling``).

    >>> invscaling(1.0, power_t=0.5)(3)
    0.5
    """
    return lambda step: lr / (step + 1) ** power_t


def step_decay(
    lr: float, *, step_size: int | None = None, gamma: float | None = None, **_: object
) -> Schedule:
    """Step decay, ``lr * gamma ** (step // step_size)``: the rate is multiplied by ``gamma``
    (0.5) every ``step_size`` (1000) steps (PyTorch's ``StepLR``).

    >>> step_decay(1.0, step_size=10, gamma=0.5)(25)
    0.25
    """
    size = Integer(1).get("step_size", step_size, 1000)
    g = Interval(lo=0.0, lo_open=True, hi=1.0).get("gamma", gamma, 0.5)
    return lambda step: float(lr * g ** (step // size))


def exponential(lr: float, *, gamma: float | None = None, **_: object) -> Schedule:
    """Exponential decay, ``lr * gamma ** step`` (``gamma`` 0.999).

    >>> exponential(1.0, gamma=0.5)(3)
    0.125
    """
    g = Interval(lo=0.0, lo_open=True, hi=1.0).get("gamma", gamma, 0.999)
    return lambda step: float(lr * g**step)


def cosine(
    lr: float,
    *,
    decay_steps: int | None = None,
    warmup_steps: int | None = None,
    min_factor: float | None = None,
    **_: object,
) -> Schedule:
    """Linear warmup, then cosine decay to a floor. With ``W`` warmup steps (0), ``D`` decay
    steps (10000) and floor factor ``f`` (0): ``lr * (step + 1) / W`` for ``step < W`` (the
    first step already moves; ``step = W - 1`` reaches ``lr``), then
    ``lr * (f + (1 - f) * (1 + cos(pi * u)) / 2)`` with ``u = min(step - W, D) / D``, so the
    rate stays at ``lr * f`` from ``step = W + D`` on.

    >>> sched = cosine(1.0, warmup_steps=4, decay_steps=10, min_factor=0.1)
    >>> [round(sched(t), 4) for t in (0, 3, 4, 9, 14, 100)]
    [0.25, 1.0, 1.0, 0.55, 0.1, 0.1]
    """
    d = Integer(1).get("decay_steps", decay_steps, 10_000)
    w = Integer(0).get("warmup_steps", warmup_steps, 0)
    f = Interval(lo=0.0, hi=1.0).get("min_factor", min_factor, 0.0)

    def schedule(step: int) -> float:
        if step < w:
            return lr * (step + 1) / w
        u = min(step - w, d) / d
        return lr * (f + (1.0 - f) * 0.5 * (1.0 + math.cos(math.pi * u)))

    return schedule


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": constant,
    "invscaling": invscaling,
    "step": step_decay,
    "exponential": exponential,
    "cosine": cosine,
}


def make_schedule(name: str, lr: float, **hyper: object) -> Schedule:
    if name not in SCHEDULES:
        raise UsageError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {name!r}")
    return SCHEDULES[name](lr, **hyper)
