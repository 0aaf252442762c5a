"""Building blocks of the commands' options: list-valued options (comma-separated or repeated),
the input-format and CSV options shared by several commands, and the JSON printer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

from ..errors import EXIT_DATA, EXIT_DIVERGED, EXIT_INTERNAL, EXIT_PREEMPTED, EXIT_USAGE
from ..sources import FORMATS
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
]

EXIT_CODES_HELP = (
    f"Exit codes: 0 success; {EXIT_DATA} data or runtime error; {EXIT_USAGE} usage error; "
    f"{EXIT_DIVERGED} training diverged; {EXIT_PREEMPTED} stopped by SIGTERM/SIGINT after "
    f"writing a checkpoint (rerun with --resume); {EXIT_INTERNAL} internal error (a bug)."
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



paths_argument = click.argument("paths", nargs=-1, required=True, metavar="PATHS...")


def csv_options(f):
    """--delimiter, --no-header/--columns, --null-values, --dtype (CSV files only)."""
    for option in reversed(
        [
            click.option(
                "--delimiter",
                default=None,
                help="CSV field delimiter, one character or 'tab' [default: ',' and "
                "a tab for .tsv files].",
            ),
            click.option(
                "--header/--no-header",
                default=True,
                show_default=True,
                help="Whether CSV files start with a header line; with --no-header give --columns.",
            ),
            click.option(
                "--columns",
                type=ListOption(),
                multiple=True,
                help="Column names of header-less CSV files (comma-separated or repeated).",
            ),
            click.option(
                "--null-values",
                type=ListOption(allow_empty=True),
                multiple=True,
                help="Exactly the CSV tokens read as null, e.g. 'NA,?,' (an empty "
                "item is the empty field) [default: pyarrow's list].",
            ),
            click.option(
                "--dtype",
                "dtypes",
                multiple=True,
                metavar="COLUMN=TYPE",
                help="Fix a CSV column's type (float64, float32, int64, bool, string) "
                "instead of inferring it from the first block; repeatable.",
            ),
        ]
    ):
        f = option(f)
    return f


def csv_settings(delimiter, header, columns, null_values, dtypes) -> dict[str, Any]:
    return {
        "delimiter": delimiter,
        "header": header,
        "columns": tuple(flatten(columns)) or None,
        "null_values": tuple(flatten(null_values)) or None,
        "dtypes": tuple(dtypes) or None,
    }


format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="auto",
    show_default=True,
    help="Input format; auto: by file extension.",
)

