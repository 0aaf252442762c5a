"""The statistics pass's tables of small units, kept for the first epoch: bounded, given out
once, for the columns asked, and never for a file that is no longer the stamped one."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamgd.errors import DataError
from streamgd.sources import open_dataset
from streamgd.sources.parquet import KeptTables


def _write(path, seed: int, rows: int = 30) -> str:
    rng = np.random.default_rng(seed)
    pq.write_table(pa.table({"x": rng.normal(size=rows), "y": rng.normal(size=rows)}), path)
    return str(path)


def test_kept_tables_are_bounded_and_given_once(tmp_path):
    paths = [_write(tmp_path / f"p{i}.parquet", i) for i in range(4)]
    dataset = open_dataset(paths)
    tables = [pq.read_table(p) for p in paths]
    both = pa.concat_tables(tables[:2]).combine_chunks()  # two units' rows in one table
    kept = KeptTables(budget=both.get_total_buffer_size() + 1)
    kept.offer([(0, 30, 0), (1, 30, 10)], both, both.column_names)
    kept.offer([(2, 30, 20)], tables[2], tables[2].column_names)  # no room left
    assert len(kept) == 2 and kept.used <= kept.budget
    src = dataset.files[1]
    table, first_row = kept.take(1, ["y"], src.path, src.stamp)
    assert table.column_names == ["y"] and first_row == 10
    assert table.column("y").equals(tables[1].column("y"))
    assert kept.take(1, ["y"], src.path, src.stamp) is None  # given out once
    assert kept.take(0, ["z"], paths[0], dataset.files[0].stamp) is None  # not those columns
    assert kept.take(3, ["x"], paths[3], dataset.files[3].stamp) is None  # never kept
    assert len(kept) == 0 and kept.used == 0


def test_a_kept_table_of_a_replaced_file_is_refused(tmp_path):
    path = _write(tmp_path / "a.parquet", 0)
    dataset = open_dataset([path])
    kept = KeptTables()
    kept.offer([(0, 30, 0)], pq.read_table(path), ["x", "y"])
    _write(tmp_path / "b.parquet", 1)
    os.replace(tmp_path / "b.parquet", path)
    with pytest.raises(DataError, match=r"a\.parquet: the file changed during the run"):
        kept.take(0, ["x"], path, dataset.files[0].stamp)
