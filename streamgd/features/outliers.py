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
outside the statistics sample the same way. Under ``warn`` the outlier bounds are saved too,
and training warns once per column about an outlier outside the statistics sample (see
:class:`OutlierNotes`); evaluation and prediction use such values without a word.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from threading import Lock

import numpy as np

from ..choices import OUTLIER_POLICIES
from ..errors import DataError

__all__ = [
    "OUTLIER_POLICIES",
    "OUTLIER_SPREADS",
    "HARD_LIMIT",
    "reference",
    "policy_bounds",
    "Screen",
    "guard",
    "OutlierNotes",
]

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
            col = col[np.isfinite(col)].astype(np.float64)  # a float32 piece: as in float64
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

    def quiet(self, m: np.ndarray) -> bool:
        """Whether calling this screen on ``m`` (raw rows, as :meth:`__call__` takes them)
        would change nothing, itself included: its reference is fixed and no checked column
        holds a value outside the policy's bounds. Then it need not see ``m``'s rows piece by
        piece (see :meth:`streamgd.decode.Decoder.decode_units`)."""
        if self.median is None:
            return False
        low, high = policy_bounds(self.median, self.spread, "error")
        with np.errstate(invalid="ignore"):
            for j in np.flatnonzero(self.checked):
                col = m[:, j]
                if np.fmin.reduce(col) < low[j] or np.fmax.reduce(col) > high[j]:
                    return False
        return True

    def bounds(self) -> np.ndarray | None:
        """(3, columns): the policy's low and high bounds in raw units (+-inf for columns not
        checked) and the medians; under ``warn`` (5, columns), with the outlier bounds
        ``m +- OUTLIER_SPREADS s`` below them (for training's warning, see :func:`guard`; the
        widened bounds again for a column this pass has warned about)."""
        if self.median is None:
            return None
        rows = [policy_bounds(self.median, self.spread, self.policy)]
        if self.policy == "warn":
            # a column this pass warned about has had its warning: its outlier bounds are the
            # widened ones, so training does not warn about it again
            low, high = policy_bounds(self.median, self.spread, "error")
            warned = np.isin(np.arange(len(low)), list(self.seen))
            rows.append((np.where(warned, rows[0][0], low), np.where(warned, rows[0][1], high)))
        stacked = []
        for low, high in rows:
            stacked.append(np.where(self.checked, np.stack([low, high]), [[-np.inf], [np.inf]]))
        return np.vstack([stacked[0], self.median, *stacked[1:]])

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


class OutlierNotes:
    """The outliers training meets under ``warn`` (values beyond ``OUTLIER_SPREADS`` spreads,
    used as they are): the first of each column, as a warning, recorded by :func:`guard` on the
    prefetch thread and taken once per column by :meth:`drain` on the training thread."""

    def __init__(self) -> None:
        self._lock = Lock()
        self._noted: set[int] = set()  # columns with a note, drained or not
        self._pending: list[tuple[int, str]] = []

    def wants(self, j: int) -> bool:
        return j not in self._noted  # a set lookup: no lock needed to ask

    def add(self, j: int, message: str) -> None:
        with self._lock:
            if j not in self._noted:
                self._noted.add(j)
                self._pending.append((j, message))

    def merge(self, items) -> None:
        """Add (column, warning) pairs, as :meth:`drain_items` gives them (a Dask worker's)."""
        for j, message in items:
            self.add(j, message)

    def drain(self) -> list[str]:
        """The notes not taken yet (each column's at most once)."""
        return [message for _, message in self.drain_items()]

    def drain_items(self) -> list[tuple[int, str]]:
        """The notes not taken yet with their column index (a Dask worker's, for the driver's
        :meth:`add`)."""
        if not self._pending:
            return []
        with self._lock:
            out, self._pending = self._pending, []
        return out


def _training_note(
    column: str, value: float, path: str, row: int, median: float, reach: float
) -> str:
    return (
        f"{path}: column {column!r}: a value more than {reach:g} from the median {median:g} "
        f"(first at row {row}: {value:g}), met in training outside the statistics sample; "
        "used as it is (--outliers clip clips such values, --outliers error stops at them)"
    )


def guard(
    bounds: np.ndarray,
    policy: str,
    columns: Sequence[str],
    notes: OutlierNotes | None = None,
):
    """The check of a column's raw decoded values against a spec's ``bounds`` (low, high and
    median of each column, as :meth:`Screen.bounds` gives them):
    ``check(j, values, path, first_row) -> values``, clipped (a copy) under ``clip``, else the
    first finite value outside them refused. Infinities are left to the ``--infinite``
    policy. None when no bound is finite.

    With ``notes`` and the outlier bounds (rows 3 and 4, saved under ``warn`` since they
    were added; older files have none), a column's first value beyond them but within the
    policy's bounds is recorded in ``notes`` and used as it is."""
    if bounds is None or not np.isfinite(bounds[:2]).any():
        return None
    low, high, median = bounds[0], bounds[1], bounds[2]
    tight = notes is not None and policy == "warn" and len(bounds) >= 5
    # the fast path's bounds: the outlier bounds when noting (inside the policy's)
    fast_low, fast_high = (bounds[3], bounds[4]) if tight else (low, high)

    def check(j: int, values: np.ndarray, path: str, first_row: int) -> np.ndarray:
        if j >= len(columns) or not len(values) or not np.isfinite(bounds[:2, j]).any():
            return values
        with np.errstate(invalid="ignore"):
            lo, hi = np.fmin.reduce(values), np.fmax.reduce(values)
            if not (lo < fast_low[j] or hi > fast_high[j]):
                return values
            if not tight or lo < low[j] or hi > high[j]:
                out = np.isfinite(values) & ((values < low[j]) | (values > high[j]))
                if out.any():
                    return _beyond(j, values, out, path, first_row)
            if tight and notes.wants(j):  # type: ignore[union-attr]
                _note(j, values, path, first_row)
        return values

    def quiet(j: int, values: np.ndarray) -> bool:
        """Whether ``check(j, values, ...)`` would return ``values`` as they are and record
        nothing (so a group of pieces decoded together need not be checked piece by piece)."""
        if j >= len(columns) or not len(values) or not np.isfinite(bounds[:2, j]).any():
            return True
        with np.errstate(invalid="ignore"):
            lo, hi = np.fmin.reduce(values), np.fmax.reduce(values)
            return not (lo < fast_low[j] or hi > fast_high[j])

    check.quiet = quiet  # type: ignore[attr-defined]

    def _beyond(j: int, values: np.ndarray, out: np.ndarray, path: str, first_row: int):
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

    def _note(j: int, values: np.ndarray, path: str, first_row: int) -> None:
        """Record the piece's first value beyond the outlier bounds (if any is finite)."""
        out = np.isfinite(values) & ((values < fast_low[j]) | (values > fast_high[j]))
        if not out.any():  # only infinities, left to --infinite
            return
        i = int(np.argmax(out))
        notes.add(  # type: ignore[union-attr]
            j,
            _training_note(
                columns[j],
                float(values[i]),
                path,
                first_row + i + 1,
                float(median[j]),
                float(fast_high[j] - median[j]),
            ),
        )

    return check


def _raise(error: DataError):
    raise error
