"""Text columns (--text, --text-bits, --ngrams, --text-binary, --text-norm, --text-slots): the
features against a plain reference (and scikit-learn's HashingVectorizer), fits against numpy
least squares / Newton on the explicitly expanded bag-of-words matrix, exact resume, and the
rest of the pipeline (predict/evaluate, warm start, --l1, inspect, the sklearn estimators)."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from integration_support import logloss, newton_fit

import streamgd
from streamgd.features.text import buckets, murmur3_32

WORDS = ["good", "bad", "great", "awful", "film", "plot", "actor", "boring", "fun", "the"]
EFFECT = {"good": 1.0, "bad": -1.0, "great": 2.0, "awful": -2.0, "boring": -0.5, "fun": 0.7}


# -- the reference: plain Python, one row at a time -------------------------------------------
def murmur3_reference(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit, written from its specification."""

    def rotl(x, r):
        return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF

    c1, c2, h = 0xCC9E2D51, 0x1B873593, seed
    blocks = len(data) // 4
    for i in range(blocks):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = rotl((k * c1) & 0xFFFFFFFF, 15) * c2 & 0xFFFFFFFF
        h = (rotl(h ^ k, 13) * 5 + 0xE6546B64) & 0xFFFFFFFF
    tail = data[4 * blocks :]
    if tail:
        k = int.from_bytes(tail, "little")
        h ^= rotl((k * c1) & 0xFFFFFFFF, 15) * c2 & 0xFFFFFFFF
    h ^= len(data)
    for shift, mult in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
        h = ((h ^ (h >> shift)) * mult) & 0xFFFFFFFF
    return h ^ (h >> 16)


def reference_bag(text, *, bits, ngrams=1, binary=False, norm=None) -> dict[int, float]:
    """One row's {bucket: value}: lower-case, split on non-word characters, n-grams joined by
    a space, bucket = |murmur3 as int32| mod 2**bits."""
    words = [] if text is None else [w for w in re.split(r"\W+", text.lower()) if w]
    grams = [" ".join(words[i : i + n]) for n in range(1, ngrams + 1)
             for i in range(len(words) - n + 1)]  # fmt: skip
    bag = Counter()
    for g in grams:
        h = murmur3_reference(g.encode())
        bag[abs(h - (1 << 32) if h >= 1 << 31 else h) % (1 << bits)] += 1
    out = {b: 1.0 if binary else float(c) for b, c in bag.items()}
    if norm == "l2" and out:
        size = sum(v * v for v in out.values()) ** 0.5
        out = {b: v / size for b, v in out.items()}
    return out


def dense(idx: np.ndarray, val: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((len(idx), size))
    np.add.at(out, (np.repeat(np.arange(len(idx)), idx.shape[1]), idx.ravel()), val.ravel())
    return out


TEXTS = [
    "Good, GOOD film!", None, "", "bad", "Ünïcode wörds: café_au_lait 日本語 42 x", "a b a b a",
    "the plot... the ACTOR; the end", "tab\tnew\nline   spaces", "don't stop-believing",
]  # fmt: skip


@pytest.mark.parametrize(
    "options",
    [{}, {"ngrams": 2}, {"binary": True}, {"norm": "l2"}, {"ngrams": 3, "norm": "l2"}],
)
def test_buckets_equal_the_reference(options):
    idx, val, distinct = buckets(pa.array(TEXTS), bits=6, slots=40, **options)
    got = dense(idx, val, 64)
    want = np.zeros_like(got)
    for i, text in enumerate(TEXTS):
        for b, v in reference_bag(text, bits=6, **options).items():
            want[i, b] = v
    assert np.allclose(got, want, rtol=1e-12, atol=0)
    assert distinct.tolist() == [np.count_nonzero(r) for r in want]


def test_murmur3_equals_the_reference_on_random_unicode():
    rng = np.random.default_rng(1)
    alphabet = "abcXYZ019 _-éü日本\U0001f600"
    strings = ["".join(rng.choice(list(alphabet), rng.integers(0, 23))) for _ in range(300)]
    assert murmur3_32(pa.array(strings)).tolist() == [
        murmur3_reference(s.encode()) for s in strings
    ]


def test_rows_beyond_the_slots_keep_their_first_buckets():
    text = " ".join(f"w{i}" for i in range(10))
    idx, val, distinct = buckets(pa.array([text, "w3 w3"]), bits=20, slots=4)
    first = [next(iter(reference_bag(f"w{i}", bits=20))) for i in range(4)]
    assert idx[0].tolist() == first and val[0].tolist() == [1.0] * 4
    assert distinct.tolist() == [10, 1] and val[1].tolist() == [2.0, 0, 0, 0]


@pytest.mark.parametrize("options", [{}, {"ngrams": 2, "binary": True}, {"norm": "l2"}])
def test_buckets_equal_sklearn_hashing_vectorizer(options):
    text = pytest.importorskip("sklearn.feature_extraction.text")
    docs = [t for t in TEXTS if t] + [" ".join(WORDS[i % 7 :]) for i in range(20)]
    vectorizer = text.HashingVectorizer(
        n_features=1 << 12,
        alternate_sign=False,
        token_pattern=r"(?u)\b\w+\b",  # the default drops one-character words
        ngram_range=(1, options.get("ngrams", 1)),
        binary=options.get("binary", False),
        norm=options.get("norm"),
    )
    want = vectorizer.transform(docs).toarray()
    idx, val, _ = buckets(pa.array(docs), bits=12, slots=64, **options)
    assert np.allclose(dense(idx, val, 1 << 12), want, rtol=1e-12, atol=1e-15)


# -- fits against oracles on the expanded matrix ----------------------------------------------
def make_table(rows: int, seed: int, words=WORDS) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    texts, z = [], 0.5 * x
    for i in range(rows):
        chosen = list(rng.choice(words, size=rng.integers(0, 8)))
        texts.append(
            None if not chosen and rng.random() < 0.5
            else ", ".join(w.upper() if rng.random() < 0.3 else w for w in chosen) + "!"
        )  # fmt: skip
        z[i] += sum(EFFECT.get(w, 0.0) for w in chosen)
    y = z + rng.normal(size=rows) * 0.5
    label = (rng.random(rows) < 1 / (1 + np.exp(-z))).astype(np.float64)
    return pa.table({"x": x, "review": texts, "y": y, "label": label})


def expanded(table: pa.Table, bits: int, **options) -> np.ndarray:
    """The numeric feature and one column per bucket any row uses (the oracle's design)."""
    bags = [reference_bag(t, bits=bits, **options) for t in table.column("review").to_pylist()]
    used = sorted({b for bag in bags for b in bag})
    cols = np.array([[bag.get(b, 0.0) for b in used] for bag in bags])
    return np.c_[table.column("x").to_numpy(), cols]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    table = make_table(6000, seed=4)
    paths = []
    for i in range(3):
        path = str(root / f"part-{i}.parquet")
        pq.write_table(table.slice(2000 * i, 2000), path, row_group_size=500)
        paths.append(path)
    return table, paths


def fit(paths, **settings):
    settings = {"features": ("x",), "text": ("review",), "text_bits": 10, **settings}
    return streamgd.fit(paths, target=settings.pop("target", "y"), **settings)


@pytest.mark.parametrize("options", [{}])
def test_regression_reaches_the_least_squares_optimum(data, options):
    table, paths = data
    norm = None if options.get("text_norm", "none") == "none" else "l2"
    design = np.c_[expanded(table, 10, ngrams=options.get("ngrams", 1), norm=norm), np.ones(6000)]
    y = table.column("y").to_numpy()
    w = np.linalg.lstsq(design, y, rcond=None)[0]
    best = np.mean((design @ w - y) ** 2)
    model = fit(paths, epochs=8, batch_size=128, **options)
    mse = np.mean((model.predict(table) - y) ** 2)
    assert mse <= best * 1.001, (mse, best)


def test_logistic_reaches_the_newton_optimum(data):
    table, paths = data
    design = expanded(table, 10)
    label = table.column("label").to_numpy()
    coef, b = newton_fit(design, label)
    best = logloss(label, 1 / (1 + np.exp(-(design @ coef + b))))
    model = fit(paths, target="label", loss="logistic", epochs=8, batch_size=128)
    ours = logloss(label, model.predict(table))
    assert ours <= best * 1.001, (ours, best)
