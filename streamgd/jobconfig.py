"""Job settings from TOML files and back: what ``fit --config`` reads and ``--print-config``
writes, so a working command line can become a reviewed file.

Keys are the option names without the leading dashes (``batch-size``; ``batch_size`` is
accepted too) plus ``paths`` for the inputs. The options of ``fit`` are generated from the
settings' declarations (:mod:`streamgd.settings`), so its keys are exactly the settings'
(``Setting.key``). Values are checked with the options' own types,
so an unknown key or a value of the wrong type is an error naming the file and the key.
"""

from __future__ import annotations

import json
import math
import tomllib
from typing import Any

import click

from .errors import UsageError

__all__ = ["read_config", "to_toml", "key_of"]


def read_config(path: str, command: click.Command, ctx: click.Context) -> dict[str, Any]:
    """The settings in a TOML file as a click ``default_map`` for ``command``."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the config file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML ({exc})") from None
    params = {key_of(p): p for p in command.params if p.name not in ("config", "print_config")}
    settings: dict[str, Any] = {}
    for key, value in raw.items():
        param = params.get(key.replace("_", "-"))
        if param is None:
            known = ", ".join(sorted(params))
            raise UsageError(f"{path}: unknown key {key!r}; the keys are: {known}")
        settings[param.name] = _check(path, key, param, value, ctx)  # type: ignore[index]
    return settings


def key_of(param: click.Parameter) -> str:
    """The TOML key of an option: its long name without dashes (``--batch-size`` ->
    ``batch-size``, ``--shuffle/--no-shuffle`` -> ``shuffle``); an argument's name."""
    if isinstance(param, click.Option):
        longs = [o for o in param.opts if o.startswith("--")]
        if longs:
            return longs[0][2:]
    return str(param.name)


def _check(path: str, key: str, param: click.Parameter, value: Any, ctx: click.Context) -> Any:
    """Convert ``value`` as the command line would, to fail here with the key's name."""
    many = param.multiple or param.nargs == -1
    if many:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
            raise UsageError(f"{path}: key {key!r} must be a list of strings, got {value!r}")
        items = [str(v) for v in value]
    else:
        grid = isinstance(value, list) and getattr(param.type, "takes_list", False)
        if isinstance(value, list | dict) and not grid:  # a grid setting takes a list
            raise UsageError(f"{path}: key {key!r} must be a single value, got {value!r}")
        if isinstance(param, click.Option) and param.is_flag and not isinstance(value, bool):
            raise UsageError(f"{path}: key {key!r} must be true or false, got {value!r}")
        items = [value]
    for item in items:
        try:
            param.type.convert(item, param, ctx)
        except click.BadParameter as exc:
            raise UsageError(f"{path}: key {key!r}: {exc.message}") from None
    return items if many else value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if not isinstance(value, float) or math.isfinite(value) else "nan"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string is JSON-escaped text


def to_toml(settings: dict[str, Any], *, header: str = "") -> str:
    """Flat settings as TOML; keys whose value is None are listed as comments (unset).

    >>> print(to_toml({"target": "y", "epochs": 5, "lr": None}), end="")
    target = "y"
    epochs = 5
    # lr = (unset)
    """
    lines = [f"# {line}" for line in header.splitlines()]
    for key, value in settings.items():
        if value is None:
            lines.append(f"# {key} = (unset)")
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
