"""The installed entry points in a subprocess: the `streamgd` console script and
`python -m streamgd`, with real exit codes and streams."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from integration_support import write_synthetic

import streamgd

ENV = {
    **os.environ,
    "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
}


def _console_script() -> str:
    exe = shutil.which("streamgd", path=ENV["PATH"])
    if exe is None:
        pytest.skip("the streamgd console script is not on PATH")
    return exe


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], env=ENV, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic(str(tmp_path_factory.mktemp("cs")), rows=2000, features=3, seed=31)


def test_console_script_fit_writes_a_model(data, tmp_path):
    out = tmp_path / "m.npz"
    options = ["--target", "y", "--features", "x0,x1,x2", "--json"]
    proc = _run(_console_script(), "fit", *data.paths, *options, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"] == str(out)
    assert "epoch 1/" in proc.stderr
    assert "Warning" not in proc.stderr
    model = streamgd.load(str(out))
    assert model.features == ("x0", "x1", "x2")
    assert np.isfinite(model.predict(data.x)).all()
    assert os.path.isdir(str(out) + ".ckpt")


def test_console_script_error_exit_codes(data, tmp_path):
    exe = _console_script()
    usage = _run(exe, "fit", str(tmp_path / "none-*.parquet"), "--target", "y")
    assert usage.returncode == 2
    assert usage.stderr.count("\n") == 1 and usage.stderr.startswith("streamgd: ")
    assert "none-*.parquet" in usage.stderr and usage.stdout == ""

    fake = tmp_path / "fake.parquet"
    fake.write_text("not parquet\n")
    data_error = _run(exe, "fit", fake, "--target", "y")
    assert data_error.returncode == 1
    assert data_error.stderr.count("\n") == 1 and str(fake) in data_error.stderr
    assert "Traceback" not in data_error.stderr


def test_python_dash_m_help():
    proc = _run(sys.executable, "-m", "streamgd", "--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("fit", "predict", "evaluate", "inspect"):
        assert command in proc.stdout
    assert "Exit codes" in proc.stdout


def test_python_dash_m_usage_error_exit_code():
    proc = _run(sys.executable, "-m", "streamgd", "fit", "--batch-size", "0")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
