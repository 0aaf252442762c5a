"""--continual: a job over growing paths trains only on new files, from its checkpoint's state,
scores the model on them first, and keeps its books exactly across interruptions."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest
from conftest import Interrupt, StopAt
from integration_support import run_cli

import streamgd
from streamgd.config import FitConfig, RunOptions
from streamgd.errors import CheckpointError, DataError, UsageError
from streamgd.training import train
from streamgd.training.checkpoint import CheckpointManager, load_checkpoint
from streamgd.training.continual import restandardize
from streamgd.training.continuation import continue_state, start_state
from streamgd.training.loop import model_from_state


@pytest.fixture
def parts(synthetic):
    """Six files of 300 rows (row groups of 100), the data of six days."""
    return synthetic(rows=1800, files=6, row_group_size=100)


def _config(data, **kw) -> FitConfig:
    base = {"target": "y", "features": tuple(data.features), "epochs": 2, "batch_size": 50}
    return FitConfig(**(base | kw))


def _run(paths, config, directory, **options):
    return train(
        list(paths), config, RunOptions(checkpoint_dir=str(directory), continual=True, **options)
    )


def _params(result) -> np.ndarray:
    return np.append(result.model.weights, result.model.intercept)


def _latest(directory):
    return load_checkpoint(CheckpointManager(str(directory)).paths()[0])


def test_only_new_files_are_trained_and_nothing_new_does_nothing(tmp_path, parts):
    config, ck = _config(parts), tmp_path / "ck"
    first = _run(parts.paths[:2], config, ck)
    assert first.trained and first.continual["increment"] == 0
    assert first.continual["rows"] == 600 and first.continual["pre_score"] is None
    second = _run(parts.paths[:3], config, ck)
    report = second.continual
    assert report["increment"] == 1 and report["files"] == [parts.paths[2]]
    assert report["rows"] == 300 and report["rows_trained"] == 600  # 2 passes of the new rows
    assert second.state.rows_trained == first.state.rows_trained + 600
    ledger = second.state.continual.ledger
    assert [e["path"] for e in ledger] == sorted(parts.paths[:3])
    assert all(e["digest"] and e["rows"] == 300 for e in ledger)
    assert [e["increment"] for e in ledger] == [0, 0, 1]
    again = _run(parts.paths[:3], config, ck)
    assert not again.trained and again.continual["new_files"] == 0
    assert np.array_equal(_params(again), _params(second))
    assert len(_latest(ck).continual.runs) == 2


def test_an_increment_continues_the_state_as_continue_state_does(tmp_path, parts):
    """The oracle: the library's one-pass continuation of the first run's state over the new
    file, by hand; one pass each, so both take the same steps."""
    config, ck = _config(parts, epochs=1, optimizer="adam"), tmp_path / "ck"
    _run(parts.paths[:2], config, ck)
    state = _latest(ck)
    result = _run(parts.paths[:3], config, ck)
    expected = continue_state(state, parts.paths[2], config)
    assert np.array_equal(result.state.params, expected.params)
    assert result.state.step == expected.step
    for name, value in expected.opt_state.items():
        assert np.array_equal(result.state.opt_state[name], value)


def test_the_pre_training_score_is_evaluate_of_the_model_before(tmp_path, parts):
    config, ck = _config(parts), tmp_path / "ck"
    before = _run(parts.paths[:2], config, ck).model
    result = _run(parts.paths[:4], config, ck)
    expected = streamgd.evaluate(before, sorted(parts.paths[2:4]))
    score = result.continual["pre_score"]
    for key in ("rows", "mse", "rmse", "mae", "r2", "loss"):
        assert score[key] == pytest.approx(expected[key], rel=1e-12), key
    assert result.model.summary["increments"][1]["pre_score"] == score


def test_the_order_of_new_files_does_not_depend_on_their_listing(tmp_path, parts):
    config = _config(parts)
    listed = [parts.paths[:2] + parts.paths[2:5], parts.paths[:2] + parts.paths[4:1:-1]]
    results, orders = [], []
    for k, paths in enumerate(listed):
        ck = tmp_path / f"ck{k}"
        _run(paths[:2][::-1] if k else paths[:2], config, ck)
        results.append(_run(paths, config, ck))
        orders.append(results[-1].continual["files"])
    assert orders[0] == orders[1]
    assert np.array_equal(_params(results[0]), _params(results[1]))
    # the order is drawn, not the sorted one, for some seed
    drawn = set()
    for seed in range(4):
        ck = tmp_path / f"seed{seed}"
        _run(parts.paths[:2], _config(parts, seed=seed, epochs=1), ck)
        drawn.add(
            tuple(_run(listed[0], _config(parts, seed=seed, epochs=1), ck).continual["files"])
        )
    assert len(drawn) > 1


@pytest.mark.parametrize("stop_in", ["first", "increment"])
def test_a_run_killed_mid_increment_and_rerun_ends_bit_identical(tmp_path, parts, stop_in):
    config = _config(parts, optimizer="momentum", shuffle_buffer=120)
    whole = tmp_path / "whole"
    _run(parts.paths[:2], config, whole)
    expected = _run(parts.paths[:4], config, whole)
    cut = tmp_path / "cut"
    options = {"checkpoint_every": 1}
    if stop_in == "first":
        with pytest.raises(Interrupt):
            train(
                parts.paths[:2],
                config,
                RunOptions(checkpoint_dir=str(cut), continual=True, **options),
                callbacks=[StopAt(9)],
            )
        assert _latest(cut).continual.pending["increment"] == 0
        _run(parts.paths[:2], config, cut, **options)
    else:
        _run(parts.paths[:2], config, cut, **options)
    steps = _latest(cut).step
    with pytest.raises(Interrupt):
        train(
            parts.paths[:4],
            config,
            RunOptions(checkpoint_dir=str(cut), continual=True, **options),
            callbacks=[StopAt(steps + 7)],
        )
    assert _latest(cut).continual.pending["increment"] == 1
    resumed = _run(parts.paths[:4], config, cut, **options)
    assert resumed.resumed_from is not None
    assert np.array_equal(_params(resumed), _params(expected))
    assert resumed.model.history == expected.model.history
    assert resumed.state.continual.runs == expected.state.continual.runs
    assert resumed.state.continual.ledger == expected.state.continual.ledger


def test_a_changed_file_is_an_error_unless_retrained(tmp_path, parts, synthetic):
    config, ck = _config(parts), tmp_path / "ck"
    _run(parts.paths[:2], config, ck)
    other = synthetic(rows=600, files=2, row_group_size=100, seed=5)
    shutil.copy(other.paths[0], parts.paths[1])  # the partition is rewritten upstream
    with pytest.raises(DataError, match="changed since increment 0") as info:
        _run(parts.paths[:2], config, ck)
    assert parts.paths[1] in str(info.value)
    result = _run(parts.paths[:2], config, ck, retrain_changed=True)
    assert result.continual["files"] == [parts.paths[1]]
    assert result.continual["changed"] == [parts.paths[1]]
    assert _run(parts.paths[:2], config, ck).continual["new_files"] == 0


def test_a_removed_file_is_an_error_unless_ignored(tmp_path, parts):
    config, ck = _config(parts), tmp_path / "ck"
    _run(parts.paths[:3], config, ck)
    with pytest.raises(DataError, match="no longer among the input files") as info:
        _run(parts.paths[1:4], config, ck)
    assert parts.paths[0] in str(info.value)
    result = _run(parts.paths[1:4], config, ck, ignore_removed=True)
    assert result.continual["files"] == [parts.paths[3]]
    assert result.continual["removed"] == [parts.paths[0]]
    assert parts.paths[0] not in {e["path"] for e in result.state.continual.ledger}


def test_two_runs_at_once_are_refused_by_the_lock(tmp_path, parts):
    config, ck = _config(parts), tmp_path / "ck"
    _run(parts.paths[:2], config, ck)
    with CheckpointManager(str(ck)), pytest.raises(CheckpointError, match=f"pid {os.getpid()}"):
        _run(parts.paths[:3], config, ck)


def test_a_checkpoint_of_an_ordinary_run_is_refused(tmp_path, parts):
    config, ck = _config(parts), tmp_path / "ck"
    train(parts.paths[:2], config, RunOptions(checkpoint_dir=str(ck)))
    with pytest.raises(CheckpointError, match="without --continual"):
        _run(parts.paths[:3], config, ck)


def test_continual_needs_files(tmp_path, parts):
    table = {"x0": [1.0, 2.0], "x1": [0.0, 1.0], "x2": [3.0, 1.0], "y": [1.0, 0.0]}
    with pytest.raises(UsageError, match="ledger of files"):
        train(
            pa.table(table),
            _config(parts),
            RunOptions(checkpoint_dir=str(tmp_path / "ck"), continual=True),
        )


def test_continual_needs_a_checkpoint_directory():
    with pytest.raises(UsageError, match="--continual"):
        RunOptions(continual=True)
    with pytest.raises(UsageError, match="add --continual"):
        RunOptions(checkpoint_dir="x", replay=10)


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_refreshed_statistics_leave_predictions_unchanged(tmp_path, synthetic, loss):
    task = "regression" if loss == "squared" else "binary"
    data = synthetic(rows=1200, files=2, row_group_size=100, task=task)
    config = _config(data, loss=loss)
    result = _run(data.paths[:1], config, tmp_path / "ck")
    other = synthetic(rows=600, files=1, task=task, seed=3, scales=True)
    fresh = start_state(other.paths[0], config)
    assert not np.allclose(fresh.spec.scale, result.state.spec.scale)
    moved = restandardize(result.state, fresh.spec, config)
    assert np.array_equal(moved.spec.scale, fresh.spec.scale)
    x = other.x
    before = model_from_state(result.state, config).predict(x)
    after = model_from_state(moved, config).predict(x)
    np.testing.assert_allclose(after, before, rtol=1e-10, atol=1e-12)


def test_refresh_stats_trains_the_increment_in_the_new_scale(tmp_path, parts):
    config, ck = _config(parts), tmp_path / "ck"
    first = _run(parts.paths[:1], config, ck).state
    result = _run(parts.paths[:2], config, ck, refresh_stats=True)
    fresh = start_state(parts.paths[1], config)
    assert np.array_equal(result.state.spec.scale, fresh.spec.scale)
    assert not np.array_equal(result.state.spec.scale, first.spec.scale)
    assert np.array_equal(result.state.spec.fill, first.spec.fill)  # imputation stays


# -- the command line -------------------------------------------------------------------------
def test_cli_reports_keeps_models_and_shows_increments(tmp_path, parts, capsys):
    out = str(tmp_path / "m.npz")
    args = ["fit", "--target", "y", "--features", ",".join(parts.features), "--continual"]
    args += ["-o", out, "--keep-models", "2", "--epochs", "1", "-q"]
    for day in range(1, 5):
        code, stdout, err = run_cli(capsys, *args, *parts.paths[:day], "--json")
        assert code == 0, err
        report = json.loads(stdout)["continual"]
        assert report["increment"] == day - 1 and report["new_files"] == 1
    kept = sorted(n for n in os.listdir(tmp_path) if ".inc-" in n)
    assert kept == ["m.inc-000002.npz", "m.inc-000003.npz"]
    with open(out, "rb") as a, open(tmp_path / kept[-1], "rb") as b:
        assert a.read() == b.read()
    assert streamgd.load(str(tmp_path / kept[0])).summary["increments"][-1]["increment"] == 2
    code, stdout, err = run_cli(capsys, *args, *parts.paths[:4], "--json")
    assert code == 0 and json.loads(stdout)["continual"]["new_files"] == 0
    code, stdout, _ = run_cli(capsys, *args, *parts.paths[:4], "--log-format", "json")
    events = [json.loads(line)["event"] for line in _.splitlines()]
    assert "increment" in events
    metrics = str(tmp_path / "metrics.json")
    code, _, err = run_cli(capsys, *args, *parts.paths[:5], "--metrics-out", metrics)
    assert code == 0, err
    with open(metrics) as fh:
        written = json.load(fh)["summary"]
    assert written["continual"]["increment"] == 4 and len(written["increments"]) == 5
    code, stdout, _ = run_cli(capsys, "inspect", out)
    assert code == 0 and "mse before" in stdout
    code, stdout, _ = run_cli(capsys, "inspect", out + ".ckpt", "--json")
    assert [r["increment"] for r in json.loads(stdout)["increments"]] == [0, 1, 2, 3, 4]
    code, stdout, _ = run_cli(capsys, "inspect", out, "--json")
    assert [r["increment"] for r in json.loads(stdout)["summary"]["increments"]] == [0, 1, 2, 3, 4]


def test_cli_changed_file_is_one_line_exit_1(tmp_path, parts, synthetic, capsys):
    out = str(tmp_path / "m.npz")
    args = ["fit", "--target", "y", "--continual", "-o", out, "-q", *parts.paths[:2]]
    assert run_cli(capsys, *args)[0] == 0
    shutil.copy(synthetic(rows=300, files=1, seed=9).paths[0], parts.paths[0])
    code, _, err = run_cli(capsys, *args)
    assert code == 1 and parts.paths[0] in err and "--retrain-changed" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "fit", "--target", "y", "--keep-models", "2", parts.paths[0])
    assert code == 2 and "--keep-models" in err


# -- replay -----------------------------------------------------------------------------------
def test_replay_keeps_a_bounded_reservoir_and_mixes_it_in(tmp_path, parts):
    config, ck = _config(parts, epochs=1), tmp_path / "ck"
    first = _run(parts.paths[:2], config, ck, replay=200)
    books = first.state.continual
    assert books.replay.shape == (200, len(parts.features) + 1) and books.replay_seen == 600
    rows = {tuple(r) for r in np.c_[parts.x[:600], parts.y[:600]]}
    assert all(tuple(r) in rows for r in books.replay)  # rows of the files trained on
    second = _run(parts.paths[:3], config, ck, replay=200)
    assert second.continual["rows"] == 300 and second.continual["replayed"] == 200
    assert second.model.history[-1]["rows"] == 500
    assert second.state.continual.replay_seen == 900
    again = tmp_path / "again"
    _run(parts.paths[:2], config, again, replay=200)
    same = _run(parts.paths[:3], config, again, replay=200)
    assert np.array_equal(same.state.continual.replay, second.state.continual.replay)
    assert np.array_equal(_params(same), _params(second))


def test_replay_resumes_exactly(tmp_path, parts):
    config = _config(parts, shuffle_buffer=120)
    whole = tmp_path / "whole"
    _run(parts.paths[:2], config, whole, replay=150)
    expected = _run(parts.paths[:4], config, whole, replay=150)
    cut = tmp_path / "cut"
    _run(parts.paths[:2], config, cut, replay=150, checkpoint_every=1)
    steps = _latest(cut).step
    with pytest.raises(Interrupt):
        train(
            parts.paths[:4],
            config,
            RunOptions(checkpoint_dir=str(cut), continual=True, replay=150, checkpoint_every=1),
            callbacks=[StopAt(steps + 5)],
        )
    resumed = _run(parts.paths[:4], config, cut, replay=150, checkpoint_every=1)
    assert np.array_equal(_params(resumed), _params(expected))
    assert np.array_equal(resumed.state.continual.replay, expected.state.continual.replay)


# -- a process killed for real ----------------------------------------------------------------
def _job(data, out: str, files: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamgd",
        "fit",
        *data.paths[:files],
        "--target",
        "y",
        "--features",
        ",".join(data.features),
        "--batch-size",
        "16",
        "--shuffle-buffer",
        "500",
        "--continual",
        "-o",
        out,
        "-q",
        *extra,
    ]


def test_sigkill_mid_increment_then_the_next_run_ends_bit_identical(tmp_path, synthetic):
    data = synthetic(rows=16_000, files=4, row_group_size=1000)
    ref, out = str(tmp_path / "ref.npz"), str(tmp_path / "m.npz")
    for path in (ref, out):
        assert subprocess.run(_job(data, path, 1), timeout=120).returncode == 0
    assert subprocess.run(_job(data, ref, 4), timeout=120).returncode == 0
    first_steps = _latest(out + ".ckpt").step
    args = _job(data, out, 4, "--checkpoint-every", "7")
    proc = subprocess.Popen(args)
    deadline = time.monotonic() + 60
    killed = False
    while proc.poll() is None and time.monotonic() < deadline:
        names = glob.glob(out + ".ckpt/ckpt-*.npz")
        if names and max(int(n[-16:-4]) for n in names) >= first_steps + 300:
            proc.kill()
            killed = True
            break
        time.sleep(0.002)
    proc.wait(timeout=60)
    assert killed, "the increment finished before the kill: make the data larger"
    assert _latest(out + ".ckpt").continual.pending["increment"] == 1
    assert subprocess.run(args, timeout=120).returncode == 0
    with open(ref, "rb") as a, open(out, "rb") as b:
        assert a.read() == b.read()


def test_the_run_that_finishes_a_cut_increment_goes_on_to_newer_files(tmp_path, parts):
    config = _config(parts)
    whole = tmp_path / "whole"
    for day in (2, 3, 4):
        expected = _run(parts.paths[:day], config, whole)
    cut = tmp_path / "cut"
    _run(parts.paths[:2], config, cut)
    steps = _latest(cut).step
    with pytest.raises(Interrupt):
        train(
            parts.paths[:3],
            config,
            RunOptions(checkpoint_dir=str(cut), continual=True, checkpoint_every=1),
            callbacks=[StopAt(steps + 3)],
        )
    result = _run(parts.paths[:4], config, cut)
    assert [r["files"] for r in result.state.continual.runs][1:] == [
        [parts.paths[2]],
        [parts.paths[3]],
    ]
    assert result.continual["increment"] == 2
    assert np.array_equal(_params(result), _params(expected))
