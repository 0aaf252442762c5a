"""The Python API as a notebook user meets it: quiet by default with warnings as Python
warnings, a progress bar and epoch lines with ``verbose``, one-line reprs, scikit-learn style
accessors checked against numpy's least squares, and every mistake a StreamgdError with the
command line's message."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from integration_support import lstsq_fit, write_table

import streamgd
from streamgd.errors import CheckpointError, DataError, StreamgdWarning, UsageError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """2000 rows of y = 1 + 2 x1 - 0.3 x2 + noise, and the same rows as two files whose x2
    differ in type (float32, float64), which fit warns about."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 2)) * [1.0, 10.0]
    y = 1 + x @ [2.0, -0.3] + rng.normal(size=2000) * 0.1
    table = pa.table({"x1": x[:, 0], "x2": x[:, 1], "y": y})
    tmp = tmp_path_factory.mktemp("nb")
    path = write_table(table, tmp / "d.parquet")
    narrow = table.slice(0, 1000).cast(
        pa.schema([("x1", pa.float64()), ("x2", pa.float32()), ("y", pa.float64())])
    )
    widened = [
        write_table(narrow, tmp / "a.parquet"),
        write_table(table.slice(1000), tmp / "b.parquet"),
    ]
    return {"path": path, "widened": widened, "x": x, "y": y}


def _fit(path, **kw):
    return streamgd.fit(path, target="y", epochs=2, batch_size=256, **kw)


def test_quiet_by_default_and_warnings_are_python_warnings(data, capsys):
    _fit(data["path"])
    assert capsys.readouterr() == ("", "")
    with pytest.warns(StreamgdWarning, match="widened from float32") as seen:
        _fit(data["widened"])
    assert len(seen) == 1 and seen[0].filename == __file__  # the caller's line
    assert capsys.readouterr() == ("", "")


def test_quiet_silences_the_warnings_too(data, capsys):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _fit(data["widened"], quiet=True)
    assert seen == [] and capsys.readouterr() == ("", "")


def test_verbose_shows_progress_and_epoch_lines(data, capsys, monkeypatch):
    _fit(data["path"], verbose=True)
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in err] == ["epoch 1/2", "epoch 2/2"]
    # in a Jupyter kernel the bar is drawn (by tqdm's auto mode) although stderr is no terminal
    from streamgd.training import callbacks

    monkeypatch.setattr(callbacks, "_in_notebook", lambda: True)
    with pytest.warns(StreamgdWarning, match="widened"):  # a warning, not a line on stderr
        _fit(data["widened"], verbose=True)
    err = capsys.readouterr().err
    assert "%|" in err and "epoch 1/2" in err  # a tqdm bar (its text form, outside Jupyter)
    assert "warning:" not in err


def test_verbose_and_quiet_together_are_a_usage_error(data):
    with pytest.raises(UsageError, match="contradict"):
        _fit(data["path"], verbose=True, quiet=True)
    with pytest.raises(UsageError, match="verbose and quiet take True or False"):
        _fit(data["path"], verbose="yes")


def test_one_line_reprs(data, tmp_path):
    model = _fit(data["path"])
    loss = model.summary["final_loss"]
    assert repr(model) == f"<Model squared, 2 features -> y, 2 epochs, final loss {loss:.4g}>"
    result = streamgd.train([data["path"]], streamgd.FitConfig(target="y", epochs=1))
    assert "\n" not in repr(result) and "array" not in repr(result)
    assert "<TrainState step 2, 1 epoch(s) done, finished>" in repr(result)
    labels = np.array(["a", "b", "c"])[np.digitize(data["y"], [-5, 5])]
    path = write_table(
        pa.table({"x1": data["x"][:, 0], "x2": data["x"][:, 1], "kind": labels}),
        tmp_path / "c.parquet",
    )
    softmax = streamgd.fit(path, target="kind", loss="softmax", epochs=1)
    assert re.fullmatch(
        r"<Model softmax, 2 features -> kind \(3 classes\), 1 epoch, final loss [0-9.e-]+>",
        repr(softmax),
    )


def test_accessors_in_original_units(data, tmp_path):
    model = streamgd.fit(data["path"], target="y", solver="normal")
    coef, intercept = lstsq_fit(data["x"], data["y"])
    assert model.coef_.shape == (2,)
    np.testing.assert_allclose(model.coef_, coef, rtol=1e-6)
    assert model.intercept_ == pytest.approx(intercept, rel=1e-6)
    assert list(model.feature_names_in_) == ["x1", "x2"] and model.n_features_in_ == 2
    assert model.classes_ is None
    np.testing.assert_allclose(model.predict(data["x"]), data["x"] @ model.coef_ + model.intercept_)
    labels = np.array(["a", "b", "c"])[np.digitize(data["y"], [-5, 5])]
    path = write_table(
        pa.table({"x1": data["x"][:, 0], "x2": data["x"][:, 1], "kind": labels}),
        tmp_path / "c.parquet",
    )
    softmax = streamgd.fit(path, target="kind", loss="softmax", epochs=2)
    assert softmax.coef_.shape == (3, 2) and softmax.intercept_.shape == (3,)
    assert list(softmax.classes_) == ["a", "b", "c"]
    logits = data["x"] @ softmax.coef_.T + softmax.intercept_  # the classes' linear outputs
    expected = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(
        softmax.predict_proba(data["x"]), expected / expected.sum(1, keepdims=True), rtol=1e-6
    )


def test_accessors_with_a_categorical_column(tmp_path):
    rng = np.random.default_rng(2)
    shop = np.array(["s1", "s2", "s3"])[rng.integers(0, 3, 600)]
    x = rng.normal(size=600)
    path = write_table(pa.table({"x": x, "shop": shop, "y": x}), tmp_path / "d.parquet")
    model = streamgd.fit(path, target="y", categorical=["shop"], epochs=1)
    assert list(model.feature_names_in_) == ["x", "shop"] and model.n_features_in_ == 2
    coef, _ = model.coefficients()
    assert model.coef_.shape == (len(coef),) and list(coef)[:2] == ["x", "shop=s1"]
    assert "1 feature + 1 categorical -> y" in repr(model)


# -- mistakes in the API are StreamgdErrors with the command line's words ----------------------
@pytest.fixture(scope="module")
def model(data):
    return streamgd.fit(data["path"], target="y", solver="normal")


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda d, m: _fit(d["path"], features=3),
            UsageError,
            "--features must be a list of column names, got 3",
        ),
        (
            lambda d, m: _fit(d["path"], checkpoint_dir=5),
            UsageError,
            "--checkpoint-dir must be a path, got 5",
        ),
        (
            lambda d, m: streamgd.fit(d["path"], epochs="3"),
            UsageError,
            "--epochs must be an integer >= 1, got '3'",
        ),
        (
            lambda d, m: streamgd.fit(d["path"], target=3),
            UsageError,
            "--target must be a column name, got 3",
        ),
        (lambda d, m: _fit(d["path"], callbacks=object()), UsageError, "callbacks takes a list"),
        (
            lambda d, m: streamgd.train([d["path"]], {"target": "y"}),
            UsageError,
            "expected a streamgd.FitConfig, got dict",
        ),
        (
            lambda d, m: streamgd.train(
                [d["path"]], streamgd.FitConfig(target="y"), {"resume": True}
            ),
            UsageError,
            "expected a streamgd.RunOptions, got dict",
        ),
        (
            lambda d, m: streamgd.load(5),
            UsageError,
            "the model file must be a file name (a str or pathlib.Path), got 5",
        ),
        (lambda d, m: streamgd.load(None), UsageError, "got None"),
        (
            lambda d, m: streamgd.load(str(d["path"])),
            CheckpointError,
            "damaged (not a streamgd archive",
        ),
        (
            lambda d, m: streamgd.load(str(d["path"].rsplit("/", 1)[0])),
            CheckpointError,
            "is a directory, expected a file",
        ),
        (lambda d, m: m.save(5), UsageError, "must be a file name"),
        (
            lambda d, m: m.save(d["path"].rsplit("/", 1)[0]),
            streamgd.errors.WriteError,
            "is a directory, expected a file (EISDIR)",
        ),
        (
            lambda d, m: m.predict(pd.DataFrame({"x1": [1.0]})),
            DataError,
            "input lacks feature column(s) x2",
        ),
        (
            lambda d, m: m.predict(pd.DataFrame({"x1": ["a"], "x2": [1.0]})),
            DataError,
            "column 'x1': feature is not numeric",
        ),
        (
            lambda d, m: m.predict_proba(pa.table({"x2": [1.0]})),
            DataError,
            "input lacks feature column(s) x1",
        ),
        (
            lambda d, m: m.predict(np.zeros((2, 3))),
            DataError,
            "expected 2 feature columns (x1, x2), got 3",
        ),
        (
            lambda d, m: m.predict(np.zeros((2, 3, 4))),
            UsageError,
            "got a numpy array of float64 with shape (2, 3, 4)",
        ),
        (
            lambda d, m: m.predict(np.array([["a", "b"]])),
            UsageError,
            "2-d numeric array of 2 feature columns",
        ),
        (lambda d, m: m.predict(None), UsageError, "got NoneType"),
        (lambda d, m: m.predict("d.parquet"), UsageError, "got str"),
        (
            lambda d, m: streamgd.evaluate(3, [d["path"]]),
            UsageError,
            "expected a streamgd Model or the path of a model file, got int",
        ),
        (
            lambda d, m: streamgd.predict_files(m, [d["path"]], 5),
            UsageError,
            "the output must be a file name",
        ),
    ],
)
def test_api_mistakes_are_streamgd_errors(data, model, call, error, message):
    with pytest.raises(error) as caught:
        call(data, model)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_single_name_is_one_column_and_a_model_path_is_a_model(data, model, tmp_path):
    one = _fit(data["path"], features="x1")  # not the characters 'x' and '1'
    assert one.features == ("x1",)
    model.save(str(tmp_path / "m.npz"))
    assert streamgd.evaluate(str(tmp_path / "m.npz"), [data["path"]]) == streamgd.evaluate(
        model, [data["path"]]
    )
    out = tmp_path / "p.parquet"
    table = pa.table({"x1": [1.0, 2.0], "x2": [0.0, 1.0], "y": [0.0, 0.0], "key": ["a", "b"]})
    src = write_table(table, tmp_path / "k.parquet")
    assert streamgd.predict_files(model, [src], str(out), id_columns="key") == 2
    assert pa.parquet.read_table(out).column_names == ["key", "prediction"]
