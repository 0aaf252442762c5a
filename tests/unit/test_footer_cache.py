"""Each Parquet footer is parsed once when a dataset is opened, kept (bounded) for later
passes, and never trusted for a file that is no longer the stamped one."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamgd.errors import DataError
from streamgd.sources import HandleCache, open_dataset
from streamgd.sources import fingerprint as fp
from streamgd.sources import parquet as sp


def _write(path, seed: int, rows: int = 40) -> str:
    rng = np.random.default_rng(seed)
    table = pa.table({"x": rng.normal(size=rows), "y": rng.normal(size=rows)})
    pq.write_table(table, path, row_group_size=10, compression="none", use_dictionary=False)
    return str(path)


def _count_parses(monkeypatch) -> dict:
    """Count footer parses: by the stamp (framed footer) and by ParquetFile without one."""
    calls = {"framed": 0, "file": 0}
    framed, parquet_file = fp._footer_metadata, pq.ParquetFile

    def counting_framed(footer, path):
        calls["framed"] += 1
        return framed(footer, path)

    def counting_file(source, *args, metadata=None, **kwargs):
        calls["file"] += metadata is None
        return parquet_file(source, *args, metadata=metadata, **kwargs)

    monkeypatch.setattr(fp, "_footer_metadata", counting_framed)
    monkeypatch.setattr(pq, "ParquetFile", counting_file)
    return calls


def test_open_parses_each_footer_once_and_later_reads_reuse_it(tmp_path, monkeypatch):
    paths = [_write(tmp_path / f"p{i}.parquet", i) for i in range(5)]
    calls = _count_parses(monkeypatch)
    dataset = open_dataset(paths)
    assert calls == {"framed": 5, "file": 0}
    assert len(dataset.footers) == 5
    # the schema and layout read from the one parse are those pyarrow gives the file
    assert dataset.files[0].row_groups == (10, 10, 10, 10)
    assert dataset.schema.equals(pq.ParquetFile(paths[0]).schema_arrow)
    calls["file"] = 0  # that one was the test's own
    handles = HandleCache()
    rows = sum(t.num_rows for u in dataset.units for t, _ in dataset.iter_unit(u, ["x"], handles))
    assert rows == 200
    assert calls == {"framed": 5, "file": 0}  # no footer parsed again


def test_the_cache_is_bounded_and_an_uncached_file_is_parsed_once_per_read(tmp_path, monkeypatch):
    paths = [_write(tmp_path / f"p{i}.parquet", i) for i in range(6)]
    one = sp.FOOTER_COST * fp.stamp_file(paths[0], "parquet").footer_size
    monkeypatch.setattr(sp, "FOOTER_BUDGET", 2 * one + one // 2)
    monkeypatch.setattr(sp.FooterCache.__init__, "__defaults__", (sp.FOOTER_BUDGET,))
    dataset = open_dataset(paths)
    assert len(dataset.footers) == 2 and dataset.footers.used <= dataset.footers.budget
    calls = _count_parses(monkeypatch)
    handles = HandleCache()
    for unit in dataset.units:  # 4 row groups per file, read file by file
        assert len(list(dataset.iter_unit(unit, ["x"], handles))) == 1
    assert calls["file"] == 4  # the 4 files not kept: parsed once each, not once per row group
    assert len(dataset.footers) == 2  # no eviction, no growth past the budget


def test_a_kept_footer_is_not_used_for_a_file_rewritten_in_place(tmp_path):
    """Same inode, same size, modification time put back: only the footer in the map shows
    the change, and it is compared before the kept footer is used."""
    path = _write(tmp_path / "a.parquet", 0)
    other = _write(tmp_path / "b.parquet", 1)
    dataset = open_dataset([path])
    assert len(dataset.footers) == 1
    st = os.stat(path)
    with open(other, "rb") as f:
        data = f.read()
    assert len(data) == st.st_size
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_ino == st.st_ino
    with pytest.raises(DataError, match=r"a\.parquet: the file changed during the run"):
        list(dataset.iter_unit(dataset.units[0], ["x"], HandleCache()))
