"""Solvers: how a pass over the batches turns into weights, behind a registry.

:data:`SOLVERS` maps each ``--solver`` name to a :class:`Solver`: ``sgd`` takes an optimiser
step per batch (:mod:`streamgd.step`); ``normal`` accumulates the normal equations over one
pass and solves them at its end. The trainer asks the solver, never its name, what to do:
its starting state, its per-batch update, what ends a pass, whether more than one pass makes
sense, whether it runs under ``--cluster`` and whether it reports running training metrics.

The exact solver: least squares by the normal equations, accumulated in one streaming pass.

The state is a dict of arrays like an optimiser's (so it is checkpointed and resumed the same
way): ``A'A``, ``A't``, ``t't`` and the row count for ``A = [z, 1]``, the standardised
features with an intercept column, and the (standardised) target ``t``. Solving gives the
minimiser of ``mean(0.5 (A w - t)^2) + l2/2 ||w_features||^2``, the same objective the
iterative optimisers minimise; with sample weights, the weighted mean (weighted normal
equations ``A'WA w = A'Wt``, divided by the summed weight).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .errors import UsageError

__all__ = [
    "SOLVERS",
    "Solver",
    "GradientDescent",
    "NormalEquations",
    "BatchUpdate",
    "get_solver",
    "normal_init",
    "normal_accumulate",
    "normal_solve",
    "normal_loss",
]


def normal_init(n_params: int) -> dict[str, np.ndarray]:
    return {
        "ata": np.zeros((n_params, n_params)),
        "aty": np.zeros(n_params),
        "yty": np.zeros(()),
        "rows": np.zeros((), dtype=np.int64),
    }


def normal_accumulate(
    state: dict[str, np.ndarray],
    x: np.ndarray,
    t: np.ndarray,
    inv_scale: np.ndarray,
    weight: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Add a batch (centred features ``x``, target ``t``) to the sums, in float64; with
    ``weight`` (one per row) the weighted sums ``A'WA``, ``A'Wt``, ``t'Wt`` and, in place of
    the row count, the summed weight."""
    a = np.empty((len(t), x.shape[1] + 1))
    np.multiply(x, inv_scale, out=a[:, :-1])
    a[:, -1] = 1.0
    t64 = np.asarray(t, dtype=np.float64)
    if weight is not None:
        aw = a * weight[:, None]
        return {
            "ata": state["ata"] + aw.T @ a,
            "aty": state["aty"] + aw.T @ t64,
            "yty": state["yty"] + (weight * t64) @ t64,
            "rows": state["rows"] + float(np.sum(weight)),
        }
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
    n = _rows(state)
    lhs = state["ata"] / n
    if l2:
        lhs = lhs + l2 * np.diag(np.r_[np.ones(len(lhs) - 1), 0.0])
    # lstsq: a minimum-norm answer when features are collinear, instead of a failure
    return np.linalg.lstsq(lhs, state["aty"] / n, rcond=None)[0]


def normal_loss(state: dict[str, np.ndarray], params: np.ndarray) -> float:
    """Mean half squared error of ``params`` over the accumulated rows, from the sums alone."""
    n = _rows(state)
    sse = float(state["yty"] - 2 * params @ state["aty"] + params @ state["ata"] @ params)
    return 0.5 * max(sse, 0.0) / n


def _rows(state: dict[str, np.ndarray]) -> float:
    """What the sums are divided by: the rows (weighted: their summed weight), at least 1
    when there are none."""
    rows = state["rows"]
    if rows.dtype.kind == "i":  # unweighted: the row count, as it always was
        return max(int(rows), 1)
    return float(rows) if rows > 0 else 1.0


class BatchUpdate(NamedTuple):
    """What one batch did: the new weights and solver state, the batch's summed loss (before
    the update), its predictions (``None`` when the solver makes none), its target in
    training units and, when the step formed it on the way (the squared loss's gradient),
    the residual ``predictions - target`` (else ``None``): the running metrics take it
    rather than computing it again."""

    params: np.ndarray
    opt_state: dict[str, np.ndarray]
    loss_sum: float
    predictions: np.ndarray | None
    target: np.ndarray
    residual: np.ndarray | None = None


# update(params, opt_state, raw rows, lr) -> BatchUpdate
Update = Callable[[np.ndarray, dict[str, np.ndarray], np.ndarray, float], BatchUpdate]
# weights(raw rows) -> each row's normalised weight (see features.weights.Weighting.effective)
Weights = Callable[[np.ndarray], np.ndarray]


class Solver:
    """The behaviour the trainer needs from a solver (overridden by each entry of
    :data:`SOLVERS`)."""

    name: str = ""
    one_pass: bool = False  # one pass gives the exact answer; more epochs would repeat it
    distributed: bool = False  # runs under --cluster
    train_metrics: bool = False  # reports running training metrics on its predictions

    def check(self, config: Any) -> None:
        """Raise a :class:`UsageError` for settings of ``config`` (a ``FitConfig``) this
        solver cannot honour."""

    def init_state(self, params: np.ndarray, optimizer: Any) -> dict[str, np.ndarray]:
        """The solver state a run starts from (checkpointed like an optimiser's)."""
        raise NotImplementedError

    def make_update(
        self,
        *,
        step: Update,
        n_features: int,
        inv_scale: np.ndarray,
        target_scale: float,
        weights: Weights | None = None,
    ) -> Update:
        """The per-batch update; ``step`` is the optimiser step of :func:`streamgd.step.make_step`
        on centred rows ``[features..., target, ...]``; ``weights`` gives the rows' sample
        weights (None: unweighted)."""
        raise NotImplementedError

    def finish(
        self, params: np.ndarray, opt_state: dict[str, np.ndarray], *, l2: float
    ) -> tuple[np.ndarray, dict[str, np.ndarray], float | None]:
        """End of a pass: the weights, the state the next pass starts from, and the pass's
        mean loss when the solver computes it here (``None``: the batches' losses stand)."""
        return params, opt_state, None


class GradientDescent(Solver):
    """Mini-batch gradient descent: the optimiser's step on every batch."""

    name, distributed, train_metrics = "sgd", True, True

    def init_state(self, params: np.ndarray, optimizer: Any) -> dict[str, np.ndarray]:
        return optimizer.init(params)

    def make_update(
        self,
        *,
        step: Update,
        n_features: int,
        inv_scale: np.ndarray,
        target_scale: float,
        weights: Weights | None = None,
    ) -> Update:
        return step  # the step weighs the rows itself


class NormalEquations(Solver):
    """Least squares by the normal equations: the batches only add to ``A'A`` and ``A't``
    (weights unchanged, loss 0 until the end); the pass's end solves them."""

    name, one_pass = "normal", True

    def check(self, config: Any) -> None:
        if config.l1 or config.clip_grad or config.clip_weights:
            raise UsageError("--solver normal supports --l2 only (not --l1 or clipping)")
        if config.categorical:
            raise UsageError(
                "--categorical features are trained by gradient descent: they cannot be "
                "combined with --solver normal or --record-path"
            )
        if config.loss != "squared":
            raise UsageError(
                f"--solver normal solves least squares: it needs --loss squared, "
                f"got --loss {config.loss}"
            )

    def init_state(self, params: np.ndarray, optimizer: Any) -> dict[str, np.ndarray]:
        return normal_init(len(params))

    def make_update(
        self,
        *,
        step: Update,
        n_features: int,
        inv_scale: np.ndarray,
        target_scale: float,
        weights: Weights | None = None,
    ) -> Update:
        def update(params, opt_state, raw, lr):  # noqa: ARG001
            t = raw[:, n_features]
            if target_scale != 1.0:
                t = t / target_scale
            w = None if weights is None else weights(raw)
            sums = normal_accumulate(opt_state, raw[:, :n_features], t, inv_scale, w)
            return BatchUpdate(params, sums, 0.0, None, t)

        return update

    def finish(
        self, params: np.ndarray, opt_state: dict[str, np.ndarray], *, l2: float
    ) -> tuple[np.ndarray, dict[str, np.ndarray], float | None]:
        solved = normal_solve(opt_state, l2)
        return solved, normal_init(len(solved)), normal_loss(opt_state, solved)


SOLVERS: dict[str, Solver] = {s.name: s for s in (GradientDescent(), NormalEquations())}


def get_solver(name: str) -> Solver:
    """The solver registered as ``name`` (the settings have checked that there is one)."""
    return SOLVERS[name]
