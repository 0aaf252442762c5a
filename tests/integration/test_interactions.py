"""--interactions against explicit oracles: one step equals the step on the expanded design
matrix built with numpy, fits reach least squares / a Newton logistic fit on that matrix,
hashed crosses equal a reference computation of the buckets; and the features keep working
with the shuffle, exact resume, warm start, predict/evaluate on unseen values, the API, the
scikit-learn estimators and --l1."""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import Interrupt, StopAt
from integration_support import logloss, run_cli

import streamgd
from streamgd.config import FitConfig, RunOptions
from streamgd.decode import Decoder
from streamgd.errors import UsageError
from streamgd.features.interactions import parse_terms
from streamgd.sources import open_dataset
from streamgd.step import make_step
from streamgd.training import train
from streamgd.training.checkpoint import CheckpointManager
from streamgd.training.init import initial_state

A = ["a0", "a1", "a2", "a3"]
B = ["b0", "b1", "b2"]
SLOPE = {"a0": 1.0, "a1": -2.0, "a2": 0.5, "a3": 0.0}


def make_table(rows: int, seed: int) -> pa.Table:
    """Three categorical and two numeric columns; the target needs every interaction kind: a
    per-(a, b) effect, a per-a slope of x1 and the product x1*x2 (c is noise)."""
    rng = np.random.default_rng(seed)
    a = np.array(A)[rng.integers(0, 4, rows)]
    b = np.array(B)[rng.integers(0, 3, rows)]
    x1 = rng.normal(size=rows) * 2 + 1
    x2 = rng.normal(size=rows) + 3
    pair = {(u, v): np.sin(3 * i + j) * 2 for i, u in enumerate(A) for j, v in enumerate(B)}
    z = np.array([pair[k] for k in zip(a, b, strict=True)])
    z += x1 * np.vectorize(SLOPE.get)(a) + 0.5 * x1 * x2 - 0.3 * x2
    y = z + rng.normal(size=rows) * 0.5
    label = (rng.random(rows) < 1 / (1 + np.exp(-(z - z.mean()) / 2))).astype(np.float64)
    c = np.array(["c0", "c1"])[rng.integers(0, 2, rows)]
    return pa.table({"a": a, "b": b, "x1": x1, "x2": x2, "y": y, "label": label, "c": c})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("inter")
    table = make_table(24_000, seed=3)
    paths = []
    for i in range(2):
        path = str(root / f"part-{i}.parquet")
        pq.write_table(table.slice(i * 12_000, 12_000), path, row_group_size=3000)
        paths.append(path)
    return table, paths


TERMS = ("a*b", "x1*a", "x1*x2")


def fit(paths, **settings):
    settings = {"features": ("x1", "x2"), "categorical": ("a", "b"), **settings}
    settings.setdefault("interactions", TERMS)
    return streamgd.fit(paths, target=settings.pop("target", "y"), **settings)


def indicator(values: np.ndarray, levels) -> np.ndarray:
    return np.stack([np.array([v == lv for v in values], dtype=float) for lv in levels], 1)


def oracle_design(table: pa.Table, terms=TERMS) -> np.ndarray:
    """The explicitly expanded design matrix (no intercept): x1, x2, one-hot a and b, then
    for each term of ``terms`` (among TERMS and x1*x2*a) its columns: one-hot (a, b) pairs,
    x1 times one-hot a, x1*x2, or x1*x2 and x1*x2 times one-hot a."""
    a, b = table["a"].to_numpy(zero_copy_only=False), table["b"].to_numpy(zero_copy_only=False)
    x1, x2 = table["x1"].to_numpy(), table["x2"].to_numpy()
    pairs = np.array([f"{u}|{v}" for u, v in zip(a, b, strict=True)])
    levels = [f"{u}|{v}" for u in A for v in B]
    blocks = [np.c_[x1, x2], indicator(a, A), indicator(b, B)]
    columns = {
        "a*b": [indicator(pairs, levels)],
        "x1*a": [x1[:, None] * indicator(a, A)],
        "x1*x2": [(x1 * x2)[:, None]],
        "x1*x2*a": [(x1 * x2)[:, None], (x1 * x2)[:, None] * indicator(a, A)],
    }
    for term in terms:
        blocks += columns[term]
    return np.hstack(blocks)


def spec_design(table: pa.Table, spec) -> np.ndarray:
    """The design matrix the model's parameters multiply, built from the spec's statistics
    and vocabularies with numpy alone: standardised features, 1, then one column per code."""
    cols = {n: table[n].to_numpy(zero_copy_only=False) for n in table.column_names}
    numeric = {"x1": cols["x1"], "x2": cols["x2"], "x1*x2": cols["x1"] * cols["x2"]}
    z = np.stack([(numeric[n] - c) / s for n, c, s in zip(spec.names, spec.center, spec.scale,
                                                           strict=True)], 1)  # fmt: skip
    blocks = [z, np.ones((len(z), 1))]
    for c in spec.categoricals:
        parts = c.parts or (c.name,)
        keys = list(zip(*(cols[p] for p in parts), strict=True))
        vocab = [tuple(v.split("\x1f")) for v in c.vocabulary]
        index = {v: i for i, v in enumerate(vocab)}
        onehot = np.zeros((len(z), c.size))
        onehot[np.arange(len(z)), [index.get(k, c.size - 1) for k in keys]] = 1.0
        if c.slope is not None:
            onehot *= z[:, spec.names.index(c.slope)][:, None]
        blocks.append(onehot)
    return np.hstack(blocks)


STEP_TERMS = [("a*b",), ("x1*a",), ("x1*x2",), ("x1*x2*a",), ("a*b*c",), ("x1*a*b",), TERMS]


@pytest.mark.parametrize("terms", STEP_TERMS)
def test_one_step_equals_the_step_on_the_expanded_matrix(data, terms):
    table, paths = data
    config = FitConfig(target="y", features=("x1", "x2"), categorical=("a", "b", "c"),
                       interactions=terms, precondition=False, lr=0.3, l2=0.01)  # fmt: skip
    state = initial_state(open_dataset(paths), config, RunOptions())
    spec = state.spec
    rng = np.random.default_rng(1)
    params = rng.normal(size=state.params.shape)
    batch = table.slice(100, 512)
    raw = Decoder.for_training(spec, loss=config.make_loss(), dtype=np.float64).decode(
        batch, "x", 0
    )[0]
    step = make_step(config, spec, config.make_loss(), config.make_optimizer())
    ours = step(params, state.opt_state, raw, 0.3).params
    if "x1*x2*a" in terms:  # the design below knows x1*x2 under this name too
        assert "x1*x2" in spec.names
    e = spec_design(batch, spec)
    t = (batch["y"].to_numpy() - spec.target_center) / spec.target_scale
    g = e @ params - t  # the squared loss's gradient with respect to the prediction
    grad = e.T @ g / len(t)
    penalised = np.ones(len(params), bool)
    penalised[len(spec.names)] = False  # not the intercept
    grad += 0.01 * params * penalised
    np.testing.assert_allclose(ours, params - 0.3 * grad, rtol=1e-9, atol=1e-12)
    # the spec's statistics of the product are the data's
    if "x1*x2" in spec.names:
        prod = table["x1"].to_numpy() * table["x2"].to_numpy()
        j = spec.names.index("x1*x2")
        assert spec.center[j] == pytest.approx(prod.mean(), rel=1e-6)
        assert spec.scale[j] == pytest.approx(prod.std(), rel=1e-3)


@pytest.mark.parametrize("terms", [("a*b",), ("x1*a",), ("x1*x2",), ("x1*x2*a",), TERMS])
def test_regression_reaches_least_squares_on_the_expanded_matrix(data, terms):
    table, paths = data
    design = np.c_[oracle_design(table, terms), np.ones(table.num_rows)]
    y = table["y"].to_numpy()
    w = np.linalg.lstsq(design, y, rcond=None)[0]
    best = np.mean((design @ w - y) ** 2)
    model = fit(paths, interactions=terms, epochs=4)
    mse = np.mean((model.predict(table) - y) ** 2)
    assert mse <= best * 1.001, (mse, best)
    if terms == TERMS:
        plain = fit(paths, interactions=None, epochs=3)
        assert np.mean((plain.predict(table) - y) ** 2) > 2 * best  # the crosses are needed


def newton(x: np.ndarray, y: np.ndarray, iters: int = 30) -> float:
    """Log loss of the maximum-likelihood logistic fit on ``x`` (with an intercept), by
    Newton steps solved by least squares (the expanded matrix has dependent columns)."""
    a = np.c_[x, np.ones(len(x))]
    w = np.zeros(a.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(a @ w)))
        h = (a * (p * (1 - p))[:, None]).T @ a
        w -= np.linalg.lstsq(h, a.T @ (p - y), rcond=1e-12)[0]
    return logloss(y, 1 / (1 + np.exp(-(a @ w))))


@pytest.mark.parametrize("terms", [("x1*x2*a",), TERMS])
def test_logistic_reaches_the_newton_fit_on_the_expanded_matrix(data, terms):
    table, paths = data
    y = table["label"].to_numpy()
    best = newton(oracle_design(table, terms), y)
    model = fit(paths, target="label", loss="logistic", interactions=terms, epochs=4)
    ours = logloss(y, model.predict(table))
    assert ours <= best * 1.001, (ours, best)


def test_names_say_what_each_weight_is(data):
    _, paths = data
    model = fit(paths, epochs=1)
    coef = model.inspect()["coefficients"]
    assert {"x1*x2", "a=a1*b=b2", "a*b=(other)", "x1|a=a3", "x1|a=(other)"} <= set(coef)
    assert model.inspect()["interactions"] == {"a*b": "cross", "x1*a": "slope",
                                               "x1*x2": "product"}  # fmt: skip


def test_hashed_crosses_equal_the_reference_buckets(data):
    table, paths = data
    model = fit(paths, interactions=("a*b", "x1*b"), hash_bits=5, epochs=1)
    spec = model.spec
    cross = spec.categoricals[2]
    assert (cross.name, cross.bits) == ("a*b", 5)
    salt = zlib.crc32(b"a*b")
    a, b = table["a"].to_pylist(), table["b"].to_pylist()
    expected = [zlib.crc32(f"{u}\x1f{v}".encode(), salt) % 32 for u, v in zip(a, b, strict=True)]
    codes = spec.table_codes(table) - spec.code_offsets
    assert codes[:, 2].tolist() == expected
    slope_salt = zlib.crc32(b"x1*b")
    assert codes[:, 3].tolist() == [zlib.crc32(v.encode(), slope_salt) % 32 for v in b]
    assert "x1|b#3" in model.inspect()["coefficients"] or len(spec.code_labels()) == 4 * 32
    assert spec.code_labels()[2 * 32 + 7] == "a*b#7"


def test_unseen_values_predict_and_evaluate(data, tmp_path):
    table, paths = data
    model = fit(paths, epochs=1)
    new = table.slice(0, 50).set_column(0, "a", pa.array(["never"] * 50))
    path = str(tmp_path / "new.parquet")
    pq.write_table(new, path)
    p = model.predict(new)
    assert np.isfinite(p).all()
    report = streamgd.evaluate(model, path)
    assert np.isfinite(report["mse"])
    # a value of a seen pair's parts but in an unseen pair still gets each one's weight
    hashed = fit(paths, epochs=1, hash_bits=4)
    assert np.isfinite(hashed.predict(new)).all()


def test_resume_mid_epoch_is_bit_identical(data, tmp_path):
    _, paths = data
    config = FitConfig(target="y", features=("x1", "x2"), categorical=("a", "b"),
                       interactions=TERMS, epochs=2, batch_size=256,
                       shuffle_buffer=3000)  # fmt: skip
    full = train(paths, config)
    directory = str(tmp_path / "ck")
    options = RunOptions(checkpoint_dir=directory, checkpoint_every=7, resume=True)
    with pytest.raises(Interrupt):
        train(paths, config, options, callbacks=[StopAt(60)])
    assert CheckpointManager(directory).paths()
    resumed = train(paths, config, options)
    assert resumed.resumed_from is not None
    assert np.array_equal(resumed.state.params, full.state.params)


def test_shuffle_orders_differ_but_both_fit(data):
    table, paths = data
    y = table["y"].to_numpy()
    one = fit(paths, epochs=2, seed=1)
    two = fit(paths, epochs=2, seed=2)
    assert not np.array_equal(one.params(), two.params())
    mse = [np.mean((m.predict(table) - y) ** 2) for m in (one, two)]
    assert abs(mse[0] - mse[1]) < 0.01 * mse[0]


def test_warm_start_continues_and_checks_the_interactions(data, tmp_path):
    table, paths = data
    first = fit(paths, epochs=1)
    path = str(tmp_path / "m.sgd")
    first.save(path)
    warm = fit(paths, epochs=1, init=path)
    assert warm.spec.categoricals == first.spec.categoricals
    y = table["y"].to_numpy()
    assert np.mean((warm.predict(table) - y) ** 2) <= np.mean((first.predict(table) - y) ** 2)
    with pytest.raises(UsageError, match="interactions"):
        fit(paths, epochs=1, init=path, interactions=("a*b",))


def test_l1_zeroes_crossed_weights(data):
    _, paths = data
    model = fit(paths, epochs=2, l1=0.05, interactions=("a*b", "x2*b"))
    assert (model.code_weights == 0).sum() >= 3


def test_sklearn_estimator_takes_interactions(data):
    """On files every kind; on a numeric DataFrame, products of its columns."""
    from streamgd.sklearn import StreamGDRegressor

    table, paths = data
    y = table["y"].to_numpy()
    design = np.c_[oracle_design(table), np.ones(len(y))]
    best = np.mean((design @ np.linalg.lstsq(design, y, rcond=None)[0] - y) ** 2)
    est = StreamGDRegressor(target="y", categorical=["a", "b"], features=["x1", "x2"],
                            interactions=list(TERMS), epochs=4)  # fmt: skip
    est.fit(paths)
    assert est.get_params()["interactions"] == list(TERMS)
    assert list(est.feature_names_in_) == ["x1", "x2", "a", "b"]
    assert np.mean((est.predict(paths) - y) ** 2) <= best * 1.001
    frame = table.select(["x1", "x2"]).to_pandas()
    x1, x2 = frame["x1"].to_numpy(), frame["x2"].to_numpy()
    target = 2 * x1 * x2 - x1 + np.random.default_rng(0).normal(size=len(x1))
    products = StreamGDRegressor(interactions=["x1*x2"], epochs=3).fit(frame, target)
    oracle = np.c_[x1, x2, x1 * x2, np.ones(len(x1))]
    best = np.mean((oracle @ np.linalg.lstsq(oracle, target, rcond=None)[0] - target) ** 2)
    assert np.mean((products.predict(frame) - target) ** 2) <= best * 1.001


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        (("a*nope",), "no column 'nope'"),
        (("a*y",), "is the target"),
        (("a*a",), "with itself"),
        (("a",), "bad term"),
        (("a**b",), "bad term"),
        (("a*b*x1*x2",), "at most 3"),
        (("a*b", "b*a"), "given twice"),
    ],
)
def test_usage_errors(data, terms, message):
    _, paths = data
    with pytest.raises(UsageError, match=message):
        fit(paths, interactions=terms, epochs=1)


def test_cli_usage_error_is_one_line_exit_2(data, capsys):
    _, paths = data
    code, _, err = run_cli(capsys, "fit", *paths, "-y", "y", "-c", "a,b",
                           "--interactions", "a*zz", "-o", "/tmp/never.sgd")  # fmt: skip
    err = err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "no column 'zz'" in err


def test_pairs_shorthand():
    assert parse_terms(["a*b*c:pairs"]) == (("a", "b"), ("a", "c"), ("b", "c"))
    assert parse_terms(["a*b", "c*d*e"]) == (("a", "b"), ("c", "d", "e"))


def test_softmax_slopes_and_crosses_fit_as_well_as_the_true_model(tmp_path):
    """Three classes whose logits need a per-category slope: the fit's log loss comes close
    to that of the true probabilities."""
    rng = np.random.default_rng(11)
    n = 12_000
    g = np.array(["u", "v"])[rng.integers(0, 2, n)]
    x = rng.normal(size=n)
    sign = np.where(g == "u", 1.0, -1.0)
    logits = np.stack([2 * sign * x, np.zeros(n), -2 * sign * x + 0.5], 1)
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    label = (rng.random(n)[:, None] > prob.cumsum(1)).sum(1)
    path = str(tmp_path / "s.parquet")
    pq.write_table(pa.table({"x": x, "g": g, "k": label}), path, row_group_size=2000)
    model = streamgd.fit(path, target="k", loss="softmax", categorical=["g"],
                         interactions=["x*g"], epochs=5)  # fmt: skip
    p = model.predict_proba(pa.table({"x": x, "g": g}))
    ours = -np.mean(np.log(p[np.arange(n), label]))
    truth = -np.mean(np.log(prob[np.arange(n), label]))
    plain = streamgd.fit(path, target="k", loss="softmax", categorical=["g"], epochs=5)
    theirs = plain.predict_proba(pa.table({"x": x, "g": g}))
    assert ours <= truth * 1.01 < -np.mean(np.log(theirs[np.arange(n), label]))


def test_numeric_products_predict_from_an_array_of_the_input_columns(data):
    table, paths = data
    model = fit(paths, categorical=None, interactions=("x1*x2",), epochs=1)
    assert model.features == ("x1", "x2", "x1*x2")
    x = np.c_[table["x1"].to_numpy(), table["x2"].to_numpy()]
    np.testing.assert_allclose(model.predict(x), model.predict(table), rtol=1e-12)


def test_null_parts_are_a_value_of_their_own(tmp_path):
    """A null in a crossed column is a value like any other ("(null)" in the names); a null
    numeric factor makes the product missing, imputed with its mean."""
    table = make_table(3000, seed=4)
    a = table["a"].to_pylist()
    a = [None if i % 7 == 0 else v for i, v in enumerate(a)]
    x1 = [None if i % 11 == 0 else v for i, v in enumerate(table["x1"].to_pylist())]
    table = table.set_column(0, "a", pa.array(a)).set_column(2, "x1", pa.array(x1))
    path = str(tmp_path / "nulls.parquet")
    pq.write_table(table, path)
    model = fit([path], epochs=1)
    labels = model.spec.code_labels()
    codes = model.spec.table_codes(table)
    cross = [c.name for c in model.spec.categoricals].index("a*b")
    b = table["b"].to_pylist()
    for row in (0, 7, 14):
        assert labels[codes[row, cross]] == f"a=(null)*b={b[row]}"
    assert np.isfinite(model.predict(table)).all()
    j = model.features.index("x1*x2")
    present = [v * w for v, w in zip(x1, table["x2"].to_pylist(), strict=True) if v is not None]
    assert model.spec.fill[j] == pytest.approx(np.mean(present), rel=1e-9)
    hashed = fit([path], epochs=1, interactions=("a*b",), hash_bits=6)
    codes = hashed.spec.table_codes(table) - hashed.spec.code_offsets
    salt = zlib.crc32(b"a*b")
    texts = [("\x00" if u is None else u) + "\x1f" + v for u, v in zip(a, b, strict=True)]
    assert codes[:, 2].tolist() == [zlib.crc32(t.encode(), salt) % 64 for t in texts]


def test_model_file_version(data, tmp_path):
    """A model with interactions is written as version 3: older readers refuse it rather
    than look for a column named x1*x2."""
    from streamgd.archive import read_archive

    _, paths = data
    path = str(tmp_path / "m.npz")
    fit(paths[:1], categorical=None, interactions=("x1*x2",), epochs=1).save(path)
    assert read_archive(path, kind="model", max_version=3)[0]["version"] == 3
    with pytest.raises(streamgd.errors.CheckpointError):
        read_archive(path, kind="model", max_version=2)
    assert streamgd.load(path).spec.interactions[0].name == "x1*x2"
