"""A setting is declared once, as a dataclass field made by :func:`setting`: its name and type
are the field's, its default the field's default, and the field's metadata carries the rest
(constraint from :mod:`constraints`, help text, help group, command-line flags, list-ness).

Everything else is derived from that declaration: the validation of :class:`FitConfig` and
:class:`RunOptions`, the keyword check of ``streamgd.fit(**settings)``
(:func:`config.split_settings`), the click options of ``streamgd fit`` (generated, grouped in
its ``--help``), the keys of its TOML job files and what ``--print-config`` prints.

>>> from dataclasses import dataclass
>>> from streamgd.constraints import Integer
>>> @dataclass(frozen=True)
... class Example:
...     epochs: int = setting(5, Integer(1), "schedule", "Passes over the data.")
>>> table = settings_of(Example)
>>> table["epochs"].flags, table["epochs"].key, table["epochs"].default
(('--epochs',), 'epochs', 5)
>>> table["epochs"].check(0)
Traceback (most recent call last):
...
streamgd.errors.UsageError: --epochs must be an integer >= 1, got 0
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .constraints import Constraint, Flag, option_name
from .errors import UsageError

__all__ = [
    "GROUPS",
    "Setting",
    "setting",
    "settings_of",
    "check_settings",
    "unknown_setting",
]

# The help groups of ``streamgd fit``, in the order its --help shows them, and their titles.
GROUPS: dict[str, str] = {
    "data": "Data options",
    "csv": "CSV options",
    "model": "Model options",
    "optimiser": "Optimiser options",
    "schedule": "Schedule options",
    "validation": "Validation options",
    "checkpoints": "Checkpoint options",
    "jobs": "Job options",
    "output": "Output options",
    "performance": "Performance options",
    "distributed": "Distributed options (Dask)",
}


@dataclass(frozen=True)
class Setting:
    """One setting, as declared by :func:`setting` on a field of ``owner``."""

    name: str
    owner: str  # the class whose field it is: FitConfig, RunOptions, or a command's own
    default: Any
    constraint: Constraint | None  # None: checked elsewhere (the target, the CSV options)
    group: str
    help: str
    flags: tuple[str, ...]  # command-line names, the long one first (--x/--no-x for a switch)
    required: bool = False
    many: Literal["list", "repeated"] | None = None  # list: comma-separated or repeated
    allow_empty: bool = False  # a list item may be empty (the empty CSV field)
    metavar: str | None = None
    path: Literal["file", "dir", "existing file"] | None = None
    choices: Sequence[str] | None = None  # a live registry, when the constraint is not Options

    @property
    def nullable(self) -> bool:
        """Whether None (unset) is allowed: exactly the settings whose default is None."""
        return self.default is None and not self.required

    @property
    def group_rank(self) -> int:
        """The position of the setting's group in :data:`GROUPS` (for sorting)."""
        return list(GROUPS).index(self.group)

    @property
    def is_flag(self) -> bool:
        return isinstance(self.constraint, Flag)

    @property
    def key(self) -> str:
        """The TOML key: the long flag without dashes (``--batch-size`` -> ``batch-size``)."""
        return self.flags[0].split("/")[0][2:]

    def check(self, value: Any) -> Any:
        """``value`` unchanged, or a UsageError naming the option, what is allowed and what
        was given."""
        if self.constraint is None or (value is None and self.nullable):
            return value
        return self.constraint.check(self.name, value)


def setting(
    default: Any,
    constraint: Constraint | None,
    group: str,
    help: str = "",
    *,
    flags: Sequence[str] = (),
    required: bool = False,
    many: Literal["list", "repeated"] | None = None,
    allow_empty: bool = False,
    metavar: str | None = None,
    path: Literal["file", "dir", "existing file"] | None = None,
    choices: Sequence[str] | None = None,
) -> Any:
    """A dataclass field declaring a setting (see the module docstring). ``flags``: the
    command-line names when they are not just ``--name`` (a short name, another spelling);
    a switch defaulting to true gets ``--name/--no-name``."""
    if group not in GROUPS:
        raise ValueError(f"unknown help group {group!r}")
    meta = {
        "constraint": constraint,
        "group": group,
        "help": help,
        "flags": tuple(flags),
        "required": required,
        "many": many,
        "allow_empty": allow_empty,
        "metavar": metavar,
        "path": path,
        "choices": choices,
    }
    if required:
        return dataclasses.field(metadata={"setting": meta})
    return dataclasses.field(default=default, metadata={"setting": meta})


def settings_of(cls: type) -> dict[str, Setting]:
    """The settings declared on the fields of the dataclass ``cls``, in field order (fields
    not made by :func:`setting` are not settings)."""
    table = {}
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata.get("setting") or {})
        if not meta:
            continue
        default = None if f.default is dataclasses.MISSING else f.default
        meta["flags"] = meta["flags"] or _default_flags(f.name, meta["constraint"], default)
        table[f.name] = Setting(name=f.name, owner=cls.__name__, default=default, **meta)
    return table


def _default_flags(name: str, constraint: Constraint | None, default: Any) -> tuple[str, ...]:
    long = option_name(name)
    if isinstance(constraint, Flag) and default is True:
        return (f"{long}/--no-{long[2:]}",)
    return (long,)


def check_settings(obj: Any, table: dict[str, Setting]) -> None:
    """Check every setting of ``obj`` (a dataclass instance) against its declaration."""
    for name, declared in table.items():
        declared.check(getattr(obj, name))


def unknown_setting(name: str, known: Iterable[str]) -> UsageError:
    """The error for a keyword that is no setting, suggesting the closest name.

    >>> print(unknown_setting("batchsize", ["batch_size", "epochs"]))
    unknown setting 'batchsize' (did you mean 'batch_size'?)
    """
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UsageError(f"unknown setting {name!r}{hint}")

