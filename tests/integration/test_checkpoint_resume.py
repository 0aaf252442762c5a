"""Checkpoint/resume contract: an interrupted run, resumed, ends bit-for-bit where an
uninterrupted one does; checkpoints are atomic, verified, locked and never lost."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import Interrupt, StopAt

from streamgd.cli import run
from streamgd.config import FitConfig, RunOptions
from streamgd.errors import CheckpointError, DivergedError, UsageError
from streamgd.training import train
from streamgd.training.checkpoint import CHECKPOINT_VERSION, CheckpointManager, load_checkpoint


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _params(result) -> np.ndarray:
    return np.append(result.model.weights, result.model.intercept)


def _resume_from(ckpt: str, workdir: str, paths, config, **options):
    directory = os.path.join(workdir, f"resume-{os.path.basename(ckpt)}")
    os.makedirs(directory)
    shutil.copy(ckpt, directory)
    return train(paths, config, RunOptions(checkpoint_dir=directory, resume=True, **options))


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_resume_from_any_step_is_bit_identical(tmp_path, synthetic, optimizer, loss):
    data = synthetic(
        rows=1500, files=2, row_group_size=200, task="regression" if loss == "squared" else "binary"
    )
    config = FitConfig(
        target="y",
        features=tuple(data.features),
        loss=loss,
        optimizer=optimizer,
        epochs=3,
        batch_size=64,
        shuffle_buffer=300,
    )
    full_dir = str(tmp_path / "full")
    full = train(
        data.paths, config, RunOptions(checkpoint_dir=full_dir, checkpoint_every=1, keep=10_000)
    )
    steps_per_epoch = full.model.history[0]["step"]
    ckpts = {load_checkpoint(p).step: p for p in glob.glob(f"{full_dir}/ckpt-*.npz")}
    chosen = {
        1,  # first step of the first epoch
        steps_per_epoch // 2,  # middle of the first epoch
        steps_per_epoch,  # exactly at the epoch boundary
        steps_per_epoch + steps_per_epoch // 3,  # middle of a later epoch
        3 * steps_per_epoch - 1,  # one step before the end
    }
    for step in sorted(chosen):
        resumed = _resume_from(ckpts[step], str(tmp_path), data.paths, config)
        assert np.array_equal(_params(resumed), _params(full)), f"resumed at step {step}"
        assert resumed.model.history == full.model.history


def test_resume_inside_a_shuffle_round_is_bit_identical(tmp_path, synthetic):
    """Batches of 32 from a 4096-row buffer come in rounds of 16 batches (see
    batches.exchange_rows): checkpoints inside an exchange, at its end and in the drain resume
    exactly."""
    data = synthetic(rows=6000, files=2, row_group_size=700)
    config = FitConfig(
        target="y", features=tuple(data.features), epochs=2, batch_size=32, shuffle_buffer=4096
    )
    full_dir = str(tmp_path / "full")
    full = train(
        data.paths, config, RunOptions(checkpoint_dir=full_dir, checkpoint_every=1, keep=10_000)
    )
    steps_per_epoch = full.model.history[0]["step"]
    ckpts = {load_checkpoint(p).step: p for p in glob.glob(f"{full_dir}/ckpt-*.npz")}
    mid = load_checkpoint(ckpts[7])
    assert mid.stream.rng is not None and mid.stream.rng["exchange"]["out"] == 7 * 32
    for step in (7, 16, steps_per_epoch - 3, steps_per_epoch + 21):
        resumed = _resume_from(ckpts[step], str(tmp_path), data.paths, config)
        assert np.array_equal(_params(resumed), _params(full)), f"resumed at step {step}"
        assert resumed.model.history == full.model.history


def test_two_interruptions_in_one_epoch(tmp_path, synthetic):
    data = synthetic(rows=2000, files=3, row_group_size=150)
    config = FitConfig(
        target="y",
        features=tuple(data.features),
        optimizer="momentum",
        epochs=2,
        batch_size=50,
        shuffle_buffer=500,
    )
    full = train(data.paths, config)
    directory = str(tmp_path / "ck")
    options = RunOptions(checkpoint_dir=directory, checkpoint_every=1, resume=True)
    for stop in (13, 27):  # both inside the first epoch (40 steps)
        with pytest.raises(Interrupt):
            train(data.paths, config, options, callbacks=[StopAt(stop)])
        assert load_checkpoint(CheckpointManager(directory).paths()[0]).step == stop - 1
    final = train(data.paths, config, options)
    assert final.resumed_from is not None
    assert np.array_equal(_params(final), _params(full))


def test_checkpoint_holds_the_whole_state(tmp_path, synthetic):
    data = synthetic(rows=1000, row_group_size=100)
    config = FitConfig(
        target="y", features=tuple(data.features), epochs=1, batch_size=32, shuffle_buffer=200
    )
    directory = str(tmp_path / "ck")
    with pytest.raises(Interrupt):
        train(
            data.paths,
            config,
            RunOptions(checkpoint_dir=directory, checkpoint_every=5),
            callbacks=[StopAt(11)],
        )
    state = load_checkpoint(CheckpointManager(directory).paths()[0])
    assert state.step == 10
    cursor = state.stream.cursor
    assert cursor.position > 0 or cursor.offset > 0  # mid-epoch data cursor
    assert state.buffered_rows == 208  # the buffer's 200 rows rounded up to whole runs of 16
    # slots of 16 rows (the default run, which divides the batch of 32) x 3 features + target
    slots = state.stream.slots
    assert slots is not None and slots.shape == (200 // 16 + 1 + 32 // 16, 4, 16)
    assert state.stream.rng is not None and state.stream.rng["bit_generator"] == "PCG64"
    assert state.totals.rows == 10 * 32
    assert state.spec.names == tuple(data.features)
    assert state.data["files"][0]["row_groups"] == [100] * 5  # fingerprint of the inputs
    assert state.config["batch_size"] == 32


def test_fingerprint_mismatch_is_refused(tmp_path, synthetic):
    data = synthetic(rows=800)
    other = synthetic(rows=900, seed=3)
    config = FitConfig(target="y", features=tuple(data.features), epochs=1)
    options = RunOptions(checkpoint_dir=str(tmp_path / "ck"), resume=True)
    train(data.paths, config, options)
    with pytest.raises(CheckpointError, match=r"batch_size: 1024 -> 64"):
        train(data.paths, FitConfig(**{**config.to_dict(), "batch_size": 64}), options)
    with pytest.raises(CheckpointError, match="input files differ"):
        train(other.paths, config, options)


def test_more_epochs_continue_a_finished_run(tmp_path, synthetic):
    data = synthetic(rows=1000, row_group_size=100)
    base = FitConfig(target="y", features=tuple(data.features), epochs=2, batch_size=100)
    longer = FitConfig(**{**base.to_dict(), "epochs": 4})
    options = RunOptions(checkpoint_dir=str(tmp_path / "ck"), resume=True)
    train(data.paths, base, options)
    continued = train(data.paths, longer, options)
    assert continued.trained and len(continued.model.history) == 4
    assert np.array_equal(_params(continued), _params(train(data.paths, longer)))


# -- corruption and atomicity ------------------------------------------------------------------
@pytest.fixture
def three_checkpoints(tmp_path, synthetic):
    data = synthetic(rows=600, row_group_size=100)
    config = FitConfig(target="y", features=tuple(data.features), epochs=3, batch_size=100)
    directory = str(tmp_path / "ck")
    with pytest.raises(Interrupt):
        train(
            data.paths,
            config,
            RunOptions(checkpoint_dir=directory, checkpoint_every=1),
            callbacks=[StopAt(5)],
        )
    paths = CheckpointManager(directory).paths()
    assert [load_checkpoint(p).step for p in paths] == [4, 3, 2]
    return data, config, directory, paths


def _damage(path: str, how: str) -> None:
    if how == "truncate":
        with open(path, "r+b") as fh:
            fh.truncate(os.path.getsize(path) // 2)
    elif how == "flip":
        with open(path, "r+b") as fh:
            fh.seek(os.path.getsize(path) // 3)
            byte = fh.read(1)
            fh.seek(-1, os.SEEK_CUR)
            fh.write(bytes([byte[0] ^ 0xFF]))
    else:
        os.unlink(path)


@pytest.mark.parametrize("how", ["truncate", "flip", "delete"])
def test_damaged_newest_checkpoint_falls_back(three_checkpoints, how):
    data, config, directory, paths = three_checkpoints
    _damage(paths[0], how)
    warnings = []

    class Warn:
        def __getattr__(self, name):
            return lambda *a: None

        def on_warning(self, message):
            warnings.append(message)

        def on_resume(self, state, path):
            warnings.append(f"resumed {path}")

    result = train(
        data.paths, config, RunOptions(checkpoint_dir=directory, resume=True), callbacks=[Warn()]
    )
    assert result.resumed_from == paths[1]
    if how != "delete":
        assert any(
            f"checkpoint {paths[0]} is damaged" in w and "using the previous one" in w
            for w in warnings
        )
    assert np.array_equal(_params(result), _params(train(data.paths, config)))


def test_all_checkpoints_corrupt_is_an_error_and_nothing_is_overwritten(three_checkpoints):
    data, config, directory, paths = three_checkpoints
    for p in paths:
        _damage(p, "flip")
    before = {p: _read(p) for p in paths}
    with pytest.raises(CheckpointError, match="none of the 3 checkpoint"):
        train(data.paths, config, RunOptions(checkpoint_dir=directory, resume=True))
    assert {p: _read(p) for p in paths} == before
    assert sorted(os.listdir(directory)) == sorted([*map(os.path.basename, paths), "LOCK"])


def _as_version_1(path: str) -> None:
    """Rewrite a checkpoint as streamgd wrote version 1: the state's 28 fields flat."""
    from streamgd.archive import read_archive, write_archive

    meta, arrays = read_archive(path, kind="checkpoint", max_version=CHECKPOINT_VERSION)
    old_meta = {
        "step": meta["step"],
        "cursor": {k: meta[f"stream.cursor.{k}"] for k in ("epoch", "position", "offset")},
        "rng_state": meta["stream.rng"],
        "epoch_loss": meta["totals.loss"],
        "epoch_rows": meta["totals.rows"],
        "rows_trained": meta["rows_trained"],
        "history": meta["history"],
        "finished": meta["finished"],
        "config": meta["config"],
        "data": meta["data"],
        "opt_keys": meta["opt_state"],
        **meta["spec"],
    }
    old_arrays = {"params": arrays["params"]}
    for key, value in arrays.items():
        group, _, name = key.partition(".")
        if group == "spec":
            old_arrays[name] = value
        elif group == "opt_state":
            old_arrays[f"opt.{name}"] = value
    write_archive(path, kind="checkpoint", version=1, meta=old_meta, arrays=old_arrays)


def test_a_version_1_checkpoint_is_refused_saying_what_to_do(three_checkpoints):
    data, config, directory, paths = three_checkpoints
    for p in paths:
        _as_version_1(p)
    before = {p: _read(p) for p in paths}
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(paths[0])
    message = str(info.value)
    assert paths[0] in message and "version 1 checkpoint" in message
    assert "without --resume" in message and directory in message
    # resuming is refused with that message (not a silent fresh start, not a fallback) ...
    with pytest.raises(CheckpointError, match=f"{paths[0]}: a version 1 checkpoint"):
        train(data.paths, config, RunOptions(checkpoint_dir=directory, resume=True))
    assert {p: _read(p) for p in paths} == before
    # ... and a run without --resume starts afresh, replacing them once it has saved
    train(data.paths, config, RunOptions(checkpoint_dir=directory, checkpoint_every=1))
    assert all(load_checkpoint(p) for p in CheckpointManager(directory).paths())


def test_a_version_2_checkpoint_from_before_lanes_is_refused(three_checkpoints):
    """Version 2's cursor points into the epoch order of a streamgd that read one unit at a
    time; resumed in today's order it would train some rows twice and others never."""
    from streamgd.archive import read_archive, write_archive

    data, config, directory, paths = three_checkpoints
    for p in paths:
        meta, arrays = read_archive(p, kind="checkpoint", max_version=CHECKPOINT_VERSION)
        meta = {k: v for k, v in meta.items() if k not in ("format", "kind", "version")}
        write_archive(p, kind="checkpoint", version=2, meta=meta, arrays=arrays)
    with pytest.raises(CheckpointError, match=f"{paths[0]}: a version 2 checkpoint"):
        train(data.paths, config, RunOptions(checkpoint_dir=directory, resume=True))


def test_an_old_checkpoint_behind_a_corrupt_newer_one_is_refused(three_checkpoints):
    data, config, directory, paths = three_checkpoints
    _damage(paths[0], "flip")
    _as_version_1(paths[1])
    with pytest.raises(CheckpointError, match=f"{paths[1]}: a version 1 checkpoint"):
        CheckpointManager(directory).latest()


def test_failed_checkpoint_write_leaves_no_partial_file(three_checkpoints, monkeypatch):
    data, config, directory, paths = three_checkpoints
    import streamgd.archive as archive

    def broken_savez(fh, **arrays):
        fh.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(archive.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        train(
            data.paths,
            config,
            RunOptions(checkpoint_dir=directory, resume=True, checkpoint_every=1),
        )
    assert CheckpointManager(directory).paths() == paths  # same files, none added
    assert not [n for n in os.listdir(directory) if n.endswith(".tmp")]
    assert load_checkpoint(paths[0]).step == 4


def test_leftover_temp_file_is_ignored(three_checkpoints):
    data, config, directory, paths = three_checkpoints
    with open(os.path.join(directory, ".ckpt-000000000009.npz.abc.tmp"), "wb") as fh:
        fh.write(b"PK\x03\x04 killed mid-write")
    result = train(data.paths, config, RunOptions(checkpoint_dir=directory, resume=True))
    assert result.resumed_from == paths[0]


def test_keep_limits_the_number_of_checkpoints(tmp_path, synthetic):
    data = synthetic(rows=1000, row_group_size=100)
    config = FitConfig(target="y", features=tuple(data.features), epochs=2, batch_size=50)
    directory = str(tmp_path / "ck")
    train(data.paths, config, RunOptions(checkpoint_dir=directory, checkpoint_every=3, keep=2))
    assert len(CheckpointManager(directory).paths()) == 2


def test_fresh_run_supersedes_old_checkpoints_only_after_saving(tmp_path, synthetic):
    data = synthetic(rows=600, row_group_size=100)
    config = FitConfig(target="y", features=tuple(data.features), epochs=2, batch_size=100)
    directory = str(tmp_path / "ck")
    train(data.paths, config, RunOptions(checkpoint_dir=directory, keep=5))
    old = CheckpointManager(directory).paths()
    with pytest.raises(UsageError):  # a fresh run that fails before its first checkpoint
        train(data.paths, FitConfig(target="missing"), RunOptions(checkpoint_dir=directory))
    assert CheckpointManager(directory).paths() == old
    train(data.paths, config, RunOptions(checkpoint_dir=directory, checkpoint_every=1, keep=5))
    assert all(load_checkpoint(p).step <= 12 for p in CheckpointManager(directory).paths())


# -- the lock ------------------------------------------------------------------------------------
def test_second_job_on_the_same_directory_is_refused(tmp_path, synthetic):
    data = synthetic(rows=300)
    directory = str(tmp_path / "ck")
    config = FitConfig(target="y", features=tuple(data.features), epochs=1)
    with CheckpointManager(directory), pytest.raises(CheckpointError, match=f"pid {os.getpid()}"):
        train(data.paths, config, RunOptions(checkpoint_dir=directory))


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, synthetic):
    data = synthetic(rows=300)
    directory = tmp_path / "ck"
    directory.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (directory / "LOCK").write_text(str(dead.pid))
    config = FitConfig(target="y", features=tuple(data.features), epochs=1)
    assert train(data.paths, config, RunOptions(checkpoint_dir=str(directory))).trained


# -- divergence and warm start ----------------------------------------------------------------
def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, synthetic):
    data = synthetic(rows=1000, row_group_size=100)
    directory = str(tmp_path / "ck")
    good = FitConfig(target="y", features=tuple(data.features), epochs=1, batch_size=100)
    train(data.paths, good, RunOptions(checkpoint_dir=directory))
    kept = {p: _read(p) for p in CheckpointManager(directory).paths()}
    wild = FitConfig(
        **{**good.to_dict(), "lr": 1e12, "precondition": False, "schedule": "constant", "epochs": 3}
    )
    with pytest.raises(DivergedError, match="diverged at step"):
        train(data.paths, wild, RunOptions(checkpoint_dir=str(tmp_path / "other")))
    assert {p: _read(p) for p in CheckpointManager(directory).paths()} == kept


def test_warm_start_continues_from_a_model(tmp_path, synthetic):
    first = synthetic(rows=1000, row_group_size=100, seed=1)
    config = FitConfig(target="y", features=tuple(first.features), epochs=1, batch_size=100)
    model = train(first.paths, config).model
    path = str(tmp_path / "m.npz")
    model.save(path)
    # same generating process, new rows: a warm start keeps the model's statistics and step
    newer = synthetic(rows=500, row_group_size=100, seed=1)
    warm = train(newer.paths, config, RunOptions(init=path))
    assert warm.model.summary["steps"] == model.summary["steps"] + 5
    assert np.array_equal(warm.model.spec.center, model.spec.center)
    # one zero-learning-rate step leaves the weights exactly where the model had them
    still = train(
        newer.paths, FitConfig(**{**config.to_dict(), "lr": 1e-300}), RunOptions(init=path)
    )
    assert np.allclose(still.model.weights, model.weights, rtol=0, atol=1e-12)


def test_warm_start_with_other_features_says_what_differs(tmp_path, synthetic):
    data = synthetic(rows=500, features=3)
    config = FitConfig(target="y", features=("x0", "x1"), epochs=1)
    path = str(tmp_path / "m.npz")
    train(data.paths, config).model.save(path)
    other = FitConfig(target="y", features=("x0", "x2"), epochs=1)
    with pytest.raises(UsageError, match="only in the model: x1; only in this run: x2"):
        train(data.paths, other, RunOptions(init=path))


# -- processes: SIGTERM, SIGKILL, reruns --------------------------------------------------------
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamgd", *args]


def _fit_args(data, out: str, *extra: str) -> list[str]:
    return [
        "fit",
        *data.paths,
        "--target",
        "y",
        "--features",
        ",".join(data.features),
        "--batch-size",
        "16",
        "--epochs",
        "2",
        "--shuffle-buffer",
        "500",
        "-o",
        out,
        "--quiet",
        *extra,
    ]


def _weights(path: str) -> np.ndarray:
    from streamgd import load

    m = load(path)
    return np.append(m.weights, m.intercept)


@pytest.fixture
def slow_data(synthetic):
    """Enough steps (at batch 16) that a process is still training a second after start."""
    return synthetic(rows=24_000, files=3, row_group_size=1000)


def test_sigterm_checkpoints_and_exits_75_then_resume_completes(tmp_path, slow_data):
    ref = str(tmp_path / "ref.npz")
    assert subprocess.run(_cli(*_fit_args(slow_data, ref)), timeout=120).returncode == 0
    out = str(tmp_path / "m.npz")
    proc = subprocess.Popen(
        _cli(*_fit_args(slow_data, out, "--checkpoint-every", "50")),
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not glob.glob(out + ".ckpt/ckpt-*.npz") and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert "SIGTERM" in err and "--resume" in err and "Traceback" not in err
    assert not os.path.exists(out)
    state = load_checkpoint(CheckpointManager(out + ".ckpt").paths()[0])
    assert not state.finished and state.step > 0
    done = subprocess.run(_cli(*_fit_args(slow_data, out, "--resume")), timeout=120)
    assert done.returncode == 0
    assert np.array_equal(_weights(out), _weights(ref))


def test_sigkill_at_random_points_then_resume_gives_the_same_weights(tmp_path, slow_data):
    ref = str(tmp_path / "ref.npz")
    assert subprocess.run(_cli(*_fit_args(slow_data, ref)), timeout=120).returncode == 0
    out = str(tmp_path / "m.npz")
    args = _fit_args(slow_data, out, "--checkpoint-every", "7", "--resume")
    rng = np.random.default_rng(2024)
    total = 2 * 24_000 // 16
    kills = 0
    for target in sorted(rng.integers(100, total - 100, size=3)):
        # kill -9 once training has passed a random step (known from its checkpoints)
        proc = subprocess.Popen(_cli(*args))
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            names = glob.glob(out + ".ckpt/ckpt-*.npz")
            if names and max(int(n[-16:-4]) for n in names) >= target:
                proc.kill()
                kills += 1
                break
            time.sleep(0.002)
        proc.wait(timeout=60)
    assert kills >= 2, "training finished before the kills: make the data larger"
    assert subprocess.run(_cli(*args), timeout=120).returncode == 0
    assert np.array_equal(_weights(out), _weights(ref))


def test_rerun_of_a_finished_job_does_nothing(tmp_path, synthetic, capsys):
    data = synthetic(rows=500)
    out = str(tmp_path / "m.npz")
    args = ["fit", *data.paths, "--target", "y", "--epochs", "2", "-o", out, "--resume"]
    assert run(args) == 0
    before, mtime = _read(out), os.stat(out).st_mtime_ns
    ckpts = CheckpointManager(out + ".ckpt").paths()
    capsys.readouterr()
    assert run([*args, "--json"]) == 0
    captured = capsys.readouterr()
    assert '"trained": false' in captured.out
    assert "already finished" in captured.err
    assert _read(out) == before and os.stat(out).st_mtime_ns == mtime
    assert CheckpointManager(out + ".ckpt").paths() == ckpts


def test_more_epochs_on_the_command_line_report_the_new_total(tmp_path, synthetic, capsys):
    """A finished job resumed with more --epochs counts against the new total (it printed
    'epoch 3/2'), and its checkpoints record the run's epochs, as a fresh run's do."""
    data = synthetic(rows=500)
    out = str(tmp_path / "m.npz")
    args = ["fit", *data.paths, "--target", "y", "-o", out, "--resume"]
    assert run([*args, "--epochs", "2"]) == 0
    capsys.readouterr()
    assert run([*args, "--epochs", "4"]) == 0
    err = capsys.readouterr().err
    assert "epoch 3/4:" in err and "epoch 4/4:" in err and "/2:" not in err
    latest = CheckpointManager(out + ".ckpt").paths()[0]
    assert load_checkpoint(latest).config["epochs"] == 4
