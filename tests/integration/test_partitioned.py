"""Hive-partitioned directories and files that differ by safe widening, end to end through the
CLI: fit, resume, predict, evaluate and schema see partition keys as ordinary columns."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import Interrupt, StopAt
from integration_support import invoke_ok, lstsq_fit, run_cli

import streamgd
from streamgd.config import FitConfig, RunOptions
from streamgd.training import train

COEF = {"x": 2.0, "year": 3.0}


def _write_hive(root) -> dict[str, np.ndarray]:
    """``root/region=R/year=Y/part-0.parquet`` with ``y = 2 x + 3 (year - 2020) + noise``;
    returns the columns in the order the files are read (sorted by directory)."""
    rng = np.random.default_rng(5)
    cols: dict[str, list] = {"x": [], "year": [], "y": []}
    for region in ("eu", "us"):
        for year in (2021, 2022, 2023):
            x = rng.normal(size=700)
            y = COEF["x"] * x + COEF["year"] * (year - 2020) + rng.normal(size=700) * 0.1
            folder = os.path.join(root, f"region={region}", f"year={year}")
            os.makedirs(folder)
            pq.write_table(
                pa.table({"x": x, "y": y}),
                os.path.join(folder, "part-0.parquet"),
                row_group_size=256,
            )
            cols["x"].append(x)
            cols["year"].append(np.full(700, year))
            cols["y"].append(y)
    return {k: np.concatenate(v) for k, v in cols.items()}


@pytest.fixture(scope="module")
def hive(tmp_path_factory):
    root = tmp_path_factory.mktemp("hive") / "data"
    return str(root), _write_hive(str(root))


def test_fit_predict_evaluate_on_a_partitioned_directory(hive, tmp_path):
    root, cols = hive
    out = tmp_path / "m.npz"
    invoke_ok(
        "fit", root, "--target", "y", "--features", "x,year", "--epochs", "4", "-q", "-o", out
    )
    report = json.loads(invoke_ok("inspect", out, "--json").stdout)
    exact, _ = lstsq_fit(np.c_[cols["x"], cols["year"]], cols["y"])
    got = [report["coefficients"][name] for name in ("x", "year")]
    assert got == pytest.approx(exact, rel=2e-3)
    metrics = json.loads(invoke_ok("evaluate", out, root, "--json").stdout)
    assert metrics["rows"] == len(cols["y"]) and metrics["r2"] > 0.99
    pred = tmp_path / "p.parquet"
    invoke_ok("predict", out, root, "-o", pred, "--id", "region,year")
    table = pq.read_table(pred)
    assert table.column("year").to_pylist() == cols["year"].tolist()
    assert table.column("region").to_pylist() == ["eu"] * 2100 + ["us"] * 2100


def test_default_features_include_numeric_keys(hive):
    root, _ = hive
    model = streamgd.fit(root, target="y", epochs=1)
    assert list(model.features) == ["x", "year"]  # region is a string: not a default feature


def test_interrupted_and_resumed_fit_is_bit_identical(hive, tmp_path):
    root, _ = hive
    config = FitConfig(target="y", features=("x", "year"), epochs=2, batch_size=128)
    whole = train([root], config)
    ckpt = str(tmp_path / "ckpt")
    with pytest.raises(Interrupt):
        train(
            [root],
            config,
            RunOptions(checkpoint_dir=ckpt, checkpoint_every=7),
            callbacks=[StopAt(40)],
        )
    resumed = train([root], config, RunOptions(checkpoint_dir=ckpt, resume=True))
    assert resumed.resumed_from is not None
    assert np.array_equal(whole.model.weights, resumed.model.weights)
    assert whole.model.history == resumed.model.history


def test_schema_json_marks_partition_columns(hive):
    root, _ = hive
    info = json.loads(invoke_ok("schema", root, "--target", "y", "--json").stdout)
    partition = {c["name"]: c["partition"] for c in info["columns"]}
    assert partition == {"x": False, "y": False, "region": True, "year": True}
    text = invoke_ok("schema", root).stdout
    assert "year *" in text and "hive partition column" in text


def test_a_key_that_is_also_a_column_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "x=1" / "part-0.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"x": [1.0, 2.0], "y": [1.0, 2.0]}), path)
    code, out, err = run_cli(capsys, "fit", tmp_path, "--target", "y")
    assert (code, out) == (1, "")
    assert err == (
        f"streamgd: error: {path}: column 'x': a hive partition key of the file's "
        "directories (x=1) is also a column inside the file; rename one of them\n"
    )


# -- safe widening ---------------------------------------------------------------------------
@pytest.fixture
def widened(tmp_path):
    paths = []
    for i, (ints, floats) in enumerate([(np.int32, np.float32), (np.int64, np.float64)]):
        x = np.arange(50 * i, 50 * i + 50)
        path = str(tmp_path / f"part-{i}.parquet")
        pq.write_table(pa.table({"k": x.astype(ints), "y": (0.5 * x).astype(floats)}), path)
        paths.append(path)
    return paths


def test_widening_is_a_warning_in_the_text_log(widened, capsys):
    code, _, err = run_cli(capsys, "fit", *widened, "--target", "y", "--epochs", "1")
    assert code == 0, err
    assert f"warning: column 'k' is read as int64: widened from int32 in {widened[0]}" in err
    assert f"warning: column 'y' is read as float64: widened from float32 in {widened[0]}" in err


def test_widening_is_a_warning_event_in_the_json_log(widened, capsys):
    code, _, err = run_cli(
        capsys, "fit", *widened, "--target", "y", "--epochs", "1", "--log-format", "json"
    )
    assert code == 0, err
    events = [json.loads(line) for line in err.splitlines()]
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    warnings = [w for w in warnings if not w.startswith("no --output")]  # said by every run
    assert warnings == [
        f"column 'k' is read as int64: widened from int32 in {widened[0]}",
        f"column 'y' is read as float64: widened from float32 in {widened[0]}",
    ]
    assert [e["event"] for e in events][:2] == ["start", "warning"]


def test_widened_files_are_read_exactly(widened):
    with pytest.warns(streamgd.errors.StreamgdWarning, match="widened from") as seen:
        model = streamgd.fit(widened, target="y", features=["k"], solver="normal")
    assert len(seen) == 2  # k and y, each once
    coef, intercept = model.coefficients()
    assert coef["k"] == pytest.approx(0.5, rel=1e-6) and intercept == pytest.approx(0, abs=1e-5)


def test_shuffle_writes_partition_keys_into_the_files(hive, tmp_path):
    root, cols = hive
    out = tmp_path / "shuffled"
    invoke_ok("shuffle", root, "-o", out, "--seed", "3")
    table = pq.read_table(out)
    assert table.schema.names == ["x", "y", "region", "year"]
    assert table.schema.field("year").type == pa.int32()
    pairs = sorted(
        zip(table.column("x").to_pylist(), table.column("year").to_pylist(), strict=True)
    )
    assert pairs == sorted(zip(cols["x"].tolist(), cols["year"].tolist(), strict=True))
