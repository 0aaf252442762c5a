"""A grid's models that can share their arithmetic take one stacked step per batch.

Members of a grid that share the loss (with its parameters) and the optimiser and train
plain numeric features (no categorical codes, text, sample weights, slopes; the ``sgd``
solver) form a :class:`Group`: their weights and optimiser states are stacked as
``(models, ...)`` arrays and each batch costs one call of every array operation for all of
them (:func:`stacked_step`), where each model alone would make its own
(:func:`streamgd.step.train_step`). Under ``--cv`` each fold's models are a :class:`Block`
of the stack, trained on that fold's rows of the batch. The settings that differ between
them (the learning rate, ``--l2``, ``--l1``, ``--momentum``, clipping) are ``(models, 1)``
float64 arrays, the dtype each model's own step computes in, so every element is computed
by the same floating-point operations on the same operands as in its run alone: each model
stays bit-identical to that run (tests/unit/test_stacked.py compares them at the bit, step
by step).

The two matrix products stay matrix-VECTOR products, one per model: BLAS sums a
matrix-matrix product in another order, so ``x @ W.T`` differs from the columns ``x @ w``
(by ~5e-6 in float32). ``np.matmul`` over a stack of vectors runs exactly those
matrix-vector kernels, one per model, in one numpy call. Everything else (loss, gradient,
scaling, regularisation, preconditioning or the Newton direction, clipping, the optimiser,
the ``--l1`` proximal step, finiteness checks, the running training metrics) is elementwise
or a per-row reduction, identical to the bit per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..features import MIN_EIGENVALUE
from ..losses import Loss
from ..metrics import StackedMetrics
from ..optimizers import OPTIMIZERS, Optimizer
from ..step import HESSIAN_ROWS, MIN_CURVATURE

__all__ = [
    "STACKED_LOSSES",
    "STACKED_OPTIMIZERS",
    "Group",
    "Hyper",
    "stack_key",
    "stack_states",
    "stacked_optimizer",
    "stacked_step",
    "unstack_state",
    "Block",
]

# Losses whose functions are elementwise in (p, y), so they take (models, rows) predictions.
STACKED_LOSSES = frozenset(
    {"squared", "logistic", "huber", "absolute", "quantile", "poisson", "hinge"}
)
# Optimisers whose update is elementwise in (grad, state, params, lr), with the grid's
# hyperparameter each may vary (as a (models, 1) array); the others' must be equal in a group.
STACKED_OPTIMIZERS: dict[str, tuple[str, ...]] = {
    "sgd": (),
    "momentum": ("momentum",),
    "adam": (),
    "nesterov": (),
    "adagrad": (),
    "rmsprop": (),
}


def stack_key(config: Any, spec: Any, loss: Loss, solver: str) -> tuple | None:
    """What members must share to be stacked (the loss and its parameters, the optimiser and
    the hyperparameters it cannot vary; not the fold: each fold is a block of the stack), or
    None when this member takes its own step (categorical codes, text, weights, other
    losses, optimisers or solvers)."""
    if solver != "sgd" or config.optimizer not in STACKED_OPTIMIZERS:
        return None
    if loss.name not in STACKED_LOSSES or loss.task == "multiclass":
        return None
    if spec.categoricals or spec.texts or spec.weighting is not None:
        return None
    fixed = tuple(
        (name, getattr(config, name))
        for name in ("momentum", "weight_decay")
        if name not in STACKED_OPTIMIZERS[config.optimizer]
    )
    return (loss, config.optimizer, fixed)


def stacked_optimizer(configs: Sequence[Any]) -> Optimizer:
    """The optimiser of a group: its factory called with each varying hyperparameter as a
    (models, 1) array (as a number when every model has the same value, as alone)."""
    name = configs[0].optimizer
    hyper: dict[str, Any] = {}
    for key in STACKED_OPTIMIZERS[name]:
        values = [getattr(c, key) for c in configs]
        if all(v == values[0] for v in values):
            if values[0] is not None:
                hyper[key] = values[0]
        else:
            hyper[key] = np.array(values, dtype=np.float64)[:, None]
    if not STACKED_OPTIMIZERS[name]:
        return configs[0].make_optimizer()
    return OPTIMIZERS[name](**hyper)


def _column(values: Sequence[float | None], missing: float) -> np.ndarray:
    """Per-model hyperparameters as a (models, 1) float64 array (``missing`` for None)."""
    return np.array([missing if v is None else v for v in values], dtype=np.float64)[:, None]


class Hyper:
    """A group's per-model settings of the step, as (models, 1) arrays, with masks of the
    models that apply each optional part (a model without ``--l2`` does not add ``0 * w``:
    that could turn ``-0.0`` into ``0.0`` or an infinite weight into NaN)."""

    def __init__(self, configs: Sequence[Any]) -> None:
        self.l2 = _column([c.l2 for c in configs], 0.0)
        self.l1 = _column([c.l1 for c in configs], 0.0)
        self.clip_grad = _column([c.clip_grad for c in configs], np.inf)
        self.clip_weights = _column([c.clip_weights for c in configs], np.inf)
        self.l2_on = _mask(self.l2 != 0.0)
        self.l1_on = _mask(self.l1 != 0.0)
        self.clip_grad_on = _mask(np.isfinite(self.clip_grad))
        self.clip_weights_on = _mask(np.isfinite(self.clip_weights))


def _mask(on: np.ndarray) -> np.ndarray | bool | None:
    """None when no model applies it, True when every model does, else the (models, 1) mask."""
    if not on.any():
        return None
    return True if on.all() else on


class Block(NamedTuple):
    """Rows ``start:stop`` of a stack train on the batch rows ``x`` (centred features) and
    ``t`` (target, training units): the models of one ``--cv`` fold, or of a whole grid."""

    x: np.ndarray
    t: np.ndarray
    start: int
    stop: int


def stacked_step(
    params: np.ndarray,
    opt_state: dict[str, np.ndarray],
    blocks: Sequence[Block],
    *,
    loss: Loss,
    optimizer: Optimizer,
    lr: np.ndarray,
    hyper: Hyper,
    inv_scale: np.ndarray,
    precond: np.ndarray | None,
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, list[np.ndarray]]:
    """:func:`streamgd.step.train_step` of numeric features for a stack of models at once:
    ``params`` (models, features + 1), ``opt_state`` the stacked states, ``lr`` (models, 1),
    each block of models on its own rows (every row of the stack in one block). What
    involves the rows runs once per block, the rest (the gradient's scaling, penalties,
    preconditioning, the optimiser) once for the whole stack. Returns the new parameters
    and states, each model's summed batch loss (models,) and each block's predictions
    (its models, its rows), every model's equal to the bit to its own step's."""
    # the same operations as train_step, in its order, on stacked operands (see its comments)
    n_feat = params.shape[1] - 1
    dtype = blocks[0].x.dtype
    w = params[:, :n_feat]
    weff = (w * inv_scale).astype(dtype)
    xg = np.empty((len(params), n_feat), dtype=dtype)
    g_sums, loss_sums = np.empty(len(params)), np.empty(len(params))
    rows = np.empty((len(params), 1))  # each model's batch rows, as train_step's len(t)
    newton = precond is not None and loss.curvature is not None
    hessians = np.empty((len(params), n_feat + 1, n_feat + 1)) if newton else None
    predictions = []
    for x, t, a, b in blocks:
        p = np.matmul(x, weff[a:b, :, None])[:, :, 0].astype(np.float64)  # a gemv per model
        p += params[a:b, n_feat : n_feat + 1]
        g = loss.gradient(p, t)
        xg[a:b] = np.matmul(x.T, g.astype(dtype)[:, :, None])[:, :, 0]  # a gemv per model
        g_sums[a:b] = np.add.reduce(g, axis=1)
        rows[a:b] = len(t)
        if newton:
            m = min(len(t), HESSIAN_ROWS)
            hessians[a:b] = _hessians(x[:m], loss.curvature(p[:, :m], t[:m]), inv_scale)
        loss_sums[a:b] = np.add.reduce(loss.value(p, t), axis=1)
        predictions.append(p)
    grad = np.empty_like(params)
    np.multiply(xg * inv_scale, 1.0 / rows, out=grad[:, :n_feat])  # xg * scale: float64
    if hyper.l2_on is not None:
        np.add(grad[:, :n_feat], hyper.l2 * w, out=grad[:, :n_feat], where=hyper.l2_on)
    grad[:, n_feat] = g_sums / rows[:, 0]
    if newton:
        grad = _newton_directions(grad, hessians, hyper)
    elif precond is not None:
        grad[:, :n_feat] = np.matmul(precond, grad[:, :n_feat, None])[:, :, 0]
    if hyper.clip_grad_on is not None:
        norm = np.sqrt(np.matmul(grad[:, None, :], grad[:, :, None])[:, :, 0])
        over = (norm > hyper.clip_grad) & hyper.clip_grad_on
        if over.any():
            np.multiply(grad, hyper.clip_grad / norm, out=grad, where=over)
    step, opt_state = optimizer.update(grad, opt_state, params, lr)
    new = params + step
    if hyper.l1_on is not None:
        weights = new[:, :n_feat]
        shrunk = np.sign(weights) * np.maximum(np.abs(weights) - lr * hyper.l1, 0.0)
        np.copyto(weights, shrunk, where=hyper.l1_on)
    if hyper.clip_weights_on is not None:
        weights = new[:, :n_feat]
        c = hyper.clip_weights
        np.copyto(weights, np.clip(weights, -c, c), where=hyper.clip_weights_on)
    return new, opt_state, loss_sums, predictions


def _hessians(x: np.ndarray, c: np.ndarray, inv_scale: np.ndarray) -> np.ndarray:
    """Each model's curvature-weighted Gram matrix of ``[z, 1]`` over the rows of ``x``
    (``c``: (models, rows)), as :func:`streamgd.step._newton_direction` forms it."""
    z = x * inv_scale
    a = np.empty((len(z), z.shape[1] + 1))  # float64
    a[:, :-1], a[:, -1] = z, 1.0
    return np.matmul((a * c[:, :, None]).transpose(0, 2, 1), a) / len(z)


def _newton_directions(grad: np.ndarray, h: np.ndarray, hyper: Hyper) -> np.ndarray:
    """:func:`streamgd.step._newton_direction` for every model: its Gram matrix ``h`` (from
    :func:`_hessians`) regularised and floored as there, solved in one stacked ``solve``."""
    if hyper.l2_on is not None:
        inner = h[:, :-1, :-1]
        on = hyper.l2_on if hyper.l2_on is True else hyper.l2_on[:, :, None]
        np.add(inner, hyper.l2[:, :, None] * np.eye(len(h[0]) - 1), out=inner, where=on)
    d = h.shape[1]
    trace = np.trace(h, axis1=1, axis2=2)
    floor = np.maximum(MIN_EIGENVALUE * MIN_CURVATURE, MIN_EIGENVALUE * trace / d)
    diag = np.arange(d)
    h[:, diag, diag] += floor[:, None]
    return np.linalg.solve(h, grad[:, :, None])[:, :, 0]


def stack_states(states: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The members' optimiser states as one dict of (models, ...) arrays (a 0-d entry, such
    as Adam's step count, as (models, 1) so that it broadcasts against the weights)."""
    out = {}
    for key in states[0]:
        rows = [np.asarray(s[key]) for s in states]
        out[key] = np.stack([r.reshape(1) if r.ndim == 0 else r for r in rows])
    return out


def unstack_state(stacked: dict[str, np.ndarray], row: int, like: dict[str, np.ndarray]):
    """Model ``row``'s optimiser state, shaped as ``like`` (its state when it joined)."""
    return {k: stacked[k][row].reshape(np.shape(like[k])).copy() for k in stacked}


class Group:
    """Members of a grid stacked for the epoch (see the module docstring), ordered by fold,
    each fold's a :class:`Block` of rows: their weights, optimiser states, steps, rows and
    losses live here between :meth:`write` calls, which put them back into each member's
    state (and the engine's per-member lists) as absolute values, as often as needed
    (checkpoints, the epoch's end)."""

    def __init__(self, members: Sequence[Any], where: Sequence[int], params, opt) -> None:
        order = sorted(range(len(members)), key=lambda i: _fold_rank(members[i]))
        self.members = [members[i] for i in order]
        self.where = [where[i] for i in order]  # positions in the engine's lists
        self.lists = params, opt  # the engine's per-member weights and optimiser states
        first = self.members[0]
        spec, loss = first.state.spec, first.trainer.loss
        self.n_feat = len(spec.names)
        self.t_scale = spec.target_scale
        self.inv_scale = 1.0 / spec.scale
        self.precond = spec.precond
        self.loss = loss.rescaled(spec.target_scale) if loss.scale_target else loss
        self.params = np.stack([params[i] for i in self.where])
        self.like = [opt[i] for i in self.where]
        self.opt = stack_states(self.like)
        # per member: its counters when the group formed, and batches and rows taken since
        self.base = [
            (m.state.step, m.state.rows_trained, m.state.totals.rows) for m in self.members
        ]
        self.steps = np.array([m.state.step for m in self.members], dtype=np.int64)
        self.taken = np.zeros(len(self.members), dtype=np.int64)
        self.rows = np.zeros(len(self.members), dtype=np.int64)
        self.loss_sums = np.array([m.state.totals.loss for m in self.members], dtype=np.float64)
        self._settings()
        self.metrics = None
        if first.extra["metrics"]:
            unit, center, link = first.extra["units"]
            self.metrics = [
                StackedMetrics([m.running for m in self.members[a:b]], unit, center, link)
                for _, a, b in self.blocks
            ]

    def _settings(self) -> None:
        """What follows from the members: their stacked settings and their blocks."""
        configs = [m.config for m in self.members]
        self.optimizer = stacked_optimizer(configs)
        self.hyper = Hyper(configs)
        self.schedules = [m.trainer.schedule for m in self.members]
        folds = [m.config.cv_fold for m in self.members]
        self.blocks = [
            (fold, folds.index(fold), len(folds) - folds[::-1].index(fold))
            for fold in dict.fromkeys(folds)
        ]

    def step(self, parts: dict) -> None:
        """One batch through every member's step: ``parts`` maps each fold (None: every row)
        to its rows of the batch; the models of a fold without rows in it skip it."""
        n_feat, t_scale = self.n_feat, self.t_scale
        blocks, stepped = [], []
        for i, (fold, a, b) in enumerate(self.blocks):
            raw = parts[fold]
            if len(raw):
                t = raw[:, n_feat] if t_scale == 1.0 else raw[:, n_feat] / t_scale
                blocks.append(Block(raw[:, :n_feat], t, a, b))
                stepped.append(i)
        if not blocks:
            return
        new, opt, loss_sums, predictions = self._advance(blocks)
        took = np.zeros(len(new), dtype=bool)  # the models that take the batch
        for block in blocks:
            took[block.start : block.stop] = True
        loss_sums = _Taken(loss_sums, took)
        ok = np.isfinite(loss_sums.sums) & np.isfinite(np.add.reduce(new, axis=1))
        if not ok.all():  # they keep their last finite weights and leave the group
            self._diverged(ok, new, opt, loss_sums, blocks, stepped, predictions)
            return
        self._apply(new, opt, loss_sums, blocks, stepped, predictions)

    def _advance(self, blocks: list[Block]):
        """The stacked step of the blocks' models; when some blocks sit the batch out, of
        those models alone, the others' rows of the result left as they were."""
        lr = np.array(
            [
                s(step)  # each model's step, as a Python int as in its run alone
                for s, step in zip(self.schedules, (self.steps + self.taken).tolist(), strict=True)
            ]
        )[:, None]
        settings = dict(loss=self.loss, inv_scale=self.inv_scale, precond=self.precond, lr=lr)
        if len(blocks) == len(self.blocks):
            return stacked_step(
                self.params,
                self.opt,
                blocks,
                optimizer=self.optimizer,
                hyper=self.hyper,
                **settings,
            )
        idx = np.concatenate([np.arange(bl.start, bl.stop) for bl in blocks])
        configs = [self.members[i].config for i in idx]
        starts = np.cumsum([0] + [bl.stop - bl.start for bl in blocks])
        some = [
            bl._replace(start=a, stop=b)
            for bl, a, b in zip(blocks, starts[:-1], starts[1:], strict=True)
        ]
        settings["lr"] = lr[idx]
        new_some, opt_some, sums_some, predictions = stacked_step(
            self.params[idx],
            {k: v[idx] for k, v in self.opt.items()},
            some,
            optimizer=stacked_optimizer(configs),
            hyper=Hyper(configs),
            **settings,
        )
        new, opt = self.params.copy(), {k: v.copy() for k, v in self.opt.items()}
        new[idx] = new_some
        for k, v in opt_some.items():
            opt[k][idx] = v
        loss_sums = np.zeros(len(new))
        loss_sums[idx] = sums_some
        return new, opt, loss_sums, predictions

    def _apply(self, new, opt, loss_sums, blocks, stepped, predictions) -> None:
        self.params, self.opt = new, opt
        loss_sums.add_to(self.loss_sums, True)
        for block, i, p in zip(blocks, stepped, predictions, strict=True):
            self.taken[block.start : block.stop] += 1
            self.rows[block.start : block.stop] += len(block.t)
            if self.metrics is not None:
                self.metrics[i].update(block.t, p)

    def _diverged(self, ok, new, opt, loss_sums, blocks, stepped, predictions) -> None:
        """Members whose loss or new weights are not finite leave with their state before
        the batch; the others take the batch."""
        for row in np.flatnonzero(~ok):
            m = self.members[row]
            self._write_row(row, m)
            m.state.finished, m.state.stop_reason = True, "diverged"
            m.extra["diverged_at_step"] = m.state.step + 1
        old_blocks = self.blocks
        metrics = self.metrics or [None] * len(old_blocks)
        # the batch for the others, each block's predictions of its remaining models
        self.params, self.opt = new, opt
        loss_sums.add_to(self.loss_sums, ok)  # the leavers' totals are written already
        for block, i, p in zip(blocks, stepped, predictions, strict=True):
            self.taken[block.start : block.stop] += 1
            self.rows[block.start : block.stop] += len(block.t)
            mask = ok[block.start : block.stop]
            if metrics[i] is not None and mask.any():
                metrics[i].take(mask)
                metrics[i].update(block.t, p[mask])
        for i, (_, a, b) in enumerate(old_blocks):  # blocks that sat the batch out
            if i not in stepped and metrics[i] is not None and ok[a:b].any():
                metrics[i].take(ok[a:b])
        keep = ok.tolist()
        for name in ("members", "where", "like", "base"):
            setattr(self, name, [v for v, k in zip(getattr(self, name), keep, strict=True) if k])
        self.steps, self.taken, self.rows = self.steps[ok], self.taken[ok], self.rows[ok]
        self.params = self.params[ok]
        self.opt = {k: v[ok] for k, v in self.opt.items()}
        self.loss_sums = self.loss_sums[ok]
        if self.metrics is not None:
            self.metrics = [
                m for m, (_, a, b) in zip(metrics, old_blocks, strict=True) if ok[a:b].any()
            ]
        if self.members:
            self._settings()

    def write(self) -> None:
        """Every member's weights, optimiser state, counters and running metrics, into its
        state and the engine's per-member lists."""
        for row, m in enumerate(self.members):
            self._write_row(row, m)

    def _write_row(self, row: int, m: Any) -> None:
        state, (step, rows_trained, rows) = m.state, self.base[row]
        state.params = self.params[row].copy()
        state.opt_state = unstack_state(self.opt, row, self.like[row])
        taken, batch_rows = int(self.taken[row]), int(self.rows[row])
        state.step = step + taken
        state.rows_trained = rows_trained + batch_rows
        state.totals.rows = rows + batch_rows
        state.totals.loss = float(self.loss_sums[row])
        params, opt = self.lists
        params[self.where[row]], opt[self.where[row]] = state.params, state.opt_state
        if self.metrics is not None:
            for metrics, (_, a, b) in zip(self.metrics, self.blocks, strict=True):
                if a <= row < b:
                    metrics.write(row - a)


class _Taken(NamedTuple):
    """A batch's summed losses, and which models took the batch."""

    sums: np.ndarray
    took: np.ndarray

    def add_to(self, totals: np.ndarray, where) -> None:
        """Add each model's to its total, for the models that took the batch and ``where``
        (adding 0 to the others could turn a total of -0.0 into 0.0)."""
        np.add(totals, self.sums, out=totals, where=self.took & where)


def _fold_rank(member: Any) -> tuple:
    """Sort key: the model on all rows (fold None) first, then the folds in order."""
    fold = member.config.cv_fold
    return (fold is not None, -1 if fold is None else fold)
