"""Each setting is declared once, on its dataclass field; the tables, the keyword check of the
Python API and the constraint messages all follow from that declaration."""

from __future__ import annotations

from dataclasses import fields

import pytest

import streamgd
from streamgd.config import (
    CONFIG_SETTINGS,
    RUN_SETTINGS,
    SETTINGS,
    FitConfig,
    RunOptions,
    split_settings,
)
from streamgd.errors import UsageError
from streamgd.settings import GROUPS


def test_tables_follow_the_dataclasses_field_by_field():
    assert list(CONFIG_SETTINGS) == [f.name for f in fields(FitConfig)]
    assert list(RUN_SETTINGS) == [f.name for f in fields(RunOptions) if f.name != "handle_signals"]
    assert SETTINGS == {**CONFIG_SETTINGS, **RUN_SETTINGS}
    assert not set(CONFIG_SETTINGS) & set(RUN_SETTINGS)


def test_nullable_settings_are_exactly_those_defaulting_to_none():
    for f in fields(FitConfig):
        assert SETTINGS[f.name].nullable == (f.default is None), f.name
    # the target too: None means the column named target, label or y (decided from the data)
    assert SETTINGS["target"].nullable and not SETTINGS["target"].required


def test_every_setting_has_a_group_a_long_flag_and_help():
    for name, declared in SETTINGS.items():
        assert declared.group in GROUPS, name
        assert declared.flags[0].startswith("--"), name
        assert declared.help or name == "optimizer", name  # --optimizer never had one


def test_constraint_message_names_the_option():
    with pytest.raises(UsageError, match=r"--batch-size must be an integer >= 1, got 0"):
        FitConfig(target="y", batch_size=0)
    with pytest.raises(UsageError, match=r"--keep must be an integer >= 1, got 0"):
        RunOptions(keep=0)
    with pytest.raises(UsageError, match=r"--checkpoint-interval must be a number > 0"):
        RunOptions(checkpoint_interval=0.0)


def test_split_settings_sorts_keywords_by_owner():
    config, run = split_settings({"lr": 0.1, "resume": True, "checkpoint_dir": "c", "epochs": 2})
    assert config == {"lr": 0.1, "epochs": 2}
    assert run == {"resume": True, "checkpoint_dir": "c"}


@pytest.mark.parametrize(
    ("keyword", "closest"),
    [("batchsize", "batch_size"), ("learning_rate", None), ("checkpointdir", "checkpoint_dir")],
)
def test_an_unknown_keyword_names_it_and_the_closest_setting(keyword, closest):
    with pytest.raises(UsageError, match=f"unknown setting '{keyword}'") as info:
        streamgd.fit(["nowhere.parquet"], target="y", **{keyword: 1})
    if closest is not None:
        assert f"did you mean '{closest}'?" in str(info.value)
