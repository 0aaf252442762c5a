"""Start-up: the command tree builds without the heavy libraries, and a default fit on
Parquet files trains without pandas (or Arrow's compute functions). Each command runs in a
fresh interpreter with ``-X importtime``, whose report names every module imported (no
timing is asserted: the figures are in BENCHMARKS.md, "Start-up")."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from integration_support import write_synthetic

HEAVY = ("numpy", "pyarrow", "pandas")


def imported(*args: str) -> set[str]:
    """The modules ``python -m streamgd ARGS`` imports (it must succeed)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "streamgd", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \| *(\S+)$", proc.stderr, re.MULTILINE)
    assert "streamgd.cli.main" in names  # the report was read
    return set(names)


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["fit", "--help"], ["schema", "-h"]])
def test_help_and_version_import_no_heavy_library(args):
    names = imported(*args)
    assert not [m for m in HEAVY if m in names]
    assert "tqdm" not in names and "dask" not in names and "matplotlib" not in names


def test_print_config_imports_no_heavy_library(tmp_path):
    names = imported("fit", "data.parquet", "--epochs", "3", "--print-config")
    assert not [m for m in HEAVY if m in names]


def test_default_fit_and_predict_on_parquet_do_not_import_pandas(tmp_path):
    data = write_synthetic(str(tmp_path), rows=3000, features=3, seed=5)
    model = str(tmp_path / "m.npz")
    names = imported("fit", *data.paths, "--target", "y", "--epochs", "2", "-q", "-o", model)
    assert "pyarrow.parquet" in names and "numpy" in names  # it did train
    assert "pandas" not in names
    assert "dask" not in names and "matplotlib" not in names and "tqdm" not in names
    # Arrow's compute functions (7 MiB of RSS) serve labels, text, CSV and non-float columns
    assert "pyarrow.compute" not in names
    names = imported("predict", model, *data.paths, "-o", str(tmp_path / "p.parquet"))
    assert "streamgd.scoring" in names and "pandas" not in names
    assert "pyarrow.compute" not in names
