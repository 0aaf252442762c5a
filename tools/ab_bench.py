"""Paired A/B runs of benchmark cases: two checkouts, the same case, one after the other.

Usage::

    python tools/ab_bench.py --a /tmp/base --b . --data bench-data/r4000000-f32-g131072-n8-s0 \\
        --cases epoch-mmap,epoch-shuf-1024,epoch-shuf-8192 --pairs 8

On a shared machine one run's rate moves by 2x with the neighbours' load; a ratio of two runs
made seconds apart moves much less. Each pair runs ``tools/bench.py --worker CASE`` of
checkout A and of checkout B (which one first alternates), each in a fresh process (so each
measures its own tree); the table gives, per case, the median over pairs of B's rate / A's
rate, of wall time and of CPU time (all threads), with the range. The dataset must exist
(``tools/bench.py`` makes it). Each checkout's ``tools/bench.py`` must know the case.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

MARK = "BENCH-RESULT "


def run(tree: Path, case: str, data: Path) -> dict:
    cmd = [
        sys.executable,
        str(tree / "tools" / "bench.py"),
        "--worker",
        case,
        "--dataset",
        str(data),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    raise SystemExit(f"{tree} {case}: {out.stderr.strip().splitlines()[-1:]}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--a", type=Path, required=True, help="checkout A (before)")
    p.add_argument("--b", type=Path, required=True, help="checkout B (after)")
    p.add_argument("--data", type=Path, required=True, help="a tools/bench.py dataset directory")
    p.add_argument("--cases", required=True)
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    results: dict[str, list[tuple[dict, dict]]] = {c: [] for c in args.cases.split(",")}
    for i in range(args.pairs):
        for case in results:
            first, second = (args.a, args.b) if i % 2 == 0 else (args.b, args.a)
            r1, r2 = run(first, case, args.data), run(second, case, args.data)
            a, b = (r1, r2) if first == args.a else (r2, r1)
            results[case].append((a, b))
            print(
                f"[{i + 1}/{args.pairs}] {case}: A {a['rows'] / a['seconds'] / 1e6:.2f} M/s, "
                f"B {b['rows'] / b['seconds'] / 1e6:.2f} M/s",
                file=sys.stderr,
                flush=True,
            )
    lines = [
        "| case | B/A rate (wall) [range] | B/A rows per CPU-s [range] | peak RSS MB A / B |",
        "|---|---|---|---|",
    ]
    for case, pairs in results.items():
        wall = [a["seconds"] / b["seconds"] * b["rows"] / a["rows"] for a, b in pairs]
        cpu = [a["cpu_seconds"] / b["cpu_seconds"] * b["rows"] / a["rows"] for a, b in pairs]
        rss = [statistics.median(x[k]["peak_rss_mb"] for x in pairs) for k in (0, 1)]
        lines.append(
            f"| {case} | {statistics.median(wall):.3f} [{min(wall):.3f}-{max(wall):.3f}] | "
            f"{statistics.median(cpu):.3f} [{min(cpu):.3f}-{max(cpu):.3f}] | "
            f"{rss[0]:.0f} / {rss[1]:.0f} |"
        )
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"a": str(args.a), "b": str(args.b), "runs": results}))


if __name__ == "__main__":
    main()
