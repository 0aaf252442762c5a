"""Row groups too large to be read whole are read in slices: the same rows and model as when
read whole, exact resume inside a sliced row group, and a checkpoint of other slices refused."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streamgd.sources as sources
from streamgd.config import FitConfig, RunOptions
from streamgd.training import train
from streamgd.training.checkpoint import CheckpointManager, load_checkpoint


@pytest.fixture
def one_big_row_group(tmp_path):
    rng = np.random.default_rng(17)
    n = 6000
    x = rng.normal(size=(n, 3))
    y = x @ [1.0, -1.0, 0.5] + rng.normal(size=n) * 0.1
    path = tmp_path / "big.parquet"
    table = pa.table({"row_id": np.arange(n), "a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y})
    pq.write_table(table, path, row_group_size=n)  # a single row group
    return str(path)


def _fit(path, tmp_path=None, *, shuffle=True, **options):
    config = FitConfig(
        target="y",
        features=("a", "b", "c"),
        epochs=2,
        batch_size=100,
        shuffle_buffer=500,
        shuffle=shuffle,
    )
    return train([path], config, RunOptions(**options))


def test_sliced_reading_gives_the_same_model(one_big_row_group, monkeypatch):
    # unshuffled: the same rows in the same order (a shuffled stream hands a piece on in
    # slices in a random order, so the pieces' size shapes the order: see streamgd.lanes)
    whole = _fit(one_big_row_group, shuffle=False).model
    monkeypatch.setattr(sources.dataset, "WHOLE_ROWS", 1000)
    monkeypatch.setattr(sources.dataset, "SLICE_ROWS", 1000)
    dataset = sources.open_dataset([one_big_row_group])
    unit = dataset.units[0]
    assert not dataset.single_piece(unit)
    pieces = list(dataset.iter_unit(unit, ["row_id"]))
    assert [len(t) for t, _ in pieces] == [1000] * 6
    assert [first for _, first in pieces] == list(range(0, 6000, 1000))
    sliced = _fit(one_big_row_group, shuffle=False).model
    # the same rows in the same order; only the statistics pass merges other chunk sizes,
    # which moves the last bits of the means
    np.testing.assert_allclose(sliced.weights, whole.weights, rtol=1e-9)
    assert [h["rows"] for h in sliced.history] == [h["rows"] for h in whole.history]


def test_resume_inside_a_sliced_row_group_is_exact(one_big_row_group, monkeypatch, tmp_path):
    monkeypatch.setattr(sources.dataset, "WHOLE_ROWS", 700)
    monkeypatch.setattr(sources.dataset, "SLICE_ROWS", 700)
    full_dir = str(tmp_path / "full")
    full = _fit(one_big_row_group, checkpoint_dir=full_dir, checkpoint_every=7, keep=100)
    for ckpt in CheckpointManager(full_dir).paths():
        state = load_checkpoint(ckpt)
        if state.stream.cursor.offset:  # mid-way through the sliced row group
            directory = tmp_path / f"r{state.step}"
            os.makedirs(directory)
            shutil.copy(ckpt, directory)
            again = _fit(one_big_row_group, checkpoint_dir=str(directory), resume=True)
            assert np.array_equal(again.model.weights, full.model.weights)
            break
    else:
        pytest.fail("no checkpoint fell inside the row group")


def test_default_slices_and_piece_rows(one_big_row_group, tmp_path, monkeypatch):
    """Without --piece-rows, row groups of up to WHOLE_ROWS rows are read whole and larger
    ones in slices of SLICE_ROWS; --piece-rows P reads any row group over P in slices of P."""
    small = str(tmp_path / "small.parquet")
    pq.write_table(pq.read_table(one_big_row_group).slice(0, 2500), small)
    monkeypatch.setattr(sources.dataset, "WHOLE_ROWS", 3000)
    monkeypatch.setattr(sources.dataset, "SLICE_ROWS", 1000)
    dataset = sources.open_dataset([one_big_row_group, small])
    big_unit, small_unit = dataset.units
    sizes = [[len(t) for t, _ in dataset.iter_unit(u, ["row_id"])] for u in dataset.units]
    assert sizes == [[1000] * 6, [2500]]
    assert [dataset.piece_rows_of(u) for u in dataset.units] == [1000, 2500]
    dataset.piece_rows = 2000
    sizes = [[len(t) for t, _ in dataset.iter_unit(u, ["row_id"])] for u in dataset.units]
    assert sizes == [[2000] * 3, [2000, 500]]
    assert [dataset.piece_rows_of(u) for u in dataset.units] == [2000, 2000]


def test_a_checkpoint_of_other_slices_is_refused(one_big_row_group, monkeypatch, tmp_path):
    """A checkpoint inside a sliced row group records the slices' rows; resuming it where
    row groups are sliced otherwise (a streamgd with another default, which wrote none) is
    refused, since its lanes' rows depend on them."""
    from streamgd.errors import CheckpointError

    monkeypatch.setattr(sources.dataset, "WHOLE_ROWS", 700)
    monkeypatch.setattr(sources.dataset, "SLICE_ROWS", 700)
    full_dir = str(tmp_path / "full")
    _fit(one_big_row_group, checkpoint_dir=full_dir, checkpoint_every=7, keep=100)
    for ckpt in CheckpointManager(full_dir).paths():
        state = load_checkpoint(ckpt)
        if state.stream.cursor.lanes:  # inside the epoch
            break
    else:
        pytest.fail("no checkpoint inside an epoch")
    assert state.stream.cursor.slices == 700
    for slices, error in ((700, False), (500, True), (0, True)):
        directory = tmp_path / f"s{slices}"
        state.stream.cursor.slices = slices
        CheckpointManager(str(directory)).save(state)
        if not error:
            _fit(one_big_row_group, checkpoint_dir=str(directory), resume=True)
            continue
        with pytest.raises(CheckpointError, match="in slices of (500|262144) rows"):
            _fit(one_big_row_group, checkpoint_dir=str(directory), resume=True)
