"""A scaling emulator of ``--cluster`` rounds: the real round protocol with simulated compute.

The driver runs :class:`streamgd.training.rounds.RoundProtocol` (the submit, gather and
average code the trainer runs) against a real ``dask scheduler`` process and ``dask worker``
processes on 127.0.0.1, with tasks that sleep for a stated compute time (so that 64-128
"workers" fit on one machine as threads of a few worker processes; sleeping tasks release the
GIL). ``--protocol before`` re-enacts the loop of before issue 19 (one ``submit`` per shard
with every input as an argument, a gather through the scheduler) to compare in the same run.

It measures, per protocol and number of shards N (one task each per round):

- the overhead per round, o(N) = wall - slowest task's sleep, fitted as a + b N;
- the serial CPU per task of the scheduler and of the driver (slopes of CPU per round
  against N: what bounds a round however many machines there are);
- the state-size term: overhead per MB of weights + optimiser state per task.

and projects, for given N, ``--sync-every``, state size and data size, the efficiency
(compute / round time) and the time per epoch, with the round time modelled as

    T(N) = C * S(N) + a + (scheduler + driver CPU per task) * N + m * state_MB * N

where C = sync_every * batch_size / rate is one task's compute and S(N) = 1 + cv * z(N) the
expected slowest of N tasks whose compute varies with coefficient of variation ``cv``
(z(N) the expected maximum of N standard normals; with ``--quorum q`` the q-quantile instead,
and only the share q of the compute is kept: the late shards' work is thrown away).

Usage::

    python tools/dask_emulator.py --shards 4,8,16,32,64 --rounds 40 --json costs.json
    python tools/dask_emulator.py --costs costs.json --project-n 8,32,128,512

The machine's cores (2 here) are shared by scheduler, driver and workers: the CPU figures are
per task and serial, and the fitted slope b of the wall overhead is inflated by contention at
large N; the projection uses the CPU figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from dask_actor_rounds import ActorProtocol  # noqa: E402

from streamgd.training.rounds import RoundProtocol, average  # noqa: E402


def sleep_for(shard: int, round_index: int, compute_s: float, cv: float) -> float:
    """The stated compute of a task, varied with coefficient of variation ``cv`` (seeded)."""
    z = np.random.default_rng([shard, round_index, 7]).standard_normal()
    return max(compute_s * (1.0 + cv * z), 0.0)


def emulated_task(shard, own, *, static, shared):
    """A round task of the protocol: sleeps its compute, returns a result of the state's size."""
    params, opt_state, _step, round_index = shared
    time.sleep(sleep_for(shard, round_index, static["compute_s"], static["cv"]))
    return {"shard": shard, "params": params, "opt_state": opt_state, "rows": 1000 + shard}


def emulated_task_before(*args):
    """The same task with the arguments of before issue 19 (every input, every round)."""
    _paths, _fmt, _units, shard, _cursor, params, opt_state, emu, _cfg, _step, rnd, _i = args
    time.sleep(sleep_for(shard, rnd, emu["compute_s"], emu["cv"]))
    return {"shard": shard, "params": params, "opt_state": opt_state, "rows": 1000 + shard}


def static_inputs(n: int, compute_s: float, cv: float) -> dict:
    """Inputs of the size the trainer sends: 100 paths, a settings dict, row-group lists."""
    return {
        "paths": tuple(f"/shared/data/part-{i:05d}.parquet" for i in range(100)),
        "config": {f"setting_{i}": i * 0.5 for i in range(60)},
        "units": [list(range(s, 4 * n, n)) for s in range(n)],
        "compute_s": compute_s,
        "cv": cv,
    }


class Cluster:
    """``dask scheduler`` and worker processes on 127.0.0.1 (no nanny, no dashboard)."""

    def __init__(self, processes: int, threads: int) -> None:
        self.dir = tempfile.mkdtemp(prefix="streamgd-emu-")
        self.file = os.path.join(self.dir, "scheduler.json")
        bin_dir = Path(sys.executable).parent
        path = os.pathsep.join([str(HERE), str(HERE / "tools")])
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": path}
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
        self.procs = [
            subprocess.Popen(
                [str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                 "--no-dashboard", "--scheduler-file", self.file], **quiet,
            )
        ]  # fmt: skip
        for _ in range(200):
            if os.path.exists(self.file):
                break
            time.sleep(0.1)
        for _ in range(processes):
            self.procs.append(
                subprocess.Popen(
                    [str(bin_dir / "dask"), "worker", "--scheduler-file", self.file,
                     "--nthreads", str(threads), "--no-nanny", "--no-dashboard",
                     "--host", "127.0.0.1", "--local-directory", self.dir], **quiet,
                )
            )  # fmt: skip

    def close(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            p.wait(timeout=30)


def measure_case(client, protocol: str, n: int, args, state_floats: int) -> dict:
    """``args.rounds`` rounds of ``n`` shards: medians of wall and overhead, CPU per round."""
    # the tasks by reference (as the trainer's are), not pickled by value from __main__
    from dask_emulator import emulated_task, emulated_task_before

    params = np.zeros(state_floats // 2, np.float32)
    opt_state = {"m": np.zeros(state_floats - len(params), np.float32)}
    static = static_inputs(n, args.compute_ms / 1e3, args.cv)
    run = uuid.uuid4().hex[:12]
    direct = {"auto": None, "yes": True, "no": False}[args.direct]
    if protocol == "actors":
        proto = ActorProtocol(client, run)
    else:
        proto = RoundProtocol(
            client, run, quorum=args.quorum, direct=direct, hold_bytes=args.hold_kb * 1024
        )
    shards = list(range(n))
    if protocol != "before":
        static_f = proto.put("static-0", static)
    else:
        emu = {"compute_s": static["compute_s"], "cv": static["cv"]}
        emu_f = client.submit(lambda v: v, emu, key=f"emu-{run}", pure=False)
        inputs_f = client.submit(lambda v: v, "fingerprint", key=f"inputs-{run}", pure=False)
    overheads, walls, cpu_driver, cpu_sched = [], [], [], []
    for r in range(args.rounds + 3):
        s0 = client.run_on_scheduler(time.process_time)
        d0, t0 = time.process_time(), time.perf_counter()
        if protocol != "before":
            outcome = proto.run(
                emulated_task, r, shards, [None] * n, static=static_f,
                shared=(params, opt_state, r, r),
            )  # fmt: skip
            results = outcome.results
        else:
            futures = [
                client.submit(
                    emulated_task_before, static["paths"], "parquet", static["units"][s], s,
                    (0, 0, 0), params, opt_state, emu_f, static["config"], r, r, inputs_f,
                    key=f"round-{r}-shard-{s}-{run}", pure=False, retries=5,
                )
                for s in shards
            ]  # fmt: skip
            results = client.gather(futures)
        p, o = average(results)
        wall = time.perf_counter() - t0
        d1, s1 = time.process_time(), client.run_on_scheduler(time.process_time)
        params, opt_state = p.astype(np.float32), {"m": o["m"].astype(np.float32)}
        if r < 3:
            continue  # warm-up
        done = [res["shard"] for res in results]
        slowest = max(sleep_for(s, r, args.compute_ms / 1e3, args.cv) for s in done)
        walls.append(wall)
        overheads.append(wall - slowest)
        cpu_driver.append(d1 - d0)
        cpu_sched.append(s1 - s0)
    return {
        "protocol": protocol,
        "n": n,
        "state_mb": state_floats * 4 / 1e6,
        "wall_s": statistics.median(walls),
        "overhead_s": statistics.median(overheads),
        "driver_cpu_s": statistics.median(cpu_driver),
        "scheduler_cpu_s": statistics.median(cpu_sched),
    }


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares a + b x over (x, y) points."""
    x = np.array([p[0] for p in points], float)
    y = np.array([p[1] for p in points], float)
    if len(points) < 2:
        return float(y[0]), 0.0
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def measure(args) -> dict:
    from distributed import Client

    counts = [int(n) for n in args.shards.split(",")]
    processes = args.processes
    threads = math.ceil(max(counts) / processes)
    cluster = Cluster(processes, threads)
    cases: list[dict] = []
    protocols = {"both": ["before", "after"], "all": ["before", "after", "actors"]}.get(
        args.protocol, [args.protocol]
    )
    try:
        with Client(scheduler_file=cluster.file, timeout=60) as client:
            client.wait_for_workers(processes, timeout=120)
            for _ in range(args.repeat):
                for n in counts:
                    for protocol in protocols:  # in turn: the same load for both
                        c = measure_case(client, protocol, n, args, args.state_floats)
                        cases.append(c)
                        _show(c)
                for mb in [args.state_floats / 250_000, *args.state_mb]:
                    for protocol in protocols:
                        c = measure_case(client, protocol, args.state_n, args, int(mb * 250_000))
                        cases.append({**c, "state_case": True})
                        _show(c)
    finally:
        cluster.close()
    costs = {"machine": f"{os.cpu_count()} cores", "processes": processes, "threads": threads}
    for protocol in protocols:
        small = [c for c in cases if c["protocol"] == protocol and "state_case" not in c]
        by_n = {n: [c for c in small if c["n"] == n] for n in counts}
        med = {n: {k: statistics.median(c[k] for c in cs) for k in cs[0] if k.endswith("_s")}
               for n, cs in by_n.items()}  # fmt: skip
        a, b = fit([(n, m["overhead_s"]) for n, m in med.items()])
        _, sched = fit([(n, m["scheduler_cpu_s"]) for n, m in med.items()])
        _, driver = fit([(n, m["driver_cpu_s"]) for n, m in med.items()])
        big = [c for c in cases if c["protocol"] == protocol and "state_case" in c]
        state = [(c["state_mb"], c["overhead_s"]) for c in big]
        per_mb = fit(state)[1] / args.state_n if len({s for s, _ in state}) > 1 else 0.0
        costs[protocol] = {
            "a_s": a, "b_s": b, "scheduler_cpu_per_task_s": sched,
            "driver_cpu_per_task_s": driver, "state_s_per_mb_per_task": per_mb,
            "medians": {str(n): m for n, m in med.items()},
        }  # fmt: skip
    return costs


def _show(c: dict) -> None:
    print(
        f"{c['protocol']:6s} N={c['n']:4d} state {c['state_mb']:6.2f} MB: overhead "
        f"{c['overhead_s'] * 1e3:7.1f} ms, scheduler CPU {c['scheduler_cpu_s'] * 1e3:6.1f} ms, "
        f"driver CPU {c['driver_cpu_s'] * 1e3:6.1f} ms per round",
        flush=True,
    )


def expected_max_normal(n: int) -> float:
    """E[max of n standard normals] (Blom's approximation; 0 for n = 1)."""
    from statistics import NormalDist

    if n <= 1:
        return 0.0
    return NormalDist().inv_cdf((n - 0.375) / (n + 0.25))


def project(cost: dict, n: int, sync_every: int, args) -> tuple[float, float]:
    """Efficiency and minutes per epoch for ``n`` workers (see the module's model)."""
    compute = sync_every * args.batch_size / args.rate
    if args.quorum < 1:
        from statistics import NormalDist

        straggle = 1 + args.cv * NormalDist().inv_cdf(args.quorum)
        compute_used = compute * args.quorum  # the late shards' work is thrown away
    else:
        straggle = 1 + args.cv * expected_max_normal(n)
        compute_used = compute
    serial = cost["scheduler_cpu_per_task_s"] + cost["driver_cpu_per_task_s"]
    state = cost["state_s_per_mb_per_task"] * args.project_state_mb
    round_s = compute * straggle + cost["a_s"] + (serial + state) * n
    efficiency = compute_used / round_s
    rows = args.data_tb * 1e12 / (4 * (args.project_features + 1))
    epoch_min = rows / (n * args.rate) / efficiency / 60
    return efficiency, epoch_min


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", default="4,8,16,32,64", help="N: shards (tasks) per round")
    ap.add_argument("--processes", type=int, default=4, help="worker processes (threads: N/P)")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--compute-ms", type=float, default=20.0, help="a task's sleep (mean)")
    ap.add_argument("--cv", type=float, default=0.12, help="compute's coefficient of variation")
    ap.add_argument("--quorum", type=float, default=1.0, help="the round protocol's quorum")
    ap.add_argument("--hold-kb", type=int, default=64, help="shared state held from this size")
    ap.add_argument("--direct", choices=["auto", "yes", "no"], default="auto", help="gather")
    protocols = ["before", "after", "actors", "both", "all"]
    ap.add_argument("--protocol", choices=protocols, default="all")
    ap.add_argument("--state-floats", type=int, default=34, help="weights + state, small case")
    ap.add_argument("--state-mb", type=float, nargs="*", default=[1.0, 4.0])
    ap.add_argument("--state-n", type=int, default=8, help="N of the state-size cases")
    ap.add_argument("--json", help="write the measured costs here")
    ap.add_argument("--costs", help="project from these measured costs (no measuring)")
    ap.add_argument("--project-n", default="8,32,128,512")
    ap.add_argument("--project-sync", default="64,256,1024,4096")
    ap.add_argument("--project-state-mb", type=float, default=0.0003)
    ap.add_argument("--project-features", type=int, default=32)
    ap.add_argument("--data-tb", type=float, default=1.0)
    ap.add_argument("--rate", type=float, default=10e6, help="rows/s per worker")
    ap.add_argument("--batch-size", type=int, default=1024)
    args = ap.parse_args(argv)
    if args.costs:
        costs = json.loads(Path(args.costs).read_text())
    else:
        costs = measure(args)
        if args.json:
            Path(args.json).write_text(json.dumps(costs, indent=1))
    for protocol in ("before", "after", "actors"):
        if protocol not in costs:
            continue
        c = costs[protocol]
        print(
            f"\n{protocol}: o(N) = {c['a_s'] * 1e3:.1f} ms + {c['b_s'] * 1e3:.2f} ms x N (wall, "
            f"{costs['machine']}); serial CPU per task: scheduler "
            f"{c['scheduler_cpu_per_task_s'] * 1e3:.2f} ms, driver "
            f"{c['driver_cpu_per_task_s'] * 1e3:.2f} ms; state "
            f"{c['state_s_per_mb_per_task'] * 1e3:.2f} ms per MB per task"
        )
        syncs = [int(k) for k in args.project_sync.split(",")]
        print("| N | " + " | ".join(f"sync {k}" for k in syncs) + " |")
        print("|---|" + "---|" * len(syncs))
        for n in (int(x) for x in args.project_n.split(",")):
            cells = []
            for k in syncs:
                eff, minutes = project(c, n, k, args)
                cells.append(f"{eff:.0%}, {minutes:.1f} min")
            print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
