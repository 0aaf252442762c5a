"""Checks of settings that only make sense together (each setting's own range is checked by
its constraint, see :mod:`streamgd.constraints`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from .errors import UsageError

__all__ = ["check_combinations", "check_cluster_settings"]


def check_combinations(config: Any) -> None:
    """Refuse a :class:`~streamgd.config.FitConfig` whose settings contradict each other.

    Raises:
        UsageError: naming the options that cannot go together.
    """
    if config.patience is not None and config.cv and config.cv_fold is None:
        raise UsageError(
            "--patience stops on validation rows, which the model on all rows of --cv has "
            "none of: drop --patience (or select on --holdout rows without --cv)"
        )
    if config.patience is not None and not config.validates:
        raise UsageError(
            "--patience stops on the validation loss: it needs --validation, --holdout or "
            "--holdout-rows"
        )
    if sum(map(bool, (config.validation, config.holdout, config.holdout_rows))) > 1:
        raise UsageError("use one of --validation, --holdout and --holdout-rows")
    _check_cv(config)
    if config.text and (config.record_path or config.solver == "normal"):
        raise UsageError(
            "--text columns are trained by gradient descent: they cannot be combined with "
            "--solver normal or --record-path"
        )
    text_options = {
        "--text-bits": config.text_bits != 18,
        "--ngrams": config.ngrams != 1,
        "--text-binary": config.text_binary,
        "--text-norm": config.text_norm != "none",
        "--text-slots": config.text_slots != 64,
    }
    given = [name for name, changed in text_options.items() if changed]
    if given and not config.text:
        raise UsageError(f"{', '.join(given)} encode --text columns: name them too")
    from .solvers import get_solver  # numpy: loaded by a fit, not by --help

    get_solver(config.solver).check(config)  # what the solver cannot do
    if config.categorical and config.record_path:
        raise UsageError(
            "--categorical features are trained by gradient descent: they cannot be "
            "combined with --solver normal or --record-path"
        )
    if config.interactions:
        from .features.interactions import parse_terms  # pyarrow: loaded by a fit

        parse_terms(config.interactions)  # the syntax; the columns are checked on the data
    if config.hash_bits is not None and not config.categorical:
        raise UsageError("--hash-bits encodes --categorical columns: name them too")
    if config.round_protocol == "peer" and config.quorum < 1:
        raise UsageError("--quorum below 1 needs --round-protocol tasks (peer rounds wait for all)")


# how --cluster trains: settings that mean nothing without it
_CLUSTER_SETTINGS = ("shards", "sync_every", "quorum", "round_protocol")


def check_cluster_settings(config: Any, cluster: str | None) -> None:
    """Refuse the --cluster settings changed from their defaults when there is no --cluster
    (they would be recorded with the model as if they had shaped it).

    Raises:
        UsageError: naming the settings given.
    """
    if cluster:
        return
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    given = [
        "--" + name.replace("_", "-")
        for name in _CLUSTER_SETTINGS
        if getattr(config, name) != defaults[name]
    ]
    if given:
        raise UsageError(
            f"{', '.join(given)} {'sets' if len(given) == 1 else 'set'} how --cluster trains: "
            "give --cluster too, or drop them"
        )


def _check_cv(config: Any) -> None:
    """--cv K validates on its folds (not also on --holdout/--validation rows); --cv-fold
    names one of them."""
    if config.cv_fold is not None and not config.cv:
        raise UsageError("--cv-fold names a fold of --cv K: give --cv too")
    if not config.cv:
        return
    if config.validation or config.holdout or config.holdout_rows:
        raise UsageError(
            "--cv K scores each model on its own fold: drop --validation, --holdout and "
            "--holdout-rows (or drop --cv to select on those rows)"
        )
    if config.cv_fold is not None and config.cv_fold >= config.cv:
        raise UsageError(f"--cv-fold must be 0 .. {config.cv - 1} with --cv {config.cv}")
    if config.solver != "sgd":
        raise UsageError("--cv trains by gradient descent: drop --solver normal")
