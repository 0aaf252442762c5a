"""The README's --interactions example: a generated click-through data set whose clicks depend
on which ad is shown on which site and on the hour differently per device; a plain linear
model (one weight per ad, site and device, one slope for the hour) against the same model
with the crosses ``ad*site`` and ``hour*device``, both scored on held-out rows.

Usage::

    python tools/interactions_example.py [--rows 400000] [--dir /tmp/ctr] [--epochs 3]

Prints the held-out log loss of both models, of a constant and of the true probabilities,
and the relative gain. The data (seeded) is
written as Parquet under ``--dir``: ``train/`` and ``test.parquet``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import streamgd

ADS, SITES, DEVICES = 40, 60, ("desktop", "phone", "tablet")


def generate(rows: int, seed: int) -> tuple[pa.Table, np.ndarray]:
    """The rows and their true click probabilities. Clicks (0/1) with logit = ad + site +
    affinity(ad, site) + an hour slope per device, the affinity a rank-2 product of ad and
    site factors (what no per-column weight can carry)."""
    rng = np.random.default_rng(seed)
    meta = np.random.default_rng(0)  # the same ads and sites whatever the rows' seed
    ad_bias, site_bias = meta.normal(0, 0.5, ADS), meta.normal(0, 0.5, SITES)
    ad_f, site_f = meta.normal(0, 1, (ADS, 2)), meta.normal(0, 1, (SITES, 2))
    hour_slope = {"desktop": -0.15, "phone": 0.2, "tablet": 0.0}
    ad = rng.integers(0, ADS, rows)
    site = rng.zipf(1.6, rows) % SITES
    device = np.array(DEVICES)[rng.choice(3, rows, p=[0.5, 0.4, 0.1])]
    hour = rng.integers(0, 24, rows).astype(np.float64)
    slope = np.vectorize(hour_slope.get)(device)
    logit = -2 + ad_bias[ad] + site_bias[site] + (ad_f[ad] * site_f[site]).sum(1)
    logit += slope * (hour - 11.5)
    prob = 1 / (1 + np.exp(-logit))
    click = (rng.random(rows) < prob).astype(np.float64)
    table = pa.table({
        "ad": np.char.add("ad", ad.astype(str)),
        "site": np.char.add("site", site.astype(str)),
        "device": device,
        "hour": hour,
        "click": click,
    })  # fmt: skip
    return table, prob


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=400_000, help="training rows")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/streamgd-ctr"))
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    (args.dir / "train").mkdir(parents=True, exist_ok=True)
    train, _ = generate(args.rows, seed=1)
    for i, part in enumerate(np.array_split(np.arange(args.rows), 4)):
        pq.write_table(train.take(part), args.dir / "train" / f"part-{i}.parquet",
                       row_group_size=50_000)  # fmt: skip
    test, truth = generate(args.rows // 4, seed=2)
    pq.write_table(test, args.dir / "test.parquet")
    y = test["click"].to_numpy()
    common = dict(target="click", loss="logistic", categorical=["ad", "site", "device"],
                  features=["hour"], epochs=args.epochs, seed=0)  # fmt: skip
    results = {}
    for name, extra in (
        ("plain", {}),
        ("interactions", {"interactions": ["ad*site", "hour*device"]}),
    ):
        start = time.perf_counter()
        model = streamgd.fit(str(args.dir / "train"), **common, **extra)
        seconds = time.perf_counter() - start
        results[name] = logloss(y, model.predict(test))
        print(f"{name:>12}: held-out log loss {results[name]:.5f}  ({seconds:.1f} s to fit)")
    base = logloss(y, np.full(len(y), train["click"].to_numpy().mean()))
    gain = 1 - results["interactions"] / results["plain"]
    print(f"{'constant':>12}: held-out log loss {base:.5f}")
    print(f"{'truth':>12}: held-out log loss {logloss(y, truth):.5f} (the true probabilities)")
    print(f"interactions lower the held-out log loss by {gain:.1%}")


if __name__ == "__main__":
    main()
