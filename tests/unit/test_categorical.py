"""Categorical encodings and the code-weight step, against explicit one-hot matrices."""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamgd.features import categorical as cat
from streamgd.features.categorical import Categorical, scan_categories
from streamgd.losses import get_loss
from streamgd.optimizers import make_optimizer
from streamgd.sources import open_dataset
from streamgd.step import train_step


def test_one_hot_codes_unseen_and_null():
    enc = Categorical("c", vocabulary=("b", None, "a"))
    col = pa.chunked_array([["a", "b"], [None, "zzz", "a"]])
    assert enc.encode(col).tolist() == [2, 0, 1, 3, 2]  # 3 = (other)
    assert enc.labels() == ["c=b", "c=(null)", "c=a", "c=(other)"]


@pytest.mark.parametrize(
    "col, texts",
    [
        (pa.array([1, 22, None], pa.int32()), ["1", "22", None]),
        (pa.array([True, False, None]), ["true", "false", None]),
        (pa.array(["x", "y", None]).dictionary_encode(), ["x", "y", None]),
        (pa.array(["x", "y", None], pa.large_string()), ["x", "y", None]),
    ],
)
def test_values_compare_as_text(col, texts):
    enc = Categorical("c", vocabulary=tuple(t for t in texts if t is not None))
    assert enc.encode(col).tolist() == [0, 1, 2]  # the null is outside this vocabulary
    assert cat.as_text(col).to_pylist() == texts


def test_hashing_is_salted_crc32():
    enc = Categorical("city", bits=10)
    values = ["paris", None, "oslo", "paris"]
    salt = zlib.crc32(b"city")
    expected = [zlib.crc32(b"\x00" if v is None else v.encode(), salt) % 1024 for v in values]
    assert enc.encode(pa.array(values)).tolist() == expected
    assert Categorical("town", bits=10).encode(pa.array(["paris"]))[0] != expected[0]


def test_misra_gries_keeps_heavy_hitters():
    tally = {f"rare{i}": 1 for i in range(100)} | {"a": 50, "b": 30}
    pruned = cat._prune(tally, 10)
    assert set(pruned) == {"a", "b"} and pruned["a"] > pruned["b"]


def test_scan_ranks_by_count_and_is_bounded(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    heavy = np.array(["h1", "h2", "h3"])[rng.integers(0, 3, 3000)]
    unique = np.array([f"u{i}" for i in range(3000)])  # every one seen once
    values = np.where(rng.random(3000) < 0.5, heavy, unique)
    path = str(tmp_path / "d.parquet")
    pq.write_table(pa.table({"c": values}), path, row_group_size=300)
    monkeypatch.setattr(cat, "SCAN_CAPACITY", 100)
    dataset = open_dataset([path], "auto")
    (enc,) = scan_categories(
        dataset, ["c"], range(10), max_rows=0, max_categories=3, hash_bits=None
    )
    counts = {v: int((values == v).sum()) for v in ("h1", "h2", "h3")}
    assert list(enc.vocabulary) == sorted(counts, key=lambda v: -counts[v])


def one_hot(codes: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((len(codes), size))
    for j in range(codes.shape[1]):
        out[np.arange(len(codes)), codes[:, j]] += 1.0
    return out


@pytest.mark.parametrize("loss_name", ["squared", "logistic"])
def test_step_equals_the_step_on_the_one_hot_matrix(loss_name):
    """Without a preconditioner the code weights are plain one-hot features: the step with
    codes must equal the step on the explicit matrix [x, one-hot] (weights reordered)."""
    rng = np.random.default_rng(1)
    n, k, sizes = 200, 3, (4, 6)
    x = rng.normal(size=(n, k))
    codes = np.column_stack([rng.integers(0, s, n) for s in sizes]) + np.array([0, sizes[0]])
    t = rng.normal(size=n) if loss_name == "squared" else (rng.random(n) < 0.4).astype(float)
    params = rng.normal(size=k + 1 + sum(sizes)) * 0.3
    loss, opt = get_loss(loss_name), make_optimizer("sgd")
    common = dict(loss=loss, optimizer=opt, lr=0.5, l2=0.01, l1=0.001)
    new, _, value, _ = train_step(
        params, {}, x, t, codes=codes, offsets=np.array([0, sizes[0]]), **common
    )
    dense = np.c_[x, one_hot(codes, sum(sizes))]
    reordered = np.r_[params[:k], params[k + 1 :], params[k]]
    ref, _, ref_value, _ = train_step(reordered, {}, dense, t, **common)
    assert np.allclose(new[:k], ref[:k]) and np.allclose(new[k + 1 :], ref[k:-1])
    assert new[k] == pytest.approx(ref[-1])
    assert value == pytest.approx(ref_value)


def test_newton_direction_fits_each_category_mean_in_one_step():
    """Squared loss, one categorical column, no numeric features: with the preconditioner,
    a step of lr 1 moves each code to the mean residual of its rows, minus the common mean
    (which the intercept takes), times 2 / (1 + 1) = 1."""
    rng = np.random.default_rng(2)
    n, size = 500, 5
    codes = rng.integers(0, size, (n, 1))
    effect = rng.normal(size=size) * 3
    t = effect[codes[:, 0]] + 1.0
    params = np.zeros(1 + size)
    new, _, _, _ = train_step(
        params,
        {},
        np.zeros((n, 0)),
        t,
        codes=codes + 0,
        offsets=np.array([0]),
        loss=get_loss("squared"),
        optimizer=make_optimizer("sgd"),
        lr=1.0,
        l2=0.0,
        precond=np.zeros((0, 0)),
    )
    means = np.array([t[codes[:, 0] == v].mean() for v in range(size)])
    assert new[0] == pytest.approx(t.mean())
    assert np.allclose(new[1:], means - t.mean())
    assert np.allclose(new[0] + new[1:][codes[:, 0]], t)  # an exact fit at once
