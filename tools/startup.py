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
