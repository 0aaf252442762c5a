"""A file swapped during a Dask run is detected by the workers, through the same Dataset and
HandleCache checks as one process (see tests/integration/test_input_integrity.py)."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

distributed = pytest.importorskip("distributed")

from streamgd.config import FitConfig, RunOptions  # noqa: E402
from streamgd.errors import DataError  # noqa: E402
from streamgd.training import train  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::UserWarning", "ignore::ResourceWarning"
)


def _write(path: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4000, 2))
    table = pa.table({"x0": x[:, 0], "x1": x[:, 1], "y": x @ np.array([1.0, -2.0])})
    pq.write_table(table, path, row_group_size=250, compression="none", use_dictionary=False)


class SwapAfterFirstRound:
    def __init__(self, path: str) -> None:
        self.path, self.done = path, False

    def __getattr__(self, name):
        return lambda *args: None

    def on_batch_end(self, state, rows, loss_sum):
        if not self.done:
            self.done = True
            _write(self.path + ".new", 1)
            os.replace(self.path + ".new", self.path)


def test_workers_stop_on_a_file_swapped_mid_run(tmp_path):
    path = str(tmp_path / "part.parquet")
    _write(path, 0)
    config = FitConfig(target="y", features=("x0", "x1"), epochs=3, sync_every=2, batch_size=64)
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        local_directory=str(tmp_path / "dask"),
    ) as cluster:
        options = RunOptions(cluster=cluster.scheduler_address)
        with pytest.raises(DataError, match=rf"{path}: the file changed during the run"):
            train([path], config, options, callbacks=[SwapAfterFirstRound(path)])


def test_a_long_lived_cluster_trains_on_a_file_replaced_between_runs(tmp_path):
    """Workers keep opened datasets between runs; keyed by the input's fingerprint, a file
    replaced upstream between two runs is opened afresh (not refused as 'changed during the
    run', nor read through the old version's layout), and the second run's model is the one
    a fresh cluster gives."""
    path = str(tmp_path / "part.parquet")
    config = FitConfig(target="y", features=("x0", "x1"), epochs=2, sync_every=2, batch_size=64)
    kwargs = dict(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    with distributed.LocalCluster(local_directory=str(tmp_path / "a"), **kwargs) as cluster:
        options = RunOptions(cluster=cluster.scheduler_address)
        _write(path, 0)
        first = train([path], config, options).state.params.copy()
        _write(path + ".new", 1)
        os.replace(path + ".new", path)
        second = train([path], config, options).state.params
    with distributed.LocalCluster(local_directory=str(tmp_path / "b"), **kwargs) as cluster:
        fresh = train([path], config, RunOptions(cluster=cluster.scheduler_address)).state.params
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(second, fresh)
