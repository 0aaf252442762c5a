"""Real fits with ``--round-protocol tasks`` and ``peer`` in turn: wall time and agreement.

A LocalCluster of 2 worker processes of one thread, 200,000 rows x 16 float32 features in 4
files, 4 shards, ``--sync-every 4``, batch 256, one epoch; the two protocols alternated, the
first run of each left out of the medians::

    python tools/dask_peer_fit.py --repeat 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "tests"))

from conftest import write_synthetic  # noqa: E402

from streamgd.config import FitConfig, RunOptions  # noqa: E402
from streamgd.training import train  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    import distributed

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=4)
    args = ap.parse_args(argv)
    d = write_synthetic(tempfile.mkdtemp(), rows=200_000, features=16, files=4, row_group_size=5000)
    local = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    options = RunOptions(cluster=local.scheduler_address)
    times: dict[str, list[float]] = {"tasks": [], "peer": []}
    weights = {}
    for _ in range(args.repeat):
        for protocol in times:
            config = FitConfig(
                target="y", features=tuple(d.features), epochs=1, sync_every=4,
                batch_size=256, shards=4, round_protocol=protocol,
            )  # fmt: skip
            t0 = time.perf_counter()
            result = train(d.paths, config, options)
            times[protocol].append(time.perf_counter() - t0)
            weights[protocol] = np.append(result.model.weights, result.model.intercept)
    local.close()
    for protocol, ts in times.items():
        runs = [round(t, 2) for t in ts]
        print(f"{protocol}: median {statistics.median(ts[1:]):.2f} s of {runs}")
    rel = np.max(np.abs(weights["peer"] - weights["tasks"]) / np.abs(weights["tasks"]))
    print(f"largest relative difference of the weights: {rel:.2e}")


if __name__ == "__main__":
    main()
