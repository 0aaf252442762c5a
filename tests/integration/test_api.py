"""The Python API end to end: determinism, the Model (save/load, predict on every input type,
coefficients, inspect, pickle-free files) and missing values."""

from __future__ import annotations

import zipfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from integration_support import (
    lstsq_mse,
    matrix,
    read_tables,
    with_nulls,
    write_synthetic,
    write_table,
)

import streamgd
from streamgd.errors import DataError, UsageError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic(str(tmp_path_factory.mktemp("api")), rows=4000, features=3, seed=4)


@pytest.fixture(scope="module")
def clf_data(tmp_path_factory):
    return write_synthetic(
        str(tmp_path_factory.mktemp("clf")), rows=4000, features=3, task="logistic", seed=5
    )


@pytest.fixture(scope="module")
def model(data):
    return streamgd.fit(data.paths, target="y", features=data.features, epochs=3)


@pytest.fixture(scope="module")
def clf_model(clf_data):
    return streamgd.fit(
        clf_data.paths, target="y", features=clf_data.features, loss="logistic", epochs=3
    )


# -- determinism ------------------------------------------------------------------------------
def _fit(data, **kw):
    kw.setdefault("epochs", 2)
    kw.setdefault("batch_size", 256)
    return streamgd.fit(data.paths, target="y", features=data.features, **kw)


def test_same_seed_gives_bit_identical_weights(data):
    a, b = _fit(data, seed=3), _fit(data, seed=3)
    assert np.array_equal(a.weights, b.weights)
    assert a.intercept == b.intercept
    assert a.summary["steps"] == b.summary["steps"]


def test_different_seed_gives_different_weights(data):
    a, b = _fit(data, seed=3), _fit(data, seed=4)
    assert not np.array_equal(a.weights, b.weights)
    # ...but both are trained: the difference is mini-batch noise, not a different model
    best = lstsq_mse(data.x, data.y)
    for model in (a, b):
        assert np.mean((model.predict(data.x) - data.y) ** 2) <= best * 1.01


def test_shuffle_false_is_deterministic(data):
    a, b = _fit(data, shuffle=False), _fit(data, shuffle=False)
    assert np.array_equal(a.weights, b.weights)
    assert a.intercept == b.intercept
    # and it is a different visiting order from the shuffled run
    assert not np.array_equal(a.weights, _fit(data).weights)


def test_how_a_run_is_carried_out_does_not_change_the_model(data, tmp_path):
    """Prefetch depth and checkpointing are run options: the model is bit-identical."""
    base = _fit(data, seed=1)
    for other in (
        _fit(data, seed=1, prefetch=1),
        _fit(data, seed=1, prefetch=5),
        _fit(data, seed=1, checkpoint_dir=str(tmp_path / "ck"), checkpoint_every=3),
    ):
        assert np.array_equal(base.weights, other.weights)
        assert base.intercept == other.intercept


# -- the model --------------------------------------------------------------------------------
def test_save_load_round_trip(model, data, tmp_path):
    path = str(tmp_path / "model.npz")
    model.save(path)
    loaded = streamgd.load(path)
    assert loaded.features == model.features
    assert loaded.target == "y"
    assert loaded.loss == "squared"
    assert np.array_equal(loaded.weights, model.weights)
    assert np.array_equal(loaded.predict(data.x), model.predict(data.x))
    assert loaded.coefficients() == model.coefficients()
    assert loaded.summary == model.summary


def test_save_load_round_trip_logistic(clf_model, clf_data, tmp_path):
    path = str(tmp_path / "clf.npz")
    clf_model.save(path)
    loaded = streamgd.load(path)
    assert loaded.loss == "logistic"
    assert np.array_equal(loaded.predict(clf_data.x), clf_model.predict(clf_data.x))


def test_model_file_needs_no_pickle(model, tmp_path):
    path = str(tmp_path / "model.npz")
    model.save(path)
    assert zipfile.is_zipfile(path)
    with np.load(path, allow_pickle=False) as archive:
        members = {name: archive[name] for name in archive.files}  # raises if pickled
    assert members
    assert all(a.dtype != object for a in members.values())


def _same_values(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to rounding: memory layout changes the order of BLAS's sums in the last bit."""
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_predict_accepts_table_dataframe_and_array(model, data):
    table = read_tables(data.paths)
    frame = table.to_pandas()
    from_table = model.predict(table)
    assert from_table.shape == (len(data.y),)
    same = _same_values
    # a DataFrame is matched by column name: reordered and extra columns do not matter
    same(model.predict(frame[["y", *reversed(data.features), "row_id"]]), from_table)
    same(model.predict(frame), from_table)
    # a numpy array is taken in model.features order
    same(model.predict(data.x), from_table)
    # a single row as a 1-d array
    same(model.predict(data.x[7]), from_table[7:8])


def test_predict_rejects_inputs_without_the_features(model, data):
    with pytest.raises(DataError, match="x1"):
        model.predict(pd.DataFrame({"x0": [1.0], "x2": [2.0]}))
    with pytest.raises(DataError, match="3"):
        model.predict(np.ones((4, 2)))


def test_coefficients_in_original_units_reproduce_predictions(model, data):
    coef, intercept = model.coefficients()
    assert list(coef) == data.features
    w = np.array([coef[n] for n in data.features])
    np.testing.assert_allclose(data.x @ w + intercept, model.predict(data.x), rtol=1e-9, atol=1e-9)


def test_logistic_coefficients_reproduce_probabilities(clf_model, clf_data):
    coef, intercept = clf_model.coefficients()
    w = np.array([coef[n] for n in clf_data.features])
    expected = 1 / (1 + np.exp(-(clf_data.x @ w + intercept)))
    np.testing.assert_allclose(clf_model.predict(clf_data.x), expected, rtol=1e-9, atol=1e-12)


def test_inspect_reports_coefficients_by_feature(model):
    info = model.inspect()
    coef, intercept = model.coefficients()
    assert info["features"] == list(model.features)
    assert info["coefficients"] == coef
    assert set(info["coefficients"]) == set(model.features)
    assert info["intercept"] == intercept
    assert info["summary"]["epochs"] == 3
    assert info["summary"]["rows_per_epoch"] == 4000


def test_summary_counts_what_was_trained(model):
    s = model.summary
    assert s["epochs"] == 3
    assert s["rows_per_epoch"] == 4000
    assert s["rows_trained"] == 3 * 4000
    assert s["steps"] == 3 * int(np.ceil(4000 / 1024))
    assert s["skipped_null_target"] == 0
    assert s["imputed"] == {}
    assert len(model.history) == 3


# -- settings are validated at the boundary ---------------------------------------------------
@pytest.mark.parametrize(
    ("setting", "value", "option"),
    [
        ("batch_size", 0, "--batch-size"),
        ("lr", -1.0, "--lr"),
        ("lr", 0.0, "--lr"),
        ("epochs", 0, "--epochs"),
        ("loss", "cubic", "--loss"),
        ("optimizer", "lbfgs", "--optimizer"),
        ("missing", "skip", "--missing"),
        ("momentum", 1.5, "--momentum"),
    ],
)
def test_invalid_settings_are_usage_errors(data, setting, value, option):
    with pytest.raises(UsageError, match=option) as info:
        streamgd.fit(data.paths, target="y", **{setting: value})
    assert repr(value) in str(info.value) or str(value) in str(info.value)


# -- missing values ---------------------------------------------------------------------------
NULL_TARGET_ROWS = [3, 50, 999, 1000, 2500, 3999]
NULL_X0_ROWS = [0, 10, 11, 700, 3001]
NULL_X2_ROWS = [5, 2222]


@pytest.fixture(scope="module")
def null_data(tmp_path_factory, data):
    """The regression data with null targets and null features, as Parquet and as CSV."""
    directory = tmp_path_factory.mktemp("nulls")
    table = read_tables(data.paths)
    table = with_nulls(table, "y", NULL_TARGET_ROWS)
    table = with_nulls(table, "x0", NULL_X0_ROWS)
    table = with_nulls(table, "x2", NULL_X2_ROWS)
    half = table.num_rows // 2
    paths = {
        fmt: [
            write_table(table.slice(0, half), directory / f"part-0.{fmt}"),
            write_table(table.slice(half), directory / f"part-1.{fmt}"),
        ]
        for fmt in ("parquet", "csv")
    }
    return table, paths


def _imputed_oracle(table: pa.Table, features: list[str]):
    """Rows with a target, features with nulls replaced by the mean of their column over
    those rows (what training sees)."""
    x, y = matrix(table, features), matrix(table, ["y"])[:, 0]
    keep = ~np.isnan(y)
    x, y = x[keep], y[keep]
    x = np.where(np.isnan(x), np.nanmean(x, axis=0), x)
    return x, y


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_null_targets_skipped_and_null_features_imputed(null_data, data, fmt):
    table, paths = null_data
    model = streamgd.fit(paths[fmt], target="y", features=data.features)
    s = model.summary
    assert s["skipped_null_target"] == len(NULL_TARGET_ROWS)
    # counted among the rows that have a target (none of the null features share a row with
    # a null target)
    assert s["imputed"] == {"x0": len(NULL_X0_ROWS), "x2": len(NULL_X2_ROWS)}
    assert s["rows_per_epoch"] == 4000 - len(NULL_TARGET_ROWS)

    # fill values are the training means; training converges on the imputed data
    x, y = _imputed_oracle(table, data.features)
    np.testing.assert_allclose(model.spec.fill, x.mean(axis=0), rtol=1e-9)
    mse = float(np.mean((model.predict(x) - y) ** 2))
    assert mse <= lstsq_mse(x, y) * 1.005


def test_predict_imputes_missing_features_with_training_means(null_data, data):
    table, paths = null_data
    model = streamgd.fit(paths["parquet"], target="y", features=data.features)
    x_raw = matrix(table, data.features)
    x_filled = np.where(np.isnan(x_raw), model.spec.fill, x_raw)
    _same_values(model.predict(table), model.predict(x_filled))
    _same_values(model.predict(x_raw), model.predict(x_filled))
    assert np.isfinite(model.predict(table)).all()


def test_row_group_whose_targets_are_all_null(tmp_path, data):
    table = read_tables(data.paths[:1])  # 2000 rows in row groups of 500
    path = write_table(with_nulls(table, "y", range(500, 1000)), tmp_path / "gap.parquet")
    model = streamgd.fit([path], target="y", features=data.features, epochs=1)
    assert model.summary["skipped_null_target"] == 500
    assert model.summary["rows_per_epoch"] == 1500


def test_missing_error_policy_names_column_and_row(null_data, data):
    _, paths = null_data
    with pytest.raises(DataError) as info:
        streamgd.fit(paths["parquet"], target="y", features=data.features, missing="error")
    err = info.value
    # the first null in file order is x0 in data row 1 (1-based) of part-0
    assert err.path == paths["parquet"][0]
    assert (err.column, err.row) == ("x0", NULL_X0_ROWS[0] + 1)
    assert "'x0'" in str(err) and f"row {NULL_X0_ROWS[0] + 1}" in str(err)


def test_collinear_features_with_missing_values_do_not_blow_up(tmp_path):
    # b = 2a, with one b missing: standardising with the spread training actually sees keeps
    # the preconditioner consistent, so the collinear direction is not amplified
    path = tmp_path / "c.csv"
    path.write_text("a;b;y\n1;2;3\n4;NA;6\n7;8;9\n")
    model = streamgd.fit(str(path), target="y", delimiter=";", null_values=["NA"], epochs=1)
    pred = model.predict(np.array([[1.0, 2.0], [4.0, np.nan], [7.0, 8.0]]))
    assert np.all(np.abs(pred - [3.0, 6.0, 9.0]) < 1.5)


def test_missing_drop_drops_rows_with_any_missing_value(tmp_path):
    rng = np.random.default_rng(15)
    x = rng.normal(size=(600, 2))
    y = x @ [1.0, -2.0] + 0.5 + rng.normal(size=600) * 0.1
    a = x[:, 0].copy()
    a[::10] = np.nan  # 60 rows miss a feature
    target = y.copy()
    target[5::50] = np.nan  # 12 rows miss the target (none of them among the 60)
    path = tmp_path / "m.parquet"
    pa_table = pa.table({"a": a, "b": x[:, 1], "y": target})
    import pyarrow.parquet as pq

    pq.write_table(pa_table, path, row_group_size=100)
    model = streamgd.fit(str(path), target="y", missing="drop", epochs=5)
    assert model.summary["skipped_null_target"] == 12
    assert model.summary["dropped_missing"] == 60 and model.summary["missing"] == {"a": 60}
    assert model.summary["rows_per_epoch"] == 600 - 12 - 60
    result = streamgd.evaluate(model, [str(path)])
    assert result["rows"] == 528 and result["dropped_missing"] == 60
    # the oracle: least squares on the complete rows only
    keep = ~np.isnan(a) & ~np.isnan(target)
    coef, _ = model.coefficients()
    w = np.linalg.lstsq(np.c_[x[keep], np.ones(keep.sum())], y[keep], rcond=None)[0]
    assert coef["a"] == pytest.approx(w[0], abs=0.02) and coef["b"] == pytest.approx(w[1], abs=0.02)
