"""Exact solvers: least squares by the normal equations, accumulated in one streaming pass.

The state is a dict of arrays like an optimiser's (so it is checkpointed and resumed the same
way): ``A'A``, ``A't``, ``t't`` and the row count for ``A = [z, 1]``, the standardised
features with an intercept column, and the (standardised) target ``t``. Solving gives the
minimiser of ``mean(0.5 (A w - t)^2) + l2/2 ||w_features||^2``, the same objective the
iterative optimisers minimise.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SOLVERS", "normal_init", "normal_accumulate", "normal_solve", "normal_loss"]

SOLVERS = ("sgd", "normal")


def normal_init(n_params: int) -> dict[str, np.ndarray]:
    return {
        "ata": np.zeros((n_params, n_params)),
        "aty": np.zeros(n_params),
        "yty": np.zeros(()),
        "rows": np.zeros((), dtype=np.int64),
    }


def normal_accumulate(
    state: dict[str, np.ndarray], x: np.ndarray, t: np.ndarray, inv_scale: np.ndarray
) -> dict[str, np.ndarray]:
    """Add a batch (centred features ``x``, target ``t``) to the sums, in float64."""
    a = np.empty((len(t), x.shape[1] + 1))
    np.multiply(x, inv_scale, out=a[:, :-1])
    a[:, -1] = 1.0
    t64 = np.asarray(t, dtype=np.float64)
    return {
        "ata": state["ata"] + a.T @ a,
        "aty": state["aty"] + a.T @ t64,
        "yty": state["yty"] + t64 @ t64,
        "rows": state["rows"] + len(t),
    }


def normal_solve(state: dict[str, np.ndarray], l2: float) -> np.ndarray:
    """``[w..., b]`` minimising the batch-mean half squared error plus ``l2/2 ||w||^2``.

    >>> s = normal_accumulate(normal_init(2), np.array([[-1.0], [1.0]]),
    ...                       np.array([1.0, 5.0]), np.ones(1))
    >>> normal_solve(s, 0.0).round(6).tolist()
    [2.0, 3.0]
    """
    n = max(int(state["rows"]), 1)
    lhs = state["ata"] / n
    if l2:
        lhs = lhs + l2 * np.diag(np.r_[np.ones(len(lhs) - 1), 0.0])
    # lstsq: a minimum-norm answer when features are collinear, instead of a failure
    return np.linalg.lstsq(lhs, state["aty"] / n, rcond=None)[0]


def normal_loss(state: dict[str, np.ndarray], params: np.ndarray) -> float:
    """Mean half squared error of ``params`` over the accumulated rows, from the sums alone."""
    n = max(int(state["rows"]), 1)
    sse = float(state["yty"] - 2 * params @ state["aty"] + params @ state["ata"] @ params)
    return 0.5 * max(sse, 0.0) / n
