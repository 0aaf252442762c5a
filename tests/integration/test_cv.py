"""K-fold cross-validation in the grid's one pass (--cv K).

Oracles: the folds against a pure-Python hash of (path, row, seed); every model of a CV grid
against the same configuration trained alone (``streamgd.fit``: ``cv_fold=k`` for a fold's
model, no --cv for the model on all rows), to the bit; a fold model's weights against numpy
least squares on the rows outside its fold; the validation scores against scoring the fold's
rows, written to a file of their own, with ``streamgd.evaluate``; the leaderboard's mean and
spread against numpy over the fold models' own histories.
"""

from __future__ import annotations

import json
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from integration_support import run_cli

import streamgd
from streamgd.errors import DivergedError, UsageError
from streamgd.folds import FOLD_SALT, fold_of, fold_parts, fold_rows
from streamgd.search import fit_grid
from streamgd.search.leaderboard import HIGHER_IS_BETTER

M64 = (1 << 64) - 1


def _splitmix(z: int) -> int:
    z = (z * 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def _fold_oracle(path: str, row: int, k: int, seed: int) -> int:
    """The fold of one row, in plain Python integers."""
    z = _splitmix((row + (zlib.crc32(path.encode()) << 32)) & M64)
    z = _splitmix(z ^ _splitmix((seed << 32) ^ FOLD_SALT))
    return min(int((z >> 11) / 2.0**53 * k), k - 1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(11)
    rows = 2400
    x = rng.normal(size=(rows, 3))
    y = x @ np.array([1.5, -2.0, 0.5]) + 0.3 * rng.normal(size=rows) + 2.0
    label = (y > 2.0).astype(np.float64)
    w = rng.uniform(0.5, 2.0, rows)
    path = tmp_path_factory.mktemp("cv") / "d.parquet"
    cols = {f"x{j}": x[:, j] for j in range(3)}
    table = pa.table({**cols, "y": y, "label": label, "w": w})
    pq.write_table(table, path, row_group_size=400)
    return str(path)


BASE = dict(epochs=2, batch_size=64, seed=7, shuffle_buffer=512, quiet=True)


def _same(a, b):
    assert np.array_equal(a.weights, b.weights)
    assert np.array_equal(np.asarray(a.intercept), np.asarray(b.intercept))
    assert a.history == b.history
    assert a.summary == b.summary


def test_folds_are_a_pure_function_of_path_row_and_seed():
    rows = np.arange(0, 50_000, 7)
    folds = fold_of("dir/a.parquet", rows, 5, 3)
    oracle = [_fold_oracle("dir/a.parquet", int(r), 5, 3) for r in rows[:300]]
    assert folds[:300].tolist() == oracle
    # whatever order or pieces the rows come in
    shuffled = np.random.default_rng(0).permutation(len(rows))
    assert np.array_equal(fold_of("dir/a.parquet", rows[shuffled], 5, 3), folds[shuffled])
    share = np.bincount(folds, minlength=5) / len(rows)
    assert np.all(np.abs(share - 0.2) < 0.02)
    assert (fold_of("dir/a.parquet", rows, 5, 4) == folds).mean() < 0.3  # the seed matters
    assert (fold_of("dir/b.parquet", rows, 5, 3) == folds).mean() < 0.3  # so does the file


def test_fold_rows_takes_out_the_models_fold_and_the_fold_column():
    raw = np.asfortranarray(np.c_[np.arange(6.0), np.arange(6.0) * 10, [0, 1, 2, 0, 1, 2]])
    assert fold_rows(raw, 1).tolist() == [[0, 0], [2, 20], [3, 30], [5, 50]]
    assert fold_rows(raw, 1).flags.f_contiguous
    assert np.array_equal(fold_rows(raw, None), raw[:, :2])


@pytest.mark.parametrize(
    "grid",
    [
        dict(target="y", lr=[0.3, 0.03], l2=[0.0, 1e-2]),
        dict(target="label", loss="logistic", optimizer=["sgd", "adam"], lr=0.1),
        dict(target="y", weight="w", l1=[0.0, 1e-3]),
        dict(target="y", lr=0.1),  # one configuration: its CV estimate
    ],
    ids=["lr-l2", "logistic-optimizers", "weighted", "single"],
)
def test_every_cv_model_equals_its_run_alone(data, grid):
    settings = {**BASE, "cv": 3, **grid}
    result = fit_grid(data, **settings)
    assert len(result.fold_models) == len(result.models) == len(result.labels)
    for i, label in enumerate(result.labels):
        whole = streamgd.fit(data, **{**settings, "cv": None, **label})
        _same(result.models[i], whole)  # the model on all rows is an ordinary model
        assert "cv" not in result.models[i].config or result.models[i].config["cv"] is None
        for k, model in enumerate(result.fold_models[i]):
            alone = streamgd.fit(data, **{**settings, **label, "cv_fold": k})
            _same(model, alone)


def test_a_fold_model_trains_outside_its_fold_and_is_scored_on_it(data, tmp_path):
    table = pq.read_table(data)
    n = table.num_rows
    path = tmp_path / "wild.parquet"
    folds = np.array([_fold_oracle(str(path), r, 3, 7) for r in range(n)])
    # fold 0's targets have the opposite sign (the same spread: the statistics pass, which
    # sees every row, scales them alike): only fold 0's own model never trains on them
    x = np.c_[[table[f"x{j}"].to_numpy() for j in range(3)]].T
    y = table["y"].to_numpy().copy()
    clean = y.copy()
    y[folds == 0] *= -1.0
    pq.write_table(table.set_column(3, "y", pa.array(y)), path, row_group_size=400)
    settings = dict(target="y", features=["x0", "x1", "x2"], epochs=6, batch_size=32, seed=7)
    settings |= dict(quiet=True)
    result = fit_grid(str(path), cv=3, **settings)
    fold0 = result.fold_models[0][0]
    a = np.c_[x, np.ones(n)][folds != 0]
    coef = np.linalg.lstsq(a, clean[folds != 0], rcond=None)[0]
    assert np.allclose(fold0.coef_, coef[:3], atol=0.03)  # in the data's units
    assert np.allclose(fold0.intercept_, coef[3], atol=0.03)
    for k, model in enumerate(result.fold_models[0]):
        rows_in = [h["rows"] for h in model.history]
        assert rows_in == [int((folds != k).sum())] * 6  # the same rows every epoch
        held = tmp_path / f"fold{k}.parquet"
        pq.write_table(table.set_column(3, "y", pa.array(y)).filter(pa.array(folds == k)), held)
        scored = streamgd.evaluate(model, str(held))
        last = model.history[-1]
        assert last["val_rows"] == scored["rows"] == int((folds == k).sum())
        assert last["val_loss"] == pytest.approx(scored["loss"], rel=1e-12)
        assert last["val_mse"] == pytest.approx(scored["mse"], rel=1e-12)
    # the models that train on fold 0's rows cannot fit them: their training loss is large
    assert result.fold_models[0][1].history[-1]["loss"] > 10 * fold0.history[-1]["loss"]


def test_leaderboard_is_the_mean_and_spread_over_folds(data):
    result = fit_grid(data, cv=4, target="label", loss="logistic", l2=[0, 0.05, 1.0], **BASE)
    result_auc = fit_grid(
        data, cv=4, target="label", loss="logistic", l2=[0, 0.05, 1.0], select_metric="auc", **BASE
    )
    for res, metric in ((result, "loss"), (result_auc, "auc")):
        means = []
        for row in res.leaderboard:
            i = row["model"]
            assert row["l2"] == res.labels[i]["l2"] and row["folds"] == 4
            for name in ("loss", "auc", "accuracy"):
                values = [m.history[-1][f"val_{name}"] for m in res.fold_models[i]]
                assert row[f"val_{name}"] == pytest.approx(np.mean(values), rel=1e-12)
                assert row[f"val_{name}_std"] == pytest.approx(np.std(values), abs=1e-15)
            means.append(row[f"val_{metric}"])
        sign = -1 if metric in HIGHER_IS_BETTER else 1
        assert means == sorted(means, key=lambda v: sign * v)
        assert res.best is res.models[res.leaderboard[0]["model"]]


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(cv=3, holdout=0.2), "scores each model on its own fold"),
        (dict(cv_fold=1), "give --cv too"),
        (dict(cv=3, cv_fold=3), "--cv-fold must be 0 .. 2"),
        (dict(cv=1), "--cv"),
        (dict(cv=3, solver="normal"), "gradient descent"),
    ],
)
def test_cv_setting_errors(data, settings, message):
    with pytest.raises(UsageError, match=message):
        streamgd.fit(data, target="y", quiet=True, **settings)


def test_cv_refusals(data):
    with pytest.raises(UsageError, match="fit_grid"):
        streamgd.fit(data, target="y", cv=3, quiet=True)
    with pytest.raises(UsageError, match="--patience"):
        fit_grid(data, target="y", cv=3, lr=[0.1, 0.2], patience=2, quiet=True)
    with pytest.raises(UsageError, match="--continual"):
        streamgd.fit(data, target="y", cv=3, cv_fold=0, continual=True, quiet=True)


def test_command_line_cv_of_one_configuration_and_a_grid(data, tmp_path, capsys):
    out = tmp_path / "m.sgd"
    args = ["fit", data, "--target", "y", "--cv", "3", "--epochs", "2", "--batch-size", "64"]
    code, _, err = run_cli(capsys, *args, "-o", out, "--all-models", tmp_path / "all")
    assert code == 0, err
    written = sorted(p.name for p in (tmp_path / "all").iterdir())
    assert written == ["model-000-fold0.sgd", "model-000-fold1.sgd", "model-000-fold2.sgd"] + [
        "model-000.sgd"
    ]
    board = json.loads((tmp_path / "m.leaderboard.json").read_text())
    assert len(board) == 1 and board[0]["folds"] == 3 and "val_loss_std" in board[0]
    whole = streamgd.fit(data, target="y", epochs=2, batch_size=64, quiet=True)
    assert np.array_equal(streamgd.load(str(out)).weights, whole.weights)
    job = tmp_path / "job.toml"
    job.write_text(f'paths = ["{data}"]\ntarget = "y"\nl2 = [0.0, 1.0]\ncv = 3\nepochs = 1\n')
    code, printed, err = run_cli(capsys, "fit", "--config", job, "--json", "-q")
    assert code == 0, err
    summary = json.loads(printed)
    assert summary["models"] == 2 and summary["cv"] == 3
    assert summary["leaderboard"][0]["l2"] == 0.0
    code, _, err = run_cli(capsys, "fit", data, "--target", "y", "--cv", "3", "--holdout", "0.1")
    assert code == 2 and "own fold" in err


def test_a_cv_grid_resumed_from_any_checkpoint_ends_bit_identical(data, tmp_path):
    import shutil

    settings = dict(target="y", lr=[0.3, 0.03], cv=3, epochs=2, batch_size=128, seed=5)
    settings |= dict(shuffle_buffer=256, quiet=True)
    full = tmp_path / "full"
    whole = fit_grid(data, checkpoint_dir=str(full), checkpoint_every=5, keep=1000, **settings)
    saved = sorted(full.glob("grid-*.npz"))
    assert len(saved) > 4
    for picked in (saved[1], saved[len(saved) // 2], saved[-2]):  # mid-epoch and epoch ends
        again = tmp_path / f"again-{picked.stem}"
        again.mkdir()
        shutil.copy(picked, again / picked.name)
        resumed = fit_grid(data, checkpoint_dir=str(again), resume=True, **settings)
        for a, b in zip(whole.models, resumed.models, strict=True):
            _same(a, b)
        for fa, fb in zip(whole.fold_models, resumed.fold_models, strict=True):
            for a, b in zip(fa, fb, strict=True):
                _same(a, b)
        assert resumed.leaderboard == whole.leaderboard
    with pytest.raises(UsageError, match="another grid"):
        fit_grid(data, checkpoint_dir=str(full), resume=True, **{**settings, "cv": 4})


def test_a_cv_run_stopped_by_sigterm_resumes_bit_identically(data, tmp_path):
    import glob
    import signal
    import subprocess
    import sys
    import time

    from streamgd.errors import EXIT_PREEMPTED

    args = [data, "--target", "y", "--lr", "0.1,0.01", "--cv", "4", "-q"]
    args += ["--epochs", "3", "--batch-size", "8", "--checkpoint-every", "50"]
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
    subprocess.run([*cmd, "-o", str(killed), "--resume"], check=True, timeout=300)
    subprocess.run([*cmd, "-o", str(whole)], check=True, timeout=300)
    a, b = streamgd.load(str(killed)), streamgd.load(str(whole))
    assert np.array_equal(a.weights, b.weights) and a.history == b.history
    assert (tmp_path / "killed.leaderboard.csv").read_text() == (
        tmp_path / "whole.leaderboard.csv"
    ).read_text()


def test_grid_command_line_locks_its_output_prints_one_line_per_epoch_and_refuses_lists(
    data, tmp_path, capsys
):
    from streamgd.training.checkpoint import PathLock

    out = tmp_path / "m.sgd"
    args = ["fit", data, "--target", "y", "--lr", "0.1,0.01", "--cv", "3", "--epochs", "2"]
    lock = PathLock(str(tmp_path / ".m.sgd.lock"), busy="held by {pid}", option="--output")
    lock.acquire()
    try:
        code, _, err = run_cli(capsys, *args, "-o", out)
    finally:
        lock.release()
    assert code == 1 and "another streamgd job" in err and not out.exists()
    code, _, err = run_cli(capsys, *args, "-o", out)
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and all("8 models, best val_loss" in line for line in lines)
    assert "(mean of 3 folds) at lr=" in lines[-1]
    code, _, err = run_cli(capsys, "fit", data, "--target", "y", "--batch-size", "10,20")
    assert code == 2 and "--batch-size takes one value: it changes the data path" in err


def test_cv_on_a_frame_with_categorical_codes_and_interactions_equals_its_runs_alone():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(2)
    n = 1200
    frame = pd.DataFrame({"x0": rng.normal(size=n), "x1": rng.normal(size=n)})
    frame["c"] = np.array(list("pqrs"))[rng.integers(0, 4, n)]
    frame["y"] = 2 * frame.x0 - frame.x1 + (frame.c == "q") + rng.normal(size=n)
    settings = dict(target="y", categorical=["c"], cv=3, epochs=2, batch_size=64, quiet=True)
    settings["interactions"] = ["x0*c"]  # derived columns: validation reads their sources
    result = fit_grid(frame, **settings, optimizer=["sgd", "adam"])
    for i, label in enumerate(result.labels):
        _same(result.models[i], streamgd.fit(frame, **{**settings, "cv": None, **label}))
        for k, model in enumerate(result.fold_models[i]):
            alone = streamgd.fit(frame, **settings, **label, cv_fold=k)
            _same(model, alone)
            assert np.array_equal(model.code_weights, alone.code_weights)


def test_one_fold_model_alone_resumes_bit_identically(data, tmp_path):
    import shutil

    settings = dict(target="y", cv=4, cv_fold=2, epochs=2, batch_size=64, seed=3, quiet=True)
    full = tmp_path / "full"
    whole = streamgd.fit(data, checkpoint_dir=str(full), checkpoint_every=7, keep=1000, **settings)
    saved = sorted(full.glob("ckpt-*.npz"))
    assert len(saved) > 4
    picked = saved[len(saved) // 3]
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(picked, again / picked.name)
    _same(whole, streamgd.fit(data, checkpoint_dir=str(again), resume=True, **settings))


def test_stacked_fold_models_skipping_batches_and_diverging_equal_their_runs_alone(
    data, monkeypatch
):
    # the grid's models share one stacked step (search.stacked), each fold a block of it;
    # in batches of 2 rows, often every row is in one fold, whose models sit the batch out
    # while the others step; lr 1e6 diverges and leaves the stack
    from streamgd.search import stacked

    seen = {"stacked": 0, "partial": 0}
    advance = stacked.Group._advance

    def spy(self, blocks):
        seen["stacked"] += 1
        seen["partial"] += len(blocks) < len(self.blocks)
        return advance(self, blocks)

    monkeypatch.setattr(stacked.Group, "_advance", spy)
    settings = {**BASE, "cv": 3, "batch_size": 2, "epochs": 1, "schedule": "constant"}
    settings.update(target="y", lr=[1e6, 0.1, 0.01], l2=1e-3)
    result = fit_grid(data, **settings)
    assert seen["stacked"] > 0 and seen["partial"] > 0
    monkeypatch.setattr(stacked.Group, "_advance", advance)
    assert [m.summary["stop_reason"] for m in result.models] == ["diverged", "epochs", "epochs"]
    assert all(np.isfinite(m.weights).all() for m in [result.models[0], *result.fold_models[0]])
    with pytest.raises(DivergedError):  # alone, the diverging settings stop the run
        streamgd.fit(data, **{**settings, "cv": None, **result.labels[0]})
    for i, label in enumerate(result.labels[1:], start=1):
        _same(result.models[i], streamgd.fit(data, **{**settings, "cv": None, **label}))
        for k, model in enumerate(result.fold_models[i]):
            _same(model, streamgd.fit(data, **{**settings, **label, "cv_fold": k}))


def test_fold_parts_are_each_folds_rows_with_their_layout():
    rng = np.random.default_rng(2)
    buffer = np.asfortranarray(rng.normal(size=(300, 5)).astype(np.float32))
    buffer[:, -1] = rng.integers(0, 3, len(buffer))
    raw = buffer[40:140]  # a batch: a view into the shuffle buffer's matrix
    parts = fold_parts(raw, [None, 0, 1, 2])
    for fold, rows in parts.items():
        expected = fold_rows(raw, fold)
        assert np.array_equal(rows, expected)
        assert rows.strides == expected.strides
    assert parts[None].base is not None  # all rows: a view, as fold_rows gives
