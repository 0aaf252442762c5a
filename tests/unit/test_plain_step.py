"""The step :func:`streamgd.step.make_step` takes for numeric features (its plain path, with
buffers kept between batches) against :func:`streamgd.step.train_step`, the general step,
called as the general path calls it: weights, optimiser state, summed loss, predictions and
target must be ``np.array_equal`` step after step, for each loss, optimiser, penalty,
preconditioning, target scale, row precision, memory layout and batch size the plain path
takes; the settings it does not take go through the general path."""

from __future__ import annotations

import dataclasses
from copy import copy

import numpy as np
import pytest

from streamgd.config import FitConfig
from streamgd.features import FeatureSpec, preconditioner
from streamgd.features.spec import Categorical
from streamgd.losses import identity
from streamgd.metrics import Accumulator
from streamgd.optimizers import OPTIMIZERS
from streamgd.step import make_step, plain_path, train_step

N_FEAT = 6


def _spec(rng, *, precond: bool, t_scale: float) -> FeatureSpec:
    x = rng.normal(size=(500, N_FEAT)) @ rng.normal(size=(N_FEAT, N_FEAT))
    return FeatureSpec(
        names=tuple(f"x{i}" for i in range(N_FEAT)),
        target="y",
        center=np.zeros(N_FEAT),
        scale=rng.uniform(0.3, 3.0, N_FEAT),
        fill=np.zeros(N_FEAT),
        target_scale=t_scale,
        precond=preconditioner(np.corrcoef(x.T)) if precond else None,
    )


def _oracle(config: FitConfig, spec: FeatureSpec):
    """The general path of make_step: train_step on the raw rows, as make_step calls it."""
    loss, optimizer = config.make_loss(), config.make_optimizer()
    t_scale = spec.target_scale
    loss = loss.rescaled(t_scale) if loss.scale_target else loss

    def step(params, opt_state, raw, lr):
        t = raw[:, N_FEAT] if t_scale == 1.0 else raw[:, N_FEAT] / t_scale
        new, state, loss_sum, p = train_step(
            params,
            opt_state,
            raw[:, :N_FEAT],
            t,
            loss=loss,
            optimizer=optimizer,
            lr=lr,
            l2=config.l2,
            inv_scale=1.0 / spec.scale,
            precond=spec.precond,
        )
        return new, state, loss_sum, p, t

    return step


def _rows(rng, n, loss, dtype, layout):
    raw = rng.normal(size=(n, N_FEAT + 1))
    if loss in ("logistic", "hinge"):
        raw[:, N_FEAT] = rng.random(n) < 0.5
    raw = raw.astype(dtype)
    return np.asfortranarray(raw) if layout == "F" else np.ascontiguousarray(raw)


def _run(config, spec, *, dtype, layout, sizes, seed=0):
    """Both steps over the same batches; every output compared to the bit."""
    rng = np.random.default_rng(seed)
    plain, oracle = (
        make_step(config, spec, config.make_loss(), config.make_optimizer()),
        _oracle(config, spec),
    )
    assert plain_path(config, spec, config.make_loss())
    optimizer = config.make_optimizer()
    params = rng.normal(size=N_FEAT + 1) * 0.3
    a_params, a_state = params.copy(), optimizer.init(params)
    b_params, b_state = params.copy(), optimizer.init(params)
    kept = []  # earlier batches' outputs: the buffers must not reach them
    for i, n in enumerate(sizes):
        raw = _rows(rng, n, config.loss, dtype, layout)
        lr = 0.5 / (i + 1) ** 0.25
        a = plain(a_params, a_state, raw, lr)
        b = oracle(b_params, b_state, raw, lr)
        assert np.array_equal(a.params, b[0]), f"weights differ at step {i}"
        assert a.opt_state.keys() == b[1].keys()
        for key in b[1]:
            assert np.array_equal(a.opt_state[key], b[1][key]), f"{key} differs at step {i}"
        assert a.loss_sum == b[2] and isinstance(a.loss_sum, float)
        assert a.predictions.dtype == b[3].dtype and np.array_equal(a.predictions, b[3])
        assert a.target.dtype == b[4].dtype and np.array_equal(a.target, b[4])
        if config.loss == "squared":  # the residual it hands the running metrics
            assert np.array_equal(a.residual, b[3] - b[4])
        else:
            assert a.residual is None
        kept.append((a.predictions, a.predictions.copy(), a.residual, copy(a.residual)))
        a_params, a_state, b_params, b_state = a.params, a.opt_state, b[0], b[1]
    for p, p_then, r, r_then in kept:
        assert np.array_equal(p, p_then) and (r is None or np.array_equal(r, r_then))
    return a_params


@pytest.mark.parametrize("loss", ["squared", "huber", "absolute", "quantile"])
@pytest.mark.parametrize("precond", [True, False])
def test_plain_step_is_train_step_for_each_loss(loss, precond):
    spec = _spec(np.random.default_rng(1), precond=precond, t_scale=2.5)
    config = FitConfig(loss=loss, l2=0.01)
    _run(config, spec, dtype=np.float32, layout="F", sizes=[64, 64, 17, 200, 64, 1, 300])


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_plain_step_is_train_step_for_each_optimizer(optimizer):
    spec = _spec(np.random.default_rng(2), precond=True, t_scale=0.7)
    config = FitConfig(optimizer=optimizer)
    _run(config, spec, dtype=np.float32, layout="F", sizes=[128] * 6 + [37])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["F", "C"])
@pytest.mark.parametrize("t_scale", [1.0, 3.0])
def test_plain_step_is_train_step_for_each_layout(dtype, layout, t_scale):
    spec = _spec(np.random.default_rng(3), precond=True, t_scale=t_scale)
    _run(FitConfig(l2=0.1), spec, dtype=dtype, layout=layout, sizes=[256, 33, 256, 1024, 5])


def test_plain_step_takes_logistic_without_a_preconditioner():
    """A loss with a curvature takes the plain path only without a preconditioner (with
    one, the step is a Newton direction: the general path)."""
    config = FitConfig(loss="logistic")
    spec = _spec(np.random.default_rng(4), precond=False, t_scale=1.0)
    _run(config, spec, dtype=np.float32, layout="F", sizes=[100, 100, 7])
    assert not plain_path(
        config, _spec(np.random.default_rng(4), precond=True, t_scale=1.0), config.make_loss()
    )


def test_plain_step_learns_the_least_squares_weights():
    """Not only equal to train_step: its steps on the whole data reach numpy's least squares."""
    rng = np.random.default_rng(5)
    spec = dataclasses.replace(_spec(rng, precond=False, t_scale=1.0), scale=np.ones(N_FEAT))
    config = FitConfig(optimizer="sgd")
    step = make_step(config, spec, config.make_loss(), config.make_optimizer())
    x = rng.normal(size=(2000, N_FEAT))
    y = x @ rng.normal(size=N_FEAT) + 0.5 + 0.1 * rng.normal(size=2000)
    raw = np.column_stack([x, y])
    params, state = np.zeros(N_FEAT + 1), {}
    for _ in range(200):
        params, state, *_ = step(params, state, raw, 0.5)
    best = np.linalg.lstsq(np.column_stack([x, np.ones(2000)]), y, rcond=None)[0]
    np.testing.assert_allclose(params, best, atol=1e-9)


@pytest.mark.parametrize(
    "settings",
    [{"l1": 0.01}, {"clip_grad": 1.0}, {"clip_weights": 2.0}, {"loss": "softmax"}],
)
def test_settings_the_plain_step_does_not_take_go_the_general_way(settings):
    config = FitConfig(**settings)
    spec = _spec(np.random.default_rng(6), precond=False, t_scale=1.0)
    assert not plain_path(config, spec, config.make_loss())


def test_categorical_features_go_the_general_way():
    spec = _spec(np.random.default_rng(7), precond=False, t_scale=1.0)
    config = FitConfig()
    assert plain_path(config, spec, config.make_loss())
    cat = Categorical("c", ("a", "b"))
    assert not plain_path(
        config, dataclasses.replace(spec, categoricals=(cat,)), config.make_loss()
    )


def test_running_metrics_with_the_residual_are_those_without():
    """The residual the step hands over gives the running metrics to the bit."""
    rng = np.random.default_rng(8)
    spec = _spec(rng, precond=True, t_scale=2.0)
    config = FitConfig()
    step = make_step(config, spec, config.make_loss(), config.make_optimizer())
    given, computed = Accumulator("regression", auc=False), Accumulator("regression", auc=False)
    params, state = np.zeros(N_FEAT + 1), {}
    for n in (300, 300, 41):
        params, state, _, p, t, residual = step(
            params, state, _rows(rng, n, "squared", np.float32, "F"), 0.5
        )
        given.update_scaled(t, p, 2.0, 1.5, identity, residual=residual)
        computed.update_scaled(t, p, 2.0, 1.5, identity)
    assert np.array_equal(given.sums, computed.sums)
    assert (given.n, given.y_mean, given.y_m2) == (computed.n, computed.y_mean, computed.y_m2)
