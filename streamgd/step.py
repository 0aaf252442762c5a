"""The optimisation step of the linear model: one mini-batch, from centred rows to new weights.

Shared by the single-process trainer and the Dask round tasks (:func:`make_step`), so both
take exactly the same steps.
"""

from __future__ import annotations

import numpy as np

from .config import FitConfig
from .features import MIN_EIGENVALUE, FeatureSpec
from .features.text import bag_sum
from .losses import Loss, squared
from .optimizers import Optimizer
from .solvers import BatchUpdate
from .text_step import text_direction

__all__ = ["train_step", "make_step", "plain_path", "HESSIAN_ROWS", "MIN_CURVATURE"]


def train_step(
    params: np.ndarray,
    opt_state: dict[str, np.ndarray],
    x: np.ndarray,
    t: np.ndarray,
    *,
    loss: Loss,
    optimizer: Optimizer,
    lr: float,
    l2: float,
    inv_scale: np.ndarray | None = None,
    precond: np.ndarray | None = None,
    l1: float = 0.0,
    clip_grad: float | None = None,
    clip_weights: float | None = None,
    codes: np.ndarray | None = None,
    offsets: np.ndarray | None = None,
    sample_weight: np.ndarray | None = None,
    code_values: np.ndarray | None = None,
    text: tuple[np.ndarray, np.ndarray] | None = None,
    text_start: int = 0,
) -> tuple[np.ndarray, dict[str, np.ndarray], float, np.ndarray]:
    """One mini-batch step on the linear model ``p = z @ w + b`` with ``z = x * inv_scale``.

    ``x`` holds centred features and ``t`` the (scaled) target; the scaling is folded into the
    weights (``x @ (w * inv_scale)``) rather than applied to the batch, which saves a pass
    over it. Gradient of the batch-mean loss plus ``l2/2 * ||w||^2`` (the intercept is not
    penalised): ``dw = z.T @ g / n + l2 * w``, ``db = mean(g)`` with ``g = dloss/dp``. With a
    preconditioner ``P`` (the inverse feature correlation) the optimiser receives
    ``(P @ dw, db) / c`` where ``c`` is the batch's mean curvature ``d2loss/dp2``: a fixed
    Gauss-Newton approximation under which ``lr = 1`` is a Newton step for the squared loss.
    Regularisation and clipping: ``clip_grad`` rescales the direction to at most that L2
    norm; ``l1`` then soft-thresholds the weights by ``lr * l1`` after the step (a proximal
    step, so weights become exactly zero; with ``l2`` too, the elastic net); ``clip_weights``
    clips every weight to ``[-clip_weights, clip_weights]``. The intercept is never
    penalised or clipped.

    Categorical features: ``codes`` (rows, columns) index the code weights stored after the
    intercept, ``p += sum_j params[n + 1 + codes[:, j]]``: the linear model over the one-hot
    expansion, without expanding; ``offsets`` says where each column's codes start. Their
    gradient is the per-code mean of ``g`` over the batch; with a preconditioner, a
    block-diagonal Newton direction (see :func:`_table_direction`). Regularisation stays a
    plain gradient there, so a code absent from the batch is only decayed.
    Slopes (``--interactions`` of a numeric and a categorical column): ``code_values`` (rows,
    columns) multiply each picked code weight, ``p += sum_j params[n + 1 + codes[:, j]] *
    code_values[:, j]`` (1 for a one-hot column; see :meth:`FeatureSpec.code_values`).
    Sample weights: ``sample_weight`` (one per row, normalised to a mean of about 1; see
    :mod:`streamgd.features.weights`) multiplies each row's gradient ``g``, loss and curvature,
    so the step is on the batch's weighted loss ``sum w_i l_i / n``.
    Text columns: ``text = (idx, val)`` (rows, slots) index the code weights after the
    categorical ones (from ``text_start`` on), ``p += sum_s params[n + 1 + idx[:, s]] *
    val[:, s]``: the linear model over the hashed bag-of-words columns (an unused slot has
    value 0); see :func:`streamgd.text_step.text_direction`.
    Returns the new parameters, the optimiser state, the batch's summed loss (before the update;
    weighted) and the batch's predictions ``p`` (before the update; the running training
    metrics use them).
    """
    # one body, not split: it runs every batch, where each extra Python call is a visible cost
    n_feat = x.shape[1]
    w = params[:n_feat]  # (features,), or (features, classes) for softmax
    table = params[n_feat + 1 :]  # categorical code weights (empty without)
    scale = None if inv_scale is None else (inv_scale if w.ndim == 1 else inv_scale[:, None])
    # matrix products in the batch's precision (float32 while streaming), the rest in float64
    # (few numpy calls per batch: at batch 1024 their fixed cost is most of the step's time)
    weff = (w if scale is None else w * scale).astype(x.dtype, copy=False)
    p = (x @ weff).astype(np.float64)
    p += params[n_feat]
    if codes is not None:
        if code_values is None:
            p += table[codes].sum(axis=1)
        else:
            cv = code_values if table.ndim == 1 else code_values[:, :, None]
            p += (table[codes] * cv).sum(axis=1)
    if text is not None:
        p += bag_sum(table, *text)
    g = loss.gradient(p, t)
    sw = None
    if sample_weight is not None:
        sw = sample_weight if g.ndim == 1 else sample_weight[:, None]
        g = g * sw
    grad = np.empty_like(params)
    xg = x.T @ g.astype(x.dtype)
    if scale is not None:
        xg = xg * scale  # float64
    np.multiply(xg, 1.0 / len(t), out=grad[:n_feat])
    if l2:
        grad[:n_feat] += l2 * w
    grad[n_feat] = np.add.reduce(g, axis=0) / len(t)
    if precond is not None:
        if loss.curvature is None:
            grad[:n_feat] = precond @ grad[:n_feat]
        else:
            m = min(len(t), HESSIAN_ROWS)
            c = loss.curvature(p[:m], t[:m])
            if sw is not None:
                c = c * sw[:m]
            head = n_feat + 1
            if grad.ndim == 1:
                grad[:head] = _newton_direction(grad[:head], x[:m], c, inv_scale, l2)
            else:  # softmax: one block per class (cross-class terms left out)
                for k in range(grad.shape[1]):
                    grad[:head, k] = _newton_direction(
                        grad[:head, k], x[:m], c[:, k], inv_scale, l2
                    )
    if len(table):
        # the categorical code weights, then (from text_start) the text buckets'
        cat = len(table) if text is None else text_start
        if codes is not None:
            grad[n_feat + 1 : n_feat + 1 + cat] = _table_direction(
                codes,
                g,
                p,
                t,
                offsets,
                cat,
                loss=loss,
                newton=precond is not None,
                weight=sample_weight,
                values=code_values,
            )
        if text is not None:
            grad[n_feat + 1 + cat :], shift = text_direction(
                text,
                g,
                loss.curvature(p, t) if precond is not None and loss.curvature else None,
                len(table) - cat,
                cat,
                newton=precond is not None,
                weight=sample_weight,
                columns=0 if codes is None else codes.shape[1],
            )
            grad[n_feat] += shift
        if l2:
            grad[n_feat + 1 :] += l2 * table
    if clip_grad is not None:
        norm = float(np.linalg.norm(grad))
        if norm > clip_grad:
            grad *= clip_grad / norm
    step, opt_state = optimizer.update(grad, opt_state, params, lr)
    new = params + step
    if l1 or clip_weights is not None:
        for weights in (new[:n_feat], new[n_feat + 1 :]):  # views: not the intercept
            if l1:
                weights[...] = np.sign(weights) * np.maximum(np.abs(weights) - lr * l1, 0.0)
            if clip_weights is not None:
                np.clip(weights, -clip_weights, clip_weights, out=weights)
    value = loss.value(p, t)
    if sample_weight is not None:
        value = value * (sample_weight if value.ndim == 1 else sample_weight[:, None])
    return new, opt_state, float(np.add.reduce(value, axis=None)), p


def _per_code(flat: np.ndarray, values: np.ndarray, size: int, repeat: int) -> np.ndarray:
    """Sums of ``values`` (one per row, or (rows, classes)) over each code of ``flat`` (the
    row-major ravel of (rows, repeat) codes): the one-hot transpose product, by bincount."""
    if values.ndim == 1:
        return np.bincount(flat, weights=np.repeat(values, repeat), minlength=size)
    return np.stack(
        [np.bincount(flat, weights=np.repeat(v, repeat), minlength=size) for v in values.T],
        axis=1,
    )


def _table_direction(
    codes,
    g,
    p,
    t,
    offsets: np.ndarray,
    size: int,
    *,
    loss: Loss,
    newton: bool,
    weight: np.ndarray | None = None,
    values: np.ndarray | None = None,
) -> np.ndarray:
    """The code weights' data gradient (batch mean), or with ``newton`` a block-diagonal
    Newton direction: each code's gradient divided by its curvature in the batch (the one-hot
    columns of a categorical column never overlap, so per column this is exact), minus the
    column's row-weighted mean step (the intercept fits the mean; left in, every column would
    fit it again), times ``2 / (columns + 1)`` (columns that overlap, like a city and its
    region, fit the same contrasts: this keeps ``lr = 1`` stable even for identical ones).
    With sample weights ``weight``, ``g`` is already weighted; rows count by their weight.
    With ``values`` (slopes), see :func:`_slope_direction`."""
    if values is not None:
        return _slope_direction(
            codes, g, p, t, offsets, size, loss=loss, newton=newton, weight=weight, values=values
        )
    n, cols = codes.shape
    flat = codes.ravel()
    grad = _per_code(flat, np.asarray(g, dtype=np.float64), size, cols) / n
    if not newton:
        return grad
    if weight is None:
        rows = np.bincount(flat, minlength=size).astype(np.float64)
    else:
        rows = _per_code(flat, weight, size, cols)
    if g.ndim > 1:
        rows = rows[:, None]
    if loss.curvature is None:
        curv = rows
    else:
        c = loss.curvature(p, t)
        if weight is not None:
            c = c * (weight if c.ndim == 1 else weight[:, None])
        curv = np.maximum(_per_code(flat, c, size, cols), MIN_CURVATURE * rows)
    step = grad * n / np.where(rows > 0, curv, 1.0)  # no rows: no data gradient to scale
    bounds = [*offsets[1:], size]
    for lo, hi in zip(offsets, bounds, strict=True):
        step[lo:hi] -= (rows[lo:hi] * step[lo:hi]).sum(axis=0) / n
    return step * (2.0 / (cols + 1))


def _per_code_of(flat: np.ndarray, values: np.ndarray, by: np.ndarray, size: int) -> np.ndarray:
    """Sums of ``values[i, j] * by[i]`` (``by``: one per row, or (rows, classes)) over the codes
    of ``flat``, the row-major ravel of (rows, columns) codes."""
    if by.ndim == 1:
        return np.bincount(flat, weights=(values * by[:, None]).ravel(), minlength=size)
    return np.stack(
        [np.bincount(flat, weights=(values * b[:, None]).ravel(), minlength=size) for b in by.T],
        axis=1,
    )


def _slope_direction(codes, g, p, t, offsets, size, *, loss, newton, weight, values):
    """:func:`_table_direction` when code weights multiply ``values`` (rows, columns): the
    gradient sums ``g * value`` per code; the Newton scaling divides by the per-code sum of
    ``curvature * value**2``, and takes out of each column's step its component along the
    column's common direction (for a one-hot column the intercept's, for a slope column the
    numeric feature's, which both fit too), weighted by those sums."""
    n, cols = codes.shape
    flat = codes.ravel()
    g = np.asarray(g, dtype=np.float64)
    grad = _per_code_of(flat, values, g, size) / n
    if not newton:
        return grad
    squares = values * values
    ones = np.ones(n) if weight is None else np.asarray(weight, dtype=np.float64)
    rows = _per_code_of(flat, squares, ones, size)
    if g.ndim > 1:
        rows = rows[:, None]
    if loss.curvature is None:
        curv = rows
    else:
        c = loss.curvature(p, t)
        if weight is not None:
            c = c * (weight if c.ndim == 1 else weight[:, None])
        curv = np.maximum(_per_code_of(flat, squares, c, size), MIN_CURVATURE * rows)
    step = grad * n / np.where(rows > 0, curv, 1.0)
    bounds = [*offsets[1:], size]
    for lo, hi in zip(offsets, bounds, strict=True):
        total = rows[lo:hi].sum(axis=0)
        step[lo:hi] -= (rows[lo:hi] * step[lo:hi]).sum(axis=0) / np.where(total > 0, total, 1.0)
    return step * (2.0 / (cols + 1))


# Rows of each batch used to estimate the curvature-weighted Hessian (cost: rows * d^2).
HESSIAN_ROWS = 256
# Floor of the Hessian's eigenvalues: at most 1/MIN_CURVATURE/MIN_EIGENVALUE times a plain step,
# so that a saturated (nearly separable) batch cannot throw the weights far.
MIN_CURVATURE = 0.01


def make_step(config: FitConfig, spec: FeatureSpec, loss: Loss, optimizer: Optimizer):
    """The step both trainers take: ``step(params, opt_state, raw, lr)`` on centred rows
    ``[features..., target, codes..., text slots..., weight]`` (:attr:`FeatureSpec.columns`)
    returns a
    :class:`~streamgd.solvers.BatchUpdate`
    ``(params, opt_state, loss_sum, predictions, target)``, with the target in training units
    (standardised for regression losses that scale)."""
    n_feat = len(spec.names)
    inv_scale = 1.0 / spec.scale
    t_scale = spec.target_scale
    step_loss = loss.rescaled(t_scale) if loss.scale_target else loss
    offsets = spec.code_offsets if spec.categoricals else None
    weighting = spec.weighting
    if plain_path(config, spec, step_loss):
        return _plain_step(
            n_feat, inv_scale, t_scale, step_loss, optimizer, config.l2, spec.precond
        )

    def step(params, opt_state, raw, lr):
        t = raw[:, n_feat] if t_scale == 1.0 else raw[:, n_feat] / t_scale
        new, state, loss_sum, p = train_step(
            params,
            opt_state,
            raw[:, :n_feat],
            t,
            loss=step_loss,
            optimizer=optimizer,
            lr=lr,
            l2=config.l2,
            inv_scale=inv_scale,
            precond=spec.precond,
            l1=config.l1,
            clip_grad=config.clip_grad,
            clip_weights=config.clip_weights,
            codes=spec.codes(raw),
            offsets=offsets,
            sample_weight=None if weighting is None else weighting.effective(raw, n_feat),
            code_values=spec.code_values(raw[:, :n_feat], centred=True),
            text=spec.text(raw),
            text_start=spec.n_category_codes,
        )
        return BatchUpdate(new, state, loss_sum, p, t)

    return step


def plain_path(config: FitConfig, spec: FeatureSpec, loss: Loss) -> bool:
    """Whether :func:`make_step` can take :func:`_plain_step`: numeric features only (no
    categorical, text or weight columns), one output, no L1 or clipping, and no Newton
    direction (a preconditioner with a constant-curvature loss, or none)."""
    return (
        not spec.categoricals
        and not spec.texts
        and spec.weighting is None
        and loss.task != "multiclass"
        and not config.l1
        and config.clip_grad is None
        and config.clip_weights is None
        and (spec.precond is None or loss.curvature is None)
    )


def _plain_step(n_feat, inv_scale, t_scale, loss, optimizer, l2, precond):
    """:func:`make_step`'s step when :func:`plain_path` holds (the default fit): the operations
    of :func:`train_step` on that path, in its order and to the bit, in fewer numpy calls and
    Python layers. What stays inside a step (the effective weights, the float32 products
    and the per-row losses) goes into arrays kept between batches (``out=``); what the step
    returns (weights, predictions, target, residual) is new each time. For the squared loss,
    whose gradient is the residual ``d = p - t`` and whose value is ``0.5 * d * d`` of that
    same ``d``, the residual is computed once for both, and returned for the running
    metrics' error.

    At batch 1024 most numpy calls of a step cost about as much to make as their arithmetic;
    the general step's keyword layers, feature hooks and temporaries were ~8 of its ~45 us
    (1024 x 32 float32)."""
    sq = squared()
    is_squared = loss.gradient is sq.gradient and loss.value is sq.value
    gradient, value, update = loss.gradient, loss.value, optimizer.update
    add, subtract, multiply, matmul = np.add, np.subtract, np.multiply, np.matmul
    reduce, f64 = np.add.reduce, np.float64
    work = {}  # dtype -> its buffers, grown to the largest batch seen

    def buffers(dtype, rows):
        found = work.get(dtype)
        if found is None or len(found[1]) < rows:
            rows = max(rows, 0 if found is None else 2 * len(found[1]))
            found = (
                np.empty(n_feat, dtype=dtype),  # the effective weights
                np.empty(rows, dtype=dtype),  # x @ weights; then the residual, cast
                np.empty(n_feat, dtype=dtype),  # x.T @ residual
                np.empty(rows),  # the per-row losses
                np.empty(n_feat),  # x.T @ residual * inv_scale; then precond @ gradient
            )
            work[dtype] = found
        return found

    def step(params, opt_state, raw, lr):
        n = len(raw)
        x = raw[:, :n_feat]
        t = raw[:, n_feat] if t_scale == 1.0 else raw[:, n_feat] / t_scale
        weff, low, xg, values, head = buffers(raw.dtype, n)
        w = params[:n_feat]
        weff[...] = multiply(w, inv_scale, out=head)  # (w * scale).astype(x.dtype)
        low = low[:n]
        p = add(matmul(x, weff, out=low), params[n_feat], dtype=f64)  # a new array
        g = subtract(p, t) if is_squared else gradient(p, t)  # a new array: returned
        grad = np.empty_like(params)
        low[...] = g  # g.astype(x.dtype)
        multiply(
            multiply(matmul(x.T, low, out=xg), inv_scale, out=head), 1.0 / n, out=grad[:n_feat]
        )
        if l2:
            grad[:n_feat] += l2 * w
        grad[n_feat] = reduce(g, axis=0) / n
        if precond is not None:
            grad[:n_feat] = matmul(precond, grad[:n_feat], out=head)
        step, state = update(grad, opt_state, params, lr)
        if is_squared:
            v = multiply(multiply(g, 0.5, out=values[:n]), g, out=values[:n])
        else:
            v = value(p, t)
        loss_sum = float(reduce(v, axis=None))
        return BatchUpdate(params + step, state, loss_sum, p, t, g if is_squared else None)

    return step


def _newton_direction(grad, x, c, inv_scale, l2):
    """Solve ``H d = grad`` with ``H`` the Gram matrix of ``[z, 1]`` weighted by the per-row
    curvature ``c`` over the rows of ``x`` (the batch's first ``HESSIAN_ROWS``: a subsampled
    Gauss-Newton step), regularised by adding ``floor * I`` (a 34-column eigendecomposition
    cost 86 us a batch, this solve 11 us; within a factor 2 of flooring the eigenvalues at
    ``floor`` below it, the same above). For losses whose curvature depends on the
    prediction (logistic, poisson, softmax), where a fixed correlation preconditioner would
    misjudge the step along well-separated directions."""
    z = x if inv_scale is None else x * inv_scale
    a = np.empty((len(z), z.shape[1] + 1))  # float64
    a[:, :-1], a[:, -1] = z, 1.0
    h = (a * c[:, None]).T @ a / len(z)
    if l2:
        h[:-1, :-1] += l2 * np.eye(z.shape[1])
    d = len(h)
    floor = max(MIN_EIGENVALUE * MIN_CURVATURE, MIN_EIGENVALUE * float(np.trace(h)) / d)
    h[np.diag_indices(d)] += floor
    return np.linalg.solve(h, grad)
