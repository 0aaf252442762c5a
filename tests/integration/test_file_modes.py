"""Files streamgd writes get the permissions a plain ``open()`` gives them: 0666 less the
umask for a new file (a serving process running as another user can read the model), and
the permission bits of the file they replace otherwise; writes stay atomic."""

from __future__ import annotations

import os
import stat

import pytest
from integration_support import invoke_ok, write_synthetic

import streamgd

FEATURES = "x0,x1,x2"


@pytest.fixture
def umask():
    """Set a umask for the test (``umask(value)``), restoring the old one afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_fit_predict_and_metrics_files_follow_the_umask(tmp_path, umask, mask):
    data = write_synthetic(str(tmp_path / "data"), rows=600, features=3, files=1)
    umask(mask)
    model = tmp_path / "m.npz"
    invoke_ok(
        "fit", *data.paths, "--target", "y", "--features", FEATURES, "--epochs", "1", "-q",
        "-o", model, "--metrics-out", tmp_path / "metrics.json",
    )
    pred = tmp_path / "pred.parquet"
    invoke_ok("predict", model, *data.paths, "-o", pred)
    checkpoints = sorted((tmp_path / "m.npz.ckpt").glob("ckpt-*.npz"))
    written = [
        model, tmp_path / "m.history.csv", tmp_path / "m.history.json",
        tmp_path / "metrics.json", pred, *checkpoints,
    ]
    assert checkpoints
    for path in written:
        assert _mode(path) == 0o666 & ~mask, path
    # nothing temporary left behind
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_a_replaced_file_keeps_its_permission_bits(tmp_path, umask):
    data = write_synthetic(str(tmp_path / "data"), rows=600, features=3, files=1)
    umask(0o022)
    model = streamgd.fit(data.paths, target="y", features=FEATURES.split(","), epochs=1)
    path = tmp_path / "m.npz"
    model.save(str(path))
    assert _mode(path) == 0o644
    os.chmod(path, 0o640)
    model.save(str(path))
    assert _mode(path) == 0o640
    os.chmod(path, 0o444)  # read-only: replaced all the same (it is a rename), still 0444
    model.save(str(path))
    assert _mode(path) == 0o444
    assert streamgd.load(str(path)).features == model.features
