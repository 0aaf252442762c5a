"""The estimators' hyperparameters, generated from :class:`~streamgd.config.FitConfig`'s
settings: one keyword-only ``__init__`` parameter per setting that applies, with the setting's
default, so that scikit-learn's ``get_params``, ``set_params`` and ``clone`` (which read the
signature of ``__init__``) see exactly the FitConfig settings and nothing is copied by hand.

Which settings apply:

- every FitConfig setting, under its own name (``seed``, not ``random_state``; ``epochs``, not
  ``max_iter``: one name for one thing across the CLI, the API and the estimators);
- except ``shards`` and ``sync_every``, which only mean something with a Dask cluster, and
  an estimator trains in its own process;
- ``class_weight`` only on the classifier.

The data settings (:data:`FILE_SETTINGS`: the target, feature and weight columns, categorical
and text encoding, the input format and the CSV options) apply when ``X`` names files; with
arrays and DataFrames scikit-learn's own conventions decide (``X``'s columns, ``y``,
``sample_weight``) and giving one of them is a ``ValueError``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from ..config import CONFIG_SETTINGS

__all__ = ["estimator_settings", "FILE_SETTINGS", "NOT_PARAMETERS", "make_init", "params_doc"]

# settings that cannot apply to an estimator (Dask only)
NOT_PARAMETERS = frozenset({"shards", "sync_every"})
# settings that describe files: X's columns, y and sample_weight stand for them otherwise
FILE_SETTINGS = frozenset(
    {
        "target",
        "features",
        "categorical",
        "max_categories",
        "hash_bits",
        "text",
        "text_bits",
        "ngrams",
        "text_binary",
        "text_norm",
        "text_slots",
        "format",
        "weight",
        "delimiter",
        "header",
        "columns",
        "null_values",
        "dtypes",
    }
)


def estimator_settings(*, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The estimator's parameters and their defaults, in FitConfig's field order: the
    settings that apply (see the module docstring), less ``exclude``."""
    left_out = NOT_PARAMETERS | set(exclude)
    return {n: s.default for n, s in CONFIG_SETTINGS.items() if n not in left_out}


def make_init(defaults: dict[str, Any]) -> Callable[..., None]:
    """An ``__init__`` that stores each parameter (its default when not given) and nothing
    else, as scikit-learn requires, with a signature of keyword-only parameters that
    ``get_params`` reads."""

    def __init__(self, **params: Any) -> None:
        for name in params:
            if name not in defaults:
                raise TypeError(
                    f"{type(self).__name__}.__init__() got an unexpected keyword argument {name!r}"
                )
        for name, default in defaults.items():
            setattr(self, name, params.get(name, default))

    keyword = inspect.Parameter.KEYWORD_ONLY
    __init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            *(inspect.Parameter(n, keyword, default=d) for n, d in defaults.items()),
        ]
    )
    return __init__


def params_doc(defaults: dict[str, Any], overrides: dict[str, str] | None = None) -> str:
    """A numpydoc "Parameters" section from the settings' help texts (``overrides``: the
    text for a parameter whose meaning differs in the estimator)."""
    overrides = overrides or {}
    lines = ["Parameters", "----------"]
    for name, default in defaults.items():
        text = overrides.get(name) or CONFIG_SETTINGS[name].help or "See ``streamgd fit --help``."
        lines.append(f"{name} : default={default!r}")
        if name in FILE_SETTINGS:
            text += " Only when X names files."
        lines.append(f"    {text}")
    return "\n".join(lines)
