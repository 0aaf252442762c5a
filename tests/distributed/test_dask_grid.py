"""Grids on a Dask cluster (--cluster): each round's rows are read once for every model, and
each model is averaged over the shards on its own. Oracle: the same configuration trained
alone on the same cluster settings (``streamgd.fit(..., cluster=...)``), to the bit."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from conftest import write_synthetic  # noqa: E402

import streamgd  # noqa: E402
from streamgd.search import fit_grid  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::UserWarning", "ignore::ResourceWarning"
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    scratch = tmp_path_factory.mktemp("dask")
    local = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        local_directory=str(scratch),
    )
    yield local
    local.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic(
        str(tmp_path_factory.mktemp("d")), rows=12_000, features=4, files=3, row_group_size=1000
    )


def _same(a, b):
    assert np.array_equal(a.weights, b.weights)
    assert np.array_equal(np.asarray(a.intercept), np.asarray(b.intercept))
    assert a.history == b.history
    assert a.summary == b.summary


def _base(data, cluster):
    return dict(
        target="y",
        features=list(data.features),
        epochs=2,
        sync_every=4,
        batch_size=256,
        holdout=0.2,
        quiet=True,
        cluster=cluster.scheduler_address,
    )


def test_every_model_of_a_grid_on_dask_equals_its_run_alone_on_dask(cluster, data):
    settings = {**_base(data, cluster), "optimizer": ["sgd", "adam"], "l2": [0.0, 1e-2]}
    result = fit_grid(data.paths, **settings)
    for model, label in zip(result.models, result.labels, strict=True):
        alone = streamgd.fit(data.paths, **{**settings, **label})
        _same(model, alone)
    local = {k: v for k, v in settings.items() if k not in ("cluster", "sync_every")}
    local = fit_grid(data.paths, **local)
    assert not np.array_equal(local.models[0].weights, result.models[0].weights)  # averaged


def test_a_grid_on_dask_resumes_bit_identically_from_a_mid_epoch_checkpoint(
    cluster, data, tmp_path
):
    settings = {**_base(data, cluster), "lr": [0.3, 0.03], "patience": [1, 3], "epochs": 3}
    full = tmp_path / "full"
    whole = fit_grid(
        data.paths, checkpoint_dir=str(full), checkpoint_every=2, keep=1000, **settings
    )
    saved = sorted(full.glob("grid-*.npz"))
    assert len(saved) > 3
    picked = saved[len(saved) // 3]
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(picked, again / picked.name)
    resumed = fit_grid(data.paths, checkpoint_dir=str(again), resume=True, **settings)
    for a, b in zip(whole.models, resumed.models, strict=True):
        _same(a, b)


def test_cv_on_dask_every_model_equals_its_run_alone_on_dask(cluster, data):
    settings = {**_base(data, cluster), "holdout": None, "cv": 3, "lr": [0.1, 0.02]}
    result = fit_grid(data.paths, **settings)
    for i, label in enumerate(result.labels):
        whole = streamgd.fit(data.paths, **{**settings, "cv": None, **label})
        _same(result.models[i], whole)
        for k, model in enumerate(result.fold_models[i]):
            _same(model, streamgd.fit(data.paths, **{**settings, **label, "cv_fold": k}))
        rows = [m.history[-1]["rows"] + m.history[-1]["val_rows"] for m in result.fold_models[i]]
        assert rows == [12_000] * 3  # each fold model: the rows outside its fold, scored on it
