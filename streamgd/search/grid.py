"""A grid of training settings: settings given several values expand to one :class:`FitConfig`
per combination (the cartesian product), all sharing one data path.

Only the settings of :data:`GRID_SETTINGS` may take several values: they change what each
model does with a batch, never which rows it sees or how they are decoded, so every model of
the grid can train on the same stream. The others (features, batch size, shuffle, the loss,
the seed...) decide the stream itself and stay single-valued.

>>> configs, labels = expand_grid({"lr": [0.1, 0.01], "l2": "0,1e-3", "epochs": 2})
>>> labels[:3]
[{'lr': 0.1, 'l2': 0.0}, {'lr': 0.1, 'l2': 0.001}, {'lr': 0.01, 'l2': 0.0}]
>>> [(c.lr, c.l2, c.epochs) for c in configs][:2]
[(0.1, 0.0, 2), (0.1, 0.001, 2)]
"""

from __future__ import annotations

import itertools
from typing import Any

from ..config import SETTINGS, FitConfig
from ..constraints import option_name
from ..errors import UsageError

__all__ = ["GRID_SETTINGS", "expand_grid", "grid_values", "is_grid", "one_value_message"]

# Settings that may take several values: what a model does with a batch, not the batch.
GRID_SETTINGS = (
    "optimizer",
    "lr",
    "schedule",
    "power_t",
    "momentum",
    "weight_decay",
    "step_size",
    "gamma",
    "decay_steps",
    "warmup_steps",
    "huber_delta",
    "quantile",
    "l2",
    "l1",
    "clip_grad",
    "clip_weights",
    "tol",
    "patience",
)
_TEXT = ("optimizer", "schedule")
_INTEGER = ("step_size", "decay_steps", "warmup_steps", "patience")


def grid_values(name: str, value: Any) -> list[Any] | None:
    """The values of a grid setting given several (a list or tuple, or a comma-separated
    string as the command line and TOML give them), else None (one value)."""
    if isinstance(value, str) and "," in value:
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        return None
    if not items or any(v == "" for v in items):
        raise UsageError(f"{option_name(name)}: an empty value in the list {value!r}")
    if name in _TEXT:
        return [None if v in ("none", None) else v for v in items]
    return [_number(name, v) for v in items]


def _number(name: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if value.lower() == "none":
        return None
    try:
        return int(value) if name in _INTEGER else float(value)
    except ValueError:
        raise UsageError(f"{option_name(name)} must be a number, got {value!r}") from None


def one_value_message(name: str) -> str:
    """Why a setting outside :data:`GRID_SETTINGS` cannot take several values."""
    return (
        f"{option_name(name)} takes one value: it changes the data path, the stream every "
        f"model of a grid shares (several values are allowed for "
        f"{', '.join(option_name(n) for n in GRID_SETTINGS)})"
    )


def is_grid(settings: dict[str, Any]) -> bool:
    """Whether any grid setting of ``settings`` takes several values."""
    return any(grid_values(k, v) is not None for k, v in settings.items() if k in GRID_SETTINGS)


def expand_grid(settings: dict[str, Any]) -> tuple[list[FitConfig], list[dict[str, Any]]]:
    """One FitConfig per combination of the grid settings' values (the first setting
    varies slowest), and each combination as a label ``{setting: value}``. A setting outside
    :data:`GRID_SETTINGS` given several values is a UsageError. Each combination is checked
    like a single run's settings."""
    fixed, varied = {}, {}
    for name, value in settings.items():
        values = grid_values(name, value) if name in GRID_SETTINGS else None
        if values is not None:
            if len(set(map(repr, values))) != len(values):
                raise UsageError(f"{option_name(name)}: a value is listed twice in {value!r}")
            varied[name] = values
            continue
        declared = SETTINGS.get(name)
        if isinstance(value, list | tuple) and declared is not None and declared.many is None:
            raise UsageError(one_value_message(name))
        fixed[name] = value
    names = list(varied)
    configs, labels = [], []
    for combo in itertools.product(*(varied[n] for n in names)):
        label = dict(zip(names, combo, strict=True))
        configs.append(FitConfig(**fixed, **label))
        labels.append(label)
    return configs, labels
