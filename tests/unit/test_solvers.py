"""Contract tests over every solver in the registry: what the trainer asks of each one."""

from __future__ import annotations

import numpy as np
import pytest

from streamgd.optimizers import make_optimizer
from streamgd.solvers import SOLVERS, BatchUpdate, Solver, get_solver


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_each_solver_is_registered_under_its_name(name):
    solver = get_solver(name)
    assert isinstance(solver, Solver) and solver.name == name
    assert isinstance(solver.one_pass, bool) and isinstance(solver.distributed, bool)


def _least_squares_problem(seed: int = 3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, 3))
    t = x @ [1.5, -2.0, 0.5] + 0.7 + 0.1 * rng.normal(size=400)
    return x, t


def _oracle(x, t):
    a = np.c_[x, np.ones(len(x))]
    return np.linalg.lstsq(a, t, rcond=None)[0]


def _sgd_step(params, opt_state, raw, lr):
    """A plain least-squares gradient step on raw ``[x, t]`` rows, for the contract."""
    x, t = raw[:, :-1], raw[:, -1]
    p = x @ params[:-1] + params[-1]
    g = p - t
    grad = np.r_[x.T @ g, g.sum()] / len(t)
    return BatchUpdate(params - lr * grad, opt_state, float(0.5 * g @ g), p, t)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_each_solver_fits_least_squares_over_its_passes(name):
    solver = get_solver(name)
    x, t = _least_squares_problem()
    raw = np.c_[x, t]
    params = np.zeros(4)
    opt_state = solver.init_state(params, make_optimizer("sgd"))
    update = solver.make_update(
        step=_sgd_step, n_features=3, inv_scale=np.ones(3), target_scale=1.0
    )
    passes = 1 if solver.one_pass else 200
    for _ in range(passes):
        for start in range(0, len(raw), 50):
            params, opt_state, loss_sum, p, target, _ = update(
                params, opt_state, raw[start : start + 50], 0.1
            )
            assert np.isfinite(loss_sum) and len(target) == 50
            assert (p is not None) == solver.train_metrics
        params, opt_state, mean_loss = solver.finish(params, opt_state, l2=0.0)
    np.testing.assert_allclose(params, _oracle(x, t), atol=1e-9 if solver.one_pass else 1e-2)
    if mean_loss is not None:
        residual = np.c_[x, np.ones(len(x))] @ params - t
        assert mean_loss == pytest.approx(0.5 * np.mean(residual**2))


def test_the_normal_solver_starts_each_pass_afresh():
    solver = get_solver("normal")
    x, t = _least_squares_problem()
    update = solver.make_update(
        step=_sgd_step, n_features=3, inv_scale=np.ones(3), target_scale=1.0
    )
    state = solver.init_state(np.zeros(4), None)
    _, state, *_ = update(np.zeros(4), state, np.c_[x, t], 1.0)
    _, fresh, _ = solver.finish(np.zeros(4), state, l2=0.0)
    assert int(fresh["rows"]) == 0 and not fresh["ata"].any()
