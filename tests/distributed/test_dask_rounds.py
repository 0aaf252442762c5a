"""The round protocol (streamgd.training.rounds): held state, direct gathers, quorum rounds."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from conftest import lstsq_mse, write_synthetic  # noqa: E402

import streamgd.training.rounds as rounds_module  # noqa: E402
from streamgd.config import FitConfig, RunOptions  # noqa: E402
from streamgd.errors import UsageError  # noqa: E402
from streamgd.training import train  # noqa: E402
from streamgd.training.rounds import RoundProtocol, average  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::UserWarning", "ignore::ResourceWarning"
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two worker processes of two threads each (so that three shards run at once)."""
    local = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=2,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        local_directory=str(tmp_path_factory.mktemp("dask")),
    )
    yield local
    local.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic(
        str(tmp_path_factory.mktemp("d")), rows=12_000, features=4, files=3, row_group_size=1000
    )


def _config(data, **kw):
    return FitConfig(
        target="y",
        features=tuple(data.features),
        **{"epochs": 2, "sync_every": 4, "batch_size": 64, "shards": 3, **kw},
    )


def _params(result):
    return np.append(result.model.weights, result.model.intercept)


def test_held_state_and_direct_gather_survive_a_killed_worker_bit_identically(
    cluster, data, monkeypatch
):
    options = RunOptions(cluster=cluster.scheduler_address)
    reference = train(data.paths, _config(data), options)  # small state: inside the tasks
    monkeypatch.setattr(rounds_module, "HOLD_BYTES", 0)  # every round's state held, and
    client = distributed.Client(cluster.scheduler_address)  # gathered from the workers
    killed = []

    def killer():
        time.sleep(1.0)
        pid = sorted(client.run(os.getpid).values())[0]
        os.kill(pid, signal.SIGKILL)  # the nanny restarts it; Dask makes its results again
        killed.append(pid)

    thread = threading.Thread(target=killer)
    thread.start()
    held = train(data.paths, _config(data), options)
    thread.join()
    client.close()
    assert killed, "training ended before the kill"
    assert np.array_equal(_params(held), _params(reference))


def test_a_quorum_round_ends_without_its_straggler_and_waits_for_it_next(cluster):
    def task(shard, own, *, static, shared):
        params, _, _, round_index = shared
        slow = {0: 0, 1: 2}.get(round_index)  # shard 0 straggles in round 0, shard 2 in 1
        time.sleep(static["slow_s"] if shard == slow else 0.0)
        return {"shard": shard, "params": params + own, "opt_state": {}, "rows": 10 * own}

    client = distributed.Client(cluster.scheduler_address)
    try:
        protocol = RoundProtocol(client, "quorum-test", quorum=0.6)  # 2 of 3 shards
        static = protocol.put("static", {"slow_s": 3.0})
        params, shards, own = np.zeros(2), [0, 1, 2], [1.0, 2.0, 4.0]
        first = protocol.run(task, 0, shards, own, static=static, shared=(params, {}, 0, 0))
        assert first.late == [0] and [r["shard"] for r in first.results] == [1, 2]
        assert first.wall_s < 2.0  # did not wait for the 3 s straggler
        # the average is weighted by the rows the shards that came took: (20*2 + 40*4) / 60
        assert np.allclose(average(first.results)[0], (20 * 2 + 40 * 4) / 60)
        second = protocol.run(task, 1, shards, own, static=static, shared=(params, {}, 0, 1))
        assert second.late == [2] and [r["shard"] for r in second.results] == [0, 1]
        assert second.wall_s < 2.0  # shard 0, late before, was waited for and came at once
        # every shard is in: a quorum of 1 waits for all, stragglers included
        whole = RoundProtocol(client, "quorum-test-all")
        third = whole.run(task, 0, shards, own, static=static, shared=(params, {}, 0, 0))
        assert third.late == [] and third.wall_s >= 3.0
    finally:
        client.close()


def test_quorum_training_reads_every_row_and_converges(cluster, data):
    options = RunOptions(cluster=cluster.scheduler_address)
    result = train(data.paths, _config(data, quorum=0.5, epochs=3), options)
    assert result.model.summary["epochs"] == 3
    assert all(h["rows"] == 12_000 for h in result.model.history)  # late rows retaken
    mse = np.mean((result.model.predict(data.x) - data.y) ** 2)
    assert mse <= lstsq_mse(data.x, data.y) * 1.02


@pytest.mark.parametrize("bad", [0, -0.5, 1.5])
def test_quorum_must_be_a_share_of_the_shards(bad):
    with pytest.raises(UsageError, match="quorum"):
        FitConfig(target="y", quorum=bad)
