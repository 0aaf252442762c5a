"""The README's --text example: a generated review-sentiment data set whose label (the
reviewer recommends the product, 0/1) depends on the product's prior rating and on the
review's words, some of them negated ("not good"); a model of the numeric columns alone
against the same model with the review as a hashed bag of words (``--text review``), and with
its bigrams too (``--ngrams 2``), all scored on held-out rows.

Usage::

    python tools/text_example.py [--rows 200000] [--dir /tmp/reviews] [--epochs 3]

Prints the held-out log loss of each model, of a constant and of the true probabilities, and
the relative gains. The data (seeded) is written as Parquet under ``--dir``: ``train/`` and
``test.parquet``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import streamgd

POSITIVE = [
    "good",
    "great",
    "excellent",
    "love",
    "perfect",
    "amazing",
    "solid",
    "happy",
    "reliable",
    "sturdy",
]
NEGATIVE = [
    "bad",
    "poor",
    "awful",
    "broke",
    "cheap",
    "flimsy",
    "terrible",
    "waste",
    "returned",
    "disappointed",
]
FILLER = 3000  # neutral words w0..w2999, Zipf-distributed


def generate(rows: int, seed: int) -> tuple[pa.Table, np.ndarray]:
    """The rows and their true probabilities. Each review has 5-30 words: fillers and a few
    sentiment words, each preceded by "not" one time in four (which flips its sign). The
    logit is -0.3 + 0.8 * (prior rating - 3) + the sum of the words' effects."""
    rng = np.random.default_rng(seed)
    effect = {w: e for w, e in zip(POSITIVE, np.linspace(0.5, 1.4, 10), strict=True)}
    effect |= {w: -e for w, e in zip(NEGATIVE, np.linspace(0.5, 1.6, 10), strict=True)}
    sentiment = POSITIVE + NEGATIVE
    prior = np.clip(rng.normal(3.6, 0.7, rows), 1, 5)
    price = np.exp(rng.normal(3, 1, rows))
    logit = -0.3 + 0.8 * (prior - 3)
    reviews = []
    for i in range(rows):
        words = [f"w{k}" for k in (rng.zipf(1.3, rng.integers(5, 30)) % FILLER)]
        for _ in range(rng.integers(0, 4)):
            word = sentiment[rng.integers(0, len(sentiment))]
            negated = rng.random() < 0.25
            logit[i] += -effect[word] if negated else effect[word]
            at = rng.integers(0, len(words) + 1)
            words[at:at] = ["not", word] if negated else [word]
        reviews.append(" ".join(w.capitalize() if rng.random() < 0.1 else w for w in words))
    prob = 1 / (1 + np.exp(-logit))
    recommend = (rng.random(rows) < prob).astype(np.float64)
    table = pa.table(
        {"prior_rating": prior, "price": price, "review": reviews, "recommend": recommend}
    )
    return table, prob


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=200_000, help="training rows (default 200000)")
    p.add_argument("--dir", type=Path, default=Path("/tmp/streamgd-reviews"))
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args(argv)
    train_dir = args.dir / "train"
    train_dir.mkdir(parents=True, exist_ok=True)
    for old in train_dir.glob("*.parquet"):
        old.unlink()
    table, _ = generate(args.rows, seed=1)
    for i, part in enumerate(np.array_split(np.arange(args.rows), 4)):
        pq.write_table(table.take(part), train_dir / f"part-{i}.parquet", row_group_size=20_000)
    test, prob = generate(max(args.rows // 4, 1000), seed=2)
    test_path = args.dir / "test.parquet"
    pq.write_table(test, test_path)
    y = test.column("recommend").to_numpy()
    common = {"target": "recommend", "loss": "logistic", "epochs": args.epochs, "seed": 0}
    numeric = {"features": ["prior_rating", "price"]}
    runs = {
        "numeric columns only": {},
        "+ --text review": {"text": ["review"]},
        "+ --text review --ngrams 2": {"text": ["review"], "ngrams": 2},
    }
    print(f"{args.rows:,} training rows, {len(y):,} held-out rows, {args.epochs} epochs")
    print(f"{'model':<30} {'held-out log loss':>18} {'seconds':>8}")
    print(f"{'constant (training rate)':<30} {logloss(y, np.full(len(y), y.mean())):>18.4f}")
    losses = {}
    for name, extra in runs.items():
        start = time.perf_counter()
        model = streamgd.fit(str(train_dir), **common, **numeric, **extra)
        seconds = time.perf_counter() - start
        losses[name] = logloss(y, model.predict(test))
        print(f"{name:<30} {losses[name]:>18.4f} {seconds:>8.1f}")
    print(f"{'true probabilities':<30} {logloss(y, prob):>18.4f}")
    base = losses["numeric columns only"]
    for name in list(runs)[1:]:
        print(f"{name}: log loss {100 * (1 - losses[name] / base):.1f}% below the numeric model")
    top = sorted(model.inspect()["coefficients"].items(), key=lambda kv: -abs(kv[1]))[:8]
    print("largest weights of the last model:", ", ".join(f"{k} {v:+.2f}" for k, v in top))


if __name__ == "__main__":
    main()
