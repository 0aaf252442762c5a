"""Cross-validated tuning on real public data that scikit-learn ships (issue 15): does the
configuration ``streamgd fit --cv 5`` selects beat the default settings, and by how much?

For each dataset (``load_diabetes``: 442 rows, 10 features, regression, squared loss;
``load_breast_cancer``: 569 rows, 30 features, binary, logistic loss), the rows are split once
(seeded) into a training file (80%) and a test file (20%), both Parquet. On the training file:

- the default settings' 5-fold CV score (``fit_grid(cv=5)`` of one configuration);
- a grid (optimizer x lr x l2) cross-validated in the same pass, and the selected
  configuration's CV score (the mean over folds of the validation loss; its spread over folds);

then both models on all training rows (the one ``-o`` would get) are scored on the untouched
test file, since the selected configuration's CV score is optimistic (it is the best of many
on the same folds). The files are named by relative paths, as a row's fold hashes its path as
given. Batch size and epochs are shared by both (they decide the data path, so a
grid cannot vary them): 32 rows and 20 epochs, which these few hundred rows need (the default
batch of 1024 would be one step per epoch); the all-defaults run (batch 1024, 5 epochs) is
shown too. Everything is seeded: the same numbers on every run.

Run: ``python tools/cv_real.py`` (a few seconds; needs scikit-learn for the data only).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import streamgd
from streamgd.search import fit_grid

GRID = {
    "optimizer": ["sgd", "adam"],
    "lr": [0.01, 0.03, 0.1, 0.3, 1.0],  # 1.0: the default of sgd
    "l2": [0.0, 1e-4, 1e-3, 1e-2, 1e-1],
}
SHARED = {"epochs": 20, "batch_size": 32, "seed": 0, "quiet": True}
DATASETS = {
    "diabetes": ("load_diabetes", {}, "mse"),
    "breast_cancer": ("load_breast_cancer", {"loss": "logistic"}, "logloss"),
}


def write_split(name: str, directory: Path, seed: int = 0) -> tuple[str, str]:
    """The dataset as train.parquet (80% of the rows, seeded) and test.parquet."""
    from sklearn import datasets

    loader = getattr(datasets, DATASETS[name][0])
    bunch = loader()
    x, y = bunch.data, bunch.target.astype(np.float64)
    names = [f"f{j}_{str(n).replace(' ', '_')}" for j, n in enumerate(bunch.feature_names)]
    test = np.random.default_rng(seed).permutation(len(y))[: len(y) // 5]
    is_test = np.zeros(len(y), bool)
    is_test[test] = True
    paths = []
    for part, rows in (("train", ~is_test), ("test", is_test)):
        cols = {n: x[rows, j] for j, n in enumerate(names)}
        path = f"{name}-{part}.parquet"  # relative: a row's fold hashes the path as given
        pq.write_table(pa.table({**cols, "target": y[rows]}), directory / path)
        paths.append(path)
    return paths[0], paths[1]


def run(name: str, directory: Path) -> dict:
    train, test = write_split(name, directory)
    _, fixed, metric = DATASETS[name]
    common = {"target": "target", "cv": 5, **fixed}
    everything_default = fit_grid(train, **common, quiet=True)
    default = fit_grid(train, **common, **SHARED)
    tuned = fit_grid(train, **common, **SHARED, **GRID, select_metric=metric)
    key = f"val_{metric}"
    out = {"dataset": name, "metric": metric, "configurations": len(tuned.models)}
    for label, result in (
        ("all defaults (batch 1024, 5 epochs)", everything_default),
        ("defaults (batch 32, 20 epochs)", default),
        ("selected", tuned),
    ):
        row = result.leaderboard[0]
        scored = streamgd.evaluate(result.best, test)
        out[label] = {
            "settings": {k: row[k] for k in GRID if k in row},
            "cv": row[key],
            "cv_std": row[f"{key}_std"],
            "test": scored[metric],
            **({"test_auc": scored["auc"]} if "auc" in scored else {"test_r2": scored["r2"]}),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated names")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # the same relative paths, so the same folds, on every run
        for name in args.datasets.split(","):
            res = run(name, Path(tmp))
            m = res["metric"]
            print(f"\n{name}: {res['configurations']} configurations, 5-fold CV, metric {m}")
            print(f"| run | settings | CV {m} (mean +- std over folds) | test {m} | test |")
            print("|---|---|---|---|---|")
            for label, r in res.items():
                if not isinstance(r, dict):
                    continue
                extra = next(f"{k[5:]} {v:.4f}" for k, v in r.items() if k.startswith("test_"))
                settings = ", ".join(f"{k}={v}" for k, v in r["settings"].items()) or "-"
                print(
                    f"| {label} | {settings} | {r['cv']:.4f} +- {r['cv_std']:.4f} | "
                    f"{r['test']:.4f} | {extra} |"
                )


if __name__ == "__main__":
    main()
