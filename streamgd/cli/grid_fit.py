"""``streamgd fit`` with several values of a training setting (``--lr 0.01,0.1 --l2 0,1e-4``):
every combination trains over one pass of the data per epoch (:mod:`streamgd.search`); the
best on the validation rows is written to -o as an ordinary model, with the leaderboard beside
it (STEM.leaderboard.csv and .json), and printed."""

from __future__ import annotations

import math
import os
from typing import Any

import click

from .. import __version__
from ..config import RunOptions, split_settings
from ..training.callbacks import Callback
from .options import publish_summary
from .reports import coefficients_text

__all__ = ["fit_grid_command", "leaderboard_paths"]


class _Lines(Callback):
    """Warnings, and one line per epoch of the grid (unless quiet), on stderr: how many
    models ended it and the best validation loss among them (under --cv, the best mean over
    a configuration's folds)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.entries: list[dict[str, Any]] = []

    def on_warning(self, message: str) -> None:
        click.echo(f"warning: {message}", err=True)

    def on_epoch_end(self, state: Any, entry: dict[str, Any]) -> None:
        if self.quiet:
            return
        self.entries.append(entry)
        if len(self.entries) >= entry.get("grid_ending", 1):
            click.echo(epoch_line(self.entries), err=True)
            self.entries = []


def epoch_line(entries: list[dict[str, Any]]) -> str:
    """The progress line of a grid's epoch from its models' history entries."""
    groups: dict[str, list[float]] = {}
    for e in entries:
        if isinstance(e.get("val_loss"), float) and math.isfinite(e["val_loss"]):
            label = " ".join(f"{k}={_num(v)}" for k, v in e["grid"].items() if k != "fold")
            groups.setdefault(label, []).append(e["val_loss"])
    head = f"epoch {entries[0].get('epoch')}: {len(entries)} models"
    if not groups:
        return head
    label, values = min(groups.items(), key=lambda kv: sum(kv[1]) / len(kv[1]))
    folds = f" (mean of {len(values)} folds)" if len(values) > 1 else ""
    where = f" at {label}" if label else ""
    return f"{head}, best val_loss {_num(sum(values) / len(values))}{folds}{where}"


def _num(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def leaderboard_paths(output: str) -> tuple[str, str]:
    """Where the leaderboard of a grid goes beside the model ``output``: STEM.leaderboard.csv
    and STEM.leaderboard.json."""
    stem = os.path.splitext(output)[0]
    return f"{stem}.leaderboard.csv", f"{stem}.leaderboard.json"


def fit_grid_command(
    logger: Any,
    paths: list[str],
    out: Any,
    settings: dict[str, Any],
    *,
    select_metric: str,
    all_models: str | None,
) -> None:
    """Train the grid ``settings`` describe, then write and print what it found."""
    from ..blas import single_blas_thread
    from ..search.api import run_grid
    from ..search.grid import expand_grid
    from ..search.leaderboard import brief, table, write_leaderboard
    from ..training.callbacks import CallbackList

    config_settings, run_settings = split_settings(settings)
    configs, labels = expand_grid(config_settings)
    if run_settings["checkpoint_dir"] is None and out.output is not None:
        run_settings["checkpoint_dir"] = out.output + ".ckpt"  # as a single model's fit
    options = RunOptions(**run_settings, handle_signals=True)
    if logger is not None:
        logger.emit(
            "start",
            version=__version__,
            paths=paths,
            output=out.output,
            settings=configs[0].to_dict(),
            grid=labels,
        )
        hooks = CallbackList([logger])
    else:
        hooks = CallbackList([_Lines(out.quiet)])
    with single_blas_thread():
        result = run_grid(paths, configs, labels, options, hooks, select_metric=select_metric)
    board = result.leaderboard
    best = result.best
    best.summary["select_metric"] = select_metric
    best.summary["leaderboard"] = board  # shown by inspect
    if out.output is not None:
        best.save(out.output, option="--output")
        best.save_history(out.output, option="--output")
        for path in leaderboard_paths(out.output):
            write_leaderboard(board, path)
    if all_models is not None:
        result.save_all(all_models)
    summary = {
        "model": out.output,
        "models": len(result.models),
        "selected": result.best_index,
        **({"cv": len(result.fold_models[0])} if result.fold_models else {}),
        **{k: v for k, v in best.summary.items() if k != "leaderboard"},
        "leaderboard": board,
    }
    if publish_summary(summary, best.history, out, logger):
        return
    if not out.quiet and logger is None:
        click.echo(table(brief(board, select_metric), limit=20), err=True)
        where = f"written to {out.output}" if out.output else "not saved (no -o)"
        if result.fold_models:
            folds = len(result.fold_models[0])
            chosen = (
                f"selected configuration {result.best_index} of {len(result.models)} by "
                f"validation {select_metric} (mean of {folds} folds); its model on all rows is"
            )
        else:
            chosen = (
                f"selected model {result.best_index} of {len(result.models)} by validation "
                f"{select_metric}:"
            )
        click.echo(f"{chosen} {where}", err=True)
    if out.output is None:
        click.echo(coefficients_text(best))
