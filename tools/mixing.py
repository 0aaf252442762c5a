"""How well does streamgd's shuffle mix? Batches of the real stream against a full permutation.

Usage::

    python tools/mixing.py                         # 1M rows in 131,072-row groups, batch 1024
    python tools/mixing.py --rows 300000 --row-group 50000 --batch-size 1024
    python tools/mixing.py --streamgd /path/to/other/checkout     # measure another tree

Writes one Parquet file of ``--rows`` rows whose columns are the row's number, ``--width``
- 2 constant columns (so that a decoded row group is as large as one of the benchmark's
33 columns: the number of row groups read at once depends on it) and a copy of the row
number (the "target"), in row groups of ``--row-group`` rows (under ``--data``, reused),
streams one epoch of it through ``streamgd.batches.BatchStream`` with the fit's defaults
(shuffled, ``--shuffle-buffer`` 65536, runs of 16, float32, prefetch 1, seed 0), and
compares its batches with those of a full random permutation of the rows (numpy, seed 0):

- ``lag1``: the correlation between consecutive batches' mean row number (a full
  permutation: about 0; a stream that walks through the file in order: near 1);
- ``spread``: the mean standard deviation of the row numbers within a batch, divided by a
  full permutation's (1: a batch is spread over the file like a uniform sample; small: a
  batch comes from a narrow window of the file);
- ``groups``: the mean number of distinct row groups a batch draws from, against a full
  permutation's;
- ``ks``: the largest gap between the distribution of all batches' row numbers in each
  tenth of the epoch and the uniform one (a Kolmogorov-Smirnov distance, averaged over the
  tenths: 0 for a perfect sample; the stream's early batches should not favour the file's
  start).

One JSON line per measured stream goes to stdout as well as a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--row-group", type=int, default=131_072)
    p.add_argument("--width", type=int, default=33, help="columns, as decoded (default 33)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--shuffle-buffer", type=int, default=65536)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=Path("/tmp/streamgd-mixing"))
    p.add_argument("--streamgd", type=Path, default=REPO, help="checkout whose streamgd to use")
    return p.parse_args(argv)


def write_data(args) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    args.data.mkdir(parents=True, exist_ok=True)
    path = args.data / f"rows-{args.rows}-g{args.row_group}-w{args.width}.parquet"
    if not path.exists():
        ids = np.arange(args.rows, dtype=np.float32)
        pad = {f"c{j}": np.zeros(args.rows, np.float32) for j in range(args.width - 2)}
        table = pa.table({"row": ids, **pad, "y": ids})
        pq.write_table(table, path, row_group_size=args.row_group)
    return str(path)


def stream_batches(path: str, args) -> list[np.ndarray]:
    from streamgd.batches import BatchStream
    from streamgd.decode import Decoder
    from streamgd.sources import open_dataset

    def keep(m, path, first_row):
        return m, np.zeros(1, dtype=np.int64)

    dataset = open_dataset([path])
    columns = ("row", *(f"c{j}" for j in range(args.width - 2)), "y")
    decoder = Decoder(columns, keep, {}, None, np.float32)
    stream = BatchStream(
        dataset,
        decoder,
        epoch=0,
        seed=args.seed,
        batch_size=args.batch_size,
        shuffle=True,
        buffer_size=args.shuffle_buffer,
        prefetch=1,
        run=16,
    )
    return [b[:, 0].astype(np.float64) for b in stream]


def measure(batches: list[np.ndarray], n: int, row_group: int) -> dict:
    means = np.array([b.mean() for b in batches])
    spread = np.array([b.std() for b in batches])
    groups = np.array([len(np.unique(b // row_group)) for b in batches])
    rows = np.concatenate(batches)
    ks = []
    for part in np.array_split(rows, 10):
        u = np.sort(part) / n
        ecdf = np.arange(1, len(u) + 1) / len(u)
        ks.append(float(np.max(np.abs(ecdf - u))))
    return {
        "lag1": float(np.corrcoef(means[:-1], means[1:])[0, 1]),
        "spread": float(spread.mean()),
        "groups": float(groups.mean()),
        "ks": float(np.mean(ks)),
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(args.streamgd))
    path = write_data(args)
    stream = measure(stream_batches(path, args), args.rows, args.row_group)
    perm = np.random.default_rng(args.seed).permutation(args.rows).astype(np.float64)
    full = measure(
        [perm[i : i + args.batch_size] for i in range(0, args.rows, args.batch_size)],
        args.rows,
        args.row_group,
    )
    stream["spread"] /= full["spread"]
    full["spread"] = 1.0
    keys = ("rows", "row_group", "width", "batch_size", "shuffle_buffer")
    setting = {k: getattr(args, k) for k in keys}
    for name, m in (("streamgd", stream), ("full permutation", full)):
        print(json.dumps({"stream": name, "tree": str(args.streamgd), **setting, **m}))
    print(
        "\n| stream | lag-1 corr. of batch means | spread (x permutation) | row groups "
        "per batch | KS per tenth |\n|---|---|---|---|---|\n"
        + "\n".join(
            f"| {name} | {m['lag1']:+.3f} | {m['spread']:.3f} | {m['groups']:.1f} | {m['ks']:.3f} |"
            for name, m in (("streamgd", stream), ("full permutation", full))
        )
    )


if __name__ == "__main__":
    main()
