"""A new user's first commands, from the repository root: the design's own example
``streamgd fit data/*.parquet`` works as typed (a default target, a warning at the start that
nothing will be saved, the coefficients at the end), and the usual first mistakes get a
message that says what to do (a string target, a CSV with another delimiter, a pattern whose
files are in subdirectories, an identifier column offered as categorical)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from integration_support import DATA_DIR, REPO_ROOT, run_cli, write_table

import streamgd

EXIT_OK, EXIT_DATA, EXIT_USAGE = 0, 1, 2
NOT_SAVED = (
    "warning: no --output: the model will not be saved (its coefficients are printed at the end)"
)


def _coefficients(out: str) -> dict[str, float]:
    """The ``name value`` rows of the coefficient table ``fit`` prints."""
    rows = [line.split() for line in out.splitlines() if line.startswith("  ")]
    return {row[0]: float(row[1]) for row in rows if row[0] != "feature"}


def test_the_literal_first_command_trains_on_the_sample_data(capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    code, out, err = run_cli(capsys, "fit", "data/*.parquet")  # as the shell passes it
    assert code == EXIT_OK, err
    lines = err.splitlines()
    assert lines[0] == "warning: using column 'y' as the target; pass --target to choose"
    assert lines[1] == NOT_SAVED  # before the first epoch, not after the last
    assert lines[2].startswith("epoch 1/5: ")
    assert lines[-1].startswith("done: 5 epoch(s)") and "model not saved (no --output)" in lines[-1]
    assert out.splitlines()[0] == "model: squared loss, target y"
    coef = _coefficients(out)
    truth = json.loads((DATA_DIR / "regression" / "TRUE_COEFFICIENTS.json").read_text())
    for name, value in truth["coefficients"].items():
        assert coef[name] == pytest.approx(value, rel=0.01, abs=1e-4), name
    assert coef["intercept"] == pytest.approx(truth["intercept"], abs=0.05)


def test_with_an_output_nothing_is_announced_and_no_coefficients_are_printed(capsys, tmp_path):
    path = write_table(_table(), tmp_path / "t.parquet")
    code, out, err = run_cli(capsys, "fit", path, "--epochs", "1", "-o", tmp_path / "m.npz")
    assert code == EXIT_OK, err
    assert NOT_SAVED not in err and out == ""
    assert streamgd.load(str(tmp_path / "m.npz")).target == "y"


def test_quiet_prints_only_the_coefficients(capsys, tmp_path):
    path = write_table(_table(), tmp_path / "t.parquet")
    code, out, err = run_cli(capsys, "fit", path, "--epochs", "1", "-q")
    assert (code, err) == (EXIT_OK, "")
    assert set(_coefficients(out)) == {"x", "intercept"}


def _table(**columns) -> pa.Table:
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    return pa.table({"x": x, **columns} if columns else {"x": x, "y": 2 * x + 1})


@pytest.mark.parametrize("names", [("target",), ("label",), ("y",)])
def test_each_default_target_name(capsys, tmp_path, names):
    x = _table()["x"]
    path = write_table(
        pa.table({"x": x, names[0]: pa.array(np.asarray(x) * 3)}), tmp_path / "t.parquet"
    )
    code, out, err = run_cli(capsys, "fit", path, "--epochs", "1")
    assert code == EXIT_OK, err
    assert f"warning: using column {names[0]!r} as the target; pass --target to choose" in err
    assert _coefficients(out)["x"] == pytest.approx(3.0, rel=0.02)


def test_two_default_target_names_are_a_usage_error(capsys, tmp_path):
    x = np.arange(30.0)
    path = write_table(pa.table({"x": x, "label": x, "y": x}), tmp_path / "t.parquet")
    code, out, err = run_cli(capsys, "fit", path)
    assert (code, out) == (EXIT_USAGE, "")
    assert err == (
        "streamgd: usage error: no --target given and several columns could be the target "
        "(label, y); pass --target NAME (columns: x, label, y; 'streamgd schema PATHS' "
        "describes them)\n"
    )
    code, out, err = run_cli(capsys, "fit", path, "--target", "label", "--features", "x", "-q")
    assert code == EXIT_OK, err


def test_the_api_takes_the_default_target_too(tmp_path):
    path = write_table(_table(), tmp_path / "t.parquet")
    with pytest.warns(streamgd.errors.StreamgdWarning) as seen:
        assert streamgd.fit(str(path), epochs=1).target == "y"
    assert [str(w.message) for w in seen] == [
        "using column 'y' as the target; pass --target to choose"
    ]
    assert seen[0].filename == __file__  # the caller's line, not streamgd's
    with pytest.raises(streamgd.errors.UsageError, match="no column is named target, label or y"):
        streamgd.fit(write_table(pa.table({"x": [1.0, 2.0]}), tmp_path / "n.parquet"))


def test_print_config_and_a_job_file_without_a_target(capsys, tmp_path):
    path = write_table(_table(), tmp_path / "t.parquet")
    code, out, err = run_cli(capsys, "fit", path, "--epochs", "1", "--print-config")
    assert code == EXIT_OK, err
    assert "# target = (unset)" in out.splitlines()
    job = tmp_path / "job.toml"
    job.write_text(out)
    code, out, err = run_cli(capsys, "fit", "--config", job, "-q", "-o", tmp_path / "m.npz")
    assert code == EXIT_OK, err
    assert streamgd.load(str(tmp_path / "m.npz")).target == "y"


def test_a_string_target_suggests_softmax(capsys, tmp_path):
    table = _table(species=pa.array(["a", "b", "c", "a"] * 50))
    path = write_table(table, tmp_path / "t.parquet")
    code, out, err = run_cli(capsys, "fit", path, "--target", "species")
    assert (code, out) == (EXIT_DATA, "")
    assert err == (
        f"streamgd: error: {path}: column 'species': the target must be numeric, but its type "
        "is string; for class labels given as text use --loss softmax\n"
    )
    code, out, err = run_cli(capsys, "fit", path, "--target", "species", "--loss", "softmax")
    assert code == EXIT_OK, err


@pytest.mark.parametrize(("delimiter", "flag"), [(";", "';'"), ("\t", "tab"), ("|", "'|'")])
def test_a_csv_with_another_delimiter_names_the_option(capsys, tmp_path, delimiter, flag):
    path = tmp_path / "t.csv"
    rows = [["a", "b", "y"]] + [[str(i), str(i % 7), str(2 * i)] for i in range(50)]
    path.write_text("".join(delimiter.join(r) + "\n" for r in rows))
    code, out, err = run_cli(capsys, "fit", path)
    assert (code, out) == (EXIT_USAGE, "")
    header = repr(delimiter.join(rows[0]))
    assert err == (
        f"streamgd: usage error: {path}: the header reads as one column ({header}); if {flag} "
        f"separates the fields, pass --delimiter {flag}\n"
    )
    option = "tab" if delimiter == "\t" else delimiter
    code, out, err = run_cli(capsys, "fit", path, "--delimiter", option, "--epochs", "1", "-q")
    assert code == EXIT_OK, err
    assert set(_coefficients(out)) == {"a", "b", "intercept"}


def test_a_pattern_whose_files_are_in_subdirectories_says_where(capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    code, out, err = run_cli(capsys, "fit", "data/*.csv")
    assert (code, out) == (EXIT_USAGE, "")
    assert err == (
        "streamgd: usage error: data/*.csv: the pattern matches no file; files in "
        "subdirectories do (data/classification-csv, data/regression-csv): give one of those "
        "directories, or 'data/**/*.csv' (quoted) for all of them\n"
    )


def test_identifier_columns_are_not_categorical_candidates(capsys, tmp_path):
    n = 200
    table = _table(
        id=pa.array([f"r{i:05d}" for i in range(n)]),
        city=pa.array(["paris", "oslo", "rome", "oslo"] * (n // 4)),
        code=pa.array([f"c{i % 10}" for i in range(n)]).dictionary_encode(),
    )
    table = table.append_column("y", pa.array(np.arange(n, dtype=float)))
    path = write_table(table, tmp_path / "t.parquet", row_group_size=100)
    code, out, err = run_cli(capsys, "schema", path, "--target", "y", "--json")
    assert code == EXIT_OK, err
    info = json.loads(out)
    assert info["categorical_candidates"] == ["city", "code"]
    assert info["id_like"] == ["id"]
    code, out, err = run_cli(capsys, "schema", path, "--target", "y")
    assert "not numeric, usable with --categorical: city, code" in out.splitlines()
    assert "not numeric, every value different (identifiers, left out): id" in out.splitlines()


def test_a_prediction_file_whose_extension_names_no_format_is_refused(capsys, tmp_path):
    model = str(tmp_path / "m.npz")
    data = str(DATA_DIR / "regression")
    assert run_cli(capsys, "fit", data, "--target", "y", "--epochs", "1", "-o", model)[0] == 0
    code, _, err = run_cli(capsys, "predict", model, data, "-o", str(tmp_path / "pred.txt"))
    assert code == EXIT_USAGE
    assert err.count("\n") == 1 and "cannot tell the output format from '.txt'" in err
    assert not (tmp_path / "pred.txt").exists()
    assert run_cli(capsys, "predict", model, data, "-o", str(tmp_path / "pred.pq"))[0] == 0
