"""Contract tests over every optimiser and schedule in the registries."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest

from streamgd.errors import UsageError
from streamgd.optimizers import OPTIMIZERS, make_optimizer
from streamgd.schedules import SCHEDULES, make_schedule

NAMES = sorted(OPTIMIZERS)
# A step size each optimiser converges with on the quadratic below (eigenvalues 1..10): plain
# gradient descent needs lr < 2 / 10; momentum's effective step is lr / (1 - 0.9); Adam's
# steps are about lr in size whatever the gradient. A new entry without one gets 0.03.
LR = {"sgd": 0.1, "momentum": 0.01, "adam": 0.03}


def _quadratic(seed: int, dim: int = 6, condition: float = 10.0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    a = q @ np.diag(np.geomspace(1.0, condition, dim)) @ q.T
    c = rng.normal(size=dim) * 3
    return a, c


def _run(opt, a, c, lr, steps, x0=None):
    x = np.zeros(len(c)) if x0 is None else x0
    state = opt.init(x)
    for _ in range(steps):
        step, state = opt.update(a @ (x - c), state, x, lr)
        x = x + step
    return x, state


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_minimises_a_convex_quadratic(name, seed):
    a, c = _quadratic(seed)
    x, _ = _run(OPTIMIZERS[name](), a, c, LR.get(name, 0.03), steps=3000)
    assert np.linalg.norm(x - c) < 1e-6 * np.linalg.norm(c)
    f = 0.5 * (x - c) @ a @ (x - c)
    assert f < 1e-10


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


def test_adam_state_keeps_its_types():
    opt = OPTIMIZERS["adam"]()
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


def test_unknown_optimizer_is_a_usage_error():
    with pytest.raises(UsageError) as info:
        make_optimizer("lbfgs")
    assert "lbfgs" in str(info.value) and all(n in str(info.value) for n in NAMES)


# -- schedules ---------------------------------------------------------------------------------

STEPS = [0, 1, 2, 3, 10, 100, 10_000, 10**9]


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("lr", [1e-3, 0.5])
def test_schedule_is_a_pure_positive_non_increasing_function_of_the_step(name, lr):
    sched = SCHEDULES[name](lr)
    values = [sched(t) for t in STEPS]
    assert values == [SCHEDULES[name](lr)(t) for t in reversed(STEPS)][::-1]  # fresh, any order
    assert values == [sched(t) for t in STEPS]  # called again: the same
    assert all(isinstance(v, float) and v > 0 for v in values)
    assert all(b <= a for a, b in zip(values, values[1:], strict=False))
    assert values[0] == lr


def test_schedule_formulas():
    for t in STEPS:
        assert make_schedule("constant", 0.2)(t) == 0.2
        assert make_schedule("invscaling", 0.2, power_t=0.5)(t) == pytest.approx(
            0.2 / np.sqrt(t + 1), rel=1e-12
        )
    inv = make_schedule("invscaling", 1.0)
    assert inv(100) < inv(10) < inv(0)


def test_unknown_schedule_is_a_usage_error():
    with pytest.raises(UsageError, match="cosine"):
        make_schedule("cosine", 0.1)
