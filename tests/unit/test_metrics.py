"""Streaming metrics equal numpy computations on the concatenated data."""

from __future__ import annotations

import numpy as np
import pytest

from streamgd.metrics import METRICS, Accumulator, metric_names


def _feed(task: str, y: np.ndarray, p: np.ndarray, rng) -> dict:
    """Feed in random batches, including an empty one."""
    acc = Accumulator(task)
    cuts = np.sort(rng.choice(np.arange(1, len(y)), 12, replace=False))
    cuts = np.r_[cuts[:6], cuts[6], cuts[6:]]  # one empty batch
    for yb, pb in zip(np.split(y, cuts), np.split(p, cuts), strict=True):
        acc.update(yb, pb)
    assert acc.n == len(y)
    return acc.result()


def exact_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney U from average ranks (ties share their mean rank)."""
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]  # 1-based average ranks
    pos = y == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_exact_auc_oracle_on_a_hand_example():
    # pairs (pos, neg): 0.8>0.3, 0.8>0.5, 0.4>0.3, 0.4<0.5, 0.5=0.5 (half) ... by counting
    y = np.array([1, 1, 0, 0, 1])
    s = np.array([0.8, 0.4, 0.3, 0.5, 0.5])
    pairs = [(a, b) for a in s[y == 1] for b in s[y == 0]]
    by_count = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)
    assert exact_auc(y, s) == pytest.approx(by_count)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regression_metrics_match_numpy(seed):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=3000) * 5 + 2
    p = y + rng.normal(size=3000) * 2 + 0.3
    r = _feed("regression", y, p, rng)
    err = p - y
    assert set(r) == set(METRICS["regression"]) == set(metric_names("regression"))
    assert r["mse"] == pytest.approx(np.mean(err**2), rel=1e-12)
    assert r["rmse"] == pytest.approx(np.sqrt(np.mean(err**2)), rel=1e-12)
    assert r["mae"] == pytest.approx(np.mean(np.abs(err)), rel=1e-12)
    assert r["r2"] == pytest.approx(1 - np.sum(err**2) / np.sum((y - y.mean()) ** 2), rel=1e-10)


def test_r2_of_a_constant_target_is_undefined():
    acc = Accumulator("regression")
    acc.update(np.full(10, 3.0), np.arange(10.0))
    assert np.isnan(acc.result()["r2"])


@pytest.mark.parametrize("offset", [1e8])
def test_r2_with_a_large_target_offset(offset):
    rng = np.random.default_rng(3)
    y = offset + rng.normal(size=10_000)
    p = y + 0.5 * rng.normal(size=10_000)
    r = _feed("regression", y, p, rng)
    err = p - y
    assert r["r2"] == pytest.approx(1 - np.sum(err**2) / np.sum((y - y.mean()) ** 2), rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_metrics_match_numpy(seed):
    rng = np.random.default_rng(seed)
    n = 4000
    logit = rng.normal(size=n) * 2
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    p = 1 / (1 + np.exp(-(logit + rng.normal(size=n))))  # noisy, continuous probabilities
    r = _feed("binary", y, p, rng)
    assert set(r) == set(METRICS["binary"]) == set(metric_names("binary"))
    pred = p >= 0.5
    pos = y == 1
    tp, fp, fn = np.sum(pred & pos), np.sum(pred & ~pos), np.sum(~pred & pos)
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert r["logloss"] == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)), 1e-12)
    assert r["accuracy"] == pytest.approx(np.mean(pred == pos), rel=1e-12)
    assert r["precision"] == pytest.approx(precision, rel=1e-12)
    assert r["recall"] == pytest.approx(recall, rel=1e-12)
    assert r["f1"] == pytest.approx(2 * precision * recall / (precision + recall), rel=1e-12)
    assert abs(r["auc"] - exact_auc(y, p)) < 1e-3


@pytest.mark.parametrize("scale", [0.05, 1.0, 8.0])
def test_auc_close_to_exact_on_continuous_scores(scale):
    """Scores concentrated in few histogram bins (small scale) or spread wide."""
    rng = np.random.default_rng(7)
    n = 5000
    y = (rng.random(n) < 0.3).astype(float)
    logit = rng.normal(size=n) * scale + y * scale * 0.8
    p = 1 / (1 + np.exp(-logit))
    r = _feed("binary", y, p, rng)
    assert abs(r["auc"] - exact_auc(y, p)) < 1e-3


def test_auc_extremes_and_single_class():
    y = np.array([0.0, 0.0, 1.0, 1.0])
    perfect, reversed_ = Accumulator("binary"), Accumulator("binary")
    perfect.update(y, np.array([0.1, 0.2, 0.8, 0.9]))
    reversed_.update(y, np.array([0.9, 0.8, 0.2, 0.1]))
    assert perfect.result()["auc"] == 1.0 and reversed_.result()["auc"] == 0.0
    one_class = Accumulator("binary")
    one_class.update(np.ones(5), np.linspace(0.1, 0.9, 5))
    assert np.isnan(one_class.result()["auc"])


def test_probabilities_of_exactly_zero_and_one_give_finite_logloss():
    acc = Accumulator("binary")
    acc.update(np.array([0.0, 1.0, 1.0, 0.0]), np.array([0.0, 1.0, 0.0, 1.0]))
    r = acc.result()
    assert np.isfinite(r["logloss"]) and r["logloss"] > 10
    assert r["accuracy"] == 0.5


def test_no_positive_predictions_give_zero_precision_not_an_error():
    acc = Accumulator("binary")
    acc.update(np.array([0.0, 1.0, 1.0]), np.array([0.1, 0.2, 0.3]))
    r = acc.result()
    assert r["precision"] == 0.0 and r["recall"] == 0.0 and r["f1"] == 0.0


@pytest.mark.parametrize("task", ["regression", "binary"])
def test_update_scaled_equals_update_on_the_original_units(task):
    """The trainer's shortcut (errors and spread scaled, never formed in original units)
    gives the metrics of the plain update on ``t * unit + center`` and ``link(p * ...)``."""
    from streamgd.losses import get_loss

    rng = np.random.default_rng(3)
    link = get_loss("squared" if task == "regression" else "logistic").link
    unit, center = 37.5, 1e4
    fast, plain = Accumulator(task, auc=False), Accumulator(task, auc=False)
    for size in (100, 1, 257):
        t = rng.normal(size=size).astype(np.float32)
        if task == "binary":
            t = (t > 0).astype(np.float32)
            unit, center = 1.0, 0.0
        p = rng.normal(size=size)
        fast.update_scaled(t, p, unit, center, link)
        plain.update(t.astype(np.float64) * unit + center, link(p * unit + center))
    got, want = fast.result(), plain.result()
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-9), key
