"""The sample datasets in data/ (see data/README.md), fitted with default settings, against
the parameters they were drawn with (TRUE_COEFFICIENTS.json) and numpy oracles."""

from __future__ import annotations

import json

import numpy as np
import pytest
from integration_support import (
    DATA_DIR,
    invoke_ok,
    logloss,
    lstsq_fit,
    lstsq_mse,
    matrix,
    newton_fit,
    newton_logloss,
    read_tables,
)

import streamgd

pytestmark = pytest.mark.skipif(
    not (DATA_DIR / "regression" / "TRUE_COEFFICIENTS.json").exists(),
    reason="sample data not present",
)


def _truth(name: str) -> dict:
    return json.loads((DATA_DIR / name / "TRUE_COEFFICIENTS.json").read_text())


def _parquet(name: str) -> list[str]:
    return sorted(str(p) for p in (DATA_DIR / name).glob("*.parquet"))


@pytest.fixture(scope="module")
def regression_model():
    return streamgd.fit(str(DATA_DIR / "regression" / "*.parquet"), target="y")


@pytest.fixture(scope="module")
def classification_model():
    return streamgd.fit(str(DATA_DIR / "classification" / "*.parquet"), target="y", loss="logistic")


def test_regression_recovers_true_coefficients(regression_model):
    truth = _truth("regression")
    coef, intercept = regression_model.coefficients()
    # default features: every numeric column but the target; the string id is left out
    assert set(coef) == set(truth["coefficients"])
    for name, true in truth["coefficients"].items():
        assert coef[name] == pytest.approx(true, rel=0.03), name
    assert intercept == pytest.approx(truth["intercept"], rel=0.03)


def test_regression_matches_least_squares(regression_model):
    table = read_tables(_parquet("regression"))
    names = list(regression_model.features)
    x, y = matrix(table, names), matrix(table, ["y"])[:, 0]
    mse = float(np.mean((regression_model.predict(table) - y) ** 2))
    assert mse <= lstsq_mse(x, y) * 1.005
    # residual sd close to the generating noise sd
    assert np.sqrt(mse) == pytest.approx(_truth("regression")["noise_sd"], rel=0.05)
    exact, _ = lstsq_fit(x, y)
    coef, _ = regression_model.coefficients()
    np.testing.assert_allclose([coef[n] for n in names], exact, rtol=0.01)


def test_regression_from_csv_copy_agrees(regression_model):
    truth = _truth("regression")
    model = streamgd.fit(str(DATA_DIR / "regression-csv" / "*.csv"), target="y")
    coef, _ = model.coefficients()
    assert set(coef) == set(truth["coefficients"])
    for name, true in truth["coefficients"].items():
        assert coef[name] == pytest.approx(true, rel=0.03), name
    assert model.summary["rows_per_epoch"] == 20_000


def test_classification_accuracy_near_the_true_models(classification_model):
    truth = _truth("classification")
    table = read_tables(_parquet("classification"))
    names = list(truth["coefficients"])
    x, y = matrix(table, names), matrix(table, ["y"])[:, 0]
    assert set(classification_model.features) == set(names)

    p = classification_model.predict(table)
    accuracy = float(np.mean((p >= 0.5) == (y == 1)))
    true_logit = x @ np.array(list(truth["coefficients"].values())) + truth["intercept"]
    true_accuracy = float(np.mean((true_logit >= 0) == (y == 1)))
    assert true_accuracy == pytest.approx(0.87, abs=0.01)  # what data/README.md states
    assert accuracy == pytest.approx(true_accuracy, abs=0.01)
    assert logloss(y, p) <= newton_logloss(x, y) * 1.01


def test_classification_coefficients_match_maximum_likelihood(classification_model):
    table = read_tables(_parquet("classification"))
    names = list(classification_model.features)
    x, y = matrix(table, names), matrix(table, ["y"])[:, 0]
    mle, mle_intercept = newton_fit(x, y)
    coef, intercept = classification_model.coefficients()
    np.testing.assert_allclose([coef[n] for n in names], mle, rtol=0.03)
    assert intercept == pytest.approx(mle_intercept, rel=0.03)


def test_help_example_directory_reads_each_sample_row_once(tmp_path):
    options = ["--target", "y", "--loss", "logistic", "--epochs", "1", "--json", "--quiet"]
    result = invoke_ok("fit", DATA_DIR / "classification", *options)
    assert json.loads(result.stdout)["rows_per_epoch"] == 20_000
