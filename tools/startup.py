"""Start-up figures of the console command (BENCHMARKS.md, "Start-up"): for each command, the
median wall and user+system CPU time of several runs of the console script, the median
``-X importtime`` total (of ``python -m streamgd``), which heavy libraries were imported, and
the peak RSS of interpreters after some imports and after a default ``streamgd fit`` on a
small Parquet file.

    python tools/startup.py [--runs 11]
    python tools/startup.py --runs 3 --fit /work/bench-data/*/parquet/*.parquet
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = (["--version"], ["--help"], ["fit", "--help"])
HEAVY = ("numpy", "pyarrow", "pyarrow.parquet", "pandas", "tqdm", "dask", "matplotlib", "fsspec")
# A default fit on a small Parquet file, in process: its peak RSS is the interpreter with
# everything a fit imports (data, model and buffers are a few hundred KB), and which of the
# heavy libraries it imported.
FIT = """
import sys
from streamgd.cli.main import run
assert run(["fit", {path!r}, "--epochs", "1", "-q", "-o", {path!r} + ".npz"]) == 0
print(",".join(h for h in HEAVY if h in sys.modules))
"""


def small_parquet(directory: str) -> str:
    """5,000 rows of 8 float32 features and a target, written here (not by the probe)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.random.default_rng(0).normal(size=(5000, 8)).astype("float32")
    names = [f"x{i}" for i in range(8)]
    path = os.path.join(directory, "small.parquet")
    pq.write_table(pa.Table.from_arrays([*x.T, x.sum(1)], [*names, "y"]), path)
    return path


def timed(args: list[str]) -> tuple[float, float]:
    """(wall seconds, user+system CPU seconds) of one run of ``args``."""
    before = os.times()
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu


def import_report(args: list[str]) -> tuple[float, list[str]]:
    """The ``-X importtime`` total (seconds, the sum of the top-level rows' cumulative times)
    and which heavy modules were imported."""
    err = subprocess.run(
        [sys.executable, "-X", "importtime", *args], capture_output=True, text=True
    ).stderr
    total, names = 0, set()
    for line in err.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            names.add(m.group(4))
            if len(m.group(3)) == 1:  # a top-level import
                total += int(m.group(2))
    return total / 1e6, [h for h in HEAVY if h in names]


def rss_after(code: str) -> tuple[float, str]:
    """The peak resident set (MiB) of an interpreter that ran ``code``, and the line its code
    printed before."""
    # VmHWM, not ru_maxrss: that one keeps the forking parent's peak across exec
    probe = f"HEAVY = {HEAVY!r}\n{code}\n"
    probe += "print(next(ln.split()[1] for ln in open('/proc/self/status') if 'VmHWM' in ln))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    return int(lines[-1]) / 1024, (lines[-2] if len(lines) > 1 else "")


def phases(paths: list[str], runs: int) -> None:
    """Time to the first step of ``streamgd fit PATHS --epochs 2`` (defaults otherwise), from
    its JSON log: process start to the ``start`` event (imports, settings), the statistics
    pass (its ``seconds``), and the epochs; the statistics pass as a fraction of an epoch."""
    import datetime
    import json

    script = os.path.join(os.path.dirname(sys.executable), "streamgd")
    for _ in range(runs):
        t0 = time.time()
        args = [script, "fit", *paths, "--epochs", "2", "--log-format", "json"]
        err = subprocess.run(args, capture_output=True, text=True, check=True).stderr
        wall = time.time() - t0
        events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]

        def at(event: dict, t0: float = t0) -> float:
            return datetime.datetime.fromisoformat(event["time"]).timestamp() - t0

        start = next(e for e in events if e["event"] == "start")
        stats = [e for e in events if e["event"] == "statistics"][-1]
        epochs = [e["seconds"] for e in events if e["event"] == "epoch"]
        print(
            f"start event {at(start):.2f} s, statistics pass {stats['seconds']:.2f} s "
            f"({stats['rows']} rows) done at {at(stats):.2f} s, epochs "
            f"{', '.join(f'{s:.2f}' for s in epochs)} s, exit {wall:.2f} s; statistics / "
            f"epoch: {stats['seconds'] / statistics.median(epochs):.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument(
        "--fit", nargs="+", metavar="PATH", help="time the phases of a fit on these files"
    )
    ns = parser.parse_args()
    runs = ns.runs
    if ns.fit:
        phases(ns.fit, runs)
        return
    script = os.path.join(os.path.dirname(sys.executable), "streamgd")  # the console script
    exe = [script] if os.path.exists(script) else [sys.executable, "-m", "streamgd"]
    for args in COMMANDS:
        times = [timed([*exe, *args]) for _ in range(runs)]
        wall = statistics.median(t[0] for t in times)
        cpu = statistics.median(t[1] for t in times)
        reports = [import_report(["-m", "streamgd", *args]) for _ in range(5)]
        total, heavy = statistics.median(r[0] for r in reports), reports[0][1]
        print(
            f"streamgd {' '.join(args):<12} wall {wall:.3f} s  cpu {cpu:.3f} s  "
            f"importtime {total:.3f} s  heavy imports: {', '.join(heavy) or 'none'}"
        )
    tmp = tempfile.mkdtemp()
    for label, code in (
        ("a bare interpreter", "pass"),
        ("import streamgd.cli.main", "import streamgd.cli.main"),
        ("import numpy, pyarrow.parquet", "import numpy, pyarrow.parquet"),
        ("a default fit on a small Parquet file", FIT.format(path=small_parquet(tmp))),
    ):
        rss, heavy = rss_after(code)
        print(f"peak RSS after {label}: {rss:.0f} MiB" + (f" (imported {heavy})" if heavy else ""))


if __name__ == "__main__":
    main()
