"""Validation files, early stopping, history files and the recorded weight path."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import Interrupt, StopAt

import streamgd
from streamgd.cli import run
from streamgd.config import FitConfig, RunOptions
from streamgd.errors import UsageError
from streamgd.training import train
from streamgd.training.checkpoint import CheckpointManager


def _line(path, slope: float, rows: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    y = slope * x + rng.normal(size=rows) * 0.1
    pq.write_table(pa.table({"x": x, "y": y}), path, row_group_size=100)
    return str(path)


@pytest.fixture
def drifting(tmp_path):
    """Training data with slope 1, validation data with slope 0.5: as plain, slow SGD walks
    the weight from 0 towards 1, the validation loss falls, then rises past 0.5."""
    return _line(tmp_path / "train.parquet", 1.0, 1000, 0), _line(
        tmp_path / "val.parquet", 0.5, 400, 1
    )


def _slow(**kw):
    return dict(
        target="y",
        optimizer="sgd",
        lr=0.002,
        schedule="constant",
        precondition=False,
        standardize=False,
        batch_size=100,
        **kw,
    )


def test_patience_stops_and_restores_the_best_weights(drifting):
    train_path, val_path = drifting
    model = streamgd.fit(train_path, epochs=40, validation=[val_path], patience=2, **_slow())
    val = [h["val_loss"] for h in model.history]
    best = int(np.argmin(val))
    assert model.summary["stop_reason"] == "patience"
    assert len(val) == best + 1 + 2  # stopped two epochs after the best one
    assert model.summary["best_epoch"] == best + 1
    # the returned weights are the best epoch's: scoring them reproduces its validation loss
    again = streamgd.evaluate(model, [val_path])
    assert again["loss"] == pytest.approx(val[best], rel=1e-12)
    assert again["loss"] < val[-1]


def test_history_with_validation_survives_a_resume(tmp_path, drifting):
    train_path, val_path = drifting
    config = FitConfig(**_slow(epochs=12, validation=(val_path,), patience=3))
    full = train([train_path], config).model
    directory = str(tmp_path / "ck")

    with pytest.raises(Interrupt):
        train(
            [train_path],
            config,
            RunOptions(checkpoint_dir=directory, checkpoint_every=4),
            callbacks=[StopAt(25)],
        )
    assert CheckpointManager(directory).paths()
    resumed = train([train_path], config, RunOptions(checkpoint_dir=directory, resume=True))
    assert resumed.model.history == full.history
    assert np.array_equal(resumed.model.weights, full.weights)


def test_patience_needs_validation():
    with pytest.raises(UsageError, match="--patience .* needs --validation"):
        FitConfig(target="y", patience=3)


def test_history_files_beside_the_model(tmp_path, drifting, capsys):
    train_path, val_path = drifting
    out = str(tmp_path / "m.npz")
    assert (
        run(
            [
                "fit",
                train_path,
                "--target",
                "y",
                "--epochs",
                "3",
                "--validation",
                val_path,
                "-o",
                out,
                "--quiet",
            ]
        )
        == 0
    )
    with open(tmp_path / "m.history.json") as fh:
        history = json.load(fh)
    assert history == streamgd.load(out).history and len(history) == 3
    with open(tmp_path / "m.history.csv") as fh:
        lines = fh.read().splitlines()
    header = lines[0].split(",")
    assert len(lines) == 4 and "val_loss" in header and "loss" in header
    assert float(lines[3].split(",")[header.index("loss")]) == history[2]["loss"]


def test_recorded_path_is_bounded_and_evenly_spaced(tmp_path, synthetic, monkeypatch):
    from streamgd.training import loop

    monkeypatch.setattr(loop, "MAX_PATH", 100)
    data = synthetic(rows=6000, row_group_size=500)
    model = streamgd.fit(
        data.paths, target="y", features=data.features, batch_size=8, epochs=2, record_path=1
    )
    path = model.trajectory
    steps = 2 * 6000 // 8
    assert path is not None and 50 <= len(path) <= 100 < steps
    gaps = np.diff(path[:, 0])
    assert len(set(gaps)) == 1  # evenly spaced in steps
    assert path[0, 0] == 0 and np.all(path[0, 1:] == 0)  # starts at the initial weights
    saved = str(tmp_path / "m.npz")
    model.save(saved)
    assert np.array_equal(streamgd.load(saved).trajectory, path)
    assert path.shape[1] == len(data.features) + 2  # step, weights, intercept
    assert os.path.getsize(saved) < 2_000_000


def _warnings_of(path, **kw):
    seen = []

    class Catch:
        def __getattr__(self, name):
            return lambda *a: None

        def on_warning(self, message):
            seen.append(message)

    streamgd.fit(str(path), target="y", epochs=1, callbacks=[Catch()], quiet=True, **kw)
    return seen


def test_ordered_input_is_warned_about(tmp_path, monkeypatch):
    import streamgd.sources as sources

    # one row group too large to be decoded whole (here: above a lowered WHOLE_ROWS), read
    # slice after slice: the order the stream cannot mix (row groups decoded whole, or
    # several at once, it mixes itself: see streamgd.lanes)
    monkeypatch.setattr(sources.dataset, "WHOLE_ROWS", 5000)
    monkeypatch.setattr(sources.dataset, "SLICE_ROWS", 5000)
    rng = np.random.default_rng(16)
    x = rng.normal(size=40_000)
    y = 2 * x + rng.normal(size=40_000)
    order = np.argsort(y)
    sorted_path, mixed_path = tmp_path / "sorted.parquet", tmp_path / "mixed.parquet"
    pq.write_table(pa.table({"x": x[order], "y": y[order]}), sorted_path, row_group_size=40_000)
    pq.write_table(pa.table({"x": x, "y": y}), mixed_path, row_group_size=5000)
    warned = _warnings_of(sorted_path, shuffle_buffer=2048)
    assert len(warned) == 1 and "looks ordered" in warned[0] and "streamgd shuffle" in warned[0]
    assert _warnings_of(mixed_path, shuffle_buffer=2048) == []


def test_holdout_rows_are_fixed_scored_and_survive_a_resume(tmp_path, synthetic):
    from streamgd.holdout import holdout_mask

    data = synthetic(rows=3000, files=2, row_group_size=300)
    config = FitConfig(
        target="y", features=tuple(data.features), epochs=3, batch_size=100, holdout=0.2
    )
    full = train(data.paths, config).model
    # the held-out rows: an independent recomputation of the hash per file
    held, kept = [], []
    for i, path in enumerate(data.paths):
        rows = np.arange(1500)
        mask = holdout_mask(path, rows, 0.2)
        held.append(i * 1500 + rows[mask])
        kept.append(i * 1500 + rows[~mask])
    held, kept = np.concatenate(held), np.concatenate(kept)
    assert 0.15 < len(held) / 3000 < 0.25
    assert all(h["rows"] == len(kept) for h in full.history)  # trained on the rest only
    # val metrics are the model's metrics on exactly those rows
    last = full.history[-1]
    mse = np.mean((full.predict(data.x[held]) - data.y[held]) ** 2)
    assert last["val_rows"] == len(held) and last["val_mse"] == pytest.approx(mse, rel=1e-9)
    # and a resumed run (interrupted mid-epoch 2) ends with the same history and weights
    _assert_resume_is_identical(data.paths, config, full, str(tmp_path / "ck"), stop=35)


def _assert_resume_is_identical(paths, config, full, directory, *, stop):
    """Crash a run after ``stop`` steps (checkpoints every 5), resume it, and compare."""
    with pytest.raises(Interrupt):
        train(
            paths,
            config,
            RunOptions(checkpoint_dir=directory, checkpoint_every=5),
            callbacks=[StopAt(stop)],
        )
    resumed = train(paths, config, RunOptions(checkpoint_dir=directory, resume=True))
    assert resumed.model.history == full.history
    assert np.array_equal(resumed.model.weights, full.weights)


def test_holdout_and_validation_files_are_exclusive():
    with pytest.raises(UsageError, match="one of --validation, --holdout and --holdout-rows"):
        FitConfig(target="y", holdout=0.1, validation=("v.parquet",))
    with pytest.raises(UsageError, match="one of"):
        FitConfig(target="y", holdout=0.1, holdout_rows=10)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_holdout_rows_reservoir_is_fixed_scored_and_survives_a_resume(tmp_path, synthetic, fmt):
    from streamgd.holdout import reservoir_rows
    from streamgd.sources import open_dataset

    data = synthetic(rows=3000, files=3, row_group_size=250, fmt=fmt)
    config = FitConfig(
        target="y", features=tuple(data.features), epochs=3, batch_size=100, holdout_rows=400
    )
    full = train(data.paths, config).model
    drawn = reservoir_rows(open_dataset(data.paths, "auto"), 400, seed=0)
    held = np.concatenate([i * 1000 + drawn.get(p, []) for i, p in enumerate(data.paths)])
    assert len(held) == 400 and len(np.unique(held)) == 400
    assert all(h["rows"] == 2600 for h in full.history)  # trained on the others only
    last = full.history[-1]
    mse = np.mean((full.predict(data.x[held]) - data.y[held]) ** 2)
    assert last["val_rows"] == 400 and last["val_mse"] == pytest.approx(mse, rel=1e-9)
    other = reservoir_rows(open_dataset(data.paths, "auto"), 400, seed=1)
    assert any(not np.array_equal(drawn.get(p), other.get(p)) for p in data.paths)
    _assert_resume_is_identical(data.paths, config, full, str(tmp_path / "ck"), stop=40)


def test_holdout_rows_reservoir_is_uniform(tmp_path, synthetic, monkeypatch):
    """Every row is drawn with probability K/N: over 400 seeds, inclusion counts per row stay
    within a 5-sigma binomial band, across file boundaries and reservoir blocks."""
    import streamgd.holdout as holdout
    from streamgd.sources import open_dataset

    monkeypatch.setattr(holdout, "RESERVOIR_BLOCK", 7)  # many blocks per file
    data = synthetic(rows=120, files=3, row_group_size=25)
    dataset = open_dataset(data.paths, "auto")
    k, seeds = 12, 400
    hits = np.zeros(120)
    for seed in range(seeds):
        drawn = holdout.reservoir_rows(dataset, k, seed)
        for i, path in enumerate(data.paths):
            hits[i * 40 + drawn.get(path, np.empty(0, int))] += 1
    p = k / 120
    assert hits.sum() == k * seeds
    band = 5 * np.sqrt(seeds * p * (1 - p))
    assert np.all(np.abs(hits - seeds * p) < band), hits
    # a uniform draw, not a prefix-biased one: the first and last 40 rows are drawn as often
    assert abs(hits[:40].sum() - hits[80:].sum()) < 5 * np.sqrt(2 * 40 * seeds * p)


def test_holdout_rows_errors(synthetic, capsys):
    from integration_support import run_cli

    data = synthetic(rows=300, files=1)
    code, _, err = run_cli(capsys, "fit", *data.paths, "-y", "y", "--holdout-rows", "300")
    assert code == 2 and "would hold out every row: the data has 300 rows" in err


def test_a_model_file_that_calls_the_trajectory_path_still_loads(tmp_path, synthetic):
    """Model files written before the rename store the recorded trajectory as ``path``."""
    from streamgd.archive import read_archive, write_archive
    from streamgd.model import MODEL_VERSION

    data = synthetic(rows=1000)
    model = streamgd.fit(
        data.paths, target="y", features=data.features, batch_size=50, record_path=2
    )
    new, old = str(tmp_path / "new.npz"), str(tmp_path / "old.npz")
    model.save(new)
    meta, arrays = read_archive(new, kind="model", max_version=MODEL_VERSION)
    arrays["path"] = arrays.pop("trajectory")  # the archive as older versions wrote it
    meta = {k: v for k, v in meta.items() if k not in ("format", "kind", "version")}
    write_archive(old, kind="model", version=1, meta=meta, arrays=arrays)
    loaded = streamgd.load(old)
    assert loaded.trajectory is not None and len(loaded.trajectory) > 3
    assert np.array_equal(loaded.trajectory, model.trajectory)
