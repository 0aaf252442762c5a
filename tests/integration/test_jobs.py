"""Scheduled batch jobs: TOML config files, environment variables, JSON logs, exit codes and
idempotent reruns."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import streamgd
from streamgd.cli import run
from streamgd.errors import (
    EXIT_DATA,
    EXIT_DIVERGED,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_PREEMPTED,
    EXIT_USAGE,
)


@pytest.fixture
def data(synthetic):
    return synthetic(rows=1200, files=2, row_group_size=200)


def _toml(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines()]


def test_config_file_and_command_line_give_identical_weights(tmp_path, data, capsys):
    paths = ", ".join(json.dumps(p) for p in data.paths)
    job = _toml(
        tmp_path / "job.toml",
        f'paths = [{paths}]\ntarget = "y"\nfeatures = ["x0", "x2"]\nepochs = 3\n'
        'batch-size = 64\nseed = 7\noptimizer = "momentum"\noutput = '
        f"{json.dumps(str(tmp_path / 'a.npz'))}\nquiet = true\n",
    )
    assert run(["fit", "--config", job]) == EXIT_OK
    cli = [
        "fit",
        *data.paths,
        "--target",
        "y",
        "--features",
        "x0,x2",
        "--epochs",
        "3",
        "--batch-size",
        "64",
        "--seed",
        "7",
        "--optimizer",
        "momentum",
        "-o",
        str(tmp_path / "b.npz"),
        "--quiet",
    ]
    assert run(cli) == EXIT_OK
    a, b = streamgd.load(str(tmp_path / "a.npz")), streamgd.load(str(tmp_path / "b.npz"))
    assert a.features == ("x0", "x2") and a.summary["epochs"] == 3
    assert np.array_equal(a.weights, b.weights) and a.intercept == b.intercept


def _effective(capsys, args, env=None) -> dict:
    import tomllib

    old = dict(os.environ)
    os.environ.update(env or {})
    try:
        assert run(["fit", *args, "--print-config"]) == EXIT_OK
    finally:
        os.environ.clear()
        os.environ.update(old)
    return tomllib.loads(capsys.readouterr().out)


def test_precedence_command_line_over_environment_over_file_over_defaults(tmp_path, capsys):
    job = _toml(tmp_path / "job.toml", 'target = "y"\nepochs = 2\nbatch-size = 10\nseed = 3\n')
    env = {"STREAMGD_EPOCHS": "4", "STREAMGD_BATCH_SIZE": "20"}
    got = _effective(capsys, ["x.parquet", "--config", job, "--epochs", "9"], env)
    assert got["epochs"] == 9  # command line beats environment and file
    assert got["batch-size"] == 20  # environment beats file
    assert got["seed"] == 3  # file beats default
    assert got["shuffle-buffer"] == streamgd.FitConfig(target="y").shuffle_buffer  # default
    assert got["paths"] == ["x.parquet"] and got["target"] == "y"


def test_print_config_output_is_a_config_file_that_reproduces_the_settings(tmp_path, capsys):
    first = _effective(
        capsys, ["a.parquet", "--target", "y", "--l2", "0.5", "--no-shuffle", "--features", "u,v"]
    )
    text = "\n".join(f"{k} = {json.dumps(v)}" for k, v in first.items())
    again = _effective(capsys, ["--config", _toml(tmp_path / "round.toml", text)])
    assert again == first
    assert first["shuffle"] is False and first["features"] == ["u", "v"] and first["l2"] == 0.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('target = "y"\nbogus = 1\n', "unknown key 'bogus'"),
        ('target = "y"\nepochs = "many"\n', "key 'epochs'"),
        ('target = "y"\nshuffle = "yes"\n', "key 'shuffle' must be true or false"),
        ('target = "y"\nfeatures = 3\n', "key 'features' must be a list"),
        ('target = "y"\nloss = "cubic"\n', "key 'loss'"),
        ("target = \n", "not valid TOML"),
    ],
)
def test_bad_config_files_name_the_key(tmp_path, capsys, text, message):
    job = _toml(tmp_path / "job.toml", text)
    assert run(["fit", "x.parquet", "--config", job]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and str(job) in err and "Traceback" not in err


def test_json_log_events_in_order_and_nothing_else_on_stderr(tmp_path, data, capsys):
    out = str(tmp_path / "m.npz")
    metrics = str(tmp_path / "metrics.json")
    args = [
        "fit",
        *data.paths,
        "--target",
        "y",
        "--epochs",
        "2",
        "--batch-size",
        "100",
        "-o",
        out,
        "--log-format",
        "json",
        "--metrics-out",
        metrics,
    ]
    assert run(args) == EXIT_OK
    captured = capsys.readouterr()
    events = _events(captured.err)  # every line parses
    kinds = [e["event"] for e in events]
    assert kinds == ["start", "statistics", "epoch", "checkpoint", "epoch", "checkpoint", "finish"]
    assert events[0]["settings"]["batch_size"] == 100 and events[0]["paths"] == data.paths
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2]
    assert all(e["rows_per_s"] > 0 and e["loss"] > 0 for e in events if e["event"] == "epoch")
    assert events[-1]["exit_code"] == 0 and events[-1]["trained"] is True
    assert all("time" in e for e in events)
    assert captured.out == ""
    with open(metrics) as fh:
        report = json.load(fh)
    assert report["summary"]["epochs"] == 2 and len(report["history"]) == 2
    assert report["summary"]["final_loss"] == report["history"][-1]["loss"]

    # a rerun with --resume does no training: no epoch events, finish says so
    assert run([*args, "--resume"]) == EXIT_OK
    rerun = _events(capsys.readouterr().err)
    assert [e["event"] for e in rerun] == ["start", "warning", "finish"]
    assert rerun[-1]["trained"] is False


def test_json_log_reports_errors_as_events(tmp_path, capsys):
    assert (
        run(["fit", str(tmp_path / "none.parquet"), "--target", "y", "--log-format", "json"])
        == EXIT_USAGE
    )
    events = _events(capsys.readouterr().err)
    assert [e["event"] for e in events] == ["start", "error"]
    assert events[-1]["exit_code"] == EXIT_USAGE and "none.parquet" in events[-1]["message"]
    # a usage error found while parsing the options is an event too
    assert (
        run(["fit", "x.parquet", "--target", "y", "--batch-size", "0", "--log-format", "json"])
        == EXIT_USAGE
    )
    (event,) = _events(capsys.readouterr().err)
    assert event["event"] == "error" and "--batch-size" in event["message"]


# -- every exit code from the situation it names -------------------------------------------
def test_exit_code_data_error(tmp_path, capsys):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    assert run(["fit", str(bad), "--target", "y"]) == EXIT_DATA


def test_exit_code_diverged(data, capsys):
    args = [
        "fit",
        *data.paths,
        "--target",
        "y",
        "--lr",
        "1e200",
        "--no-precondition",
        "--schedule",
        "constant",
        "--quiet",
    ]
    assert run(args) == EXIT_DIVERGED
    assert "diverged" in capsys.readouterr().err


def test_exit_code_internal_error(data, capsys, monkeypatch):
    import importlib

    training = importlib.import_module("streamgd.training")  # the package: its name is shadowed

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(training, "train", broken)
    assert run(["fit", *data.paths, "--target", "y"]) == EXIT_INTERNAL
    assert "internal error" in capsys.readouterr().err


def test_exit_code_preempted_in_a_subprocess(tmp_path, synthetic):
    big = synthetic(rows=40_000, files=2, row_group_size=2000)
    out = str(tmp_path / "m.npz")
    env = {**os.environ, "STREAMGD_BATCH_SIZE": "8", "STREAMGD_LOG_FORMAT": "json"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamgd",
            "fit",
            *big.paths,
            "--target",
            "y",
            "-o",
            out,
            "--checkpoint-every",
            "100",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    for line in proc.stderr:  # wait until training is under way
        if json.loads(line)["event"] == "checkpoint":
            proc.terminate()
            break
    rest = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == EXIT_PREEMPTED
    last = json.loads(rest.splitlines()[-1])
    assert last["event"] == "error" and last["exit_code"] == EXIT_PREEMPTED
