"""Input fingerprints: what a stamp holds, that it sees content changes, and what it costs."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamgd.errors import DataError
from streamgd.sources import HandleCache, open_dataset
from streamgd.sources import fingerprint as fp
from streamgd.sources.fingerprint import FINGERPRINT_VERSION, differences, stamp_file, verify


def _write(path, seed: int, rows: int = 1000, row_group_size: int = 250) -> str:
    """Uncompressed, unencoded float64 columns: another seed gives a file of the very same size
    and layout with other values."""
    rng = np.random.default_rng(seed)
    table = pa.table({"x": rng.normal(size=rows), "y": rng.normal(size=rows)})
    pq.write_table(
        table, path, row_group_size=row_group_size, compression="none", use_dictionary=False
    )
    return str(path)


def _swap(path: str, seed: int, **kwargs) -> None:
    """Replace ``path`` as an upstream job does: write elsewhere, then ``os.replace``."""
    tmp = path + ".new"
    _write(tmp, seed, **kwargs)
    os.replace(tmp, path)


def test_parquet_stamp_holds_size_mtime_and_footer_digest(tmp_path):
    path = _write(tmp_path / "a.parquet", 0)
    stamp = stamp_file(path, "parquet", layout=True)
    st = os.stat(path)
    assert (stamp.size, stamp.mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert stamp.row_groups == (250,) * 4
    assert stamp == stamp_file(path, "parquet")  # the same file, the same stamp
    assert set(stamp.to_dict()) == {"size", "mtime_ns", "digest"}


def test_same_size_same_layout_other_values_changes_the_digest(tmp_path):
    path = _write(tmp_path / "a.parquet", 0)
    before = stamp_file(path, "parquet")
    mtime = os.stat(path).st_mtime_ns
    _swap(path, 1)
    os.utime(path, ns=(mtime, mtime))  # even with the old time back
    after = stamp_file(path, "parquet")
    assert (after.size, after.mtime_ns) == (before.size, before.mtime_ns)
    assert after.digest != before.digest
    assert differences(before.to_dict(), after.to_dict()) == "content changed"


def test_parquet_stamp_reads_only_the_footer(tmp_path, monkeypatch):
    """The fingerprint's cost: the last 8 bytes and the footer, never a byte of a data page."""
    path = _write(tmp_path / "a.parquet", 0, rows=20_000, row_group_size=5000)
    size = os.path.getsize(path)
    md = pq.read_metadata(path)
    pages_end = max(
        md.row_group(g).column(c).data_page_offset + md.row_group(g).column(c).total_compressed_size
        for g in range(md.num_row_groups)
        for c in range(md.num_columns)
    )
    reads: list[tuple[int, int]] = []
    real = os.pread

    def counting(fd, n, offset):
        reads.append((offset, n))
        return real(fd, n, offset)

    monkeypatch.setattr(fp.os, "pread", counting)
    stamp_file(path, "parquet")
    assert sum(n for _, n in reads) == md.serialized_size + 8
    assert min(offset for offset, _ in reads) >= pages_end
    assert sum(n for _, n in reads) < size / 100


def test_csv_stamp_reads_head_and_tail_only(tmp_path, monkeypatch):
    path = tmp_path / "a.csv"
    path.write_text("x,y\n" + "".join(f"{i},{i % 7}\n" for i in range(200_000)))
    reads: list[int] = []
    real = os.pread
    monkeypatch.setattr(fp.os, "pread", lambda fd, n, o: reads.append(n) or real(fd, n, o))
    stamp_file(str(path), "csv")
    assert sum(reads) <= 2 * fp.BLOCK < path.stat().st_size


def test_csv_append_and_edits(tmp_path):
    path = tmp_path / "a.csv"
    body = "x,y\n" + "".join(f"{i},{i % 7}\n" for i in range(50_000))
    path.write_text(body)
    first = stamp_file(str(path), "csv")
    with open(path, "a") as fh:
        fh.write("1,2\n")
    appended = stamp_file(str(path), "csv")
    assert "size" in differences(first.to_dict(), appended.to_dict())
    assert appended.digest != first.digest
    # a same-length edit in the middle: only the modification time witnesses it
    middle = len(body) // 2
    path.write_text(body[:middle] + ("9" if body[middle] != "9" else "8") + body[middle + 1 :])
    os.utime(path, ns=(first.mtime_ns + 10**9,) * 2)
    edited = stamp_file(str(path), "csv")
    assert edited.digest == first.digest
    assert differences(first.to_dict(), edited.to_dict()) == (
        "modification time changed (content digest the same)"
    )


def test_verify_is_one_stat_while_the_file_is_the_stamped_one(tmp_path, monkeypatch):
    path = _write(tmp_path / "a.parquet", 0)
    stamp = stamp_file(path, "parquet")
    monkeypatch.setattr(fp, "stamp_file", lambda *a, **k: pytest.fail("footer read again"))
    assert verify(path, "parquet", stamp) == stamp.identity


def test_verify_stops_on_a_swap_and_on_a_touch(tmp_path):
    path = _write(tmp_path / "a.parquet", 0)
    stamp = stamp_file(path, "parquet")
    _swap(path, 1)
    with pytest.raises(DataError, match=r"a\.parquet: the file changed during the run"):
        verify(path, "parquet", stamp)
    path2 = _write(tmp_path / "b.parquet", 0)
    stamp2 = stamp_file(path2, "parquet")
    os.utime(path2, ns=(stamp2.mtime_ns + 10**9,) * 2)
    with pytest.raises(DataError, match=r"modification time changed \(content digest the same\)"):
        verify(path2, "parquet", stamp2)
    os.remove(path2)
    with pytest.raises(DataError, match="changed during the run.*cannot be opened"):
        verify(path2, "parquet", stamp2)


def test_a_copy_with_the_same_content_and_time_passes(tmp_path):
    """Another inode (a copy with its time kept) is checked by its footer, and passes."""
    path = _write(tmp_path / "a.parquet", 0)
    stamp = stamp_file(path, "parquet")
    copy = path + ".copy"
    with open(path, "rb") as src, open(copy, "wb") as dst:
        dst.write(src.read())
    os.utime(copy, ns=(stamp.mtime_ns, stamp.mtime_ns))
    os.replace(copy, path)
    identity = verify(path, "parquet", stamp)
    assert identity != stamp.identity and identity[2:] == stamp.identity[2:]


def test_not_a_parquet_file(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="bad.parquet: not a readable Parquet file"):
        stamp_file(str(path), "parquet")


def test_file_uri_stamp_is_the_local_stamp(tmp_path):
    path = _write(tmp_path / "a.parquet", 0)
    local, uri = stamp_file(path, "parquet"), stamp_file("file://" + path, "parquet")
    assert (uri.size, uri.digest) == (local.size, local.digest)
    assert uri.identity == ()


def test_dataset_fingerprint_holds_the_stamps(tmp_path):
    path = _write(tmp_path / "a.parquet", 0)
    fingerprint = open_dataset([path]).fingerprint()
    assert fingerprint["version"] == FINGERPRINT_VERSION
    (entry,) = fingerprint["files"]
    assert entry["digest"] == stamp_file(path, "parquet").digest
    assert entry["mtime_ns"] == os.stat(path).st_mtime_ns
    assert entry["row_groups"] == [250] * 4


def test_handle_cache_checks_every_row_group(tmp_path):
    path = _write(tmp_path / "a.parquet", 0)
    dataset = open_dataset([path])
    handles = HandleCache()
    first = list(dataset.iter_unit(dataset.units[0], ["x"], handles))
    assert first[0][0].num_rows == 250
    _swap(path, 1)
    with pytest.raises(DataError, match=r"a\.parquet: the file changed during the run"):
        list(dataset.iter_unit(dataset.units[1], ["x"], handles))


def test_a_layout_swap_stops_at_the_next_row_group(tmp_path):
    path = _write(tmp_path / "a.parquet", 0)
    dataset = open_dataset([path])
    _swap(path, 1, rows=900, row_group_size=225)
    with pytest.raises(DataError, match="changed during the run"):
        list(dataset.iter_unit(dataset.units[0], ["x"], HandleCache()))


def test_a_unit_must_give_the_rows_promised(tmp_path):
    """The last guard: a row group (or a CSV file read before) giving other rows than the
    layout at the start promised stops the run instead of making a short epoch."""
    path = _write(tmp_path / "a.parquet", 0)
    dataset = open_dataset([path])
    wrong = dataclasses.replace(dataset.units[0], rows=249)
    with pytest.raises(DataError, match="row group 0 has 250 rows, 249 when the run started"):
        list(dataset.iter_unit(wrong, ["x"], HandleCache()))
    csv = tmp_path / "a.csv"
    csv.write_text("x,y\n1,2\n3,4\n")
    dataset = open_dataset([str(csv)])
    assert sum(t.num_rows for t, _ in dataset.iter_unit(dataset.units[0], ["x"])) == 2
    dataset._csv_rows[str(csv)] = 3  # what an earlier read of another version of the file gave
    with pytest.raises(DataError, match=r"a\.csv: the file changed during the run \(2 rows"):
        list(dataset.iter_unit(dataset.units[0], ["x"]))


def test_a_second_opening_is_checked_against_the_first(tmp_path):
    """What a process that opens the input again mid-run (a Dask worker) can ask."""
    path = _write(tmp_path / "a.parquet", 0)
    expected = open_dataset([path]).fingerprint()
    open_dataset([path]).check_fingerprint(expected)  # the same files: nothing to say
    _swap(path, 1)
    with pytest.raises(DataError, match=r"a\.parquet: the file changed during the run \(.*content"):
        open_dataset([path]).check_fingerprint(expected)
