"""Large row groups read one column at a time (RowGroupColumns): the same decoded rows as a
whole table, Arrow's memory of one column, and the same errors."""

from __future__ import annotations

import dataclasses
import datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamgd.decode import Decoder
from streamgd.errors import DataError
from streamgd.losses import LOSSES
from streamgd.sources import HandleCache, RowGroupColumns, open_dataset
from streamgd.sources.dataset import COLUMNWISE_ROWS

ROWS = COLUMNWISE_ROWS + 3_000


def _table(rows: int = ROWS, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    f64 = rng.normal(size=rows) * 1e3 + 1e6
    f64[::97] = np.nan
    ints = rng.integers(-(2**40), 2**40, size=rows)
    mask = rng.random(rows) < 0.05
    when = [
        datetime.datetime(2020, 1, 1) + datetime.timedelta(seconds=int(s) % 10**8)
        for s in ints[:50]
    ]
    return pa.table(
        {
            "f32": pa.array(rng.normal(size=rows).astype(np.float32)),
            "f64": pa.array(f64),
            "i64": pa.array(ints, mask=mask),
            "flag": pa.array(rng.random(rows) < 0.5),
            "when": pa.array(when * (rows // 50) + when[: rows % 50], pa.timestamp("s")),
            "label": pa.array(np.where(rng.random(rows) < 0.4, "yes", "no")),
            "y": pa.array(rng.normal(size=rows)),
        }
    )


def _decoded(dataset, decoder, columnwise: bool) -> list[np.ndarray]:
    handles = HandleCache(columnwise=columnwise)
    out = []
    for unit in dataset.units:
        path = dataset.files[unit.file].path
        for table, first in dataset.iter_unit(unit, decoder.reads, handles):
            assert isinstance(table, RowGroupColumns) == (
                columnwise and unit.rows >= COLUMNWISE_ROWS
            )
            out.append(decoder.matrix(table, path=path, first_row=first).copy())
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_columnwise_decodes_the_same_bits_as_a_whole_table(tmp_path, dtype):
    path = str(tmp_path / "a.parquet")
    # one large row group (read column by column) and a small last one (read whole)
    pq.write_table(_table(), path, row_group_size=COLUMNWISE_ROWS + 1_000)
    dataset = open_dataset([path])
    assert [u.rows for u in dataset.units] == [COLUMNWISE_ROWS + 1_000, 2_000]
    names = ("f32", "f64", "i64", "flag", "when")
    base = Decoder.for_statistics(
        names, "y", loss=LOSSES["squared"], missing="impute", infinite="missing"
    )
    decoder = dataclasses.replace(base, dtype=dtype)
    whole, by_column = _decoded(dataset, decoder, False), _decoded(dataset, decoder, True)
    assert len(whole) == len(by_column) == 2
    for a, b in zip(whole, by_column, strict=True):
        assert a.dtype == b.dtype == dtype
        assert np.array_equal(a, b, equal_nan=True)
    assert np.isnan(by_column[0][:, 2]).sum() > 0  # the nulls of the int column came through


def test_columnwise_class_labels_convert_as_each_column_is_read(tmp_path):
    path = str(tmp_path / "a.parquet")
    pq.write_table(_table(), path)
    dataset = open_dataset([path])
    decoder = Decoder.for_statistics(
        ("f32",),
        "label",
        loss=LOSSES["softmax"],
        missing="impute",
        infinite="missing",
        classes=["no", "yes"],
    )
    whole, by_column = _decoded(dataset, decoder, False), _decoded(dataset, decoder, True)
    assert np.array_equal(whole[0], by_column[0])
    labels = _table().column("label").to_pylist()
    assert by_column[0][:, 1].tolist() == [float(v == "yes") for v in labels]


def test_partition_columns_come_with_a_columnwise_row_group(tmp_path):
    directory = tmp_path / "part=7"
    directory.mkdir()
    pq.write_table(_table(), str(directory / "a.parquet"))
    dataset = open_dataset([str(directory / "a.parquet")])
    assert "part" in dataset.schema.names
    handles = HandleCache(columnwise=True)
    ((table, _),) = list(dataset.iter_unit(dataset.units[0], ["f32", "part"], handles))
    assert table.column("part").to_pylist() == [7] * ROWS


def test_arrow_holds_one_column_not_the_row_group(tmp_path):
    """Arrow's highest allocation while a 33-column row group is decoded: a few columns'
    worth read one at a time, the whole table (and more) read at once."""
    rows, width = 65_536, 33
    rng = np.random.default_rng(1)
    table = pa.table({f"x{j}": rng.normal(size=rows).astype(np.float32) for j in range(width)})
    path = str(tmp_path / "wide.parquet")
    pq.write_table(table, path, compression="none", use_dictionary=False)
    dataset = open_dataset([path])
    names = tuple(f"x{j}" for j in range(width - 1))
    decoder = Decoder.for_statistics(
        names, f"x{width - 1}", loss=LOSSES["squared"], missing="impute", infinite="missing"
    )
    column_bytes = rows * 4
    highest = {}
    for columnwise in (True, False):
        pool = pa.proxy_memory_pool(pa.default_memory_pool())
        before = pa.default_memory_pool()
        pa.set_memory_pool(pool)
        try:
            out = _decoded(dataset, decoder, columnwise)
        finally:
            pa.set_memory_pool(before)
        assert out[0].shape == (rows, width)
        highest[columnwise] = pool.max_memory()
    # a column's bytes and its values, and Arrow's scratch beside them
    assert highest[True] <= 12 * column_bytes, highest
    assert highest[False] >= width * column_bytes > 3 * highest[True], highest


def test_a_columnwise_row_group_must_give_the_rows_promised(tmp_path):
    path = str(tmp_path / "a.parquet")
    pq.write_table(_table(), path)
    dataset = open_dataset([path])
    wrong = dataclasses.replace(dataset.units[0], rows=ROWS - 1)
    ((table, _),) = list(dataset.iter_unit(wrong, ["f32"], HandleCache(columnwise=True)))
    with pytest.raises(DataError, match=f"row group 0 has {ROWS} rows, {ROWS - 1} when"):
        table.column("f32")


def test_a_damaged_column_chunk_names_the_file_and_row_group(tmp_path):
    path = str(tmp_path / "c.parquet")
    pq.write_table(_table(), path)
    with open(path, "rb") as fh:
        data = bytearray(fh.read())
    data[4:40] = bytes(b ^ 0xFF for b in data[4:40])  # the first page header, after "PAR1"
    with open(path, "wb") as fh:
        fh.write(data)
    dataset = open_dataset([path])
    decoder = Decoder.for_statistics(
        ("f32",), "y", loss=LOSSES["squared"], missing="impute", infinite="missing"
    )
    with pytest.raises(DataError) as info:
        _decoded(dataset, decoder, True)
    assert info.value.path == path and "row group 0" in str(info.value)
