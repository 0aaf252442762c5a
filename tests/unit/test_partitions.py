"""Hive partitions: key=value directories become typed constant columns of every piece read."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streamgd.sources as sources
from streamgd.describe import describe_dataset, render_schema
from streamgd.errors import DataError
from streamgd.sources import open_dataset
from streamgd.sources.partitions import parse_partitions, partition_dirs

from .helpers import COLUMNS, write_csv, write_parquet

# (region, year, rows, row group size): rows are numbered consecutively in this order
LAYOUT = [("eu", 2023, 300, 100), ("eu", 2024, 50, 50), ("us", 2023, 200, 64)]


def _hive(root, layout=LAYOUT, fmt="parquet") -> str:
    lo = 0
    for region, year, rows, group in layout:
        path = os.path.join(root, f"region={region}", f"year={year}", f"part-0.{fmt}")
        if fmt == "parquet":
            write_parquet(path, lo, lo + rows, group)
        else:
            write_csv(path, lo, lo + rows)
        lo += rows
    return str(root)


def _read(ds, columns) -> pa.Table:
    """Every piece of every unit, checked to hold exactly ``columns`` in that order."""
    pieces = []
    for unit in ds.units:
        for table, _ in ds.iter_unit(unit, columns):
            assert table.schema.names == list(columns)
            pieces.append(
                pa.Table.from_batches([table]) if isinstance(table, pa.RecordBatch) else table
            )
    return pa.concat_tables(pieces)


def _expected(layout=LAYOUT) -> dict[str, list]:
    regions = [r for r, _, n, _ in layout for _ in range(n)]
    years = [y for _, y, n, _ in layout for _ in range(n)]
    return {"row_id": list(range(len(years))), "region": regions, "year": years}


def test_partition_keys_are_typed_columns_after_the_files_own(tmp_path):
    ds = open_dataset([_hive(tmp_path)])
    assert ds.schema.names == ["row_id", "y", "region", "year"]
    assert ds.schema.field("region").type == pa.string()
    assert ds.schema.field("year").type == pa.int32()  # as pyarrow.dataset infers it
    assert ds.partitions.names == ["region", "year"]


@pytest.mark.parametrize("slice_rows", [None, 7])  # whole row groups, or slices of them
def test_every_piece_carries_its_files_values(tmp_path, monkeypatch, slice_rows):
    if slice_rows:
        monkeypatch.setattr(sources.dataset, "WHOLE_ROWS", slice_rows)
        monkeypatch.setattr(sources.dataset, "SLICE_ROWS", slice_rows)
    ds = open_dataset([_hive(tmp_path)])
    table = _read(ds, ["region", "row_id", "year"])
    assert table.to_pydict() == {k: _expected()[k] for k in ["region", "row_id", "year"]}


def test_csv_files_get_partition_columns_too(tmp_path, monkeypatch):
    monkeypatch.setattr(sources.csv, "CSV_BLOCK_SIZE", 512)  # several blocks per file
    ds = open_dataset([_hive(tmp_path, fmt="csv")])
    assert len(list(ds.iter_unit(ds.units[0], COLUMNS))) > 2
    assert _read(ds, ["row_id", "year", "region"]).to_pydict() == {
        "row_id": [float(i) for i in _expected()["row_id"]],
        "year": _expected()["year"],
        "region": _expected()["region"],
    }


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_partition_columns_alone_have_the_right_number_of_rows(tmp_path, fmt):
    ds = open_dataset([_hive(tmp_path, fmt=fmt)])
    assert _read(ds, ["year"]).column("year").to_pylist() == _expected()["year"]


def test_any_key_that_is_not_an_integer_makes_the_column_a_string(tmp_path):
    layout = [("eu", 2023, 3, 3), ("eu", "2024-Q1", 3, 3)]
    ds = open_dataset([_hive(tmp_path, layout)])
    assert ds.schema.field("year").type == pa.string()
    assert _read(ds, ["year"]).column("year").to_pylist() == ["2023"] * 3 + ["2024-Q1"] * 3


def test_a_missing_key_or_the_hive_null_is_null(tmp_path):
    root = _hive(tmp_path, [("eu", 2023, 2, 2), ("us", "__HIVE_DEFAULT_PARTITION__", 3, 3)])
    write_parquet(str(tmp_path / "region=eu" / "loose.parquet"), 5, 6, 1)  # no year directory
    ds = open_dataset([root])
    assert [f.path.split("region=")[1] for f in ds.files] == [
        "eu/loose.parquet",
        "eu/year=2023/part-0.parquet",
        "us/year=__HIVE_DEFAULT_PARTITION__/part-0.parquet",
    ]
    assert ds.schema.field("year").type == pa.int32()
    assert _read(ds, ["year"]).column("year").to_pylist() == [None, 2023, 2023, None, None, None]


def test_values_are_percent_decoded_as_writers_encode_them(tmp_path):
    path = write_parquet(str(tmp_path / "city=New%20York" / "p.parquet"), 0, 2, 2)
    ds = open_dataset([str(tmp_path)])
    assert _read(ds, ["city"]).column("city").to_pylist() == ["New York"] * 2
    assert ds.files[0].path == path  # the path itself is not rewritten


@pytest.mark.parametrize(
    "pattern", ["*/*/*.parquet", "region=eu/*/*.parquet", "region=eu/year=2023/part-0.parquet"]
)
def test_globs_and_files_named_alone_have_their_directories_keys(tmp_path, pattern):
    _hive(tmp_path)
    ds = open_dataset([str(tmp_path / pattern)])
    assert ds.partitions.names == ["region", "year"]
    assert _read(ds, ["region"]).column("region").to_pylist()[0] == "eu"


def test_only_the_key_value_directories_right_above_a_file_count(tmp_path):
    path = write_parquet(str(tmp_path / "run=3" / "data" / "part-0.parquet"), 0, 2, 2)
    ds = open_dataset([path])
    assert ds.schema.names == COLUMNS
    assert partition_dirs(["run=3", "data", "region=eu", "p.parquet"]) == ["region=eu"]
    assert partition_dirs(["=3", "p.parquet"]) == []  # no key: not a partition


def test_a_key_that_is_also_a_column_inside_the_files_is_an_error_naming_both(tmp_path):
    path = str(tmp_path / "row_id=7" / "p.parquet")
    write_parquet(path, 0, 2, 2)
    with pytest.raises(DataError) as info:
        open_dataset([str(tmp_path)])
    assert info.value.path == path and info.value.column == "row_id"
    assert "partition key" in str(info.value) and "row_id=7" in str(info.value)


def test_a_value_that_does_not_parse_as_the_type_is_an_error_naming_the_file():
    schema = pa.schema([("year", pa.int32())])
    assert parse_partitions(schema, ["a.parquet"], [["year=2024"]]) == ((2024,),)
    with pytest.raises(DataError) as info:
        parse_partitions(schema, ["a.parquet", "b.parquet"], [["year=2024"], ["year=soon"]])
    assert info.value.path == "b.parquet"
    assert "year=soon" in str(info.value) and "int32" in str(info.value)


def test_the_fingerprint_is_that_of_the_files(tmp_path):
    root = _hive(tmp_path)
    ds = open_dataset([root])
    files = [f.path for f in ds.files]
    assert ds.fingerprint() == open_dataset(files).fingerprint()


def test_schema_marks_partition_columns_and_counts_their_nulls_from_paths(tmp_path):
    root = _hive(tmp_path, [("eu", 2023, 4, 2), ("us", "__HIVE_DEFAULT_PARTITION__", 3, 3)])
    info = describe_dataset([root], target="y")
    columns = {c["name"]: c for c in info["columns"]}
    assert columns["year"] == {
        "name": "year",
        "type": "int32",
        "numeric": True,
        "nulls": 3,
        "nulls_from": ["path"],
        "partition": True,
    }
    assert columns["region"]["partition"] and not columns["y"]["partition"]
    assert info["features"] == ["row_id", "year"]  # a numeric key is an ordinary column
    text = render_schema(info)
    assert "year *" in text and "region *" in text and "row_id *" not in text
    assert "* hive partition column" in text


def test_without_partitions_nothing_changes(tmp_path):
    a = write_parquet(str(tmp_path / "a" / "p.parquet"), 0, 10, 4)
    ds = open_dataset([str(tmp_path)])
    assert ds.partitions.names == [] and ds.schema.names == COLUMNS
    assert np.array_equal(_read(ds, COLUMNS).column("row_id").to_numpy(), np.arange(10))
    assert pq.read_table(a).num_rows == 10
