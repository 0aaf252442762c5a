"""Which columns are features: the numeric columns asked for (or all but the target and the
categorical ones), checked against the schema; and the names of the missing/infinite policies
that decide what happens to a row with a missing or infinite value (see :mod:`.rows`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from ..choices import INFINITE_POLICIES, MISSING_POLICIES
from ..errors import DataError, UsageError
from ..sources import is_numeric
from ..sources.schema import missing_in

__all__ = [
    "MISSING_POLICIES",
    "INFINITE_POLICIES",
    "TARGET_NAMES",
    "default_target",
    "resolve_target",
    "select_features",
    "check_in_every_file",
]

# The column names taken as the target when none is given (exactly one of them must exist).
TARGET_NAMES = ("target", "label", "y")


def default_target(schema: pa.Schema) -> str:
    """The target when none is given: the one column named ``target``, ``label`` or ``y``;
    a UsageError listing the columns when there is none or more than one.

    >>> default_target(pa.schema([("x", pa.float64()), ("y", pa.float64())]))
    'y'
    """
    found = [name for name in TARGET_NAMES if name in schema.names]
    if len(found) == 1:
        return found[0]
    why = (
        f"several columns could be the target ({', '.join(found)})"
        if found
        else "no column is named " + ", ".join(TARGET_NAMES[:-1]) + f" or {TARGET_NAMES[-1]}"
    )
    raise UsageError(
        f"no --target given and {why}; pass --target NAME (columns: {', '.join(schema.names)}; "
        "'streamgd schema PATHS' describes them)"
    )


def resolve_target(config: Any, schema: pa.Schema, *, warn: Callable[[str], None]) -> Any:
    """``config`` (a FitConfig) with its target decided: as given, or when it is None the
    column :func:`default_target` finds in ``schema``, announced through ``warn``."""
    if config.target is not None:
        return config
    target = default_target(schema)
    warn(f"using column {target!r} as the target; pass --target to choose")
    return dataclasses.replace(config, target=target)


def select_features(
    schema: pa.Schema,
    target: str,
    features: Sequence[str] | None,
    *,
    path: str,
    labels: bool = False,
    categorical: Sequence[str] = (),
) -> tuple[str, ...]:
    """The numeric feature columns: those asked for, or every numeric column except the target,
    the ``categorical`` ones, times (timestamps, dates, times, durations: numeric, as seconds,
    when named) and columns some files lack. With ``labels`` (multi-class) the target may hold
    strings as well as numbers."""
    names = schema.names
    if target not in names:
        raise UsageError(f"{path}: no target column {target!r}; columns are: {', '.join(names)}")
    check_in_every_file(schema, [target, *(features or ()), *categorical])
    typ = schema.field(target).type
    if not labels and not is_numeric(typ):
        raise DataError(
            f"the target must be numeric, but its type is {typ}"
            + ("; for class labels given as text use --loss softmax" if _text(typ) else ""),
            path=path,
            column=target,
        )
    if features:
        chosen = [f for f in dict.fromkeys(features) if f not in categorical]
        for name in chosen:
            if name not in names:
                raise UsageError(
                    f"{path}: no feature column {name!r}; columns are: {', '.join(names)}"
                )
            if name == target:
                raise UsageError(f"column {name!r} is the target; it cannot also be a feature")
            if not is_numeric(schema.field(name).type):
                raise DataError(
                    f"feature is not numeric (type {schema.field(name).type}); "
                    "choose numeric columns with --features, or name it with --categorical",
                    path=path,
                    column=name,
                )
    else:
        chosen = [
            f.name
            for f in schema
            if f.name != target
            and f.name not in categorical
            and is_numeric(f.type)
            and not pa.types.is_temporal(f.type)  # times: when named (data trains as before)
            and not missing_in(f)
        ]
        if not chosen and not categorical:
            raise DataError(f"no numeric column besides the target {target!r}", path=path)
    return tuple(chosen)


def _text(typ: pa.DataType) -> bool:
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    return pa.types.is_string(typ) or pa.types.is_large_string(typ)


def check_in_every_file(schema: pa.Schema, used) -> None:
    """A column that is used must be in every file: an error naming a file that lacks it."""
    for name in dict.fromkeys(used):
        if name in schema.names:
            lacking = missing_in(schema.field(name))
            if lacking:
                more = f" (and {len(lacking) - 1} more file(s))" if len(lacking) > 1 else ""
                raise DataError(
                    f"this file has no column {name!r}, which the other files have and this "
                    f"run uses{more}",
                    path=lacking[0],
                    column=name,
                )
