"""Contract tests over every loss in the registry: gradients and curvatures against finite
differences, vectorised against per-sample, and documented formulas."""

from __future__ import annotations

import numpy as np
import pytest

from streamgd.errors import UsageError
from streamgd.losses import LOSSES, get_loss, sigmoid

NAMES = sorted(LOSSES)


def _valid_targets(loss, rng, n):
    """Targets the loss accepts: drawn from reals and from {0, 1}, minus what it rejects."""
    candidates = np.r_[rng.normal(size=4 * n) * 3, rng.integers(0, 2, 4 * n).astype(float)]
    rng.shuffle(candidates)
    if loss.invalid_target is not None:
        candidates = candidates[~loss.invalid_target(candidates)]
    assert len(candidates) >= n
    return candidates[:n]


def _sample(loss, seed, n=400):
    rng = np.random.default_rng(seed)
    return rng.normal(size=n) * 4, _valid_targets(loss, rng, n)


def test_registry_entries_are_named_after_their_keys():
    assert NAMES
    for name, loss in LOSSES.items():
        assert loss.name == name
        assert loss.task in ("regression", "binary")
        assert get_loss(name) is loss


def test_unknown_loss_is_a_usage_error_listing_the_choices():
    with pytest.raises(UsageError) as info:
        get_loss("hinge-ish")
    assert "hinge-ish" in str(info.value)
    assert all(name in str(info.value) for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_is_the_derivative_of_the_value(name, seed):
    loss = LOSSES[name]
    p, y = _sample(loss, seed)
    h = 1e-5
    numeric = (loss.value(p + h, y) - loss.value(p - h, y)) / (2 * h)
    np.testing.assert_allclose(loss.gradient(p, y), numeric, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_curvature_is_the_derivative_of_the_gradient(name):
    loss = LOSSES[name]
    p, y = _sample(loss, 2)
    h = 1e-5
    numeric = (loss.gradient(p + h, y) - loss.gradient(p - h, y)) / (2 * h)
    if loss.curvature is None:
        # None promises a constant curvature: the gradient is affine in p
        np.testing.assert_allclose(numeric, numeric[0], rtol=1e-6)
    else:
        np.testing.assert_allclose(loss.curvature(p, y), numeric, rtol=1e-6, atol=1e-8)
        assert (loss.curvature(p, y) >= 0).all()  # convex in p


@pytest.mark.parametrize("name", NAMES)
def test_vectorised_equals_per_sample(name):
    loss = LOSSES[name]
    p, y = _sample(loss, 3, n=50)
    one = lambda f: np.array([f(p[i : i + 1], y[i : i + 1])[0] for i in range(len(p))])  # noqa: E731
    np.testing.assert_array_equal(loss.value(p, y), one(loss.value))
    np.testing.assert_array_equal(loss.gradient(p, y), one(loss.gradient))


@pytest.mark.parametrize("name", NAMES)
def test_value_is_minimal_at_the_target_link(name):
    """The gradient vanishes where the link of p equals the target (a proper loss): for the
    identity link at p = y, for the logistic link as p approaches +-inf for y = 1 / 0."""
    loss = LOSSES[name]
    p, y = _sample(loss, 4)
    if loss.task == "regression":
        np.testing.assert_allclose(loss.gradient(y, y), 0, atol=1e-12)
        assert (loss.value(p, y) >= loss.value(y, y)).all()
    else:
        far = np.where(y == 1, 30.0, -30.0)
        np.testing.assert_allclose(loss.gradient(far, y), 0, atol=1e-12)
        assert (loss.value(p, y) > loss.value(far, y)).all()


@pytest.mark.parametrize("name", NAMES)
def test_value_and_gradient_are_finite_for_extreme_predictions(name):
    loss = LOSSES[name]
    p = np.array([-1e4, -700.0, -50.0, 0.0, 50.0, 700.0, 1e4])
    rng = np.random.default_rng(5)
    y = _valid_targets(loss, rng, len(p))
    for f in (loss.value, loss.gradient, loss.link):
        assert np.isfinite(f(p, y) if f is not loss.link else f(p)).all()


@pytest.mark.parametrize("name", NAMES)
def test_value_docstring_states_the_formula(name):
    doc = (LOSSES[name].value.__doc__ or "").strip()
    assert doc, f"{name}: the value function has no docstring"
    assert "p" in doc and "y" in doc and any(op in doc for op in ("+", "-", "^", "log", "frac"))


@pytest.mark.parametrize("name", [n for n in NAMES if LOSSES[n].task == "regression"])
def test_scale_power_describes_how_the_value_scales(name):
    loss = LOSSES[name]
    p, y = _sample(loss, 6)
    for s in (0.1, 3.0, 250.0):
        np.testing.assert_allclose(
            loss.value(s * p, s * y), s**loss.scale_power * loss.value(p, y), rtol=1e-12
        )


def test_logistic_specifics():
    loss = LOSSES["logistic"]
    assert loss.task == "binary"
    assert list(loss.invalid_target(np.array([0.0, 1.0, 0.5, 2.0, -1.0, np.nan]))) == [
        False,
        False,
        True,
        True,
        True,
        True,
    ]
    p = np.linspace(-10, 10, 101)
    q = loss.link(p)
    np.testing.assert_allclose(q, 1 / (1 + np.exp(-p)), rtol=1e-12)
    # log loss of the probability, written with numpy's plain formula
    y = (np.arange(101) % 2).astype(float)
    np.testing.assert_allclose(
        loss.value(p, y), -(y * np.log(q) + (1 - y) * np.log(1 - q)), rtol=1e-9
    )


def test_squared_specifics():
    loss = LOSSES["squared"]
    assert loss.invalid_target is None and loss.task == "regression"
    p, y = np.array([3.0, -1.0]), np.array([1.0, 1.0])
    np.testing.assert_array_equal(loss.value(p, y), 0.5 * (p - y) ** 2)
    np.testing.assert_array_equal(loss.link(p), p)


def test_sigmoid_is_stable_and_symmetric():
    p = np.array([-1e308, -745.0, -40.0, -1.0, 0.0, 1.0, 40.0, 745.0, 1e308])
    s = sigmoid(p)
    assert ((s >= 0) & (s <= 1)).all()
    np.testing.assert_allclose(s + sigmoid(-p), 1.0, rtol=1e-15)
    assert s[4] == 0.5 and np.all(np.diff(s) >= 0)
