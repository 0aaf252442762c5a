"""The fixed cost of a ``--cluster`` round, measured: a local Dask cluster of N worker processes
(one thread each) on 127.0.0.1, a small dataset (so that compute is small and the round's
overhead shows), and the round timings streamgd reports (``on_round``: wall time, and the
slowest shard's compute time; overhead = wall - slowest compute).

Usage::

    python tools/dask_rounds.py --workers 1,2,4,8 --rounds 60
    python tools/dask_rounds.py --src /path/to/other/checkout ...   # the same for another tree

``--compare DIR`` runs every case for this tree and for the checkout at DIR in turn (ABAB...),
so both see the same machine load, and prints the ratio of their median overheads. A fitted
line o(N) = a + b N (least squares over the medians) is printed for each tree, for three
measures: the overhead inside a round (wall - slowest compute), the same plus the driver's gap
between rounds, and the whole period between rounds. Compare trees by the period when they
may time different work inside their tasks (the tree of before issue 19 parsed and hashed the
settings in every task, which counts as "compute" there).

The machines these run on are shared and noisy (and may have fewer cores than N: say so): read
the ratios and the slopes, not the absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent.parent


def make_data(directory: Path, rows: int, features: int, groups: int) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    y = (x @ rng.normal(size=features) + 0.1 * rng.normal(size=rows)).astype(np.float32)
    table = pa.table({**{f"x{j}": x[:, j] for j in range(features)}, "y": y})
    path = directory / "d.parquet"
    pq.write_table(table, path, row_group_size=max(rows // groups, 1))
    return [str(path)]


def worker(args: argparse.Namespace) -> None:
    """One case in this process: start the cluster, fit, print the round timings as JSON."""
    if args.src:
        sys.path.insert(0, args.src)
    from distributed import Client, LocalCluster

    import streamgd
    from streamgd.training.callbacks import Callback

    rounds: list[dict] = []

    class Rounds(Callback):
        def on_round(self, state, timing):
            rounds.append({**timing, "at": time.perf_counter()})

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_data(Path(tmp), args.rows, args.features, groups=2 * args.n)
        cluster = LocalCluster(
            n_workers=args.n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
        )
        try:
            with Client(cluster):
                pass  # workers are up
            t0 = time.perf_counter()
            streamgd.fit(
                paths,
                target="y",
                epochs=args.epochs,
                batch_size=args.batch_size,
                sync_every=args.sync_every,
                shards=args.n,
                cluster=cluster.scheduler_address,
                callbacks=[Rounds()],
                quiet=True,
            )
            wall = time.perf_counter() - t0
        finally:
            cluster.close()
    skip = min(3, len(rounds) // 4)  # the first rounds warm the workers' caches
    kept = rounds[skip:]
    # the period between round events, minus the slowest task's compute: the round's overhead
    # plus the driver's own gap between rounds (averaging, callbacks, the next submit)
    gaps = [b["at"] - a["at"] - b["compute_max_s"] for a, b in zip(kept, kept[1:], strict=False)]
    print(
        json.dumps(
            {
                "n": args.n,
                "rounds": len(kept),
                "overhead_s": statistics.median(r["overhead_s"] for r in kept),
                "period_overhead_s": statistics.median(gaps),
                # the whole period: the trees may split the same work differently between
                # "compute" (timed inside the task) and overhead
                "period_s": statistics.median(
                    b["at"] - a["at"] for a, b in zip(kept, kept[1:], strict=False)
                ),
                "wall_s": statistics.median(r["wall_s"] for r in kept),
                "compute_max_s": statistics.median(r["compute_max_s"] for r in kept),
                "fit_s": wall,
            }
        )
    )


def run_case(src: str | None, n: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--n", str(n)]
    for name in ("rows", "features", "epochs", "batch_size", "sync_every"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if src:
        cmd += ["--src", src]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"case n={n} src={src or HERE} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def fit_line(points: list[tuple[int, float]]) -> tuple[float, float]:
    n = np.array([p[0] for p in points], dtype=float)
    o = np.array([p[1] for p in points])
    b, a = np.polyfit(n, o, 1) if len(points) > 1 else (0.0, float(o[0]))
    return float(a), float(b)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2,4,8", help="worker counts, comma-separated")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--sync-every", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each case (medians kept)")
    ap.add_argument("--src", help="import streamgd from this checkout instead")
    ap.add_argument("--compare", help="also run every case with the checkout at this path")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return
    trees = {"this": args.src or str(HERE)}
    if args.compare:
        trees["other"] = args.compare
    results: dict[str, dict[int, list[dict]]] = {t: {} for t in trees}
    counts = [int(n) for n in args.workers.split(",")]
    for _ in range(args.repeat):
        for n in counts:
            for tree, src in trees.items():  # in turn, so both see the same load
                r = run_case(src, n, args)
                results[tree].setdefault(n, []).append(r)
                print(
                    f"{tree:5s} n={n:3d}: overhead {r['overhead_s'] * 1e3:7.1f} ms/round "
                    f"({r['period_overhead_s'] * 1e3:7.1f} with the driver's gap), "
                    f"wall {r['wall_s'] * 1e3:7.1f} ms, compute {r['compute_max_s'] * 1e3:6.1f} "
                    f"ms ({r['rounds']} rounds)",
                    flush=True,
                )
    for field in ("overhead_s", "period_overhead_s", "period_s"):
        print(f"\n{field}: medians over runs")
        print("| workers | " + " | ".join(f"{t} ms" for t in trees) + " | ratio |")
        print("|---|" + "---|" * len(trees) + "---|")
        med = {t: {n: statistics.median(r[field] for r in rs) for n, rs in results[t].items()}
               for t in trees}  # fmt: skip
        for n in counts:
            cells = [f"{med[t][n] * 1e3:.1f}" for t in trees]
            ratio = f"{med['this'][n] / med['other'][n]:.2f}" if "other" in med else ""
            print(f"| {n} | " + " | ".join(cells) + f" | {ratio} |")
        for t in trees:
            a, b = fit_line(sorted(med[t].items()))
            print(f"{t}: o(N) = {a * 1e3:.1f} ms + {b * 1e3:.2f} ms x N ({field})")


if __name__ == "__main__":
    main()
