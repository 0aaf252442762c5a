"""The command line's help: ``fit --help`` in titled groups in a fixed order, every option of
``fit`` in exactly one group, an example in every command's help, whole one-line summaries in
``streamgd --help``; and the settings' one declaration behind the options of ``fit``, its TOML
keys and ``--print-config``."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields

import click
import pytest
from integration_support import invoke_ok

from streamgd.cli import cli
from streamgd.cli.fit import FIT_SETTINGS, OutputOptions
from streamgd.config import FitConfig, RunOptions
from streamgd.search.options import GridOptions
from streamgd.settings import GROUPS

FIT = cli.commands["fit"]


def _out(*args: str) -> str:
    return invoke_ok(*args).stdout
TITLES = list(GROUPS.values())


def _sections(text: str) -> dict[str, str]:
    """Help text split into its sections: title -> body."""
    found: dict[str, str] = {}
    title = None
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            title = line[:-1]
            found[title] = ""
        elif title is not None:
            found[title] += line + "\n"
    return found


def _long_flags(body: str) -> list[str]:
    return re.findall(r"^\s{2}(?:-\w, )?(--[\w-]+)", body, flags=re.M)


@pytest.fixture(scope="module")
def fit_help() -> str:
    return _out("fit", "--help")


def test_fit_help_shows_the_groups_in_order(fit_help):
    titles = [t for t in _sections(fit_help) if t in TITLES]
    assert titles == TITLES
    assert "Options" not in _sections(fit_help)  # no ungrouped leftovers


def test_every_fit_option_is_in_exactly_one_group(fit_help):
    sections = _sections(fit_help)
    shown = [flag for title in TITLES for flag in _long_flags(sections[title])]
    options = [p for p in FIT.params if isinstance(p, click.Option)]
    expected = [next(o for o in p.opts if o.startswith("--")) for p in options] + ["--help"]
    assert sorted(shown) == sorted(expected)
    assert len(shown) == len(set(shown))


def test_the_groups_hold_what_the_readme_says(fit_help):
    sections = _sections(fit_help)
    assert "--delimiter" in _long_flags(sections["CSV options"])
    assert "--loss" in _long_flags(sections["Model options"])
    assert "--schedule" in _long_flags(sections["Schedule options"])
    assert "--resume" in _long_flags(sections["Checkpoint options"])
    assert "--config" in _long_flags(sections["Job options"])
    assert "--prefetch" in _long_flags(sections["Performance options"])
    assert "--cluster" in _long_flags(sections["Distributed options (Dask)"])


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_command_help_has_an_example(command):
    text = _out(command, "--help")
    assert "Example" in text
    assert f"streamgd {command} " in text


def test_the_group_help_shows_whole_summaries():
    text = _out("--help")
    commands = _sections(text)["Commands"]
    assert "..." not in commands.replace("...)", "")  # "(..., ...)" inside a summary is fine
    for name, command in cli.commands.items():
        summary = command.get_short_help_str(limit=1000)
        assert " ".join(summary.split()) in " ".join(commands.split()), name
        assert not summary.endswith("...")


def test_settings_options_fields_and_toml_keys_are_the_same_names():
    declared = set(FIT_SETTINGS)
    owners = (FitConfig, RunOptions, OutputOptions, GridOptions)
    owned = {f.name for cls in owners for f in fields(cls)}
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
