"""The training state's generic archive codec: every record round-trips through a checksummed,
pickle-free archive, and fields an archive lacks take their defaults."""

from __future__ import annotations

import dataclasses

import numpy as np

from streamgd.archive import read_archive, write_archive
from streamgd.cursor import Cursor
from streamgd.features import FeatureSpec
from streamgd.training.checkpoint import CHECKPOINT_VERSION
from streamgd.training.state import (
    DaskRounds,
    EarlyStopping,
    EpochTotals,
    StreamState,
    TrainState,
    Trajectory,
    record_from_archive,
    record_to_archive,
)


def _spec() -> FeatureSpec:
    return FeatureSpec(("a", "b"), "y", np.zeros(2), np.ones(2), np.zeros(2))


def _full_state() -> TrainState:
    rng = np.random.default_rng(1)
    return TrainState(
        params=rng.normal(size=3),
        opt_state={"m": rng.normal(size=3), "t": np.array(7)},
        spec=_spec(),
        config={"loss": "squared", "epochs": 3},
        data={"files": [{"path": "a.parquet", "size": 10}]},
        step=42,
        rows_trained=4200,
        history=[{"epoch": 1, "loss": 0.5}],
        stop_reason=None,
        stream=StreamState(
            Cursor(1, 2, 3),
            slots=rng.normal(size=(4, 3, 2)).astype(np.float32),
            free=np.array([3], dtype=np.int64),
            tail=np.zeros((0, 3), np.float32),
            rng=np.random.default_rng(5).bit_generator.state,
        ),
        totals=EpochTotals(
            start=np.zeros(3),
            counts=np.array([1, 0, 2]),
            loss=1.25,
            rows=64,
            metrics={"sums": np.arange(3.0)},
        ),
        early=EarlyStopping(best_loss=0.25, best_params=np.ones(3), best_epoch=1, bad_epochs=1),
        trajectory=Trajectory(rows=np.arange(8.0).reshape(2, 4), stride=4),
        dask=DaskRounds(shards=[Cursor(1, 0, 5), Cursor(1, 2, 0)], round=9),
    )


def _equal(a, b) -> bool:
    if dataclasses.is_dataclass(a) and not isinstance(a, FeatureSpec):
        return type(a) is type(b) and all(
            _equal(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_equal, a, b))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, FeatureSpec):
        return a.names == b.names and np.array_equal(a.center, b.center)
    return a == b


def test_every_record_round_trips_through_an_archive(tmp_path):
    state = _full_state()
    path = str(tmp_path / "s.npz")
    meta, arrays = state.to_archive()
    write_archive(path, kind="checkpoint", version=CHECKPOINT_VERSION, meta=meta, arrays=arrays)
    loaded = TrainState.from_archive(
        *read_archive(path, kind="checkpoint", max_version=CHECKPOINT_VERSION)
    )
    assert _equal(loaded, state)
    assert loaded.epoch == 1 and loaded.dask.shards == [Cursor(1, 0, 5), Cursor(1, 2, 0)]


def test_records_are_stored_by_prefix_arrays_apart():
    meta, arrays = _full_state().to_archive()
    assert meta["stream.cursor.offset"] == 3 and meta["dask.round"] == 9
    assert meta["opt_state"] == ["m", "t"] and "opt_state.m" in arrays
    assert "stream.slots" in arrays and "trajectory.rows" in arrays and "spec.center" in arrays
    assert all(not isinstance(v, np.ndarray) for v in meta.values())


def test_fields_an_archive_lacks_take_their_defaults():
    meta, arrays = _full_state().to_archive()
    meta = {k: v for k, v in meta.items() if not k.startswith(("early.", "dask.", "totals.l"))}
    arrays = {k: v for k, v in arrays.items() if not k.startswith("early.")}
    loaded = TrainState.from_archive(meta, arrays)
    assert loaded.early == EarlyStopping() and loaded.dask == DaskRounds()
    assert loaded.totals.loss == 0.0 and loaded.totals.rows == 64


def test_a_new_field_is_one_line():
    @dataclasses.dataclass
    class Later(Trajectory):
        smoothing: float = 0.5  # a field added after archives were written

    meta, arrays = record_to_archive(Trajectory(np.ones((1, 2)), 3))
    loaded = record_from_archive(Later, meta, arrays)
    assert loaded.smoothing == 0.5 and loaded.stride == 3
    assert record_from_archive(Later, *record_to_archive(Later(None, 2, 0.9))).smoothing == 0.9
