"""Start-up figures of the console command (BENCHMARKS.md, "Start-up"): for each command, the
median wall and user+system CPU time of several runs, the ``-X importtime`` total, whether
numpy/pyarrow/pandas were imported, and the interpreter's RSS after the imports a default
``streamgd fit`` on Parquet files needs.

    python tools/startup.py [--runs 11]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

COMMANDS = (["--version"], ["--help"], ["fit", "--help"])
HEAVY = ("numpy", "pyarrow", "pyarrow.parquet", "pandas", "tqdm", "dask", "matplotlib", "fsspec")
# What a default fit on Parquet files imports before its first batch (the CLI, then the
# training entry, the Parquet reader and the progress bar's modules).
FIT_IMPORTS = (
    "import streamgd.cli.main, streamgd.training.api, streamgd.training.loop, "
    "streamgd.sources.parquet, pyarrow.parquet"
)


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


def rss_after(code: str) -> float:
    """The resident set (MiB) of an interpreter that ran ``code``."""
    probe = code + "\nimport resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=11)
    runs = parser.parse_args().runs
    exe = [sys.executable, "-m", "streamgd"]
    for args in COMMANDS:
        times = [timed([*exe, *args]) for _ in range(runs)]
        wall = statistics.median(t[0] for t in times)
        cpu = statistics.median(t[1] for t in times)
        total, heavy = import_report(["-m", "streamgd", *args])
        print(
            f"streamgd {' '.join(args):<12} wall {wall:.3f} s  cpu {cpu:.3f} s  "
            f"importtime {total:.3f} s  heavy imports: {', '.join(heavy) or 'none'}"
        )
    bare = rss_after("pass")
    print(f"RSS: bare interpreter {bare:.0f} MiB")
    for label, code in (
        ("import streamgd.cli.main", "import streamgd.cli.main"),
        ("a default fit's imports", FIT_IMPORTS),
        ("numpy + pyarrow.parquet", "import numpy, pyarrow.parquet"),
    ):
        print(f"RSS after {label}: {rss_after(code):.0f} MiB")


if __name__ == "__main__":
    main()
