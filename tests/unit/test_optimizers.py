"""Contract tests over every optimiser in the registry: each minimises a convex quadratic and
a small logistic regression (against a numpy Newton solve), keeps a checkpointable state, does
not touch its inputs, and follows its paper's formula."""

from __future__ import annotations

import copy
import doctest
import io

import numpy as np
import pytest

from streamgd.errors import UsageError
from streamgd.losses import sigmoid
from streamgd.optimizers import OPTIMIZERS, make_optimizer

NAMES = sorted(OPTIMIZERS)
# A step size each optimiser converges with on the quadratic below (eigenvalues 1..10): plain
# gradient descent needs lr < 2 / 10; momentum's effective step is lr / (1 - 0.9); Adam's
# steps are about lr in size whatever the gradient. A new entry without one gets 0.03.
LR = {"sgd": 0.1, "momentum": 0.01, "nesterov": 0.01, "adagrad": 1.0, "adam": 0.03}
# The same for the logistic regression below (Hessian eigenvalues about 0.02 to 0.5).
LOGISTIC_LR = {"sgd": 1.0, "momentum": 0.3, "nesterov": 0.3, "adagrad": 1.0, "adam": 0.1}
# RMSprop's steps are about lr in size however small the gradient (its average of g^2 forgets
# within ~10 steps), so it reaches an optimum only as the rate decays: lr * DECAY ** step.
DECAY = {"rmsprop": (0.995, 0.97)}  # (quadratic, logistic)
# Hyperparameters for the convergence tests. AdamW's decoupled decay moves its fixed point
# towards zero by O(weight_decay) (see test_adamw_decay_pulls_towards_zero); a tiny one keeps
# the decay's code path in play while that pull stays below the tolerance.
HYPER = {"adamw": {"weight_decay": 1e-7}}


def _schedule(name: str, problem: int, lr: float):
    decay = DECAY.get(name, (1.0, 1.0))[problem]
    return lambda t: lr * decay**t


def _quadratic(seed: int, dim: int = 6, condition: float = 10.0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    a = q @ np.diag(np.geomspace(1.0, condition, dim)) @ q.T
    c = rng.normal(size=dim) * 3
    return a, c


def _logistic_problem(seed: int, n: int = 300, dim: int = 4):
    """Features (with a last column of ones for the intercept) and 0/1 targets drawn from a
    logistic model: not separable, so the mean log loss has one minimum."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)) * rng.uniform(0.5, 2.0, dim)
    y = (rng.random(n) < sigmoid(x @ rng.normal(size=dim) + 0.3)).astype(float)
    return np.c_[x, np.ones(n)], y


def _logistic_gradient(z, y, theta):
    return z.T @ (sigmoid(z @ theta) - y) / len(y)


def _newton_solve(z, y):
    """The log-loss minimiser by plain Newton iterations, independent of streamgd."""
    theta = np.zeros(z.shape[1])
    for _ in range(100):
        q = 1.0 / (1.0 + np.exp(-(z @ theta)))
        h = (z * (q * (1.0 - q))[:, None]).T @ z / len(y)
        delta = np.linalg.solve(h, z.T @ (q - y) / len(y))
        theta = theta - delta
        if np.abs(delta).max() < 1e-15:
            break
    return theta


def _run(opt, a, c, lr, steps, x0=None):
    """``steps`` updates on ``(x - c) A (x - c) / 2``; ``lr`` a number or a function of t."""
    return _descend(opt, lambda x: a @ (x - c), np.zeros(len(c)) if x0 is None else x0, lr, steps)


def _descend(opt, gradient, x, lr, steps):
    rate = lr if callable(lr) else (lambda t: lr)
    state = opt.init(x)
    for t in range(steps):
        step, state = opt.update(gradient(x), state, x, rate(t))
        x = x + step
    return x, state


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_minimises_a_convex_quadratic(name, seed):
    a, c = _quadratic(seed)
    opt = OPTIMIZERS[name](**HYPER.get(name, {}))
    x, _ = _run(opt, a, c, _schedule(name, 0, LR.get(name, 0.03)), steps=3000)
    assert np.linalg.norm(x - c) < 1e-6 * np.linalg.norm(c)
    f = 0.5 * (x - c) @ a @ (x - c)
    assert f < 1e-10


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_minimises_a_logistic_regression(name, seed):
    z, y = _logistic_problem(seed)
    best = _newton_solve(z, y)
    assert np.abs(_logistic_gradient(z, y, best)).max() < 1e-12  # the oracle did converge
    opt = OPTIMIZERS[name](**HYPER.get(name, {}))
    lr = _schedule(name, 1, LOGISTIC_LR.get(name, 0.1))
    theta, _ = _descend(opt, lambda t: _logistic_gradient(z, y, t), np.zeros(z.shape[1]), lr, 500)
    assert np.linalg.norm(theta - best) < 1e-6 * np.linalg.norm(best)


@pytest.mark.parametrize("name", NAMES)
def test_state_is_a_dict_of_arrays_that_survives_a_checkpoint(name):
    a, c = _quadratic(3)
    opt = OPTIMIZERS[name]()
    lr = LR.get(name, 0.03)
    x, state = _run(opt, a, c, lr, steps=25)
    for s in (opt.init(np.zeros(len(c))), state):
        assert isinstance(s, dict)
        assert all(isinstance(k, str) for k in s)
        assert all(isinstance(v, np.ndarray | np.generic) for v in s.values())
        assert all(np.asarray(v).dtype != object for v in s.values())
    # through an npz without pickle, and on: the same steps to the bit
    buf = io.BytesIO()
    np.savez(buf, **state)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        restored = {k: z[k] for k in z.files}
    x1, x2, s1, s2 = x.copy(), x.copy(), state, restored
    for _ in range(10):
        g = a @ (x1 - c)
        step1, s1 = opt.update(g, s1, x1, lr)
        step2, s2 = opt.update(g, s2, x2, lr)
        assert np.array_equal(step1, step2)
        x1, x2 = x1 + step1, x2 + step2


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_state_keeps_its_types(name):
    opt = OPTIMIZERS[name]()
    state = opt.init(np.zeros(3))
    _, new = opt.update(np.ones(3), state, np.zeros(3), 0.1)
    for k, v in new.items():
        assert type(v) is type(state[k]), k


@pytest.mark.parametrize("name", NAMES)
def test_update_is_pure(name):
    a, c = _quadratic(4)
    opt = OPTIMIZERS[name]()
    x, state = _run(opt, a, c, 0.01, steps=5)
    g = a @ (x - c)
    before = (copy.deepcopy(state), g.copy(), x.copy())
    step1, new1 = opt.update(g, state, x, 0.01)
    assert set(state) == set(before[0])
    for k in state:
        assert np.array_equal(state[k], before[0][k]), f"{name} changed state[{k!r}] in place"
    assert np.array_equal(g, before[1]) and np.array_equal(x, before[2])
    step2, new2 = opt.update(g, state, x, 0.01)
    assert np.array_equal(step1, step2)
    assert all(np.array_equal(new1[k], new2[k]) for k in new1)


def test_updates_match_reference_formulas():
    """Plain loops written from the papers' formulas, as independent oracles."""
    rng = np.random.default_rng(5)
    grads = rng.normal(size=(20, 4))
    params = np.zeros(4)
    lr = 0.05

    def run(opt):
        state, steps = opt.init(params), []
        for g in grads:
            step, state = opt.update(g, state, params, lr)
            steps.append(step)
        return np.array(steps)

    np.testing.assert_allclose(run(make_optimizer("sgd")), -lr * grads, rtol=1e-15)

    v, expected = np.zeros(4), []
    for g in grads:
        v = 0.8 * v + g
        expected.append(-lr * v)
    np.testing.assert_allclose(run(make_optimizer("momentum", momentum=0.8)), expected, rtol=1e-13)

    b1, b2, eps = 0.8, 0.99, 1e-6
    m, s, expected = np.zeros(4), np.zeros(4), []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * g * g
        expected.append(-lr * (m / (1 - b1**t)) / (np.sqrt(s / (1 - b2**t)) + eps))
    got = run(make_optimizer("adam", beta1=b1, beta2=b2, eps=eps))
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_new_updates_match_reference_formulas():
    """Nesterov, AdaGrad, RMSprop and AdamW as plain loops, with parameters that move (so
    AdamW's decay and its mask are exercised)."""
    rng = np.random.default_rng(6)
    grads = rng.normal(size=(20, 4))
    params = rng.normal(size=(20, 4))
    lr = 0.05

    def run(opt):
        state, steps = opt.init(params[0]), []
        for g, x in zip(grads, params, strict=True):
            step, state = opt.update(g, state, x, lr)
            steps.append(step)
        return np.array(steps)

    v, expected = np.zeros(4), []
    for g in grads:
        v = 0.7 * v + g
        expected.append(-lr * (g + 0.7 * v))
    np.testing.assert_allclose(run(make_optimizer("nesterov", momentum=0.7)), expected, rtol=1e-13)

    acc, expected = np.full(4, 0.1), []
    for g in grads:
        acc = acc + g * g
        expected.append(-lr * g / (np.sqrt(acc) + 1e-6))
    got = run(make_optimizer("adagrad", eps=1e-6, initial_accumulator=0.1))
    np.testing.assert_allclose(got, expected, rtol=1e-13)

    s, expected = np.zeros(4), []
    for g in grads:
        s = 0.8 * s + 0.2 * g * g
        expected.append(-lr * g / (np.sqrt(s) + 1e-7))
    np.testing.assert_allclose(run(make_optimizer("rmsprop", decay=0.8, eps=1e-7)), expected)

    for decay_last in (False, True):
        m, s, expected = np.zeros(4), np.zeros(4), []
        mask = np.array([1.0, 1.0, 1.0, float(decay_last)])
        for t, (g, x) in enumerate(zip(grads, params, strict=True), start=1):
            m = 0.9 * m + 0.1 * g
            s = 0.999 * s + 0.001 * g * g
            adam_step = -lr * (m / (1 - 0.9**t)) / (np.sqrt(s / (1 - 0.999**t)) + 1e-8)
            expected.append(adam_step - lr * 0.2 * x * mask)
        got = run(make_optimizer("adamw", weight_decay=0.2, decay_last=decay_last))
        np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("decay_last", [False, True])
def test_adamw_without_weight_decay_is_adam_to_the_bit(decay_last):
    a, c = _quadratic(7)
    adam, adamw = (
        make_optimizer("adam"),
        make_optimizer("adamw", weight_decay=0.0, decay_last=decay_last),
    )
    x1 = x2 = np.zeros(len(c))
    s1, s2 = adam.init(x1), adamw.init(x2)
    assert s1.keys() == s2.keys()
    for _ in range(300):
        step1, s1 = adam.update(a @ (x1 - c), s1, x1, 0.03)
        step2, s2 = adamw.update(a @ (x2 - c), s2, x2, 0.03)
        assert step1.tobytes() == step2.tobytes()  # to the bit, the sign of zeros included
        assert all(s1[k].tobytes() == s2[k].tobytes() for k in s1)
        x1, x2 = x1 + step1, x2 + step2


def test_adamw_decay_pulls_towards_zero_and_spares_the_intercept():
    opt = make_optimizer("adamw", weight_decay=0.5)
    x = np.array([2.0, -4.0, 3.0])  # weights, then the intercept
    state = opt.init(x)
    for _ in range(10):  # no gradient: the weights shrink by (1 - lr * wd) a step
        step, state = opt.update(np.zeros(3), state, x, 0.1)
        x = x + step
    np.testing.assert_allclose(x, [2.0 * 0.95**10, -4.0 * 0.95**10, 3.0], rtol=1e-12)
    # on the quadratic, the fixed point moves from the optimum towards zero, more for more decay
    a, c = _quadratic(0)
    ends = [
        _run(make_optimizer("adamw", weight_decay=wd), a, c, 0.03, 3000)[0] for wd in (1e-3, 1e-2)
    ]
    errors = [np.linalg.norm(e - c) for e in ends]
    assert 0 < errors[0] < errors[1] < 0.01 * np.linalg.norm(c)
    assert np.linalg.norm(ends[1][:-1]) < np.linalg.norm(ends[0][:-1]) < np.linalg.norm(c[:-1])


@pytest.mark.parametrize(
    ("name", "hyper", "option"),
    [
        ("nesterov", {"momentum": 1.5}, "--momentum"),
        ("adagrad", {"eps": 0.0}, "--eps"),
        ("adagrad", {"initial_accumulator": -1.0}, "--initial-accumulator"),
        ("rmsprop", {"decay": 1.0}, "--decay"),
        ("rmsprop", {"eps": float("nan")}, "--eps"),
        ("adamw", {"weight_decay": -0.1}, "--weight-decay"),
        ("adamw", {"weight_decay": True}, "--weight-decay"),
    ],
)
def test_bad_hyperparameters_are_usage_errors_naming_the_option(name, hyper, option):
    with pytest.raises(UsageError) as info:
        make_optimizer(name, **hyper)
    assert str(info.value).startswith(f"{option} must be a number")
    assert repr(next(iter(hyper.values()))) in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_factories_ignore_what_they_do_not_take(name):
    opt = make_optimizer(name, momentum=0.5, unheard_of=3.0)
    assert opt.name == name


def test_docstrings_pin_their_numbers():
    import streamgd.optimizers

    assert doctest.testmod(streamgd.optimizers).failed == 0


def test_unknown_optimizer_is_a_usage_error():
    with pytest.raises(UsageError) as info:
        make_optimizer("lbfgs")
    assert "lbfgs" in str(info.value) and all(n in str(info.value) for n in NAMES)
