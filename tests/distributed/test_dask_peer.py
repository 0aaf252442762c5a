"""The peer round protocol (streamgd.training.peer): segments of rounds averaged over a tree."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from conftest import write_synthetic  # noqa: E402

import streamgd.training.peer as peer_module  # noqa: E402
from streamgd.config import FitConfig, RunOptions  # noqa: E402
from streamgd.errors import UsageError  # noqa: E402
from streamgd.training import train  # noqa: E402
from streamgd.training.checkpoint import CheckpointManager  # noqa: E402
from streamgd.training.peer import tree_allreduce  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::UserWarning", "ignore::ResourceWarning"
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two worker processes of two threads each, with nannies (a killed one comes back)."""
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


# -- the tree, in one process --------------------------------------------------------------------
class _FakeLink:
    """The send/recv of a shard's link over a dict shared by threads (no Dask)."""

    def __init__(self, shard, box, cond, counts):
        self.shard, self.box, self.cond, self.counts = shard, box, cond, counts

    def send(self, to, round_index, phase, payload):
        with self.cond:
            self.box[(to, round_index, phase, self.shard)] = payload
            self.counts[self.shard] += 1
            self.cond.notify_all()

    def recv(self, src, round_index, phase):
        with self.cond:
            key = (self.shard, round_index, phase, src)
            assert self.cond.wait_for(lambda: key in self.box, timeout=10), key
            return self.box.pop(key)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13])
def test_the_tree_combines_every_shard_once_in_shard_order_and_all_get_the_total(n):
    box, cond, counts, out = {}, threading.Condition(), [0] * n, [None] * n

    def run(s):  # concatenation is not commutative: the total shows the order of summation
        link = _FakeLink(s, box, cond, counts)
        out[s] = tree_allreduce(link, n, 7, (str(s),), combine=lambda a, b: a + b)

    threads = [threading.Thread(target=run, args=(s,)) for s in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == [tuple(str(s) for s in range(n))] * n  # the plain loop's order, everywhere
    assert sum(counts) == 2 * (n - 1) and not box  # each message once, none left over
    assert max(counts) <= 2 * max(n - 1, 1).bit_length()  # no node sends O(n)


# -- real fits ------------------------------------------------------------------------------------
def test_peer_rounds_are_reproducible_and_agree_with_task_rounds(cluster, data):
    options = RunOptions(cluster=cluster.scheduler_address)
    tasks = train(data.paths, _config(data), options)
    first = train(data.paths, _config(data, round_protocol="peer"), options)
    second = train(data.paths, _config(data, round_protocol="peer"), options)
    assert np.array_equal(_params(first), _params(second))  # same seed: bit-identical
    # the tree sums in another order than the driver: a few units in the last place a round
    np.testing.assert_allclose(_params(first), _params(tasks), rtol=1e-12, atol=0)
    assert first.model.history[-1]["rows"] == tasks.model.history[-1]["rows"]


def test_a_worker_killed_mid_segment_redoes_it_bit_identically(cluster, data):
    config = _config(data, round_protocol="peer", batch_size=32, sync_every=2, epochs=4)
    options = RunOptions(cluster=cluster.scheduler_address)
    reference = train(data.paths, config, options)
    client = distributed.Client(cluster.scheduler_address)
    killed, attempts, stop = [], [], threading.Event()

    def killer():  # as soon as a segment of the second epoch runs, kill a worker running it
        while not stop.is_set():
            for addr, keys in client.processing().items():
                if any("segment" in str(k) and "-try-0-" in str(k) for k in keys):
                    pid = client.run(os.getpid, workers=[addr])[addr]
                    if attempts:  # a segment has ended: this one is not the first
                        os.kill(pid, signal.SIGKILL)  # the nanny restarts it
                        killed.append(pid)
                        return
            time.sleep(0.01)

    class Attempts:
        def __getattr__(self, name):
            return lambda *a: None

        def on_round(self, state, timing):
            attempts.append(timing["attempts"])

    thread = threading.Thread(target=killer)
    thread.start()
    faulty = train(data.paths, config, options, callbacks=[Attempts()])
    stop.set()
    thread.join()
    client.close()
    assert killed, "training ended before the kill"
    assert max(attempts) > 1  # a segment was aborted and run again from its start
    assert np.array_equal(_params(faulty), _params(reference))


def test_resume_at_a_segment_end_is_bit_identical(cluster, data, tmp_path, monkeypatch):
    monkeypatch.setattr(peer_module, "SEGMENT_ROUNDS", 4)  # segments end every 4th round
    config = _config(data, round_protocol="peer")
    full = train(data.paths, config, RunOptions(cluster=cluster.scheduler_address))
    directory = str(tmp_path / "ck")

    class Crash(Exception):
        pass

    seen = []

    class CrashAt:
        def __getattr__(self, name):
            return lambda *a: None

        def on_round(self, state, timing):
            assert timing["rounds"] <= 4
            seen.append(state.epoch)
            if seen.count(1) == 2:  # the second segment of the second epoch: the first is saved
                raise Crash

    options = RunOptions(
        cluster=cluster.scheduler_address, checkpoint_dir=directory, checkpoint_every=1
    )
    with pytest.raises(Crash):
        train(data.paths, config, options, callbacks=[CrashAt()])
    assert CheckpointManager(directory).paths()
    resumed = train(
        data.paths,
        config,
        RunOptions(cluster=cluster.scheduler_address, checkpoint_dir=directory, resume=True),
    )
    assert resumed.resumed_from is not None
    # the same segments, rounds and sums as the uninterrupted run: the same bits
    assert np.array_equal(_params(resumed), _params(full))
    assert resumed.model.history == full.model.history


def test_peer_rounds_wait_for_every_shard():
    with pytest.raises(UsageError, match="round-protocol"):
        FitConfig(target="y", round_protocol="peer", quorum=0.5)
    assert peer_module.SEGMENT_ROUNDS >= 1
