"""Column statistics (NaN-aware, mergeable chunk by chunk) and the preconditioner built from
their correlations. Pure arithmetic: the pass that reads the data is :mod:`streamgd.stats_pass`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .rows import all_finite

__all__ = ["Stats", "MIN_EIGENVALUE", "preconditioner"]


@dataclass(frozen=True)
class Stats:
    """Column statistics from the statistics pass, NaN-aware, mergeable chunk by chunk.

    ``comoment`` is the matrix of summed products of deviations from the mean (missing values
    count as the mean); its diagonal gives the variances and the whole the correlations.

    Weighted statistics (rows weighted by ``--weight`` and class weights) also carry
    ``total``, the rows' summed weight, and ``wcount``, each column's summed weight of
    non-missing values; means and co-moments are then weighted, and variances are the weighted
    mean square times ``n / (n - 1)`` (so that scaling every weight changes nothing).
    """

    rows: int
    count: np.ndarray  # non-missing values per column
    mean: np.ndarray
    comoment: np.ndarray
    missing: np.ndarray
    total: float | None = None  # weighted statistics: the rows' summed weight (else None)
    wcount: np.ndarray | None = None  # ... and each column's non-missing values' weight

    @staticmethod
    def of(
        x: np.ndarray, *, overwrite: bool = False, weights: np.ndarray | None = None
    ) -> Stats:
        """The statistics of the rows of ``x`` (weighted by ``weights``, one per row, when
        given); with ``overwrite``, ``x`` may be used as scratch space (saves allocating, and
        page-faulting, a copy of it)."""
        if weights is not None:
            return _weighted(x, np.asarray(weights, dtype=np.float64))
        k = x.shape[1]
        if len(x) == 0:
            zeros = np.zeros(k, dtype=np.int64)
            return Stats(0, zeros, np.zeros(k), np.zeros((k, k)), zeros.copy())
        if all_finite(x):  # no missing values: the fast path
            with np.errstate(over="ignore", invalid="ignore"):  # overflow: see finite_columns
                mean = x.mean(axis=0)
                dev = np.subtract(x, mean, out=x) if overwrite and x.flags.writeable else x - mean
                comoment = dev.T @ dev
            count = np.full(x.shape[1], len(x))
            return Stats(len(x), count, mean, comoment, np.zeros(x.shape[1], dtype=np.int64))
        nan = np.isnan(x)
        count = (~nan).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            total = np.where(nan, 0.0, x).sum(axis=0)
            mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
            dev = np.where(nan, 0.0, x - mean)
            comoment = dev.T @ dev
        return Stats(len(x), count, mean, comoment, nan.sum(axis=0))

    def merge(self, other: Stats) -> Stats:
        """Chan et al.'s pairwise update of means and co-moments (weighted: with the columns'
        summed weights in place of their counts)."""
        weighted = self.total is not None or other.total is not None
        n_a, n_b = (self.wcounts, other.wcounts) if weighted else (self.count, other.count)
        n = n_a + n_b
        with np.errstate(over="ignore", invalid="ignore"):
            delta = other.mean - self.mean
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            frac = np.where(n > 0, n_b / np.where(n > 0, n, 1), 0.0)
        mean = self.mean + delta * frac
        # per-column weights n_a n_b / n make the diagonal (the variances) exact with missing
        # values; off the diagonal the cross term is the usual approximation for pairs
        with np.errstate(invalid="ignore", divide="ignore"):
            w = np.where(n > 0, n_a * n_b / np.where(n > 0, n, 1), 0.0)
        with np.errstate(over="ignore", invalid="ignore"):
            d = delta * np.sqrt(w)
            cross = np.outer(d, d)
            comoment = self.comoment + other.comoment + cross
        rows, missing = self.rows + other.rows, self.missing + other.missing
        if not weighted:
            return Stats(rows, n, mean, comoment, missing)
        total = self.weight_total + other.weight_total
        return Stats(rows, self.count + other.count, mean, comoment, missing, total, n)

    @property
    def weight_total(self) -> float:
        """The rows' summed weight (their number when unweighted)."""
        return float(self.rows) if self.total is None else self.total

    @property
    def wcounts(self) -> np.ndarray:
        """Each column's summed weight of non-missing values (their count when unweighted)."""
        return self.count.astype(np.float64) if self.wcount is None else self.wcount

    def scaled(self, factor: float) -> Stats:
        """The same rows with every weight multiplied by ``factor`` (a class's weight)."""
        return Stats(
            self.rows,
            self.count,
            self.mean,
            self.comoment * factor,
            self.missing,
            self.weight_total * factor,
            self.wcounts * factor,
        )

    def unusable_columns(self) -> np.ndarray:
        """Indices of the columns whose mean or variance overflowed float64 (values or spreads
        beyond about 1e154): their statistics say nothing."""
        diag = np.diag(self.comoment)
        return np.flatnonzero(~(np.isfinite(self.mean) & np.isfinite(diag)))

    def largest_share(self, largest: np.ndarray) -> np.ndarray:
        """The fraction of each column's sum of squared deviations that one value ``largest[j]``
        away from the mean would hold (1 for a column without spread)."""
        with np.errstate(all="ignore"):
            # weighted: the squared deviations in units of one row of the mean weight
            per_row = 1.0 if self.total is None else self.rows / self.total
            share = np.asarray(largest, dtype=np.float64) ** 2 / (np.diag(self.comoment) * per_row)
        return np.where(np.isfinite(share), np.minimum(share, 1.0), 1.0)

    @property
    def std(self) -> np.ndarray:
        if self.total is not None:
            return _weighted_std(np.diag(self.comoment), self.wcounts, self.count)
        var = np.where(self.count > 1, np.diag(self.comoment) / np.maximum(self.count - 1, 1), 0)
        return np.sqrt(np.maximum(var, 0.0))

    @property
    def imputed_std(self) -> np.ndarray:
        """Standard deviation of the columns as training sees them: missing values replaced by
        the mean (so they add rows but no spread). Consistent with :meth:`correlation`, which
        keeps the preconditioner true to the standardised data."""
        diag = np.diag(self.comoment)
        if self.total is not None:
            k = len(diag)
            return _weighted_std(diag, np.full(k, self.total), np.full(k, self.rows))
        var = diag / max(self.rows - 1, 1)
        return np.sqrt(np.maximum(var, 0.0))

    def correlation(self, k: int) -> np.ndarray:
        """Correlation matrix of the first ``k`` columns (constant columns: identity rows)."""
        c = self.comoment[:k, :k]
        d = np.sqrt(np.diag(c))
        d = np.where(d > 0, d, 1.0)
        with np.errstate(over="ignore", invalid="ignore"):
            corr = c / np.outer(d, d)
        const = np.diag(c) <= 0
        corr[const, :] = 0.0
        corr[:, const] = 0.0
        corr[const, const] = 1.0
        return corr


def _weighted(x: np.ndarray, w: np.ndarray) -> Stats:
    """:meth:`Stats.of` with a weight per row (NaN: a missing value, skipped)."""
    k = x.shape[1]
    nan = np.isnan(x)
    wcount = (~nan).T.astype(np.float64) @ w
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        total = np.where(nan, 0.0, x * w[:, None]).sum(axis=0) if len(x) else np.zeros(k)
        mean = np.where(wcount > 0, total / np.where(wcount > 0, wcount, 1.0), 0.0)
        dev = np.where(nan, 0.0, x - mean)
        comoment = (dev * w[:, None]).T @ dev
    count = (~nan).sum(axis=0)
    return Stats(len(x), count, mean, comoment, nan.sum(axis=0), float(w.sum()), wcount)


def _weighted_std(diag: np.ndarray, weight: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Weighted standard deviation: the weighted mean square times ``n / (n - 1)``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where((count > 1) & (weight > 0), diag / weight * count / (count - 1), 0.0)
    return np.sqrt(np.maximum(var, 0.0))


# Smallest eigenvalue kept when inverting the correlation matrix: a duplicated or nearly
# collinear feature gets at most 1/MIN_EIGENVALUE times a plain step, never an infinite one.
MIN_EIGENVALUE = 1e-3


def preconditioner(corr: np.ndarray) -> np.ndarray:
    """Inverse of a correlation matrix with its eigenvalues floored at ``MIN_EIGENVALUE``.

    >>> preconditioner(np.eye(2)).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    vals, vecs = np.linalg.eigh(corr)
    inv = (vecs / np.maximum(vals, MIN_EIGENVALUE)) @ vecs.T
    return (inv + inv.T) / 2
