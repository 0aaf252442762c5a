"""--text on a Dask LocalCluster: workers hash the text columns into the same slots as the
driver, and the model reaches least squares on the explicitly expanded bag-of-words matrix."""

from __future__ import annotations

import re

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from conftest import lstsq_mse  # noqa: E402

from streamgd.config import FitConfig, RunOptions  # noqa: E402
from streamgd.features.text import bucket_of, murmur3_32  # noqa: E402
from streamgd.training import train  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::UserWarning", "ignore::ResourceWarning"
)

WORDS = {"good": 1.0, "bad": -1.0, "great": 2.0, "film": 0.0, "dull": -1.5, "the": 0.0}


def test_text_trains_on_workers(tmp_path):
    rng = np.random.default_rng(8)
    n = 12_000
    words = list(WORDS)
    texts = [" ".join(rng.choice(words, size=rng.integers(0, 6))) for _ in range(n)]
    x = rng.normal(size=n)
    y = x + np.array([sum(WORDS[w] for w in t.split()) for t in texts])
    y += rng.normal(size=n) * 0.5
    paths = []
    for i, part in enumerate(np.array_split(np.arange(n), 4)):
        paths.append(str(tmp_path / f"p{i}.parquet"))
        table = pa.table({"x": x[part], "review": [texts[j] for j in part], "y": y[part]})
        pq.write_table(table, paths[-1], row_group_size=1000)
    config = FitConfig(target="y", features=("x",), text=("review",), text_bits=8, epochs=4,
                       sync_every=4, batch_size=256)  # fmt: skip
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, local_directory=str(tmp_path / "dask"),
    ) as cluster:  # fmt: skip
        result = train(paths, config, RunOptions(cluster=cluster.scheduler_address))
    # the oracle's design: one column per word's bucket, counts from a plain split
    bucket = dict(zip(words, bucket_of(murmur3_32(pa.array(words)), 8).tolist(), strict=True))
    used = sorted(set(bucket.values()))
    counts = np.zeros((n, len(used)))
    for i, t in enumerate(texts):
        for w in re.findall(r"\w+", t):
            counts[i, used.index(bucket[w])] += 1
    design = np.c_[x, counts]
    predicted = result.model.predict(pa.table({"x": x, "review": texts}))
    assert np.mean((predicted - y) ** 2) <= lstsq_mse(design, y) * 1.01
