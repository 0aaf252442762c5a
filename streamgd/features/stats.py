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
    """

    rows: int
    count: np.ndarray  # non-missing values per column
    mean: np.ndarray
    comoment: np.ndarray
    missing: np.ndarray

    @staticmethod
    def of(x: np.ndarray, *, overwrite: bool = False) -> Stats:
        """The statistics of the rows of ``x``; with ``overwrite``, ``x`` may be used as
        scratch space (saves allocating, and page-faulting, a copy of it)."""
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
        """Chan et al.'s pairwise update of means and co-moments."""
        n = self.count + other.count
        with np.errstate(over="ignore", invalid="ignore"):
            delta = other.mean - self.mean
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            frac = np.where(n > 0, other.count / np.maximum(n, 1), 0.0)
        mean = self.mean + delta * frac
        # per-column weights n_a n_b / n make the diagonal (the variances) exact with missing
        # values; off the diagonal the cross term is the usual approximation for pairs
        with np.errstate(invalid="ignore", divide="ignore"):
            w = np.where(n > 0, self.count * other.count / np.maximum(n, 1), 0.0)
        with np.errstate(over="ignore", invalid="ignore"):
            d = delta * np.sqrt(w)
            cross = np.outer(d, d)
            comoment = self.comoment + other.comoment + cross
        return Stats(self.rows + other.rows, n, mean, comoment, self.missing + other.missing)

    def unusable_columns(self) -> np.ndarray:
        """Indices of the columns whose mean or variance overflowed float64 (values or spreads
        beyond about 1e154): their statistics say nothing."""
        diag = np.diag(self.comoment)
        return np.flatnonzero(~(np.isfinite(self.mean) & np.isfinite(diag)))

    def largest_share(self, largest: np.ndarray) -> np.ndarray:
        """The fraction of each column's sum of squared deviations that one value ``largest[j]``
        away from the mean would hold (1 for a column without spread)."""
        with np.errstate(all="ignore"):
            share = np.asarray(largest, dtype=np.float64) ** 2 / np.diag(self.comoment)
        return np.where(np.isfinite(share), np.minimum(share, 1.0), 1.0)

    @property
    def std(self) -> np.ndarray:
        var = np.where(self.count > 1, np.diag(self.comoment) / np.maximum(self.count - 1, 1), 0)
        return np.sqrt(np.maximum(var, 0.0))

    @property
    def imputed_std(self) -> np.ndarray:
        """Standard deviation of the columns as training sees them: missing values replaced by
        the mean (so they add rows but no spread). Consistent with :meth:`correlation`, which
        keeps the preconditioner true to the standardised data."""
        var = np.diag(self.comoment) / max(self.rows - 1, 1)
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
