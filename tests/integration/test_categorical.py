"""Categorical features (--categorical, --max-categories, --hash-bits): accuracy against numpy
on the explicit one-hot expansion, the training-time encoding applied by predict/evaluate
(unseen values and nulls included), hashing checked against zlib directly, exact resume,
CSV and integer columns, and the errors users can cause."""

from __future__ import annotations

import json
import os
import zlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from conftest import Interrupt, StopAt
from integration_support import invoke_ok, logloss, newton_fit, run_cli

import streamgd
from streamgd.config import FitConfig, RunOptions
from streamgd.errors import DataError, UsageError
from streamgd.training import train
from streamgd.training.checkpoint import CheckpointManager

COLORS = ["red", "green", "blue", "black", "white"]
COLOR_EFFECT = dict(zip(COLORS, [3.0, -2.0, 0.5, 1.0, -1.0], strict=True))
CITIES = [f"city{i}" for i in range(30)]


def make_frame(rows: int, seed: int) -> pd.DataFrame:
    """Two numeric features, a uniform 5-value colour and a skewed 30-value city (with some
    nulls), a regression target and a 0/1 target that both depend on everything."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2)) * [1.0, 10.0] + [0.0, 50.0]
    color = np.array(COLORS)[rng.integers(0, 5, rows)]
    freq = 1 / np.arange(1, 31)
    city = np.array(CITIES, dtype=object)[rng.choice(30, rows, p=freq / freq.sum())]
    city[rng.random(rows) < 0.03] = None
    city_effect = np.array([0.0 if c is None else np.sin(int(c[4:])) * 2 for c in city])
    z = x @ [1.0, 0.2] + np.vectorize(COLOR_EFFECT.get)(color) + city_effect - 10.0
    y = z + rng.normal(size=rows)
    label = (rng.random(rows) < 1 / (1 + np.exp(-z / 2))).astype(np.float64)
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "color": color, "city": city, "y": y,
                         "label": label})  # fmt: skip


def one_hot(frame: pd.DataFrame) -> np.ndarray:
    """The explicit design matrix: numeric features, then an indicator per colour and per
    city value (null included) — the oracle's view of the same model."""
    city = frame["city"].fillna("<null>")
    blocks = [frame[["a", "b"]].to_numpy()]
    blocks += [(frame["color"] == v).to_numpy(float)[:, None] for v in COLORS]
    blocks += [(city == v).to_numpy(float)[:, None] for v in sorted(set(city))]
    return np.hstack(blocks)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cat")
    frame = make_frame(60_000, seed=5)
    paths = []
    for i, part in enumerate(np.array_split(np.arange(len(frame)), 3)):
        path = str(root / f"part-{i}.parquet")
        pq.write_table(pa.Table.from_pandas(frame.iloc[part], preserve_index=False), path,
                       row_group_size=5000)  # fmt: skip
        paths.append(path)
    return frame, paths


def fit(paths, **settings):
    settings = {"features": ("a", "b"), "categorical": ("color", "city"), **settings}
    return streamgd.fit(paths, target=settings.pop("target", "y"), **settings)


def test_one_hot_regression_reaches_the_least_squares_optimum(data):
    frame, paths = data
    design = np.c_[one_hot(frame), np.ones(len(frame))]
    w = np.linalg.lstsq(design, frame["y"], rcond=None)[0]
    best = np.mean((design @ w - frame["y"]) ** 2)
    model = fit(paths, epochs=3)
    mse = np.mean((model.predict(frame) - frame["y"]) ** 2)
    assert mse <= best * 1.001, (mse, best)
    # the fitted effects match the oracle's up to the constant every indicator block shares
    coef, _ = model.coefficients()
    ours = np.array([coef[f"color={v}"] for v in COLORS])
    theirs = w[2:7]
    assert np.allclose(ours - ours.mean(), theirs - theirs.mean(), atol=0.03)


def test_one_hot_logistic_reaches_the_newton_optimum(data):
    frame, paths = data
    design = one_hot(frame)
    coef, b = newton_fit(design, frame["label"].to_numpy())
    best = logloss(frame["label"].to_numpy(), 1 / (1 + np.exp(-(design @ coef + b))))
    model = fit(paths, target="label", loss="logistic", epochs=3)
    ours = logloss(frame["label"].to_numpy(), model.predict(frame))
    assert ours <= best * 1.002, (ours, best)


def test_vocabulary_is_capped_by_frequency_and_the_rest_is_other(data):
    frame, paths = data
    model = fit(paths, epochs=1, max_categories=4)
    city = next(c for c in model.spec.categoricals if c.name == "city")
    counts = frame["city"].value_counts(dropna=False)
    assert list(city.vocabulary) == list(counts.index[:4])  # the 4 most frequent, in order
    coef, _ = model.coefficients()
    assert "city=(other)" in coef and "city=city20" not in coef
    # every city outside the vocabulary predicts exactly like an unseen one
    row = frame.iloc[[0, 0, 0]].copy()
    row["city"] = ["city20", "city29", "never-seen"]
    pred = model.predict(row)
    assert pred[0] == pred[1] == pred[2]


def test_predict_and_evaluate_apply_the_training_encoding(data, tmp_path):
    frame, paths = data
    model_path = str(tmp_path / "m.npz")
    invoke_ok("fit", *paths, "--target", "y", "--features", "a,b", "--categorical", "color",
              "--categorical", "city", "--epochs", "1", "-o", model_path, "--quiet")  # fmt: skip
    model = streamgd.load(model_path)
    # new data: unseen colours and cities, nulls, a dictionary-typed column
    test = frame.iloc[:500].copy()
    test.loc[test.index[:50], "color"] = "purple"
    test.loc[test.index[50:100], "city"] = "atlantis"
    test.loc[test.index[100:120], "city"] = None
    table = pa.Table.from_pandas(test, preserve_index=False)
    table = table.set_column(
        table.schema.get_field_index("color"), "color", table.column("color").dictionary_encode()
    )
    path = str(tmp_path / "new.parquet")
    pq.write_table(table, path)
    # the oracle: coefficients from inspect, applied by hand
    report = json.loads(invoke_ok("inspect", model_path, "--json").stdout)
    coef, intercept = report["coefficients"], report["intercept"]

    def weight(name, value):
        key = f"{name}={'(null)' if pd.isna(value) else value}"
        return coef.get(key, coef[f"{name}=(other)"])

    expected = np.array(
        [intercept + r.a * coef["a"] + r.b * coef["b"] + weight("color", r.color)
         + weight("city", r.city) for r in test.itertuples()]
    )  # fmt: skip
    out = str(tmp_path / "pred.parquet")
    invoke_ok("predict", model_path, path, "-o", out)
    got = pq.read_table(out).column("prediction").to_numpy()
    assert np.allclose(got, expected, rtol=1e-9, atol=1e-9)
    assert np.allclose(model.predict(test), expected, rtol=1e-9, atol=1e-9)
    scores = json.loads(invoke_ok("evaluate", model_path, path, "--json").stdout)
    assert scores["mse"] == pytest.approx(np.mean((expected - test["y"]) ** 2), rel=1e-9)
    assert report["categorical"]["color"] == {
        "encoding": "one-hot",
        "categories": 6,
        "other": "(other)",
    }


def test_hashing_matches_crc32_buckets(data):
    frame, paths = data
    bits = 6
    model = fit(paths, epochs=2, hash_bits=bits)
    assert [c.size for c in model.spec.categoricals] == [64, 64]
    weights = model.code_weights * model.spec.target_scale

    def bucket(name, value):
        raw = b"\x00" if pd.isna(value) else value.encode()
        return zlib.crc32(raw, zlib.crc32(name.encode())) % (1 << bits)

    part = frame.iloc[:300]
    numeric = model.predict(part.assign(color="red", city="x")) - weights[bucket("color", "red")]
    numeric -= weights[64 + bucket("city", "x")]
    expected = (
        numeric
        + np.array([weights[bucket("color", v)] for v in part["color"]])
        + np.array([weights[64 + bucket("city", v)] for v in part["city"]])
    )
    assert np.allclose(model.predict(part), expected, atol=1e-9)
    # the oracle for a hashed model: least squares over the bucket indicators, collisions and all
    color = np.array([bucket("color", v) for v in frame["color"]])
    city = np.array([bucket("city", v) for v in frame["city"]])
    design = np.c_[frame[["a", "b"]].to_numpy(), np.eye(64)[color], np.eye(64)[city]]
    w = np.linalg.lstsq(np.c_[design, np.ones(len(frame))], frame["y"], rcond=None)[0]
    best = np.mean((np.c_[design, np.ones(len(frame))] @ w - frame["y"]) ** 2)
    mse = np.mean((model.predict(frame) - frame["y"]) ** 2)
    assert mse <= best * 1.002, (mse, best)
    report = model.inspect()
    assert report["categorical"]["city"] == {"encoding": "hash", "bits": 6, "buckets": 64}
    assert len(report["coefficients"]) <= 2 + 20  # numeric features + the largest buckets


def test_resume_mid_epoch_is_bit_identical(data, tmp_path):
    _, paths = data
    config = FitConfig(target="y", features=("a", "b"), categorical=("color", "city"),
                       epochs=2, batch_size=256, shuffle_buffer=3000)  # fmt: skip
    full = train(paths, config)
    directory = str(tmp_path / "ck")
    options = RunOptions(checkpoint_dir=directory, checkpoint_every=7, resume=True)
    with pytest.raises(Interrupt):
        train(paths, config, options, callbacks=[StopAt(100)])
    assert CheckpointManager(directory).paths()
    resumed = train(paths, config, options)
    assert resumed.resumed_from is not None
    assert np.array_equal(resumed.state.params, full.state.params)
    assert resumed.model.history == full.model.history


def test_csv_and_integer_categories(tmp_path):
    rng = np.random.default_rng(3)
    n = 6000
    store = rng.integers(100, 105, n)  # an integer column used as categories
    kind = np.array(["a", "b", "c"])[rng.integers(0, 3, n)]
    y = (store - 102) * 2.0 + (kind == "b") * 5.0 + rng.normal(size=n) * 0.1
    path = str(tmp_path / "d.csv")
    pacsv.write_csv(pa.table({"store": store, "kind": kind, "y": y}), path)
    model = streamgd.fit(
        path, target="y", categorical=["store", "kind"], epochs=4, batch_size=256, quiet=True
    )  # quiet: the rows come sorted by nothing, but the small buffer is warned about
    assert model.features == ()  # no numeric feature left: the categories are the model
    coef, _ = model.coefficients()
    assert coef["store=104"] - coef["store=100"] == pytest.approx(8.0, abs=0.05)
    assert coef["kind=b"] - coef["kind=a"] == pytest.approx(5.0, abs=0.05)
    frame = pd.DataFrame({"store": [104, 100], "kind": ["b", "a"]})
    assert np.diff(model.predict(frame))[0] == pytest.approx(-13.0, abs=0.1)


def test_validation_with_holdout_uses_the_encoding(data):
    _, paths = data
    model = fit(paths, epochs=2, holdout=0.2)
    assert model.history[-1]["val_rows"] > 10_000
    assert model.history[-1]["val_mse"] < 1.1


def test_model_without_table_input_is_refused(data):
    _, paths = data
    model = fit(paths[:1], epochs=1)
    with pytest.raises(DataError, match="categorical features"):
        model.predict(np.zeros((2, 2)))
    with pytest.raises(DataError, match="lacks feature column"):
        model.predict(pd.DataFrame({"a": [1.0], "b": [2.0], "color": ["red"]}))


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--categorical", "nope"], 2, "no categorical column 'nope'"),
        (["--categorical", "y"], 2, "is the target"),
        (["--hash-bits", "8"], 2, "--hash-bits encodes --categorical columns"),
        (["--categorical", "city", "--solver", "normal"], 2, "--solver normal"),
        (["--features", "a,city"], 1, "name it with --categorical"),
        (["--categorical", "city", "--hash-bits", "40"], 2, "--hash-bits"),
    ],
)
def test_errors(data, capsys, args, code, message):
    _, paths = data
    status, out, err = run_cli(capsys, "fit", paths[0], "--target", "y", "--epochs", "1", *args)
    assert status == code, err
    assert message in err and "Traceback" not in err
    if code == 1:  # ours; click's usage errors add its usage lines
        assert len(err.strip().splitlines()) == 1


def test_predict_refuses_files_without_the_categorical_column(data, tmp_path, capsys):
    frame, paths = data
    model_path = str(tmp_path / "m.npz")
    fit(paths[:1], epochs=1).save(model_path)
    path = str(tmp_path / "bare.parquet")
    pq.write_table(pa.Table.from_pandas(frame[["a", "b", "y"]].iloc[:10]), path)
    status, _, err = run_cli(capsys, "predict", model_path, path, "-o", str(tmp_path / "p.csv"))
    assert status == 1 and "categorical feature column(s) color, city" in err
    assert not os.path.exists(tmp_path / "p.csv")


def test_softmax_with_categories_fits_as_well_as_the_true_model(tmp_path):
    """Multi-class with a categorical feature: per-class code weights. The fitted log loss is
    no worse than that of the model that generated the labels (the MLE is at most that)."""
    rng = np.random.default_rng(0)
    n = 30_000
    group = np.array(["a", "b", "c"])[rng.integers(0, 3, n)]
    x = rng.normal(size=n)
    logits = np.stack([x, -x + (group == "b") * 2, (group == "c") * 3.0], axis=1)
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    code = (prob.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    label = np.array(["u", "v", "w"])[code]
    path = str(tmp_path / "sm.parquet")
    pq.write_table(pa.table({"x": x, "g": group, "lab": label}), path, row_group_size=5000)
    model = streamgd.fit(path, target="lab", loss="softmax", categorical=["g"], features=["x"],
                         epochs=3)  # fmt: skip
    ours = model.predict_proba(pa.table({"x": x, "g": group}))[np.arange(n), code]
    truth = prob[np.arange(n), code]
    assert -np.mean(np.log(ours)) <= -np.mean(np.log(truth)) + 0.002
    assert model.predict(pa.table({"x": [0.0], "g": ["never-seen"]}))[0] in ("u", "v", "w")


def test_warm_start_keeps_the_encoding_and_checks_the_columns(data, tmp_path):
    frame, paths = data
    first = fit(paths[:1], epochs=1)
    model_path = str(tmp_path / "m.npz")
    first.save(model_path)
    warm = streamgd.fit(paths[1:], target="y", features=("a", "b"), categorical=("color", "city"),
                        epochs=1, init=model_path)  # fmt: skip
    assert warm.spec.categoricals == first.spec.categoricals  # the model's vocabulary
    best = np.mean((first.predict(frame) - frame["y"]) ** 2)
    assert np.mean((warm.predict(frame) - frame["y"]) ** 2) <= best * 1.01
    with pytest.raises(UsageError, match=r"categorical features are \[color, city\]"):
        streamgd.fit(paths[1:], target="y", features=("a", "b"), categorical=("color",),
                     init=model_path)  # fmt: skip


def test_a_hive_partition_key_is_a_categorical_feature(tmp_path):
    """region=... directories: the key is a string column that --categorical encodes."""
    rng = np.random.default_rng(6)
    effect = {"eu": 1.0, "us": -2.0, "asia": 0.5}
    for region, shift in effect.items():
        os.makedirs(tmp_path / f"region={region}")
        x = rng.normal(size=3000)
        y = 2 * x + shift + rng.normal(size=3000) * 0.1
        pq.write_table(pa.table({"x": x, "y": y}), tmp_path / f"region={region}" / "p.parquet")
    with pytest.warns(streamgd.errors.StreamgdWarning, match="looks ordered"):  # by region
        model = streamgd.fit(str(tmp_path), target="y", categorical=["region"], epochs=3)
    coef, _ = model.coefficients()
    assert model.features == ("x",) and coef["x"] == pytest.approx(2.0, abs=0.01)
    assert coef["region=us"] - coef["region=eu"] == pytest.approx(-3.0, abs=0.02)
    assert coef["region=asia"] - coef["region=eu"] == pytest.approx(-0.5, abs=0.02)


def test_model_file_version(data, tmp_path):
    """A categorical model is written as version 2 (older readers refuse it instead of
    predicting without its code weights); a model without categoricals stays version 1."""
    from streamgd.archive import read_archive

    _, paths = data
    with_codes, plain = str(tmp_path / "c.npz"), str(tmp_path / "p.npz")
    fit(paths[:1], epochs=1).save(with_codes)
    fit(paths[:1], epochs=1, categorical=None).save(plain)
    assert read_archive(with_codes, kind="model", max_version=2)[0]["version"] == 2
    assert read_archive(plain, kind="model", max_version=2)[0]["version"] == 1
    with pytest.raises(streamgd.errors.CheckpointError):
        read_archive(with_codes, kind="model", max_version=1)
