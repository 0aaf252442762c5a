"""A simulated month of a scheduled ``streamgd fit --continual`` job, against retraining from
scratch every day, measured in the same run.

A seeded regression dataset arrives as 30 daily partitions (``events/date=2026-11-DD/
part-0.parquet``); halfway (from day 16) the relationship drifts: every coefficient moves by
about a fifth of its size and the intercept shifts. Each day the new partition is written, then

- **continual**: ``streamgd fit "events/date=*/*.parquet" --continual -o continual.npz --json``
  (one CLI process, as cron would run it) trains on that day's file only, and reports the
  test-then-train score of yesterday's model on today's rows;
- **scratch**: ``streamgd fit "events/date=*/*.parquet" -o scratch.npz`` retrains on every day
  so far; yesterday's scratch model is scored on today's rows in this process (not timed).

Both use the same settings (``--epochs``, batch size, seed). The table gives, per day, the
rows each trained, both test-then-train MSEs and each run's wall time (process start to exit);
the totals give the time of the month relative to daily retraining. The noise is N(0, 1), so
an MSE near 1.0 is as good as a model can do.

Usage: ``python tools/continual_month.py [--rows 20000] [--days 30] [--epochs 2]
[--workdir DIR] [--markdown]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FEATURES = 5


def write_day(root: str, day: int, rows: int, days: int) -> str:
    """Day ``day`` (1-based)'s partition: rows of a linear model whose coefficients drift from
    day ``days // 2 + 1`` on."""
    rng = np.random.default_rng([2026, 11, day])
    coef = np.random.default_rng(7).normal(size=FEATURES) * np.array([1, 2, 5, 0.5, 10])
    intercept = 3.0
    if day > days // 2:
        shift = np.random.default_rng(8).normal(size=FEATURES)
        coef = coef + 0.2 * np.abs(coef) * shift
        intercept = 4.0
    scale = np.array([1.0, 0.5, 0.2, 2.0, 0.1])
    x = rng.normal(size=(rows, FEATURES)) * scale + np.arange(FEATURES)
    y = x @ coef + intercept + rng.normal(size=rows)
    table = pa.table({**{f"x{i}": x[:, i] for i in range(FEATURES)}, "y": y})
    directory = os.path.join(root, "events", f"date=2026-11-{day:02d}")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "part-0.parquet")
    pq.write_table(table, path, row_group_size=5000)
    return path


def fit(args: list[str]) -> tuple[float, dict]:
    """Run ``streamgd fit ARGS --json`` in its own process: (seconds, its JSON summary)."""
    command = [sys.executable, "-m", "streamgd", "fit", *args, "--json", "-q"]
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"exit {done.returncode}: {' '.join(command)}\n{done.stderr}")
    return seconds, json.loads(done.stdout)


def month(workdir: str, rows: int, days: int, epochs: int) -> list[dict]:
    import streamgd

    common = [
        os.path.join(workdir, "events", "date=*", "*.parquet"),
        "--target",
        "y",
        "--features",
        ",".join(f"x{i}" for i in range(FEATURES)),
        "--epochs",
        str(epochs),
        "--batch-size",
        "256",
        "--seed",
        "1",
    ]
    continual = os.path.join(workdir, "continual.npz")
    scratch = os.path.join(workdir, "scratch.npz")
    out = []
    for day in range(1, days + 1):
        today = write_day(workdir, day, rows, days)
        before = streamgd.evaluate(scratch, today)["mse"] if day > 1 else None
        t_cont, summary = fit([*common, "--continual", "-o", continual])
        t_scratch, _ = fit([*common, "-o", scratch, "--checkpoint-dir", scratch + ".ckpt"])
        report = summary["continual"]
        out.append(
            {
                "day": day,
                "new_files": report["new_files"],
                "rows": report["rows"],
                "rows_scratch": rows * day,
                "mse_before": (report["pre_score"] or {}).get("mse"),
                "mse_before_scratch": before,
                "train_loss": report["train_loss"],
                "seconds": t_cont,
                "seconds_scratch": t_scratch,
            }
        )
        # the same job again: nothing new, nothing done
        if day == days:
            t_none, again = fit([*common, "--continual", "-o", continual])
            out[-1]["rerun_new_files"] = again["continual"]["new_files"]
            out[-1]["rerun_seconds"] = t_none
    return out


def table(rows: list[dict], markdown: bool) -> str:
    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    head = [
        "day",
        "rows trained (continual)",
        "rows trained (scratch)",
        "MSE before training (continual)",
        "MSE before training (scratch)",
        "s (continual)",
        "s (scratch)",
    ]
    lines = []
    sep = " | " if markdown else "  "
    if markdown:
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    else:
        lines.append(sep.join(head))
    for r in rows:
        cells = [
            str(r["day"]),
            str(r["rows"]),
            str(r["rows_scratch"]),
            num(r["mse_before"], ".4f"),
            num(r["mse_before_scratch"], ".4f"),
            num(r["seconds"], ".2f"),
            num(r["seconds_scratch"], ".2f"),
        ]
        lines.append(("| " + " | ".join(cells) + " |") if markdown else sep.join(cells))
    cont = sum(r["seconds"] for r in rows)
    scr = sum(r["seconds_scratch"] for r in rows)
    lines.append("")
    lines.append(
        f"rows trained: continual {sum(r['rows'] for r in rows)} per pass in all, scratch "
        f"{sum(r['rows_scratch'] for r in rows)}"
    )
    lines.append(
        f"wall time: continual {cont:.1f} s, scratch {scr:.1f} s: continual takes "
        f"{cont / scr:.2f} of retraining from scratch every day"
    )
    last = rows[-1]
    if "rerun_new_files" in last:
        lines.append(
            f"rerun on day {last['day']}: {last['rerun_new_files']} new files, nothing trained, "
            f"{last['rerun_seconds']:.2f} s"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows per daily partition")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workdir", help="keep the data and models here (default: temporary)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
        rows = month(args.workdir, args.rows, args.days, args.epochs)
    else:
        with tempfile.TemporaryDirectory() as workdir:
            rows = month(workdir, args.rows, args.days, args.epochs)
    print(table(rows, args.markdown))


if __name__ == "__main__":
    main()
