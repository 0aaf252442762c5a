"""K-fold cross-validation in the grid's one pass (``--cv K``): the models each configuration
becomes, and the leaderboard row that sums them up.

Configuration ``c`` becomes K + 1 models over the shared stream: the model of fold ``k``
(``cv_fold=k``: each batch less its rows of fold ``k``, scored on fold ``k``; see
:mod:`streamgd.folds`), for k = 0 .. K-1, then the model on all rows (``c`` without ``--cv``:
an ordinary model, the one written to -o when ``c`` is selected). Each equals its run alone
(``streamgd.fit`` with the same settings) to the bit, as every model of a grid does.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from ..config import FitConfig
from ..errors import UsageError
from .leaderboard import score_entry

__all__ = ["cv_members", "cv_row"]


def cv_members(
    configs: Sequence[FitConfig], labels: Sequence[dict[str, Any]]
) -> tuple[list[FitConfig], list[dict[str, Any]]]:
    """Each configuration's K fold models then its model on all rows, with labels that add
    ``fold`` (``None``: all rows)."""
    k = configs[0].cv
    if any(c.patience is not None for c in configs):
        raise UsageError(
            "--patience stops on validation rows, which the model on all rows of --cv has "
            "none of: drop --patience (or select on --holdout rows without --cv)"
        )
    if configs[0].cv_fold is not None:
        raise UsageError("--cv-fold trains one fold's model alone: drop it for a grid")
    out, named = [], []
    for config, label in zip(configs, labels, strict=True):
        for fold in range(k):
            out.append(dataclasses.replace(config, cv_fold=fold))
            named.append({**label, "fold": fold})
        out.append(dataclasses.replace(config, cv=None))
        named.append({**label, "fold": None})
    return out, named


def cv_row(folds: Sequence[Any], whole: Any) -> dict[str, Any]:
    """The leaderboard's columns for one configuration: the mean of each validation metric
    over its fold models (``val_<metric>``) and their spread (``val_<metric>_std``, the
    population standard deviation over the folds, as scikit-learn's ``std_test_score``),
    then the model on all rows' epochs and stop reason. A fold without a score (diverged
    before its first epoch ended) makes the mean NaN: ranked last."""
    scored = [score_entry(m.state.history, m.state.stop_reason) for m in folds]
    names = sorted(
        {k for s in scored for k, v in s.items() if _metric(k, v)},
        key=lambda k: (k != "val_loss", k),
    )
    row: dict[str, Any] = {}
    for name in names:
        values = [s.get(name, math.nan) for s in scored]
        mean = sum(values) / len(values)
        row[name] = mean
        row[f"{name}_std"] = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    row["folds"] = len(folds)
    row["epochs"] = len(whole.state.history)
    row["stop_reason"] = whole.state.stop_reason
    return row


def _metric(key: str, value: Any) -> bool:
    return key.startswith("val_") and key != "val_rows" and isinstance(value, float)
