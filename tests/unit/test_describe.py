"""describe_dataset / render_schema: counts and null counts against whole-file reads of the
same small files (pyarrow and pandas as oracles), for Parquet, CSV and a mix."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import streamgd.sources as sources
from streamgd.describe import describe_dataset, render_schema
from streamgd.errors import UsageError
from streamgd.sources import CsvError, CsvOptions


def _table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pa.table(
        {
            "id": pa.array(np.arange(n), pa.int64()),
            "x": pa.array(x, mask=rng.random(n) < 0.2),
            "k": pa.array(rng.integers(0, 5, n), mask=rng.random(n) < 0.1),
            "s": pa.array([f"s{i}" for i in range(n)], mask=rng.random(n) < 0.3),
            "y": pa.array(2 * x + 1, mask=rng.random(n) < 0.05),
        }
    )


def _columns(info: dict) -> dict[str, dict]:
    return {c["name"]: c for c in info["columns"]}


def _parquet_nulls(paths) -> dict[str, int]:
    tables = [pq.read_table(p) for p in paths]
    return {name: sum(t.column(name).null_count for t in tables) for name in tables[0].schema.names}


def test_parquet_counts_come_from_metadata_and_statistics(tmp_path):
    paths = []
    for i, n in enumerate([300, 1, 457]):
        path = str(tmp_path / f"p{i}.parquet")
        pq.write_table(_table(n, i), path, row_group_size=100)
        paths.append(path)
    info = describe_dataset(paths)
    assert info["num_files"] == 3 and info["formats"] == {"parquet": 3, "csv": 0}
    assert info["num_rows"] == sum(pq.read_table(p).num_rows for p in paths) == 758
    assert [f["rows"] for f in info["files"]] == [300, 1, 457]
    assert {f["rows_from"] for f in info["files"]} == {"metadata"}
    columns = _columns(info)
    assert {n: c["nulls"] for n, c in columns.items()} == _parquet_nulls(paths)
    assert all(c["nulls_from"] == ["statistics"] for c in columns.values())
    assert [(c["name"], c["type"], c["numeric"]) for c in info["columns"]] == [
        ("id", "int64", True),
        ("x", "double", True),
        ("k", "int64", True),
        ("s", "string", False),
        ("y", "double", True),
    ]
    assert info["csv"] is None
    # no --target: the one fit would take by default, said to be the default
    assert info["target"] == "y" and info["target_from"] == "default"
    assert info["features"] == ["id", "x", "k"]


def test_parquet_without_statistics_is_streamed_column_by_column(tmp_path):
    full = str(tmp_path / "a.parquet")
    partial = str(tmp_path / "b.parquet")
    pq.write_table(_table(250, 0), full, row_group_size=64, write_statistics=False)
    pq.write_table(_table(250, 1), partial, row_group_size=64, write_statistics=["x", "s"])
    for path, from_stats in [(full, set()), (partial, {"x", "s"})]:
        info = describe_dataset([path])
        columns = _columns(info)
        assert {n: c["nulls"] for n, c in columns.items()} == _parquet_nulls([path])
        for name, column in columns.items():
            expected = "statistics" if name in from_stats else "streamed"
            assert column["nulls_from"] == [expected], name
    both = _columns(describe_dataset([full, partial]))
    assert both["x"]["nulls_from"] == ["statistics", "streamed"]
    assert both["x"]["nulls"] == _parquet_nulls([full, partial])["x"]


def test_nested_and_all_null_parquet_columns_are_streamed(tmp_path):
    """A list column's leaf statistics count null elements, not null lists; a null-typed
    column has no statistics at all."""
    path = str(tmp_path / "n.parquet")
    table = pa.table(
        {
            "y": [1.0, 2.0, None, 4.0],
            "l": pa.array([[1, None], None, [None], []], pa.list_(pa.int64())),
            "n": pa.nulls(4),
        }
    )
    pq.write_table(table, path, row_group_size=2)
    columns = _columns(describe_dataset([path]))
    assert columns["l"]["nulls"] == 1 and columns["l"]["nulls_from"] == ["streamed"]
    assert columns["n"]["nulls"] == 4 and columns["n"]["nulls_from"] == ["streamed"]
    assert columns["y"]["nulls"] == 1 and columns["y"]["nulls_from"] == ["statistics"]
    assert columns["l"]["numeric"] is False and columns["n"]["numeric"] is True


def _awkward_csv(path: str, table: pa.Table) -> None:
    """The table as CSV with quoted line breaks in the text column, blank lines and CRLF."""
    buf = io.BytesIO()
    pacsv.write_csv(table, buf)
    text = buf.getvalue().replace(b'"s1', b'"line\nbreak s1').replace(b"\n", b"\r\n")
    with open(path, "wb") as fh:
        fh.write(text.replace(b"\r\n", b"\r\n\r\n", 3))


def test_csv_rows_and_nulls_are_counted_by_streaming(tmp_path, monkeypatch):
    monkeypatch.setattr(sources.csv, "CSV_BLOCK_SIZE", 1024)  # several blocks per file
    paths = []
    for i, n in enumerate([700, 0, 333]):
        path = str(tmp_path / f"c{i}.csv")
        _awkward_csv(path, _table(n, i))
        paths.append(path)
    info = describe_dataset(paths)
    frames = [pd.read_csv(p) for p in paths]  # an independent parser for the row counts
    assert [f["rows"] for f in info["files"]] == [len(f) for f in frames] == [700, 0, 333]
    assert info["num_rows"] == 1033
    assert {f["rows_from"] for f in info["files"]} == {"streamed"}
    columns = _columns(info)
    for name in ["x", "k", "s", "y"]:
        assert columns[name]["nulls"] == sum(int(f[name].isna().sum()) for f in frames), name
        assert columns[name]["nulls_from"] == ["streamed"]
    assert columns["id"]["type"] == "double" and columns["s"]["type"] == "string"
    assert info["csv"] == CsvOptions().to_dict()


def test_csv_null_tokens_follow_the_options(tmp_path):
    path = str(tmp_path / "a.csv")
    with open(path, "w") as fh:
        fh.write("a,b\n1,?\nNA,2\n,3\n")
    default = _columns(describe_dataset([path]))
    assert (default["a"]["nulls"], default["b"]["nulls"]) == (2, 0)
    assert default["b"]["type"] == "string"
    custom = _columns(describe_dataset([path], csv=CsvOptions(null_values=("?",))))
    assert (custom["a"]["nulls"], custom["b"]["nulls"]) == (0, 1)
    assert custom["a"]["type"] == "string" and custom["b"]["type"] == "double"


def test_a_mixed_dataset_adds_up(tmp_path):
    pq_path = str(tmp_path / "a.parquet")
    csv_path = str(tmp_path / "b.csv")
    pq.write_table(_table(400, 0), pq_path, row_group_size=128)
    _awkward_csv(csv_path, _table(250, 1))
    info = describe_dataset([pq_path, csv_path], target="y")
    assert info["formats"] == {"parquet": 1, "csv": 1} and info["num_rows"] == 650
    frame = pd.read_csv(csv_path)
    oracle = _parquet_nulls([pq_path])
    columns = _columns(info)
    for name in ["id", "x", "k", "s", "y"]:
        assert columns[name]["nulls"] == oracle[name] + int(frame[name].isna().sum()), name
        assert columns[name]["nulls_from"] == ["statistics", "streamed"]
    assert columns["id"]["type"] == "double"  # int64 in Parquet, float64 in CSV
    assert info["target"] == "y" and info["features"] == ["id", "x", "k"]
    # the string column differs in every row: an identifier, not a --categorical candidate
    assert info["categorical_candidates"] == [] and info["id_like"] == ["s"]
    assert "every value different (identifiers, left out): s" in render_schema(info)
    json.dumps(info)  # plain JSON values throughout


def test_target_errors_are_those_of_feature_selection(tmp_path):
    path = str(tmp_path / "a.parquet")
    pq.write_table(_table(10, 0), path)
    with pytest.raises(UsageError, match="no target column 'nope'"):
        describe_dataset([path], target="nope")
    # a text target is a class label (for --loss softmax): described, not refused
    info = describe_dataset([path], target="s")
    assert info["target"] == "s" and "s" not in info["features"]


def test_a_bad_csv_value_is_reported_with_its_line(tmp_path, monkeypatch):
    """Counting streams every value with the dataset's types, so ``schema`` also checks it."""
    monkeypatch.setattr(sources.csv, "CSV_BLOCK_SIZE", 1024)
    path = str(tmp_path / "a.csv")
    with open(path, "w") as fh:
        fh.write("a,b\n" + "".join(f"{i},{i}\n" for i in range(1000)) + "1,x\n")
    with pytest.raises(CsvError) as info:
        describe_dataset([path])
    assert (info.value.line, info.value.column) == (1002, "b")


def test_render_schema(tmp_path):
    pq_path = str(tmp_path / "a.parquet")
    csv_path = str(tmp_path / "b.csv")
    pq.write_table(_table(400, 0), pq_path, row_group_size=128)
    _awkward_csv(csv_path, _table(250, 1))
    info = describe_dataset([pq_path, csv_path], target="y")
    text = render_schema(info)
    lines = text.splitlines()
    assert lines[0] == "files: 2 (1 Parquet, 1 CSV)"
    assert lines[1].startswith("rows: 650 (Parquet from file metadata; CSV counted by streaming")
    for column in info["columns"]:
        row = next(line for line in lines if line.startswith(column["name"] + " "))
        assert column["type"] in row and f"{column['nulls']:,}" in row.split()
    assert "target: y" in text and "id, x, k" in text
    assert pq_path in text and csv_path in text
    only_parquet = render_schema(describe_dataset([pq_path]))
    assert "CSV" not in only_parquet
    assert "target: y (the default: no --target given)" in only_parquet
    no_target = _table(50, 2).rename_columns(["id", "x", "k", "s", "value"])
    other = str(tmp_path / "other.parquet")
    pq.write_table(no_target, other)
    info = describe_dataset([other])
    assert info["target"] is None and info["target_from"] is None
    assert "target" not in render_schema(info)


def test_render_lists_at_most_twenty_files(tmp_path):
    paths = []
    for i in range(23):
        path = str(tmp_path / f"p{i:02}.parquet")
        pq.write_table(_table(30, i), path)
        paths.append(path)
    text = render_schema(describe_dataset(paths))
    assert "... and 3 more" in text and paths[19] in text and paths[20] not in text
