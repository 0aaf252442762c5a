"""Input integrity: a file replaced by an upstream job, during a run or between runs, is
detected and named, never trained on as a mix of versions (see streamgd/sources/fingerprint.py).

Swaps happen as upstream jobs do them: a new file written next to the old one, then
``os.replace``; "same size, same layout" swaps write uncompressed, unencoded float64 columns, so
only the values differ (and the modification time, unless a test puts the old one back).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamgd.cli import run
from streamgd.config import FitConfig, RunOptions
from streamgd.errors import CheckpointError, DataError
from streamgd.training import train
from streamgd.training.checkpoint import CheckpointManager, load_checkpoint

ROWS, GROUP = 1000, 100


def _write(path: str, seed: int, *, rows: int = ROWS, group: int = GROUP) -> str:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2))
    y = x @ np.array([1.0, -2.0]) + 0.5 + 0.1 * rng.normal(size=rows)
    table = pa.table({"x0": x[:, 0], "x1": x[:, 1], "y": y})
    pq.write_table(table, path, row_group_size=group, compression="none", use_dictionary=False)
    return path


def _swap(path: str, seed: int, *, keep_mtime: bool = False, **kwargs) -> None:
    """Replace ``path`` with other values of the same size and layout (``os.replace``)."""
    mtime = os.stat(path).st_mtime_ns
    _write(path + ".new", seed, **kwargs)
    if keep_mtime:  # only the content digest can tell them apart then
        os.utime(path + ".new", ns=(mtime, mtime))
    os.replace(path + ".new", path)


class At:
    """A callback that calls ``action`` once, after step ``step``."""

    def __init__(self, step: int, action) -> None:
        self.step, self.action = step, action

    def __getattr__(self, name):
        return lambda *args: None

    def on_batch_end(self, state, rows, loss_sum):
        if state.step == self.step:
            self.action()


class Stop(Exception):
    pass


def _stop():
    raise Stop


def _config(**kw) -> FitConfig:
    settings = dict(target="y", features=("x0", "x1"), epochs=2, batch_size=32)
    return FitConfig(**{**settings, "shuffle_buffer": 64, **kw})


@pytest.fixture
def parquet(tmp_path) -> str:
    path = str(tmp_path / "data" / "part.parquet")
    os.makedirs(os.path.dirname(path))
    return _write(path, 0)


def test_a_swap_mid_run_stops_naming_the_file(tmp_path, parquet):
    ckpt = str(tmp_path / "ck")
    options = RunOptions(checkpoint_dir=ckpt, checkpoint_every=1)
    with pytest.raises(DataError) as caught:
        train([parquet], _config(), options, callbacks=[At(3, lambda: _swap(parquet, 1))])
    message = str(caught.value)
    assert message.startswith(f"{parquet}: the file changed during the run")
    assert "rerun to train on the new version" in message
    assert caught.value.exit_code == 1
    # the checkpoints written before are intact and describe the old file only
    manager = CheckpointManager(ckpt)
    assert manager.paths()
    for path in manager.paths():
        state = load_checkpoint(path)
        assert not state.finished
    path, state = manager.latest()
    # stopped before the run's end: within the first epoch, or (the shuffled stream reads
    # several row groups at once, here all ten at its start) at the second epoch's first read
    assert state.step <= ROWS // 32 + 1
    with pytest.raises(CheckpointError, match=rf"changed {parquet} \(.*content changed"):
        train([parquet], _config(), RunOptions(checkpoint_dir=ckpt, resume=True))


def test_a_same_time_swap_mid_run_is_seen_by_the_footer(tmp_path, parquet):
    """Size and modification time as before: only the footer digest tells the files apart."""
    swap = At(3, lambda: _swap(parquet, 1, keep_mtime=True))
    with pytest.raises(DataError, match="changed during the run .*content changed"):
        train([parquet], _config(), callbacks=[swap])


def test_a_swap_to_another_layout_mid_run_is_an_error_not_a_short_epoch(tmp_path, parquet):
    swap = At(3, lambda: _swap(parquet, 1, rows=600, group=60))
    with pytest.raises(DataError, match="changed during the run"):
        train([parquet], _config(), callbacks=[swap])


def test_a_swap_between_runs_refuses_the_resume(tmp_path, parquet):
    ckpt = str(tmp_path / "ck")
    options = RunOptions(checkpoint_dir=ckpt, checkpoint_every=2, resume=True)
    with pytest.raises(Stop):
        train([parquet], _config(), options, callbacks=[At(7, _stop)])
    before = sorted(os.listdir(ckpt))
    _swap(parquet, 1, keep_mtime=True)
    with pytest.raises(CheckpointError) as caught:
        train([parquet], _config(), options)
    assert f"changed {parquet} (content changed)" in str(caught.value)
    assert "resume needs the same files" in str(caught.value)
    assert sorted(os.listdir(ckpt)) == before  # nothing written, nothing removed


def test_a_touch_refuses_the_resume_and_says_how_to_restore_the_time(tmp_path, parquet):
    """The documented choice: a new modification time is a change even when the digest is
    the same (the digest does not cover the data pages); the message says the digest is the
    same and how to put the time back, after which the resume goes on."""
    ckpt = str(tmp_path / "ck")
    options = RunOptions(checkpoint_dir=ckpt, checkpoint_every=2, resume=True)
    with pytest.raises(Stop):
        train([parquet], _config(), options, callbacks=[At(7, _stop)])
    mtime = os.stat(parquet).st_mtime_ns
    os.utime(parquet, ns=(mtime + 10**9, mtime + 10**9))
    with pytest.raises(CheckpointError) as caught:
        train([parquet], _config(), options)
    message = str(caught.value)
    assert "modification time changed (content digest the same)" in message
    assert f"touch -d @{mtime // 10**9}.{mtime % 10**9:09d}" in message
    os.utime(parquet, ns=(mtime, mtime))  # what the message says to do
    resumed = train([parquet], _config(), options)
    assert resumed.resumed_from is not None and resumed.state.finished
    fresh = train([parquet], _config())
    np.testing.assert_array_equal(resumed.model.weights, fresh.model.weights)


def test_csv_rows_appended_between_runs_and_during_a_run(tmp_path):
    data = tmp_path / "csv"
    data.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        x = rng.normal(size=(300, 2))
        lines = [f"{a:.6f},{b:.6f},{a - 2 * b:.6f}" for a, b in x]
        path = data / f"part-{i}.csv"
        path.write_text("x0,x1,y\n" + "\n".join(lines) + "\n")
        paths.append(str(path))

    def append():
        with open(paths[0], "a") as fh:
            fh.write("1.0,1.0,-1.0\n")

    config = _config(epochs=3)
    with pytest.raises(DataError, match=rf"{paths[0]}: the file changed during the run \(size"):
        train(paths, config, callbacks=[At(5, append)])
    ckpt = str(tmp_path / "ck")
    options = RunOptions(checkpoint_dir=ckpt, resume=True)
    train(paths, config, options)
    append()
    with pytest.raises(CheckpointError, match=rf"changed {paths[0]} \(size \d+ -> \d+ bytes"):
        train(paths, config, options)


def test_an_old_style_fingerprint_is_refused_with_a_clear_message(tmp_path, parquet):
    ckpt = str(tmp_path / "ck")
    options = RunOptions(checkpoint_dir=ckpt, resume=True)
    train([parquet], _config(epochs=1), options)
    manager = CheckpointManager(ckpt)
    path, state = manager.latest()
    state.data = {  # as streamgd wrote it before files had content stamps
        "files": [{k: f[k] for k in ("path", "size", "row_groups")} for f in state.data["files"]]
    }
    os.remove(path)
    manager.save(state)
    with pytest.raises(CheckpointError, match="by paths, sizes and row-group layouts only"):
        train([parquet], _config(epochs=1), options)
    # the way out the message gives: a run without --resume starts afresh
    assert train([parquet], _config(epochs=1), RunOptions(checkpoint_dir=ckpt)).trained


def test_the_cli_exits_1_naming_the_file(tmp_path, parquet, capsys):
    ckpt = str(tmp_path / "ck")
    args = ["fit", parquet, "--target", "y", "--features", "x0,x1", "-o", str(tmp_path / "m.npz")]
    assert run([*args, "--checkpoint-dir", ckpt, "--resume", "--quiet"]) == 0
    _swap(parquet, 1)
    capsys.readouterr()
    assert run([*args, "--checkpoint-dir", ckpt, "--resume", "--epochs", "5"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"changed {parquet} (" in err[0], err


# A run slowed to 50 ms a unit, so that a swap from outside lands in the middle of it.
_SLOW_RUN = textwrap.dedent(
    """
    import sys, time
    from streamgd.sources import dataset
    real = dataset.Dataset.iter_unit
    def slow(self, *args, **kwargs):
        time.sleep(0.05)
        yield from real(self, *args, **kwargs)
    dataset.Dataset.iter_unit = slow
    from streamgd.cli import run
    sys.exit(run(sys.argv[1:]))
    """
)


def test_a_swap_from_outside_exits_1_with_no_model_and_intact_checkpoints(tmp_path, parquet):
    model, ckpt = str(tmp_path / "m.npz"), str(tmp_path / "ck")
    args = ["fit", parquet, "--target", "y", "--features", "x0,x1", "-o", model]
    args += ["--checkpoint-dir", ckpt, "--checkpoint-every", "1", "--epochs", "20"]
    args += ["--batch-size", "32", "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_RUN, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not CheckpointManager(ckpt).paths() and proc.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.02)
        _swap(parquet, 1)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    assert f"{parquet}: the file changed during the run" in err.strip().splitlines()[-1], err
    assert not os.path.exists(model)
    paths = CheckpointManager(ckpt).paths()
    assert paths and all(not load_checkpoint(p).finished for p in paths)
