"""``--memory-limit``: a fit on data many times larger than the limit stays under it (peak
RSS of the child process, ``VmHWM``), reports the plan's estimate beside the measured peak,
records the planned sizes in the model, and a resume keeps them (or refuses when they no
longer fit); a limit the files cannot fit in is refused with the minimum (exit 2)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamgd import memory_plan as mp
from streamgd.config import FitConfig
from streamgd.sources import open_dataset

FEATURES, GROUP, GROUPS_PER_FILE, FILES = 48, 65_536, 10, 13
LIMIT, LIMIT_TEXT = 200_000_000, "200MB"


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """13 files of 655,360 rows x 49 float32 columns: 8.5M rows, 1.67 GB decoded, ~8x the
    limit. Small whole numbers in random order: dictionary-encoded, one file written and
    copied, so the files are small and written in about a second."""
    directory = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 8, size=(GROUP, FEATURES)).astype(np.float32)
    coef = rng.integers(-3, 4, FEATURES).astype(np.float32)
    y = (x @ coef + rng.integers(0, 2, GROUP)).astype(np.float32)
    columns = [pa.array(x[:, j]) for j in range(FEATURES)] + [pa.array(y)]
    table = pa.Table.from_arrays(columns, names=[f"x{j}" for j in range(FEATURES)] + ["y"])
    first = directory / "part-00.parquet"
    with pq.ParquetWriter(first, table.schema) as writer:
        for _ in range(GROUPS_PER_FILE):
            writer.write_table(table, row_group_size=GROUP)
    for i in range(1, FILES):
        shutil.copy(first, directory / f"part-{i:02d}.parquet")
    return directory


def fit(*args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "streamgd", "fit", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def test_a_fit_stays_under_its_limit_on_data_eight_times_larger(big, tmp_path):
    decoded = FILES * GROUPS_PER_FILE * GROUP * (FEATURES + 1) * 4
    assert decoded >= 8 * LIMIT
    metrics = tmp_path / "metrics.json"
    proc = fit(
        big, "--target", "y", "--epochs", "1", "--memory-limit", LIMIT_TEXT, "--json",
        "--log-format", "json", "--metrics-out", metrics,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    memory = summary["memory"]
    assert summary["rows_trained"] == FILES * GROUPS_PER_FILE * GROUP
    assert memory["limit"] == LIMIT_TEXT and memory["limit_mb"] == LIMIT / 1e6
    # the child's own high-water mark (VmHWM: not carried over from the parent's fork)
    assert 0 < memory["peak_mb"] <= LIMIT / 1e6
    assert memory["peak_mb"] <= memory["estimate_mb"] <= LIMIT / 1e6
    # the estimate is the plan's for these files and the sizes it chose
    dataset = open_dataset(sorted(str(p) for p in big.iterdir()))
    layout = mp.layout_of(dataset, FitConfig(target="y"))
    sizes = mp.Sizes(memory["shuffle_buffer"], memory["lanes"], memory["piece_rows"], 1)
    assert sizes == mp.plan(LIMIT, layout).sizes
    assert memory["estimate_mb"] == pytest.approx(mp.footprint(layout, sizes).total / 1e6, abs=0.1)
    # the same report in the JSON log's finish event and in --metrics-out
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    finish = [e for e in events if e.get("event") == "finish"]
    assert finish and finish[0]["memory"]["estimate_mb"] == memory["estimate_mb"]
    assert json.loads(metrics.read_text())["summary"]["memory"] == memory


def test_a_limit_below_the_minimum_is_refused(big):
    proc = fit(big, "--target", "y", "--memory-limit", "120MB")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(
        "streamgd: usage error: --memory-limit 120MB is below the minimum for these files: "
    )
    from streamgd.memory_plan import IMPORTS_BYTES

    assert f"(imports {IMPORTS_BYTES / 1e6:.0f}MB + " in lines[0]
    # the user's buffer is kept, and the minimum is that of the sizes around it
    proc = fit(big, "--target", "y", "--memory-limit", "250MB", "--shuffle-buffer", "4000000")
    assert proc.returncode == 2
    assert "below the minimum for these files with --shuffle-buffer 4000000: " in proc.stderr
    proc = fit(big, "--target", "y", "--memory-limit", "lots")
    assert proc.returncode == 2 and "--memory-limit" in proc.stderr


def test_the_planned_sizes_are_recorded_and_a_resume_keeps_them(big, tmp_path):
    files = [big / "part-00.parquet", big / "part-01.parquet"]
    model = tmp_path / "model.npz"
    proc = fit(*files, "--target", "y", "-o", model, "--epochs", "1", "--memory-limit", LIMIT_TEXT,
               "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    planned = json.loads(proc.stdout)["memory"]
    inspect = subprocess.run(
        [sys.executable, "-m", "streamgd", "inspect", str(model), "--json"],
        capture_output=True,
        text=True,
    )
    settings = json.loads(inspect.stdout)["settings"]
    for key in ("shuffle_buffer", "lanes", "piece_rows"):
        assert settings[key] == planned[key]

    # a larger limit would plan other sizes afresh; the resume keeps the recorded ones
    layout = mp.layout_of(open_dataset(list(map(str, files))), FitConfig(target="y"))
    assert mp.plan(10**9, layout).sizes.buffer != planned["shuffle_buffer"] or (
        mp.plan(10**9, layout).sizes.lanes != planned["lanes"]
    )
    proc = fit(*files, "--target", "y", "-o", model, "--memory-limit", "1GB", "--resume",
               "--epochs", "2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    done = proc.stderr.strip().splitlines()[-1]
    assert done.startswith("done: 2 epoch(s)") and "; peak RSS " in done
    assert "(estimate " in done and "limit 1GB)" in done
    settings = json.loads(
        subprocess.run(
            [sys.executable, "-m", "streamgd", "inspect", str(model), "--json"],
            capture_output=True,
            text=True,
        ).stdout
    )["settings"]
    for key in ("shuffle_buffer", "lanes", "piece_rows"):
        assert settings[key] == planned[key]

    # recorded sizes that no longer fit the limit: refused, nothing trained
    proc = fit(*files, "--target", "y", "-o", model, "--memory-limit", "150MB", "--resume",
               "--epochs", "3")  # fmt: skip
    assert proc.returncode == 2
    assert "the checkpoint's recorded sizes (--shuffle-buffer" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def write_small(path, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 4))
    cols = {f"x{j}": x[:, j] for j in range(4)}
    cols["y"] = x @ np.arange(1.0, 5.0) + 0.1 * rng.standard_normal(rows)
    pq.write_table(pa.table(cols), path)


def test_a_continual_job_keeps_the_sizes_of_its_first_run(tmp_path):
    """Files that arrive change the layout (here the lanes a fresh plan would take), not
    the model's sizes."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        write_small(data / f"part-{i}.parquet", 3000, i)
    model = tmp_path / "model.npz"
    args = (data, "--target", "y", "-o", model, "--continual", "--memory-limit", "1GB", "--json")
    proc = fit(*args)
    assert proc.returncode == 0, proc.stderr
    first = json.loads(proc.stdout)["memory"]
    for i in range(2, 6):
        write_small(data / f"part-{i}.parquet", 3000, i)
    config = FitConfig(target="y")
    fresh = mp.plan(10**9, mp.layout_of(open_dataset([str(data)]), config)).sizes
    assert fresh.lanes != first["lanes"]  # a fresh plan would differ
    proc = fit(*args)
    assert proc.returncode == 0, proc.stderr
    second = json.loads(proc.stdout)
    assert second["continual"]["trained"]
    for key in ("shuffle_buffer", "lanes", "piece_rows"):
        assert second["memory"][key] == first[key]
