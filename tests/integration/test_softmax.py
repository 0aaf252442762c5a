"""Multi-class softmax regression: string and integer labels, against a numpy reference."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streamgd
from streamgd.cli import run
from streamgd.config import FitConfig, RunOptions
from streamgd.errors import DataError
from streamgd.training import train
from streamgd.training.checkpoint import CheckpointManager, load_checkpoint

CLASSES = ["bird", "cat", "dog"]


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory):
    rng = np.random.default_rng(11)
    n = 4500
    x = rng.normal(size=(n, 2)) * [1.0, 20.0] + [0.0, 100.0]
    z = (x - [0.0, 100.0]) / [1.0, 20.0]
    logits = z @ np.array([[1.5, -1.0, 0.0], [0.5, 1.0, -1.2]]) + [0.2, 0.0, -0.1]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    codes = np.array([rng.choice(3, p=p) for p in probs])
    labels = np.array(CLASSES, dtype=object)[codes]
    directory = tmp_path_factory.mktemp("mc")
    paths = []
    for i in range(3):
        part = slice(i * 1500, (i + 1) * 1500)
        table = pa.table(
            {"a": x[part, 0], "b": x[part, 1], "label": labels[part].tolist(), "code": codes[part]}
        )
        path = directory / f"p{i}.parquet"
        pq.write_table(table, path, row_group_size=500)
        paths.append(str(path))
    return paths, x, codes


def _reference_logloss(x, codes, k=3, iters=3000):
    """Full-batch gradient descent on standardised features in plain numpy (a convex problem:
    enough iterations reach the optimum)."""
    z = (x - x.mean(0)) / x.std(0)
    a = np.c_[z, np.ones(len(z))]
    w = np.zeros((a.shape[1], k))
    onehot = np.eye(k)[codes]
    for _ in range(iters):
        p = np.exp(a @ w)
        p /= p.sum(axis=1, keepdims=True)
        w -= 1.0 * a.T @ (p - onehot) / len(a)
    p = np.exp(a @ w)
    p /= p.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(len(p)), codes])))


def test_softmax_with_string_labels_matches_a_numpy_reference(three_classes):
    paths, x, codes = three_classes
    model = streamgd.fit(paths, target="label", features=["a", "b"], loss="softmax", epochs=10)
    assert model.classes == tuple(CLASSES)
    probs = model.predict_proba(x)
    assert probs.shape == (len(x), 3) and np.allclose(probs.sum(axis=1), 1.0)
    logloss = float(-np.mean(np.log(probs[np.arange(len(x)), codes])))
    assert logloss <= _reference_logloss(x, codes) * 1.01
    labels = model.predict(x)
    assert set(labels) <= set(CLASSES)
    assert np.mean(labels == np.array(CLASSES, dtype=object)[codes]) > 0.6
    result = streamgd.evaluate(model, paths)
    assert result["logloss"] == pytest.approx(logloss, rel=1e-6)
    assert set(result) >= {"logloss", "accuracy"} and "auc" not in result


def test_softmax_with_integer_labels_and_coefficients_per_class(three_classes, tmp_path):
    paths, x, codes = three_classes
    model = streamgd.fit(paths, target="code", features=["a", "b"], loss="softmax", epochs=5)
    assert model.classes == (0, 1, 2)
    coef, intercept = model.coefficients()
    assert set(coef) == {"0", "1", "2"} and set(coef["0"]) == {"a", "b"}
    # coefficients in original units reproduce the logits
    logits = np.stack([x @ [coef[c]["a"], coef[c]["b"]] + intercept[c] for c in "012"], 1)
    ref = model.decision(x)
    np.testing.assert_allclose(
        logits - logits.mean(1, keepdims=True), ref - ref.mean(1, keepdims=True), atol=1e-9
    )
    saved = str(tmp_path / "m.npz")
    model.save(saved)
    again = streamgd.load(saved)
    assert again.classes == (0, 1, 2)
    np.testing.assert_array_equal(again.predict_proba(x), model.predict_proba(x))


def test_softmax_cli_predict_and_inspect(three_classes, tmp_path, capsys):
    paths, x, codes = three_classes
    out = str(tmp_path / "m.npz")
    assert (
        run(
            [
                "fit",
                *paths,
                "--target",
                "label",
                "--features",
                "a,b",
                "--loss",
                "softmax",
                "-o",
                out,
                "--quiet",
            ]
        )
        == 0
    )
    pred = str(tmp_path / "p.parquet")
    assert run(["predict", out, *paths, "-o", pred, "--id", "code"]) == 0
    table = pq.read_table(pred)
    assert table.column_names == ["code", "prediction", "proba_bird", "proba_cat", "proba_dog"]
    assert table.num_rows == len(x)
    capsys.readouterr()
    assert run(["inspect", out]) == 0
    text = capsys.readouterr().out
    assert "bird" in text and "per class" in text


def test_softmax_unknown_class_at_evaluation_is_an_error(three_classes, tmp_path):
    paths, x, codes = three_classes
    model = streamgd.fit(paths, target="label", features=["a", "b"], loss="softmax", epochs=1)
    other = tmp_path / "o.parquet"
    pq.write_table(pa.table({"a": [0.0, 1.0], "b": [1.0, 2.0], "label": ["cat", "fish"]}), other)
    with pytest.raises(DataError, match="class 'fish' was not among the training classes"):
        streamgd.evaluate(model, [str(other)])


def test_softmax_resume_is_bit_identical(three_classes, tmp_path):
    paths, _, _ = three_classes
    config = FitConfig(
        target="label", features=("a", "b"), loss="softmax", epochs=2, batch_size=256
    )
    full_dir = str(tmp_path / "full")
    full = train(paths, config, RunOptions(checkpoint_dir=full_dir, checkpoint_every=5, keep=50))
    middle = [p for p in CheckpointManager(full_dir).paths() if load_checkpoint(p).step == 10]
    resume_dir = tmp_path / "r"
    os.makedirs(resume_dir)
    shutil.copy(middle[0], resume_dir)
    again = train(paths, config, RunOptions(checkpoint_dir=str(resume_dir), resume=True))
    assert np.array_equal(again.model.weights, full.model.weights)
    assert np.array_equal(again.model.intercept, full.model.intercept)
