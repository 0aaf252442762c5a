"""Sample weights, unit by unit: the settings, class weights, the weight check, weighted
statistics, the weighted step (against finite differences), weighted normal equations and
weighted metrics, each against a plain numpy computation."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from streamgd.config import FitConfig
from streamgd.errors import DataError, UsageError
from streamgd.features import Stats
from streamgd.features.rows import preparer
from streamgd.features.weights import (
    Weighting,
    bad_weight,
    class_weight_pairs,
    resolve_class_weights,
)
from streamgd.losses import get_loss
from streamgd.metrics import Accumulator
from streamgd.optimizers import make_optimizer
from streamgd.solvers import normal_accumulate, normal_init, normal_loss, normal_solve
from streamgd.step import train_step


# -- settings ---------------------------------------------------------------------------------
def test_weight_and_class_weight_default_to_none():
    config = FitConfig(target="y")
    assert config.weight is None and config.class_weight is None


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"weight": "y"}, "is the target"),
        ({"weight": "w", "features": ("a", "w")}, "is a feature"),
        ({"weight": "w", "categorical": ("w",)}, "is a feature"),
        ({"class_weight": "balanced"}, "--loss squared"),  # not a classification loss
        ({"class_weight": "a=2,b", "loss": "softmax"}, "LABEL=WEIGHT"),
        ({"class_weight": "a=-1", "loss": "softmax"}, "LABEL=WEIGHT"),
        ({"class_weight": "a=nan", "loss": "softmax"}, "LABEL=WEIGHT"),
        ({"class_weight": "a=1,a=2", "loss": "softmax"}, "twice"),
        ({"class_weight": ["a"], "loss": "softmax"}, "mapping"),
    ],
)
def test_bad_weight_settings_are_usage_errors(settings, needle):
    with pytest.raises(UsageError, match=needle):
        FitConfig(target="y", **settings)


def test_a_class_weight_mapping_becomes_its_text():
    config = FitConfig(target="y", loss="logistic", class_weight={0: 1, 1: 2.5})
    assert config.class_weight == "0=1.0,1=2.5"
    assert FitConfig.from_dict(config.to_dict()) == config  # a checkpoint's round trip
    bools = FitConfig(target="y", loss="hinge", class_weight={True: 3})
    assert bools.class_weight == "true=3.0"


def test_class_weight_pairs():
    assert class_weight_pairs("a=2,b=1") == [("a", 2.0), ("b", 1.0)]
    assert class_weight_pairs("x=y=0.5") == [("x=y", 0.5)]  # the last '=' splits


# -- class weights ----------------------------------------------------------------------------
def test_balanced_is_rows_over_classes_times_class_rows():
    totals = np.array([60.0, 30.0, 10.0])
    got = resolve_class_weights("balanced", ("a", "b", "c"), totals)
    assert np.allclose(got, 100.0 / (3 * totals))
    assert np.isclose((got * totals).sum(), totals.sum())  # the mean weight stays 1
    unseen = resolve_class_weights("balanced", ("a", "b"), np.array([5.0, 0.0]))
    assert unseen.tolist() == [0.5, 1.0]


@pytest.mark.parametrize("label", ["1", "true", "TRUE", "1.0"])
def test_binary_labels_by_code_or_boolean_name(label):
    got = resolve_class_weights(f"{label}=4", None, np.array([3.0, 1.0]))
    assert got.tolist() == [1.0, 4.0]


def test_multiclass_labels_by_text_and_numbers_by_value():
    assert resolve_class_weights("b=2", ("a", "b"), np.ones(2)).tolist() == [1.0, 2.0]
    assert resolve_class_weights("7.0=3", (3, 7), np.ones(2)).tolist() == [1.0, 3.0]


@pytest.mark.parametrize(("classes", "known"), [(None, "0, 1"), (("cat", "dog"), "cat, dog")])
def test_an_unknown_label_names_it_and_the_known_ones(classes, known):
    with pytest.raises(UsageError, match=f"unknown class label 'bird'.*{known}"):
        resolve_class_weights("bird=2", classes, np.ones(2))


def test_effective_weight_is_row_times_class_over_mean():
    raw = np.array([[0.5, 0.0, 2.0], [1.5, 1.0, 3.0], [2.5, 1.0, 0.0]], dtype=np.float32)
    weighting = Weighting("w", np.array([1.0, 4.0]), mean=2.0)
    assert weighting.effective(raw, 1).tolist() == [1.0, 6.0, 0.0]
    assert Weighting(None, np.array([1.0, 4.0]), 2.0).effective(raw, 1).tolist() == [0.5, 2, 2]


# -- the weight check -------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "shown"), [(np.nan, "missing"), (-1.0, "-1"), (np.inf, "inf")])
def test_a_bad_weight_names_file_row_and_column(value, shown):
    w = np.array([1.0, 0.0, 2.0, value, 3.0])
    error = bad_weight(w, "w", "data.parquet", first_row=100)
    assert isinstance(error, DataError)
    assert str(error).startswith("data.parquet: row 104: column 'w': weight " + shown)
    assert bad_weight(np.array([0.0, 1e300, 1e300]), "w", "f", 0) is None  # sum overflows


def test_the_preparer_checks_weights_before_anything_else():
    prepare = preparer(
        ["x"], "y", missing="impute", fill=np.zeros(1), check_target=None, weight="w"
    )
    m = np.asfortranarray([[1.0, np.nan, 1.0], [2.0, 3.0, -0.5]])
    with pytest.raises(DataError, match="row 12: column 'w'"):
        prepare(m, "f.csv", 10)


# -- weighted statistics ----------------------------------------------------------------------
def _data(seed=0, n=500):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) * [1.0, 10.0, 0.1] + [5.0, -3.0, 0.0]
    w = rng.uniform(0, 3, size=n)
    return x, w


def test_weighted_stats_match_numpy():
    x, w = _data()
    s = Stats.of(x, weights=w)
    mean = np.average(x, axis=0, weights=w)
    var = np.average((x - mean) ** 2, axis=0, weights=w) * len(x) / (len(x) - 1)
    assert np.allclose(s.mean, mean) and np.allclose(s.std, np.sqrt(var))
    assert np.allclose(s.imputed_std, np.sqrt(var))
    cov = np.cov(x.T, aweights=w)
    assert np.allclose(s.correlation(3), cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov))))


def test_weighted_stats_merge_like_one_pass_and_ignore_a_common_factor():
    x, w = _data(1)
    x[::7, 1] = np.nan  # missing values are skipped, by weight too
    whole = Stats.of(x, weights=w)
    parts = [Stats.of(x[i : i + 97], weights=w[i : i + 97]) for i in range(0, len(x), 97)]
    merged = functools.reduce(Stats.merge, parts)
    assert np.allclose(merged.mean, whole.mean) and np.allclose(merged.std, whole.std)
    # with missing values the merge is exact on the diagonal (see Stats.merge)
    assert np.allclose(np.diag(merged.comoment), np.diag(whole.comoment))
    tripled = Stats.of(x, weights=3 * w)
    assert np.allclose(tripled.mean, whole.mean) and np.allclose(tripled.std, whole.std)
    assert np.allclose(whole.scaled(3.0).comoment, tripled.comoment)
    ones = Stats.of(x, weights=np.ones(len(x)))
    plain = Stats.of(x.copy())
    assert np.allclose(ones.mean, plain.mean) and np.allclose(ones.std, plain.std)
    assert np.allclose(ones.imputed_std, plain.imputed_std)


# -- the weighted step ------------------------------------------------------------------------
def _objective(params, x, t, w, loss, l2):
    """The batch's weighted objective as the step sees it: sum w_i l_i / n + l2/2 ||w||^2."""
    n_feat = x.shape[1]
    p = x @ params[:n_feat] + params[n_feat]
    values = loss.value(p, t)
    return float((w @ values) / len(t) + 0.5 * l2 * np.sum(params[:n_feat] ** 2))


@pytest.mark.parametrize("name", ["squared", "huber", "logistic", "poisson", "softmax"])
def test_the_weighted_gradient_is_the_weighted_objectives(name):
    rng = np.random.default_rng(5)
    n, k = 40, 3
    x = rng.normal(size=(n, k))
    w = rng.uniform(0, 2, size=n)
    loss = get_loss(name)
    classes = 3 if name == "softmax" else None
    if name == "softmax":
        t = rng.integers(0, 3, size=n).astype(float)
    elif name in ("logistic",):
        t = rng.integers(0, 2, size=n).astype(float)
    elif name == "poisson":
        t = rng.poisson(2.0, size=n).astype(float)
    else:
        t = rng.normal(size=n)
    shape = (k + 1,) if classes is None else (k + 1, classes)
    params = 0.1 * rng.normal(size=shape)
    opt = make_optimizer("sgd")
    l2 = 0.3
    new, _, loss_sum, _ = train_step(
        params,
        opt.init(params),
        x,
        t,
        loss=loss,
        optimizer=opt,
        lr=1.0,
        l2=l2,
        sample_weight=w,
    )
    grad = params - new
    numeric = np.zeros_like(params)
    eps = 1e-6
    for i in np.ndindex(params.shape):
        up, down = params.copy(), params.copy()
        up[i] += eps
        down[i] -= eps
        numeric[i] = (_objective(up, x, t, w, loss, l2) - _objective(down, x, t, w, loss, l2)) / (
            2 * eps
        )
    assert np.allclose(grad, numeric, rtol=1e-5, atol=1e-7)
    p = x @ params[:k] + params[k]
    assert np.isclose(loss_sum, w @ loss.value(p, t))


def test_unit_weights_take_the_unweighted_step():
    rng = np.random.default_rng(2)
    x, t = rng.normal(size=(64, 3)), rng.integers(0, 2, size=64).astype(float)
    params = np.r_[0.2, -0.1, 0.3, 0.05]
    opt = make_optimizer("adam")
    kw = dict(
        loss=get_loss("logistic"),
        optimizer=opt,
        lr=0.1,
        l2=0.01,
        precond=np.eye(3),
        inv_scale=np.ones(3),
    )
    plain = train_step(params, opt.init(params), x, t, **kw)
    ones = train_step(params, opt.init(params), x, t, sample_weight=np.ones(64), **kw)
    assert np.allclose(plain[0], ones[0], rtol=1e-12) and np.isclose(plain[2], ones[2])


# -- weighted normal equations ----------------------------------------------------------------
def test_weighted_normal_equations_are_weighted_least_squares():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 3))
    t = x @ [1.0, -2.0, 0.5] + 0.3 + rng.normal(size=300)
    w = rng.uniform(0, 4, size=300)
    state = normal_init(4)
    for i in range(0, 300, 64):
        state = normal_accumulate(state, x[i : i + 64], t[i : i + 64], np.ones(3), w[i : i + 64])
    solved = normal_solve(state, 0.0)
    a = np.c_[x, np.ones(300)]
    sw = np.sqrt(w)
    oracle = np.linalg.lstsq(a * sw[:, None], t * sw, rcond=None)[0]
    assert np.allclose(solved, oracle)
    r = a @ solved - t
    assert np.isclose(normal_loss(state, solved), 0.5 * (w @ r**2) / w.sum())


# -- weighted metrics -------------------------------------------------------------------------
def test_weighted_regression_metrics_match_numpy():
    rng = np.random.default_rng(4)
    y = rng.normal(size=1000) * 3 + 100
    p = y + rng.normal(size=1000)
    w = rng.uniform(0, 2, size=1000)
    acc = Accumulator("regression")
    for i in range(0, 1000, 300):
        acc.update(y[i : i + 300], p[i : i + 300], w[i : i + 300])
    got = acc.result()
    mse = np.average((p - y) ** 2, weights=w)
    sst = np.average((y - np.average(y, weights=w)) ** 2, weights=w)
    assert np.isclose(got["mse"], mse) and np.isclose(got["mae"], np.average(abs(p - y), weights=w))
    assert np.isclose(got["r2"], 1 - mse / sst)
    restored = Accumulator.restore("regression", acc.state())
    assert restored.result() == got


def test_weighted_binary_metrics_match_numpy():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, size=2000).astype(float)
    q = np.clip(0.5 + 0.3 * (y - 0.5) + 0.3 * rng.normal(size=2000), 0.01, 0.99)
    w = rng.uniform(0, 2, size=2000)
    acc = Accumulator("binary")
    acc.update(y[:700], q[:700], w[:700])
    acc.update(y[700:], q[700:], w[700:])
    got = acc.result()
    pred = q >= 0.5
    tp, fp = w[pred & (y == 1)].sum(), w[pred & (y == 0)].sum()
    fn = w[~pred & (y == 1)].sum()
    assert np.isclose(got["accuracy"], np.average(pred == (y == 1), weights=w))
    assert np.isclose(got["precision"], tp / (tp + fp))
    assert np.isclose(got["recall"], tp / (tp + fn))
    ll = -np.average(y * np.log(q) + (1 - y) * np.log(1 - q), weights=w)
    assert np.isclose(got["logloss"], ll)
    pos, neg = y == 1, y == 0
    pairs = w[pos][:, None] * w[neg][None, :]
    wins = (q[pos][:, None] > q[neg][None, :]) + 0.5 * (q[pos][:, None] == q[neg][None, :])
    assert abs(got["auc"] - (pairs * wins).sum() / pairs.sum()) < 2e-3  # histogram bins


def test_weighted_multiclass_metrics_match_numpy():
    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.ones(3), size=500)
    y = rng.integers(0, 3, size=500)
    w = rng.uniform(0, 2, size=500)
    acc = Accumulator("multiclass")
    acc.update(y.astype(float), probs, w)
    got = acc.result()
    assert np.isclose(got["accuracy"], np.average(probs.argmax(1) == y, weights=w))
    assert np.isclose(got["logloss"], -np.average(np.log(probs[np.arange(500), y]), weights=w))
