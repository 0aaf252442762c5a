"""Generate the small, deterministic sample datasets shipped in ``data/``.

Usage::

    python tools/make_data.py [--out data]

Everything is drawn from ``numpy.random.default_rng`` with a fixed seed, so running
the script twice produces byte-identical files (for a given numpy/pyarrow version).
Rows are i.i.d. and written in generation order (nothing is sorted).

Two datasets are written, each as 4 Parquet files (snappy, 5,000 rows each, in
5 row groups of 1,000 rows) plus the same rows as 4 CSV files with a header line:

``regression/part-{0..3}.parquet`` and ``regression-csv/part-{0..3}.csv``
    20,000 rows. Columns: ``id`` (string, "r000000".."r019999", not a feature),
    features ``x1..x6`` with deliberately very different scales, and target ``y``::

        x1 ~ N(0, 1)                       float64
        x2 ~ N(100, 20)                    float64
        x3 ~ U(0, 0.01)                    float64
        x4 ~ N(-5000, 1000)                float64
        x5 ~ Poisson(3)                    int64 (integer counts)
        x6 = 0.5 * x1 + N(0, 1)            float64 (correlated with x1)
        y  = 3 + 2.0*x1 + 0.05*x2 + 200*x3 + 0.001*x4 - 0.75*x5 + 1.5*x6 + N(0, 0.5)

    True values: intercept 3.0; coefficients x1=2.0, x2=0.05, x3=200.0, x4=0.001,
    x5=-0.75, x6=1.5; noise_sd 0.5. Each feature contributes O(1) to y on its own
    scale, so every coefficient matters and unscaled gradient descent is hard.

``classification/part-{0..3}.parquet`` and ``classification-csv/part-{0..3}.csv``
    20,000 rows. Columns: ``id`` (string, "c000000".."c019999"), features
    ``f1..f4`` (float64, mixed scales) and target ``y`` in {0, 1} (int64)::

        f1 ~ N(0, 1)
        f2 ~ N(50, 10)
        f3 ~ U(0, 1)
        f4 ~ N(1000, 250)
        P(y = 1) = sigmoid(-16 + 2.5*f1 + 0.2*f2 - 4.0*f3 + 0.008*f4)

    True values: intercept -16.0; coefficients f1=2.5, f2=0.2, f3=-4.0, f4=0.008.
    Classes are roughly balanced; predicting with the true model gives accuracy
    of about 0.87 (separable-ish, but not perfectly).

The true parameters are also written to ``<dataset>/TRUE_COEFFICIENTS.json``.

``quickstart.parquet``
    The regression rows once more, as one file (20 row groups of 1,000) at the top of
    ``data/``, so that the first command a new user types, ``streamgd fit data/*.parquet``,
    matches a file (one dataset only: the other datasets stay in their directories).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

SEED = 20240601
N_FILES = 4
ROWS_PER_FILE = 5_000
ROW_GROUP_SIZE = 1_000  # -> 5 row groups per file
N_ROWS = N_FILES * ROWS_PER_FILE

REG_INTERCEPT = 3.0
REG_COEFS = {"x1": 2.0, "x2": 0.05, "x3": 200.0, "x4": 0.001, "x5": -0.75, "x6": 1.5}
REG_NOISE_SD = 0.5

CLF_INTERCEPT = -16.0
CLF_COEFS = {"f1": 2.5, "f2": 0.2, "f3": -4.0, "f4": 0.008}


def _ids(prefix: str, n: int) -> pa.Array:
    return pa.array([f"{prefix}{i:06d}" for i in range(n)], type=pa.string())


def make_regression(rng: np.random.Generator) -> pa.Table:
    n = N_ROWS
    x1 = rng.normal(0.0, 1.0, n)
    x2 = rng.normal(100.0, 20.0, n)
    x3 = rng.uniform(0.0, 0.01, n)
    x4 = rng.normal(-5_000.0, 1_000.0, n)
    x5 = rng.poisson(3.0, n).astype(np.int64)
    x6 = 0.5 * x1 + rng.normal(0.0, 1.0, n)
    feats = {"x1": x1, "x2": x2, "x3": x3, "x4": x4, "x5": x5, "x6": x6}
    y = REG_INTERCEPT + rng.normal(0.0, REG_NOISE_SD, n)
    for name, coef in REG_COEFS.items():
        y = y + coef * feats[name]
    cols = {"id": _ids("r", n)}
    cols.update({k: pa.array(v) for k, v in feats.items()})
    cols["y"] = pa.array(y, type=pa.float64())
    return pa.table(cols)


def make_classification(rng: np.random.Generator) -> tuple[pa.Table, float]:
    n = N_ROWS
    feats = {
        "f1": rng.normal(0.0, 1.0, n),
        "f2": rng.normal(50.0, 10.0, n),
        "f3": rng.uniform(0.0, 1.0, n),
        "f4": rng.normal(1_000.0, 250.0, n),
    }
    eta = np.full(n, CLF_INTERCEPT)
    for name, coef in CLF_COEFS.items():
        eta = eta + coef * feats[name]
    p = 1.0 / (1.0 + np.exp(-eta))
    y = (rng.uniform(0.0, 1.0, n) < p).astype(np.int64)
    true_model_acc = float(np.mean((eta > 0).astype(np.int64) == y))
    cols = {"id": _ids("c", n)}
    cols.update({k: pa.array(v, type=pa.float64()) for k, v in feats.items()})
    cols["y"] = pa.array(y)
    return pa.table(cols), true_model_acc


def write_dataset(table: pa.Table, outdir: Path) -> list[Path]:
    csvdir = outdir.parent / f"{outdir.name}-csv"  # beside, so a directory holds one copy
    for directory in (outdir, csvdir):
        directory.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(N_FILES):
        part = table.slice(i * ROWS_PER_FILE, ROWS_PER_FILE)
        pq_path = outdir / f"part-{i}.parquet"
        pq.write_table(part, pq_path, compression="snappy", row_group_size=ROW_GROUP_SIZE)
        csv_path = csvdir / f"part-{i}.csv"
        pacsv.write_csv(part, csv_path, write_options=pacsv.WriteOptions(include_header=True))
        written += [pq_path, csv_path]
    return written


def write_truth(outdir: Path, intercept: float, coefs: dict, **extra) -> Path:
    path = outdir / "TRUE_COEFFICIENTS.json"
    doc = {"intercept": intercept, "coefficients": coefs, **extra}
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="data", type=Path, help="output directory (default: data)")
    args = ap.parse_args(argv)
    out: Path = args.out

    # Independent, fixed streams per dataset so changing one never perturbs the other.
    reg_rng = np.random.default_rng([SEED, 1])
    clf_rng = np.random.default_rng([SEED, 2])

    reg = make_regression(reg_rng)
    reg_dir = out / "regression"
    reg_files = write_dataset(reg, reg_dir)
    reg_files.append(write_truth(reg_dir, REG_INTERCEPT, REG_COEFS, noise_sd=REG_NOISE_SD))
    quick = out / "quickstart.parquet"
    pq.write_table(reg, quick, compression="snappy", row_group_size=ROW_GROUP_SIZE)

    clf, acc = make_classification(clf_rng)
    clf_dir = out / "classification"
    clf_files = write_dataset(clf, clf_dir)
    clf_files.append(write_truth(clf_dir, CLF_INTERCEPT, CLF_COEFS, link="logit"))

    for name, table, files in (("regression", reg, reg_files), ("classification", clf, clf_files)):
        nbytes = sum(f.stat().st_size for f in files)
        print(
            f"{name}: {table.num_rows} rows x {table.num_columns} cols "
            f"({', '.join(table.column_names)}) -> {len(files)} files, {nbytes / 1e6:.2f} MB"
        )
    pos = float(np.mean(clf.column("y").to_numpy()))
    print(f"classification: positive rate {pos:.3f}, true-model accuracy {acc:.3f}")
    print(
        f"wrote {out}/ ({N_FILES} parquet files x {N_ROWS // N_FILES // ROW_GROUP_SIZE} "
        f"row groups + {N_FILES} csv files per dataset)"
    )


if __name__ == "__main__":
    main()
