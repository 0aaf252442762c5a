"""Checkpoint cost and resume start-up time, measured in one run.

Trains one epoch on a synthetic Parquet dataset (32 float32 features, snappy, 128k-row row
groups) with the default shuffle buffer, keeping a checkpoint at about 10% and about 90% of the
epoch. Then, interleaved and repeated:

- writes the checkpoint again (size on disk, write time including fsync and rename);
- resumes from each checkpoint and times from the call to the first trained step (the
  resume start-up: loading the checkpoint, restoring the buffer, decoding the current row
  group). The two should be about equal: nothing is replayed from the epoch's start.

Usage: ``python tools/resume_bench.py [--rows 2000000] [--repeat 5] [--data DIR]``. Figures
are medians; compare them with each other, not with another machine's.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shutil
import statistics
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamgd.config import FitConfig, RunOptions
from streamgd.training import train
from streamgd.training.callbacks import Callback
from streamgd.training.checkpoint import CheckpointManager, load_checkpoint

FEATURES = 32
ROW_GROUP = 131072


def make_data(directory: str, rows: int, files: int = 4) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    paths = sorted(glob.glob(os.path.join(directory, "*.parquet")))
    if paths and sum(pq.ParquetFile(p).metadata.num_rows for p in paths) == rows:
        return paths
    rng = np.random.default_rng(0)
    coef = rng.normal(size=FEATURES).astype(np.float32)
    names = [f"x{i}" for i in range(FEATURES)]
    schema = pa.schema([*(pa.field(n, pa.float32()) for n in names), pa.field("y", pa.float32())])
    per = rows // files
    for f in range(files):
        path = os.path.join(directory, f"part-{f}.parquet")
        with pq.ParquetWriter(path, schema, compression="snappy") as writer:
            for start in range(0, per, ROW_GROUP):
                m = min(ROW_GROUP, per - start)
                x = rng.normal(size=(m, FEATURES)).astype(np.float32)
                y = x @ coef + rng.normal(size=m).astype(np.float32)
                cols = {n: x[:, i] for i, n in enumerate(names)}
                writer.write_table(pa.table({**cols, "y": y}, schema=schema))
    return sorted(glob.glob(os.path.join(directory, "*.parquet")))


class FirstStep(Callback, Exception):
    """Stops the run at its first step, recording when that was."""

    def on_batch_end(self, state, rows, loss_sum):
        self.at = time.perf_counter()
        raise self


def resume_startup(paths: list[str], config: FitConfig, ckpt: str, scratch: str) -> float:
    directory = tempfile.mkdtemp(dir=scratch)
    shutil.copy(ckpt, directory)
    stop = FirstStep()
    start = time.perf_counter()
    with contextlib.suppress(FirstStep):
        train(paths, config, RunOptions(checkpoint_dir=directory, resume=True), callbacks=[stop])
    shutil.rmtree(directory)
    return stop.at - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--data", default="bench-data/resume")
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args()

    paths = make_data(args.data, args.rows)
    config = FitConfig(target="y", epochs=1, batch_size=args.batch_size)
    steps = -(-args.rows // args.batch_size)
    tenth = steps // 10
    marks = {"10%": tenth, "90%": 9 * tenth}
    scratch = tempfile.mkdtemp(prefix="streamgd-resume-bench-")
    full = os.path.join(scratch, "full")
    train(paths, config, RunOptions(checkpoint_dir=full, checkpoint_every=tenth, keep=100))
    ckpts = {name: os.path.join(full, f"ckpt-{step:012d}.npz") for name, step in marks.items()}
    state = load_checkpoint(ckpts["10%"])
    writer = CheckpointManager(os.path.join(scratch, "writes"), keep=1)
    os.makedirs(writer.directory)

    results: dict[str, list[float]] = {"write_s": [], "resume_10%_s": [], "resume_90%_s": []}
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        written = writer.save(state)
        results["write_s"].append(time.perf_counter() - t0)
        for name, path in ckpts.items():
            results[f"resume_{name}_s"].append(resume_startup(paths, config, path, scratch))
    medians = {k: statistics.median(v) for k, v in results.items()}
    report = {
        "rows": args.rows,
        "features": FEATURES,
        "batch_size": args.batch_size,
        "shuffle_buffer": config.shuffle_buffer,
        "checkpoint_bytes": os.path.getsize(written),
        "buffered_rows": state.buffered_rows,
        "medians": medians,
        "resume_90_over_10": medians["resume_90%_s"] / medians["resume_10%_s"],
        "all": results,
    }
    shutil.rmtree(scratch)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
