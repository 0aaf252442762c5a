"""The scaling emulator of ``--round-protocol peer``: its real segment code, sleeping compute.

The driver runs :class:`streamgd.training.peer.PeerProtocol` (the segment, tree and failure
code the trainer runs) against a ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1
(``dask_emulator.Cluster``), with round tasks that sleep a stated compute (seeded variation,
as in ``tools/dask_emulator.py``). Per N shards and segment of R rounds it measures:

- the serial CPU per task of the scheduler and of the driver, per segment and per round
  (a segment's CPU / (N x R)): what still grows with N, now divided by R;
- the tree's wall overhead per round: (segment wall - the sum of each round's slowest sleep) / R,
  fitted as a + h log2 N (h: the cost of a level of the tree, two messages deep);
- the workers' CPU per message (all worker CPU of the segment / messages sent; sleeping costs
  no CPU, so this is an upper bound that includes each round's own bookkeeping).

and projects the efficiency for N = 8..512 and ``--sync-every`` K as in ``dask_emulator.py``:

    T_round = C (1 + cv z(N)) + 2 log2 N (m + m_MB * state_MB)
              + (fixed + scheduler and driver CPU per task per segment * N) / R

with m the workers' CPU per message (the critical path of a round is 2 log2 N messages, each
a send and a receive on another worker).

Usage::

    python tools/dask_peer_emulator.py --shards 4,8,16,32,64 --rounds 20 --json peer.json
    python tools/dask_peer_emulator.py --costs peer.json

One 2-core machine shared with other jobs: the CPU seconds are the robust figures.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "tools"))

from dask_emulator import Cluster, expected_max_normal, fit, sleep_for  # noqa: E402

from streamgd.training.peer import PeerProtocol  # noqa: E402


def peer_task(shard, own, *, static, shared):
    """A round task: sleeps its compute; the next cursor is the round count."""
    params, opt_state, _step, round_index = shared
    sleep = sleep_for(shard, round_index, static["compute_s"], static["cv"])
    time.sleep(sleep)
    return {
        "shard": shard,
        "params": params,
        "opt_state": opt_state,
        "rows": 1000 + shard,
        "steps": 1,
        "cursor": own + 1,
        "compute_s": sleep,
    }


def never_finished(static, shard, own) -> bool:  # noqa: ARG001
    return False


def worker_cpu(client) -> float:
    return sum(client.run(time.process_time).values())


def measure_case(client, n: int, args, state_floats: int) -> dict:
    from dask_peer_emulator import never_finished, peer_task  # by reference, as the trainer's

    params = np.zeros(state_floats // 2, np.float64)
    opt_state = {"m": np.zeros(state_floats - len(params), np.float64)}
    proto = PeerProtocol(client, uuid.uuid4().hex[:12], rounds=args.rounds)
    static = proto.put("static", {"compute_s": args.compute_ms / 1e3, "cv": args.cv})
    rows = []
    for seg in range(args.segments + 1):
        first = seg * args.rounds
        s0, w0 = client.run_on_scheduler(time.process_time), worker_cpu(client)
        d0, t0 = time.process_time(), time.perf_counter()
        out = proto.segment(
            peer_task, never_finished, first, [0] * n, list(range(n)),
            static=static, shared=(params, opt_state, 0, first),
        )  # fmt: skip
        wall = time.perf_counter() - t0
        d1 = time.process_time()
        s1, w1 = client.run_on_scheduler(time.process_time), worker_cpu(client)
        if seg == 0:
            continue  # warm-up
        slowest = sum(
            max(sleep_for(s, first + i, args.compute_ms / 1e3, args.cv) for s in range(n))
            for i in range(len(out.rounds))
        )
        messages = sum(r["messages"] for r in proto.last)
        rows.append((wall, wall - slowest, d1 - d0, s1 - s0, w1 - w0, messages, out.attempts))
    med = [statistics.median(c) for c in zip(*rows, strict=True)]
    rounds = args.rounds
    return {
        "n": n,
        "rounds": rounds,
        "state_mb": state_floats * 8 / 1e6,
        "segment_wall_s": med[0],
        "overhead_per_round_s": med[1] / rounds,
        "driver_cpu_per_segment_s": med[2],
        "scheduler_cpu_per_segment_s": med[3],
        "worker_cpu_per_message_s": med[4] / max(med[5], 1),
        "messages_per_round": med[5] / rounds,
        "attempts": max(r[6] for r in rows),
    }


def measure(args) -> dict:
    cluster = Cluster(args.processes, args.threads)
    from distributed import Client

    client = Client(scheduler_file=cluster.file, timeout=60)
    try:
        client.wait_for_workers(args.processes, timeout=120)
        cases = []
        for n in [int(x) for x in args.shards.split(",")]:
            c = measure_case(client, n, args, args.state_floats)
            cases.append(c)
            print(json.dumps(c), flush=True)
        big = None
        if args.state_mb:
            big = measure_case(client, args.state_n, args, int(args.state_mb * 125_000))
            print(json.dumps(big), flush=True)
    finally:
        client.close()
        try:
            cluster.close()
        except subprocess.TimeoutExpired:  # a worker slow to stop: ours, stop it
            for proc in cluster.procs:
                proc.kill()
    return summarize(cases, big, args.rounds)


def summarize(cases: list[dict], big: dict | None, rounds: int) -> dict:
    """The fitted costs of the measured cases (also from a log of their JSON lines)."""
    a, h = fit([(math.log2(c["n"]), c["overhead_per_round_s"]) for c in cases])
    serial = [
        (c["n"], c["driver_cpu_per_segment_s"] + c["scheduler_cpu_per_segment_s"]) for c in cases
    ]
    seg_a, seg_b = fit(serial)
    return {
        "cases": cases,
        "state_case": big,
        "a_s": a,
        "h_s_per_level": h,
        "serial_cpu_per_task_per_segment_s": seg_b,
        "segment_fixed_s": seg_a,
        "rounds_per_segment": rounds,
    }


def message_costs(cost: dict) -> tuple[float, float]:
    """Worker CPU per message (median over N) and per MB of state per message: the robust
    figures (the wall overhead per round is inflated by 2 cores running every worker)."""
    m = statistics.median(c["worker_cpu_per_message_s"] for c in cost["cases"])
    big = cost.get("state_case")
    per_mb = 0.0
    if big:
        small = min(cost["cases"], key=lambda c: abs(c["n"] - big["n"]))
        extra = big["worker_cpu_per_message_s"] - small["worker_cpu_per_message_s"]
        per_mb = max(extra, 0.0) / (big["state_mb"] - small["state_mb"])
    return m, per_mb


def project(cost: dict, n: int, sync_every: int, args, rounds: int) -> tuple[float, float]:
    """Efficiency and minutes per epoch: the critical path of a round is 2 log2 N messages."""
    compute = sync_every * args.batch_size / args.rate
    hops = 2 * math.log2(n) if n > 1 else 0.0
    m, per_mb = message_costs(cost)
    round_s = (
        compute * (1 + args.cv * expected_max_normal(n))
        + hops * (m + per_mb * args.project_state_mb)
        + (cost["segment_fixed_s"] + cost["serial_cpu_per_task_per_segment_s"] * n) / rounds
    )
    efficiency = compute / round_s
    rows = args.data_tb * 1e12 / (4 * (args.project_features + 1))
    return efficiency, rows / (n * args.rate) / efficiency / 60


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", default="4,8,16,32,64")
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--threads", type=int, default=4, help="per worker (tasks secede anyway)")
    ap.add_argument("--rounds", type=int, default=20, help="rounds per segment")
    ap.add_argument("--segments", type=int, default=3, help="measured, after one warm-up")
    ap.add_argument("--compute-ms", type=float, default=20.0)
    ap.add_argument("--cv", type=float, default=0.12)
    ap.add_argument("--state-floats", type=int, default=66, help="weights + optimiser state")
    ap.add_argument("--state-mb", type=float, default=0.0, help="also a case of this state")
    ap.add_argument("--state-n", type=int, default=8)
    ap.add_argument("--json", help="write the measured costs here")
    ap.add_argument("--costs", help="project from these costs (no measuring)")
    ap.add_argument("--cases-log", help="project from the cases' JSON lines a run printed")
    ap.add_argument("--project-n", default="8,32,128,512")
    ap.add_argument("--project-k", default="64,256,1024,4096")
    ap.add_argument("--project-rounds", type=int, default=64, help="rounds per segment")
    ap.add_argument("--project-state-mb", type=float, default=0.000264)
    ap.add_argument("--project-features", type=int, default=32)
    ap.add_argument("--data-tb", type=float, default=1.0)
    ap.add_argument("--rate", type=float, default=1e7, help="rows/s per worker")
    ap.add_argument("--batch-size", type=int, default=1024)
    args = ap.parse_args(argv)
    if args.costs:
        cost = json.loads(Path(args.costs).read_text())
    elif args.cases_log:
        lines = Path(args.cases_log).read_text().splitlines()
        found = [json.loads(x) for x in lines if x.startswith('{"n"')]
        big = [c for c in found if c["state_mb"] > found[0]["state_mb"]]
        small = [c for c in found if c["state_mb"] == found[0]["state_mb"]]
        cost = summarize(small, big[0] if big else None, small[0]["rounds"])
    else:
        cost = measure(args)
        if args.json:
            Path(args.json).write_text(json.dumps(cost, indent=1))
    m, per_mb = message_costs(cost)
    print(
        f"\npeer: wall overhead per round {cost['a_s'] * 1e3:.2f} ms + "
        f"{cost['h_s_per_level'] * 1e3:.2f} ms x log2 N (2 cores: contention); worker CPU per "
        f"message {m * 1e3:.2f} ms + {per_mb * 1e3:.2f} ms per MB; scheduler + driver CPU per "
        f"task per segment {cost['serial_cpu_per_task_per_segment_s'] * 1e3:.2f} ms "
        f"(+{cost['segment_fixed_s'] * 1e3:.1f} ms per segment)"
    )
    ks = [int(k) for k in args.project_k.split(",")]
    print("| N | " + " | ".join(f"K = {k}" for k in ks) + " |")
    print("|---|" + "---|" * len(ks))
    for n in [int(x) for x in args.project_n.split(",")]:
        cells = []
        for k in ks:
            eff, minutes = project(cost, n, k, args, args.project_rounds)
            cells.append(f"{eff:.0%}, {minutes:.1f} min")
        print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
