"""Helpers shared by the integration tests: independent numpy oracles, data writers, and
ways to drive the CLI (CliRunner for successes, ``streamgd.cli.run`` for exit codes).

The oracles here never call streamgd: they are what streamgd's results are checked against.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from click.testing import CliRunner

from streamgd.cli import cli, run

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = TESTS_DIR.parent
DATA_DIR = REPO_ROOT / "data"


def _load_shared_conftest():
    """``tests/conftest.py`` (oracles and the synthetic-data writer), loaded by path under a
    name of its own, so that whichever ``conftest`` module pytest last imported cannot shadow
    it."""
    name = "_streamgd_tests_shared_conftest"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TESTS_DIR / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_shared = _load_shared_conftest()
lstsq_mse = _shared.lstsq_mse
newton_logloss = _shared.newton_logloss
write_synthetic = _shared.write_synthetic


# -- oracles ----------------------------------------------------------------------------------
def lstsq_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact least-squares coefficients and intercept."""
    a = np.c_[x, np.ones(len(x))]
    w = np.linalg.lstsq(a, y, rcond=None)[0]
    return w[:-1], float(w[-1])


def newton_fit(x: np.ndarray, y: np.ndarray, iters: int = 50) -> tuple[np.ndarray, float]:
    """Maximum-likelihood logistic coefficients and intercept in original units."""
    w, mu, sd = _shared.newton_weights(x, y, iters)
    coef = w[:-1] / sd
    return coef, float(w[-1] - coef @ mu)


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    q = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def exact_auc(y: np.ndarray, score: np.ndarray) -> float:
    """P(score of a random positive > that of a random negative), ties counting one half."""
    pos, neg = score[y == 1], np.sort(score[y == 0])
    below = np.searchsorted(neg, pos, side="left")
    at_or_below = np.searchsorted(neg, pos, side="right")
    return float((below + 0.5 * (at_or_below - below)).sum() / (len(pos) * len(neg)))


def regression_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    err = p - y
    mse = float(np.mean(err**2))
    return {
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(np.mean(np.abs(err))),
        "r2": float(1 - np.sum(err**2) / np.sum((y - y.mean()) ** 2)),
    }


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    pred = p >= 0.5
    pos = y == 1
    tp = np.sum(pred & pos)
    fp = np.sum(pred & ~pos)
    fn = np.sum(~pred & pos)
    precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    return {
        "logloss": logloss(y, p),
        "accuracy": float(np.mean(pred == pos)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(2 * precision * recall / (precision + recall)),
        "auc": exact_auc(y, p),
    }


# -- data -------------------------------------------------------------------------------------
def read_tables(paths: Sequence[str | Path]) -> pa.Table:
    """The rows of Parquet/CSV files, concatenated in the given order."""
    tables = []
    for p in map(str, paths):
        tables.append(pacsv.read_csv(p) if p.endswith(".csv") else pq.read_table(p))
    return pa.concat_tables(tables, promote_options="permissive")


def matrix(table: pa.Table, columns: Sequence[str]) -> np.ndarray:
    """Columns as a float64 matrix, nulls as NaN."""
    return np.column_stack(
        [table.column(c).cast(pa.float64()).to_numpy(zero_copy_only=False) for c in columns]
    )


def write_table(table: pa.Table, path: str | Path, *, row_group_size: int = 500) -> str:
    path = str(path)
    if path.endswith(".csv"):
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path, row_group_size=row_group_size)
    return path


def with_nulls(table: pa.Table, column: str, rows: Sequence[int]) -> pa.Table:
    """``table`` with the values of ``column`` at ``rows`` set to null."""
    values = table.column(column).to_numpy(zero_copy_only=False)
    mask = np.zeros(len(values), dtype=bool)
    mask[list(rows)] = True
    i = table.schema.get_field_index(column)
    return table.set_column(i, column, pa.array(values, mask=mask))


def with_values(table: pa.Table, column: str, values) -> pa.Table:
    i = table.schema.get_field_index(column)
    return table.set_column(i, column, pa.array(values))


# -- the CLI ----------------------------------------------------------------------------------
def runner() -> CliRunner:
    """A runner that keeps stdout and stderr apart (click 8.2+ always does)."""
    try:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]  # click < 8.2
    except TypeError:
        return CliRunner()


def invoke_ok(*args: str):
    """Run ``streamgd ARGS`` through CliRunner and insist that it succeeded."""
    result = runner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.stderr, result.exception)
    return result


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``streamgd ARGS`` through :func:`streamgd.cli.run`, which maps errors to exit codes;
    returns ``(exit code, stdout, stderr)``."""
    capsys.readouterr()  # drop anything printed before
    code = run([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err
