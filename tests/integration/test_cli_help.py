"""The settings' one declaration behind the options of ``fit``, its TOML keys and
``--print-config``."""

from __future__ import annotations

import tomllib
from dataclasses import fields

import click
from integration_support import invoke_ok

from streamgd.cli import cli
from streamgd.cli.fit import FIT_SETTINGS, OutputOptions
from streamgd.config import FitConfig, RunOptions

FIT = cli.commands["fit"]


def _out(*args: str) -> str:
    return invoke_ok(*args).stdout


def test_settings_options_fields_and_toml_keys_are_the_same_names():
    declared = set(FIT_SETTINGS)
    owned = {f.name for cls in (FitConfig, RunOptions, OutputOptions) for f in fields(cls)}
    owned.discard("handle_signals")  # set by the command line itself, not a setting
    options = {p.name for p in FIT.params if isinstance(p, click.Option)}
    options -= {"config", "print_config"}
    assert declared == owned == options
    text = _out("fit", "x.parquet", "--target", "y", "--print-config")
    keys = set(tomllib.loads(text)) | {
        line.split()[1] for line in text.splitlines() if line.startswith("# ") and "=" in line
    }
    assert keys - {"paths"} == {s.key for s in FIT_SETTINGS.values()}
    assert len(keys - {"paths"}) == len(declared)


def test_a_toml_file_may_set_every_key(tmp_path):
    """Every key --print-config writes is accepted back by --config."""
    text = _out("fit", "x.parquet", "--target", "y", "--print-config")
    job = tmp_path / "job.toml"
    job.write_text(text)
    assert _out("fit", "--config", str(job), "--print-config") == text
