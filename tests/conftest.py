"""Shared fixtures: tests make their own small data in temporary directories."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest


@dataclass
class Synthetic:
    """Files written by :func:`write_synthetic` and the data in them (row order as written)."""

    paths: list[str]
    x: np.ndarray
    y: np.ndarray
    coef: np.ndarray
    intercept: float
    features: list[str]


def write_synthetic(
    directory: str,
    *,
    rows: int = 4000,
    features: int = 3,
    files: int = 2,
    row_group_size: int = 500,
    task: str = "regression",
    noise: float = 0.5,
    seed: int = 0,
    fmt: str = "parquet",
    scales: bool = True,
) -> Synthetic:
    """Write a linear (or logistic) problem with known coefficients, split into files.

    Features have very different scales when ``scales`` is true, so an unstandardised trainer
    would struggle. Every row has an ``row_id`` column (int64, unique, in write order), which is
    not used as a feature unless asked for because tests pass ``features=`` explicitly.
    """
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-1, 2, size=features) if scales else np.ones(features)
    mean = rng.normal(size=features) * scale
    x = rng.normal(size=(rows, features)) * scale + mean
    coef = rng.normal(size=features) / scale
    intercept = 1.5
    z = (x - mean) @ (coef) + intercept
    if task == "regression":
        y = z + rng.normal(size=rows) * noise
    else:
        y = (rng.random(rows) < 1 / (1 + np.exp(-2 * z))).astype(np.float64)
    names = [f"x{i}" for i in range(features)]
    os.makedirs(directory, exist_ok=True)
    paths = []
    bounds = np.linspace(0, rows, files + 1).astype(int)
    for i in range(files):
        lo, hi = bounds[i], bounds[i + 1]
        table = pa.table(
            {
                "row_id": np.arange(lo, hi, dtype=np.int64),
                **{n: x[lo:hi, j] for j, n in enumerate(names)},
                "y": y[lo:hi],
            }
        )
        if fmt == "parquet":
            path = os.path.join(directory, f"part-{i}.parquet")
            pq.write_table(table, path, row_group_size=row_group_size)
        else:
            path = os.path.join(directory, f"part-{i}.csv")
            pacsv.write_csv(table, path)
        paths.append(path)
    return Synthetic(paths, x, y, coef, intercept, names)


@pytest.fixture
def synthetic(tmp_path):
    """A factory: ``synthetic(**kwargs)`` writes data under a fresh temporary directory."""
    counter = iter(range(1000))

    def make(**kwargs) -> Synthetic:
        return write_synthetic(str(tmp_path / f"data{next(counter)}"), **kwargs)

    return make


def lstsq_mse(x: np.ndarray, y: np.ndarray) -> float:
    """The exact least-squares optimum's training MSE (an independent oracle)."""
    a = np.c_[x, np.ones(len(x))]
    w = np.linalg.lstsq(a, y, rcond=None)[0]
    r = a @ w - y
    return float(r @ r / len(y))


def newton_weights(x: np.ndarray, y: np.ndarray, iters: int = 50):
    """Maximum-likelihood logistic regression by full-batch Newton on standardised features:
    ``(w, mu, sd)`` with ``w`` the standardised coefficients followed by the intercept."""
    mu, sd = x.mean(0), x.std(0)
    a = np.c_[(x - mu) / sd, np.ones(len(x))]
    w = np.zeros(a.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(a @ w)))
        h = (a * (p * (1 - p))[:, None]).T @ a
        w -= np.linalg.solve(h + 1e-10 * np.eye(len(w)), a.T @ (p - y))
    return w, mu, sd


def newton_logloss(x: np.ndarray, y: np.ndarray, iters: int = 50) -> float:
    """The exact logistic-regression optimum's log loss (see :func:`newton_weights`)."""
    w, mu, sd = newton_weights(x, y, iters)
    a = np.c_[(x - mu) / sd, np.ones(len(x))]
    p = np.clip(1 / (1 + np.exp(-(a @ w))), 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


class Interrupt(Exception):
    """Raised by :class:`StopAt`: a crash in the middle of training."""


class StopAt:
    """A callback that aborts the run (like a crash) once ``step`` steps are done."""

    def __init__(self, step: int) -> None:
        self.step = step

    def __getattr__(self, name):
        return lambda *args: None

    def on_batch_end(self, state, rows, loss_sum):
        if state.step >= self.step:
            raise Interrupt


# -- a user-defined loss: the classic non-convex "trigonometric" loss ---------------------------
_TRIG = np.pi / 50.0


def trigonometric_loss():
    r"""``l = theta^2 sin(pi theta / 50) / 2`` per sample with ``theta = p - y`` (the batch mean
    is the textbook ``1/(2N) sum theta^2 sin(pi theta / 50)``), gradient
    ``theta sin(a theta) + (a / 2) theta^2 cos(a theta)`` with ``a = pi / 50``: a loss defined
    outside the library, as a user would through :meth:`streamgd.Loss.custom`. It is negative
    for ``-50 < theta < 0``, so it has no curvature and its minimum is not at ``p = y``."""
    from streamgd import Loss

    def value(p, y):
        t = p - y
        return 0.5 * t * t * np.sin(_TRIG * t)

    def gradient(p, y):
        t = p - y
        return t * np.sin(_TRIG * t) + 0.5 * _TRIG * t * t * np.cos(_TRIG * t)

    return Loss.custom("trigonometric", value, gradient)
