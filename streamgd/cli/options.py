"""Building blocks of the commands' options: list-valued options (comma-separated or repeated),
the input-format and CSV options shared by several commands, and the JSON printer."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click

from ..choices import FORMATS
from ..config import CONFIG_SETTINGS
from ..constraints import Integer, Interval, Options
from ..errors import EXIT_DATA, EXIT_DIVERGED, EXIT_INTERNAL, EXIT_PREEMPTED, EXIT_USAGE
from ..search.grid import GRID_SETTINGS, one_value_message
from ..settings import GROUPS, Setting
from ..training.callbacks import json_default, json_safe

__all__ = [
    "EXIT_CODES_HELP",
    "ListOption",
    "flatten",
    "emit_json",
    "paths_argument",
    "csv_options",
    "csv_settings",
    "format_option",
    "SettingOption",
    "GroupedCommand",
    "setting_option",
    "setting_options",
    "from_command_line",
]

EXIT_CODES_HELP = (
    "Exit codes: 0 success (also when a signal comes after the model was written); "
    f"{EXIT_DATA} data or runtime error, or the environment (no space, permissions, read-only "
    f"filesystem, a lock held by another job); {EXIT_USAGE} usage error; {EXIT_DIVERGED} "
    f"training diverged; {EXIT_PREEMPTED} stopped by SIGTERM/SIGINT (after writing a checkpoint "
    f"once training had begun: rerun with --resume; before, nothing written); {EXIT_INTERNAL} "
    f"internal error (a bug)."
)



class ListOption(click.ParamType):
    """A comma-separated list; with ``multiple=True`` repeats add up
    (``--features a,b --features c`` is ``a,b,c``)."""

    name = "list"

    def __init__(self, *, allow_empty: bool = False) -> None:
        self.allow_empty = allow_empty

    def convert(self, value: Any, param: Any, ctx: Any) -> list[str]:
        if isinstance(value, list | tuple):
            return list(value)
        items = [v.strip() for v in str(value).split(",")]
        if not self.allow_empty and any(not v for v in items):
            self.fail(f"empty name in {value!r}", param, ctx)
        return items


def flatten(values: Sequence[list[str]] | None) -> list[str]:
    return [v for group in values or () for v in group]


def emit_json(obj: dict[str, Any]) -> None:
    click.echo(json.dumps(json_safe(obj), indent=2, default=json_default, allow_nan=False))


def publish_summary(summary: dict[str, Any], history: Any, out: Any, logger: Any) -> bool:
    """A finished fit's summary where it was asked for: ``--metrics-out`` (with the history,
    written atomically), the JSON log's ``finish`` event, and ``--json`` on stdout. True when
    ``--json`` printed it (then nothing else goes to stdout)."""
    if out.metrics_out is not None:
        from ..archive import atomic_write

        report = json_safe({"summary": summary, "history": history})
        text = json.dumps(report, indent=2, default=json_default, allow_nan=False) + "\n"
        atomic_write(
            out.metrics_out,
            lambda fh: fh.write(text.encode()),
            what="the metrics file",
            option="--metrics-out",
        )
    if logger is not None:
        logger.emit("finish", exit_code=0, **json_safe(summary))
    if out.json:
        emit_json(summary)
    return bool(out.json)



paths_argument = click.argument("paths", nargs=-1, required=True, metavar="PATHS...")


# -- options generated from the settings' declarations ----------------------------------------
class SettingOption(click.Option):
    """A click option that knows its help group (``settings.GROUPS``)."""

    def __init__(self, *args: Any, group: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = group


_PATHS = {
    "file": click.Path(dir_okay=False),
    "dir": click.Path(file_okay=False),
    "existing file": click.Path(dir_okay=False, exists=True),
}


class _Grid:
    """Mixed into a click type: one value, or a comma-separated list of them (a list from a
    TOML file), each checked by the type: a grid setting (:mod:`streamgd.search.grid`)."""

    takes_list = True  # a TOML job file may give a list (see streamgd.jobconfig)

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        one = super().convert  # type: ignore[misc]
        if isinstance(value, str) and "," in value:
            value = [v.strip() for v in value.split(",")]
        if isinstance(value, list | tuple):
            return [one(v, param, ctx) for v in value]
        return one(value, param, ctx)


class _GridFloat(_Grid, click.FloatRange):
    pass


class _GridInt(_Grid, click.IntRange):
    pass


class _GridChoice(_Grid, click.Choice):
    pass


class _GridText(_Grid, click.types.StringParamType):
    pass


class _One:
    """Mixed into the click type of a number setting outside the grid settings: a
    comma-separated list is refused with the grid's reason, not click's "not a valid
    integer"."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, str) and "," in value and param is not None:
            raise click.UsageError(one_value_message(param.name), ctx)
        return super().convert(value, param, ctx)  # type: ignore[misc]


class _OneFloat(_One, click.FloatRange):
    pass


class _OneInt(_One, click.IntRange):
    pass


def _one_type(inner: click.ParamType | None) -> click.ParamType | None:
    """``inner`` refusing a list clearly (numbers only: a text or path may hold a comma)."""
    if isinstance(inner, click.FloatRange):
        return _OneFloat(inner.min, inner.max, min_open=inner.min_open, max_open=inner.max_open)
    if isinstance(inner, click.IntRange):
        return _OneInt(inner.min, inner.max, min_open=inner.min_open, max_open=inner.max_open)
    return inner


def _grid_type(inner: click.ParamType | None) -> click.ParamType:
    """``inner`` (a type :func:`_single_type` made) taking lists too."""
    if isinstance(inner, click.FloatRange):
        return _GridFloat(inner.min, inner.max, min_open=inner.min_open, max_open=inner.max_open)
    if isinstance(inner, click.IntRange):
        return _GridInt(inner.min, inner.max, min_open=inner.min_open, max_open=inner.max_open)
    if isinstance(inner, click.Choice):
        return _GridChoice(list(inner.choices))
    if inner is None:
        return _GridText()
    raise TypeError(f"no grid form of {inner!r}")


def click_type(setting: Setting) -> click.ParamType | None:
    """The click type that checks what ``setting``'s constraint checks, so that the command
    line fails as early (and as clearly) as the library would; a grid setting's type takes
    a comma-separated list of such values too."""
    inner = _single_type(setting)
    if setting.name in GRID_SETTINGS and setting.owner == "FitConfig":
        return _grid_type(inner)
    if setting.owner == "FitConfig":
        return _one_type(inner)
    return inner


def _single_type(setting: Setting) -> click.ParamType | None:
    c = setting.constraint
    if setting.many == "list":
        return ListOption(allow_empty=setting.allow_empty)
    if isinstance(c, Interval):
        return click.FloatRange(c.lo, c.hi, min_open=c.lo_open, max_open=c.hi_open)
    if isinstance(c, Integer):
        return click.IntRange(c.lo, c.hi)
    if isinstance(c, Options):
        return click.Choice(list(c.choices))
    if setting.choices is not None:
        return click.Choice(list(setting.choices))
    if setting.path is not None:
        return _PATHS[setting.path]
    return None


def setting_option(setting: Setting) -> SettingOption:
    """The click option of ``setting``: its flags, type, default, help and group."""
    shown = setting.default is not None and setting.default is not False and not setting.many
    extra: dict[str, Any] = {"is_flag": True} if setting.is_flag else {"type": click_type(setting)}
    if not (setting.many or setting.required or setting.default is False):
        extra["default"] = setting.default  # else click's own "unset"
    return SettingOption(
        [*setting.flags, setting.name],
        group=setting.group,
        multiple=setting.many is not None,
        required=setting.required,
        show_default=shown,
        metavar=setting.metavar,
        help=setting.help or None,
        **extra,
    )


def setting_options(settings: Iterable[Setting]) -> Callable[[Any], Any]:
    """A decorator adding the options of ``settings`` to a command, in their order."""

    def decorate(f: Any) -> Any:
        for declared in reversed(list(settings)):
            f.__click_params__ = [*getattr(f, "__click_params__", []), setting_option(declared)]
        return f

    return decorate


def from_command_line(setting: Setting, value: Any) -> Any:
    """A setting's value as click parsed it -> the value its dataclass takes (lists become
    tuples, None when empty)."""
    if setting.many == "list":
        return tuple(flatten(value)) or None
    if setting.many == "repeated":
        return tuple(value) or None
    return value


# --delimiter, --no-header/--columns, --null-values, --dtype (CSV files only)
CSV_SETTINGS = [s for s in CONFIG_SETTINGS.values() if s.group == "csv"]
csv_options = setting_options(CSV_SETTINGS)


def csv_settings(**values: Any) -> dict[str, Any]:
    """The CSV settings from the values of :data:`csv_options`."""
    return {s.name: from_command_line(s, values[s.name]) for s in CSV_SETTINGS}


format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="auto",
    show_default=True,
    help="Input format; auto: by file extension.",
)


class GroupedCommand(click.Command):
    """A command whose --help lists its options in titled groups, in ``settings.GROUPS``
    order (click 8 has no option groups). Options without a group of their own are placed
    by ``extra_groups`` (name -> group); --help goes with the output options."""

    def __init__(self, *args: Any, extra_groups: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.extra_groups = {"help": "output", **(extra_groups or {})}

    def group_of(self, param: click.Parameter) -> str:
        name = "help" if "--help" in param.opts else str(param.name)
        group = getattr(param, "group", None) or self.extra_groups.get(name)
        if group not in GROUPS:
            raise ValueError(f"option {param.name!r} of {self.name!r} has no help group")
        return group

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        records: dict[str, list[tuple[str, str]]] = {group: [] for group in GROUPS}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None and not isinstance(param, click.Argument):
                records[self.group_of(param)].append(record)
        for group, title in GROUPS.items():
            if records[group]:
                with formatter.section(title):
                    formatter.write_dl(records[group])
