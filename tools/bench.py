"""Throughput and accuracy benchmark of streamgd against baselines measured in the same run.

Usage::

    python tools/bench.py                    # 2M rows x 32 features, 3 interleaved rounds
    python tools/bench.py --quick            # smoke run: 300k rows, 1 round, < 1 minute
    python tools/bench.py --csv              # also the CSV cases (writes a CSV copy once)
    python tools/bench.py --vw               # also Vowpal Wabbit (writes its text copy once)
    python tools/bench.py --cases decode,fit-seq-1024 --repeat 5 --json out.json
    python tools/bench.py --rows 1250000 --scaling 1,4,8   # larger than memory: peak RSS flat?
    python tools/bench.py --list-cases

Optional peers: ``pip install -e '.[bench]'`` (scikit-learn, psutil, vowpalwabbit); without
scikit-learn or vowpalwabbit their cases are reported as skipped. The benchmark imports the
streamgd of its own checkout (it puts the checkout first on ``sys.path``).

Method
------
*Data.* A synthetic regression set, generated once and reused: ``--rows`` rows of ``--features``
float32 columns ``x0..`` and a float32 target ``y``, written as snappy Parquet in ``--files``
files of ``--row-group`` rows per row group, chunk by chunk (never whole in memory), under
``--data/<parameters>/``; a JSON sidecar (``dataset.json``) records the parameters, the true
coefficients and the exact least-squares optimum, and the set is reused only if it matches.
Recipe (seeded with ``--data-seed``): ``x_j = mu_j + sigma_j * (sqrt(1 - rho) z_j + sqrt(rho) c)``
with ``z, c ~ N(0, 1)``, ``rho = 0.3`` (a shared factor: correlated features), ``mu_j ~ U(-5, 5)``,
``sigma_j = 10**U(-1, 1)`` (scales over two decades); ``y = 2 + x @ coef + N(0, 1)`` with
``coef_j = N(0, 1) / sigma_j``. ``--csv`` adds a CSV copy written from the Parquet files.

*Cases.* Each case runs in a fresh subprocess (``--worker CASE``, printing one JSON line), so
its peak RSS is its own (``VmHWM``; ``ru_maxrss`` would include the parent's, see
``peak_rss_mb``). The cases are interleaved within each of ``--repeat`` rounds (the order
rotated by one each round) and the medians are reported. Only the case's work is timed
(``time.perf_counter``; the process's CPU time, all threads, is recorded beside it in the JSON),
not the interpreter start, the imports or pyarrow's lazy import of pandas (see
``warm_lazy_imports``); the files are read once beforehand so that every case finds them in the
page cache, and one discarded run of the first case precedes the rounds. Every case runs with
one BLAS thread (``BLAS_THREADS``), as streamgd does.

- ``decode-mmap``: ``decode`` reading each row group through a memory map of its file (as
  streamgd reads local files; see ``streamgd.sources.HandleCache``): how much of a fit's
  ratio to ``decode`` comes from reading faster rather than from doing less.
- ``decode``: the raw decode ceiling. Every row group read with
  ``ParquetFile.read_row_group`` and copied column by column into a reused Fortran-ordered
  float32 matrix. streamgd does at least this work per row (it decodes to float64), so a ratio
  near 1 means training costs little beyond reading.
- ``fit-seq-B`` / ``fit-shuf-B``: one whole ``streamgd.fit(files, target="y", epochs=1,
  batch_size=B, shuffle=False/True, seed=0)`` call, statistics pass included; rows/s =
  ``rows_trained`` / seconds. The training MSE comes from ``streamgd.evaluate`` (untimed).
- ``epoch-mmap``, ``epoch-seq-B``, ``epoch-shuf-B``: per-epoch figures, start-up apart.
  ``epoch-mmap`` runs ``decode-mmap`` twice and times the second pass; the fits run two
  epochs and time the second alone (from the end of the first epoch to the end of the
  second, by a callback): the marginal cost of an epoch, without the imports, the opening
  of the files and the statistics pass (the first epoch's time is in the JSON). Their ratio
  column is to ``epoch-mmap`` of the same round. The mixing of the shuffled stream is
  measured separately, by ``tools/mixing.py``.
- ``fit-holdout``, ``grid-16``, ``separate-16`` (only when named in ``--cases``): one model
  (``streamgd.fit``, one shuffled epoch, batch 1024, ``holdout=0.1``); a grid of 16 models
  (``streamgd.search.fit_grid``, ``lr`` 4 values x ``l2`` 4 values, same settings) in one
  pass; the same 16 as separate fits one after another. rows = one model's rows trained, so
  the grid cases' cost is printed below the table as their wall time over ``fit-holdout``'s.
- ``cv5x4``, ``separate-24`` and ``sklearn-gridcv`` (only when named): 5-fold
  cross-validation of 4 configurations (``l2`` 4 values) in one pass, 24 models
  (``fit_grid(cv=5)``, same settings as ``grid-16`` without the holdout; its rows are scaled
  by 0.9, the share ``fit-holdout`` trains on, so its cost line is a wall-time ratio too);
  the same 24 models as 24 separate fits (``fit(cv=5, cv_fold=k)`` per fold and the fit on
  all rows, per ``l2`` value); and scikit-learn's ``GridSearchCV``
  of ``SGDRegressor`` over the same 4 ``alpha`` values, 5 folds, one epoch each, on the first
  ``SKLEARN_CV_ROWS`` rows held in memory (loaded and scaled untimed), for scale.
- ``exact``: the least-squares optimum in one streaming pass (float64 ``[1 X y]' [1 X y]``
  accumulated row group by row group, then ``np.linalg.solve``); its MSE comes from a second,
  untimed pass and must equal the optimum in the sidecar.
- ``sklearn-B``: ``SGDRegressor.partial_fit`` on batches of B rows (cut within each row group),
  one pass, fed as in ``decode`` with the float64 conversion and scaling timed. Settings:
  see ``SKLEARN_SETTINGS``; features standardised by a ``StandardScaler`` fitted
  (``partial_fit``) on the first row group only, the target left as it is.
- ``vw`` (with ``--vw``): Vowpal Wabbit (the ``vowpalwabbit`` package's ``Workspace``), one
  pass of its default learner (adaptive, normalised, invariant updates; squared loss) over
  its binary cache of the data; the MSE from a test-only pass (untimed). Bringing the data to
  VW is timed once, separately, when the copy is written: Parquet to VW's text format
  (formatted by Arrow, row group by row group), then VW's parse of it into its cache.
- ``fit-cat`` and ``fit-cross`` (only when named in ``--cases``): ``fit-shuf-1024`` on a
  copy of the data with two string columns (``x0`` and ``x1`` cut into 40 and 25 bins),
  one-hot encoded with ``categorical=["c0", "c1"]``; ``fit-cross`` adds their cross
  (``interactions=["c0*c1"]``), and its ratio to ``fit-cat`` is the cost of the cross.
- ``fit-words`` and ``fit-text`` (only when named in ``--cases``): ``fit-shuf-1024`` on a
  copy of the data with a string column ``words`` (``TEXT_TOKENS`` words a row: the bins of
  the features and filler words, see ``write_text_copy``); ``fit-words`` leaves it out (the
  plain fit on the same files), ``fit-text`` adds ``text=["words"]`` (2**18 buckets), and its
  ratio to ``fit-words`` is the cost of the text column.
- ``fit-default`` (``--scaling F1,F2,...`` only): ``streamgd.fit`` with default settings
  (shuffled, batch 1024) for one epoch on datasets of ``--rows`` x each factor, each in its
  own process, rounds interleaved; the table gives each one's peak RSS (VmHWM) against
  ``--memory-limit`` (default 300 MiB). The bound is reported, not enforced (see
  ``run_scaling``).
- ``csv-parse`` (with ``--csv``): ``pyarrow.csv.open_csv`` with default read options and every
  column's type given (float64), batches iterated and dropped: the CSV baseline.
  ``fit-csv-B``: ``streamgd.fit`` (``shuffle=False``) on the CSV files.

*Results.* The table gives each case's median rows/s, its ratio to the ``decode`` median (and for
CSV cases to the ``csv-parse`` median) with, in brackets, the range of the ratios paired round by
round, the training MSE relative to the exact optimum (``mse / mse_opt - 1``), the median peak RSS
at the end of the timed work, before any untimed scoring pass (and, in brackets, the RSS after
imports, before any work) and the number of repeats. On a shared machine an absolute rate is not a
result; the ratio to a baseline measured in the same run is. With the default 2M rows each case
takes 0.2-2 s, and on a busy shared machine one round's ratio can be off by 2x (the brackets show
it): when a difference matters, use more rounds (``--repeat 7``) or rows (``--rows 10000000``).
Everything (every repeat, medians, machine and library versions, the git commit and the state of
``streamgd/`` at the start and the end, the command line) goes to ``--json``; a warning says if
``streamgd/`` changed while the benchmark ran. With ``epoch-mmap``, the ``bound by CPU`` column
gives, round by round, ``epoch-mmap``'s seconds over the case's CPU seconds (all threads)
divided by the machine's cores: no scheduling of the same work can do better than that ratio
on this machine, so a goal above it needs less work per row, not more overlap.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
# Measure the streamgd of this checkout, not whichever one is installed: a worker runs as
# ``python tools/bench.py``, whose sys.path starts with tools/, so an editable install of
# another checkout would otherwise be imported.
sys.path.insert(0, str(REPO))
RECIPE_VERSION = 1  # bump when the data recipe changes: old datasets are then regenerated
SIDECAR = "dataset.json"
RESULT_MARK = "BENCH-RESULT "
RHO, INTERCEPT, NOISE_SD = 0.3, 2.0, 1.0
SKLEARN_SETTINGS = {
    "penalty": None,  # compared with unregularised least squares
    "learning_rate": "invscaling",
    "eta0": 0.01,
    "power_t": 0.25,
    "random_state": 0,
}
# Every case runs with one BLAS thread, as streamgd does itself (trainer.single_blas_thread):
# with OpenBLAS's default 2 threads on these 2 shared cores, one round of ``exact`` took 3 s
# instead of 0.15-0.3 s (BLAS threads spinning against a busy neighbour).
BLAS_THREADS = 1
QUICK = {"rows": 300_000, "repeat": 1, "row_group": 16_384}
DEFAULTS = {"rows": 2_000_000, "repeat": 3, "row_group": 131_072}


# -- the dataset --------------------------------------------------------------------------------
def dataset_params(args: argparse.Namespace) -> dict:
    return {
        "recipe": RECIPE_VERSION,
        "rows": args.rows,
        "features": args.features,
        "row_group": args.row_group,
        "files": args.files,
        "seed": args.data_seed,
    }


def dataset_dir(root: Path, p: dict) -> Path:
    return root / f"r{p['rows']}-f{p['features']}-g{p['row_group']}-n{p['files']}-s{p['seed']}"


def read_sidecar(directory: Path) -> dict | None:
    try:
        return json.loads((directory / SIDECAR).read_text())
    except (OSError, ValueError):
        return None


def write_sidecar(directory: Path, meta: dict) -> None:
    tmp = directory / (SIDECAR + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, directory / SIDECAR)


def files_intact(directory: Path, listing: dict[str, int]) -> bool:
    return all(
        (directory / name).is_file() and (directory / name).stat().st_size == size
        for name, size in listing.items()
    )


def ensure_dataset(
    root: Path,
    params: dict,
    want_csv: bool,
    want_vw: bool = False,
    want_cat: bool = False,
    want_text: bool = False,
) -> tuple[Path, dict]:
    """Reuse the dataset if its sidecar matches ``params`` and its files are intact, else
    (re)generate it; add the CSV copy and the exact optimum if missing."""
    directory = dataset_dir(root, params)
    meta = read_sidecar(directory)
    if meta is None or meta["params"] != params or not files_intact(directory, meta["parquet"]):
        log(f"generating {params['rows']:,} rows in {directory} ...")
        shutil.rmtree(directory, ignore_errors=True)
        meta = generate(directory, params)
        write_sidecar(directory, meta)
    if want_csv and not (meta.get("csv") and files_intact(directory, meta["csv"])):
        log("writing the CSV copy ...")
        meta["csv"] = write_csv_copy(directory, meta)
        write_sidecar(directory, meta)
    if want_vw and not (meta.get("vw") and (directory / meta["vw"]["cache"]).is_file()):
        log("writing the Vowpal Wabbit copy and cache ...")
        meta["vw"] = write_vw_copy(directory, meta)
        write_sidecar(directory, meta)
    if want_cat and not (meta.get("cat") and files_intact(directory, meta["cat"])):
        log("writing the copy with categorical columns ...")
        meta["cat"] = write_cat_copy(directory, meta)
        write_sidecar(directory, meta)
    if want_text and not (meta.get("text") and files_intact(directory, meta["text"])):
        log("writing the copy with a text column ...")
        meta["text"] = write_text_copy(directory, meta)
        write_sidecar(directory, meta)
    if "optimum" not in meta:
        log("computing the exact least-squares optimum ...")
        files = parquet_files(directory, meta)
        w, _ = exact_solution(files, params["features"])
        meta["optimum"] = {"mse": mse_pass(files, linear_predictor(w)), "w": w.tolist()}
        write_sidecar(directory, meta)
    return directory, meta


def rows_per_file(rows: int, files: int) -> list[int]:
    return [rows // files + (i < rows % files) for i in range(files)]


def generate(directory: Path, params: dict) -> dict:
    """Write the Parquet files row group by row group; each group has its own seeded stream,
    so the data does not depend on how it is chunked in memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n_feat, seed = params["features"], params["seed"]
    rng = np.random.default_rng([seed, 0])
    mu = rng.uniform(-5, 5, n_feat)
    sigma = 10 ** rng.uniform(-1, 1, n_feat)
    coef = rng.standard_normal(n_feat) / sigma
    names = [f"x{j}" for j in range(n_feat)]
    schema = pa.schema([(n, pa.float32()) for n in [*names, "y"]])
    (directory / "parquet").mkdir(parents=True)
    listing, group = {}, 0
    for i, n_rows in enumerate(rows_per_file(params["rows"], params["files"])):
        name = f"parquet/part-{i:03d}.parquet"
        with pq.ParquetWriter(directory / name, schema, compression="snappy") as writer:
            for start in range(0, n_rows, params["row_group"]):
                n = min(params["row_group"], n_rows - start)
                g = np.random.default_rng([seed, 1, group])
                common = g.standard_normal((n, 1))
                z = np.sqrt(1 - RHO) * g.standard_normal((n, n_feat)) + np.sqrt(RHO) * common
                x = mu + sigma * z
                y = INTERCEPT + x @ coef + NOISE_SD * g.standard_normal(n)
                cols = [pa.array(x[:, j].astype(np.float32)) for j in range(n_feat)]
                writer.write_table(
                    pa.Table.from_arrays([*cols, pa.array(y.astype(np.float32))], schema=schema),
                    row_group_size=params["row_group"],
                )
                group += 1
        listing[name] = (directory / name).stat().st_size
    truth = {
        "intercept": INTERCEPT,
        "coef": coef.tolist(),
        "mu": mu.tolist(),
        "sigma": sigma.tolist(),
    }
    return {"params": params, "parquet": listing, "truth": truth, "rho": RHO, "noise_sd": NOISE_SD}


def write_csv_copy(directory: Path, meta: dict) -> dict[str, int]:
    """The same rows as CSV (header line), converted row group by row group. Values are the
    float32 values' shortest decimal form, so they parse to float64s within float32 rounding."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    (directory / "csv").mkdir(exist_ok=True)
    listing = {}
    for src in parquet_files(directory, meta):
        name = f"csv/{Path(src).stem}.csv"
        pf = pq.ParquetFile(src)
        with pacsv.CSVWriter(directory / name, pf.schema_arrow) as writer:
            for i in range(pf.num_row_groups):
                writer.write_table(pf.read_row_group(i))
        listing[name] = (directory / name).stat().st_size
    return listing


CAT_LEVELS = (40, 25)  # values of the categorical columns c0 and c1 of the "cat" copy


def write_cat_copy(directory: Path, meta: dict) -> dict[str, int]:
    """The same rows with two string columns added, ``c0`` and ``c1``: ``x0`` and ``x1`` cut
    into ``CAT_LEVELS`` equal-width bins of +-3 standard deviations (``"k17"``), for the
    ``fit-cat`` and ``fit-cross`` cases (1000 pairs of values)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (directory / "cat").mkdir(exist_ok=True)
    mu, sigma = meta["truth"]["mu"], meta["truth"]["sigma"]
    listing = {}
    for src in parquet_files(directory, meta):
        name = f"cat/{Path(src).stem}.parquet"
        pf = pq.ParquetFile(src)
        writer = None
        for i in range(pf.num_row_groups):
            t = pf.read_row_group(i)
            for j, levels in enumerate(CAT_LEVELS):
                z = (t[f"x{j}"].to_numpy() - mu[j]) / sigma[j]
                k = np.clip(((z + 3) / 6 * levels).astype(int), 0, levels - 1)
                t = t.append_column(f"c{j}", pa.array(np.char.add("k", k.astype(str))))
            if writer is None:
                writer = pq.ParquetWriter(directory / name, t.schema)
            writer.write_table(t)
        writer.close()
        listing[name] = (directory / name).stat().st_size
    return listing


# -- the text copy and its cases (fit-words, fit-text) ------------------------------------------
TEXT_TOKENS = 24  # words a row of the text copy: a bin word per feature (up to 8), fillers


def write_text_copy(directory: Path, meta: dict) -> dict[str, int]:
    """The same rows with a string column ``words`` of ``TEXT_TOKENS`` words: ``f3k7`` for
    feature 3 in bin 7 of 10 (+-3 standard deviations), for the first 8 features, then
    filler words ``w123`` drawn from 5000 (seeded per row group)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    (directory / "text").mkdir(exist_ok=True)
    mu, sigma = meta["truth"]["mu"], meta["truth"]["sigma"]
    listing = {}
    for f, src in enumerate(parquet_files(directory, meta)):
        name = f"text/{Path(src).stem}.parquet"
        pf = pq.ParquetFile(src)
        writer = None
        for i in range(pf.num_row_groups):
            t = pf.read_row_group(i)
            rng = np.random.default_rng([f, i])
            words = []
            for j in range(min(8, len(mu))):
                z = (t[f"x{j}"].to_numpy() - mu[j]) / sigma[j]
                k = np.clip(((z + 3) / 6 * 10).astype(int), 0, 9)
                words.append(pa.array(np.char.add(f"f{j}k", k.astype(str))))
            for _ in range(TEXT_TOKENS - len(words)):
                filler = rng.integers(0, 5000, t.num_rows).astype(str)
                words.append(pa.array(np.char.add("w", filler)))
            t = t.append_column("words", pc.binary_join_element_wise(*words, " "))
            if writer is None:
                writer = pq.ParquetWriter(directory / name, t.schema)
            writer.write_table(t)
        writer.close()
        listing[name] = (directory / name).stat().st_size
    return listing


def text_files(directory: Path, meta: dict) -> list[str]:
    return [str(directory / name) for name in sorted(meta.get("text") or {})]


def case_fit_text(ctx: Ctx, *, text: bool) -> dict:
    """``fit-shuf-1024`` on the text copy, without (``fit-words``) and with (``fit-text``)
    its text column ``words`` as a hashed bag of words."""
    import streamgd

    box = {}
    extra = {"text": ["words"]} if text else {}
    features = [f"x{j}" for j in range(ctx.n_feat)]

    def work() -> int:
        box["model"] = streamgd.fit(
            ctx.text, target="y", features=features, epochs=1, batch_size=1024, seed=0, **extra
        )
        return int(box["model"].summary["rows_trained"])

    out = timed(work)
    out["mse"] = float(streamgd.evaluate(box["model"], ctx.text)["mse"])
    return out


# -- end of the text copy and its cases ----------------------------------------------------------


def write_vw_copy(directory: Path, meta: dict) -> dict:
    """The same rows in Vowpal Wabbit's text format (``y | x0:v x1:v ...``), formatted by
    Arrow row group by row group, then VW's own binary cache of it (one parsing pass of
    ``vw``, which also trains a throwaway model). Both are timed: they are the cost of
    bringing Parquet data to VW, reported beside its training time."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from vowpalwabbit import Workspace

    (directory / "vw").mkdir(exist_ok=True)
    text, cache = directory / "vw" / "data.vw", directory / "vw" / "data.vw.cache"
    n_feat = meta["params"]["features"]
    t0 = time.perf_counter()
    with open(text, "wb") as out:
        for src in parquet_files(directory, meta):
            pf = pq.ParquetFile(src)
            for i in range(pf.num_row_groups):
                t = pf.read_row_group(i)
                feats = [
                    pc.binary_join_element_wise(f"x{j}", pc.cast(t[f"x{j}"], pa.string()), ":")
                    for j in range(n_feat)
                ]
                lines = pc.binary_join_element_wise(pc.cast(t["y"], pa.string()), "|", *feats, " ")
                out.write(("\n".join(lines.to_pylist()) + "\n").encode())
    convert_s = time.perf_counter() - t0
    cache.unlink(missing_ok=True)
    t0 = time.perf_counter()
    Workspace(f"--quiet -d {text} --cache_file {cache}").finish()
    cache_s = time.perf_counter() - t0
    return {
        "text": str(text.relative_to(directory)),
        "cache": str(cache.relative_to(directory)),
        "sizes": {"text": text.stat().st_size, "cache": cache.stat().st_size},
        "convert_seconds": convert_s,
        "cache_seconds": cache_s,
    }


def vw_available() -> bool:
    try:
        import vowpalwabbit  # noqa: F401
    except ImportError:
        return False
    return True


def parquet_files(directory: Path, meta: dict) -> list[str]:
    return [str(directory / name) for name in sorted(meta["parquet"])]


def cat_files(directory: Path, meta: dict) -> list[str]:
    return [str(directory / name) for name in sorted(meta.get("cat") or {})]


def csv_files(directory: Path, meta: dict) -> list[str]:
    return [str(directory / name) for name in sorted(meta.get("csv") or {})]


def warm_page_cache(paths: list[str]) -> None:
    """Read every file once, so that the first case does not pay for the disk."""
    for path in paths:
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


# -- decoding helpers shared by the baselines ---------------------------------------------------
def decoded_row_groups(
    files: list[str], dtype=np.float32, *, ones_first: bool = False, memory_map: bool = False
) -> Iterator[np.ndarray]:
    """Each row group of each file as a reused Fortran-ordered matrix (all columns, in file
    order, optionally after a leading column of ones), reallocated only when the row count
    changes. The matrix is overwritten by the next row group: use it before asking for more.
    With ``memory_map``, each row group is read through a memory map of the file opened for
    it (as streamgd reads local files) instead of the default buffered reads."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf, lead = None, int(ones_first)
    for path in files:
        pf = pq.ParquetFile(path)
        for i in range(pf.num_row_groups):
            if memory_map:
                table = pq.ParquetFile(pa.memory_map(path), metadata=pf.metadata).read_row_group(i)
            else:
                table = pf.read_row_group(i)
            if buf is None or buf.shape[0] != table.num_rows:
                buf = np.empty((table.num_rows, lead + table.num_columns), dtype, order="F")
                if ones_first:
                    buf[:, 0] = 1.0
            for j in range(table.num_columns):
                buf[:, lead + j] = table.column(j).to_numpy()
            yield buf


def exact_solution(files: list[str], n_feat: int) -> tuple[np.ndarray, float]:
    """``w = [b, coef...]`` minimising the squared error, from the float64 Gram matrix of
    ``[1 X y]`` accumulated in one pass, and the MSE given by the normal equations."""
    gram, n = np.zeros((n_feat + 2, n_feat + 2)), 0
    for m in decoded_row_groups(files, np.float64, ones_first=True):
        gram += m.T @ m
        n += len(m)
    xx, xy, yy = gram[:-1, :-1], gram[:-1, -1], gram[-1, -1]
    w = np.linalg.solve(xx, xy)
    return w, float((yy - 2 * w @ xy + w @ xx @ w) / n)


def linear_predictor(w: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: x @ w[1:] + w[0]


def mse_pass(files: list[str], predict: Callable[[np.ndarray], np.ndarray]) -> float:
    """Mean squared error of ``predict`` (float64 features -> predictions) over all rows."""
    sse, n = 0.0, 0
    for m in decoded_row_groups(files, np.float64):
        r = predict(m[:, :-1]) - m[:, -1]
        sse += float(r @ r)
        n += len(m)
    return sse / n


# -- the cases ----------------------------------------------------------------------------------
@dataclass
class Ctx:
    """What a case gets: the files, the feature count and its batch size (if any)."""

    parquet: list[str]
    csv: list[str]
    n_feat: int
    batch_size: int | None
    cat: list[str] | None = None  # the copy with categorical columns (see write_cat_copy)
    text: list[str] | None = None  # the copy with a text column (see write_text_copy)


def timed(work: Callable[[], int]) -> dict:
    """Wall time of ``work()``, and the CPU time of the whole process (all threads) meanwhile."""
    c0, t0 = time.process_time(), time.perf_counter()
    rows = work()
    return {
        "rows": rows,
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
        # before any untimed scoring pass, which would add its own memory
        "peak_rss_mb": peak_rss_mb(),
    }


def case_decode(ctx: Ctx, *, memory_map: bool = False) -> dict:
    def work() -> int:
        return sum(len(m) for m in decoded_row_groups(ctx.parquet, memory_map=memory_map))

    return timed(work)


def case_fit(ctx: Ctx, *, shuffle: bool, csv: bool = False) -> dict:
    import streamgd

    files = ctx.csv if csv else ctx.parquet
    box = {}

    def work() -> int:
        box["model"] = streamgd.fit(
            files, target="y", epochs=1, batch_size=ctx.batch_size, shuffle=shuffle, seed=0
        )
        return int(box["model"].summary["rows_trained"])

    out = timed(work)
    model = box["model"]
    out["mse"] = float(streamgd.evaluate(model, files)["mse"])
    out["summary"] = {k: model.summary.get(k) for k in ("steps", "final_loss", "stop_reason")}
    return out


def case_fit_cat(ctx: Ctx, *, cross: bool) -> dict:
    """``fit-shuf-1024`` on the copy with the categorical columns ``c0`` and ``c1`` one-hot
    encoded (``fit-cat``), and with their cross too (``fit-cross``: ``--interactions
    c0*c1``, up to 1000 pairs), so that ``fit-cross`` / ``fit-cat`` is the cost of the cross."""
    import streamgd

    box = {}
    extra = {"interactions": ["c0*c1"]} if cross else {}

    def work() -> int:
        box["model"] = streamgd.fit(
            ctx.cat, target="y", categorical=["c0", "c1"], epochs=1, batch_size=1024, seed=0,
            **extra,
        )  # fmt: skip
        return int(box["model"].summary["rows_trained"])

    out = timed(work)
    out["mse"] = float(streamgd.evaluate(box["model"], ctx.cat)["mse"])
    return out


# The grid cases: one epoch, shuffled, batch 1024, 10% held out (a grid needs validation rows);
# 16 models = --lr 4 values x --l2 4 values. Their ratio to fit-holdout is the grid's cost.
GRID_BASE = {"target": "y", "epochs": 1, "holdout": 0.1, "seed": 0}
GRID_16 = {"lr": [0.3, 0.1, 0.03, 0.01], "l2": [0.0, 1e-5, 1e-4, 1e-3]}


def case_fit_holdout(ctx: Ctx) -> dict:
    """One model with the grid cases' settings: their baseline."""
    import streamgd

    box = {}

    def work() -> int:
        box["model"] = streamgd.fit(ctx.parquet, **GRID_BASE)
        return int(box["model"].summary["rows_trained"])

    return timed(work)


def case_grid(ctx: Ctx, *, separate: bool = False) -> dict:
    """The 16-model grid in one pass (``grid-16``), or as 16 fits one after another
    (``separate-16``, what a loop over settings costs). rows = one model's rows trained, so
    the rate's ratio to fit-holdout is one model's wall time over the grid's."""
    import itertools

    import streamgd
    from streamgd.search import fit_grid

    box = {}

    def work() -> int:
        if separate:
            for lr, l2 in itertools.product(*GRID_16.values()):
                box["model"] = streamgd.fit(ctx.parquet, lr=lr, l2=l2, **GRID_BASE)
        else:
            box["model"] = fit_grid(ctx.parquet, **GRID_16, **GRID_BASE).best
        return int(box["model"].summary["rows_trained"])

    return timed(work)


# --- k-fold cross-validation cases (issue 15 item 2) -------------------------------------------
# cv5x4: 5-fold CV of 4 configurations (--l2 4 values) in one pass: 4 x (5 folds + 1 model on
# all rows) = 24 models, one shuffled epoch, batch 1024, no holdout (the folds validate).
# sklearn-gridcv: scikit-learn's GridSearchCV over SGDRegressor (alpha = the same 4 values,
# 5 folds, one epoch each, then the refit on all rows) on the first SKLEARN_CV_ROWS rows, held
# in memory (loaded and scaled before the clock starts): the in-memory way, for scale.
CV_GRID = {"l2": [0.0, 1e-5, 1e-4, 1e-3]}
SKLEARN_CV_ROWS = 1_000_000


def case_cv(ctx: Ctx) -> dict:
    """``fit_grid(cv=5, l2=4 values)``. rows = the model on all rows' rows x 0.9, the rows
    fit-holdout trains (it holds 10% out), so that the rate's ratio to fit-holdout is its wall
    time over the CV's."""
    from streamgd.search import fit_grid

    settings = {k: v for k, v in GRID_BASE.items() if k != "holdout"}
    box = {}

    def work() -> int:
        box["result"] = fit_grid(ctx.parquet, cv=5, **CV_GRID, **settings)
        return round(0.9 * box["result"].best.summary["rows_trained"])

    out = timed(work)
    out["models"] = 6 * len(CV_GRID["l2"])
    out["leaderboard"] = box["result"].leaderboard
    return out


def case_cv_separate(ctx: Ctx) -> dict:
    """The 24 models of ``cv5x4`` as 24 separate fits, one after another: per ``l2`` value
    each fold's model (``fit(cv=5, cv_fold=k)``) and the model on all rows. rows as
    ``cv5x4``'s (the model on all rows' x 0.9), so the cost line is a wall-time ratio too."""
    import streamgd

    settings = {k: v for k, v in GRID_BASE.items() if k != "holdout"}
    box = {}

    def work() -> int:
        for l2 in CV_GRID["l2"]:
            for k in range(5):
                streamgd.fit(ctx.parquet, cv=5, cv_fold=k, l2=l2, **settings)
            box["model"] = streamgd.fit(ctx.parquet, l2=l2, **settings)
        return round(0.9 * box["model"].summary["rows_trained"])

    out = timed(work)
    out["models"] = 6 * len(CV_GRID["l2"])
    return out


def case_sklearn_gridcv(ctx: Ctx) -> dict:
    """GridSearchCV(SGDRegressor) on an in-memory sample; rows = the sample's rows."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import SGDRegressor
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.preprocessing import StandardScaler

    parts, have = [], 0
    for m in decoded_row_groups(ctx.parquet):
        parts.append(np.array(m[: SKLEARN_CV_ROWS - have], dtype=np.float64))
        have += len(parts[-1])
        if have >= SKLEARN_CV_ROWS:
            break
    data = np.concatenate(parts)
    x = StandardScaler().fit_transform(data[:, : ctx.n_feat])
    y = data[:, ctx.n_feat]
    del data, parts
    settings = {**SKLEARN_SETTINGS, "penalty": "l2", "max_iter": 1, "tol": None}
    search = GridSearchCV(
        SGDRegressor(**settings),
        {"alpha": CV_GRID["l2"]},
        cv=KFold(5, shuffle=True, random_state=0),
        scoring="neg_mean_squared_error",
        n_jobs=1,
    )

    def work() -> int:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            search.fit(x, y)
        return len(y)

    out = timed(work)
    out["best"] = {"alpha": search.best_params_["alpha"], "cv_mse": -search.best_score_}
    out["fits"] = 5 * len(CV_GRID["l2"]) + 1
    return out


# --- end of the cross-validation cases ------------------------------------------------------


def case_fit_memory(ctx: Ctx, *, kind: str) -> dict:
    """``streamgd.fit`` on the same rows already in memory, as a pyarrow Table or a pandas
    DataFrame (loaded before the clock starts), shuffled like ``fit-shuf``. ``source_mb`` is
    the process's RSS once the source is loaded, and ``above_source_mb`` the peak RSS of the
    fit above it (the high-water mark is reset after loading)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import streamgd

    table = pa.concat_tables([pq.read_table(f) for f in ctx.parquet]).combine_chunks()
    source = table if kind == "table" else table.to_pandas()
    if kind != "table":
        del table
    source_mb = current_rss_mb()
    reset_peak_rss()

    def work() -> int:
        model = streamgd.fit(source, target="y", epochs=1, batch_size=ctx.batch_size, seed=0)
        return int(model.summary["rows_trained"])

    out = timed(work)
    out["source_mb"] = source_mb
    out["above_source_mb"] = out["peak_rss_mb"] - source_mb
    return out


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux 4.0+)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def case_epoch_mmap(ctx: Ctx) -> dict:
    """Two passes of ``decode-mmap``; the second is timed (the per-epoch baseline)."""
    sum(len(m) for m in decoded_row_groups(ctx.parquet, memory_map=True))
    return case_decode(ctx, memory_map=True)


def case_epoch(ctx: Ctx, *, shuffle: bool) -> dict:
    """``fit-*`` for two epochs; the second epoch alone is timed (its rows and seconds, from
    the end of the first epoch to the end of the second): the marginal cost of an epoch,
    without the start-up and the statistics pass. The whole fit's time is kept beside it."""
    import streamgd
    from streamgd.training.callbacks import Callback

    ends: list[tuple[float, float, int]] = []

    class EpochClock(Callback):
        def on_epoch_end(self, state, entry) -> None:
            ends.append((time.perf_counter(), time.process_time(), int(entry["rows"])))

    start = (time.perf_counter(), time.process_time())
    model = streamgd.fit(
        ctx.parquet,
        target="y",
        epochs=2,
        batch_size=ctx.batch_size,
        shuffle=shuffle,
        seed=0,
        callbacks=[EpochClock()],
    )
    (t1, c1, _), (t2, c2, rows) = ends
    return {
        "rows": rows,
        "seconds": t2 - t1,
        "cpu_seconds": c2 - c1,
        "peak_rss_mb": peak_rss_mb(),
        "first_epoch_seconds": t1 - start[0],
        "mse": float(streamgd.evaluate(model, ctx.parquet)["mse"]),
    }


def case_fit_default(ctx: Ctx) -> dict:
    """``streamgd.fit`` with every setting at its default but one epoch (shuffled, batch 1024,
    65,536-row buffer): the larger-than-memory run (``--scaling``)."""
    import streamgd

    def work() -> int:
        model = streamgd.fit(ctx.parquet, target="y", epochs=1)
        return int(model.summary["rows_trained"])

    return timed(work)


def case_exact(ctx: Ctx) -> dict:
    box = {}

    def work() -> int:
        box["w"], box["mse_normal"] = exact_solution(ctx.parquet, ctx.n_feat)
        return sum(pq_rows(ctx.parquet))

    out = timed(work)
    out["mse"] = mse_pass(ctx.parquet, linear_predictor(box["w"]))
    out["mse_normal_equations"] = box["mse_normal"]
    return out


def pq_rows(files: list[str]) -> Iterator[int]:
    import pyarrow.parquet as pq

    return (pq.ParquetFile(f).metadata.num_rows for f in files)


def case_sklearn(ctx: Ctx) -> dict:
    from sklearn.linear_model import SGDRegressor
    from sklearn.preprocessing import StandardScaler

    model = SGDRegressor(**SKLEARN_SETTINGS)
    scaler = StandardScaler(copy=False)
    bs, n_feat = ctx.batch_size, ctx.n_feat

    def work() -> int:
        rows = 0
        for m in decoded_row_groups(ctx.parquet):
            x = np.array(m[:, :n_feat], dtype=np.float64, order="C")
            y = m[:, n_feat].astype(np.float64)
            if rows == 0:
                scaler.partial_fit(x)
            x = scaler.transform(x)
            for i in range(0, len(x), bs):
                model.partial_fit(x[i : i + bs], y[i : i + bs])
            rows += len(x)
        return rows

    out = timed(work)
    out["mse"] = mse_pass(
        ctx.parquet, lambda x: model.predict(scaler.transform(np.ascontiguousarray(x)))
    )
    out["settings"] = {**SKLEARN_SETTINGS, "scaler": "StandardScaler on the first row group"}
    return out


def case_vw(ctx: Ctx) -> dict:
    """One pass of Vowpal Wabbit (default learner: adaptive, normalised, invariant updates;
    squared loss) reading its binary cache of the data; the MSE from a test-only pass."""
    import tempfile

    from vowpalwabbit import Workspace

    directory = Path(ctx.parquet[0]).parent.parent
    vw = read_sidecar(directory)["vw"]
    text, cache = directory / vw["text"], directory / vw["cache"]
    with tempfile.TemporaryDirectory() as tmp:
        model, preds = Path(tmp) / "model.vw", Path(tmp) / "preds.txt"

        def work() -> int:
            Workspace(f"--quiet -d {text} --cache_file {cache} -f {model}").finish()
            return sum(pq_rows(ctx.parquet))

        out = timed(work)
        Workspace(f"--quiet -t -i {model} -d {text} -p {preds}").finish()
        p = np.loadtxt(preds, dtype=np.float64)
    y = np.concatenate([m[:, -1].astype(np.float64) for m in decoded_row_groups(ctx.parquet)])
    out["mse"] = float(np.mean((p - y) ** 2))
    out["conversion"] = {k: vw[k] for k in ("convert_seconds", "cache_seconds", "sizes")}
    return out


def case_csv_parse(ctx: Ctx) -> dict:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    # Every column's type given (float64), as streamgd fixes them once: left to infer them per
    # block, pyarrow parses this data ~1.6x slower, which would flatter every fit-csv case.
    names = [*(f"x{j}" for j in range(ctx.n_feat)), "y"]
    convert = pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.float64()))

    def work() -> int:
        rows = 0
        for path in ctx.csv:
            for batch in pacsv.open_csv(path, convert_options=convert):
                rows += batch.num_rows
        return rows

    return timed(work)


@dataclass(frozen=True)
class Kind:
    """A family of cases: ``run(ctx)``, whether it takes a batch size (``name-B``), what it
    needs, and the baselines its rate is divided by."""

    run: Callable[[Ctx], dict]
    batched: bool = False
    # "csv" | "sklearn" | "vw" | "memory" | "cat" | "grid" | "text" (the last four: when named)
    needs: str | None = None
    baselines: tuple[str, ...] = ("decode",)


KINDS: dict[str, Kind] = {
    "decode": Kind(case_decode),
    "decode-mmap": Kind(lambda c: case_decode(c, memory_map=True)),
    "fit-seq": Kind(lambda c: case_fit(c, shuffle=False), batched=True),
    "fit-shuf": Kind(lambda c: case_fit(c, shuffle=True), batched=True),
    "fit-table": Kind(lambda c: case_fit_memory(c, kind="table"), batched=True, needs="memory"),
    "fit-frame": Kind(lambda c: case_fit_memory(c, kind="frame"), batched=True, needs="memory"),
    "fit-holdout": Kind(case_fit_holdout, needs="grid"),
    "grid-16": Kind(case_grid, needs="grid", baselines=("decode", "fit-holdout")),
    "separate-16": Kind(
        lambda c: case_grid(c, separate=True), needs="grid", baselines=("decode", "fit-holdout")
    ),
    # the cross-validation cases (only when named)
    "cv5x4": Kind(case_cv, needs="grid", baselines=("decode", "fit-holdout")),
    "separate-24": Kind(case_cv_separate, needs="grid", baselines=("decode", "fit-holdout")),
    "sklearn-gridcv": Kind(case_sklearn_gridcv, needs="grid"),
    "epoch-mmap": Kind(case_epoch_mmap, baselines=("epoch-mmap",)),
    "epoch-seq": Kind(
        lambda c: case_epoch(c, shuffle=False), batched=True, baselines=("epoch-mmap",)
    ),
    "epoch-shuf": Kind(
        lambda c: case_epoch(c, shuffle=True), batched=True, baselines=("epoch-mmap",)
    ),
    "exact": Kind(case_exact),
    "fit-cat": Kind(lambda c: case_fit_cat(c, cross=False), needs="cat"),
    "fit-cross": Kind(
        lambda c: case_fit_cat(c, cross=True), needs="cat", baselines=("decode", "fit-cat")
    ),
    "fit-words": Kind(lambda c: case_fit_text(c, text=False), needs="text"),
    "fit-text": Kind(
        lambda c: case_fit_text(c, text=True), needs="text", baselines=("decode", "fit-words")
    ),
    "fit-default": Kind(case_fit_default, needs="scaling"),
    "sklearn": Kind(case_sklearn, batched=True, needs="sklearn"),
    "vw": Kind(case_vw, needs="vw"),
    "csv-parse": Kind(case_csv_parse, needs="csv", baselines=("decode", "csv-parse")),
    "fit-csv": Kind(
        lambda c: case_fit(c, shuffle=False, csv=True),
        batched=True,
        needs="csv",
        baselines=("decode", "csv-parse"),
    ),
}


# -- many small files (issue 17, item 5) -------------------------------------------------------
# ``fit-files-4`` and ``fit-files-2000`` (only when named in ``--cases``): a default
# ``streamgd.fit`` (shuffled, batch 1024, one epoch, statistics pass included) on the first
# FILES_ROWS rows of the dataset, copied once (untimed, by the first worker that needs them)
# as 4 files of one row group each and as 2000 files of 50 rows; ``fit-files-2000``'s ratio
# to ``fit-files-4`` of the same round is the cost of the file count, printed below the table.
FILES_ROWS = 100_000
FILES_COUNTS = (4, 2000)


def files_copy(ctx: Ctx, count: int) -> list[str]:
    """The first FILES_ROWS rows in ``count`` files (written once, a marker file last)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(ctx.parquet[0]).parent / f"files-{count}"
    if not (root / "complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        pieces, have = [], 0
        for path in ctx.parquet:
            pf = pq.ParquetFile(path)
            for i in range(pf.num_row_groups):
                pieces.append(pf.read_row_group(i))
                have += pieces[-1].num_rows
                if have >= FILES_ROWS:
                    break
            if have >= FILES_ROWS:
                break
        table = pa.concat_tables(pieces).slice(0, FILES_ROWS)
        per = -(-FILES_ROWS // count)
        for k in range(count):
            part = table.slice(k * per, per)
            pq.write_table(part, root / f"part-{k:05d}.parquet", row_group_size=per)
        (root / "complete").write_text(str(count))
    return sorted(str(p) for p in root.glob("part-*.parquet"))


def case_fit_files(ctx: Ctx, count: int) -> dict:
    import streamgd

    files = files_copy(ctx, count)

    def work() -> int:
        model = streamgd.fit(files, target="y", epochs=1, seed=0)
        return int(model.summary["rows_trained"])

    return timed(work)


def print_files_ratios(summary: dict[str, dict]) -> None:
    base = f"fit-files-{FILES_COUNTS[0]}"
    for case, s in summary.items():
        r = s["ratios"].get(base)
        if r is not None and case != base:
            spread = (
                f" [{min(r['paired']):.2f}-{max(r['paired']):.2f}]" if len(r["paired"]) > 1 else ""
            )
            print(f"{case}: {r['of_medians']:.2f}x the rows/s of {base}{spread}")


KINDS.update(
    {
        f"fit-files-{n}": Kind(
            lambda c, n=n: case_fit_files(c, n),
            needs="files",
            baselines=("decode", f"fit-files-{FILES_COUNTS[0]}"),
        )
        for n in FILES_COUNTS
    }
)
# -- end of many small files -------------------------------------------------------------------


def case_names(batch_sizes: list[int], with_csv: bool, with_vw: bool = False) -> list[str]:
    names = []
    for kind_name, kind in KINDS.items():
        if (kind.needs == "csv" and not with_csv) or (kind.needs == "vw" and not with_vw):
            continue
        if kind.needs in ("scaling", "memory", "cat", "grid", "files", "text"):  # only when named
            continue
        names += [f"{kind_name}-{b}" for b in batch_sizes] if kind.batched else [kind_name]
    return names


def parse_case(name: str) -> tuple[str, Kind, int | None]:
    if name in KINDS and not KINDS[name].batched:  # a name ending in a number (grid-16)
        return name, KINDS[name], None
    m = re.fullmatch(r"(.+?)(?:-(\d+))?", name)
    kind_name, size = m.group(1), m.group(2)
    kind = KINDS.get(kind_name)
    if kind is None or kind.batched != (size is not None):
        raise SystemExit(f"unknown case {name!r}; see --list-cases")
    return kind_name, kind, int(size) if size else None


def sklearn_available() -> bool:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


# -- the worker (one case in this process) ------------------------------------------------------
def peak_rss_mb() -> float:
    """Peak RSS of this process image, in MiB: ``VmHWM`` from /proc. (``ru_maxrss`` is not
    used for the table: Linux carries the parent's high-water mark across fork+exec, so a
    worker started by a 200 MB parent reports at least 200 MB whatever it does.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return maxrss_mb()


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def warm_lazy_imports() -> None:
    """``ChunkedArray.to_numpy`` imports pandas on its first call (~0.3 s, 400 modules): pay
    that before the clock starts, in every case alike (streamgd imports pandas anyway)."""
    import pyarrow as pa

    pa.chunked_array([pa.array([0.0], pa.float32())]).to_numpy()


def run_worker(case: str, directory: Path) -> None:
    _, kind, size = parse_case(case)
    meta = read_sidecar(directory)
    ctx = Ctx(
        parquet_files(directory, meta),
        csv_files(directory, meta),
        meta["params"]["features"],
        size,
        cat_files(directory, meta),
        text_files(directory, meta),
    )
    from threadpoolctl import threadpool_limits

    warm_lazy_imports()
    if case.startswith(("fit", "epoch", "grid", "separate", "cv")):
        import streamgd

        # ``import streamgd`` is lazy (its names load on first use, so a signal handler can
        # be set before the heavy imports): load what a fit uses before the clock starts
        streamgd.fit, streamgd.evaluate  # noqa: B018
    if kind.needs == "sklearn":
        import sklearn.linear_model  # noqa: F401
    ready = peak_rss_mb()
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        out = kind.run(ctx)
    out.update(
        case=case,
        rows_per_s=out["rows"] / out["seconds"],
        rss_ready_mb=ready,
        peak_rss_after_scoring_mb=peak_rss_mb(),
        ru_maxrss_mb=maxrss_mb(),
    )
    print(RESULT_MARK + json.dumps(out), flush=True)


def spawn(case: str, directory: Path) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        case,
        "--dataset",
        str(directory),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return {**json.loads(line[len(RESULT_MARK) :]), "process_seconds": wall}
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"case": case, "error": f"exit {proc.returncode}: {tail}", "process_seconds": wall}


# -- running, summarising, reporting ------------------------------------------------------------
def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def format_rate(res: dict) -> str:
    return f"{res['rows_per_s']:,.0f} rows/s ({res['seconds']:.2f} s)"


def run_rounds(
    cases: list[str], directory: Path, repeat: int
) -> tuple[dict[str, list[dict]], dict]:
    """Every case once per round, in a rotated order; returns the runs and the warm-up run."""
    runs: dict[str, list[dict]] = {c: [] for c in cases}
    # The first worker of a run was repeatedly the slowest (decode at 3-4 M rows/s against 7-10
    # later): one discarded run first, so that round 1 is like the others.
    warm = spawn(cases[0], directory)
    log(f"[warm-up, discarded] {cases[0]}: {warm.get('error') or format_rate(warm)}")
    for r in range(repeat):
        k = r % len(cases)
        for case in cases[k:] + cases[:k]:  # rotated: no case always runs first or last
            res = spawn(case, directory)
            res["round"] = r
            runs[case].append(res)
            log(f"[round {r + 1}/{repeat}] {case}: {res.get('error') or format_rate(res)}")
    return runs, warm


def median_of(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None and "error" not in r]
    return statistics.median(vals) if vals else None


def summarise(runs: dict[str, list[dict]], opt_mse: float) -> dict[str, dict]:
    out = {}
    for case, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        s = {
            key: median_of(ok, key)
            for key in (
                "rows_per_s",
                "seconds",
                "cpu_seconds",
                "mse",
                "peak_rss_mb",
                "rss_ready_mb",
            )
        }
        s["n"] = len(ok)
        s["errors"] = [r["error"] for r in rs if "error" in r]
        if s["mse"] is not None:
            s["mse_vs_optimum"] = s["mse"] / opt_mse - 1
            s["mse_spread"] = max(r["mse"] for r in ok) - min(r["mse"] for r in ok)
        kind = KINDS[parse_case(case)[0]]
        s["ratios"] = {}
        for base in kind.baselines:
            if base not in runs or s["rows_per_s"] is None:
                continue
            base_med = median_of(runs[base], "rows_per_s")
            if not base_med:
                continue
            by_round = {r["round"]: r["rows_per_s"] for r in runs[base] if "error" not in r}
            paired = [r["rows_per_s"] / by_round[r["round"]] for r in ok if r["round"] in by_round]
            s["ratios"][base] = {"of_medians": s["rows_per_s"] / base_med, "paired": paired}
        if "epoch-mmap" in s["ratios"]:
            s["cpu_bound"] = cpu_bound(ok, runs["epoch-mmap"])
        out[case] = s
    return out


def cpu_bound(case_runs: list[dict], base_runs: list[dict]) -> dict:
    """The highest ratio to ``epoch-mmap`` the case's work allows on this machine's cores:
    the baseline's time over the case's CPU time spread perfectly over every core (same
    round), whatever the scheduling. Below the goal, the goal needs less work per row, not
    better overlap."""
    cores = os.cpu_count() or 1
    by_round = {r["round"]: r["seconds"] for r in base_runs if "error" not in r}
    paired = [
        by_round[r["round"]] / (r["cpu_seconds"] / cores)
        for r in case_runs
        if r["round"] in by_round and r.get("cpu_seconds")
    ]
    return {"of_medians": statistics.median(paired) if paired else 0.0, "paired": paired}


def check_exact(summary: dict[str, dict], opt_mse: float) -> None:
    """The exact case recomputes the optimum every round: it must agree with the sidecar's."""
    mse = summary.get("exact", {}).get("mse")
    if mse is not None and abs(mse / opt_mse - 1) > 1e-9:
        log(f"WARNING: exact MSE {mse!r} differs from the stored optimum {opt_mse!r}")


def fmt_ratio(r: dict | None) -> str:
    if r is None:
        return ""
    text = f"{r['of_medians']:.3f}"
    if len(r["paired"]) > 1 and min(r["paired"]) != max(r["paired"]):  # not a baseline itself
        text += f" [{min(r['paired']):.3f}–{max(r['paired']):.3f}]"
    return text


def fmt_rate(v: float) -> str:
    return f"{v / 1e6:.2f} M" if v >= 1e6 else f"{v / 1e3:.0f} k"


def markdown_table(summary: dict[str, dict], skipped: dict[str, str], has_csv: bool) -> str:
    per_epoch = "epoch-mmap" in summary
    cross = "fit-cat" in summary
    words = "fit-words" in summary
    head = ["case", "rows/s (median)", "ratio to decode"]
    head += ["ratio to csv-parse"] if has_csv else []
    head += ["per epoch: ratio to epoch-mmap", "bound by CPU"] if per_epoch else []
    head += ["ratio to fit-cat"] if cross else []
    head += ["ratio to fit-words"] if words else []
    head += ["MSE vs optimum", "peak RSS MB (after imports)", "n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case, s in summary.items():
        if s["rows_per_s"] is None:
            row = [case, "error: " + "; ".join(s["errors"])[:80]] + [""] * (len(head) - 3) + ["0"]
        else:
            row = [case, fmt_rate(s["rows_per_s"]), fmt_ratio(s["ratios"].get("decode"))]
            row += [fmt_ratio(s["ratios"].get("csv-parse"))] if has_csv else []
            if per_epoch:
                row += [fmt_ratio(s["ratios"].get("epoch-mmap")), fmt_ratio(s.get("cpu_bound"))]
            row += [fmt_ratio(s["ratios"].get("fit-cat"))] if cross else []
            row += [fmt_ratio(s["ratios"].get("fit-words"))] if words else []
            mse = s.get("mse_vs_optimum")
            row += [
                "" if mse is None else f"{mse * 100:+.3f}%",
                f"{s['peak_rss_mb']:.0f} ({s['rss_ready_mb']:.0f})",
                str(s["n"]),
            ]
        lines.append("| " + " | ".join(row) + " |")
    for case, why in skipped.items():
        lines.append("| " + " | ".join([case, f"skipped: {why}"] + [""] * (len(head) - 2)) + " |")
    return "\n".join(lines)


def run_scaling(args: argparse.Namespace) -> None:
    """The larger-than-memory run: a default one-epoch fit on datasets of ``--rows`` times each
    factor, each in its own process, interleaved over ``--repeat`` rounds; the table gives
    the peak RSS (VmHWM) of each against the data's size and ``--memory-limit``. The bound
    is reported, not enforced: putting the workers in a memory cgroup needs a cgroup this
    benchmark may change, which a shared machine does not give; run the whole benchmark
    under one (``systemd-run --scope -p MemoryMax=300M python tools/bench.py ...``) where the
    machine allows it, and a fit that outgrew it would be killed instead of reported."""
    factors = [int(f) for f in args.scaling.split(",")]
    started = time.time()
    sets = []
    for f in factors:
        params = {**dataset_params(args), "rows": args.rows * f}
        directory, meta = ensure_dataset(args.data, params, want_csv=False)
        size = sum(meta["parquet"].values())
        sets.append((f, directory, params["rows"], size))
    runs: dict[int, list[dict]] = {f: [] for f in factors}
    for r in range(args.repeat):
        for f, directory, _, _ in sets[r % len(sets) :] + sets[: r % len(sets)]:
            warm_page_cache(parquet_files(directory, read_sidecar(directory)))
            res = spawn("fit-default", directory)
            res["round"] = r
            runs[f].append(res)
            log(f"[round {r + 1}/{args.repeat}] x{f}: {res.get('error') or format_rate(res)}")
    lines = [
        "| data | rows | Parquet MB | float32 rows MB | rows/s (median) | peak RSS MB "
        "(median, max) | under the limit |",
        "|---|---|---|---|---|---|---|",
    ]
    for f, _, rows, size in sets:
        ok = [x for x in runs[f] if "error" not in x]
        if not ok:
            lines.append(f"| x{f} | {rows:,} | error: {runs[f][0]['error'][:60]} | | | | |")
            continue
        peaks = [x["peak_rss_mb"] for x in ok]
        decoded = rows * (args.features + 1) * 4 / 2**20
        lines.append(
            f"| x{f} | {rows:,} | {size / 2**20:.0f} | {decoded:.0f} | "
            f"{fmt_rate(statistics.median(x['rows_per_s'] for x in ok))} | "
            f"{statistics.median(peaks):.0f}, {max(peaks):.0f} | "
            f"{'yes' if max(peaks) <= args.memory_limit else 'NO'} |"
        )
    table = "\n".join(lines)
    print(
        f"streamgd larger-than-memory run: default fit (shuffled, batch 1024), one epoch; "
        f"limit {args.memory_limit:.0f} MiB (reported, VmHWM); {args.repeat} round(s); "
        f"{time.time() - started:.0f} s\n\n{table}"
    )
    args.json.write_text(
        json.dumps(
            {
                "command": [sys.executable, *sys.argv],
                "machine": machine_info(),
                "git": git_state(),
                "memory_limit_mb": args.memory_limit,
                "runs": {f"x{f}": runs[f] for f in factors},
                "table": table,
            },
            indent=1,
            default=str,
        )
    )
    log(f"results written to {args.json}")


FOOTER = """\
The ratio, not the absolute rate, is the result: rows/s depend on this machine and its load and
are comparable only within one run. Ratios are of medians; [brackets]: range of the per-round
paired ratios. decode = raw Parquet -> float32 numpy ceiling; csv-parse = pyarrow's streaming CSV
reader alone (float64 column types given, default block size). MSE vs optimum = training MSE /
exact least-squares MSE - 1. fit timings include streamgd's statistics pass. Peak RSS = VmHWM of
the case's own process at the end of the timed work (before the untimed scoring pass), MiB
(after imports, before any work, in brackets). decode-mmap = decode through a memory map per
row group, as streamgd reads local files. bound by CPU = epoch-mmap's time over the case's CPU
time (all threads) spread perfectly over this machine's cores: the highest ratio to epoch-mmap
the case's work per row allows here, whatever the overlap.
sklearn = SGDRegressor.partial_fit ({sk});
StandardScaler fitted on the first row group; float64 conversion and scaling timed."""


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - only for a label
        return "?"


def git_state() -> dict:
    def git(*a: str) -> str:
        try:
            return subprocess.run(
                ["git", *a], cwd=REPO, capture_output=True, text=True
            ).stdout.strip()
        except OSError:
            return ""

    diff = git("diff", "HEAD", "--", "streamgd")
    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": git("status", "--porcelain", "streamgd").splitlines(),
        # identifies uncommitted changes to streamgd/: if it differs between the start and the
        # end of a run, the code changed while it was being measured
        "diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff else None,
    }


def machine_info() -> dict:
    import pyarrow

    info = {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "cpu_model": None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pyarrow": pyarrow.__version__,
        "platform": platform.platform(),
        "loadavg_start": os.getloadavg(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    for mod in ("streamgd", "sklearn", "psutil"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    try:
        import psutil

        info["memory_total_mb"] = psutil.virtual_memory().total / 2**20
    except ImportError:
        pass
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark streamgd against baselines measured in the same run.",
        epilog="See the module docstring (python -m pydoc tools/bench.py) for the method.",
    )
    p.add_argument("--rows", type=int, help=f"rows (default {DEFAULTS['rows']:,})")
    p.add_argument("--features", type=int, default=32, help="float32 features (default 32)")
    p.add_argument(
        "--row-group", type=int, help=f"rows per row group (default {DEFAULTS['row_group']})"
    )
    p.add_argument("--files", type=int, default=8, help="Parquet files (default 8)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data")
    p.add_argument(
        "--data", type=Path, default=REPO / "bench-data", help="data root (default bench-data/)"
    )
    p.add_argument("--csv", action="store_true", help="also the CSV cases (writes a CSV copy)")
    p.add_argument(
        "--vw", action="store_true", help="also Vowpal Wabbit (writes its text copy and cache)"
    )
    p.add_argument("--batch-sizes", default="1024,8192", help="B of the *-B cases")
    p.add_argument(
        "--scaling",
        help="larger-than-memory run: comma-separated multiples of --rows (e.g. 1,4,8); "
        "a default fit on each size, peak RSS against --memory-limit",
    )
    p.add_argument(
        "--memory-limit", type=float, default=300.0, help="MiB bound of --scaling (default 300)"
    )
    p.add_argument("--cases", help="comma-separated case names (default: all)")
    p.add_argument("--repeat", type=int, help=f"rounds (default {DEFAULTS['repeat']})")
    p.add_argument(
        "--json", type=Path, default=Path("bench-results.json"), help="full results (JSON)"
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 300k rows in 16k-row groups, 1 round"
    )
    p.add_argument("--list-cases", action="store_true", help="print the case names and exit")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--dataset", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    preset = QUICK if args.quick else DEFAULTS
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        run_worker(args.worker, args.dataset)
        return
    all_cases = case_names(args.batch_sizes, with_csv=True, with_vw=True)
    if args.list_cases:
        print("\n".join(all_cases))
        return
    if args.scaling:
        run_scaling(args)
        return
    cases = args.cases.split(",") if args.cases else case_names(args.batch_sizes, args.csv, args.vw)
    for c in cases:
        parse_case(c)
    want_csv = any(KINDS[parse_case(c)[0]].needs == "csv" for c in cases)
    skipped = {}
    if not sklearn_available():
        skipped = {c: "scikit-learn not installed" for c in cases if c.startswith("sklearn-")}
    if not vw_available():
        skipped |= {c: "vowpalwabbit not installed" for c in cases if c == "vw"}
    cases = [c for c in cases if c not in skipped]
    want_vw = "vw" in cases
    want_cat = any(KINDS[parse_case(c)[0]].needs == "cat" for c in cases)
    want_text = any(KINDS[parse_case(c)[0]].needs == "text" for c in cases)
    started = time.time()
    machine, git_start = machine_info(), git_state()
    params = dataset_params(args)
    directory, meta = ensure_dataset(args.data, params, want_csv, want_vw, want_cat, want_text)
    warm_page_cache(
        parquet_files(directory, meta) + (csv_files(directory, meta) if want_csv else [])
    )
    log(f"running {len(cases)} cases x {args.repeat} rounds on {directory}")
    runs, warm = run_rounds(cases, directory, args.repeat)
    summary = summarise(runs, meta["optimum"]["mse"])
    check_exact(summary, meta["optimum"]["mse"])
    elapsed = time.time() - started
    sk = ", ".join(f"{k}={v}" for k, v in SKLEARN_SETTINGS.items())
    table = markdown_table(summary, skipped, has_csv=want_csv)
    head = (
        f"streamgd benchmark: {params['rows']:,} rows x {params['features']} float32 features, "
        f"{params['files']} Parquet files, row groups of {params['row_group']:,}; "
        f"{args.repeat} round(s); optimum MSE {meta['optimum']['mse']:.6f}; {elapsed:.0f} s"
    )
    footer = FOOTER.format(sk=sk)
    if "vw" in summary and meta.get("vw"):
        vw = meta["vw"]
        footer += (
            f"\nvw = Vowpal Wabbit {_version('vowpalwabbit')}, one pass over its cache file "
            f"(default learner, squared loss); bringing the data to it took "
            f"{vw['convert_seconds']:.0f} s (Parquet to VW text, Arrow-formatted) + "
            f"{vw['cache_seconds']:.0f} s (vw's parse into its cache), not in its rate."
        )
    print(f"{head}\n\n{table}\n\n{footer}")
    for case, s in summary.items():  # the grid cases: wall time over one model's
        cost = s["ratios"].get("fit-holdout")
        if cost is not None and case != "fit-holdout":
            paired = [1 / r for r in cost["paired"]]
            spread = f" [{min(paired):.2f}-{max(paired):.2f}]" if len(paired) > 1 else ""
            print(f"{case}: {1 / cost['of_medians']:.2f}x the wall time of fit-holdout{spread}")
    print_files_ratios(summary)
    machine["loadavg_end"] = os.getloadavg()
    git_end = git_state()
    if git_end != git_start:
        log("WARNING: streamgd/ changed during the run (see git in the JSON)")
    result = {
        "command": [sys.executable, *sys.argv],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "elapsed_s": elapsed,
        "machine": machine,
        "git": {"start": git_start, "end": git_end},
        "dataset": {"dir": str(directory), **meta},
        "settings": {
            "blas_threads": BLAS_THREADS,
            "repeat": args.repeat,
            "batch_sizes": args.batch_sizes,
            "sklearn": SKLEARN_SETTINGS,
        },
        "cases": {c: {"runs": runs[c], "median": summary[c]} for c in cases},
        "warmup": warm,
        "skipped": skipped,
        "table": table,
    }
    args.json.write_text(json.dumps(result, indent=1, default=str))
    log(f"results written to {args.json}")


if __name__ == "__main__":
    main()
