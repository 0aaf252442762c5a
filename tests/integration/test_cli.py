"""The CLI's commands through click's CliRunner: fit, predict, evaluate, inspect, --help.

Expected values come from the Python API's model and numpy, never from an earlier run.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from integration_support import (
    binary_metrics,
    invoke_ok,
    matrix,
    read_tables,
    regression_metrics,
    runner,
    with_nulls,
    write_synthetic,
    write_table,
)

import streamgd
from streamgd.cli import cli

FEATURES = "x0,x1,x2"


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    return write_synthetic(str(tmp_path_factory.mktemp("reg")), rows=3000, features=3, seed=11)


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    return write_synthetic(
        str(tmp_path_factory.mktemp("clf")), rows=3000, features=3, task="logistic", seed=12
    )


@pytest.fixture(scope="module")
def reg_model(reg, tmp_path_factory):
    """A model written by `streamgd fit -o`, and the fit's CliRunner result."""
    out = tmp_path_factory.mktemp("models") / "reg.npz"
    options = f"--target y --features {FEATURES} --epochs 3 --checkpoint-every 2 --keep 50"
    result = invoke_ok("fit", *reg.paths, *options.split(), "-o", out)
    return str(out), result


@pytest.fixture(scope="module")
def clf_model(clf, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "clf.npz"
    options = f"--target y --features {FEATURES} --loss logistic --epochs 3 --quiet"
    invoke_ok("fit", *clf.paths, *options.split(), "-o", out)
    return str(out)


# -- fit --------------------------------------------------------------------------------------
def test_fit_writes_model_and_checkpoint_dir(reg_model, reg):
    path, result = reg_model
    model = streamgd.load(path)
    assert model.features == ("x0", "x1", "x2")
    assert model.summary["epochs"] == 3
    ckpt = path + ".ckpt"
    assert os.path.isdir(ckpt)
    assert any(name.endswith(".npz") for name in os.listdir(ckpt))
    # progress and the closing line go to stderr, nothing to stdout without --json
    assert result.stdout == ""
    assert "epoch 1/3" in result.stderr and "epoch 3/3" in result.stderr
    assert path in result.stderr
    # the CLI trains the same model as the API with the same settings
    api = streamgd.fit(reg.paths, target="y", features=reg.features, epochs=3)
    assert np.array_equal(api.weights, model.weights)


def test_fit_json_prints_one_object_on_stdout_and_progress_on_stderr(reg, tmp_path):
    out = tmp_path / "m.npz"
    options = f"--target y --features {FEATURES} --epochs 2 --json"
    result = invoke_ok("fit", *reg.paths, *options.split(), "-o", out)
    summary = json.loads(result.stdout)  # the whole of stdout is one JSON object
    assert isinstance(summary, dict)
    assert summary["model"] == str(out)
    assert summary["checkpoint_dir"] == str(out) + ".ckpt"
    assert summary["epochs"] == 2
    assert summary["rows_per_epoch"] == 3000
    assert summary["steps"] == 2 * int(np.ceil(3000 / 1024))
    assert "epoch 1/2" in result.stderr
    assert "{" not in result.stderr


def test_fit_quiet_prints_nothing_on_stderr(reg, tmp_path):
    options = f"--target y --features {FEATURES} --epochs 1 --quiet"
    result = invoke_ok("fit", *reg.paths, *options.split(), "-o", tmp_path / "m.npz")
    assert result.stderr == ""
    assert result.stdout == ""
    assert os.path.exists(tmp_path / "m.npz")


def test_fit_quiet_json_prints_only_the_json(reg, tmp_path):
    options = f"--target y --features {FEATURES} --epochs 1 --quiet --json"
    result = invoke_ok("fit", *reg.paths, *options.split())
    assert result.stderr == ""
    assert json.loads(result.stdout)["model"] is None


def test_features_comma_separated_and_repeated_are_the_same(reg, tmp_path):
    a, b, c = (tmp_path / f"{n}.npz" for n in "abc")
    common = ("--target", "y", "--epochs", "1", "--quiet")
    invoke_ok("fit", *reg.paths, *common, "--features", "x0,x2", "--features", "x1", "-o", a)
    invoke_ok("fit", *reg.paths, *common, "--features", "x0,x2,x1", "-o", b)
    invoke_ok("fit", *reg.paths, *common, "-f", "x0", "-f", "x2", "-f", "x1", "-o", c)
    ma, mb, mc = (streamgd.load(str(p)) for p in (a, b, c))
    assert ma.features == mb.features == mc.features == ("x0", "x2", "x1")
    assert np.array_equal(ma.weights, mb.weights)
    assert np.array_equal(ma.weights, mc.weights)


def test_fit_default_features_are_the_numeric_columns_but_the_target(reg, tmp_path):
    invoke_ok("fit", *reg.paths, "--target", "y", "--epochs", "1", "-q", "-o", tmp_path / "m.npz")
    assert streamgd.load(str(tmp_path / "m.npz")).features == ("row_id", "x0", "x1", "x2")


# -- predict ----------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_predict_writes_one_row_per_input_row_in_order(reg_model, reg, tmp_path, suffix):
    path, _ = reg_model
    out = tmp_path / f"pred{suffix}"
    result = invoke_ok("predict", path, *reg.paths, "-o", out, "--id", "row_id")
    assert "3000" in result.stderr

    table = pq.read_table(out) if suffix == ".parquet" else pacsv.read_csv(out)
    assert table.column_names == ["row_id", "prediction"]
    assert table.num_rows == 3000
    np.testing.assert_array_equal(table.column("row_id").to_numpy(), np.arange(3000))
    expected = streamgd.load(path).predict(reg.x)
    np.testing.assert_allclose(table.column("prediction").to_numpy(), expected, rtol=1e-12)


def test_predict_keeps_the_order_of_the_paths_given(reg_model, reg, tmp_path):
    path, _ = reg_model
    out = tmp_path / "pred.parquet"
    first, second = reg.paths
    invoke_ok("predict", path, second, first, "-o", out, "--id", "row_id,x0")
    table = pq.read_table(out)
    assert table.column_names == ["row_id", "x0", "prediction"]
    expected_ids = np.r_[np.arange(1500, 3000), np.arange(0, 1500)]
    np.testing.assert_array_equal(table.column("row_id").to_numpy(), expected_ids)
    np.testing.assert_array_equal(table.column("x0").to_numpy(), reg.x[expected_ids, 0])


def test_predict_from_csv_input(reg_model, reg, tmp_path):
    path, _ = reg_model
    csv = write_table(read_tables(reg.paths), tmp_path / "all.csv")
    out = tmp_path / "pred.parquet"
    result = invoke_ok("predict", path, csv, "-o", out, "--json")
    assert json.loads(result.stdout) == {"output": str(out), "rows": 3000}
    got = pq.read_table(out).column("prediction").to_numpy()
    np.testing.assert_allclose(got, streamgd.load(path).predict(reg.x), rtol=1e-12)


def test_predict_logistic_writes_probabilities(clf_model, clf, tmp_path):
    out = tmp_path / "pred.parquet"
    invoke_ok("predict", clf_model, *clf.paths, "-o", out)
    got = pq.read_table(out).column("prediction").to_numpy()
    assert ((got > 0) & (got < 1)).all()
    np.testing.assert_allclose(got, streamgd.load(clf_model).predict(clf.x), rtol=1e-12)


# -- evaluate ---------------------------------------------------------------------------------
def _evaluate_json(model_path, *paths) -> dict:
    result = invoke_ok("evaluate", model_path, *paths, "--json")
    return json.loads(result.stdout)


def test_evaluate_regression_metrics_match_numpy(reg_model, reg):
    path, _ = reg_model
    metrics = _evaluate_json(path, *reg.paths)
    assert {"mse", "rmse", "mae", "r2"} <= set(metrics)
    assert metrics["rows"] == 3000
    assert metrics["skipped_null_target"] == 0
    expected = regression_metrics(reg.y, streamgd.load(path).predict(reg.x))
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=1e-9), key


def test_evaluate_logistic_metrics_match_numpy(clf_model, clf):
    metrics = _evaluate_json(clf_model, *clf.paths)
    assert {"logloss", "accuracy", "precision", "recall", "f1", "auc"} <= set(metrics)
    assert "mse" not in metrics
    expected = binary_metrics(clf.y, streamgd.load(clf_model).predict(clf.x))
    for key in ("logloss", "accuracy", "precision", "recall", "f1"):
        assert metrics[key] == pytest.approx(expected[key], rel=1e-9), key
    # the AUC is computed from a fine histogram: within a small fraction of the exact one
    assert metrics["auc"] == pytest.approx(expected["auc"], abs=1e-3)


def test_evaluate_text_output_lists_the_metrics(reg_model, reg):
    path, _ = reg_model
    result = invoke_ok("evaluate", path, *reg.paths)
    for key in ("mse", "rmse", "mae", "r2"):
        assert any(line.split()[:1] == [key] for line in result.stdout.splitlines()), key


def test_evaluate_skips_and_counts_null_targets(reg_model, reg, tmp_path):
    path, _ = reg_model
    null_rows = [0, 7, 1499, 1500, 2999]
    table = with_nulls(read_tables(reg.paths), "y", null_rows)
    data = write_table(table, tmp_path / "nulls.parquet")
    metrics = _evaluate_json(path, data)
    assert metrics["skipped_null_target"] == len(null_rows)
    assert metrics["rows"] == 3000 - len(null_rows)
    keep = np.ones(3000, dtype=bool)
    keep[null_rows] = False
    expected = regression_metrics(reg.y[keep], streamgd.load(path).predict(reg.x[keep]))
    assert metrics["mse"] == pytest.approx(expected["mse"], rel=1e-9)
    assert metrics["r2"] == pytest.approx(expected["r2"], rel=1e-9)


def test_evaluate_imputes_and_counts_null_features(reg_model, reg, tmp_path):
    path, _ = reg_model
    table = with_nulls(read_tables(reg.paths), "x1", [4, 5, 6])
    data = write_table(table, tmp_path / "nulls.parquet")
    metrics = _evaluate_json(path, data)
    assert metrics["imputed"] == {"x1": 3}
    assert metrics["rows"] == 3000
    model = streamgd.load(path)
    x = matrix(table, list(model.features))
    x = np.where(np.isnan(x), model.spec.fill, x)
    assert metrics["mse"] == pytest.approx(np.mean((model.predict(x) - reg.y) ** 2), rel=1e-9)


def test_predict_with_a_drop_model_keeps_every_row(reg, tmp_path):
    """A model trained with --missing drop still predicts one row per input row, imputing the
    training mean like Model.predict; evaluate drops those rows like training did."""
    table = with_nulls(read_tables(reg.paths), "x1", [4, 5, 6])
    data = write_table(table, tmp_path / "nulls.parquet")
    model_path = str(tmp_path / "drop.npz")
    invoke_ok("fit", data, "-y", "y", "-f", "x0,x1,x2", "--missing", "drop", "--epochs", "1",
              "-o", model_path, "--quiet")  # fmt: skip
    out = str(tmp_path / "p.parquet")
    invoke_ok("predict", model_path, data, "-o", out)
    got = pq.read_table(out).column("prediction").to_numpy()
    model = streamgd.load(model_path)
    assert len(got) == table.num_rows
    assert np.allclose(got, model.predict(table), rtol=1e-12)
    assert _evaluate_json(model_path, data)["dropped_missing"] == 3


# -- inspect ----------------------------------------------------------------------------------
def test_inspect_model_json(reg_model):
    path, _ = reg_model
    info = json.loads(invoke_ok("inspect", path, "--json").stdout)
    model = streamgd.load(path)
    coef, intercept = model.coefficients()
    assert info["features"] == ["x0", "x1", "x2"]
    assert info["coefficients"] == pytest.approx(coef, rel=1e-12)
    assert info["intercept"] == pytest.approx(intercept, rel=1e-12)
    assert info["summary"]["epochs"] == 3
    assert info["summary"]["rows_per_epoch"] == 3000


def test_inspect_model_text_names_every_feature(reg_model):
    path, _ = reg_model
    text = invoke_ok("inspect", path).stdout
    for name in ("x0", "x1", "x2", "intercept"):
        assert name in text


def test_inspect_checkpoint_directory_shows_the_newest(reg_model):
    path, _ = reg_model
    info = json.loads(invoke_ok("inspect", path + ".ckpt", "--json").stdout)
    model = streamgd.load(path)
    assert info["kind"] == "checkpoint"
    assert info["step"] == model.summary["steps"]  # the run's final checkpoint
    assert info["finished"] is True
    assert {"epoch", "position", "offset"} <= set(info["cursor"])
    assert info["features"] == ["x0", "x1", "x2"]
    assert info["coefficients"] == pytest.approx(model.coefficients()[0], rel=1e-12)


def test_inspect_checkpoint_file_mid_epoch(reg, tmp_path):
    """Without shuffling the cursor is plain arithmetic: 3000 rows in two files of three
    row groups of 500 (six units); after 2 steps of 1024 rows, 4 units are done and 48 rows of
    the fifth are consumed."""
    out = tmp_path / "m.npz"
    options = f"--target y --features {FEATURES} --epochs 2 --no-shuffle --keep 50 -q"
    invoke_ok("fit", *reg.paths, *options.split(), "--checkpoint-every", "2", "-o", out)
    directory = str(out) + ".ckpt"
    by_step = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".npz"):
            path = os.path.join(directory, name)
            by_step[json.loads(invoke_ok("inspect", path, "--json").stdout)["step"]] = path
    assert 2 in by_step, by_step
    ckpt = by_step[2]
    info = json.loads(invoke_ok("inspect", ckpt, "--json").stdout)
    assert info["kind"] == "checkpoint"
    assert info["step"] == 2
    assert info["epoch"] == 1
    assert info["finished"] is False
    assert info["cursor"] == {"epoch": 1, "position": 4, "offset": 2 * 1024 - 4 * 500}
    assert info["rows_into_epoch"] == 2 * 1024
    text = invoke_ok("inspect", ckpt).stdout
    assert "step 2" in text


# -- help -------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [[], ["fit"], ["predict"], ["evaluate"], ["inspect"]])
def test_help_exits_0_and_documents_exit_codes(command):
    result = runner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Exit codes" in result.stdout
    for code in ("0", "1", "2"):
        assert code in result.stdout.split("Exit codes", 1)[1]


def test_version():
    result = runner().invoke(cli, ["--version"])
    assert result.exit_code == 0, result.output
    assert streamgd.__version__ in result.stdout
