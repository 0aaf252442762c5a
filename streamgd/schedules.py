"""Learning-rate schedules: pure functions of the global step, so they continue exactly across
a resume or a warm start.
"""

from __future__ import annotations

from collections.abc import Callable

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


SCHEDULES: dict[str, Callable[..., Schedule]] = {"constant": constant, "invscaling": invscaling}


def make_schedule(name: str, lr: float, **hyper: float) -> Schedule:
    from .errors import UsageError

    if name not in SCHEDULES:
        raise UsageError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {name!r}")
    return SCHEDULES[name](lr, **hyper)
