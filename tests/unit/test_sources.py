"""Sources: resolving paths, one schema for all files, decoding units, and clear errors."""

from __future__ import annotations

import decimal
import gzip
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import streamgd.sources as sources
from streamgd.decode import to_matrix
from streamgd.errors import DataError, UsageError
from streamgd.features import select_features
from streamgd.sources import open_dataset, resolve_paths
from streamgd.sources.schema import missing_in

from .helpers import COLUMNS, id_table, write_csv, write_parquet


def _touch(path, text: str = "x") -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)
    return str(path)


def _decode_all(ds, columns=COLUMNS) -> np.ndarray:
    parts = [
        to_matrix(table, columns) for unit in ds.units for table, _ in ds.iter_unit(unit, columns)
    ]
    return np.concatenate(parts)


# -- resolve_paths ----------------------------------------------------------------------------


def test_files_keep_the_given_order_and_drop_repeats(tmp_path):
    b = write_parquet(str(tmp_path / "b.parquet"), 0, 3, 3)
    a = write_csv(str(tmp_path / "a.csv"), 3, 5)
    assert resolve_paths([b, a, b]) == [(b, "parquet"), (a, "csv")]


def test_extensions_decide_the_format(tmp_path):
    names = {
        "a.parquet": "parquet",
        "b.PARQ": "parquet",
        "c.pq": "parquet",
        "d.csv": "csv",
        "e.tsv": "csv",
        "f.csv.gz": "csv",
    }
    paths = [_touch(tmp_path / name) for name in names]
    assert [kind for _, kind in resolve_paths(paths)] == list(names.values())


def test_a_txt_file_needs_format_csv(tmp_path):
    path = _touch(tmp_path / "notes.txt")
    with pytest.raises(UsageError, match="--format"):
        resolve_paths([path])
    assert resolve_paths([path], "csv") == [(path, "csv")]


def test_glob_expands_to_sorted_files_only(tmp_path):
    paths = [write_parquet(str(tmp_path / f"p{i}.parquet"), 0, 2, 2) for i in (2, 0, 1)]
    os.makedirs(tmp_path / "dir.parquet")  # a directory the pattern also matches
    got = resolve_paths([str(tmp_path / "*.parquet")])
    assert got == [(p, "parquet") for p in sorted(paths)]


def test_recursive_glob(tmp_path):
    a = _touch(tmp_path / "x" / "y" / "a.csv", "row_id\n1\n")
    b = _touch(tmp_path / "b.csv", "row_id\n1\n")
    assert resolve_paths([str(tmp_path / "**" / "*.csv")]) == [(b, "csv"), (a, "csv")]


def test_directory_is_searched_recursively_skipping_hidden_and_marker_files(tmp_path):
    root = tmp_path / "out"
    keep = [
        _touch(root / "part-0.parquet"),
        _touch(root / "part-1.csv"),
        _touch(root / "year=2020" / "part-2.parquet"),
        _touch(root / "year=2020" / "deep" / "part-3.csv.gz"),
    ]
    for skipped in [
        "_SUCCESS",
        "_metadata",
        ".part-0.parquet.crc",
        ".hidden.parquet",
        "README.md",
        "data.bin",
        "_temporary/0/part-9.parquet",
        ".git/x.csv",
        "year=2020/.staging/part-8.parquet",
    ]:
        _touch(root / skipped)
    got = resolve_paths([str(root)])
    assert sorted(p for p, _ in got) == sorted(keep)
    assert dict(got)[keep[0]] == "parquet" and dict(got)[keep[3]] == "csv"


def test_directory_with_format_keeps_only_that_format(tmp_path):
    pq_path = _touch(tmp_path / "a.parquet")
    _touch(tmp_path / "b.csv")
    assert resolve_paths([str(tmp_path)], "parquet") == [(pq_path, "parquet")]


def test_directory_without_data_files_is_an_error_naming_it(tmp_path):
    _touch(tmp_path / "empty" / "_SUCCESS")
    with pytest.raises(UsageError, match="empty"):
        resolve_paths([str(tmp_path / "empty")])


def test_glob_matching_nothing_is_an_error_naming_it(tmp_path):
    pattern = str(tmp_path / "nothing-*.parquet")
    with pytest.raises(UsageError) as info:
        resolve_paths([pattern])
    assert pattern in str(info.value)


def test_missing_path_is_an_error_naming_it(tmp_path):
    missing = str(tmp_path / "no-such.parquet")
    with pytest.raises(UsageError) as info:
        resolve_paths([missing])
    assert missing in str(info.value)


def test_unknown_extension_needs_a_format(tmp_path):
    path = write_parquet(str(tmp_path / "data.bin"), 0, 10, 4)
    with pytest.raises(UsageError) as info:
        resolve_paths([path])
    assert path in str(info.value) and "format" in str(info.value)
    assert resolve_paths([path], "parquet") == [(path, "parquet")]
    ds = open_dataset([path], "parquet")
    assert np.array_equal(_decode_all(ds)[:, 0], np.arange(10))


def test_format_override_wins_over_the_extension(tmp_path):
    path = write_csv(str(tmp_path / "really-csv.parquet"), 0, 5)
    assert resolve_paths([path], "csv") == [(path, "csv")]
    assert np.array_equal(_decode_all(open_dataset([path], "csv"))[:, 0], np.arange(5))


def test_no_paths_or_an_unknown_format_are_usage_errors(tmp_path):
    with pytest.raises(UsageError):
        resolve_paths([])
    path = _touch(tmp_path / "a.csv")
    with pytest.raises(UsageError, match="orc"):
        resolve_paths([path], "orc")


# -- open_dataset: metadata, errors --------------------------------------------------------


def test_parquet_metadata_and_units(tmp_path):
    a = write_parquet(str(tmp_path / "a.parquet"), 0, 10, 4)
    b = write_parquet(str(tmp_path / "b.parquet"), 10, 13, 5)
    ds = open_dataset([a, b])
    assert [f.row_groups for f in ds.files] == [(4, 4, 2), (3,)]
    assert ds.num_rows == 13
    assert [(u.file, u.row_group, u.rows) for u in ds.units] == [
        (0, 0, 4),
        (0, 1, 4),
        (0, 2, 2),
        (1, 0, 3),
    ]
    firsts = [first for u in ds.units for _, first in ds.iter_unit(u, COLUMNS)]
    assert firsts == [0, 4, 8, 0]  # row numbers within each file
    assert np.array_equal(_decode_all(ds)[:, 0], np.arange(13))


def test_csv_row_count_is_unknown_until_read(tmp_path):
    ds = open_dataset([write_csv(str(tmp_path / "a.csv"), 0, 5)])
    assert ds.num_rows is None and ds.units[0].rows is None and ds.units[0].row_group == -1


def test_fingerprint_changes_with_the_files(tmp_path):
    path = write_parquet(str(tmp_path / "a.parquet"), 0, 10, 4)
    d1 = open_dataset([path]).digest()
    assert open_dataset([path]).digest() == d1
    write_parquet(path, 0, 11, 4)
    assert open_dataset([path]).digest() != d1


def test_not_parquet_despite_the_extension(tmp_path):
    path = _touch(tmp_path / "fake.parquet", "row_id,y\n1,2\n")
    with pytest.raises(DataError) as info:
        open_dataset([path])
    assert info.value.path == path and path in str(info.value)


@pytest.mark.parametrize("keep", [0, 4, 100, 0.5, -8, -1])
def test_truncated_parquet_is_a_data_error_naming_the_file(tmp_path, keep):
    path = write_parquet(str(tmp_path / "t.parquet"), 0, 2000, 500)
    with open(path, "rb") as fh:
        data = fh.read()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    with open(path, "wb") as fh:
        fh.write(data[:cut])
    with pytest.raises(DataError) as info:
        open_dataset([path])
    assert info.value.path == path and path in str(info.value)


def test_corrupt_row_group_is_a_data_error_when_read(tmp_path):
    """Intact footer, damaged page header: opening works, reading that row group fails."""
    path = write_parquet(str(tmp_path / "c.parquet"), 0, 1000, 500)
    with open(path, "rb") as fh:
        data = bytearray(fh.read())
    data[4:40] = bytes(b ^ 0xFF for b in data[4:40])  # the first page header, after "PAR1"
    with open(path, "wb") as fh:
        fh.write(data)
    ds = open_dataset([path])
    with pytest.raises(DataError) as info:
        list(ds.iter_unit(ds.units[0], COLUMNS))
    assert info.value.path == path and "row group 0" in str(info.value)


def test_empty_csv_is_a_data_error(tmp_path):
    path = _touch(tmp_path / "empty.csv", "")
    with pytest.raises(DataError) as info:
        open_dataset([path])
    assert info.value.path == path


def test_a_column_some_files_lack_is_noted_and_marked(tmp_path):
    a = write_parquet(str(tmp_path / "a.parquet"), 0, 3, 3)
    b = str(tmp_path / "b.parquet")
    pq.write_table(pa.table({"row_id": np.arange(3)}), b)
    dataset = open_dataset([a, b])
    assert missing_in(dataset.schema.field("y")) == [b]
    assert missing_in(dataset.schema.field("row_id")) == []
    assert any("'y'" in note and b in note for note in dataset.notes)


def test_an_extra_column_is_noted_and_left_out_of_the_default_features(tmp_path):
    a = write_parquet(str(tmp_path / "a.parquet"), 0, 3, 3)
    b = str(tmp_path / "b.parquet")
    pq.write_table(id_table(3, 6).append_column("z", pa.array([1.0, 2.0, 3.0])), b)
    dataset = open_dataset([a, b])
    assert missing_in(dataset.schema.field("z")) == [a]
    assert any("'z'" in note and a in note for note in dataset.notes)
    assert "z" not in select_features(dataset.schema, "y", None, path=a)
    with pytest.raises(DataError) as info:
        select_features(dataset.schema, "y", ["z"], path=a)
    assert a in str(info.value) and "'z'" in str(info.value)


def test_duplicate_column_names_are_an_error_naming_them(tmp_path):
    path = str(tmp_path / "dup.csv")
    with open(path, "w") as f:
        f.write("x,x,y\n1,2,3\n")
    with pytest.raises(DataError) as info:
        open_dataset([path])
    assert "dup.csv" in str(info.value) and "'x'" in str(info.value)


@pytest.mark.parametrize("string_first", [False, True])
def test_string_versus_number_names_both_files_and_the_column(tmp_path, string_first):
    num = write_parquet(str(tmp_path / "num.parquet"), 0, 3, 3)
    txt = str(tmp_path / "txt.parquet")
    pq.write_table(pa.table({"row_id": np.arange(3), "y": ["a", "b", "c"]}), txt)
    paths = [txt, num] if string_first else [num, txt]
    with pytest.raises(DataError) as info:
        open_dataset(paths)
    msg = str(info.value)
    assert num in msg and txt in msg
    assert info.value.column == "y"


def test_int_and_float_columns_unify_to_float(tmp_path):
    a = str(tmp_path / "a.parquet")
    b = str(tmp_path / "b.parquet")
    c = str(tmp_path / "c.parquet")
    pq.write_table(pa.table({"row_id": np.arange(3), "y": np.array([1, 2, 3], np.int32)}), a)
    pq.write_table(pa.table({"row_id": np.arange(3, 5), "y": [0.5, 1.5]}), b)
    pq.write_table(pa.table({"row_id": np.arange(5, 6), "y": np.array([7], np.int64)}), c)
    ds = open_dataset([a, b, c])
    assert pa.types.is_floating(ds.schema.field("y").type)
    assert np.array_equal(_decode_all(ds)[:, 1], [1, 2, 3, 0.5, 1.5, 7])


def test_safe_widening_keeps_the_wider_type_and_notes_column_types_and_files(tmp_path):
    paths = [str(tmp_path / f"{name}.parquet") for name in "abcd"]
    kinds = [(np.int32, np.float32), (np.int64, np.float64)] + [(np.int32, np.float64)] * 2
    for i, (path, (ints, floats)) in enumerate(zip(paths, kinds, strict=True)):
        ids = np.arange(2 * i, 2 * i + 2)
        pq.write_table(pa.table({"row_id": ids.astype(ints), "y": ids.astype(floats)}), path)
    ds = open_dataset(paths)
    assert ds.schema.field("row_id").type == pa.int64()  # not float64: nothing is lost
    assert ds.schema.field("y").type == pa.float64()
    a, b, c, d = paths
    assert ds.notes == (
        f"column 'row_id' is read as int64: widened from int32 in {a}, {c}, {d}",
        f"column 'y' is read as float64: widened from float32 in {a}",
    )
    assert np.array_equal(_decode_all(ds)[:, 0], np.arange(8))
    assert open_dataset([c, d]).notes == ()  # the same types: no note


def test_a_note_names_a_few_files_and_counts_the_rest(tmp_path):
    paths = []
    for i in range(6):
        paths.append(str(tmp_path / f"p{i}.parquet"))
        kind = np.int64 if i == 0 else np.int16
        pq.write_table(pa.table({"row_id": np.arange(1, dtype=kind), "y": [1.0]}), paths[-1])
    (note,) = open_dataset(paths).notes
    assert note == (
        f"column 'row_id' is read as int64: widened from int16 in {paths[1]}, {paths[2]}, "
        f"{paths[3]} and 2 more file(s)"
    )


@pytest.mark.parametrize(
    ("a", "b", "common"),
    [
        (pa.int8(), pa.int64(), pa.int64()),
        (pa.uint32(), pa.int32(), pa.int64()),
        (pa.uint16(), pa.int32(), pa.int32()),
        (pa.float16(), pa.float32(), pa.float32()),
        (pa.int64(), pa.float32(), pa.float64()),
        (pa.uint64(), pa.int64(), pa.float64()),
        (pa.bool_(), pa.int8(), pa.float64()),
        (pa.null(), pa.string(), pa.string()),
        (pa.string(), pa.int64(), None),
        (pa.string(), pa.large_string(), None),
    ],
)
def test_widening_is_symmetric_and_lossless_where_it_can_be(a, b, common):
    assert sources.schema.widen(a, b) == common
    assert sources.schema.widen(b, a) == common


def test_incompatible_types_after_a_widening_name_a_file_with_the_other_type(tmp_path):
    paths = [str(tmp_path / f"{name}.parquet") for name in "abc"]
    pq.write_table(pa.table({"row_id": np.arange(2, dtype=np.int32), "y": [1.0, 2]}), paths[0])
    pq.write_table(pa.table({"row_id": np.arange(2, dtype=np.int64), "y": [1.0, 2]}), paths[1])
    pq.write_table(pa.table({"row_id": ["a", "b"], "y": [1.0, 2]}), paths[2])
    with pytest.raises(DataError) as info:
        open_dataset(paths)
    assert info.value.path == paths[2] and info.value.column == "row_id"
    assert f"type string here but int32 in {paths[0]}" in str(info.value)


def test_parquet_and_csv_mix(tmp_path):
    a = write_parquet(str(tmp_path / "a.parquet"), 0, 4, 2)
    b = write_csv(str(tmp_path / "b.csv"), 4, 9)
    ds = open_dataset([a, b])
    rows = _decode_all(ds)
    assert np.array_equal(rows[:, 0], np.arange(9))
    assert np.array_equal(rows[:, 1], 0.5 * np.arange(9) + 3)


def test_csv_integers_widened_so_a_later_fraction_parses(tmp_path, monkeypatch):
    """Types come from the first block only; an integer column is read as float64, so a
    '1.5' several blocks later still parses (as does a later empty field, as null)."""
    monkeypatch.setattr(sources.csv, "CSV_BLOCK_SIZE", 1024)
    path = str(tmp_path / "ints.csv")
    n = 2000
    with open(path, "w") as fh:
        fh.write("row_id,y\n")
        for i in range(n - 2):
            fh.write(f"{i},{i % 7}\n")
        fh.write(f"{n - 2},1.5\n{n - 1},\n")
    ds = open_dataset([path])
    assert ds.schema.field("y").type == pa.float64()
    assert ds.schema.field("row_id").type == pa.float64()
    pieces = list(ds.iter_unit(ds.units[0], COLUMNS))
    assert len(pieces) > 3
    rows = np.concatenate([to_matrix(t, COLUMNS) for t, _ in pieces])
    assert np.array_equal(rows[:, 0], np.arange(n))
    assert np.array_equal(rows[:-2, 1], np.arange(n - 2) % 7)
    assert rows[-2, 1] == 1.5 and np.isnan(rows[-1, 1])
    firsts = [first for _, first in pieces]
    assert firsts == list(np.cumsum([0] + [t.num_rows for t, _ in pieces[:-1]]))


def test_csv_larger_than_the_default_block_size(tmp_path):
    """Without shrinking the block size: a CSV of more than CSV_BLOCK_SIZE bytes whose only
    fraction is in its last line."""
    path = str(tmp_path / "big.csv")
    n = sources.CSV_BLOCK_SIZE // 6  # lines of 6 to 10 bytes: 1.5 to 2.5 blocks
    ids = np.arange(n)
    with open(path, "w") as fh:
        fh.write("row_id,y\n")
        fh.write("".join(f"{i},{i % 10}\n" for i in ids[:-1]))
        fh.write(f"{n - 1},2.25\n")
    assert os.path.getsize(path) > sources.CSV_BLOCK_SIZE
    ds = open_dataset([path])
    rows = np.concatenate([to_matrix(t, COLUMNS) for t, _ in ds.iter_unit(ds.units[0], COLUMNS)])
    assert np.array_equal(rows[:, 0], ids)
    assert rows[-1, 1] == 2.25 and np.array_equal(rows[:-1, 1], ids[:-1] % 10)


def test_csv_parse_error_later_in_the_file_names_it(tmp_path, monkeypatch):
    monkeypatch.setattr(sources.csv, "CSV_BLOCK_SIZE", 1024)
    path = str(tmp_path / "bad.csv")
    with open(path, "w") as fh:
        fh.write("row_id,y\n")
        fh.write("".join(f"{i},{i}\n" for i in range(1000)))
        fh.write("1000,oops\n")
    ds = open_dataset([path])
    with pytest.raises(DataError) as info:
        list(ds.iter_unit(ds.units[0], COLUMNS))
    assert info.value.path == path


def test_compressed_csv(tmp_path):
    path = str(tmp_path / "a.csv.gz")
    with gzip.open(path, "wb") as fh:
        pacsv.write_csv(id_table(0, 50), fh)
    rows = _decode_all(open_dataset([path]))
    assert np.array_equal(rows[:, 0], np.arange(50))


def test_tsv_is_tab_separated(tmp_path):
    path = _touch(tmp_path / "a.tsv", "row_id\ty\n1\t2.5\n2\t3.5\n")
    rows = _decode_all(open_dataset([path]))
    assert np.array_equal(rows, [[1, 2.5], [2, 3.5]])


def test_tsv_in_a_directory_name_does_not_make_a_csv_tab_separated(tmp_path):
    path = write_csv(str(tmp_path / "exports.tsv.d" / "a.csv"), 0, 5)
    ds = open_dataset([path])
    assert ds.schema.names == COLUMNS


# -- to_matrix ----------------------------------------------------------------------------------


def test_to_matrix_decodes_numeric_types_and_nulls_as_nan():
    table = pa.table(
        {
            "i": pa.array([1, None, 3], pa.int64()),
            "f": pa.array([0.5, 1.5, None], pa.float32()),
            "b": pa.array([True, False, None]),
            "d": pa.array([decimal.Decimal("1.25"), None, decimal.Decimal("-2")]),
            "n": pa.array([None, None, None], pa.null()),
        }
    )
    expected = np.array(
        [
            [1, 0.5, 1, 1.25, np.nan],
            [np.nan, 1.5, 0, np.nan, np.nan],
            [3, np.nan, np.nan, -2, np.nan],
        ]
    )
    for source in (table, table.to_batches()[0]):
        got = to_matrix(source, ["i", "f", "b", "d", "n"])
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, expected)
    # column selection and order follow the request
    np.testing.assert_array_equal(to_matrix(table, ["b", "i"]), expected[:, [2, 0]])


def test_later_csv_files_are_checked_by_their_head(tmp_path):
    """open_dataset parses the first PROBE_BLOCK_SIZE bytes of a later file with the fixed
    types: a bad value there is an error naming its line before training; one past them is
    reported when the file is read."""
    first = tmp_path / "a.csv"
    first.write_text("x,y\n" + "".join(f"{i},{i * 0.5}\n" for i in range(100)))
    bad = tmp_path / "b.csv"
    bad.write_text("x,y\n1,2\nnot a number,3\n")
    with pytest.raises(DataError, match="line 3"):
        sources.open_dataset([str(first), str(bad)])
    late = tmp_path / "c.csv"
    rows = sources.PROBE_BLOCK_SIZE // 4
    late.write_text("x,y\n" + "1,2\n" * rows + "oops,3\n")
    ds = sources.open_dataset([str(first), str(late)])
    with pytest.raises(DataError, match=f"line {rows + 2}"):
        for _ in ds.iter_unit(ds.units[1], ["x", "y"]):
            pass
