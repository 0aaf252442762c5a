"""Weighted training end to end (--weight, --class-weight): fits reach the numpy weighted
optimum, integer weights equal duplicated rows, unit weights change nothing, class weights
equal the explicit row weights they stand for, evaluate weighs its metrics, errors name
their file, row and column, and a resumed weighted run is bit-exact."""

from __future__ import annotations

import glob
import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from integration_support import invoke_ok, run_cli

import streamgd
from streamgd.config import FitConfig, RunOptions
from streamgd.training import train
from streamgd.training.checkpoint import load_checkpoint

EXIT_DATA, EXIT_USAGE = 1, 2
FEATURES = ("a", "b", "c")


def _write(directory, columns: dict, *, files: int = 2, row_group_size: int = 400):
    """``columns`` split into ``files`` Parquet files; returns their paths."""
    n = len(next(iter(columns.values())))
    bounds = np.linspace(0, n, files + 1).astype(int)
    paths = []
    for i in range(files):
        part = {k: v[bounds[i] : bounds[i + 1]] for k, v in columns.items()}
        path = os.path.join(str(directory), f"part-{i}.parquet")
        pq.write_table(pa.table(part), path, row_group_size=row_group_size)
        paths.append(path)
    return paths


def _regression(seed: int = 0, n: int = 3000):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) * [1.0, 4.0, 0.3] + [2.0, -1.0, 5.0]
    # a curve the line cannot follow, and weights that favour one end of it: the weighted
    # optimum is not the unweighted one
    y = x @ [1.5, -0.5, 3.0] + 2.0 + 0.8 * x[:, 0] ** 2 + rng.normal(size=n)
    w = rng.uniform(0.0, 1.0, size=n) * np.where(x[:, 0] > 2.0, 4.0, 1.0)
    return x, y, w


def _binary(seed: int = 1, n: int = 3000, base: float = -1.5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) * [1.0, 2.0, 0.5]
    logit = x @ [1.0, -0.7, 1.5] + base
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(float)
    w = rng.uniform(0.0, 3.0, size=n)
    return x, y, w


def _columns(x, y, w=None, **more):
    cols = {name: x[:, j] for j, name in enumerate(FEATURES)} | {"y": y}
    if w is not None:
        cols["w"] = w
    return cols | more


def _theta(model) -> np.ndarray:
    coef, intercept = model.coefficients()
    return np.r_[[coef[f] for f in FEATURES], intercept]


def _design(x):
    return np.c_[x, np.ones(len(x))]


def _wls_objective(theta, x, y, w):
    r = _design(x) @ theta - y
    return 0.5 * float(w @ r**2) / w.sum()


def _logistic_objective(theta, x, y, w):
    z = _design(x) @ theta
    return float(w @ (np.logaddexp(0, z) - y * z)) / w.sum()


def _newton(x, y, w, iters: int = 50):
    """Weighted logistic regression by Newton's method (IRLS), the oracle."""
    a = _design(x)
    theta = np.zeros(a.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(a @ theta)))
        grad = a.T @ (w * (p - y))
        hess = (a * (w * p * (1 - p))[:, None]).T @ a
        theta -= np.linalg.solve(hess, grad)
    return theta


# -- the weighted optimum ---------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["sgd", "normal"])
def test_weighted_squared_loss_reaches_weighted_least_squares(tmp_path, solver):
    x, y, w = _regression()
    paths = _write(tmp_path, _columns(x, y, w))
    model = streamgd.fit(paths, target="y", weight="w", solver=solver, epochs=12)
    assert model.features == FEATURES  # the weight column is not a feature
    sw = np.sqrt(w)
    oracle = np.linalg.lstsq(_design(x) * sw[:, None], y * sw, rcond=None)[0]
    best = _wls_objective(oracle, x, y, w)
    assert _wls_objective(_theta(model), x, y, w) <= best * 1.001
    unweighted = np.linalg.lstsq(_design(x), y, rcond=None)[0]
    assert _wls_objective(unweighted, x, y, w) > best * 1.01  # the weights matter here
    # the reported loss is the weighted objective (the statistics pass read every row)
    assert model.history[-1]["loss"] == pytest.approx(best, rel=2e-3)


def test_weighted_logistic_reaches_weighted_newton(tmp_path):
    x, y, w = _binary()
    w = np.where(y == 1, 3.0 * w, w)  # weights that move the optimum
    paths = _write(tmp_path, _columns(x, y, w))
    model = streamgd.fit(paths, target="y", loss="logistic", weight="w", epochs=15)
    oracle = _newton(x, y, w)
    best = _logistic_objective(oracle, x, y, w)
    assert _logistic_objective(_theta(model), x, y, w) <= best * 1.001
    assert _logistic_objective(_newton(x, y, np.ones(len(y))), x, y, w) > best * 1.01


def test_integer_weights_equal_duplicated_rows(tmp_path):
    x, y, _ = _regression(seed=3, n=1500)
    k = np.random.default_rng(3).integers(0, 4, size=len(y)).astype(float)  # 0 drops a row
    os.makedirs(tmp_path / "w")
    os.makedirs(tmp_path / "dup")
    weighted = _write(tmp_path / "w", _columns(x, y, k))
    reps = k.astype(int)
    dup = _write(tmp_path / "dup", _columns(np.repeat(x, reps, axis=0), np.repeat(y, reps)))
    by_weight = streamgd.fit(weighted, target="y", weight="w", solver="normal")
    by_rows = streamgd.fit(dup, target="y", solver="normal")
    assert np.allclose(_theta(by_weight), _theta(by_rows), rtol=1e-5, atol=1e-6)
    assert by_weight.summary["final_loss"] == pytest.approx(by_rows.summary["final_loss"], 1e-5)
    gd = streamgd.fit(weighted, target="y", weight="w", epochs=12)
    best = _wls_objective(_theta(by_rows), x, y, k)
    assert _wls_objective(_theta(gd), x, y, k) <= best * 1.001


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_unit_weights_give_the_unweighted_model(tmp_path, loss):
    x, y, _ = _regression() if loss == "squared" else _binary()
    paths = _write(tmp_path, _columns(x, y, np.ones(len(y))))
    settings = dict(target="y", loss=loss, features=FEATURES, epochs=3, batch_size=128)
    plain = streamgd.fit(paths, **settings)
    ones = streamgd.fit(paths, weight="w", **settings)
    assert np.allclose(_theta(ones), _theta(plain), rtol=1e-5, atol=1e-6)
    losses = [[h["loss"] for h in m.history] for m in (plain, ones)]
    assert np.allclose(losses[0], losses[1], rtol=1e-6)


def test_weighted_categorical_fit_reaches_weighted_least_squares(tmp_path):
    rng = np.random.default_rng(11)
    n = 4000
    x = rng.normal(size=n)
    group = np.array(["p", "q", "r", "s"])[rng.integers(0, 4, n)]
    effect = np.select([group == "q", group == "s"], [2.0, -1.0], 0.0)
    y = 1.5 * x + effect + 1.5 * x**3 * (group == "r") + rng.normal(size=n) * 0.5
    w = rng.uniform(size=n) * np.where(group == "r", 4.0, 1.0)
    paths = _write(tmp_path, {"x": x, "group": group, "w": w, "y": y})
    model = streamgd.fit(
        paths, target="y", features=("x",), categorical=("group",), weight="w", epochs=6
    )
    design = np.c_[x, np.eye(4)[np.searchsorted(["p", "q", "r", "s"], group)]]
    sw = np.sqrt(w)
    oracle = np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)[0]

    def objective(p):
        return float(w @ (p - y) ** 2) / w.sum()

    best = objective(design @ oracle)
    got = objective(model.predict(pa.table({"x": x, "group": group})))
    assert got <= best * 1.001
    plain = np.linalg.lstsq(design, y, rcond=None)[0]
    assert objective(design @ plain) > best * 1.01


# -- class weights ----------------------------------------------------------------------------
def test_balanced_class_weights_equal_the_explicit_row_weights(tmp_path):
    x, y, w = _binary(seed=4, base=-2.0)  # unbalanced: about one row in five is positive
    # rows / (classes x rows of the class), the rows counted by their --weight
    w1, w0 = w[y == 1].sum(), w[y == 0].sum()
    balanced = np.where(y == 1, (w0 + w1) / (2 * w1), (w0 + w1) / (2 * w0))
    paths = _write(tmp_path, _columns(x, y, w, bw=balanced * w, rw=w))
    settings = dict(target="y", loss="logistic", features=FEATURES, epochs=4)
    by_class = streamgd.fit(paths, class_weight="balanced", weight="rw", **settings)
    by_rows = streamgd.fit(paths, weight="bw", **settings)
    assert np.allclose(_theta(by_class), _theta(by_rows), rtol=1e-4, atol=1e-5)
    weights = by_class.inspect()["weights"]
    assert weights["class_weights"]["1"] == pytest.approx((w0 + w1) / (2 * w1))
    assert weights["column"] == "rw" and weights["class_weight"] == "balanced"


def test_class_weight_pairs_equal_the_explicit_row_weights_for_softmax(tmp_path):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2400, 3))
    scores = x @ np.array([[1.0, -1.0, 0.0], [0.5, 0.5, -1.0], [0.0, 1.0, 1.0]])
    labels = np.array(["a", "b", "c"])[np.argmax(scores + rng.gumbel(size=scores.shape), 1)]
    explicit = np.select([labels == "a", labels == "b"], [2.0, 1.0], 0.5)
    cols = {f: x[:, j] for j, f in enumerate(FEATURES)} | {"y": labels, "cw": explicit}
    paths = _write(tmp_path, cols)
    settings = dict(target="y", loss="softmax", features=FEATURES, epochs=3)
    by_class = streamgd.fit(paths, class_weight="a=2,b=1,c=0.5", **settings)
    by_rows = streamgd.fit(paths, weight="cw", **settings)
    assert np.allclose(by_class.weights, by_rows.weights, rtol=1e-4, atol=1e-5)
    assert np.allclose(by_class.intercept, by_rows.intercept, rtol=1e-4, atol=1e-5)
    as_dict = streamgd.fit(paths, class_weight={"a": 2, "b": 1, "c": 0.5}, **settings)
    assert np.array_equal(as_dict.weights, by_class.weights)


def test_an_unknown_class_label_is_a_usage_error(capsys, tmp_path):
    x, y, _ = _binary()
    paths = _write(tmp_path, _columns(x, y))
    code, out, err = run_cli(
        capsys, "fit", *paths, "--target", "y", "--loss", "logistic", "--class-weight", "2=1"
    )
    assert code == EXIT_USAGE and out == "" and "Traceback" not in err
    assert "unknown class label '2'" in err and "0, 1" in err


# -- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [-0.5, None])
def test_a_bad_weight_names_file_row_and_column(capsys, tmp_path, bad):
    x, y, w = _regression(n=1200)
    values = [float(v) for v in w]
    values[1033] = bad  # the second file's row 434 (files of 600 rows)
    paths = _write(tmp_path, _columns(x, y, pa.array(values, pa.float64())))
    code, out, err = run_cli(capsys, "fit", *paths, "--target", "y", "--weight", "w")
    assert code == EXIT_DATA and out == "" and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert paths[1] in lines[0] and "row 434" in lines[0] and "column 'w'" in lines[0]
    assert ("missing" if bad is None else "-0.5") in lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--weight", "y"), "is the target"),
        (("--weight", "a", "--features", "a,b"), "is a feature"),
        (("--weight", "nope"), "no weight column 'nope'"),
        (("--class-weight", "balanced"), "classification"),
    ],
)
def test_weight_usage_errors(capsys, tmp_path, args, needle):
    x, y, w = _regression(n=600)
    paths = _write(tmp_path, _columns(x, y, w))
    code, out, err = run_cli(capsys, "fit", *paths, "--target", "y", *args)
    assert code == EXIT_USAGE and out == "" and "Traceback" not in err
    assert needle in err


# -- evaluate, inspect, predict ---------------------------------------------------------------
def test_evaluate_weighs_metrics_by_the_models_weight_column(tmp_path):
    x, y, w = _regression(seed=5, n=2000)
    paths = _write(tmp_path, _columns(x, y, w))
    model_path = str(tmp_path / "m.npz")
    invoke_ok(
        "fit", *paths, "--target", "y", "--weight", "w", "--epochs", "2", "-q", "-o", model_path
    )
    model = streamgd.load(model_path)
    p = _design(x) @ _theta(model)
    got = json.loads(invoke_ok("evaluate", model_path, *paths, "--json").stdout)
    mse = np.average((p - y) ** 2, weights=w)
    sst = np.average((y - np.average(y, weights=w)) ** 2, weights=w)
    assert got["weighted_by"] == "w" and got["total_weight"] == pytest.approx(w.sum())
    assert got["mse"] == pytest.approx(mse, rel=1e-6)
    assert got["mae"] == pytest.approx(np.average(np.abs(p - y), weights=w), rel=1e-6)
    assert got["r2"] == pytest.approx(1 - mse / sst, rel=1e-6)
    assert got["loss"] == pytest.approx(mse / 2, rel=1e-6)
    text = invoke_ok("evaluate", model_path, *paths).stdout
    assert "weighted_by" in text and " w" in text
    # data without the weight column: unweighted metrics, and predict never needs it
    os.makedirs(tmp_path / "plain")
    plain = _write(tmp_path / "plain", _columns(x, y))
    unweighted = json.loads(invoke_ok("evaluate", model_path, *plain, "--json").stdout)
    assert "weighted_by" not in unweighted
    assert unweighted["mse"] == pytest.approx(np.mean((p - y) ** 2), rel=1e-6)
    invoke_ok("predict", model_path, *plain, "-o", str(tmp_path / "pred.parquet"))
    info = json.loads(invoke_ok("inspect", model_path, "--json").stdout)
    assert info["weights"]["column"] == "w" and info["settings"]["weight"] == "w"


def test_weighted_holdout_validation_loss_is_weighted(tmp_path):
    x, y, w = _binary(seed=9)
    paths = _write(tmp_path, _columns(x, y, w))
    model = streamgd.fit(paths, target="y", loss="logistic", weight="w", holdout=0.25, epochs=2)
    entry = model.history[-1]
    assert "val_logloss" in entry and entry["val_loss"] == pytest.approx(entry["val_logloss"])


# -- resume -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra", [{"weight": "w"}, {"weight": "w", "class_weight": "balanced", "loss": "logistic"}]
)
def test_a_weighted_run_resumes_bit_exactly(tmp_path, extra):
    x, y, w = _binary(seed=10, n=1500) if "loss" in extra else _regression(seed=10, n=1500)
    paths = _write(tmp_path, _columns(x, y, w), row_group_size=200)
    config = FitConfig(
        target="y", features=FEATURES, epochs=3, batch_size=64, shuffle_buffer=300, **extra
    )
    full_dir = str(tmp_path / "full")
    full = train(paths, config, RunOptions(checkpoint_dir=full_dir, checkpoint_every=1, keep=10**4))
    per_epoch = full.model.history[0]["step"]
    ckpts = {load_checkpoint(p).step: p for p in glob.glob(f"{full_dir}/ckpt-*.npz")}
    for step in (1, per_epoch // 2, per_epoch, per_epoch + per_epoch // 3):
        directory = tmp_path / f"resume-{step}"
        os.makedirs(directory)
        shutil.copy(ckpts[step], directory)
        resumed = train(paths, config, RunOptions(checkpoint_dir=str(directory), resume=True))
        params = [np.append(r.model.weights, r.model.intercept) for r in (resumed, full)]
        assert np.array_equal(params[0], params[1]), f"resumed at step {step}"
        assert resumed.model.history == full.model.history
