"""The failure contract at the writers' seams (README "Exit codes"): a write the machine
refuses is exit 1 with one line naming the path and what to do, leaves no temporary file and
never a stale model passed off as written; an OSError no seam words is still exit 1, not 70.
"""

from __future__ import annotations

import errno
import os

import pytest
from integration_support import run_cli, write_synthetic

import streamgd
from streamgd.archive import read_archive_digest
from streamgd.model import MODEL_VERSION, Model
from streamgd.training.checkpoint import MODEL_DIGEST_KEY, CheckpointManager


# -- in-process, at the writer's seam ---------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic(str(tmp_path_factory.mktemp("fc")), rows=1200, features=3, seed=5)


def _fit(data, *extra):
    return ["fit", *data.paths, "--target", "y", "--features", "x0,x1,x2", "--epochs", "2",
            *map(str, extra)]


def test_model_write_failing_after_training_is_rewritten_by_resume(data, tmp_path, capsys,
                                                                    monkeypatch):
    """The model write fails after training (here: no space, at Model.save's seam): exit 1,
    one line, the old model kept. ``--resume`` of the finished run then finds that the file
    is not the model its checkpoint recorded, writes it, and only then says it did."""
    model, ckpt = tmp_path / "m.npz", tmp_path / "m.ckpt"
    code, _, err = run_cli(capsys, *_fit(data, "-o", model, "--checkpoint-dir", ckpt,
                                         "--epochs", "1"))
    assert code == 0, err
    old = model.read_bytes()

    real_save = Model.save

    def no_space(self, path, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Model, "save", no_space)
    code, out, err = run_cli(capsys, *_fit(data, "-o", model, "--checkpoint-dir", ckpt, "-q"))
    assert code == 1, err
    assert err.count("\n") == 1 and "Traceback" not in err and "No space left" in err
    assert model.read_bytes() == old
    monkeypatch.setattr(Model, "save", real_save)

    code, out, err = run_cli(capsys, *_fit(data, "-o", model, "--checkpoint-dir", ckpt,
                                           "--resume"))
    assert code == 0, err
    assert "writing the final model" in err and "again" in err
    assert err.index("again") < err.index("model written")
    assert model.read_bytes() != old
    manager = CheckpointManager(str(ckpt))
    path, state = manager.latest()
    assert state.finished and manager.recorded_model_digest is not None
    found = read_archive_digest(str(model), kind="model", max_version=MODEL_VERSION)[2]
    assert found == manager.recorded_model_digest

    # a third run: the model is that run's, nothing is written
    before = model.stat().st_mtime_ns
    code, _, err = run_cli(capsys, *_fit(data, "-o", model, "--checkpoint-dir", ckpt,
                                         "--resume"))
    assert code == 0 and "again" not in err
    assert model.stat().st_mtime_ns == before


def test_the_finished_checkpoint_records_the_models_digest(data, tmp_path, capsys):
    model, ckpt = tmp_path / "m.npz", tmp_path / "m.ckpt"
    code, _, err = run_cli(capsys, *_fit(data, "-o", model, "--checkpoint-dir", ckpt))
    assert code == 0, err
    newest = sorted(ckpt.glob("ckpt-*.npz"))[-1]
    meta = streamgd.archive.read_archive(str(newest), kind="checkpoint", max_version=9)[0]
    assert meta[MODEL_DIGEST_KEY] == streamgd.load(str(model)).digest()


def test_an_oserror_no_seam_words_is_exit_1_naming_the_path(data, tmp_path, capsys,
                                                             monkeypatch):
    """The safety net: an OSError escaping anywhere is the environment (exit 1, one line
    with its path), not a bug (70)."""
    from streamgd.training import api

    def vanished(*args, **kwargs):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/gone/part-0.parquet")

    monkeypatch.setattr(api, "open_dataset", vanished)
    code, _, err = run_cli(capsys, *_fit(data, "-o", tmp_path / "m.npz"))
    assert code == 1
    assert err.count("\n") == 1 and "/gone/part-0.parquet" in err and "Traceback" not in err


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    from streamgd.archive import atomic_write
    from streamgd.errors import WriteError

    target = tmp_path / "x.json"
    target.write_text("old")

    def fail(fh):
        fh.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(WriteError, match=r"no space left.*free space on the device holding"):
        atomic_write(str(target), fail, what="the metrics file", option="--metrics-out")
    assert os.listdir(tmp_path) == ["x.json"] and target.read_text() == "old"
