"""The optimisation step's direction for the text buckets' weights (see :mod:`streamgd.step`).

A text column's bucket columns ``X`` (rows, buckets) are sparse, non-negative and overlap
within a row, unlike one-hot columns. The plain direction is the batch gradient
``X.T @ g / n``. The Newton-like direction (with ``--precondition``) is a diagonal one in
batch-centred coordinates: ``Xc = X - 1 mu.T`` with ``mu`` the buckets' batch means, the model
``Xc w + b'`` being the same model as ``X w + b`` with ``b = b' - mu @ w``. Centring removes
the direction every bucket shares with the intercept (word counts are all positive), which
otherwise dominates the Hessian and forces tiny steps. Each bucket's step is its centred
gradient over its centred curvature ``sum_i c_i (x_ib - mu_b)^2``, times
``1 / (lam + columns + 1)``: ``lam`` is the largest eigenvalue of the Jacobi-scaled centred
Hessian (estimated on the batch by power iteration), ``columns`` (categorical) and 1 (the
numeric features and intercept) bound the other blocks, which step at the same time (the
scaled Hessian's largest eigenvalue is at most the sum of its blocks'). The intercept then
moves by ``-mu @ step`` so that the text step leaves the batch's mean prediction alone.
"""

from __future__ import annotations

import numpy as np

__all__ = ["text_direction", "MIN_TEXT_CURVATURE"]

# Floor of a bucket's curvature relative to its centred sum of squares (cf. step.MIN_CURVATURE).
MIN_TEXT_CURVATURE = 0.01


def text_direction(
    text: tuple[np.ndarray, np.ndarray],
    g: np.ndarray,
    curvature: np.ndarray | None,
    size: int,
    start: int,
    *,
    newton: bool,
    weight: np.ndarray | None = None,
    columns: int = 0,
) -> tuple[np.ndarray, np.ndarray | float]:
    """The text weights' direction and the intercept's shift (0 without ``newton``).

    ``text = (idx, val)``: (rows, slots) indices into the code weights, from ``start`` on, and
    their values; ``g`` the per-row loss gradients (weighted), ``curvature`` the per-row
    ``d2loss/dp2`` (None: squared loss, 1) before the sample ``weight``; ``size``: the text
    weights. See the module docstring."""
    idx, val = text
    n = len(g)
    # the work is on the slots in use (value not 0) and on the buckets the batch uses
    # (numbered 0.. in ``used``), not on all ``size`` weights
    nonzero = np.flatnonzero(val.ravel())
    used, flat = np.unique(idx.ravel()[nonzero], return_inverse=True)
    entries = (flat.ravel(), nonzero // idx.shape[1], val.ravel()[nonzero].astype(np.float64), n)
    g = np.asarray(g, dtype=np.float64)
    step, shift = _direction(entries, g, curvature, len(used), newton, weight, columns)
    out = np.zeros((size, *g.shape[1:]))
    out[used - start] = step
    return out, shift


def _direction(e, g, curvature, size, newton, weight, columns):
    """:func:`text_direction` on the ``entries`` ``e = (bucket, row, value, rows)`` of the
    slots in use, their buckets numbered 0 .. ``size`` - 1."""
    n = len(g)
    grad = _sums(e, g, size) / n
    if not newton:
        return grad, 0.0
    c = np.ones(n) if curvature is None else np.asarray(curvature, dtype=np.float64)
    if weight is not None:
        c = c * (weight if c.ndim == 1 else weight[:, None])
    mu = _sums(e, np.ones(n), size) / n
    centred_sq = _sums(e, np.ones(n), size, power=2) - n * mu * mu
    if g.ndim == 1:
        step = _centred_step(e, grad, g, c, mu, centred_sq, columns)
        return step, -float(mu @ step)
    cs = c if c.ndim > 1 else np.repeat(c[:, None], g.shape[1], axis=1)
    step = np.stack(
        [
            _centred_step(e, grad[:, k], g[:, k], cs[:, k], mu, centred_sq, columns)
            for k in range(g.shape[1])
        ],
        axis=1,
    )
    return step, -(mu @ step)


def _centred_step(e, grad, g, c, mu, centred_sq, columns: int) -> np.ndarray:
    """One class's scaled diagonal step in centred coordinates (see the module docstring)."""
    n = len(g)
    size = len(grad)
    centred_grad = grad - mu * g.mean()
    sx = _sums(e, c, size)
    sxx = _sums(e, c, size, power=2)
    curv = sxx - 2 * mu * sx + mu * mu * c.sum()
    used = centred_sq > 1e-12 * np.maximum(1.0, n * mu * mu)
    curv = np.where(used, np.maximum(curv, MIN_TEXT_CURVATURE * centred_sq), 1.0)
    lam = _largest_eigenvalue(e, c, mu, np.where(used, curv, 0.0))
    return np.where(used, centred_grad * n / curv, 0.0) / (lam + columns + 1)


def _largest_eigenvalue(e, c, mu, curv, iterations: int = 8) -> float:
    """The largest eigenvalue of ``D^-1/2 Xc.T C Xc D^-1/2`` (``D = diag(curv)``; buckets
    with ``curv == 0`` left out), by power iteration from the all-ones vector: a lower bound
    that converges fast here, taken with a 10% margin."""
    flat, row, x, rows = e
    used = curv > 0
    inv = np.where(used, 1.0 / np.sqrt(np.where(used, curv, 1.0)), 0.0)
    v = used.astype(np.float64)
    lam = 0.0
    for _ in range(iterations):
        norm = float(np.linalg.norm(v))
        if norm == 0:
            return 0.0
        v /= norm
        scaled = v * inv
        u = (np.bincount(row, weights=scaled[flat] * x, minlength=rows) - mu @ scaled) * c
        w = (_sums(e, u, len(v)) - mu * u.sum()) * inv
        lam = float(v @ w)
        v = w
    return 1.1 * lam


def _sums(e, values: np.ndarray, size: int, power: int = 1) -> np.ndarray:
    """``sum_i values_i * x_ib ** power`` for each bucket ``b`` (the transpose product with
    the bucket columns, by bincount) over the entries ``e = (bucket, row, x, rows)``."""
    flat, row, x, _ = e
    if values.ndim > 1:  # softmax: per class
        return np.stack([_sums(e, v, size, power) for v in values.T], axis=1)
    xp = x if power == 1 else x**power
    return np.bincount(flat, weights=xp * values[row], minlength=size)
