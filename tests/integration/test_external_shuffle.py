"""The external shuffle (``streamgd.external_shuffle.shuffle_files``) end to end: every row
exactly once with its values and types, a well-mixed and seeded order, bounded memory on data
several times the budget, no partial output after a failure, the output-directory policy, and
what it is for: training on sorted data with a small shuffle buffer, against numpy least squares."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from integration_support import REPO_ROOT, lstsq_mse

import streamgd
from streamgd.errors import StreamgdError, UsageError
from streamgd.external_shuffle import MANIFEST, shuffle_files
from streamgd.sources import open_dataset

ROWS = 30_000
SMALL_BUDGET_MB = 0.25  # ~1.7 MB of data: 14 buckets
SETTINGS = {"rows_per_file": 7000, "row_group_size": 1000, "memory_budget_mb": SMALL_BUDGET_MB}


def _sorted_table(rows: int, *, seed: int = 7) -> pa.Table:
    """A regression problem sorted by its target ``y``; ``row_id`` is the sorted position."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2))
    y = x @ [2.0, -1.0] + 0.5 + rng.normal(size=rows) * 0.5
    order = np.argsort(y)
    ids = np.arange(rows)
    return pa.table(
        {
            "row_id": pa.array(ids, pa.int64()),
            "x0": x[order, 0],
            "x1": x[order, 1],
            "f32": pa.array(rng.normal(size=rows).astype(np.float32)),
            "label": pa.array([None if i % 97 == 0 else f"c{i % 7}" for i in ids], pa.string()),
            "cat": pa.array([f"k{i % 5}" for i in ids]).dictionary_encode(),
            "flag": pa.array(ids % 3 == 0),
            "ts": pa.array(ids * 1000 + 1_600_000_000_000, pa.timestamp("ms")),
            "y": y[order],
        }
    )


def _write_parts(table: pa.Table, directory, *, files: int, fmt: str, row_group_size=4000):
    os.makedirs(directory, exist_ok=True)
    bounds = np.linspace(0, table.num_rows, files + 1).astype(int)
    paths = []
    for i in range(files):
        part = table.slice(bounds[i], bounds[i + 1] - bounds[i])
        path = os.path.join(directory, f"in-{i}.{fmt}")
        if fmt == "parquet":
            pq.write_table(part, path, row_group_size=row_group_size)
        else:
            pacsv.write_csv(part, path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def sorted_parquet(tmp_path_factory):
    table = _sorted_table(ROWS)
    paths = _write_parts(table, tmp_path_factory.mktemp("sorted"), files=3, fmt="parquet")
    return paths, table


@pytest.fixture(scope="module")
def shuffled(sorted_parquet, tmp_path_factory):
    """The sorted Parquet data shuffled once with seed 1, and the summary."""
    paths, _ = sorted_parquet
    out = str(tmp_path_factory.mktemp("shuffled") / "out")
    return out, shuffle_files(paths, out, seed=1, **SETTINGS)


def _read_parts(files: list[str]) -> pa.Table:
    return pa.concat_tables(pq.read_table(f) for f in files)


def _file_bytes(directory) -> dict[str, bytes]:
    out = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as fh:
            out[name] = fh.read()
    return out


# -- every row once, values and types kept ---------------------------------------------------
def test_every_row_appears_once_with_its_values_and_types(sorted_parquet, shuffled):
    _, table = sorted_parquet
    out, summary = shuffled
    assert summary["rows"] == ROWS
    assert summary["buckets"] > 2
    names = [f"part-{i:05d}.parquet" for i in range(5)]  # 30,000 rows of at most 7,000
    assert summary["files"] == [os.path.join(out, n) for n in names]
    assert sorted(os.listdir(out)) == sorted([*names, MANIFEST])
    for path in summary["files"]:
        md = pq.read_metadata(path)
        sizes = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
        assert sum(sizes) <= 7000
        assert all(s == 1000 for s in sizes[:-1]), sizes  # exact row groups, the last of a file
        assert md.row_group(0).column(0).compression == "SNAPPY"
    result = _read_parts(summary["files"])
    assert result.schema.equals(table.schema)  # int64, float32, (dictionary) string, bool, ...
    assert np.array_equal(np.sort(result["row_id"].to_numpy()), np.arange(ROWS))
    assert result.sort_by("row_id").equals(table)  # every value, nulls included
    manifest = json.loads((Path(out) / MANIFEST).read_text())
    assert manifest["complete"] and manifest["files"] == names and manifest["rows"] == ROWS


def test_csv_rows_keep_the_types_the_dataset_reads_them_with(tmp_path):
    table = _sorted_table(9000, seed=3).drop_columns(["f32", "ts", "cat"])
    paths = _write_parts(table, tmp_path / "csv", files=2, fmt="csv")
    summary = shuffle_files(paths, str(tmp_path / "out"), seed=4, memory_budget_mb=0.1)
    assert summary["rows"] == 9000 and summary["buckets"] > 2
    result = _read_parts(summary["files"])
    schema = open_dataset(paths).schema
    assert result.schema.equals(schema)
    assert schema.field("row_id").type == pa.float64()  # CSV integers are read as float64
    assert schema.field("flag").type == pa.bool_() and schema.field("label").type == pa.string()
    convert = pacsv.ConvertOptions(column_types=schema, strings_can_be_null=True)
    expected = pa.concat_tables(pacsv.read_csv(p, convert_options=convert) for p in paths)
    assert result.sort_by("row_id").equals(expected)  # an oracle read by pyarrow alone
    assert result["label"].null_count == table["label"].null_count > 0


def test_numeric_types_that_differ_between_files_are_widened_as_the_dataset_reads_them(
    tmp_path,
):
    pq.write_table(pa.table({"k": pa.array([1, 2, 3], pa.int64())}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"k": pa.array([0.5, 1.5])}), tmp_path / "b.parquet")
    summary = shuffle_files(
        [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")], str(tmp_path / "out")
    )
    result = _read_parts(summary["files"])
    assert result.schema == pa.schema([("k", pa.float64())])
    assert sorted(result["k"].to_pylist()) == [0.5, 1.0, 1.5, 2.0, 3.0]


def test_a_bucket_over_the_budget_is_scattered_again(sorted_parquet, tmp_path):
    paths, table = sorted_parquet
    summary = shuffle_files(
        paths, str(tmp_path / "out"), buckets=1, memory_budget_mb=SMALL_BUDGET_MB
    )
    assert summary["buckets"] == 1 and summary["splits"] >= 1
    result = _read_parts(summary["files"])
    assert result.sort_by("row_id").equals(table)
    assert abs(np.corrcoef(result["row_id"].to_numpy(), np.arange(ROWS))[0, 1]) < 0.03


def test_an_empty_dataset_gives_one_empty_file_with_the_schema(tmp_path):
    schema = pa.schema([("a", pa.float64()), ("s", pa.string())])
    pq.write_table(schema.empty_table(), tmp_path / "empty.parquet")
    summary = shuffle_files(str(tmp_path / "empty.parquet"), str(tmp_path / "out"))
    assert summary["rows"] == 0 and len(summary["files"]) == 1
    assert pq.read_table(summary["files"][0]).schema.equals(schema)


# -- the order -------------------------------------------------------------------------------
def test_the_output_order_is_well_mixed(shuffled):
    _, summary = shuffled
    result = _read_parts(summary["files"])
    key = result["row_id"].to_numpy()
    position = np.arange(ROWS)
    # sd of the correlation of independent orders is 1/sqrt(30000) = 0.006
    assert abs(np.corrcoef(position, key)[0, 1]) < 0.03
    assert abs(np.corrcoef(position, result["y"].to_numpy())[0, 1]) < 0.03
    head = key[: ROWS // 100]  # the first 1% of the output spans the whole key range
    assert head.min() < 0.05 * ROWS and head.max() > 0.95 * ROWS
    for part in np.array_split(key, 10):  # every tenth of the output draws from every tenth
        counts = np.bincount(part * 10 // ROWS, minlength=10)
        assert counts.min() > 0.7 * len(part) / 10, counts
    assert np.mean(np.diff(key) == 1) < 0.01  # no runs of consecutive input rows survive


def test_the_same_seed_gives_the_same_bytes_another_seed_another_order(
    sorted_parquet, shuffled, tmp_path
):
    paths, _ = sorted_parquet
    out, summary = shuffled
    again = shuffle_files(paths, str(tmp_path / "again"), seed=1, **SETTINGS)
    assert again["buckets"] == summary["buckets"]
    assert _file_bytes(tmp_path / "again") == _file_bytes(out)
    other = shuffle_files(paths, str(tmp_path / "other"), seed=2, **SETTINGS)
    first = _read_parts(summary["files"])["row_id"].to_numpy()
    second = _read_parts(other["files"])["row_id"].to_numpy()
    assert np.array_equal(np.sort(second), np.arange(ROWS))
    assert np.mean(first == second) < 0.01  # unrelated orders agree on ~1/ROWS of positions


# -- memory ----------------------------------------------------------------------------------
_MEASURE = textwrap.dedent(
    """
    import json, sys, tracemalloc
    import pandas  # pyarrow imports it lazily, mid-shuffle otherwise: not the shuffle's memory
    import pyarrow as pa
    from streamgd.external_shuffle import shuffle_files

    tracemalloc.start()
    arrow_before = pa.default_memory_pool().max_memory()
    summary = shuffle_files(
        sys.argv[1], sys.argv[2], memory_budget_mb=8, rows_per_file=400_000,
        row_group_size=32_768,
    )
    print(json.dumps({
        "arrow_peak": pa.default_memory_pool().max_memory(),
        "arrow_before": arrow_before,
        "numpy_peak": tracemalloc.get_traced_memory()[1],
        "rows": summary["rows"],
        "buckets": summary["buckets"],
        "peak_estimate": summary["peak_bytes_estimate"],
    }))
    """
)


def test_memory_stays_within_the_budget_on_data_five_times_larger(tmp_path):
    """Measured in a fresh process, where Arrow's memory pool peak covers only this call.

    Arrow's buffers (decoded row groups, bucket pieces, Parquet reader and writer state) are
    invisible to tracemalloc but counted exactly by Arrow's memory pool, whose high-water mark
    (``max_memory``) cannot be reset: hence the subprocess. numpy's (bucket draws,
    permutations) are traced by tracemalloc. RSS would mostly measure the interpreter.
    """
    rows, row_group = 1_250_000, 32_768  # 4 columns of 8 bytes: 40 MB decoded
    rng = np.random.default_rng(0)
    data = pa.table(
        {
            "row_id": np.arange(rows),
            "a": rng.random(rows),
            "b": rng.random(rows),
            "y": np.sort(rng.random(rows)),
        }
    )
    data_bytes = data.nbytes
    _write_parts(data, tmp_path / "big", files=4, fmt="parquet", row_group_size=row_group)
    del data
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(tmp_path / "big"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    m = json.loads(done.stdout)
    assert m["rows"] == rows and m["buckets"] >= 10
    budget, row_group_bytes = 8 << 20, row_group * 32
    peak = m["arrow_peak"] + m["numpy_peak"]
    assert m["arrow_before"] < row_group_bytes
    assert peak < budget + 3 * row_group_bytes, m  # the budget plus a few row groups
    assert peak < data_bytes / 3, m
    assert m["peak_estimate"] < budget
    ids = pq.read_table(tmp_path / "out", columns=["row_id"])["row_id"].to_numpy()
    assert np.array_equal(np.sort(ids), np.arange(rows))


# -- failures and the output directory -------------------------------------------------------
def _count_writes(monkeypatch, fail_at: int | None = None) -> itertools.count:
    """Count the tables written to bucket and output files (Arrow IPC and Parquet writers),
    raising a disk error at write number ``fail_at``."""
    calls = itertools.count(1)
    for cls in (pa.ipc.RecordBatchStreamWriter, pq.ParquetWriter):

        def write_table(self, table, *args, _real=cls.write_table, **kwargs):
            if next(calls) == fail_at:
                raise OSError(28, "No space left on device (test)")
            return _real(self, table, *args, **kwargs)

        monkeypatch.setattr(cls, "write_table", write_table)
    return calls


@pytest.fixture(scope="module")
def writes(sorted_parquet, tmp_path_factory):
    """How many tables a shuffle with ``SETTINGS`` writes (bucket batches, then 30 output
    row groups)."""
    with pytest.MonkeyPatch.context() as m:
        calls = _count_writes(m)
        out = tmp_path_factory.mktemp("count") / "out"
        shuffle_files(sorted_parquet[0], str(out), **SETTINGS)
        return next(calls) - 1


@pytest.mark.parametrize("when", ["first", "scatter", "permute", "last"])
def test_a_failure_leaves_no_file_under_a_final_name(
    sorted_parquet, writes, tmp_path, monkeypatch, when
):
    fail_at = {"first": 1, "scatter": 40, "permute": writes - 15, "last": writes}[when]
    assert writes > 70  # 40 is a bucket write; writes - 15 an output one
    _count_writes(monkeypatch, fail_at)
    with pytest.raises(StreamgdError, match="cannot write the shuffled output"):
        shuffle_files(sorted_parquet[0], str(tmp_path / "out"), **SETTINGS)
    assert not (tmp_path / "out").exists()  # no part file, no manifest, no scratch, no dir


def test_a_failure_keeps_a_previous_output_as_it_was(sorted_parquet, writes, tmp_path, monkeypatch):
    paths, _ = sorted_parquet
    out = tmp_path / "out"
    shuffle_files(paths, str(out), seed=5, rows_per_file=20_000)
    before = _file_bytes(out)
    _count_writes(monkeypatch, writes - 15)
    with pytest.raises(StreamgdError):
        shuffle_files(paths, str(out), seed=6, **SETTINGS)
    assert _file_bytes(out) == before


def test_a_crash_while_renaming_leaves_an_output_marked_incomplete_that_a_rerun_replaces(
    sorted_parquet, tmp_path, monkeypatch
):
    paths, table = sorted_parquet
    out = tmp_path / "out"
    calls, real = itertools.count(1), os.replace

    def replace(src, dst):  # 1: the manifest saying "incomplete", 2: part-00000, 3: part-00001
        if next(calls) == 3:
            raise OSError(5, "Input/output error (test)")
        return real(src, dst)

    with monkeypatch.context() as m:
        m.setattr(os, "replace", replace)
        with pytest.raises(StreamgdError):
            shuffle_files(paths, str(out), **SETTINGS)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["complete"] is False
    assert sorted(os.listdir(out)) == [MANIFEST, "part-00000.parquet"]
    summary = shuffle_files(paths, str(out), **SETTINGS)  # ours: replaced without complaint
    assert json.loads((out / MANIFEST).read_text())["complete"] is True
    assert _read_parts(summary["files"]).sort_by("row_id").equals(table)


def test_a_previous_output_is_replaced_and_anything_else_refused(sorted_parquet, tmp_path):
    paths, table = sorted_parquet
    out = tmp_path / "out"
    first = shuffle_files(paths, str(out), rows_per_file=7000)
    assert len(first["files"]) == 5
    second = shuffle_files(paths, str(out), seed=3, rows_per_file=20_000)
    assert sorted(os.listdir(out)) == [MANIFEST, "part-00000.parquet", "part-00001.parquet"]
    assert _read_parts(second["files"]).sort_by("row_id").equals(table)

    (out / "notes.txt").write_text("mine")  # no longer only a shuffle output
    with pytest.raises(UsageError, match="not empty.*notes.txt"):
        shuffle_files(paths, str(out))
    assert (out / "notes.txt").read_text() == "mine"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "part-00000.parquet").write_bytes(b"not ours")  # same name, but no manifest
    with pytest.raises(UsageError, match="not empty"):
        shuffle_files(paths, str(foreign))
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="is a file"):
        shuffle_files(paths, str(tmp_path / "file"))


def test_an_output_inside_the_input_directory_is_not_read_back_as_input(tmp_path):
    data = tmp_path / "data"
    _write_parts(_sorted_table(500), data, files=2, fmt="parquet")
    assert shuffle_files(data, data / "shuffled")["rows"] == 500  # Path objects work too
    with pytest.raises(UsageError, match="inside the output directory"):
        shuffle_files(data, data / "shuffled")  # would read its own output: 1000 rows


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("seed", -1),
        ("rows_per_file", 0),
        ("row_group_size", 1.5),
        ("memory_budget_mb", 0),
        ("memory_budget_mb", True),
        ("buckets", 0),
        ("buckets", 513),
    ],
)
def test_settings_are_checked_at_the_boundary(sorted_parquet, tmp_path, setting, value):
    paths, _ = sorted_parquet
    with pytest.raises(UsageError, match=setting):
        shuffle_files(paths, str(tmp_path / "out"), **{setting: value})
    assert not (tmp_path / "out").exists()


# -- what it is for --------------------------------------------------------------------------
def test_training_on_the_shuffled_output_beats_the_sorted_input(tmp_path, monkeypatch):
    """One epoch with a 256-row shuffle buffer: on data sorted by its target in one row
    group too large to be decoded whole (here: larger than a lowered WHOLE_ROWS), which is
    read slice after slice, every batch holds a narrow band of targets, and the model ends
    far from the least-squares optimum; on the shuffled output it ends at it. (Row groups
    decoded whole, or several at once, are mixed by the stream itself: see streamgd.lanes.)"""
    import streamgd.sources as sources

    monkeypatch.setattr(sources.dataset, "WHOLE_ROWS", 1000)
    monkeypatch.setattr(sources.dataset, "SLICE_ROWS", 1000)
    table = _sorted_table(ROWS, seed=11).select(["row_id", "x0", "x1", "y"])
    # one file of one row group: one unit, so no other unit is read beside it
    paths = _write_parts(table, tmp_path / "in", files=1, fmt="parquet", row_group_size=ROWS)
    summary = shuffle_files(paths, str(tmp_path / "out"), row_group_size=5000)
    x = np.c_[table["x0"].to_numpy(), table["x1"].to_numpy()]
    y = table["y"].to_numpy()
    oracle = lstsq_mse(x, y)
    settings = {"target": "y", "features": ["x0", "x1"], "epochs": 1, "batch_size": 64}
    settings |= {"shuffle_buffer": 256, "seed": 0}
    on_sorted = streamgd.fit(paths, **settings)
    on_shuffled = streamgd.fit(summary["files"], **settings)
    mse_sorted = float(np.mean((on_sorted.predict(x) - y) ** 2))
    mse_shuffled = float(np.mean((on_shuffled.predict(x) - y) ** 2))
    assert mse_shuffled < 1.01 * oracle
    assert mse_sorted > 2 * oracle
    # the epoch's running training loss too (half the squared error, averaged over the epoch)
    assert on_sorted.history[-1]["loss"] > 1.3 * on_shuffled.history[-1]["loss"]
