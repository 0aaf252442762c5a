"""CsvOptions: validation at the boundary, serialisation, and its place in the fingerprint."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from streamgd.config import FitConfig
from streamgd.errors import CheckpointError, UsageError
from streamgd.sources import CSV_DTYPES, CsvOptions, open_dataset
from streamgd.training.init import check_compatible

from .helpers import write_csv, write_parquet


def test_defaults_are_todays_behaviour():
    options = CsvOptions()
    assert options.to_dict() == {
        "delimiter": None,
        "header": True,
        "columns": None,
        "null_values": None,
        "dtypes": None,
    }
    assert options.delimiter_for("a.csv") == ","
    assert options.delimiter_for("dir.tsv/a.csv") == ","
    for name in ["a.tsv", "A.TSV", "a.tsv.gz", "a.tsv.bz2", "a.tsv.zst"]:
        assert options.delimiter_for(name) == "\t", name
    assert CsvOptions(delimiter=";").delimiter_for("a.tsv") == ";"


@pytest.mark.parametrize("spelling", ["\t", "\\t", "tab", "TAB"])
def test_tab_can_be_spelled_as_a_shell_or_toml_gives_it(spelling):
    assert CsvOptions(delimiter=spelling).delimiter == "\t"


@pytest.mark.parametrize("bad", ["", ";;", '"', "\n", "\r", "§", 5])
def test_a_bad_delimiter_is_a_usage_error_saying_what_is_allowed(bad):
    with pytest.raises(UsageError, match="one ASCII character") as info:
        CsvOptions(delimiter=bad)
    assert repr(bad) in str(info.value)


def test_lists_become_tuples_so_options_from_toml_or_json_compare_equal():
    a = CsvOptions(header=False, columns=["a", "b"], null_values=["", "?"])
    b = CsvOptions(header=False, columns=("a", "b"), null_values=("", "?"))
    assert a == b and hash(a) == hash(b)
    assert a.columns == ("a", "b") and a.null_values == ("", "?")


def test_options_with_dtypes_are_hashable_and_equal_by_value():
    a = CsvOptions(dtypes={"x": "float32", "id": "string"})
    b = CsvOptions(dtypes={"id": "string", "x": "float32"})
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert CsvOptions(dtypes={}) == CsvOptions()


def test_columns_are_for_headerless_files_only_and_required_there():
    with pytest.raises(UsageError, match="need their column names"):
        CsvOptions(header=False)
    with pytest.raises(UsageError, match="need their column names"):
        CsvOptions(header=False, columns=())
    with pytest.raises(UsageError, match="without a header line"):
        CsvOptions(columns=("a",))
    with pytest.raises(UsageError, match="repeat 'a'"):
        CsvOptions(header=False, columns=("a", "b", "a"))
    with pytest.raises(UsageError, match="list of strings"):
        CsvOptions(header=False, columns="ab")
    with pytest.raises(UsageError, match="true or false"):
        CsvOptions(header="no")


def test_null_values_are_exactly_the_tokens_given():
    assert CsvOptions(null_values=[]).null_values == ()  # nothing is null, not the defaults
    with pytest.raises(UsageError, match="list of strings"):
        CsvOptions(null_values=[None])


def test_an_unknown_dtype_lists_the_allowed_ones():
    with pytest.raises(UsageError) as info:
        CsvOptions(dtypes={"x": "double"})
    message = str(info.value)
    assert "'x'" in message and "'double'" in message
    assert all(name in message for name in CSV_DTYPES)
    with pytest.raises(UsageError, match="map columns to types"):
        CsvOptions(dtypes=[("x", "float64")])


def test_to_dict_is_json_and_round_trips():
    options = CsvOptions(
        delimiter="|",
        header=False,
        columns=("a", "b"),
        null_values=("NA",),
        dtypes={"a": "int64"},
    )
    data = json.loads(json.dumps(options.to_dict()))
    assert CsvOptions.from_dict(data) == options
    assert CsvOptions.from_dict({}) == CsvOptions()
    with pytest.raises(UsageError, match="unknown CSV option.*quote"):
        CsvOptions.from_dict({"quote": "'"})


def test_open_dataset_refuses_what_is_not_csv_options(tmp_path):
    path = write_csv(str(tmp_path / "a.csv"), 0, 3)
    with pytest.raises(UsageError, match="CsvOptions"):
        open_dataset([path], csv={"delimiter": ";"})


# -- the fingerprint --------------------------------------------------------------------------


def test_default_options_add_nothing_to_the_fingerprint(tmp_path):
    """Default options leave the fingerprint without a ``csv`` key (only the file's stamp)."""
    path = write_csv(str(tmp_path / "a.csv"), 0, 5)
    dataset = open_dataset([path])
    stamp = dataset.files[0].stamp
    assert dataset.fingerprint() == {
        "version": 2,
        "files": [
            {"path": path, "size": dataset.files[0].size, "row_groups": [], **stamp.to_dict()}
        ],
    }
    explicit = open_dataset([path], csv=CsvOptions(delimiter=","))  # the same parse
    assert explicit.digest() == dataset.digest()


@pytest.mark.parametrize(
    "options",
    [
        CsvOptions(delimiter=";"),
        CsvOptions(null_values=("", "NA", "?")),
        CsvOptions(dtypes={"y": "float32"}),
        CsvOptions(header=False, columns=("row_id", "y")),
    ],
)
def test_other_parse_options_change_the_fingerprint_of_csv_files_only(tmp_path, options):
    csv_path = write_csv(str(tmp_path / "a.csv"), 0, 5)
    pq_path = write_parquet(str(tmp_path / "b.parquet"), 5, 9, 2)
    default = open_dataset([csv_path, pq_path]).fingerprint()["files"]
    other = open_dataset([csv_path], csv=options).fingerprint()["files"]
    other += open_dataset([pq_path], csv=options).fingerprint()["files"]
    assert other[1] == default[1]  # Parquet files are not parsed with CSV options
    assert other[0] != default[0] and other[0]["csv"]
    assert {k: v for k, v in other[0].items() if k != "csv"} == default[0]


def test_a_resume_with_other_parse_options_is_refused(tmp_path):
    path = str(tmp_path / "a.csv")
    with open(path, "w") as fh:
        fh.write("row_id,y\n1,NA\n2,3\n")
    config = FitConfig(target="y")
    state = SimpleNamespace(config=config.to_dict(), data=open_dataset([path]).fingerprint())
    check_compatible(state, config, open_dataset([path]), "ckpt")  # the same: accepted
    other = open_dataset([path], csv=CsvOptions(null_values=("",)))
    with pytest.raises(CheckpointError, match="changed"):
        check_compatible(state, config, other, "ckpt")
