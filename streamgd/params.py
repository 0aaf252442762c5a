"""Checks of hyperparameters at the boundary: a value (the default when None) inside its
interval, or a UsageError naming the option, what is allowed and what was given."""

from __future__ import annotations

import math
from numbers import Integral, Real

from .errors import UsageError

__all__ = ["check_number", "check_integer"]


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_number(
    name: str,
    value: float | None,
    default: float,
    *,
    lo: float,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """``value`` (``default`` when None) as a float inside ``[lo, hi]`` (ends open as asked).

    >>> check_number("gamma", None, 0.5, lo=0.0, lo_open=True, hi=1.0)
    0.5
    """
    if value is None:
        return default
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo)
    ok = ok and (hi is None or (value < hi if hi_open else value <= hi))
    if not ok:
        upper = "" if hi is None else f" and {'<' if hi_open else '<='} {hi:g}"
        allowed = f"a number {'>' if lo_open else '>='} {lo:g}{upper}"
        raise UsageError(f"{_option(name)} must be {allowed}, got {value!r}")
    return float(value)


def check_integer(name: str, value: int | None, default: int, *, lo: int) -> int:
    """``value`` (``default`` when None) as an int ``>= lo``."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, Integral) or value < lo:
        raise UsageError(f"{_option(name)} must be an integer >= {lo}, got {value!r}")
    return int(value)
