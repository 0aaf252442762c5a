"""--interactions on a Dask LocalCluster: workers derive the crosses from the driver's spec,
and the model reaches least squares on the explicitly expanded design matrix."""

from __future__ import annotations

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from conftest import lstsq_mse  # noqa: E402

from streamgd.config import FitConfig, RunOptions  # noqa: E402
from streamgd.training import train  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::UserWarning", "ignore::ResourceWarning"
)


def test_interactions_train_on_workers(tmp_path):
    rng = np.random.default_rng(8)
    n = 12_000
    a = np.array(["a0", "a1", "a2"])[rng.integers(0, 3, n)]
    b = np.array(["b0", "b1"])[rng.integers(0, 2, n)]
    x = rng.normal(size=n) + 1
    pair = {(u, v): rng.normal() * 2 for u in ("a0", "a1", "a2") for v in ("b0", "b1")}
    slope = {"a0": 1.0, "a1": -1.0, "a2": 2.0}
    y = np.array([pair[(u, v)] + slope[u] * xi for u, v, xi in zip(a, b, x, strict=True)])
    y += rng.normal(size=n) * 0.5
    paths = []
    for i, part in enumerate(np.array_split(np.arange(n), 4)):
        paths.append(str(tmp_path / f"p{i}.parquet"))
        table = pa.table({"x": x[part], "a": a[part], "b": b[part], "y": y[part]})
        pq.write_table(table, paths[-1], row_group_size=1000)
    config = FitConfig(target="y", features=("x",), categorical=("a", "b"),
                       interactions=("a*b", "x*a"), epochs=4, sync_every=4,
                       batch_size=256)  # fmt: skip
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, local_directory=str(tmp_path / "dask"),
    ) as cluster:  # fmt: skip
        result = train(paths, config, RunOptions(cluster=cluster.scheduler_address))
    onehot_a = (a[:, None] == np.array(["a0", "a1", "a2"])).astype(float)
    pairs = np.char.add(a, b)
    onehot_ab = (pairs[:, None] == np.unique(pairs)).astype(float)
    design = np.c_[x, onehot_ab, x[:, None] * onehot_a]
    predicted = result.model.predict(pa.table({"x": x, "a": a, "b": b}))
    assert np.mean((predicted - y) ** 2) <= lstsq_mse(design, y) * 1.01
