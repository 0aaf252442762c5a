"""Data-parallel training on a Dask LocalCluster of worker processes on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from conftest import lstsq_mse, write_synthetic  # noqa: E402

import streamgd  # noqa: E402
import streamgd.training.cluster as cluster_module  # noqa: E402
import streamgd.training.distributed as sd  # noqa: E402
from streamgd.config import FitConfig, RunOptions  # noqa: E402
from streamgd.errors import DataError, UsageError  # noqa: E402
from streamgd.training import train  # noqa: E402
from streamgd.training.checkpoint import CheckpointManager  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::UserWarning", "ignore::ResourceWarning"
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two worker processes, dashboard off, scratch in a temporary directory."""
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
        str(tmp_path_factory.mktemp("d")), rows=16_000, features=4, files=4, row_group_size=1000
    )


def _config(data, **kw):
    return FitConfig(
        target="y",
        features=tuple(data.features),
        **{"epochs": 3, "sync_every": 4, "batch_size": 256, **kw},
    )


def _params(result):
    return np.append(result.model.weights, result.model.intercept)


def test_converges_and_is_deterministic(cluster, data):
    options = RunOptions(cluster=cluster.scheduler_address)
    first = train(data.paths, _config(data), options)
    mse = np.mean((first.model.predict(data.x) - data.y) ** 2)
    assert mse <= lstsq_mse(data.x, data.y) * 1.01
    again = train(data.paths, _config(data), options)
    assert np.array_equal(_params(first), _params(again))  # same seed, same weights
    other = train(data.paths, _config(data, seed=1), options)
    assert not np.array_equal(_params(first), _params(other))
    assert first.model.summary["epochs"] == 3


def test_categorical_features_train_on_workers(cluster, tmp_path):
    """Workers encode categorical columns with the driver's vocabulary: the model matches
    least squares over the explicit one-hot matrix."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(4)
    n = 12_000
    x = rng.normal(size=n)
    group = np.array(["a", "b", "c", "d"])[rng.integers(0, 4, n)]
    y = 2 * x + (group == "b") * 3.0 - (group == "d") * 1.5 + rng.normal(size=n) * 0.5
    paths = []
    for i, part in enumerate(np.array_split(np.arange(n), 4)):
        paths.append(str(tmp_path / f"p{i}.parquet"))
        table = pa.table({"x": x[part], "group": group[part], "y": y[part]})
        pq.write_table(table, paths[-1], row_group_size=1000)
    config = FitConfig(
        target="y", features=("x",), categorical=("group",), epochs=3, sync_every=4,
        batch_size=256,
    )  # fmt: skip
    result = train(paths, config, RunOptions(cluster=cluster.scheduler_address))
    design = np.c_[x, np.eye(4)[np.searchsorted(["a", "b", "c", "d"], group)]]
    mse = np.mean((result.model.predict(pa.table({"x": x, "group": group})) - y) ** 2)
    assert mse <= lstsq_mse(design, y) * 1.01


def test_sample_weights_train_on_workers(cluster, tmp_path):
    """--weight reaches the workers through the one decode path and step: the model nears
    weighted least squares, which here is not the unweighted optimum."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(6)
    n = 12_000
    x = rng.normal(size=(n, 2))
    y = x @ [1.0, -2.0] + 0.8 * x[:, 0] ** 2 + rng.normal(size=n) * 0.5
    w = rng.uniform(size=n) * np.where(x[:, 0] > 1.0, 5.0, 1.0)
    paths = []
    for i, part in enumerate(np.array_split(np.arange(n), 4)):
        paths.append(str(tmp_path / f"p{i}.parquet"))
        table = pa.table({"a": x[part, 0], "b": x[part, 1], "w": w[part], "y": y[part]})
        pq.write_table(table, paths[-1], row_group_size=1000)
    config = FitConfig(target="y", weight="w", epochs=4, sync_every=4, batch_size=256)
    result = train(paths, config, RunOptions(cluster=cluster.scheduler_address))
    assert result.model.features == ("a", "b")
    design = np.c_[x, np.ones(n)]

    def objective(theta):
        return float(w @ (design @ theta - y) ** 2) / w.sum()

    sw = np.sqrt(w)
    best = objective(np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)[0])
    coef, intercept = result.model.coefficients()
    assert objective(np.r_[coef["a"], coef["b"], intercept]) <= best * 1.01
    assert objective(np.linalg.lstsq(design, y, rcond=None)[0]) > best * 1.05


def test_holdout_rows_are_the_same_rows_on_workers(cluster, data):
    """Workers draw the --holdout-rows reservoir themselves: they train on every other row,
    and the driver scores exactly the drawn rows."""
    from streamgd.holdout import reservoir_rows
    from streamgd.sources import open_dataset

    config = _config(data, epochs=2, holdout_rows=700)
    result = train(data.paths, config, RunOptions(cluster=cluster.scheduler_address))
    assert all(h["rows"] == 16_000 - 700 for h in result.model.history)
    drawn = reservoir_rows(open_dataset(data.paths, "auto"), 700, seed=0)
    held = np.concatenate([i * 4000 + drawn.get(p, []) for i, p in enumerate(data.paths)])
    mse = np.mean((result.model.predict(data.x[held]) - data.y[held]) ** 2)
    last = result.model.history[-1]
    assert last["val_rows"] == 700 and last["val_mse"] == pytest.approx(mse, rel=1e-9)


def test_sync_every_one_is_synchronous_sgd_over_shards(cluster, data):
    result = train(
        data.paths,
        _config(data, sync_every=1, epochs=1),
        RunOptions(cluster=cluster.scheduler_address),
    )
    # every round is one step on each shard: steps = rounds = rows per shard / batch size
    rows_per_shard = 16_000 // 2
    assert result.model.summary["steps"] == -(-rows_per_shard // 256)


def test_killed_worker_mid_run_leaves_the_weights_bit_identical(cluster, data):
    config = _config(data, batch_size=32, sync_every=8, epochs=2)
    options = RunOptions(cluster=cluster.scheduler_address)
    reference = train(data.paths, config, options)
    client = distributed.Client(cluster.scheduler_address)
    killed = []

    def killer():
        time.sleep(1.0)
        pids = client.run(os.getpid)
        pid = sorted(pids.values())[0]
        os.kill(pid, signal.SIGKILL)  # the nanny restarts it; Dask retries its tasks
        killed.append(pid)

    thread = threading.Thread(target=killer)
    start = time.monotonic()
    thread.start()
    faulty = train(data.paths, config, options)
    thread.join()
    client.close()
    assert killed and time.monotonic() - start > 1.0, "training ended before the kill"
    assert np.array_equal(_params(faulty), _params(reference))


def test_driver_killed_and_resumed_is_bit_identical(cluster, data, tmp_path):
    config = _config(data)
    full = train(data.paths, config, RunOptions(cluster=cluster.scheduler_address))
    directory = str(tmp_path / "ck")

    class Crash(Exception):
        pass

    class CrashAt:
        def __getattr__(self, name):
            return lambda *a: None

        def on_round(self, state, timing):
            if state.dask.round == 6:  # after the sixth round, in the second epoch
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
    assert np.array_equal(_params(resumed), _params(full))
    assert resumed.model.history == full.model.history


def test_json_log_has_round_timing(cluster, data, tmp_path, capsys):
    from streamgd.cli import run

    assert (
        run(
            [
                "fit",
                *data.paths,
                "--target",
                "y",
                "--features",
                ",".join(data.features),
                "--cluster",
                cluster.scheduler_address,
                "--epochs",
                "1",
                "--sync-every",
                "8",
                "--log-format",
                "json",
            ]
        )
        == 0
    )
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    rounds = [e for e in events if e["event"] == "round"]
    assert rounds and all(r["wall_s"] >= r["compute_max_s"] >= 0 for r in rounds)
    assert all(0 <= r["overhead_s"] <= r["wall_s"] for r in rounds)


def test_an_outlier_only_workers_meet_is_warned_about_once(cluster, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from streamgd.cli import run

    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=4000), rng.normal(size=4000)
    y = 1.0 + 2.0 * x1 - 0.5 * x2 + 0.1 * rng.normal(size=4000)
    x1[3500] = 1e9  # beyond 100 spreads, in a row group the statistics pass does not read
    path = str(tmp_path / "d.parquet")
    pq.write_table(pa.table({"x1": x1, "x2": x2, "y": y}), path, row_group_size=500)
    args = ["fit", path, "-y", "y", "--cluster", cluster.scheduler_address]
    args += ["--stats-rows", "500", "--epochs", "2", "--log-format", "json"]
    args += ["-o", str(tmp_path / "m.npz")]  # else a warning says that nothing is saved
    assert run(args) == 0
    out = capsys.readouterr()
    events = [json.loads(line) for line in (out.out + out.err).splitlines() if line[:1] == "{"]
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert len(warnings) == 1, warnings
    assert "column 'x1'" in warnings[0] and "row 3501" in warnings[0], warnings


def test_unreachable_scheduler_is_a_clear_error(monkeypatch, data):
    monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT", 2.0)
    with pytest.raises(DataError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        train(data.paths, _config(data), RunOptions(cluster="tcp://127.0.0.1:9"))


def test_bad_cluster_specs_are_usage_errors():
    for spec in ("yarn", "local:0", "local:x"):
        with pytest.raises(UsageError, match="--cluster"):
            cluster_module.parse_cluster(spec)


def test_a_worker_that_leaves_while_asked_about_the_files_is_skipped():
    """Seen under load: a worker killed at start-up closed the connection of the files check,
    and the run ended with an internal error although the other workers could train."""
    from distributed.comm.core import CommClosedError

    class FakeClient:
        def __init__(self, answer):
            self.answer = answer

        def run(self, fn, *args, on_error="raise"):
            gone = CommClosedError("in <TCP (closed) Scheduler Broadcast>: Stream is closed")
            if on_error == "raise":
                raise gone
            return {"tcp://127.0.0.1:4000": gone, "tcp://127.0.0.1:4001": self.answer}

    cluster_module.check_workers_see_files(FakeClient(None), ("/x.pq",), "auto")
    with pytest.raises(DataError, match="worker tcp://127.0.0.1:4001 cannot see /x.pq"):
        cluster_module.check_workers_see_files(FakeClient("cannot see /x.pq"), ("/x.pq",), "auto")
    with pytest.raises(ZeroDivisionError):  # an error of the check itself is still raised
        cluster_module.check_workers_see_files(FakeClient(ZeroDivisionError()), ("/x.pq",), "auto")


def test_workers_that_cannot_see_the_files_are_named():
    class FakeClient:
        def run(self, fn, *args, on_error="raise"):
            return {"tcp://127.0.0.1:4000": None, "tcp://127.0.0.1:4001": "cannot see /x.pq"}

    with pytest.raises(DataError, match="worker tcp://127.0.0.1:4001 cannot see /x.pq"):
        cluster_module.check_workers_see_files(FakeClient(), ("/x.pq",), "auto")


@contextlib.contextmanager
def dask_processes(tmp_path, *, workers: int = 2, nanny: bool = True):
    """`dask scheduler` and `dask worker` as separate processes on 127.0.0.1; yields the
    scheduler file and the worker processes."""
    bin_dir = os.path.dirname(sys.executable)
    dask = shutil.which("dask", path=bin_dir) or shutil.which("dask")
    if dask is None:
        pytest.skip("the dask command is not installed")
    scheduler_file = str(tmp_path / "scheduler.json")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [
        subprocess.Popen(
            [
                dask,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                scheduler_file,
            ],
            **quiet,
        )
    ]
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(scheduler_file) and time.monotonic() < deadline:
            time.sleep(0.1)
        extra = [] if nanny else ["--no-nanny"]
        started = [
            subprocess.Popen(
                [
                    dask,
                    "worker",
                    "--scheduler-file",
                    scheduler_file,
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    *extra,
                    "--local-directory",
                    str(tmp_path / f"w{i}"),
                ],
                **quiet,
            )
            for i in range(workers)
        ]
        procs += started
        client = distributed.Client(scheduler_file=scheduler_file, timeout=30)
        client.wait_for_workers(workers, timeout=30)
        client.close()
        yield scheduler_file, started
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(timeout=30)


def test_scheduler_and_workers_as_separate_processes(data, tmp_path):
    with dask_processes(tmp_path) as (scheduler_file, _):
        out = str(tmp_path / "m.npz")
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "streamgd",
                "fit",
                *data.paths,
                "--target",
                "y",
                "--features",
                ",".join(data.features),
                "--cluster",
                f"file:{scheduler_file}",
                "--epochs",
                "2",
                "-o",
                out,
                "--quiet",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        model = streamgd.load(out)
        assert np.mean((model.predict(data.x) - data.y) ** 2) <= lstsq_mse(data.x, data.y) * 1.02


def test_a_worker_lost_for_good_training_finishes_on_the_rest(cluster, data, tmp_path):
    config = _config(data, batch_size=32, sync_every=8, epochs=2)
    reference = train(data.paths, config, RunOptions(cluster=cluster.scheduler_address))
    with dask_processes(tmp_path, nanny=False) as (scheduler_file, workers):
        killed = []

        def kill_one_for_good():  # no nanny: nothing restarts it
            time.sleep(1.0)
            workers[0].kill()
            killed.append(workers[0].pid)

        thread = threading.Thread(target=kill_one_for_good)
        thread.start()
        survived = train(data.paths, config, RunOptions(cluster=f"file:{scheduler_file}"))
        thread.join()
        assert killed, "training ended before the kill"
        client = distributed.Client(scheduler_file=scheduler_file, timeout=30)
        assert len(client.scheduler_info()["workers"]) == 1
        client.close()
    assert np.array_equal(_params(survived), _params(reference))  # rounds are pure


# -- row groups bigger than a slice: the worker streams them ------------------------------------
@pytest.fixture(scope="module")
def thread_cluster():
    """Workers as threads of this process, so that a monkeypatched WHOLE_ROWS reaches them."""
    local = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        protocol="tcp://",
        host="127.0.0.1",
        dashboard_address=None,
    )
    yield local
    local.close()


@pytest.fixture(scope="module")
def big_groups(tmp_path_factory):
    """Hive-partitioned files of one 3000-row row group each (year=2023, year=2024)."""
    root = tmp_path_factory.mktemp("big")
    made = write_synthetic(str(root / "tmp"), rows=6000, features=2, files=2, row_group_size=3000)
    for year, path in zip((2023, 2024), made.paths, strict=True):
        (root / f"year={year}").mkdir()
        os.replace(path, root / f"year={year}" / "part-0.parquet")
    return str(root)


def test_row_groups_bigger_than_a_slice_stream_through_workers(
    thread_cluster, big_groups, monkeypatch
):
    config = FitConfig(
        target="y", features=("x0", "x1", "year"), epochs=2, batch_size=64, sync_every=5
    )
    options = RunOptions(cluster=thread_cluster.scheduler_address)
    whole = train([big_groups], config, options)  # 3000 rows <= WHOLE_ROWS: one piece
    kept = []
    keep = sd._keep

    def spy(key, stream):
        kept.append(len(stream.rows))
        keep(key, stream)

    monkeypatch.setattr(sd, "_keep", spy)
    monkeypatch.setattr(streamgd.sources.dataset, "WHOLE_ROWS", 256)
    monkeypatch.setattr(streamgd.sources.dataset, "SLICE_ROWS", 256)
    sliced = train([big_groups], config, options)
    assert kept and max(kept) <= 256  # a worker holds one slice, not the 3000-row group
    # the statistics pass sums its slices in another order, so equal to float64 rounding only
    assert np.allclose(_params(sliced), _params(whole), rtol=1e-9, atol=1e-12)
    assert [h["rows"] for h in sliced.model.history] == [6000, 6000]

    monkeypatch.setattr(sd, "_keep", lambda key, stream: None)  # every round on a fresh worker
    retried = train([big_groups], config, options)
    assert np.array_equal(_params(retried), _params(sliced))
    assert retried.model.history == sliced.model.history
    assert list(whole.model.features) == ["x0", "x1", "year"]  # workers see partitions too


def test_a_unit_stream_reads_forward_through_pieces_of_any_size():
    def piece(values, count):
        return np.asarray(values, dtype=np.float32)[:, None], np.full_like(
            sd.count_vector(1), count
        )

    pieces = [piece([0, 1, 2], 1), piece([], 2), piece([3, 4, 5, 6], 4)]
    stream = sd._UnitStream(iter(pieces), 1)
    assert stream.take(0, 5).ravel().tolist() == [0, 1, 2]  # up to the end of a piece
    assert stream.take(3, 2).ravel().tolist() == [3, 4]  # past the empty piece
    assert not stream.done(5) and stream.start == 3
    assert stream.take(5, 9).ravel().tolist() == [5, 6]
    assert stream.done(7) and set(stream.counts.tolist()) == {7}  # every piece counted once
    assert len(stream.take(7, 1)) == 0


def test_the_cache_key_holds_every_setting_rows_depend_on():
    """A long-lived worker that served one run must not hand its rows to a run with other
    features, statistics or settings."""
    from streamgd.features import FeatureSpec

    def spec(names=("x0", "x1"), center=0.0):
        n = len(names)
        return FeatureSpec(names, "y", np.full(n, center), np.ones(n), np.zeros(n))

    config = FitConfig(target="y").to_dict()
    key = sd._settings_key(spec(), config)
    assert key == sd._settings_key(spec(), dict(config))
    assert key != sd._settings_key(spec(names=("x0", "x2")), config)
    assert key != sd._settings_key(spec(center=1e-9), config)
    assert key != sd._settings_key(spec(), {**config, "holdout": 0.1})
