"""Plots of trained models (streamgd.plotting): the panels drawn, valid image files written
atomically, and a loss surface checked against numpy (least squares, direct evaluation)."""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from integration_support import matrix, read_tables, with_nulls, write_synthetic

import streamgd
from streamgd.errors import DataError, UsageError
from streamgd.plotting import loss_surface, plot_model, surface_grid

imread = pytest.importorskip("matplotlib.image").imread  # matplotlib is an optional extra

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PANEL_PIXELS = (480, 640)  # height, width of one panel at the default size and dpi


# -- data and models ----------------------------------------------------------------------------
def write_one_feature(directory, *, task: str, fmt: str = "parquet", rows: int = 4000):
    """``x`` (mean 50, sd 10) and ``y``: ``3 x - 40 + noise`` or a 0/1 logistic label; two
    files, row groups of 500."""
    rng = np.random.default_rng(7 if task == "regression" else 8)
    x = rng.normal(50.0, 10.0, rows)
    if task == "regression":
        y = 3.0 * x - 40.0 + rng.normal(0.0, 20.0, rows)
    else:
        y = (rng.random(rows) < 1 / (1 + np.exp(-(0.15 * (x - 50) + 0.5)))).astype(np.float64)
    paths = []
    for i, part in enumerate(np.array_split(np.arange(rows), 2)):
        table = pa.table({"x": x[part], "y": y[part]})
        path = os.path.join(directory, f"part-{i}.{fmt}")
        if fmt == "csv":
            pacsv.write_csv(table, path)
        else:
            pq.write_table(table, path, row_group_size=500)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def reg_paths(tmp_path_factory):
    return write_one_feature(str(tmp_path_factory.mktemp("reg1")), task="regression")


@pytest.fixture(scope="module")
def reg_model(reg_paths):
    return streamgd.fit(reg_paths, target="y", features=["x"], epochs=3, record_path=1)


@pytest.fixture(scope="module")
def clf_paths(tmp_path_factory):
    return write_one_feature(str(tmp_path_factory.mktemp("clf1")), task="logistic", fmt="csv")


@pytest.fixture(scope="module")
def clf_model(clf_paths):
    return streamgd.fit(
        clf_paths, target="y", features=["x"], loss="logistic", epochs=3, record_path=1
    )


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    data = write_synthetic(str(tmp_path_factory.mktemp("three")), rows=3000, features=3, seed=2)
    model = streamgd.fit(data.paths, target="y", features=data.features, epochs=2, record_path=1)
    return data, model


def assert_png(path, panels: int) -> None:
    with open(path, "rb") as fh:
        assert fh.read(8) == PNG_MAGIC
    image = imread(path)
    height, width = PANEL_PIXELS
    assert image.shape[:2] == (height, width * panels)
    assert image.std() > 0  # something was drawn


def no_temp_files(directory) -> bool:
    return not [n for n in os.listdir(directory) if n.endswith(".tmp")]


def standardised(model, paths):
    """Standardised feature and training target of every row of ``paths``, by numpy."""
    raw = matrix(read_tables(paths), ["x", "y"])
    s = model.spec
    z = (raw[:, 0] - s.center[0]) / s.scale[0]
    t = (raw[:, 1] - s.target_center) / s.target_scale
    return z, t, raw


# -- panels and files ---------------------------------------------------------------------------
def test_one_feature_model_with_data_draws_loss_curves_and_surface(reg_model, reg_paths, tmp_path):
    reg_model.save(str(tmp_path / "model.npz"))
    model = streamgd.load(str(tmp_path / "model.npz"))  # as the CLI will: from a file
    out = tmp_path / "plots" / "model.png"  # the directory is created
    info = plot_model(model, str(out), data=reg_paths)
    assert info["panels"] == ["loss", "surface"]
    assert info["contour"] is True
    assert info["epochs"] == 3 and info["curves"] == ["training"]
    assert info["path_points"] == len(model.trajectory) > 3
    assert info["surface_rows"] == 4000
    assert info["format"] == "png" and info["output"] == str(out)
    assert_png(out, panels=2)
    assert no_temp_files(out.parent)


def test_surface_minimum_is_the_least_squares_solution(reg_model, reg_paths):
    grid_w, grid_b = surface_grid(reg_model)
    surface = loss_surface(reg_model, reg_paths, grid_w, grid_b)
    z, t, _ = standardised(reg_model, reg_paths)
    (w_exact, b_exact), *_ = np.linalg.lstsq(np.c_[z, np.ones_like(z)], t, rcond=None)
    assert grid_w[0] < w_exact < grid_w[-1] and grid_b[0] < b_exact < grid_b[-1]
    w_min, b_min, _ = surface.minimum()
    assert abs(w_min - w_exact) <= grid_w[1] - grid_w[0]
    assert abs(b_min - b_exact) <= grid_b[1] - grid_b[0]
    assert not surface.on_edge()


def test_surface_grid_contains_the_path_and_centres_on_the_final_weights(reg_model):
    grid_w, grid_b = surface_grid(reg_model)
    assert len(grid_w) == len(grid_b) == 61
    assert grid_w[30] == pytest.approx(reg_model.weights[0], abs=1e-12)
    assert grid_b[30] == pytest.approx(reg_model.intercept, abs=1e-12)
    path = reg_model.trajectory
    assert grid_w[0] < path[:, 1].min() and path[:, 1].max() < grid_w[-1]
    assert grid_b[0] < path[:, 2].min() and path[:, 2].max() < grid_b[-1]


@pytest.mark.parametrize("l2", [0.0, 0.05])
def test_surface_values_are_the_mean_loss_plus_penalty_in_target_units(reg_paths, l2):
    model = streamgd.fit(reg_paths, target="y", features=["x"], epochs=1, l2=l2)
    grid_w, grid_b = np.array([-0.5, 0.3, 1.1]), np.array([-0.2, 0.4])
    surface = loss_surface(model, reg_paths, grid_w, grid_b)
    assert surface.values.shape == (2, 3) and surface.rows == 4000
    z, t, _ = standardised(model, reg_paths)
    s2 = model.spec.target_scale**2
    for i, b in enumerate(grid_b):
        for j, w in enumerate(grid_w):
            expected = (np.mean(0.5 * (z * w + b - t) ** 2) + 0.5 * l2 * w * w) * s2
            assert surface.values[i, j] == pytest.approx(expected, rel=1e-10)


def test_logistic_surface_at_the_final_weights_is_the_evaluated_loss(clf_model, clf_paths):
    w, b = clf_model.weights[0], clf_model.intercept
    surface = loss_surface(clf_model, clf_paths, np.array([w]), np.array([b]))
    assert surface.rows == 4000
    expected = streamgd.evaluate(clf_model, clf_paths)["loss"]
    assert surface.values[0, 0] == pytest.approx(expected, rel=1e-9)


def test_logistic_model_plot(clf_model, clf_paths, tmp_path):
    out = tmp_path / "clf.png"
    info = plot_model(clf_model, str(out), data=clf_paths)
    assert info["panels"] == ["loss", "surface"]
    assert 0 < info["surface_minimum"]["loss"] < np.log(2)
    assert_png(out, panels=2)


def test_max_rows_bounds_the_rows_read(reg_model, reg_paths):
    grid_w, grid_b = surface_grid(reg_model, size=5)
    surface = loss_surface(reg_model, reg_paths, grid_w, grid_b, max_rows=700)
    assert surface.rows == 700  # a row group and a part of another
    info_rows = loss_surface(reg_model, reg_paths, grid_w, grid_b, max_rows=10**9).rows
    assert info_rows == 4000


def test_surface_skips_null_targets_and_imputes_features(reg_model, tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(50.0, 10.0, 300)
    table = pa.table({"x": x, "y": 3.0 * x + rng.normal(0, 20, 300)})
    table = with_nulls(with_nulls(table, "y", [4, 50, 51]), "x", [7, 8])
    path = str(tmp_path / "nulls.parquet")
    pq.write_table(table, path)
    w, b = np.array([0.7]), np.array([0.1])
    surface = loss_surface(reg_model, [path], w, b)
    assert surface.rows == 297
    raw = matrix(table, ["x", "y"])
    raw = raw[~np.isnan(raw[:, 1])]
    raw[np.isnan(raw[:, 0]), 0] = reg_model.spec.fill[0]
    s = reg_model.spec
    z, t = (raw[:, 0] - s.center[0]) / s.scale[0], (raw[:, 1] - s.target_center) / s.target_scale
    expected = np.mean(0.5 * (z * 0.7 + 0.1 - t) ** 2) * s.target_scale**2
    assert surface.values[0, 0] == pytest.approx(expected, rel=1e-10)


def test_without_data_only_the_path_is_drawn(reg_model, tmp_path):
    out = tmp_path / "path.png"
    info = plot_model(reg_model, str(out))
    assert info["panels"] == ["loss", "path"]
    assert info["contour"] is False and info["surface_rows"] == 0
    assert info["surface_minimum"] is None
    assert any("not drawn" in note for note in info["notes"])
    assert_png(out, panels=2)


def test_one_feature_model_without_path_or_data_draws_the_loss_curves(reg_paths, tmp_path):
    model = streamgd.fit(reg_paths, target="y", features=["x"], epochs=2)
    assert model.trajectory is None
    out = tmp_path / "loss.png"
    info = plot_model(model, str(out))
    assert info["panels"] == ["loss"] and info["path_points"] == 0
    assert any("record" in note for note in info["notes"])
    assert_png(out, panels=1)


def test_more_features_draw_the_weights_along_the_path(three, tmp_path):
    data, model = three
    out = tmp_path / "three.png"
    info = plot_model(model, str(out), data=data.paths)
    assert info["panels"] == ["loss", "weights"]
    assert info["contour"] is False and info["path_points"] == len(model.trajectory)
    assert any("one-feature" in note for note in info["notes"])
    assert_png(out, panels=2)


def test_a_loss_surface_needs_exactly_one_feature(three):
    data, model = three
    with pytest.raises(UsageError, match="exactly one feature"):
        loss_surface(model, data.paths, np.zeros(3), np.zeros(3))
    with pytest.raises(UsageError, match="exactly one feature"):
        surface_grid(model)


def test_validation_loss_is_drawn_and_a_wide_range_uses_a_log_scale(reg_paths, reg_model, tmp_path):
    model = streamgd.fit(reg_paths, target="y", features=["x"], epochs=2, validation=reg_paths[:1])
    info = plot_model(model, str(tmp_path / "val.png"))
    assert info["curves"] == ["training", "validation"]
    history = [{"epoch": e, "loss": 10.0**-e, "val_loss": 2 * 10.0**-e} for e in (1, 2, 3)]
    wide = dataclasses.replace(reg_model, history=history)
    assert plot_model(wide, str(tmp_path / "wide.png"))["loss_scale"] == "log"
    assert info["loss_scale"] == "linear"


@pytest.mark.parametrize(("name", "magic"), [("plot.svg", b"<?xml"), ("plot.PDF", b"%PDF")])
def test_the_extension_picks_the_format(reg_model, tmp_path, name, magic):
    out = tmp_path / name
    info = plot_model(reg_model, str(out))
    assert info["format"] == name.rsplit(".", 1)[1].lower()
    assert out.read_bytes().startswith(magic)


def test_unknown_extension_is_a_usage_error(reg_model, tmp_path):
    with pytest.raises(UsageError, match=r"\.png, \.svg, \.pdf"):
        plot_model(reg_model, str(tmp_path / "plot.gif"))
    assert os.listdir(tmp_path) == []


def test_bad_data_writes_nothing(reg_model, tmp_path):
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0], "y": [0.0, 1.0]}), str(other))
    out = tmp_path / "out" / "plot.png"
    with pytest.raises(DataError, match="lacks feature column"):
        plot_model(reg_model, str(out), data=[str(other)])
    assert not out.exists()


def test_without_matplotlib_plotting_is_a_usage_error(reg_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(UsageError, match=r"pip install 'streamgd\[plot\]'"):
        plot_model(reg_model, str(tmp_path / "plot.png"))
    assert os.listdir(tmp_path) == []
