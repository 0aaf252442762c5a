"""The one vocabulary of allowed values, scikit-learn style: a constraint checks a value at
the boundary and raises a UsageError naming the option, what is allowed and what was given.

The settings' declarations (:mod:`streamgd.settings`, on the fields of FitConfig and
RunOptions) and the algorithm factories (losses, optimisers, schedules) use the same objects, so
a rule and its wording live in one place; the command line's click types are derived from them
(``streamgd.cli.options.click_type``). It sits apart from ``config`` because those factories
sit below it in the import graph.

>>> Interval(0, 1, lo_open=True).check("gamma", 2.0)
Traceback (most recent call last):
...
streamgd.errors.UsageError: --gamma must be a number > 0 and <= 1, got 2.0
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from .errors import UsageError

__all__ = [
    "Constraint",
    "Interval",
    "Integer",
    "Options",
    "Flag",
    "Names",
    "Size",
    "option_name",
    "parse_size",
]


def option_name(name: str) -> str:
    """``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


class Constraint:
    """What a value must be: ``allows(value)`` and ``text`` ("a number > 0")."""

    text = ""

    def allows(self, value: Any) -> bool:
        raise NotImplementedError

    def check(self, name: str, value: Any) -> Any:
        """``value`` unchanged, or a UsageError ``--name must be TEXT, got VALUE``."""
        if not self.allows(value):
            raise UsageError(f"{option_name(name)} must be {self.text}, got {value!r}")
        return value

    def get(self, name: str, value: Any, default: Any) -> Any:
        """A factory's hyperparameter: ``default`` when None, else the checked value."""
        return default if value is None else self.check(name, value)


@dataclass(frozen=True)
class Interval(Constraint):
    """A finite real number (not a bool) between ``lo`` and ``hi``, ends open as asked."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    describe: str | None = None  # wording that replaces the generated one

    @property
    def text(self) -> str:  # type: ignore[override]
        if self.describe is not None:
            return self.describe
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
        return "a number " + " and ".join(parts)

    def allows(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)

    def get(self, name: str, value: Any, default: Any) -> Any:
        return default if value is None else float(self.check(name, value))


@dataclass(frozen=True)
class Integer(Constraint):
    """An integer (not a bool) ``>= lo`` and, when given, ``<= hi``."""

    lo: int = 0
    hi: int | None = None

    @property
    def text(self) -> str:  # type: ignore[override]
        if self.hi is None:
            return f"an integer >= {self.lo}"
        return f"an integer from {self.lo} to {self.hi}"

    def allows(self, value: Any) -> bool:
        ok = isinstance(value, Integral) and not isinstance(value, bool) and value >= self.lo
        return ok and (self.hi is None or value <= self.hi)

    def get(self, name: str, value: Any, default: Any) -> Any:
        return default if value is None else int(self.check(name, value))


@dataclass(frozen=True)
class Options(Constraint):
    """One of a fixed set of names (a registry's keys)."""

    choices: tuple[str, ...]

    def __init__(self, choices: Iterable[str]) -> None:
        object.__setattr__(self, "choices", tuple(choices))

    @property
    def text(self) -> str:  # type: ignore[override]
        return "one of " + ", ".join(self.choices)

    def allows(self, value: Any) -> bool:
        return value in self.choices


@dataclass(frozen=True)
class Flag(Constraint):
    """True or false (a bool, not a truthy value)."""

    text = "true or false"

    def allows(self, value: Any) -> bool:
        return isinstance(value, bool)


@dataclass(frozen=True)
class Names(Constraint):
    """A list of non-empty strings (column names, paths)."""

    what: str = "column names"

    @property
    def text(self) -> str:  # type: ignore[override]
        return f"a list of {self.what}"

    def allows(self, value: Any) -> bool:
        return isinstance(value, list | tuple) and all(isinstance(x, str) and x for x in value)


# A size's units: decimal (kB, MB, GB, TB and Kubernetes' k, M, G, T) and binary (KiB, MiB,
# GiB, TiB and Ki, Mi, Gi, Ti); B or none: bytes. Case does not matter.
_SIZE_UNITS = {"": 1, "b": 1}
for _i, _p in enumerate("kmgt", start=1):
    _SIZE_UNITS.update({_p: 1000**_i, _p + "b": 1000**_i, _p + "i": 1024**_i, _p + "ib": 1024**_i})


def parse_size(text: str) -> int | None:
    """Bytes of a size such as ``200MB``, ``1.5GiB`` or ``512Mi`` (None if it is not one).

    >>> parse_size("200MB"), parse_size("1.5GiB"), parse_size("64 mib"), parse_size("fast")
    (200000000, 1610612736, 67108864, None)
    """
    text = str(text).strip().lower()
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz ")
    unit = text[len(number) :].strip()
    try:
        value = float(number)
    except ValueError:
        return None
    if unit not in _SIZE_UNITS or not math.isfinite(value) or value <= 0:
        return None
    return int(value * _SIZE_UNITS[unit])


@dataclass(frozen=True)
class Size(Constraint):
    """A memory size with its unit, as text: ``200MB``, ``1.5GiB``, ``512Mi``."""

    text = "a size such as 200MB or 1.5GiB (units: B, kB, MB, GB, KiB, MiB, GiB)"

    def allows(self, value: Any) -> bool:
        return isinstance(value, str) and parse_size(value) is not None
