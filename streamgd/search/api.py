"""The grid API: :func:`fit_grid` (settings with lists of values in, every model, the
leaderboard and the selected model out)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..blas import single_blas_thread
from ..config import RunOptions, split_settings
from ..errors import UsageError
from ..features.select import resolve_target
from ..metrics import metric_names
from ..model import Model
from ..sources import open_source, with_target
from ..training.callbacks import Callback, CallbackList, api_callbacks
from ..training.loop import model_from_state
from .cv import cv_members, cv_row
from .engine import Member, train_members
from .grid import expand_grid
from .leaderboard import rank, score_entry, write_leaderboard

__all__ = ["fit_grid", "GridResult"]


@dataclass
class GridResult:
    """What :func:`fit_grid` returns: every model (in grid order, with its settings in
    ``labels``), the leaderboard (best first) and the selected model, ``best``. With ``cv``:
    ``models`` are the models on all rows, ``fold_models[i]`` configuration ``i``'s K fold
    models."""

    models: list[Model]
    labels: list[dict[str, Any]]
    leaderboard: list[dict[str, Any]]
    best: Model
    best_index: int
    select_metric: str
    fold_models: list[list[Model]] | None = None

    def save_all(self, directory: str) -> list[str]:
        """Write every model to ``directory`` as ``model-<index>.sgd`` (its grid position;
        with ``cv``, the model on all rows, and its fold models as
        ``model-<index>-fold<k>.sgd``) and return the paths."""
        os.makedirs(directory, exist_ok=True)
        paths = []
        for i, model in enumerate(self.models):
            named = [(f"model-{i:03d}.sgd", model)]
            if self.fold_models is not None:
                named += [
                    (f"model-{i:03d}-fold{k}.sgd", m) for k, m in enumerate(self.fold_models[i])
                ]
            for name, m in named:
                path = os.path.join(directory, name)
                m.save(path, option="--all-models")
                paths.append(path)
        return paths

    def write_leaderboard(self, path: str) -> None:
        """The leaderboard as CSV (or JSON, for a ``.json`` path)."""
        write_leaderboard(self.leaderboard, path)


def fit_grid(
    data: Any,
    y: Any = None,
    *,
    target: str | None = None,
    select_metric: str = "loss",
    callbacks: Sequence[Callback] = (),
    verbose: bool = False,
    quiet: bool = False,
    **settings: Any,
) -> GridResult:
    """Train one model per combination of the settings given several values (a list, or a
    comma-separated string: ``lr=[0.01, 0.1], l2="0,1e-4"``), all over ONE pass of the data
    per epoch, and select the best by its validation ``select_metric`` (``loss`` by default;
    larger is better for accuracy, precision, recall, f1, auc and r2). The grid needs
    validation rows: ``holdout``, ``holdout_rows`` or ``validation``, or ``cv=K`` folds
    (K-fold cross-validation in the same pass: see :mod:`streamgd.search.cv`; a single
    configuration is fine). Every model equals the same configuration trained alone by
    :func:`streamgd.fit` with the same seed, to the bit.

    >>> import streamgd.search  # doctest: +SKIP
    >>> result = streamgd.search.fit_grid("big/*.parquet", target="y", holdout=0.1,
    ...                                   l2=[0, 1e-5, 1e-3], lr=[0.01, 0.1])  # doctest: +SKIP
    >>> result.best.save("model.sgd")  # doctest: +SKIP
    """
    data, target = with_target(data, y, target)
    config_settings, run_settings = split_settings({"target": target, **settings})
    hooks = CallbackList(api_callbacks(callbacks, verbose=verbose, quiet=quiet))
    configs, labels = expand_grid(config_settings)
    options = RunOptions(**run_settings)
    with single_blas_thread():
        return run_grid(data, configs, labels, options, hooks, select_metric=select_metric)


def run_grid(
    data: Any,
    configs: list,
    labels: list[dict[str, Any]],
    options: RunOptions,
    hooks: CallbackList,
    *,
    select_metric: str = "loss",
) -> GridResult:
    """Train the grid ``configs`` (see :func:`~streamgd.search.grid.expand_grid`) on ``data``
    and select the best model (callers limit BLAS threads)."""
    first = configs[0]
    if not first.validates and not first.cv:
        raise UsageError(
            "a grid selects its model on validation rows: add --holdout, --holdout-rows, "
            "--validation or --cv"
        )
    task = first.make_loss().task
    if select_metric != "loss" and select_metric not in metric_names(task):
        raise UsageError(
            f"--select-metric must be loss or one of {', '.join(metric_names(task))} "
            f"(the metrics of --loss {first.loss}), got {select_metric!r}"
        )
    dataset = open_source(
        data,
        first.format,
        csv=first.csv_options(),
        head_rows=first.stats_rows,
        digest=bool(options.checkpoint_dir),  # in-memory data: checked again on resume
    )
    if dataset.one_shot:
        raise UsageError(
            "a grid scores held-out rows every epoch: it cannot train on a one-shot iterator"
        )
    resolved = [resolve_target(c, dataset.schema, warn=hooks.on_warning) for c in configs]
    for note in dataset.notes:
        hooks.on_warning(note)

    def epoch_end(member: Member, entry: dict[str, Any], ending: int) -> None:
        shown = {**entry, "model": member.index, "grid": member.label, "grid_ending": ending}
        hooks.on_epoch_end(member.state, shown)

    if first.cv:
        return _run_cv(dataset, resolved, labels, options, hooks, epoch_end, select_metric)
    members = train_members(
        dataset, resolved, labels, options, warn=hooks.on_warning, on_epoch_end=epoch_end
    )
    models = [model_from_state(m.state, m.config) for m in members]
    rows = []
    for i, m in enumerate(members):
        scored = score_entry(m.state.history, m.state.stop_reason)
        vals = {k: v for k, v in scored.items() if k.startswith("val_") and k != "val_rows"}
        rows.append(
            {
                "model": i,
                **m.label,
                **vals,
                "epochs": len(m.state.history),
                "stop_reason": m.state.stop_reason,
            }
        )
    board = rank(rows, select_metric)
    best = board[0]["model"]
    return GridResult(
        models, [dict(label) for label in labels], board, models[best], best, select_metric
    )


def _run_cv(dataset, configs, labels, options, hooks, epoch_end, select_metric) -> GridResult:
    """--cv K: K fold models and one model on all rows per configuration over one stream;
    the leaderboard ranks the configurations by their mean over folds."""
    k = configs[0].cv
    member_configs, member_labels = cv_members(configs, labels)
    members = train_members(
        dataset,
        member_configs,
        member_labels,
        options,
        warn=hooks.on_warning,
        on_epoch_end=epoch_end,
    )
    rows, models, fold_models = [], [], []
    for i, label in enumerate(labels):
        own = members[i * (k + 1) : (i + 1) * (k + 1)]
        rows.append({"model": i, **label, **cv_row(own[:k], own[k])})
        models.append(model_from_state(own[k].state, own[k].config))
        fold_models.append([model_from_state(m.state, m.config) for m in own[:k]])
    board = rank(rows, select_metric)
    best = board[0]["model"]
    return GridResult(
        models,
        [dict(label) for label in labels],
        board,
        models[best],
        best,
        select_metric,
        fold_models,
    )
