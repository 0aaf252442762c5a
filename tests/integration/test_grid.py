"""Grids of models over one stream: each model equals the same configuration trained alone
(the oracle: streamgd.fit with the same seed), the selection picks the leaderboard's best,
and settings that decide the stream are refused when listed."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from integration_support import run_cli

import streamgd
from streamgd.errors import UsageError
from streamgd.scoring import evaluate
from streamgd.search import expand_grid, fit_grid


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(3)
    rows = 3000
    x = rng.normal(size=(rows, 4))
    y = x @ np.array([1.5, -2.0, 0.0, 0.5]) + 0.3 * rng.normal(size=rows) + 2.0
    label = (y > 2.0).astype(np.float64)
    path = tmp_path_factory.mktemp("grid") / "d.parquet"
    cols = {f"x{j}": x[:, j] for j in range(4)}
    pq.write_table(pa.table({**cols, "y": y, "label": label}), path, row_group_size=500)
    return str(path)


BASE = dict(epochs=3, batch_size=64, holdout=0.2, seed=7, shuffle_buffer=512)


def _same(a, b):
    assert np.array_equal(a.weights, b.weights)
    assert np.array_equal(np.asarray(a.intercept), np.asarray(b.intercept))
    assert a.history == b.history
    assert a.summary == b.summary


@pytest.mark.parametrize(
    "grid",
    [
        dict(target="y", lr=[0.3, 0.03], l2=[0.0, 1e-2], l1=[0.0, 1e-3]),
        dict(target="y", optimizer=["sgd", "momentum", "adam"], momentum=[0.5, 0.9], lr=0.05),
        dict(target="y", loss="huber", huber_delta=[0.5, 2.0], schedule=["constant", "invscaling"]),
        dict(target="label", loss="logistic", lr=[0.5, 0.05], l2="0,1e-3"),
        dict(target="y", loss="quantile", quantile=[0.1, 0.5, 0.9], lr=0.1),
    ],
    ids=["lr-l2-l1", "optimizers", "huber-schedules", "logistic", "quantile"],
)
def test_every_model_equals_the_same_config_trained_alone(data, grid):
    settings = {**BASE, **grid}
    result = fit_grid(data, quiet=True, **settings)
    configs, labels = expand_grid({k: v for k, v in settings.items() if k != "target"})
    assert len(result.models) == len(configs) > 1
    assert result.labels == labels
    for model, label in zip(result.models, labels, strict=True):
        alone = streamgd.fit(data, quiet=True, **{**settings, **label})
        _same(model, alone)  # bit-identical: same functions on the same batches


def test_patience_per_model_keeps_its_best_weights(data):
    settings = {**BASE, "target": "y", "epochs": 8, "patience": [1, 3], "lr": [2.0, 0.01]}
    result = fit_grid(data, quiet=True, **settings)
    for model, label in zip(result.models, result.labels, strict=True):
        _same(model, streamgd.fit(data, quiet=True, **{**settings, **label}))
    assert {m.summary["stop_reason"] for m in result.models} >= {"patience"}


def test_selected_model_is_the_best_leaderboard_entry(data, tmp_path):
    result = fit_grid(data, quiet=True, target="y", l2=[0.0, 0.3, 3.0], lr=0.1, **BASE)
    board = result.leaderboard
    losses = [row["val_loss"] for row in board]
    assert losses == sorted(losses) and [r["rank"] for r in board] == [1, 2, 3]
    best = result.models[board[0]["model"]]
    assert result.best is best
    # the oracle: scoring every model on the held-out rows again
    scores = [m.history[-1]["val_loss"] for m in result.models]
    assert result.best_index == int(np.argmin(scores))
    assert result.best.config["l2"] == 0.0  # clean linear data: no regularisation wins
    # a larger-is-better metric ranks the other way
    r2 = fit_grid(data, quiet=True, target="y", l2=[3.0, 0.0], select_metric="r2", **BASE)
    assert r2.leaderboard[0]["val_r2"] >= r2.leaderboard[1]["val_r2"]
    assert r2.best.config["l2"] == 0.0
    result.write_leaderboard(str(tmp_path / "board.json"))
    assert json.loads((tmp_path / "board.json").read_text())[0]["model"] == result.best_index
    result.write_leaderboard(str(tmp_path / "board.csv"))
    lines = (tmp_path / "board.csv").read_text().splitlines()
    assert lines[0].startswith("rank,model,l2") and len(lines) == 4
    paths = result.save_all(str(tmp_path / "all"))
    again = streamgd.load(paths[result.best_index])
    assert np.array_equal(again.weights, result.best.weights)
    # the written model scores as its leaderboard row says on the validation rows it saw
    assert np.isfinite(evaluate(again, data)["loss"])


def test_a_diverging_model_does_not_stop_the_grid(data):
    result = fit_grid(data, quiet=True, target="y", lr=[1e6, 0.1], schedule="constant", **BASE)
    reasons = [m.summary["stop_reason"] for m in result.models]
    assert reasons == ["diverged", "epochs"]
    assert result.best_index == 1 and result.leaderboard[-1]["model"] == 0
    assert np.all(np.isfinite(result.models[0].weights))


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(batch_size=[32, 64], lr=[0.1, 0.2]), "--batch-size takes one value"),
        (dict(lr=[0.1, 0.1]), "listed twice"),
        (dict(lr="0.1,x"), "--lr must be a number"),
    ],
)
def test_grid_errors(settings, message):
    with pytest.raises(UsageError, match=message):
        expand_grid(settings)


def test_grid_needs_validation_rows(data, tmp_path):
    with pytest.raises(UsageError, match="validation rows"):
        fit_grid(data, quiet=True, target="y", lr=[0.1, 0.2], epochs=1)
    with pytest.raises(UsageError, match="--select-metric must be loss or one of mse"):
        fit_grid(data, quiet=True, target="y", lr=[0.1, 0.2], holdout=0.2, select_metric="auc")
    with pytest.raises(UsageError, match="--cluster"):
        fit_grid(data, quiet=True, target="y", lr=[0.1, 0.2], holdout=0.2, cluster="x:1")
    with pytest.raises(UsageError, match="task rounds: leave out --round-protocol peer"):
        fit_grid(
            data, quiet=True, target="y", lr=[0.1, 0.2], holdout=0.2, cluster="x:1",
            round_protocol="peer",
        )  # fmt: skip
    with pytest.raises(UsageError, match="not a continual job"):
        fit_grid(
            data,
            quiet=True,
            target="y",
            lr=[0.1, 0.2],
            holdout=0.2,
            continual=True,
            checkpoint_dir=str(tmp_path),
        )


def test_command_line_grid_writes_the_best_model_and_leaderboard(data, tmp_path, capsys):
    out, every = tmp_path / "m.sgd", tmp_path / "all"
    args = ["fit", data, "--target", "y", "--lr", "0.3,0.03", "--l2", "0,1"]
    args += ["--epochs", "2", "--holdout", "0.2", "--batch-size", "64", "-o", out]
    code, _, err = run_cli(
        capsys, *args, "--all-models", every, "--metrics-out", tmp_path / "x.json"
    )
    assert code == 0, err
    board = json.loads((tmp_path / "m.leaderboard.json").read_text())
    assert [row["model"] for row in board] == sorted(
        range(4), key=lambda i: [r["val_loss"] for r in board if r["model"] == i][0]
    )
    best = streamgd.load(str(out))
    chosen = {k: board[0][k] for k in ("lr", "l2")}
    alone = streamgd.fit(
        data, quiet=True, target="y", epochs=2, holdout=0.2, batch_size=64, **chosen
    )
    assert np.array_equal(best.weights, alone.weights)
    assert np.array_equal(
        streamgd.load(str(every / f"model-{board[0]['model']:03d}.sgd")).weights, best.weights
    )
    assert (tmp_path / "m.leaderboard.csv").read_text().startswith("rank,model,")
    assert json.loads((tmp_path / "x.json").read_text())["summary"]["leaderboard"] == board
    code, shown, _ = run_cli(capsys, "inspect", out)
    assert code == 0 and "leaderboard (4 models" in shown
    code, _, err = run_cli(capsys, "fit", data, "--target", "y", "--lr", "0.1,0.2", "--epochs", "1")
    assert code == 2 and "validation rows" in err
    code, _, err = run_cli(capsys, "fit", data, "--target", "y", "--select-metric", "r2")
    assert code == 2 and "models of a grid" in err
    job = tmp_path / "job.toml"
    job.write_text(
        f'paths = ["{data}"]\ntarget = "y"\nl2 = [0.0, 1.0]\nholdout = 0.2\nepochs = 1\n'
    )
    code, printed, err = run_cli(capsys, "fit", "--config", job, "--json", "-q")
    assert code == 0, err
    assert json.loads(printed)["models"] == 2


def test_a_grid_resumed_from_any_checkpoint_ends_bit_identical(data, tmp_path):
    import shutil

    settings = dict(
        target="y",
        lr=[0.3, 0.03],
        optimizer=["sgd", "adam"],
        epochs=2,
        batch_size=128,
        holdout=0.2,
        seed=5,
        shuffle_buffer=256,
        patience=[1, 5],
        quiet=True,
    )
    full = tmp_path / "full"
    whole = fit_grid(data, checkpoint_dir=str(full), checkpoint_every=4, keep=1000, **settings)
    saved = sorted(full.glob("grid-*.npz"))
    assert len(saved) > 4
    for picked in (saved[1], saved[len(saved) // 2], saved[-2]):  # mid-epoch and epoch ends
        again = tmp_path / f"again-{picked.stem}"
        again.mkdir()
        shutil.copy(picked, again / picked.name)
        resumed = fit_grid(data, checkpoint_dir=str(again), resume=True, **settings)
        for a, b in zip(whole.models, resumed.models, strict=True):
            _same(a, b)
        assert resumed.leaderboard == whole.leaderboard
    with pytest.raises(UsageError, match="another grid"):
        fit_grid(data, checkpoint_dir=str(full), resume=True, **{**settings, "lr": [0.3]})


def test_softmax_categorical_and_normal_solver_grids_on_a_frame_equal_their_runs_alone():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(1)
    n = 1500
    x = rng.normal(size=(n, 3))
    logits = x @ rng.normal(size=(3, 3)) + rng.normal(size=(n, 3))
    frame = pd.DataFrame({f"x{j}": x[:, j] for j in range(3)})
    frame["c"] = np.array(list("pqrs"))[rng.integers(0, 4, n)]
    frame["k"] = np.array(["a", "b", "c"])[np.argmax(logits, axis=1)]
    frame["y"] = x @ [1.0, 2.0, 3.0] + rng.normal(size=n)
    cases = [
        (dict(target="k", loss="softmax", features=["x0", "x1", "x2"]), dict(l2=[0, 1e-2])),
        (dict(target="y", categorical=["c"]), dict(optimizer=["adam", "adamw"], l2=[0, 0.1])),
        (dict(target="y", solver="normal", features=["x0", "x1", "x2"]), dict(l2=[0, 0.1, 10])),
    ]
    for fixed, grid in cases:
        settings = dict(holdout=0.2, epochs=2, batch_size=128, quiet=True, **fixed)
        result = fit_grid(frame, **settings, **grid)
        for model, label in zip(result.models, result.labels, strict=True):
            alone = streamgd.fit(frame, **settings, **label)
            _same(model, alone)
            if model.code_weights is not None:
                assert np.array_equal(model.code_weights, alone.code_weights)


def test_a_grid_stopped_by_sigterm_checkpoints_and_resumes_bit_identically(data, tmp_path):
    import glob
    import signal
    import subprocess
    import sys
    import time

    from streamgd.errors import EXIT_PREEMPTED

    args = [data, "--target", "y", "--lr", "0.3,0.1,0.03,0.01", "--l2", "0,1e-3", "-q"]
    args += ["--epochs", "4", "--batch-size", "8", "--holdout", "0.2", "--checkpoint-every", "50"]
    killed, whole = tmp_path / "killed.sgd", tmp_path / "whole.sgd"
    cmd = [sys.executable, "-m", "streamgd", "fit", *args]
    proc = subprocess.Popen([*cmd, "-o", str(killed)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not glob.glob(str(tmp_path / "killed.sgd.ckpt" / "grid-*.npz")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, err
    assert "rerun with --resume" in err
    subprocess.run([*cmd, "-o", str(killed), "--resume"], check=True, timeout=300)
    subprocess.run([*cmd, "-o", str(whole)], check=True, timeout=300)
    a, b = streamgd.load(str(killed)), streamgd.load(str(whole))
    assert np.array_equal(a.weights, b.weights) and a.history == b.history
    assert (tmp_path / "killed.leaderboard.csv").read_text() == (
        tmp_path / "whole.leaderboard.csv"
    ).read_text()


def test_a_grid_with_interactions_on_pandas_written_strings_equals_its_runs_alone(tmp_path):
    """Crosses in a grid: its validation scoring reads the columns the crosses are made of,
    and the columns pandas writes (large_string) join like Arrow's own strings."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(5)
    n = 1200
    frame = pd.DataFrame(
        {
            "a": np.array(list("pqrs"))[rng.integers(0, 4, n)],
            "b": np.array(list("xyz"))[rng.integers(0, 3, n)],
            "x": rng.normal(size=n),
        }
    )
    frame["y"] = frame["x"] * (frame["a"] == "p") + (frame["b"] == "z") + rng.normal(size=n)
    path = str(tmp_path / "cross.parquet")
    frame.to_parquet(path, row_group_size=300)
    assert pa.types.is_large_string(pq.read_schema(path).field("a").type)
    settings = dict(
        target="y", categorical=["a", "b"], interactions=["a*b", "x*a"], holdout=0.2,
        epochs=2, batch_size=64, quiet=True,
    )  # fmt: skip
    result = fit_grid(path, lr=[0.1, 0.03], **settings)
    for model, label in zip(result.models, result.labels, strict=True):
        alone = streamgd.fit(path, **settings, **label)
        _same(model, alone)
        assert np.array_equal(model.code_weights, alone.code_weights)


def test_stacked_and_own_steps_are_chosen_per_member_and_equal_runs_alone(data, monkeypatch):
    # sgd models are stacked (search.stacked); adamw's decay skips the intercept by position,
    # so its models take their own train_step; both equal their runs alone
    from streamgd.search import engine

    chosen = []
    groups = engine._groups

    def spy(active, params, opt):
        found, alone = groups(active, params, opt)
        chosen.append(
            (
                sorted(m.config.optimizer for g in found for m in g.members),
                sorted(active[i].config.optimizer for i in alone),
            )
        )
        return found, alone

    monkeypatch.setattr(engine, "_groups", spy)
    settings = {**BASE, "target": "y", "optimizer": ["sgd", "adamw"], "lr": [0.1, 0.01]}
    result = fit_grid(data, quiet=True, **settings)
    assert chosen[0] == (["sgd", "sgd"], ["adamw", "adamw"])
    monkeypatch.setattr(engine, "_groups", groups)
    for model, label in zip(result.models, result.labels, strict=True):
        _same(model, streamgd.fit(data, quiet=True, **{**settings, **label}))
