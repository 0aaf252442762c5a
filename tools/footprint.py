"""What a fit holds in memory: peak RSS of ``streamgd fit`` and its breakdown, against the
estimate of :mod:`streamgd.memory_plan`.

Usage::

    python tools/footprint.py --make               # the benchmark's data in three layouts
    python tools/footprint.py                      # default fits on each layout, a table
    python tools/footprint.py --limits 128MB,160MB,200MB   # --memory-limit fits as well
    python tools/footprint.py --json out.json --data /tmp/footprint-data

Method: each case runs ``streamgd.training.train`` in a fresh interpreter (``--worker``), with
a thread sampling ``/proc/self/status`` every 2 ms: ``VmRSS`` split into ``RssAnon`` (the
heap: numpy matrices, Arrow's pool, Python) and ``RssFile`` (shared libraries and the mapped
pages of the Parquet files being read), and Arrow's ``total_allocated_bytes()``. The case
reports the RSS after the imports a fit needs (numpy, pyarrow.parquet, streamgd's training
path: the floor), ``VmHWM`` at the end (the peak), the split at the sample of the highest
RSS, the highest Arrow allocation seen and the pool's ``max_memory()``, and the plan's
estimate (``streamgd.memory_plan``) for the same files and settings.

Data: the generator of ``tools/bench.py`` (32 float32 features and a float32 target,
snappy), written once under ``--data`` in the layouts of :data:`LAYOUTS`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(1, str(HERE))

# name: (rows, files, rows per row group)
LAYOUTS = {
    "8x131k": (4_000_000, 8, 131_072),
    "1x2M": (2_000_000, 1, 2_000_000),
    "1x8k": (2_000_000, 1, 8_192),
    "500x2k": (1_000_000, 500, 2_000),
}
MIB = 1 << 20


def layout_dir(root: Path, name: str) -> Path:
    import bench

    rows, files, group = LAYOUTS[name]
    params = {"rows": rows, "features": 32, "row_group": group, "files": files, "seed": 0}
    return bench.dataset_dir(root, params), params


def make(root: Path, names: list[str]) -> None:
    import bench

    for name in names:
        directory, params = layout_dir(root, name)
        if (directory / "dataset.json").is_file():
            continue
        print(f"writing {name} in {directory} ...", file=sys.stderr)
        meta = bench.generate(directory, params)
        bench.write_sidecar(directory, meta)


def status() -> dict[str, int]:
    """The memory lines of /proc/self/status, in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(value.split()[0]) * 1024
    return out


class Sampler(threading.Thread):
    """Samples the process's RSS split and Arrow's allocation every ``interval`` seconds;
    keeps the sample of the highest RSS and the highest of each."""

    def __init__(self, interval: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.interval, self.stop = interval, threading.Event()
        self.at_peak: dict[str, int] = {}
        self.highest: dict[str, int] = {}
        self.phase = "start"  # the phase's peak: start (open, statistics pass), training
        self.phase_peak: dict[str, int] = {}

    def run(self) -> None:
        import pyarrow as pa

        while not self.stop.is_set():
            s = status()
            s["arrow"] = pa.total_allocated_bytes()
            if s["VmRSS"] > self.at_peak.get("VmRSS", -1):
                self.at_peak = {**s, "phase": self.phase}
            self.phase_peak[self.phase] = max(self.phase_peak.get(self.phase, 0), s["VmRSS"])
            for key, value in s.items():
                self.highest[key] = max(self.highest.get(key, 0), value)
            time.sleep(self.interval)


def worker(files: list[str], settings: dict) -> dict:
    """One fit in this process, measured."""
    import numpy  # noqa: F401
    import pyarrow as pa
    import pyarrow.parquet  # noqa: F401

    import streamgd.training  # noqa: F401
    from streamgd.config import FitConfig, RunOptions, split_settings
    from streamgd.training import train
    from streamgd.training.api import _train  # noqa: F401  (the training path's imports)
    from streamgd.training.callbacks import Callback

    floor = status()["VmRSS"]
    sampler = Sampler()

    class Phase(Callback):
        def on_train_begin(self, state, dataset) -> None:
            sampler.phase = "training"

    sampler.start()
    config_settings, run_settings = split_settings({"target": "y", **settings})
    t0 = time.perf_counter()
    result = train(
        files, FitConfig(**config_settings), RunOptions(**run_settings), callbacks=[Phase()]
    )
    seconds = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    end = status()
    memory = result.memory or {}
    return {
        "settings": settings,
        "seconds": round(seconds, 2),
        "floor_mib": floor / MIB,
        "peak_mib": end["VmHWM"] / MIB,
        "at_peak_mib": {k: v / MIB for k, v in sampler.at_peak.items() if k != "phase"},
        "peak_phase": sampler.at_peak.get("phase"),
        "phase_peak_mib": {k: v / MIB for k, v in sampler.phase_peak.items()},
        "highest_mib": {k: v / MIB for k, v in sampler.highest.items()},
        "arrow_pool_max_mib": pa.default_memory_pool().max_memory() / MIB,
        "arrow_backend": pa.default_memory_pool().backend_name,
        "plan": memory,
    }


def run_case(files: list[str], settings: dict) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps({"files": files, "settings": settings})]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    if settings.get("memory_limit"):  # as `streamgd fit --memory-limit` sets it (cli/fit.py)
        env.setdefault("MIMALLOC_PURGE_DELAY", "0")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or [""])[-1]
        if "UsageError" in last:  # a limit refused: the message is the result
            return {"refused": last.split(": ", 1)[-1], "floor_mib": 0, "peak_mib": 0}
        raise SystemExit(f"worker failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cases(limits: list[str]) -> list[tuple[str, dict]]:
    base = {"epochs": 1}
    out = [
        ("default (shuffled)", base),
        ("no shuffle", {**base, "shuffle": False}),
        ("buffer 0", {**base, "shuffle_buffer": 0}),
    ]
    out += [(f"--memory-limit {lim}", {**base, "memory_limit": lim}) for lim in limits]
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("/tmp/footprint-data"))
    p.add_argument("--make", action="store_true", help="write the data and exit")
    p.add_argument("--layouts", default=",".join(LAYOUTS), help="which layouts")
    p.add_argument("--limits", default="", help="--memory-limit values to run as well")
    p.add_argument("--only", default="", help="case names to run (comma-separated prefixes)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(worker(spec["files"], spec["settings"])))
        return
    names = [n for n in args.layouts.split(",") if n]
    make(args.data, names)
    if args.make:
        return
    limits = [s for s in args.limits.split(",") if s]
    results = []
    header = (
        "| layout | case | floor | peak | above floor | start / training peak "
        "| anon / file at peak | Arrow max | estimate |"
    )
    print(header)
    print("|" + "---|" * 9)
    for name in names:
        directory, _ = layout_dir(args.data, name)
        files = sorted(str(f) for f in (directory / "parquet").glob("*.parquet"))
        for label, settings in cases(limits):
            if args.only and not any(label.startswith(o) for o in args.only.split(",")):
                continue
            r = run_case(files, settings)
            r["layout"], r["case"] = name, label
            results.append(r)
            if "refused" in r:
                print(f"| {name} | {label} | refused: {r['refused']} |", flush=True)
                continue
            at, ph = r["at_peak_mib"], r["phase_peak_mib"]
            est = r["plan"].get("estimate_mb")
            est = None if est is None else est * 1e6 / MIB
            print(
                f"| {name} | {label} | {r['floor_mib']:.0f} | {r['peak_mib']:.0f} | "
                f"{r['peak_mib'] - r['floor_mib']:.0f} | "
                f"{ph.get('start', 0):.0f} / {ph.get('training', 0):.0f} | "
                f"{at.get('RssAnon', 0):.0f} / "
                f"{at.get('RssFile', 0):.0f} | {r['arrow_pool_max_mib']:.0f} | "
                f"{'' if est is None else f'{est:.0f}'} |",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
