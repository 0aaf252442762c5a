"""A corpus of awkward CSV files, each with the outcome it must have: the values read, or the
exact place of the error (file, physical line, data row, column).

Every case is driven through ``open_dataset`` + ``Dataset.iter_unit`` and through the
``Prefetcher`` the trainer uses; the well-formed ones with default options also through
``streamgd.fit``. Lines count from 1 and include the header line, blank lines and the lines
inside quoted values; rows count data records from 1.
"""

from __future__ import annotations

import bz2
import gzip
import os
import tracemalloc
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pytest

import streamgd
import streamgd.sources as sources
from streamgd.batches import Prefetcher
from streamgd.decode import Decoder, to_matrix
from streamgd.errors import DataError, UsageError
from streamgd.sources import CsvError, CsvOptions, open_dataset

from .helpers import trivial_prepare

BOM = b"\xef\xbb\xbf"
SMALL_BLOCK = 1024  # bytes: "late" below means several blocks into the file


@dataclass(frozen=True)
class Fails:
    """The expected error: a CsvError at ``line``/``row``/``column`` (a DataError without a
    place when ``line`` is None), whose message contains ``says``."""

    says: str
    line: int | None = None
    row: int | None = None
    column: str | None = None
    kind: type = CsvError
    at_open: bool = False  # raised by open_dataset (the first block) rather than when read


@dataclass(frozen=True)
class Case:
    name: str  # the file name: its extension says the format and the compression
    data: bytes
    expect: dict | Fails  # column -> values, or the failure
    options: CsvOptions | None = None
    small_blocks: bool = False
    types: dict = field(default_factory=dict)  # column -> expected Arrow type


def _numbers(n: int, *, start: int = 0) -> bytes:
    return "".join(f"{i},{i * 0.5}\n" for i in range(start, start + n)).encode()


# 2000 rows of about 10 bytes: with SMALL_BLOCK, some twenty blocks
LONG = 2000

CASES = [
    Case(
        "quoted.csv",
        b'id,name,x\n1,"a, b",1.5\n2,"say ""hi""",2.5\n3,plain,3.5\n',
        {"id": [1.0, 2.0, 3.0], "name": ["a, b", 'say "hi"', "plain"], "x": [1.5, 2.5, 3.5]},
    ),
    Case(
        "newlines.csv",
        b'id,note,x\n1,"two\nlines",1\n2,"crlf\r\ninside",2\n3,"",3\n',
        {"id": [1.0, 2.0, 3.0], "note": ["two\nlines", "crlf\r\ninside", None], "x": [1.0, 2, 3]},
    ),
    Case("crlf.csv", b"id,x\r\n1,2\r\n3,4\r\n", {"id": [1.0, 3.0], "x": [2.0, 4.0]}),
    Case("bom.csv", BOM + b"id,x\n1,2\n3,4\n", {"id": [1.0, 3.0], "x": [2.0, 4.0]}),
    Case(
        "blank-lines.csv",
        b"\nid,x\n\n1,2\n\n\n3,4\n\n",
        {"id": [1.0, 3.0], "x": [2.0, 4.0]},
    ),
    Case(
        "header-only.csv",
        b"id,x\n",
        {"id": [], "x": []},
        types={"id": pa.float64(), "x": pa.float64()},
    ),
    Case("header-only-no-newline.csv", b"id,x", {"id": [], "x": []}),
    Case("header-only-crlf-bom.csv", BOM + b"id,x\r\n", {"id": [], "x": []}),
    Case(
        "tabs.tsv",
        b'id\tname\tx\n1\ta,b\t0.5\n2\t"q\tr"\t1.5\n',
        {"id": [1.0, 2.0], "name": ["a,b", "q\tr"], "x": [0.5, 1.5]},
    ),
    Case(
        "semicolons.csv",
        b"id;x\n1;2,5\n",
        {"id": [1.0], "x": ["2,5"]},  # a decimal comma stays text: no locale guessing
        options=CsvOptions(delimiter=";"),
    ),
    Case(
        "no-header.csv",
        BOM + b"1,2\n3,4\n",
        {"id": [1.0, 3.0], "x": [2.0, 4.0]},
        options=CsvOptions(header=False, columns=("id", "x")),
    ),
    Case(
        "nulls.csv",
        b"id,x,s\n1,?,NA\n2,,\n3,NULL,ok\nNA,5,?\n",
        {
            "id": [1.0, 2.0, 3.0, None],
            "x": [None, None, "NULL", "5"],
            "s": [None, None, "ok", None],
        },
        options=CsvOptions(null_values=("", "NA", "?")),
    ),
    Case(
        "default-nulls.csv",
        b"id,x\n1,NA\n2,\n3,NaN\n4,null\n",
        {"id": [1.0, 2.0, 3.0, 4.0], "x": [None, None, None, None]},
    ),
    Case(
        "dtypes.csv",
        b"zip,x,flag,n\n01234,1.5,true,7\n99999,2.5,0,8\n",
        {"zip": ["01234", "99999"], "x": [1.5, 2.5], "flag": [True, False], "n": [7, 8]},
        options=CsvOptions(dtypes={"zip": "string", "x": "float32", "flag": "bool", "n": "int64"}),
        types={"zip": pa.string(), "x": pa.float32(), "flag": pa.bool_(), "n": pa.int64()},
    ),
    Case(
        "late-fraction.csv",
        b"id,x\n" + _numbers(LONG) + b"7,1.25\n",
        {"id": [*range(LONG), 7], "x": [*(i * 0.5 for i in range(LONG)), 1.25]},
        small_blocks=True,
    ),
    # -- failures -------------------------------------------------------------------------
    Case("empty.csv", b"", Fails("empty", kind=DataError, at_open=True)),
    Case("blank-only.csv", b"\n\n", Fails("empty", kind=DataError, at_open=True)),
    Case("bom-only.csv", BOM, Fails("empty", kind=DataError, at_open=True)),
    Case(
        "bad-first-block.csv",
        b"id,x\n1,2\n3,abc\n",
        Fails("cannot parse 'abc' as float64", line=3, row=2, column="x", at_open=True),
        options=CsvOptions(dtypes={"x": "float64"}),
    ),
    Case(
        "bad-late-block.csv",
        b"id,x\n" + _numbers(LONG) + b'\n"a\nmulti-line id",5\n\n' + b"2001,abc\n",
        # lines: header 1, numbers 2..2001, blank 2002, the quoted record 2003-2004,
        # blank 2005, the bad one 2006 (data row 2002)
        Fails("cannot parse 'abc' as float64", line=2006, row=2002, column="x"),
        options=CsvOptions(dtypes={"id": "string"}),  # so that the multi-line id is valid
        small_blocks=True,
    ),
    Case(
        "bad-late-block-crlf.csv",
        (b"id,x\n" + _numbers(LONG)).replace(b"\n", b"\r\n") + b"2000,1e5x\r\n",
        Fails("cannot parse '1e5x' as float64", line=2002, row=2001, column="x"),
        small_blocks=True,
    ),
    Case(
        "bad-value-with-newline.csv",
        b"id,x\n" + _numbers(LONG) + b'9,"1\n2"\n',
        Fails(r"cannot parse '1\n2' as float64", line=2002, row=2001, column="x"),
        small_blocks=True,
    ),
    Case(
        "bad-padded.csv",
        b"id,x\n" + _numbers(LONG) + b"1,\t abc \n",
        Fails("cannot parse 'abc' as float64", line=2002, row=2001, column="x"),
        small_blocks=True,
    ),
    Case(
        "bad-int.csv",
        b"id,n\n" + _numbers(LONG).replace(b".0\n", b"\n").replace(b".5\n", b"\n") + b"1,2.5\n",
        Fails("cannot parse '2.5' as int64", line=2002, row=2001, column="n"),
        options=CsvOptions(dtypes={"n": "int64"}),
        small_blocks=True,
    ),
    Case(
        "bad-bool.csv",
        b"id,flag\n1,true\n2,yes\n",
        Fails("cannot parse 'yes' as bool", line=3, row=2, column="flag", at_open=True),
        options=CsvOptions(dtypes={"flag": "bool"}),
    ),
    Case(
        "bad-utf8.csv",
        b"id,s\n" + b"".join(b"%d,s%d\n" % (i, i) for i in range(LONG)) + b"5,caf\xe9\n",
        Fails("not valid UTF-8", line=2002, row=2001, column="s"),
        small_blocks=True,
    ),
    Case(
        "ragged-many.csv",
        b"id,x\n1,2\n3,4,5\n",
        Fails("expected 2 fields, got 3", line=3, row=2, at_open=True),
    ),
    Case(
        "ragged-few.csv",
        b"id,x\n1,2\n\n3\n",
        Fails("expected 2 fields, got 1", line=4, row=2, at_open=True),
    ),
    Case(
        "ragged-late.csv",
        b"id,x\n" + _numbers(LONG) + b'"a\nb",1\n' + b"1,2,3\n",
        Fails("expected 2 fields, got 3", line=2004, row=2002),
        small_blocks=True,
    ),
    Case(
        "spaces-line.csv",  # a line of only spaces or tabs is a blank line
        b"id,x\n1,2\n   \n3,4\n\t \n",
        {"id": [1.0, 3.0], "x": [2.0, 4.0]},
    ),
    Case(
        "spaces-line-then-bad.csv",  # and is not counted as a row
        b"id,x\n1,2\n   \n3\n",
        Fails("expected 2 fields, got 1", line=4, row=2, at_open=True),
    ),
    Case(
        "no-header-count.csv",
        b"1,2,3\n4,5,6\n",
        Fails("first row has 3 fields but 2 column names", line=1, row=1, at_open=True),
        options=CsvOptions(header=False, columns=("a", "b")),
    ),
]

# the same awkward content, compressed each way pyarrow decompresses
_AWKWARD = BOM + b'id,note,x\r\n1,"a, b",1.5\r\n\r\n2,"two\nlines",2.5\r\n'
_AWKWARD_VALUES = {"id": [1.0, 2.0], "note": ["a, b", "two\nlines"], "x": [1.5, 2.5]}
_BAD_LATE = b"id,x\n" + _numbers(LONG) + b"\n2000,abc\n"


def _zstd(data: bytes) -> bytes:
    return pa.Codec("zstd").compress(data, asbytes=True)


COMPRESSORS = {".gz": gzip.compress, ".bz2": bz2.compress, ".zst": _zstd}
for _ext, _compress in COMPRESSORS.items():
    CASES += [
        Case(f"awkward.csv{_ext}", _compress(_AWKWARD), _AWKWARD_VALUES),
        Case(
            f"bad-late.csv{_ext}",
            _compress(_BAD_LATE),
            Fails("cannot parse 'abc' as float64", line=2003, row=2001, column="x"),
            small_blocks=True,
        ),
    ]
CASES.append(Case("tabs.tsv.gz", gzip.compress(b"a\tb\n1\t2\n"), {"a": [1.0], "b": [2.0]}))


def _write(tmp_path, case: Case) -> str:
    path = str(tmp_path / case.name)
    with open(path, "wb") as fh:
        fh.write(case.data)
    return path


def _read(dataset) -> dict:
    """Every column of every unit, through Dataset.iter_unit, as Python values."""
    names = dataset.schema.names
    out: dict[str, list] = {name: [] for name in names}
    for unit in dataset.units:
        for table, _ in dataset.iter_unit(unit, names):
            for name in names:
                out[name] += table.column(name).to_pylist()
    return out


def _check_failure(info, case: Case, path: str) -> None:
    expect = case.expect
    assert isinstance(expect, Fails)
    error = info.value
    assert type(error) is expect.kind, error
    message = str(error)
    assert error.path == path and message.startswith(f"{path}: ")
    assert expect.says in message
    assert "\n" not in message
    if expect.kind is CsvError:
        assert (error.line, error.row, error.column) == (expect.line, expect.row, expect.column)
        column = f"column {expect.column!r}: " if expect.column else ""
        assert message.startswith(f"{path}: line {expect.line}: {column}")


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request, monkeypatch):
    case = request.param
    if case.small_blocks:
        monkeypatch.setattr(sources.csv, "CSV_BLOCK_SIZE", SMALL_BLOCK)
    return case


def test_corpus_through_the_dataset(tmp_path, case):
    path = _write(tmp_path, case)
    if isinstance(case.expect, Fails):
        opened = False
        with pytest.raises(DataError) as info:
            dataset = open_dataset([path], csv=case.options)
            opened = True
            _read(dataset)
        _check_failure(info, case, path)
        assert opened is not case.expect.at_open  # the first block is checked when opened
        return
    dataset = open_dataset([path], csv=case.options)
    assert dataset.schema.names == list(case.expect)
    for name, kind in case.types.items():
        assert dataset.schema.field(name).type == kind
    got = _read(dataset)
    for name, values in case.expect.items():
        if dataset.schema.field(name).type == pa.float32():
            np.testing.assert_array_equal(np.float32(got[name]), np.float32(values))
        else:
            assert got[name] == values, name
    if case.small_blocks:  # the point of the case: more than one block was read
        assert len(list(dataset.iter_unit(dataset.units[0], dataset.schema.names))) > 3


def _numeric(dataset) -> list[str]:
    return [f.name for f in dataset.schema if sources.is_numeric(f.type)]


def test_corpus_through_the_prefetcher(tmp_path, case):
    """The trainer's decoding path: the same values, the same errors (raised on the consumer's
    thread)."""
    path = _write(tmp_path, case)
    try:
        dataset = open_dataset([path], csv=case.options)
    except DataError:
        assert isinstance(case.expect, Fails) and case.expect.at_open
        return
    columns = _numeric(dataset)
    expect = case.expect
    if isinstance(expect, Fails) and expect.column is not None and expect.column not in columns:
        expect = None  # the trainer never reads a text column: its bad text does not matter
    prefetcher = Prefetcher(
        dataset, range(len(dataset.units)), Decoder(tuple(columns), trivial_prepare)
    )
    try:
        if isinstance(expect, Fails):
            with pytest.raises(DataError) as info:
                list(prefetcher)
            _check_failure(info, case, path)
            return
        rows = np.concatenate([chunk.rows for chunk in prefetcher])
    finally:
        prefetcher.close()
    if expect is None:
        assert len(rows) == case.data.count(b"\n") - 1
        return
    expected = np.array(
        [[np.nan if v is None else float(v) for v in case.expect[c]] for c in columns]
    ).T.reshape(-1, len(columns))
    np.testing.assert_allclose(rows, expected, rtol=1e-6)


# -- end to end: fit on awkward files with default options ------------------------------------


def _awkward_files(tmp_path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """y = 2 x - 3 over rows split across awkward files of every kind fit reads by default."""
    x = np.arange(40, dtype=np.float64) / 4
    y = 2 * x - 3
    rows = [
        f'{i},"note {i}, with ""quotes""\nand a line",{float(x[i])!r},{float(y[i])!r}'
        for i in range(40)
    ]
    header = "id,note,x,y"
    parts = [rows[:10], rows[10:20], rows[20:30], rows[30:]]
    texts = [
        BOM + ("\r\n".join([header, *parts[0]]) + "\r\n").encode(),  # BOM and CRLF
        ("\n\n".join([header, *parts[1]]) + "\n\n").encode(),  # blank lines between rows
        ("\n".join([header, *parts[2]])).encode(),  # no final line break
        ("\n".join([header, *parts[3]]) + "\n").encode(),
    ]
    names = ["a.csv", "b.csv.gz", "c.csv.bz2", "d.csv.zst"]
    compress = [bytes, gzip.compress, bz2.compress, _zstd]
    paths = []
    for name, text, squeeze in zip(names, texts, compress, strict=True):
        path = str(tmp_path / name)
        with open(path, "wb") as fh:
            fh.write(squeeze(text))
        paths.append(path)
    empty = str(tmp_path / "e.csv")  # a header-only part, as Spark writes for empty ones
    with open(empty, "w") as fh:
        fh.write(header + "\n")
    return [empty, *paths], x, y


def test_fit_on_awkward_csv_files(tmp_path):
    paths, x, y = _awkward_files(tmp_path)
    dataset = open_dataset(paths)
    assert dataset.schema.field("note").type == pa.string()
    got = np.concatenate(
        [
            to_matrix(t, ["x", "y"])
            for u in dataset.units
            for t, _ in dataset.iter_unit(u, ["x", "y"])
        ]
    )
    np.testing.assert_array_equal(got, np.c_[x, y])
    model = streamgd.fit(paths, target="y", features=["x"], solver="normal", epochs=1)
    coef, intercept = model.coefficients()
    assert coef["x"] == pytest.approx(2.0, rel=1e-6)  # rows stream as float32
    assert intercept == pytest.approx(-3.0, rel=1e-6)


def test_fit_reports_a_bad_value_with_its_line(tmp_path, monkeypatch):
    monkeypatch.setattr(sources.csv, "CSV_BLOCK_SIZE", SMALL_BLOCK)
    path = str(tmp_path / "bad.csv")
    with open(path, "wb") as fh:
        fh.write(b"x,y\n" + _numbers(LONG) + b"1,oops\n")
    with pytest.raises(CsvError) as info:
        streamgd.fit([path], target="y", epochs=1, stats_rows=0)
    assert (info.value.line, info.value.row, info.value.column) == (LONG + 2, LONG + 1, "y")


def test_a_header_only_first_file_does_not_fix_the_types(tmp_path):
    """Types come from the first block with data: a header-only first file (Spark writes those
    for empty partitions) would otherwise make every column float64."""
    first = tmp_path / "part-0.csv"
    first.write_text("id,name\n")
    second = tmp_path / "part-1.csv"
    second.write_text("id,name\n1,ann\n2,bob\n")
    dataset = open_dataset([str(first), str(second)])
    assert dataset.schema.field("name").type == pa.string()
    assert dataset.schema.field("id").type == pa.float64()
    assert _read(dataset) == {"id": [1.0, 2.0], "name": ["ann", "bob"]}


def test_a_later_file_is_parsed_with_the_first_files_types(tmp_path):
    """The second file's first block would infer string for x; it is parsed as float64, and
    its bad value is reported with its line when the dataset is opened."""
    a = tmp_path / "a.csv"
    a.write_text("id,x\n1,0.5\n")
    b = tmp_path / "b.csv"
    b.write_text("id,x\n2,1.5\n3,n/a?\n")
    with pytest.raises(CsvError) as info:
        open_dataset([str(a), str(b)])
    assert info.value.path == str(b)
    assert (info.value.line, info.value.row, info.value.column) == (3, 2, "x")


def test_columns_of_other_files_may_come_in_another_order(tmp_path):
    a = tmp_path / "a.csv"
    a.write_text("id,x\n1,0.5\n")
    b = tmp_path / "b.csv"
    b.write_text("x,id\n1.5,2\n")
    assert _read(open_dataset([str(a), str(b)])) == {"id": [1.0, 2.0], "x": [0.5, 1.5]}


def test_errors_in_a_column_not_read_do_not_matter(tmp_path, monkeypatch):
    """Only the columns asked for are converted; a ragged row is an error whatever is read."""
    monkeypatch.setattr(sources.csv, "CSV_BLOCK_SIZE", SMALL_BLOCK)
    path = str(tmp_path / "a.csv")
    with open(path, "wb") as fh:
        fh.write(b"id,x\n" + _numbers(LONG) + b"oops,1\n")
    dataset = open_dataset([path])
    rows = [t.num_rows for t, _ in dataset.iter_unit(dataset.units[0], ["x"])]
    assert sum(rows) == LONG + 1
    with pytest.raises(CsvError, match="line 2002: column 'id'"):
        list(dataset.iter_unit(dataset.units[0], ["id"]))


def test_an_unreadable_compressed_file_is_a_data_error_naming_it(tmp_path):
    path = str(tmp_path / "broken.csv.gz")
    data = gzip.compress(b"id,x\n" + _numbers(50_000))
    with open(path, "wb") as fh:
        fh.write(data[: len(data) // 2])  # cut in the middle of the stream
    with pytest.raises(DataError) as info:
        dataset = open_dataset([path])
        _read(dataset)
    assert info.value.path == path and "\n" not in str(info.value)


def test_locating_an_error_streams_the_file(tmp_path):
    """Finding the line of a bad value reads the file again, as a stream: Python's memory
    (where the csv module's records live; tracemalloc sees it) stays far below the file's
    size, even for a bad value at its end."""
    path = str(tmp_path / "big.csv")
    with open(path, "wb") as fh:
        fh.write(b"id,x\n")
        for start in range(0, 1_000_000, 100_000):
            fh.write(_numbers(100_000, start=start))
        fh.write(b"1,oops\n")
    size = os.path.getsize(path)
    assert size > 10_000_000
    dataset = open_dataset([path])
    tracemalloc.start()
    try:
        with pytest.raises(CsvError) as info:
            list(dataset.iter_unit(dataset.units[0], ["x"]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (info.value.line, info.value.row) == (1_000_002, 1_000_001)
    assert peak < size / 10, (peak, size)


def test_unknown_dtype_column_is_a_usage_error_listing_the_columns(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("id,x\n1,2\n")
    with pytest.raises(UsageError) as info:
        open_dataset([str(path)], csv=CsvOptions(dtypes={"z": "float64"}))
    message = str(info.value)
    assert str(path) in message and "'z'" in message and "id, x" in message
