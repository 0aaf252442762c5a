"""The learning side end to end: every optimiser and loss trains through fit, checked against
independent numpy oracles; custom losses through the Python API."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import lstsq_mse, trigonometric_loss

import streamgd
from streamgd.losses import Loss, register_loss
from streamgd.optimizers import OPTIMIZERS


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4000, 3)) * [1.0, 10.0, 0.1] + [0.0, 50.0, -2.0]
    y = x @ [1.5, -0.2, 8.0] + 4.0 + rng.standard_t(df=3, size=4000)  # heavy-tailed noise
    path = tmp_path_factory.mktemp("reg") / "d.parquet"
    pq.write_table(
        pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y}), path, row_group_size=500
    )
    return str(path), x, y


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_every_optimizer_converges_with_its_defaults(regression, optimizer):
    path, x, y = regression
    model = streamgd.fit(path, target="y", optimizer=optimizer, epochs=10, batch_size=256)
    mse = np.mean((model.predict(x) - y) ** 2)
    assert mse <= lstsq_mse(x, y) * 1.05, optimizer


@pytest.mark.parametrize("q", [0.1, 0.5, 0.9])
def test_quantile_loss_predicts_the_quantile(regression, q):
    path, x, y = regression
    model = streamgd.fit(path, target="y", loss="quantile", quantile=q, epochs=20, batch_size=256)
    below = np.mean(y <= model.predict(x))
    assert below == pytest.approx(q, abs=0.03)


def test_absolute_and_huber_are_robust_to_outliers(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.normal(size=3000)
    y = 2.0 * x + 1.0 + rng.normal(size=3000) * 0.1
    y[:150] += 200.0  # 5% gross outliers
    path = tmp_path / "o.parquet"
    pq.write_table(pa.table({"x": x, "y": y}), path)
    for loss in ("absolute", "huber"):
        model = streamgd.fit(
            str(path), target="y", loss=loss, epochs=20, batch_size=256, quiet=True
        )  # quiet: the outliers come first, which the ordered-input check warns about
        coef, intercept = model.coefficients()
        assert coef["x"] == pytest.approx(2.0, abs=0.1), loss
        assert intercept == pytest.approx(1.0, abs=0.2), loss
    squared = streamgd.fit(str(path), target="y", epochs=5, quiet=True)
    assert abs(squared.coefficients()[1] - 1.0) > 5  # least squares is dragged by the outliers


def test_poisson_recovers_a_log_linear_rate(tmp_path):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(5000, 2))
    y = rng.poisson(np.exp(0.5 + x @ [0.3, -0.6])).astype(float)
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"u": x[:, 0], "v": x[:, 1], "y": y}), path, row_group_size=1000)
    model = streamgd.fit(str(path), target="y", loss="poisson", epochs=10)
    # oracle: Newton's method on the Poisson log-likelihood in numpy
    a = np.c_[x, np.ones(len(x))]
    w = np.zeros(3)
    for _ in range(30):
        mu = np.exp(a @ w)
        w -= np.linalg.solve((a * mu[:, None]).T @ a, a.T @ (mu - y))
    coef, intercept = model.coefficients()
    np.testing.assert_allclose([coef["u"], coef["v"], intercept], w, atol=0.02)
    assert np.all(model.predict(x[:10]) > 0)  # a rate


def test_hinge_classifies_and_reports_margin_metrics(tmp_path):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3000, 2))
    y = (x @ [2.0, -1.0] + rng.normal(size=3000) * 0.5 > 0).astype(float)
    path = tmp_path / "h.parquet"
    pq.write_table(pa.table({"u": x[:, 0], "v": x[:, 1], "y": y}), path)
    model = streamgd.fit(str(path), target="y", loss="hinge", epochs=10)
    scores = model.predict(x)
    assert np.mean((scores > 0) == (y == 1)) > 0.9
    result = streamgd.evaluate(model, [str(path)])
    assert "logloss" not in result and result["accuracy"] > 0.9 and result["auc"] > 0.95


def test_a_custom_loss_trains_by_name(tmp_path):
    # the classic non-convex "trigonometric" loss l = 1/(2N) sum theta^2 sin(pi theta / 50)
    loss = trigonometric_loss()
    try:
        register_loss(loss)
        rng = np.random.default_rng(8)
        x = rng.normal(size=2000)
        y = 3.0 * x + rng.normal(size=2000)
        path = tmp_path / "t.parquet"
        pq.write_table(pa.table({"x": x, "y": y}), path)
        model = streamgd.fit(
            str(path),
            target="y",
            loss="trigonometric",
            optimizer="sgd",
            lr=0.05,
            schedule="constant",
            precondition=False,
            epochs=30,
            batch_size=200,
        )
        losses = [h["loss"] for h in model.history]
        assert losses[-1] < losses[0]  # it descends ...
        theta = model.predict(x) - y
        gradient = loss.gradient(theta, np.zeros_like(theta))
        assert abs(gradient.mean()) < 0.05 * np.abs(gradient).mean()  # ... to a stationary point
    finally:
        from streamgd import losses

        losses.LOSSES.pop(loss.name, None)
        losses.LOSS_FACTORIES.pop(loss.name, None)


def test_custom_losses_cannot_replace_built_ins():
    fake = Loss.custom("squared", lambda p, y: p - y, lambda p, y: np.ones_like(p))
    with pytest.raises(streamgd.StreamgdError, match="exists already"):
        register_loss(fake)


def test_l1_gives_exact_zeros_on_irrelevant_features(tmp_path):
    rng = np.random.default_rng(9)
    x = rng.normal(size=(3000, 5))
    y = 3.0 * x[:, 0] - 2.0 * x[:, 1] + rng.normal(size=3000)  # x2..x4 are noise
    path = tmp_path / "l1.parquet"
    pq.write_table(pa.table({f"x{i}": x[:, i] for i in range(5)} | {"y": y}), path)
    model = streamgd.fit(str(path), target="y", l1=0.05, epochs=10)
    assert np.all(model.weights[2:] == 0.0)  # exactly zero
    assert np.all(model.weights[:2] != 0.0)
    plain = streamgd.fit(str(path), target="y", epochs=10)
    assert np.all(plain.weights[2:] != 0.0)
    both = streamgd.fit(str(path), target="y", l1=0.05, l2=0.1, epochs=10)  # elastic net
    assert np.all(both.weights[2:] == 0.0)
    assert np.all(np.abs(both.weights[:2]) < np.abs(model.weights[:2]))  # l2 shrinks more


def test_weight_and_gradient_clipping(tmp_path):
    rng = np.random.default_rng(10)
    x = rng.normal(size=(2000, 2))
    y = 50.0 * x[:, 0] + x[:, 1] + rng.normal(size=2000) * 0.1
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 1], "y": y}), path)
    clipped = streamgd.fit(str(path), target="y", clip_weights=0.5, epochs=3)
    assert np.all(np.abs(clipped.weights) <= 0.5) and np.max(np.abs(clipped.weights)) == 0.5
    # a step whose direction is clipped to a tiny norm barely moves the weights
    slow = streamgd.fit(str(path), target="y", clip_grad=1e-6, epochs=1, schedule="constant")
    steps = slow.summary["steps"]
    assert np.linalg.norm(np.append(slow.weights, slow.intercept)) <= steps * 1e-6 * 1.0001


@pytest.mark.parametrize("settings", [{}, {"batch_size": 32, "epochs": 3}])
def test_classic_one_feature_regression(tmp_path, settings):
    # 1000 rows, noise 5, bias 2: the classic textbook problem
    rng = np.random.default_rng(12)
    x = rng.uniform(-10, 10, size=1000)
    y = 2.0 + 3.0 * x + rng.normal(size=1000) * 5.0
    path = tmp_path / "one.parquet"
    pq.write_table(pa.table({"x": x, "y": y}), path)
    model = streamgd.fit(str(path), target="y", **settings)
    mse = np.mean((model.predict(x) - y) ** 2)
    assert mse <= lstsq_mse(x[:, None], y) * 1.002


def test_history_has_running_training_metrics(regression, tmp_path):
    path, x, y = regression
    model = streamgd.fit(path, target="y", epochs=2)
    for h in model.history:
        # the running loss is half the squared error, both over the epoch's rows before updates
        assert h["train_mse"] == pytest.approx(2 * h["loss"], rel=1e-6)
        assert {"train_rmse", "train_mae", "train_r2"} <= set(h)
    rng = np.random.default_rng(13)
    z = rng.normal(size=(2000, 2))
    labels = (z[:, 0] + rng.normal(size=2000) > 0).astype(float)
    clf_path = tmp_path / "clf.parquet"
    pq.write_table(pa.table({"u": z[:, 0], "v": z[:, 1], "y": labels}), clf_path)
    clf = streamgd.fit(str(clf_path), target="y", loss="logistic", epochs=2)
    last = clf.history[-1]
    assert last["train_logloss"] == pytest.approx(last["loss"], rel=1e-6)
    assert 0.5 < last["train_accuracy"] <= 1.0 and "train_auc" not in last
