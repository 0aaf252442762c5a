"""Every error a user can cause on the command line: a one-line message on stderr that names
the file, column or row, no traceback, nothing on stdout, and the documented exit code
(2 usage error, 1 data or runtime error). Driven through ``streamgd.cli.run``, the one place
where errors become exit codes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from integration_support import (
    invoke_ok,
    read_tables,
    run_cli,
    with_nulls,
    with_values,
    write_synthetic,
    write_table,
)

import streamgd

EXIT_DATA, EXIT_USAGE = 1, 2


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    return write_synthetic(str(tmp_path_factory.mktemp("reg")), rows=2000, features=3, seed=21)


@pytest.fixture(scope="module")
def table(reg):
    return read_tables(reg.paths)


@pytest.fixture(scope="module")
def model_path(reg, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "m.npz"
    options = ["--target", "y", "--features", "x0,x1,x2", "--epochs", "1", "-q"]
    invoke_ok("fit", *reg.paths, *options, "-o", out)
    return str(out)


def assert_one_line_error(code: int, out: str, err: str, expected_code: int, *needles: str):
    assert code == expected_code, err
    assert "Traceback" not in err
    assert out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("streamgd: "), err
    for needle in needles:
        assert needle in lines[0], (needle, err)


def assert_click_usage_error(code: int, out: str, err: str, *needles: str):
    """click's own usage errors: exit 2, an ``Error:`` line naming the option, no traceback."""
    assert code == EXIT_USAGE, err
    assert "Traceback" not in err
    assert out == ""
    error_lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, err
    for needle in needles:
        assert needle in error_lines[0], (needle, err)


# -- usage errors (2) -------------------------------------------------------------------------
def test_glob_matching_nothing(capsys, tmp_path):
    pattern = str(tmp_path / "nothing-*.parquet")
    result = run_cli(capsys, "fit", pattern, "--target", "y")
    assert_one_line_error(*result, EXIT_USAGE, pattern)


def test_path_that_does_not_exist(capsys, tmp_path):
    path = str(tmp_path / "missing.parquet")
    result = run_cli(capsys, "fit", path, "--target", "y")
    assert_one_line_error(*result, EXIT_USAGE, path)


def test_empty_directory(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_cli(capsys, "fit", str(tmp_path / "empty"), "--target", "y")
    assert_one_line_error(*result, EXIT_USAGE, str(tmp_path / "empty"))


def test_missing_target_column(capsys, reg):
    result = run_cli(capsys, "fit", *reg.paths, "--target", "label")
    assert_one_line_error(*result, EXIT_USAGE, "'label'", reg.paths[0])


def test_missing_feature_column(capsys, reg):
    result = run_cli(capsys, "fit", *reg.paths, "--target", "y", "--features", "x0,x9")
    assert_one_line_error(*result, EXIT_USAGE, "'x9'", reg.paths[0])


def test_target_named_as_a_feature(capsys, reg):
    result = run_cli(capsys, "fit", *reg.paths, "--target", "y", "--features", "x0,y")
    assert_one_line_error(*result, EXIT_USAGE, "'y'")


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--lr", "-1"], "--lr"),
        (["--lr", "0"], "--lr"),
        (["--epochs", "0"], "--epochs"),
        (["--momentum", "1.5"], "--momentum"),
        (["--loss", "cubic"], "--loss"),
        (["--optimizer", "lbfgs"], "--optimizer"),
        (["--missing", "skip"], "--missing"),
        (["--features", "x0,,x1"], "--features"),
        (["--seed", "-1"], "--seed"),
    ],
)
def test_invalid_option_values(capsys, reg, args, option):
    result = run_cli(capsys, "fit", *reg.paths, "--target", "y", *args)
    assert_click_usage_error(*result, option)


def test_fit_without_target_and_no_column_named_like_one(capsys, table, tmp_path):
    path = write_table(
        table.rename_columns(["row_id", "x0", "x1", "x2", "out"]), tmp_path / "t.parquet"
    )
    result = run_cli(capsys, "fit", path)
    assert_one_line_error(
        *result,
        EXIT_USAGE,
        "no --target given and no column is named target, label or y; pass --target NAME "
        "(columns: row_id, x0, x1, x2, out; 'streamgd schema PATHS' describes them)",
    )


def test_unknown_command(capsys):
    code, out, err = run_cli(capsys, "train")
    assert code == EXIT_USAGE
    assert "Traceback" not in err and "train" in err


# -- data errors (1) --------------------------------------------------------------------------
def test_non_numeric_feature(capsys, table, tmp_path):
    path = write_table(
        table.append_column("name", pa.array([f"n{i}" for i in range(table.num_rows)])),
        tmp_path / "strings.parquet",
    )
    result = run_cli(capsys, "fit", path, "--target", "y", "--features", "x0,name")
    assert_one_line_error(*result, EXIT_DATA, path, "'name'", "string")


def test_string_columns_are_left_out_by_default(capsys, table, tmp_path):
    path = write_table(
        table.append_column("name", pa.array(["a"] * table.num_rows)), tmp_path / "s.parquet"
    )
    out = str(tmp_path / "m.npz")
    code, _, err = run_cli(capsys, "fit", path, "--target", "y", "--epochs", "1", "-q", "-o", out)
    assert code == 0, err
    assert "name" not in streamgd.load(out).features


def test_not_parquet_despite_the_extension(capsys, tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_text("id,x,y\n1,2,3\n")
    result = run_cli(capsys, "fit", str(path), "--target", "y")
    assert_one_line_error(*result, EXIT_DATA, str(path), "Parquet")


def test_truncated_parquet(capsys, reg, tmp_path):
    data = Path(reg.paths[0]).read_bytes()
    path = tmp_path / "truncated.parquet"
    path.write_bytes(data[: len(data) // 2])
    result = run_cli(capsys, "fit", str(path), "--target", "y")
    assert_one_line_error(*result, EXIT_DATA, str(path))


def test_empty_parquet_file(capsys, tmp_path):
    path = tmp_path / "empty.parquet"
    path.write_bytes(b"")
    result = run_cli(capsys, "fit", str(path), "--target", "y")
    assert_one_line_error(*result, EXIT_DATA, str(path))


def test_parquet_with_corrupt_data_pages(capsys, reg, tmp_path):
    """The footer is intact, so the file opens; the bytes of a feature's column chunk in the
    second row group are garbage."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(reg.paths[0]).metadata
    chunk = meta.row_group(1).column(meta.schema.names.index("x1"))
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data = bytearray(Path(reg.paths[0]).read_bytes())
    data[start : start + chunk.total_compressed_size] = b"A" * chunk.total_compressed_size
    path = tmp_path / "corrupt.parquet"
    path.write_bytes(bytes(data))
    result = run_cli(capsys, "fit", str(path), "--target", "y", "--features", "x0,x1,x2")
    assert_one_line_error(*result, EXIT_DATA, str(path))


def test_logistic_target_not_0_or_1_names_the_row(capsys, table, tmp_path):
    """The bad value is in the second row group, after a row whose null target is dropped:
    the reported row is still its 1-based data row in the file."""
    y = (table.column("y").to_numpy() > table.column("y").to_numpy().mean()).astype(float)
    bad = 777
    y[bad] = 2.0
    t = with_nulls(with_values(table, "y", y), "y", [510])
    path = write_table(t, tmp_path / "labels.parquet")
    result = run_cli(capsys, "fit", path, "--target", "y", "--loss", "logistic")
    assert_one_line_error(*result, EXIT_DATA, path, f"row {bad + 1}", "'y'", "2")


def test_logistic_target_not_0_or_1_in_csv_names_the_row(capsys, table, tmp_path):
    y = (table.column("y").to_numpy() > 0).astype(float)
    bad = 1234
    y[bad] = -1.0
    path = write_table(with_values(table, "y", y), tmp_path / "labels.csv")
    result = run_cli(capsys, "fit", path, "--target", "y", "--loss", "logistic")
    assert_one_line_error(*result, EXIT_DATA, path, f"row {bad + 1}", "'y'")


def test_a_used_column_one_file_lacks_names_that_file(capsys, table, tmp_path):
    a = write_table(table, tmp_path / "a.parquet")
    b = write_table(table.drop_columns(["x1"]), tmp_path / "b.parquet")
    result = run_cli(capsys, "fit", a, b, "--target", "y", "--features", "x0,x1", "-q")
    assert_one_line_error(*result, EXIT_DATA, b, "'x1'")


def test_schemas_disagree_on_types(capsys, table, tmp_path):
    a = write_table(table, tmp_path / "a.parquet")
    b = write_table(
        with_values(table, "x1", [str(v) for v in table.column("x1").to_pylist()]),
        tmp_path / "b.parquet",
    )
    result = run_cli(capsys, "fit", a, b, "--target", "y")
    assert_one_line_error(*result, EXIT_DATA, a, b, "'x1'")


def test_null_feature_with_missing_error(capsys, table, tmp_path):
    row = 1203  # in the third row group
    path = write_table(with_nulls(table, "x2", [row]), tmp_path / "nulls.parquet")
    result = run_cli(
        capsys, "fit", path, "--target", "y", "--features", "x0,x1,x2", "--missing", "error"
    )
    assert_one_line_error(*result, EXIT_DATA, path, "'x2'", f"row {row + 1}")


def test_null_target_with_missing_error(capsys, table, tmp_path):
    row = 42
    path = write_table(with_nulls(table, "y", [row]), tmp_path / "nulls.parquet")
    result = run_cli(capsys, "fit", path, "--target", "y", "--features", "x0", "--missing", "error")
    assert_one_line_error(*result, EXIT_DATA, path, "'y'", f"row {row + 1}")


def test_infinite_feature_value(capsys, table, tmp_path):
    x0 = table.column("x0").to_numpy().copy()
    x0[99] = np.inf
    path = write_table(with_values(table, "x0", x0), tmp_path / "inf.parquet")
    result = run_cli(capsys, "fit", path, "--target", "y", "--features", "x0,x1")
    assert_one_line_error(*result, EXIT_DATA, path, "'x0'", "row 100")


def test_infinite_as_missing(table, tmp_path):
    """--infinite missing: infinities count as missing values, imputed (and counted) in
    training and at predict time, like nulls; the default model refuses them."""
    x0 = table.column("x0").to_numpy().copy()
    x0[[5, 77]] = [np.inf, -np.inf]
    path = write_table(with_values(table, "x0", x0), tmp_path / "inf.parquet")
    model_path = str(tmp_path / "m.npz")
    invoke_ok("fit", path, "-y", "y", "-f", "x0,x1", "--infinite", "missing", "--epochs", "1",
              "-o", model_path, "--quiet")  # fmt: skip
    model = streamgd.load(model_path)
    assert model.summary["imputed"] == {"x0": 2}
    rows = np.array([[np.inf, 1.0], [np.nan, 1.0]])
    first, second = model.predict(rows)
    assert first == second  # +inf is imputed exactly like a null
    dropped = str(tmp_path / "d.npz")
    invoke_ok("fit", path, "-y", "y", "-f", "x0,x1", "--infinite", "missing", "--missing",
              "drop", "--epochs", "1", "-o", dropped, "--quiet")  # fmt: skip
    assert streamgd.load(dropped).summary["dropped_missing"] == 2
    plain = str(tmp_path / "p.npz")
    invoke_ok("fit", path, "-y", "y", "-f", "x1",
              "--epochs", "1", "-o", plain, "--quiet")  # fmt: skip
    with pytest.raises(streamgd.errors.DataError, match="infinite value"):
        streamgd.load(plain).predict(np.array([[np.inf]]))


_EMPTY_CHUNK_BUG = (
    "BUG: a decoded chunk with no rows left after dropping null targets (a row group whose "
    "targets are all null) reaches the new fast path of features.Stats.of (uncommitted "
    "working-tree change): x.mean(axis=0) of an empty matrix warns 'Mean of empty slice' "
    "(stray warnings on stderr; an internal error, exit 70, when warnings are errors)"
)


def test_every_target_null(capsys, table, tmp_path):
    path = write_table(with_nulls(table, "y", range(table.num_rows)), tmp_path / "n.parquet")
    result = run_cli(capsys, "fit", path, "--target", "y", "--features", "x0")
    assert_one_line_error(*result, EXIT_DATA, path)


def test_predict_on_data_lacking_a_feature(capsys, model_path, table, tmp_path):
    path = write_table(table.drop_columns(["x2"]), tmp_path / "nox2.parquet")
    result = run_cli(capsys, "predict", model_path, path, "-o", str(tmp_path / "p.parquet"))
    assert_one_line_error(*result, EXIT_DATA, path, "x2")
    assert not os.path.exists(tmp_path / "p.parquet")


def test_evaluate_on_data_lacking_the_target(capsys, model_path, table, tmp_path):
    path = write_table(table.drop_columns(["y"]), tmp_path / "noy.parquet")
    result = run_cli(capsys, "evaluate", model_path, path)
    assert_one_line_error(*result, EXIT_DATA, path, "y")


@pytest.mark.parametrize(
    "command",
    [
        "predict",
        "evaluate",
    ],
)
def test_scoring_data_with_a_non_numeric_feature(capsys, model_path, table, tmp_path, command):
    path = write_table(
        with_values(table, "x1", ["n/a"] * table.num_rows), tmp_path / "strings.parquet"
    )
    output = ["-o", str(tmp_path / "p.parquet")] if command == "predict" else []
    result = run_cli(capsys, command, model_path, path, *output)
    assert_one_line_error(*result, EXIT_DATA, path, "'x1'")


def test_model_file_that_is_not_a_model(capsys, reg, tmp_path):
    result = run_cli(capsys, "predict", reg.paths[0], reg.paths[0], "-o", str(tmp_path / "p.csv"))
    assert_one_line_error(*result, EXIT_DATA, reg.paths[0])


def test_corrupt_model_file(capsys, model_path, reg, tmp_path):
    data = bytearray(Path(model_path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "corrupt.npz"
    path.write_bytes(bytes(data))
    result = run_cli(capsys, "inspect", str(path))
    assert_one_line_error(*result, EXIT_DATA, str(path))


def test_predict_with_a_model_that_does_not_exist(capsys, reg, tmp_path):
    code, out, err = run_cli(
        capsys, "predict", str(tmp_path / "none.npz"), *reg.paths, "-o", str(tmp_path / "p.csv")
    )
    assert code == EXIT_USAGE
    assert "Traceback" not in err and "none.npz" in err


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--shards", "3"], "--shards"),
        (["--quorum", "0.5"], "--quorum"),
        (["--sync-every", "5", "--round-protocol", "peer"], "--sync-every, --round-protocol"),
    ],
)
def test_cluster_settings_without_cluster_are_refused(capsys, reg, tmp_path, extra, named):
    """How --cluster trains means nothing without one: refused rather than recorded with the
    model as if it had shaped it (single model and grid alike); no model is written."""
    out = tmp_path / "m.npz"
    for grid in ([], ["--l2", "0,1e-3", "--holdout", "0.2"]):
        code, stdout, err = run_cli(
            capsys, "fit", *reg.paths, "--target", "y", "--epochs", "1", *grid, *extra, "-o", out
        )
        assert_one_line_error(code, stdout, err, EXIT_USAGE, named, "--cluster")
        assert not out.exists()
