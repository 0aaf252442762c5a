"""Contract tests over every loss in the registry (at its default parameters and at a few
others) and over custom losses: gradients and curvatures against finite differences,
vectorised against per-sample, behaviour at kinks, target scaling, and documented formulas."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from conftest import trigonometric_loss

import streamgd.losses
from streamgd.errors import UsageError
from streamgd.losses import (
    LOSS_FACTORIES,
    LOSSES,
    TASKS,
    Loss,
    get_loss,
    make_loss,
    sigmoid,
)

# per-sample losses of a scalar prediction; softmax (vector logits) has its own tests below
NAMES = sorted(n for n, loss in LOSSES.items() if loss.task != "multiclass")
# Parameters other than the defaults that the contract also covers.
VARIANTS = {
    "huber": [{"huber_delta": 0.3}, {"huber_delta": 2.5}],
    "quantile": [{"quantile": 0.1}, {"quantile": 0.9}],
}
REGISTERED = [(name, {}) for name in NAMES] + [
    (name, params) for name, variants in VARIANTS.items() for params in variants
]
CUSTOM = {"trigonometric": trigonometric_loss()}


def _id(case) -> str:
    name, params = case
    return name + "".join(f"[{k}={v}]" for k, v in params.items())


def _registered(case) -> Loss:
    name, params = case
    return make_loss(name, **params)


def _any(case) -> Loss:
    return CUSTOM[case[0]] if case[0] in CUSTOM else _registered(case)


ALL = REGISTERED + [(name, {}) for name in CUSTOM]
registered = pytest.mark.parametrize("case", REGISTERED, ids=_id)
every_loss = pytest.mark.parametrize("case", ALL, ids=_id)


def _valid_targets(loss, rng, n):
    """Targets the loss accepts: drawn from reals and from {0, 1}, minus what it rejects."""
    candidates = np.r_[rng.normal(size=4 * n) * 3, rng.integers(0, 2, 4 * n).astype(float)]
    rng.shuffle(candidates)
    if loss.invalid_target is not None:
        candidates = candidates[~loss.invalid_target(candidates)]
    assert len(candidates) >= n
    return candidates[:n]


def _away_from_kinks(loss, p, y, gap=1e-3):
    """Drop points within ``gap`` of a kink of the piecewise losses: ``p - y`` at 0 or at
    +-delta, ``p`` at +-1 (hinge). Random points of any new loss miss its kinks anyway."""
    r = p - y
    delta = dict(loss.params).get("huber_delta", 1.0)
    near = (np.abs(r) < gap) | (np.abs(np.abs(r) - delta) < gap) | (np.abs(np.abs(p) - 1) < gap)
    return p[~near], y[~near]


def _sample(loss, seed, n=400):
    rng = np.random.default_rng(seed)
    return _away_from_kinks(loss, rng.normal(size=n) * 4, _valid_targets(loss, rng, n))


def test_registry_entries_are_named_after_their_keys():
    assert NAMES and list(LOSSES) == list(LOSS_FACTORIES)
    for name, loss in LOSSES.items():
        assert loss.name == name
        assert loss.task in TASKS
        assert get_loss(name) is loss
        assert make_loss(name) == loss
        assert make_loss(name, **dict(loss.params)) == loss  # params rebuild the loss


@pytest.mark.parametrize("lookup", [get_loss, make_loss])
def test_unknown_loss_is_a_usage_error_listing_the_choices(lookup):
    with pytest.raises(UsageError) as info:
        lookup("hinge-ish")
    assert str(info.value).startswith("--loss must be one of")
    assert "hinge-ish" in str(info.value)
    assert all(name in str(info.value) for name in NAMES)


@every_loss
@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_is_the_derivative_of_the_value(case, seed):
    loss = _any(case)
    p, y = _sample(loss, seed)
    h = 1e-5
    numeric = (loss.value(p + h, y) - loss.value(p - h, y)) / (2 * h)
    np.testing.assert_allclose(loss.gradient(p, y), numeric, rtol=1e-6, atol=1e-7)


@registered
def test_curvature_is_the_derivative_of_the_gradient(case):
    loss = _registered(case)
    p, y = _sample(loss, 2)
    h = 1e-5
    numeric = (loss.gradient(p + h, y) - loss.gradient(p - h, y)) / (2 * h)
    if loss.curvature is None:
        # None: the trainer takes the curvature as 1, which must be exact (squared) or an
        # upper bound of a convex loss's (huber: 0 or 1; piecewise linear: 0)
        assert (numeric > -1e-6).all() and (numeric < 1 + 1e-6).all()
    else:
        np.testing.assert_allclose(loss.curvature(p, y), numeric, rtol=1e-6, atol=1e-8)
        assert (loss.curvature(p, y) >= 0).all()  # convex in p


@every_loss
def test_vectorised_equals_per_sample(case):
    loss = _any(case)
    p, y = _sample(loss, 3, n=50)
    one = lambda f: np.array([f(p[i : i + 1], y[i : i + 1])[0] for i in range(len(p))])  # noqa: E731
    functions = [loss.value, loss.gradient] + [loss.curvature] * (loss.curvature is not None)
    for f in functions:
        np.testing.assert_array_equal(f(p, y), one(f))
    np.testing.assert_array_equal(loss.link(p), [loss.link(p[i : i + 1])[0] for i in range(len(p))])


@registered
def test_gradient_points_from_the_link_to_the_target(case):
    """Regression and binary losses are proper for their link: the gradient has the sign of
    ``link(p) - y`` (zero where they agree), so the value is least where the link hits the
    target; for an identity link at ``p = y``, for the logistic as ``p`` goes to +-inf. A
    margin loss pushes the score to the target's side until ``s p >= 1``."""
    loss = _registered(case)
    p, y = _sample(loss, 4)
    g = loss.gradient(p, y)
    if loss.task == "margin":
        s = 2 * y - 1
        assert (g * s <= 0).all()
        assert (g[s * p >= 1] == 0).all() and (g[s * p < 1] != 0).all()
        assert (loss.value(p, y) >= loss.value(30 * s, y)).all()
        np.testing.assert_array_equal(loss.value(30 * s, y), 0)
        return
    np.testing.assert_array_equal(np.sign(g), np.sign(loss.link(p) - y))
    if loss.task == "binary":
        far = np.where(y == 1, 30.0, -30.0)
        np.testing.assert_allclose(loss.gradient(far, y), 0, atol=1e-12)
        assert (loss.value(p, y) > loss.value(far, y)).all()
    elif np.array_equal(loss.link(p), p):
        np.testing.assert_allclose(loss.gradient(y, y), 0, atol=1e-12)
        assert (loss.value(p, y) >= loss.value(y, y)).all()


@registered
def test_value_and_gradient_are_finite_for_extreme_predictions(case):
    loss = _registered(case)
    p = np.array([-1e4, -700.0, -50.0, 0.0, 50.0, 700.0, 1e4])
    rng = np.random.default_rng(5)
    y = _valid_targets(loss, rng, len(p))
    for f in (loss.value, loss.gradient, loss.curvature):
        assert f is None or np.isfinite(f(p, y)).all()
    assert np.isfinite(loss.link(p)).all()


@registered
def test_value_docstring_states_the_formula(case):
    doc = (_registered(case).value.__doc__ or "").strip()
    assert doc, f"{case[0]}: the value function has no docstring"
    assert "p" in doc and "y" in doc and any(op in doc for op in ("+", "-", "^", "log", "frac"))


@registered
def test_scale_power_describes_how_the_value_scales(case):
    """What the trainer relies on when it standardises the target: a scale_target loss depends
    on ``p - y`` only, and scaling both by ``s`` scales the value by ``s ** scale_power`` once
    the parameters in target units are rescaled."""
    loss = _registered(case)
    p, y = _sample(loss, 6)
    if not loss.scale_target:
        assert loss.scale_power == 0 and loss.rescaled(1.0) is loss
        with pytest.raises(ValueError, match="unscaled"):
            loss.rescaled(2.0)
        return
    assert loss.task == "regression" and np.array_equal(loss.link(p), p)
    for c in (-7.0, 1e3):
        np.testing.assert_allclose(loss.value(p + c, y + c), loss.value(p, y), rtol=1e-9, atol=1e-9)
    for s in (0.1, 3.0, 250.0):
        scaled = loss.rescaled(s)
        assert scaled.name == loss.name and scaled.scale_power == loss.scale_power
        np.testing.assert_allclose(
            loss.value(s * p, s * y), s**loss.scale_power * scaled.value(p, y), rtol=1e-12
        )
        np.testing.assert_allclose(
            loss.gradient(s * p, s * y),
            s ** (loss.scale_power - 1) * scaled.gradient(p, y),
            rtol=1e-12,
        )


@pytest.mark.parametrize("bad", [0.0, -1.0, np.inf, np.nan])
def test_rescaled_wants_a_positive_scale(bad):
    with pytest.raises(ValueError, match="target_scale"):
        LOSSES["squared"].rescaled(bad)


def test_parametrised_losses_compare_by_name_and_parameters():
    assert make_loss("huber", huber_delta=2) == make_loss("huber", huber_delta=2.0)
    assert make_loss("huber", huber_delta=2.0) != make_loss("huber")
    assert make_loss("huber", huber_delta=None) == make_loss("huber")  # None: the default
    assert make_loss("huber", huber_delta=6.0).rescaled(3.0) == make_loss("huber", huber_delta=2.0)
    assert make_loss("quantile", quantile=0.9).rescaled(3.0) == make_loss("quantile", quantile=0.9)
    assert len({make_loss("quantile", quantile=0.9), make_loss("quantile", quantile=0.9)}) == 1
    assert make_loss("squared", huber_delta=2.0, quantile=0.3) is LOSSES["squared"]


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("huber", {"huber_delta": 0.0}, "--huber-delta must be a number > 0, got 0.0"),
        ("huber", {"huber_delta": -1}, "--huber-delta must be a number > 0, got -1"),
        ("huber", {"huber_delta": np.inf}, "--huber-delta must be a number > 0, got inf"),
        ("huber", {"huber_delta": "1"}, "--huber-delta must be a number > 0, got '1'"),
        ("quantile", {"quantile": 0.0}, "--quantile must be a number > 0 and < 1, got 0.0"),
        ("quantile", {"quantile": 1}, "--quantile must be a number > 0 and < 1, got 1"),
        ("quantile", {"quantile": np.nan}, "--quantile must be a number > 0 and < 1, got nan"),
    ],
)
def test_bad_parameters_are_usage_errors_naming_the_option(name, params, message):
    with pytest.raises(UsageError) as info:
        make_loss(name, **params)
    assert str(info.value) == message


# -- kinks -------------------------------------------------------------------------------------
def _one_sided(loss, p, y, h=1e-7):
    left = (loss.value(p, y) - loss.value(p - h, y)) / h
    right = (loss.value(p + h, y) - loss.value(p, y)) / h
    return left, right


@registered
def test_gradient_at_a_kink_is_a_subgradient(case):
    """At a kink the gradient lies between the one-sided derivatives; where that range holds
    0 (the minimum of absolute and quantile, the margin of hinge) the gradient is 0."""
    loss = _registered(case)
    delta = dict(loss.params).get("huber_delta", 1.0)
    rng = np.random.default_rng(7)
    y = _valid_targets(loss, rng, 12)
    # hinge: s p = 1; the others: p - y at 0 and at +-delta
    kinks = np.r_[y[:4], y[4:8] + delta, y[8:] - delta]
    p = 2 * y - 1 if loss.task == "margin" else kinks
    g = loss.gradient(p, y)
    left, right = _one_sided(loss, p, y)
    lo, hi = np.minimum(left, right), np.maximum(left, right)
    assert ((lo - 1e-6 <= g) & (g <= hi + 1e-6)).all(), (g, left, right)
    np.testing.assert_array_equal(g[(lo < -1e-3) & (hi > 1e-3)], 0.0)


def test_kinks_of_absolute_quantile_and_hinge():
    y = np.array([0.0, 1.0, 1.0, 0.0])
    p = np.array([0.0, 1.0, 1.0 + 1e-12, -1e-12])
    np.testing.assert_array_equal(LOSSES["absolute"].gradient(p, y), [0.0, 0.0, 1.0, -1.0])
    for q in (0.1, 0.5, 0.9):
        g = make_loss("quantile", quantile=q).gradient(p, y)
        np.testing.assert_allclose(g, [0.0, 0.0, 1 - q, -q], rtol=1e-15)
    hinge = LOSSES["hinge"]
    p = np.array([1.0, -1.0, 1.0 - 1e-12, -1.0 + 1e-12, 1.0 + 1e-12])
    y = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    np.testing.assert_array_equal(hinge.gradient(p, y), [0.0, 0.0, -1.0, 1.0, 0.0])
    np.testing.assert_array_equal(hinge.value(p[:2], y[:2]), 0.0)
    huber = make_loss("huber", huber_delta=0.5)  # differentiable at +-delta: no kink there
    np.testing.assert_array_equal(huber.gradient(np.array([0.5, -0.5]), np.zeros(2)), [0.5, -0.5])


# -- the new losses' specifics -----------------------------------------------------------------
def test_huber_specifics():
    loss = make_loss("huber", huber_delta=2.0)
    assert loss.task == "regression" and loss.scale_target and loss.curvature is None
    assert loss.params == (("huber_delta", 2.0),) and loss.scale_power == 2
    r = np.array([-5.0, -2.0, -0.5, 0.0, 1.5, 2.0, 7.0])
    y = np.full_like(r, 3.0)
    expected = np.where(np.abs(r) <= 2, r**2 / 2, 2 * (np.abs(r) - 1))
    np.testing.assert_allclose(loss.value(y + r, y), expected, rtol=1e-12)
    np.testing.assert_allclose(loss.gradient(y + r, y), np.clip(r, -2, 2), rtol=1e-12)
    # small residuals: the squared loss; the default delta is 1
    np.testing.assert_allclose(
        get_loss("huber").value(y + r / 10, y), LOSSES["squared"].value(y + r / 10, y)
    )


def test_absolute_and_quantile_specifics():
    absolute, median = LOSSES["absolute"], LOSSES["quantile"]
    assert median.params == (("quantile", 0.5),)
    assert absolute.scale_power == median.scale_power == 1
    p, y = np.linspace(-3, 3, 13), np.full(13, 0.7)
    np.testing.assert_array_equal(absolute.value(p, y), np.abs(p - y))
    np.testing.assert_allclose(median.value(p, y), absolute.value(p, y) / 2, rtol=1e-15)
    np.testing.assert_allclose(median.gradient(p, y), absolute.gradient(p, y) / 2, rtol=1e-15)
    # the constant minimising the mean pinball loss is the sample's q-quantile: the smallest c
    # with at least q n of the sample at or below it
    sample = np.sort(np.random.default_rng(8).exponential(size=999))
    grid = np.linspace(0, 5, 5001)
    for q in (0.1, 0.5, 0.9):
        loss = make_loss("quantile", quantile=q)
        risk = [loss.value(np.full(999, c), sample).mean() for c in grid]
        best = grid[int(np.argmin(risk))]
        assert best == pytest.approx(sample[math.ceil(q * 999) - 1], abs=1e-3)


def test_poisson_specifics():
    loss = LOSSES["poisson"]
    assert loss.task == "regression" and not loss.scale_target and loss.scale_power == 0
    assert list(loss.invalid_target(np.array([0.0, 2.5, 7.0, -0.5, np.nan, np.inf]))) == [
        False,
        False,
        False,
        True,
        True,
        True,
    ]
    assert "poisson" in loss.expected_target
    p = np.linspace(-5, 5, 11)
    y = np.arange(11.0)
    np.testing.assert_allclose(loss.link(p), np.exp(p), rtol=1e-15)
    np.testing.assert_allclose(loss.value(p, y), np.exp(p) - y * p, rtol=1e-15)
    # the negative log-likelihood of a Poisson count, less its constant log(y!)
    nll = [-(yi * pi - math.exp(pi) - math.lgamma(yi + 1)) for pi, yi in zip(p, y, strict=True)]
    np.testing.assert_allclose(loss.value(p, y) + [math.lgamma(v + 1) for v in y], nll)
    np.testing.assert_allclose(loss.gradient(np.log(y[1:]), y[1:]), 0.0, atol=1e-12)
    np.testing.assert_allclose(loss.curvature(p, y), np.exp(p), rtol=1e-15)
    # beyond p = 50 exp is continued smoothly: no overflow, derivatives still agree
    far = np.array([49.0, 50.0, 51.0, 800.0, 1e5])
    y = np.full(5, 3.0)
    h = 1e-6 * far
    numeric = (loss.value(far + h, y) - loss.value(far - h, y)) / (2 * h)
    np.testing.assert_allclose(loss.gradient(far, y), numeric, rtol=1e-6)
    numeric = (loss.gradient(far + h, y) - loss.gradient(far - h, y)) / (2 * h)
    smooth = far != 50.0  # the curvature is continuous there, its slope jumps
    np.testing.assert_allclose(loss.curvature(far, y)[smooth], numeric[smooth], rtol=1e-6)
    assert np.all(np.diff(loss.link(far)) > 0) and loss.link(far)[1] == math.exp(50)


def test_hinge_specifics():
    loss = LOSSES["hinge"]
    assert loss.task == "margin" and not loss.scale_target and loss.curvature is None
    targets = np.array([0.0, 1.0, 0.5, 2.0, -1.0, np.nan])
    np.testing.assert_array_equal(
        loss.invalid_target(targets), LOSSES["logistic"].invalid_target(targets)
    )
    p = np.linspace(-3, 3, 13)
    np.testing.assert_array_equal(loss.link(p), p)
    y = (np.arange(13) % 2).astype(float)
    s = 2 * y - 1
    np.testing.assert_array_equal(loss.value(p, y), np.maximum(0, 1 - s * p))


# -- custom losses -----------------------------------------------------------------------------
def test_a_custom_loss_from_two_functions():
    loss = Loss.custom("cubic", lambda p, y: np.abs(p - y) ** 3, lambda p, y: 3 * (p - y) ** 2)
    assert loss.name == "cubic" and loss.task == "regression" and not loss.scale_target
    assert loss.curvature is None and loss.invalid_target is None and loss.params == ()
    np.testing.assert_array_equal(loss.link(np.array([2.0])), [2.0])
    assert loss.rescaled(1.0) is loss
    classifier = Loss.custom(
        "probit-ish",
        LOSSES["logistic"].value,
        LOSSES["logistic"].gradient,
        link=sigmoid,
        task="binary",
    )
    assert classifier.task == "binary" and classifier.link is sigmoid
    assert "cubic" not in LOSSES and "trigonometric" not in LOSSES


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "ranking"}, "task must be one of regression, binary, margin"),
        ({"link": 3}, "link"),
    ],
)
def test_a_custom_loss_is_checked(kwargs, message):
    with pytest.raises(UsageError, match=message):
        Loss.custom("x", lambda p, y: p, lambda p, y: p, **kwargs)
    with pytest.raises(UsageError, match="gradient"):
        Loss.custom("x", lambda p, y: p, None)  # type: ignore[arg-type]


def test_trigonometric_loss():
    loss = trigonometric_loss()
    assert loss.name == "trigonometric" and loss.task == "regression" and loss.curvature is None
    theta = np.linspace(-150, 150, 3001)
    y = np.random.default_rng(9).normal(size=theta.size) * 10
    p = y + theta
    # the batch mean is the textbook 1/(2N) sum theta^2 sin(pi theta / 50)
    n = theta.size
    textbook = sum(t * t * math.sin(math.pi * t / 50) for t in theta) / (2 * n)
    assert loss.value(p, y).mean() == pytest.approx(textbook, rel=1e-12)
    a = math.pi / 50
    expected = [t * math.sin(a * t) + a / 2 * t * t * math.cos(a * t) for t in theta]
    np.testing.assert_allclose(loss.gradient(p, y), expected, rtol=1e-9, atol=1e-9)
    h = 1e-5
    numeric = (loss.value(p + h, y) - loss.value(p - h, y)) / (2 * h)
    np.testing.assert_allclose(loss.gradient(p, y), numeric, rtol=1e-6, atol=1e-6)
    # not convex: negative on (-50, 0), so its minimum is not at p = y
    assert loss.value(np.array([-25.0]), np.array([0.0]))[0] == pytest.approx(-312.5)


def test_docstrings_pin_their_numbers():
    assert doctest.testmod(streamgd.losses).failed == 0


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


# -- softmax: logits of shape (n, K) --------------------------------------------------------
def test_softmax_gradient_and_curvature_match_finite_differences():
    loss = LOSSES["softmax"]
    rng = np.random.default_rng(21)
    p = rng.normal(size=(7, 4)) * 2
    y = rng.integers(0, 4, size=7)
    h = 1e-6
    fd = np.zeros_like(p)
    for k in range(4):
        e = np.zeros_like(p)
        e[:, k] = h
        fd[:, k] = (loss.value(p + e, y) - loss.value(p - e, y)) / (2 * h)
    np.testing.assert_allclose(loss.gradient(p, y), fd, rtol=1e-6, atol=1e-8)
    diag = np.zeros_like(p)
    for k in range(4):
        e = np.zeros_like(p)
        e[:, k] = h
        diag[:, k] = (loss.gradient(p + e, y)[:, k] - loss.gradient(p - e, y)[:, k]) / (2 * h)
    np.testing.assert_allclose(loss.curvature(p, y), diag, rtol=1e-5, atol=1e-8)


def test_softmax_is_logistic_for_two_classes():
    rng = np.random.default_rng(22)
    z = rng.normal(size=50) * 3
    y = rng.integers(0, 2, size=50)
    two = np.c_[np.zeros(50), z]  # logit of class 1 relative to class 0
    np.testing.assert_allclose(
        LOSSES["softmax"].value(two, y), LOSSES["logistic"].value(z, y.astype(float)), rtol=1e-12
    )
    probs = LOSSES["softmax"].link(np.array([[1000.0, 0.0, -1000.0]]))  # no overflow
    assert np.isfinite(probs).all() and probs[0, 0] == 1.0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_the_starting_intercept_is_the_best_constant_model(name):
    loss = get_loss(name)
    if loss.task == "multiclass":
        frequencies = np.array([0.2, 0.5, 0.3])
        start = loss.initial_intercept(frequencies)
        np.testing.assert_allclose(loss.link(start[None, :])[0], frequencies)
        return
    mean = 0.25 if loss.task in ("binary", "margin") else 3.0
    start = loss.initial_intercept(mean)
    if loss.inverse_link is None:
        assert start == 0.0  # the target arrives centred, or the loss has no base rate
    else:
        assert float(loss.link(np.array([start]))[0]) == pytest.approx(mean)
