"""--solver normal: exact least squares from one streaming pass, checked against numpy."""

from __future__ import annotations

import glob
import os
import shutil

import numpy as np
import pytest

import streamgd
from streamgd.config import FitConfig, RunOptions
from streamgd.errors import UsageError
from streamgd.training import train
from streamgd.training.checkpoint import load_checkpoint


def test_normal_solver_equals_numpy_least_squares(synthetic):
    data = synthetic(rows=3000, features=4, files=3, row_group_size=250)
    model = streamgd.fit(data.paths, target="y", features=data.features, solver="normal")
    a = np.c_[data.x, np.ones(len(data.x))]
    w = np.linalg.lstsq(a, data.y, rcond=None)[0]
    coef, intercept = model.coefficients()
    np.testing.assert_allclose([coef[n] for n in data.features], w[:-1], rtol=1e-6)
    assert intercept == pytest.approx(w[-1], rel=1e-6, abs=1e-9)
    assert model.summary["stop_reason"] == "solved" and model.summary["epochs"] == 1
    mse = np.mean((model.predict(data.x) - data.y) ** 2)
    assert model.summary["final_loss"] == pytest.approx(mse / 2, rel=1e-6)


def test_normal_solver_with_l2_equals_ridge_on_standardised_features(synthetic):
    data = synthetic(rows=2000, features=3, row_group_size=500)
    l2 = 0.3
    model = streamgd.fit(data.paths, target="y", features=data.features, solver="normal", l2=l2)
    # oracle: ridge in the model's own standardised units, solved densely with numpy
    spec = model.spec
    z = (data.x - spec.center) / spec.scale
    t = (data.y - spec.target_center) / spec.target_scale
    a = np.c_[z, np.ones(len(z))]
    n = len(z)
    penalty = np.diag([l2] * z.shape[1] + [0.0])
    w = np.linalg.solve(a.T @ a / n + penalty, a.T @ t / n)
    np.testing.assert_allclose(np.append(model.weights, model.intercept), w, rtol=1e-6, atol=1e-7)


def test_normal_solver_resumes_mid_pass_to_the_same_answer(tmp_path, synthetic):
    data = synthetic(rows=2000, row_group_size=200)
    config = FitConfig(target="y", features=tuple(data.features), solver="normal", batch_size=100)
    full_dir = str(tmp_path / "full")
    full = train(
        data.paths, config, RunOptions(checkpoint_dir=full_dir, checkpoint_every=3, keep=100)
    )
    middle = [p for p in glob.glob(f"{full_dir}/ckpt-*.npz") if load_checkpoint(p).step == 9]
    resumed_dir = tmp_path / "resumed"
    os.makedirs(resumed_dir)
    shutil.copy(middle[0], resumed_dir)
    again = train(data.paths, config, RunOptions(checkpoint_dir=str(resumed_dir), resume=True))
    assert again.resumed_from is not None
    assert np.array_equal(again.model.weights, full.model.weights)


def test_normal_solver_needs_the_squared_loss():
    with pytest.raises(UsageError, match="--solver normal .* needs --loss squared"):
        FitConfig(target="y", solver="normal", loss="logistic")
