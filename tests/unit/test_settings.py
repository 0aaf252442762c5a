"""The settings table and FitConfig describe the same settings, in the same order."""

from __future__ import annotations

from dataclasses import fields

import pytest

from streamgd.config import SETTINGS, FitConfig
from streamgd.errors import UsageError


def test_table_matches_dataclass():
    assert list(SETTINGS) == [f.name for f in fields(FitConfig)]


def test_nullable_settings_default_to_none_only_when_declared():
    for f in fields(FitConfig):
        if f.default is None:
            assert SETTINGS[f.name].nullable, f.name


def test_constraint_message_names_the_option():
    with pytest.raises(UsageError, match=r"--batch-size must be an integer >= 1, got 0"):
        FitConfig(target="y", batch_size=0)
