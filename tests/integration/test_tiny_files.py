"""Many tiny files: their units are read and decoded in groups (streamgd.groups), and every
result is bit for bit what reading them one by one gives (the oracle: the same run with
grouping switched off), errors still name their file and row, a resume is exact and a file
changed between passes is refused."""

from __future__ import annotations

import glob
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamgd import groups
from streamgd.config import FitConfig, RunOptions
from streamgd.errors import DataError
from streamgd.training import train
from streamgd.training.checkpoint import load_checkpoint

FILES, ROWS = 40, 37


def _write(directory, *, files: int = FILES, rows: int = ROWS, seed: int = 0, edit=None):
    """``files`` Parquet files of ``rows`` rows (one row group each; every 9th file in two
    row groups, every 7th with float32 features: other schemas in a group), a linear target;
    ``edit(i, x)`` may change file ``i``'s features first."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    paths = []
    for i in range(files):
        x = rng.normal(size=(rows, 3)) * [1.0, 10.0, 0.1] + [0.0, 5.0, -1.0]
        y = x @ [0.5, -0.2, 3.0] + 1.0 + 0.1 * rng.normal(size=rows)
        if edit is not None:
            edit(i, x)
        kind = pa.float32() if i % 7 == 3 else pa.float64()
        table = pa.table(
            {
                **{f"x{j}": pa.array(x[:, j], kind) for j in range(3)},
                "y": y,
                "b": (y > 1.0).astype(np.int64),  # a label, and a weight per row
                "w": 0.5 + rng.random(rows),
            }
        )
        path = os.path.join(directory, f"part-{i:03d}.parquet")
        pq.write_table(table, path, row_group_size=rows // 2 + 1 if i % 9 == 4 else rows)
        paths.append(path)
    return paths


def _config(**kw) -> FitConfig:
    settings = dict(target="y", features=("x0", "x1", "x2"), epochs=2, batch_size=16)
    return FitConfig(**{**settings, "shuffle_buffer": 200, **kw})


def _params(result) -> np.ndarray:
    return np.append(result.model.weights, result.model.intercept)


def _alone(monkeypatch) -> None:
    """No unit is tiny: each is read and decoded alone, as before groups."""
    monkeypatch.setattr(groups, "TINY_ROWS", 0)


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"shuffle": False},
        {"missing": "impute", "outliers": "clip"},
        {"shuffle_buffer": 64, "stats_rows": 300},
        {"loss": "logistic", "target": "b", "weight": "w", "holdout": 0.2},
    ],
)
def test_groups_give_the_bits_of_units_read_alone(tmp_path, monkeypatch, settings):
    def edit(i, x):
        if i % 5 == 2:
            x[i % ROWS, 1] = np.nan  # imputed (or dropped) row by row
        if i == 23:
            x[4, 2] = 1e6  # an outlier: clipped, or warned about naming this file and row

    paths = _write(str(tmp_path / "d"), edit=edit)
    config = _config(**settings)
    grouped, said = _train_noting(paths, config)
    _alone(monkeypatch)
    alone, said_alone = _train_noting(paths, config)
    assert np.array_equal(_params(grouped), _params(alone))
    assert grouped.model.history == alone.model.history
    a, b = grouped.model.spec, alone.model.spec
    for name in ("center", "scale", "fill", "bounds"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert said == said_alone  # the outlier's warning names the same file and row
    if "outliers" not in settings and "stats_rows" not in settings:
        assert any(paths[23] in w and "row 5" in w for w in said), said


class _Said:
    """Collects the run's warnings."""

    def __init__(self) -> None:
        self.said: list[str] = []

    def __getattr__(self, name):
        return lambda *args: None

    def on_warning(self, message):
        self.said.append(message)


def _train_noting(paths, config):
    said = _Said()
    return train(paths, config, callbacks=[said]), said.said


@pytest.mark.parametrize(
    ("where", "value", "settings", "message"),
    [
        ((17, 5), np.nan, {"missing": "error"}, "missing"),
        ((29, 30), 1e30, {}, "extreme value"),  # the statistics pass's screen
    ],
)
def test_a_bad_value_in_a_group_names_its_file_and_row(
    tmp_path, monkeypatch, where, value, settings, message
):
    def edit(i, x):
        if i == where[0]:
            x[where[1], 1] = value

    paths = _write(str(tmp_path / "d"), edit=edit)
    with pytest.raises(DataError) as grouped:
        train(paths, _config(**settings))
    text = str(grouped.value)
    assert text.startswith(paths[where[0]]) and message in text
    assert f"row {where[1] + 1}" in text
    _alone(monkeypatch)
    with pytest.raises(DataError) as alone:
        train(paths, _config(**settings))
    assert str(alone.value) == text


def test_a_bad_value_met_in_training_names_its_file_and_row(tmp_path, monkeypatch):
    """Outside the statistics sample (the first 100 rows, in a seeded order of the units),
    the training guard finds it: --outliers error."""

    def edit(i, x):
        if i == 31:
            x[11, 0] = 1e9

    paths = _write(str(tmp_path / "d"), edit=edit)
    config = _config(outliers="error", stats_rows=100, seed=3)
    with pytest.raises(DataError) as grouped:
        train(paths, config)
    text = str(grouped.value)
    assert text.startswith(paths[31]) and "row 12" in text
    _alone(monkeypatch)
    with pytest.raises(DataError) as alone:
        train(paths, config)
    assert str(alone.value) == text


@pytest.mark.parametrize("shuffle", [True, False])
def test_resume_from_any_step_is_bit_identical(tmp_path, shuffle):
    paths = _write(str(tmp_path / "d"))
    config = _config(epochs=2, shuffle=shuffle)
    full_dir = str(tmp_path / "full")
    options = RunOptions(checkpoint_dir=full_dir, checkpoint_every=1, keep=10_000)
    full = train(paths, config, options)
    per_epoch = full.model.history[0]["step"]
    ckpts = {load_checkpoint(p).step: p for p in glob.glob(f"{full_dir}/ckpt-*.npz")}
    for step in (1, per_epoch // 3, per_epoch - 1, per_epoch + per_epoch // 2):
        directory = str(tmp_path / f"resume-{step}")
        os.makedirs(directory)
        shutil.copy(ckpts[step], directory)
        resumed = train(paths, config, RunOptions(checkpoint_dir=directory, resume=True))
        assert np.array_equal(_params(resumed), _params(full)), f"resumed at step {step}"
        assert resumed.model.history == full.model.history


class _AfterStats:
    """Calls ``action`` once the statistics pass is done (before the first epoch reads)."""

    def __init__(self, action) -> None:
        self.action = action

    def __getattr__(self, name):
        return lambda *args: None

    def on_stats_progress(self, rows, total, done):
        if done:
            self.action()


def test_a_tiny_file_changed_between_passes_is_refused(tmp_path):
    paths = _write(str(tmp_path / "d"))
    victim = paths[26]

    def swap():
        other = _write(str(tmp_path / "other"), files=1, seed=5)[0]
        os.replace(other, victim)

    with pytest.raises(DataError) as caught:
        train(paths, _config(), callbacks=[_AfterStats(swap)])
    assert str(caught.value).startswith(f"{victim}: the file changed during the run")


def test_a_group_holds_at_most_its_share_of_rows(tmp_path):
    """Decoded ahead: one group per lane, each within group_rows (its first unit aside)."""
    from streamgd.decode import Decoder
    from streamgd.features.rows import preparer
    from streamgd.sources import open_dataset

    paths = _write(str(tmp_path / "d"), files=30, rows=300)
    dataset = open_dataset(paths)
    names = ["x0", "x1", "x2"]
    prepare = preparer(
        names, "y", missing="impute", infinite="error", fill=np.zeros(3), check_target=None
    )
    decoder = Decoder((*names, "y"), prepare)
    got: list[int] = []

    def get_buffer(rows):
        got.append(rows)
        return np.empty((rows, 4), order="F")

    for stride in (1, 4):
        got.clear()
        order = list(range(len(dataset.units)))
        g = groups.Groups.of(dataset, order, decoder, stride=stride, get_buffer=get_buffer)
        limit = groups.group_rows(4, 8, share=stride)
        seen = 0
        for lane in range(stride):
            for position in range(lane, len(order), stride):
                rows, counts, _ = g.take(position)
                assert len(rows) == dataset.units[order[position]].rows
                seen += len(rows)
        g.close()
        assert seen == dataset.num_rows
        assert max(got) <= max(limit, 300) and len(got) < len(order)


def test_the_statistics_of_tiny_files_are_those_of_all_their_rows(tmp_path):
    """Small pieces are summarised together (stats_pass.SMALL_ROWS): the oracle is numpy's
    mean and standard deviation of every row."""
    paths = _write(str(tmp_path / "d"))
    tables = [pq.read_table(p) for p in paths]
    x = np.array(
        [[float(v) for v in t.column(f"x{j}").to_pylist()] for t in tables for j in range(3)]
    )
    x = np.concatenate([x[3 * k : 3 * k + 3].T for k in range(len(tables))])
    spec = train(paths, _config(epochs=1)).model.spec
    np.testing.assert_allclose(spec.center, x.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(spec.scale, x.std(axis=0, ddof=1), rtol=1e-5)
