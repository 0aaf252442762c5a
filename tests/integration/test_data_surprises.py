"""Data that surprises: extreme values (--outliers), text in numeric CSV columns, duplicate and
extra columns, unseen categories, and files from the field (encodings, big integers, times).

Each test writes its own small files and checks the exit code, the one line that names file,
column and row, and for fits the coefficients against a numpy least-squares oracle.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from integration_support import lstsq_fit, run_cli

import streamgd


def regression(n: int = 4000, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    y = 1.0 + 2.0 * x1 - 0.5 * x2 + 0.1 * rng.normal(size=n)
    return {"x1": x1, "x2": x2, "y": y}


def write(tmp_path, columns: dict, name: str = "d.parquet", *, row_group_size=None) -> str:
    path = str(tmp_path / name)
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def one_error_line(code: int, err: str, expected: int, *needles: str) -> str:
    assert code == expected, err
    assert "Traceback" not in err and "Warning" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, err)
    return lines[0]


def fit_args(path, tmp_path, *more):
    return ("fit", path, "-y", "y", "-o", str(tmp_path / "m.npz"), *more)


# -- extreme values (--outliers) ----------------------------------------------------------------
@pytest.mark.parametrize("column", ["x1", "y"])
def test_a_huge_value_is_an_error_naming_it(capsys, tmp_path, column):
    data = regression()
    data[column][7] = 1e300
    path = write(tmp_path, data, row_group_size=1000)
    code, _, err = run_cli(capsys, *fit_args(path, tmp_path, "-q"))
    one_error_line(code, err, 1, "d.parquet", f"column {column!r}", "row 8", "1e+300", "clip")


def test_a_huge_value_outside_the_statistics_sample_is_found_while_training(capsys, tmp_path):
    data = regression()
    data["x1"][3500] = 1e300
    path = write(tmp_path, data, row_group_size=500)
    code, _, err = run_cli(capsys, *fit_args(path, tmp_path, "-q", "--stats-rows", "500"))
    one_error_line(code, err, 1, "column 'x1'", "row 3501", "1e+300")
    assert "infinite" not in err


def clipped_oracle(data: dict, column: str) -> tuple[np.ndarray, float]:
    """Least squares after clipping ``column`` to median +- 100 IQR (of the whole file, which
    is one piece here)."""
    x = data[column].copy()
    q1, med, q3 = np.quantile(x, [0.25, 0.5, 0.75])
    x = np.clip(x, med - 100 * (q3 - q1), med + 100 * (q3 - q1))
    other = "x2" if column == "x1" else "x1"
    cols = [x, data[other]] if column == "x1" else [data[other], x]
    return lstsq_fit(np.column_stack(cols), data["y"])


def test_outliers_clip_fits_the_clipped_data(capsys, tmp_path):
    data = regression(20_000)
    data["x1"][123] = 1e30
    path = write(tmp_path, data)
    args = fit_args(path, tmp_path, "--outliers", "clip", "--solver", "normal")
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1, err
    assert "column 'x1'" in warnings[0] and "row 124" in warnings[0] and "clipped" in warnings[0]
    coefs, intercept = streamgd.load(str(tmp_path / "m.npz")).coefficients()
    coef, oracle_intercept = clipped_oracle(data, "x1")
    np.testing.assert_allclose([coefs["x1"], coefs["x2"]], coef, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(intercept, oracle_intercept, rtol=1e-6, atol=1e-9)


def test_a_dominating_value_is_reported_not_silently_used(capsys, tmp_path):
    data = regression(20_000)
    data["x1"][5] = 1e12  # the column's spread is this one value: its weight would be noise
    path = write(tmp_path, data)
    code, _, err = run_cli(capsys, *fit_args(path, tmp_path, "--epochs", "1"))
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1, err
    for needle in ("d.parquet", "column 'x1'", "row 6", "1e+12", "100%", "--outliers clip"):
        assert needle in warnings[0], (needle, err)
    code, _, err = run_cli(capsys, *fit_args(path, tmp_path, "--outliers", "error"))
    one_error_line(code, err, 1, "column 'x1'", "row 6", "--outliers error")


def test_ordinary_data_has_no_outliers_and_quiet_is_quiet(capsys, tmp_path):
    data = regression()
    data["x2"] = np.exp(data["x2"])  # a skewed column is no outlier
    data["x1"][10] = np.nan
    path = write(tmp_path, data)
    code, _, err = run_cli(capsys, *fit_args(path, tmp_path, "--epochs", "1"))
    assert code == 0, err
    assert "warning" not in err and "RuntimeWarning" not in err, err
    data["x1"][5] = 1e12
    path = write(tmp_path, data)
    code, _, err = run_cli(capsys, *fit_args(path, tmp_path, "--epochs", "1", "-q"))
    assert code == 0 and err == "", err


def test_values_too_spread_for_float64_are_refused(capsys, tmp_path):
    rng = np.random.default_rng(1)
    data = regression(400)
    data["x1"] = rng.normal(size=400) * 1e200  # no outlier: the whole column is that wide
    path = write(tmp_path, data)
    code, _, err = run_cli(capsys, *fit_args(path, tmp_path, "-q"))
    one_error_line(code, err, 1, "column 'x1'", "1e154")


def test_clipping_applies_when_predicting(tmp_path):
    data = regression(2000)
    data["x1"][0] = 1e30
    path = write(tmp_path, data)
    model = streamgd.fit(path, target="y", outliers="clip", solver="normal")
    bounds = model.spec.bounds
    assert bounds is not None and bounds[1, 0] < 1e4
    table = pa.table({"x1": [1e30, bounds[1, 0]], "x2": [0.0, 0.0]})
    pred = model.predict(table)
    assert pred[0] == pred[1]
