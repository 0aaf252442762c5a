"""The grid's own command-line settings (``streamgd fit`` shows them with its output
options): which validation metric selects the model, and where every model goes."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import setting, settings_of

__all__ = ["GridOptions", "GRID_OPTIONS"]


@dataclass(frozen=True)
class GridOptions:
    select_metric: str = setting(
        "loss",
        None,
        "output",
        "With several values for a training setting (a grid: --lr 0.01,0.1 --l2 0,1e-4 ...): "
        "the validation metric that selects the model written to -o (loss, mse, rmse, mae, "
        "logloss: smaller is better; r2, accuracy, precision, recall, f1, auc: larger).",
        metavar="METRIC",
    )
    all_models: str | None = setting(
        None,
        None,
        "output",
        "With a grid: write every model to this directory (model-000.sgd, ... in grid order; "
        "see the leaderboard's model column).",
        path="dir",
    )


GRID_OPTIONS = settings_of(GridOptions)
