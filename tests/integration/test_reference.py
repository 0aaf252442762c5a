"""Refactoring guard: the same command and seed give the same model as before the redesign.

``reference_models.json`` holds, for each command below, the model file's coefficients,
intercept, categorical code weights and per-epoch history as written by streamgd 1516338 (the
last commit of the flat layout), each float in its exact ``repr``. A change that moves code
without meaning to change behaviour must keep them bit-identical.

Bit-identity is only meaningful on the platform the values were taken on (the BLAS kernels
and numpy's reductions differ between CPU architectures and versions): there the comparison
is exact; elsewhere it falls back to a tolerance of 1e-6, relative or absolute (another
BLAS kernel, e.g. Haswell's on AMD against SkylakeX's, sums in another order, which moves
weights of order 1 by up to ~2e-7 after a few epochs) and says so in the failure.

Regenerate (only when a change is *meant* to change models, and say so in the commit):
``STREAMGD_WRITE_REFERENCE=1 python -m pytest tests/integration/test_reference.py``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import streamgd
from streamgd.cli import cli

HERE = Path(__file__).parent
REFERENCE = HERE / "reference_models.json"
DATA = HERE.parents[1] / "data"
WRITE = os.environ.get("STREAMGD_WRITE_REFERENCE") == "1"

_F = "x0,x1,x2,x3,x4,x5"  # the generated set's numeric features

# name -> (dataset, fit arguments); "gen" is the generated 200k-row set below
CASES: dict[str, tuple[str, list[str]]] = {
    "sample-squared-sgd": ("regression", ["-y", "y"]),
    "sample-squared-adam": ("regression", ["-y", "y", "--optimizer", "adam"]),
    "sample-squared-sgd-noshuffle": ("regression", ["-y", "y", "--no-shuffle"]),
    "sample-csv-squared-sgd": ("regression-csv", ["-y", "y", "--epochs", "3"]),
    "sample-logistic-sgd": ("classification", ["-y", "y", "--loss", "logistic"]),
    "sample-logistic-adam": (
        "classification",
        ["-y", "y", "--loss", "logistic", "--optimizer", "adam", "--no-shuffle"],
    ),
    # (no --holdout case: its split hashes the files' absolute paths, so it moves with the checkout)
    "sample-normal": ("regression", ["-y", "y", "--solver", "normal", "--l2", "0.01"]),
    "gen-squared-sgd": ("gen", ["-y", "y", "-f", _F, "--epochs", "2"]),
    "gen-squared-adam-noshuffle": (
        "gen",
        ["-y", "y", "-f", _F, "--epochs", "2", "--optimizer", "adam", "--no-shuffle"],
    ),
    "gen-logistic-sgd": ("gen", ["-y", "b", "-f", _F, "--epochs", "2", "--loss", "logistic"]),
    "gen-logistic-adam": (
        "gen",
        ["-y", "b", "-f", _F, "--epochs", "2", "--loss", "logistic", "--optimizer", "adam"],
    ),
    "gen-softmax-sgd": ("gen", ["-y", "k", "-f", _F, "--epochs", "2", "--loss", "softmax"]),
    "gen-softmax-adam-noshuffle": (
        "gen",
        ["-y", "k", "-f", _F, "--epochs", "2", "--loss", "softmax", "--optimizer", "adam"]
        + ["--no-shuffle"],
    ),
    "gen-categorical-squared": (
        "gen",
        ["-y", "y", "-f", _F, "-c", "cat", "--epochs", "2", "--holdout-rows", "5000"]
        + ["--patience", "3"],
    ),
    "gen-hashed-logistic-adam": (
        "gen",
        ["-y", "b", "-f", "x0,x1", "-c", "cat", "--hash-bits", "6", "--epochs", "2"]
        + ["--loss", "logistic", "--optimizer", "adam", "--l1", "1e-5"],
    ),
    "gen-dask-squared": (
        "gen",
        ["-y", "y", "-f", _F, "--epochs", "2", "--cluster", "local:2", "--sync-every", "8"],
    ),
    "gen-dask-logistic-adam": (
        "gen",
        ["-y", "b", "-f", _F, "--epochs", "1", "--loss", "logistic", "--optimizer", "adam"]
        + ["--cluster", "local:2", "--shards", "3"],
    ),
}


def _platform() -> dict[str, str]:
    """What decides the bits besides streamgd: numpy's version and the BLAS kernels."""
    from threadpoolctl import threadpool_info

    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return {
        "numpy": np.__version__,
        "blas": ",".join(
            f"{i.get('internal_api')}-{i.get('version')}-{i.get('architecture')}" for i in blas
        ),
    }


def _generate(directory: Path) -> float:
    """200,000 rows in 4 Parquet files of 5 row groups: six features of mixed scales, a
    string category with 30 values, a regression target ``y``, a 0/1 label ``b`` and a
    three-class label ``k``. Returns a checksum of the values, stored with the reference so
    that a change in the generator is told apart from a change in streamgd."""
    rng = np.random.default_rng(20261204)
    n, files = 200_000, 4
    scales = np.array([1.0, 10.0, 0.01, 1000.0, 3.0, 0.5])
    x = rng.standard_normal((n, 6)) * scales + np.arange(6)
    cat = rng.integers(0, 30, n)
    effect = np.linspace(-1.5, 1.5, 30)[cat]
    z = (x - np.arange(6)) / scales
    score = z @ np.array([1.0, -2.0, 0.5, 0.0, 1.5, -0.7]) + effect
    y = 3.0 + score + 0.5 * rng.standard_normal(n)
    b = (rng.random(n) < 1 / (1 + np.exp(-score))).astype(np.int64)
    k = np.digitize(score + 0.8 * rng.standard_normal(n), [-1.0, 1.0]).astype(np.int64)
    per = n // files
    for i in range(files):
        rows = slice(i * per, (i + 1) * per)
        table = pa.table(
            {
                **{f"x{j}": x[rows, j] for j in range(6)},
                "cat": pa.array([f"c{c:02d}" for c in cat[rows]]),
                "y": y[rows],
                "b": b[rows],
                "k": k[rows],
            }
        )
        pq.write_table(table, directory / f"part-{i}.parquet", row_group_size=per // 5)
    return float(x.sum() + y.sum() + b.sum() + k.sum() + cat.sum())


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, float]:
    directory = tmp_path_factory.mktemp("reference-gen")
    return directory, _generate(directory)


def _floats(value) -> list:
    return np.asarray(value, dtype=np.float64).ravel().tolist()


def _snapshot(model_path: Path) -> dict:
    model = streamgd.load(str(model_path))
    return {
        "coefficients": _floats(model.weights),
        "intercept": _floats(model.intercept),
        "code_weights": None if model.code_weights is None else _floats(model.code_weights),
        "history": model.history,
    }


def _fit(name: str, tmp_path: Path, generated: tuple[Path, float]) -> dict:
    dataset, args = CASES[name]
    source = str(generated[0]) if dataset == "gen" else str(DATA / dataset)
    out = tmp_path / "model.npz"
    result = CliRunner().invoke(cli, ["fit", source, *args, "-q", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return _snapshot(out)


def _load_reference() -> dict:
    if WRITE and not REFERENCE.exists():
        REFERENCE.write_text(json.dumps({"platform": _platform(), "cases": {}}, indent=1))
    return json.loads(REFERENCE.read_text())


def _compare(got, want, where: str, exact: bool) -> None:
    """Equal to the bit (``exact``) or within 1e-6 relative or absolute, recursively over
    the JSON."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), f"{where}: keys differ"
        for key in want:
            _compare(got[key], want[key], f"{where}.{key}", exact)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: lengths differ"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _compare(g, w, f"{where}[{i}]", exact)
    elif isinstance(want, float) and not exact:
        assert isinstance(got, float), f"{where}: {got!r} is not a float"
        close = math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-6)
        assert close or _nan(got) and _nan(want), (
            f"{where}: {got!r} != {want!r} (tolerant comparison on another platform)"
        )
    else:
        assert got == want or _nan(got) and _nan(want), f"{where}: {got!r} != {want!r}"


def _nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


@pytest.mark.parametrize("name", list(CASES))
def test_same_model_as_before_the_redesign(name, tmp_path, generated):
    reference = _load_reference()
    got = _fit(name, tmp_path, generated)
    if WRITE:
        reference["cases"][name] = got
        reference["generated_checksum"] = generated[1]
        REFERENCE.write_text(json.dumps(reference, indent=1) + "\n")
        return
    assert name in reference["cases"], f"no reference for {name}: regenerate (module docstring)"
    assert generated[1] == reference["generated_checksum"], (
        "the generated data differ from the reference's (numpy's generators changed?)"
    )
    exact = reference["platform"] == _platform()
    # JSON round trip, so that tuples and numpy scalars compare as the stored values do
    _compare(json.loads(json.dumps(got)), reference["cases"][name], name, exact)
