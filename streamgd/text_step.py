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
    flat = idx.ravel() - start
    x = val.astype(np.float64, copy=False)
    g = np.asarray(g, dtype=np.float64)
    grad = _sums(flat, x, g, size) / n
    if not newton:
        return grad, 0.0
    c = np.ones(n) if curvature is None else np.asarray(curvature, dtype=np.float64)
    if weight is not None:
        c = c * (weight if c.ndim == 1 else weight[:, None])
    mu = _sums(flat, x, np.ones(n), size) / n
    centred_sq = _sums(flat, x * x, np.ones(n), size) - n * mu * mu
    if g.ndim == 1:
        step = _centred_step(flat, x, grad, g, c, mu, centred_sq, columns)
        return step, -float(mu @ step)
    cs = c if c.ndim > 1 else np.repeat(c[:, None], g.shape[1], axis=1)
    step = np.stack(
        [
            _centred_step(flat, x, grad[:, k], g[:, k], cs[:, k], mu, centred_sq, columns)
            for k in range(g.shape[1])
        ],
        axis=1,
    )
    return step, -(mu @ step)


def _centred_step(flat, x, grad, g, c, mu, centred_sq, columns: int) -> np.ndarray:
    """One class's scaled diagonal step in centred coordinates (see the module docstring)."""
    n = len(g)
    size = len(grad)
    centred_grad = grad - mu * g.mean()
    sx = _sums(flat, x, c, size)
    sxx = _sums(flat, x * x, c, size)
    curv = sxx - 2 * mu * sx + mu * mu * c.sum()
    used = centred_sq > 1e-12 * np.maximum(1.0, n * mu * mu)
    curv = np.where(used, np.maximum(curv, MIN_TEXT_CURVATURE * centred_sq), 1.0)
    lam = _largest_eigenvalue(flat, x, c, mu, np.where(used, curv, 0.0))
    return np.where(used, centred_grad * n / curv, 0.0) / (lam + columns + 1)


def _largest_eigenvalue(flat, x, c, mu, curv, iterations: int = 8) -> float:
    """The largest eigenvalue of ``D^-1/2 Xc.T C Xc D^-1/2`` (``D = diag(curv)``; buckets
    with ``curv == 0`` left out), by power iteration from the all-ones vector: a lower bound
    that converges fast here, taken with a 10% margin."""
    used = curv > 0
    inv = np.where(used, 1.0 / np.sqrt(np.where(used, curv, 1.0)), 0.0)
    v = used.astype(np.float64)
    rows, slots = x.shape
    lam = 0.0
    for _ in range(iterations):
        norm = float(np.linalg.norm(v))
        if norm == 0:
            return 0.0
        v /= norm
        scaled = v * inv
        u = (np.einsum("ij,ij->i", scaled[flat].reshape(rows, slots), x) - mu @ scaled) * c
        w = (_sums(flat, x, u, len(v)) - mu * u.sum()) * inv
        lam = float(v @ w)
        v = w
    return 1.1 * lam


def _sums(flat: np.ndarray, x: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """``sum_i values_i * x_is`` over each code of ``flat`` (the row-major ravel of (rows,
    slots) codes): the transpose product with the bucket columns, by bincount."""
    if values.ndim > 1:  # softmax: per class
        return np.stack([_sums(flat, x, v, size) for v in values.T], axis=1)
    return np.bincount(flat, weights=(x * values[:, None]).ravel(), minlength=size)
