"""Extreme values: found in the statistics pass, then clipped, refused or reported (``--outliers``).

A column's *reference* comes from the first pieces (at least ``MIN_REFERENCE_ROWS`` rows) the
statistics pass reads (a seeded choice, so the same every run): its median ``m`` and its
interquartile range ``s`` (the mean absolute deviation from the median when that range is 0,
and 1 when both are). A value is an outlier when
``|x - m| > OUTLIER_SPREADS * s``: about 74 standard deviations of normal data, so ordinary data
never has one, while a sentinel such as 1e30 or 9.99e99 always is one.

- ``warn`` (default): outliers are used as they are, with one warning per column naming its file
  and row and how much of the column's spread they hold; a value also more than
  ``HARD_LIMIT`` from the median is an error, since streaming rows as float32 and the variance in
  float64 would lose the rest of the column to it.
- ``clip``: outliers are clipped to ``m +- OUTLIER_SPREADS * s``, with one warning per column.
- ``error``: the first outlier stops the run, naming column, file and row.

The bounds are saved in the feature spec, so training, evaluation and prediction treat values
outside the statistics sample the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError

__all__ = [
    "OUTLIER_POLICIES",
    "OUTLIER_SPREADS",
    "HARD_LIMIT",
    "reference",
    "policy_bounds",
    "Screen",
    "guard",
]

OUTLIER_POLICIES = ("warn", "clip", "error")
OUTLIER_SPREADS = 100.0
HARD_LIMIT = 1e15
# The reference comes from the first pieces holding at least this many rows together (those
# before the last of them are not screened by the statistics pass; training checks their rows).
MIN_REFERENCE_ROWS = 100
# The reference's quartiles come from at most about twice this many evenly spaced rows.
REFERENCE_SAMPLE = 8192


def reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``x`` (NaN for missing): the median and the spread (interquartile range,
    else mean absolute deviation from the median, else 1).

    >>> m, s = reference(np.array([[1.0], [2.0], [3.0], [4.0], [1e30]]))
    >>> float(m[0]), float(s[0])
    (3.0, 2.0)
    """
    # quartiles of an evenly spaced subsample: exact enough for a bound of a hundred spreads,
    # and a sort of 8k values per column instead of a whole row group's (the pass's main cost)
    x = x[:: max(1, len(x) // REFERENCE_SAMPLE)]
    k = x.shape[1]
    median, spread = np.zeros(k), np.ones(k)
    with np.errstate(all="ignore"):
        for j in range(k):
            col = x[:, j]
            col = col[np.isfinite(col)]
            if not len(col):
                continue
            q1, med, q3 = np.quantile(col, [0.25, 0.5, 0.75])
            s = q3 - q1
            if not s > 0 or not np.isfinite(s):
                s = float(np.mean(np.abs(col - med)))
            median[j] = med
            spread[j] = s if s > 0 and np.isfinite(s) else 1.0
    return median, spread


def policy_bounds(
    median: np.ndarray, spread: np.ndarray, policy: str
) -> tuple[np.ndarray, np.ndarray]:
    """Where a value stops being usable under ``policy`` (raw units): ``m +- OUTLIER_SPREADS s``,
    widened to at least ``HARD_LIMIT`` under ``warn``."""
    with np.errstate(over="ignore"):
        reach = OUTLIER_SPREADS * spread
    if policy == "warn":
        reach = np.maximum(reach, HARD_LIMIT)
    return median - reach, median + reach


@dataclass
class _Seen:
    """Outliers of one column so far: their count, the first one's place and the largest."""

    count: int = 0
    first: tuple[str, int, float] | None = None
    largest: float = 0.0  # |x - m| of the furthest


@dataclass
class Screen:
    """The statistics pass's outlier check, applied to every raw piece before row preparation.

    The first piece fixes the reference; each piece is then checked (``checked`` marks the
    columns looked at: numeric features, and a regression target) and, per ``policy``,
    clipped, refused, or let through and remembered for :meth:`warnings`.
    """

    columns: Sequence[str]
    checked: np.ndarray  # bool per column
    policy: str = "warn"
    median: np.ndarray | None = None
    spread: np.ndarray | None = None
    seen: dict[int, _Seen] = field(default_factory=dict)
    early: list[np.ndarray] = field(default_factory=list)  # small pieces before the reference

    def __call__(self, m: np.ndarray, path: str, first_row: int) -> np.ndarray:
        if self.median is None:
            # a quartile of a few rows says little: small first pieces are kept (fewer than
            # MIN_REFERENCE_ROWS rows in all) until, with this one, there are enough
            early = [*self.early, m]
            if sum(map(len, early)) < MIN_REFERENCE_ROWS:
                self.early.append(m.copy())
                return m
            self.median, self.spread = reference(np.vstack(early) if self.early else m)
            self.early.clear()
        low, high = policy_bounds(self.median, self.spread, "error")
        hard_low, hard_high = policy_bounds(self.median, self.spread, self.policy)
        for j in np.flatnonzero(self.checked):
            col = m[:, j]
            with np.errstate(invalid="ignore"):
                # two reductions rule out almost every column before any mask is built
                if not (np.fmin.reduce(col) < low[j] or np.fmax.reduce(col) > high[j]):
                    continue
                out = np.isfinite(col) & ((col < low[j]) | (col > high[j]))
            if not out.any():
                continue
            rows = np.flatnonzero(out)
            seen = self.seen.setdefault(int(j), _Seen())
            if seen.first is None:
                seen.first = (path, first_row + int(rows[0]) + 1, float(col[rows[0]]))
            seen.count += len(rows)
            seen.largest = max(seen.largest, float(np.max(np.abs(col[rows] - self.median[j]))))
            if self.policy == "clip":
                col[rows] = np.clip(col[rows], low[j], high[j])
                continue
            beyond = (
                rows
                if self.policy == "error"
                else rows[(col[rows] < hard_low[j]) | (col[rows] > hard_high[j])]
            )
            if len(beyond):
                raise _outlier_error(
                    self.columns[j],
                    float(col[beyond[0]]),
                    path,
                    first_row + int(beyond[0]) + 1,
                    float(self.median[j]),
                    float(high[j] - self.median[j]),
                    self.policy,
                )
        return m

    def bounds(self) -> np.ndarray | None:
        """(3, columns): the policy's low and high bounds in raw units (+-inf for columns not
        checked) and the medians."""
        if self.median is None:
            return None
        low, high = policy_bounds(self.median, self.spread, self.policy)
        limits = np.where(self.checked, np.stack([low, high]), [[-np.inf], [np.inf]])
        return np.vstack([limits, self.median])

    def warnings(self, share: np.ndarray) -> list[str]:
        """One warning per column with outliers; ``share[j]``: the fraction of column ``j``'s
        sum of squared deviations held by its furthest value (after clipping, if clipped)."""
        out = []
        for j, seen in sorted(self.seen.items()):
            path, row, value = seen.first  # type: ignore[misc]
            reach = OUTLIER_SPREADS * float(self.spread[j])
            where = (
                f"{path}: column {self.columns[j]!r}: {seen.count} value(s) more than {reach:g} "
            )
            where += f"from the median {float(self.median[j]):g} (first at row {row}: {value:g})"
            if self.policy == "clip":
                out.append(f"{where}; clipped to the median +- {reach:g}")
                continue
            dominated = (
                f": the largest holds {share[j]:.0%} of the column's spread, so the column's "
                "weight fits it rather than the other rows"
                if share[j] >= 0.5
                else ""
            )
            out.append(
                f"{where}; used as they are{dominated} (--outliers clip clips them, "
                "--outliers error stops at them)"
            )
        return out


def _outlier_error(
    column: str, value: float, path: str, row: int, median: float, reach: float, policy: str
) -> DataError:
    if policy == "error":
        why = f"more than {reach:g} from the column's median {median:g} (--outliers error)"
        hint = "--outliers clip clips such values, --outliers warn uses them"
    else:
        why = f"more than {HARD_LIMIT:g} from the column's median {median:g}"
        hint = "it would swamp the rest of the column; --outliers clip clips such values"
    return DataError(f"extreme value {value:g}: {why}; {hint}", path=path, column=column, row=row)


def guard(bounds: np.ndarray, policy: str, columns: Sequence[str]):
    """The check of a column's raw decoded values against a spec's ``bounds`` (low, high and
    median of each column, as :meth:`Screen.bounds` gives them):
    ``check(j, values, path, first_row) -> values``, clipped (a copy) under ``clip``, else the
    first finite value outside them refused. Infinities are left to the ``--infinite``
    policy. None when no bound is finite."""
    if bounds is None or not np.isfinite(bounds[:2]).any():
        return None
    low, high, median = bounds[0], bounds[1], bounds[2]

    def check(j: int, values: np.ndarray, path: str, first_row: int) -> np.ndarray:
        if j >= len(columns) or not len(values) or not np.isfinite(bounds[:2, j]).any():
            return values
        with np.errstate(invalid="ignore"):
            lo, hi = np.fmin.reduce(values), np.fmax.reduce(values)
            if not (lo < low[j] or hi > high[j]):
                return values
            out = np.isfinite(values) & ((values < low[j]) | (values > high[j]))
        if not out.any():
            return values
        if policy == "clip":
            values = values.copy()
            values[out] = np.clip(values[out], low[j], high[j])
            return values
        i = int(np.flatnonzero(out)[0])
        return _raise(
            _outlier_error(
                columns[j],
                float(values[i]),
                path,
                first_row + i + 1,
                float(median[j]),
                float(high[j] - median[j]),
                policy,
            )
        )

    return check


def _raise(error: DataError):
    raise error
