"""Data already in Python streams through the same pipeline as files: pyarrow tables and
datasets, pandas and polars frames, numpy arrays, DuckDB relations, iterators and callables of
batches; with the same shuffle, statistics, checkpoints and exact resume."""

from __future__ import annotations

import glob
import os
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from conftest import Interrupt, StopAt
from integration_support import lstsq_fit

import streamgd
from streamgd.config import FitConfig, RunOptions
from streamgd.errors import (
    CheckpointError,
    DataError,
    StreamgdError,
    StreamgdWarning,
    UsageError,
)
from streamgd.sources import dataset as dataset_module
from streamgd.training import train
from streamgd.training.checkpoint import load_checkpoint

ROWS = 3000
SLICE = 500  # rows per in-memory slice in these tests (MEMORY_ROWS is 65,536)


@pytest.fixture(autouse=True)
def small_slices(monkeypatch):
    monkeypatch.setattr(dataset_module, "MEMORY_ROWS", SLICE)


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(ROWS, 3)) * [1.0, 5.0, 0.2] + [0.0, 10.0, -1.0]
    y = x @ [1.5, -0.3, 4.0] + 2.0 + 0.1 * rng.normal(size=ROWS)
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y})


def _params(model) -> np.ndarray:
    return np.append(model.weights, model.intercept)


def _coef(model) -> np.ndarray:
    """The weights in the data's units (``model.weights`` are on the standardised scale)."""
    return np.array(list(model.coefficients()[0].values()))


SETTINGS = dict(target="y", epochs=2, batch_size=64, shuffle_buffer=400, seed=3)


def test_a_frame_trains_exactly_as_the_same_rows_in_parquet(tmp_path, frame):
    """Same rows, same row-group layout: the in-memory source and the file give the same
    model to the bit (the shuffle, the statistics and the steps do not know the difference)."""
    path = str(tmp_path / "d.parquet")
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=SLICE)
    from_file = streamgd.fit(path, **SETTINGS)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sources = {
        "pandas": frame,
        "arrow": table,
        "batch": table.combine_chunks().to_batches()[0],
        "arrow-dataset": pads.dataset(path),  # a dataset of files is read as its files
        "list-of-paths": [path],
    }
    for name, source in sources.items():
        model = streamgd.fit(source, **SETTINGS)
        assert np.array_equal(_params(model), _params(from_file)), name
    x = frame[["a", "b", "c"]].to_numpy()
    numpy_model = streamgd.fit(x, frame["y"].to_numpy(), **{**SETTINGS, "target": None})
    assert numpy_model.features == ("x0", "x1", "x2")
    assert np.array_equal(_params(numpy_model), _params(from_file))
    series_model = streamgd.fit(frame[["a", "b", "c"]], frame["y"], **{**SETTINGS, "target": None})
    assert np.array_equal(_params(series_model), _params(from_file))


def test_polars_and_duckdb(frame):
    polars = pytest.importorskip("polars")
    duckdb = pytest.importorskip("duckdb")
    reference = streamgd.fit(frame, **SETTINGS)
    model = streamgd.fit(polars.from_pandas(frame), **SETTINGS)
    assert np.array_equal(_params(model), _params(reference))
    con = duckdb.connect()
    con.register("frame", frame)
    relation = con.sql("select * from frame where a > -100")  # every row
    model = streamgd.fit(relation, **SETTINGS)  # a stream made again for every epoch
    assert model.history[-1]["epoch"] == 2
    oracle, _ = lstsq_fit(frame[["a", "b", "c"]].to_numpy(), frame["y"].to_numpy())
    np.testing.assert_allclose(_coef(model), oracle, rtol=0.02)


def test_streams_reach_least_squares(frame):
    def batches():
        for start in range(0, ROWS, 250):
            yield frame.iloc[start : start + 250]

    oracle, b = lstsq_fit(frame[["a", "b", "c"]].to_numpy(), frame["y"].to_numpy())
    settings = {**SETTINGS, "epochs": 4}
    again = streamgd.fit(batches, **settings)  # a callable: one fresh stream per epoch
    assert len(again.history) == 4
    np.testing.assert_allclose(_coef(again), oracle, rtol=0.01)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=300))
    with pytest.warns(
        StreamgdWarning, match="one-shot iterator is read once: training 1 epoch, not 4"
    ):
        once = streamgd.fit(reader, **settings)
    assert len(once.history) == 1
    np.testing.assert_allclose(_coef(once), oracle, rtol=0.05)


def test_a_one_shot_iterator_past_its_head_cannot_be_read_again(frame):
    def batches():
        for start in range(0, ROWS, 250):
            yield pa.Table.from_pandas(frame.iloc[start : start + 250], preserve_index=False)

    dataset = streamgd.sources.open_source(batches(), head_rows=1000)
    unit = dataset.units[0]
    head = 0
    for table, _ in dataset.iter_unit(unit, ["a"]):  # a pass over the head only
        head += table.num_rows
        if head >= 1000:
            break
    assert sum(t.num_rows for t, _ in dataset.iter_unit(unit, ["a"])) == ROWS  # replayed
    with pytest.raises(DataError, match="one-shot iterator can be read only once"):
        next(iter(dataset.iter_unit(unit, ["a"])))


def test_one_shot_iterators_refuse_what_needs_a_second_read(tmp_path, frame):
    def gen():
        yield frame

    with pytest.raises(UsageError, match="cannot be resumed.*pass a callable"):
        streamgd.fit(gen(), target="y", checkpoint_dir=str(tmp_path / "ck"))
    with pytest.raises(UsageError, match="held-out rows.*one-shot"):
        streamgd.fit(gen(), target="y", holdout=0.2)


@pytest.mark.parametrize("kind", ["pandas", "callable"])
def test_resume_mid_epoch_is_bit_identical(tmp_path, frame, kind):
    table = pa.Table.from_pandas(frame, preserve_index=False)
    source = frame if kind == "pandas" else (lambda: table.to_batches(max_chunksize=700))
    config = FitConfig(target="y", epochs=2, batch_size=64, shuffle_buffer=400, optimizer="adam")
    full = train(source, config)
    directory = str(tmp_path / "ck")
    options = RunOptions(checkpoint_dir=directory, checkpoint_every=1, resume=True)
    with pytest.raises(Interrupt):
        train(source, config, options, callbacks=[StopAt(30)])  # inside the first epoch
    resumed = train(source, config, options)
    assert resumed.resumed_from is not None
    assert np.array_equal(_params(resumed.model), _params(full.model))
    assert resumed.model.history == full.model.history


def test_a_changed_frame_is_refused_on_resume(tmp_path, frame):
    config = FitConfig(target="y", epochs=2, batch_size=64)
    directory = str(tmp_path / "ck")
    options = RunOptions(checkpoint_dir=directory, checkpoint_every=1, resume=True)
    with pytest.raises(Interrupt):
        train(frame, config, options, callbacks=[StopAt(10)])
    steps = [load_checkpoint(p).step for p in glob.glob(os.path.join(directory, "ckpt-*.npz"))]
    assert max(steps) == 9
    changed = frame.copy()
    changed.loc[1234, "b"] += 1.0  # one value in the middle of the frame
    with pytest.raises(CheckpointError, match="<pandas.DataFrame>"):
        train(changed, config, options)
    shutil.rmtree(directory)


def test_evaluate_and_predict_accept_every_source(tmp_path, frame):
    model = streamgd.fit(frame, **SETTINGS)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    expected = streamgd.evaluate(model, table)
    assert expected["rows"] == ROWS
    assert streamgd.evaluate(model, frame) == expected
    x, y = frame[["a", "b", "c"]], frame["y"]
    assert streamgd.evaluate(model, x, y)["mse"] == pytest.approx(expected["mse"], rel=1e-12)
    path = str(tmp_path / "d.parquet")
    pq.write_table(table, path)
    assert streamgd.evaluate(model, path)["mse"] == pytest.approx(
        expected["mse"], rel=1e-12
    )  # one str: one path
    assert streamgd.evaluate(model, str(tmp_path))["mse"] == pytest.approx(
        expected["mse"], rel=1e-12
    )  # a directory
    out = str(tmp_path / "p.parquet")
    assert streamgd.predict_files(model, frame, out) == ROWS
    np.testing.assert_array_equal(pq.read_table(out).column("prediction"), model.predict(frame))
    info = streamgd.describe_dataset(frame, target="y")
    assert info["num_rows"] == ROWS and info["features"] == ["a", "b", "c"]


def test_what_is_not_data_is_a_usage_error_naming_the_type(frame):
    for bad in (42, {"a": [1, 2]}, object()):
        with pytest.raises(
            UsageError,
            match=rf"cannot read .*{type(bad).__name__} as data; "
            r"expected a path.*pandas",
        ):
            streamgd.fit(bad, target="y")
    with pytest.raises(UsageError, match="y has 3 values for 3000 rows"):
        streamgd.fit(frame[["a", "b"]], np.zeros(3))
    with pytest.raises(UsageError, match="column names must be strings"):
        streamgd.fit(pd.DataFrame(np.zeros((4, 2))), target="y")


def test_bad_values_name_the_source_row_and_column(frame):
    mixed = frame.astype({"b": object})
    mixed.loc[2100, "b"] = "n/a"  # the 2101st row: messages count rows from 1, as in files
    with pytest.raises(DataError, match=r"<pandas.DataFrame>: row 2101: column 'b': cannot "):
        streamgd.fit(mixed, **SETTINGS)

    def batches():
        yield frame.iloc[:100]
        yield frame.iloc[100:200].drop(columns="c")

    with pytest.raises(DataError, match=r"item 1 of the stream has no column 'c'"):
        streamgd.fit(batches, **SETTINGS)

    def not_tables():
        yield [1, 2, 3]

    with pytest.raises(UsageError, match="item 0 of the stream is builtins.list"):
        streamgd.fit(not_tables, **SETTINGS)


def test_errors_from_the_api_are_streamgd_errors(frame):
    with pytest.raises(StreamgdError):
        streamgd.fit(frame, target="nope")
    with pytest.raises(UsageError, match="--cluster trains from files"):
        streamgd.fit(frame, target="y", cluster="tcp://127.0.0.1:1")


def test_categorical_and_string_targets_from_a_frame(frame):
    rng = np.random.default_rng(1)
    data = frame.assign(
        colour=pd.Categorical(rng.choice(["red", "green", "blue"], size=ROWS)),
        label=np.where(frame["y"] > frame["y"].median(), "high", "low"),
    ).drop(columns="y")
    model = streamgd.fit(data, target="label", loss="softmax", categorical=["colour"], epochs=2)
    assert set(model.classes) == {"high", "low"}
    assert streamgd.evaluate(model, data)["accuracy"] > 0.9
    info = streamgd.describe_dataset(data)  # the default target, a text label: described
    assert info["target"] == "label" and info["target_from"] == "default"
    assert info["features"] == ["a", "b", "c"] and info["categorical_candidates"] == ["colour"]


def test_a_one_shot_stream_of_a_multiclass_target(frame):
    """The classes of a one-shot stream come from its first rows (what the statistics pass
    reads); a label first seen later is an error naming the stream and the row."""
    label = np.where(frame["y"] > frame["y"].median(), "high", "low")
    data = frame.drop(columns="y").assign(label=label)

    def batches(rows):
        for start in range(0, rows, 250):
            yield data.iloc[start : min(start + 250, rows)]

    model = streamgd.fit(batches(ROWS), target="label", loss="softmax", stats_rows=1000, quiet=True)
    assert model.classes == ("high", "low")
    late = data.assign(label=np.where(np.arange(ROWS) < 2000, data["label"], "other"))

    def late_batches():
        for start in range(0, ROWS, 250):
            yield late.iloc[start : start + 250]

    with pytest.raises(DataError, match=r"<iterator>: row 2001: column 'label'"):
        streamgd.fit(late_batches(), target="label", loss="softmax", stats_rows=1000, quiet=True)
    with pytest.raises(UsageError, match="stats-rows 0"):
        streamgd.fit(batches(ROWS), target="label", loss="softmax", stats_rows=0)


def test_in_memory_validation_data(frame):
    """validation= takes data like the training data; it is scored after every epoch exactly
    as the same rows in a file would be."""
    train_rows, val_rows = frame.iloc[:2000], frame.iloc[2000:]
    settings = {**SETTINGS, "epochs": 3, "quiet": True}
    model = streamgd.fit(train_rows, validation=val_rows, **settings)
    assert [e["val_rows"] for e in model.history] == [1000] * 3
    assert model.history[-1]["val_mse"] == streamgd.evaluate(model, val_rows)["mse"]
    x, y = val_rows[["a", "b", "c"]], val_rows["y"]
    same = streamgd.fit(train_rows, validation=(x, y), **settings)
    assert [e["val_loss"] for e in same.history] == [e["val_loss"] for e in model.history]
    stopped = streamgd.fit(
        train_rows, validation=val_rows, patience=1, **{**settings, "epochs": 30}
    )
    assert len(stopped.history) < 30


def test_model_predict_takes_every_source_in_slices(tmp_path, frame, monkeypatch):
    from streamgd import model as model_module

    model = streamgd.fit(frame, **SETTINGS)
    whole = model.predict(frame)
    monkeypatch.setattr(model_module, "PREDICT_ROWS", 700)  # several slices, a short last one
    table = pa.Table.from_pandas(frame, preserve_index=False)
    path = str(tmp_path / "d.parquet")
    pq.write_table(table, path, row_group_size=SLICE)
    x = frame[["a", "b", "c"]].to_numpy()
    expected = x @ _coef(model) + model.coefficients()[1]
    np.testing.assert_allclose(whole, expected, rtol=1e-9)
    for source in (
        frame,
        table,
        x,
        x.astype(np.float32).tolist(),
        path,
        [path],
        lambda: table.to_batches(max_chunksize=333),
    ):
        got = model.predict(source)
        assert got.shape == (ROWS,)
        if isinstance(source, list) and not isinstance(source[0], str):  # float32 rows
            np.testing.assert_allclose(got, whole, atol=1e-4)
        else:  # the same numbers; slices of other sizes may round the products' sums apart
            np.testing.assert_allclose(got, whole, rtol=1e-12)
    assert model.predict(frame.iloc[:0]).shape == (0,)
    bad = frame.copy()
    bad.loc[1500, "a"] = np.inf
    with pytest.raises(DataError, match="row 1501: column 'a': infinite value"):
        model.predict(bad)
    with pytest.raises(UsageError, match="expected a pyarrow Table.*got int"):
        model.predict(5)


def test_a_list_of_tables_with_a_column_some_lack(frame):
    """As with files: a column only some sources have is left out of the default features,
    and naming it is an error naming a source that lacks it."""
    first = pa.Table.from_pandas(frame.iloc[:1500], preserve_index=False)
    second = pa.Table.from_pandas(frame.iloc[1500:].drop(columns="c"), preserve_index=False)
    model = streamgd.fit([first, second], **{**SETTINGS, "quiet": True})
    assert model.features == ("a", "b")
    with pytest.raises(StreamgdError, match=r"<pyarrow.Table 1>.*'c'"):
        streamgd.fit([first, second], features=["a", "b", "c"], quiet=True, **SETTINGS)
