"""Checks of settings that only make sense together (each setting's own range is checked by
its constraint, see :mod:`streamgd.constraints`)."""

from __future__ import annotations

from typing import Any

from .errors import UsageError

__all__ = ["check_combinations"]


def check_combinations(config: Any) -> None:
    """Refuse a :class:`~streamgd.config.FitConfig` whose settings contradict each other.

    Raises:
        UsageError: naming the options that cannot go together.
    """
    if config.patience is not None and not config.validates:
        raise UsageError(
            "--patience stops on the validation loss: it needs --validation, --holdout or "
            "--holdout-rows"
        )
    if sum(map(bool, (config.validation, config.holdout, config.holdout_rows))) > 1:
        raise UsageError("use one of --validation, --holdout and --holdout-rows")
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
