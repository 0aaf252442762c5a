"""Distributed throughput and per-round overhead, measured in one run.

Trains one epoch of the benchmark dataset (``tools/bench.py`` makes it; or any Parquet files
with a ``y`` column) with the single-process trainer (unshuffled and shuffled) and with
``--cluster local:W`` for W = 1 and 2 workers at several ``--sync-every`` K, each case
repeated and interleaved; reports rows/s, the ratio to the single-process trainer, and the
per-round overhead (round wall time minus the slowest shard's compute time) as a share of
the round. Usage::

    python tools/dask_bench.py --data bench-data/r2000000-f32-g131072-n8-s0/parquet \\
        --repeat 3 --sync-every 16,64,256
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import time

import streamgd
from streamgd.training.callbacks import Callback


class Rounds(Callback):
    def __init__(self) -> None:
        self.rounds: list[dict] = []

    def on_round(self, state, timing) -> None:
        self.rounds.append(timing)


def run_case(paths, batch_size, cluster=None, sync_every=None, shuffle=True):
    rounds = Rounds()
    kw = {"cluster": cluster, "sync_every": sync_every} if cluster else {}
    start = time.perf_counter()
    model = streamgd.fit(
        paths,
        target="y",
        epochs=1,
        batch_size=batch_size,
        shuffle=shuffle,
        callbacks=[rounds],
        **kw,
    )
    seconds = time.perf_counter() - start
    wall = sum(r["wall_s"] for r in rounds.rounds)
    over = sum(r["overhead_s"] for r in rounds.rounds)
    return {
        "rows_per_s": model.summary["rows_trained"] / seconds,
        "rounds": len(rounds.rounds),
        "overhead_share": over / wall if wall else None,
        "round_s": wall / len(rounds.rounds) if rounds.rounds else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="directory of Parquet files")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--sync-every", default="16,64,256")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    paths = sorted(glob.glob(f"{args.data}/*.parquet"))
    from distributed import LocalCluster

    # clusters are started once, beforehand: a deployment's cluster is already running
    clusters = {
        w: LocalCluster(
            n_workers=w,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
        for w in map(int, args.workers.split(","))
    }
    cases = {"single-seq": {"shuffle": False}, "single-shuf": {}}
    for w, cluster in clusters.items():
        for k in map(int, args.sync_every.split(",")):
            cases[f"dask-{w}w-K{k}"] = {"cluster": cluster.scheduler_address, "sync_every": k}
    results: dict[str, list[dict]] = {name: [] for name in cases}
    for _ in range(args.repeat):
        for name, kw in cases.items():
            results[name].append(run_case(paths, args.batch_size, **kw))
            print(name, results[name][-1], flush=True)
    base = statistics.median(r["rows_per_s"] for r in results["single-shuf"])
    print(
        "\n| case | rows/s (median) | ratio to single-process shuffled | rounds | overhead share |"
    )
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        rate = statistics.median(r["rows_per_s"] for r in runs)
        shares = [r["overhead_share"] for r in runs if r["overhead_share"] is not None]
        share = f"{statistics.median(shares):.1%}" if shares else ""
        print(
            f"| {name} | {rate / 1e6:.2f} M | {rate / base:.2f} | {runs[0]['rounds']} | {share} |"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    for cluster in clusters.values():
        cluster.close()


if __name__ == "__main__":
    main()
