"""The continual mode (``--continual``): a job run again and again over growing paths trains
only on the files new since its last completed run, continuing from its state.

One run is one *increment*. The first (increment 0) is an ordinary fit whose checkpoint starts
the ledger (:mod:`.ledger`). Each later run compares the files its paths resolve to with the
ledger; with nothing new it does nothing. Otherwise it scores the current model on the new
files (test-then-train: the same metrics as ``evaluate``), then runs the state forward for
``--epochs`` passes over them, as :func:`~.continuation.continue_state` does one pass: the
weights, optimiser state, schedule step and statistics carry on. The files are trained in a
seeded order that does not depend on how they were listed.

The increment in progress is recorded in the state (``continual.pending``: its files in
training order, the epoch it ends at, the score before training), so a run killed in the middle
is resumed exactly by the next run, as ``--resume`` would, which then goes on to the files that
came meanwhile; only when its passes are done is an increment entered in the ledger and in the
history of increments (``continual.runs``), in one atomic checkpoint.

The standardisation statistics are those of the first run, so the weights of all increments
are in one scale. ``--refresh-stats`` takes new ones from the increment's files and
re-expresses the weights exactly for them (:func:`restandardize`): the model predicts the same
before and after; the optimiser's state starts afresh (its moments are in the old units).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..config import FitConfig, RunOptions
from ..errors import CheckpointError, DataError, UsageError
from ..features import FeatureSpec
from ..scoring import evaluate_model
from ..solvers import get_solver
from ..sources import Dataset
from . import ledger
from .callbacks import CallbackList
from .checkpoint import CheckpointManager
from .continuation import fresh_pass
from .init import check_compatible, check_settings, initial_state
from .loop import Trainer, model_from_state
from .replay import update_reservoir, with_replay
from .state import TrainState

__all__ = ["run_continual", "restandardize"]


def run_continual(
    dataset: Dataset,
    config: FitConfig,
    options: RunOptions,
    hooks: CallbackList,
    manager: CheckpointManager,
) -> tuple[TrainState, dict[str, Any], str | None]:
    """One run of a continual job over ``dataset`` (every file its paths resolve to now), in
    the checkpoint directory of ``manager`` (locked by the caller). Returns the final state,
    the run's report (what :meth:`~.callbacks.Callback.on_increment` is given) and the
    checkpoint it started from (None for the first run)."""
    if dataset.in_memory:
        raise UsageError(
            f"{dataset.files[0].path}: --continual keeps a ledger of files; give it paths or "
            "globs (for in-memory data, continue_state or partial_fit runs a state forward)"
        )
    found = manager.latest()
    if found is None:
        return _first_run(dataset, config, options, hooks, manager)
    path, state = found
    check_settings(state, config, path)
    books = state.continual
    if books.ledger is None and books.pending is None:
        raise CheckpointError(
            f"{path}: the checkpoint is of a run without --continual, which keeps no ledger of "
            "the files trained on; give the continual job its own --output (or --checkpoint-dir)"
        )
    finished = None
    if books.pending is not None:  # an increment was cut short: finish it exactly, then go on
        sub = _pending_files(dataset, books.pending, path)
        state, finished = _train(state, sub, config, options, hooks, manager, resumed=path)
        books = state.continual
    found_now = ledger.compare(
        books.ledger or [],
        dataset,
        retrain_changed=options.retrain_changed,
        ignore_removed=options.ignore_removed,
    )
    if not found_now.new and finished is not None and not found_now.removed:
        return state, finished, path
    if not found_now.new:
        if found_now.removed:  # accepted: the ledger forgets them
            books.ledger = ledger.updated(books.ledger or [], [], found_now.removed)
            manager.save(state)
        report = {"increment": len(books.runs) - 1, "new_files": 0, "rows": 0, "trained": False}
        report["removed"] = list(found_now.removed)
        hooks.on_increment(report)
        return state, report, path
    return (*_next_increment(state, dataset, found_now, config, options, hooks, manager), path)


def _first_run(
    dataset: Dataset,
    config: FitConfig,
    options: RunOptions,
    hooks: CallbackList,
    manager: CheckpointManager,
) -> tuple[TrainState, dict[str, Any], None]:
    """Increment 0: an ordinary fit of every file, in the increments' order."""
    manager.supersede_existing()
    paths = [f.path for f in dataset.files]
    sub = ledger.subset(dataset, ledger.training_order(paths, config.seed, 0))
    state = initial_state(
        sub, config, options, warn=hooks.on_warning, progress=hooks.on_stats_progress
    )
    state.continual.pending = _pending(sub, 0, until=config.epochs, state=state, score=None)
    return (*_train(state, sub, config, options, hooks, manager), None)


def _next_increment(
    state: TrainState,
    dataset: Dataset,
    found: ledger.Increment,
    config: FitConfig,
    options: RunOptions,
    hooks: CallbackList,
    manager: CheckpointManager,
) -> tuple[TrainState, dict[str, Any]]:
    """Score the model on the new files, then train ``state`` on them."""
    number = len(state.continual.runs)
    paths = [dataset.files[i].path for i in found.new]
    order = ledger.training_order(paths, config.seed, number)
    sub = ledger.subset(dataset, [found.new[k] for k in order])
    score = evaluate_model(model_from_state(state, config), sub)
    score.pop("files", None)
    if options.refresh_stats:
        fresh = initial_state(sub, config, RunOptions(), warn=hooks.on_warning)
        state = restandardize(state, fresh.spec, config)
    work = fresh_pass(state, sub)
    work.continual.pending = _pending(
        sub,
        number,
        until=state.epoch + config.epochs,
        state=state,
        score=score,
        changed=found.changed,
        removed=found.removed,
    )
    return _train(work, sub, config, options, hooks, manager)


def _pending(
    sub: Dataset,
    number: int,
    *,
    until: int,
    state: TrainState,
    score: dict[str, Any] | None,
    changed: tuple[str, ...] = (),
    removed: tuple[str, ...] = (),
) -> dict[str, Any]:
    return {
        "increment": number,
        "files": [f.path for f in sub.files],
        "until": until,
        "rows_before": state.rows_trained,
        "epochs_before": len(state.history),
        "pre_score": score,
        "changed": list(changed),
        "removed": list(removed),
    }


def _pending_files(dataset: Dataset, pending: dict[str, Any], path: str) -> Dataset:
    """The files of the increment in progress, in its order; a DataError naming one gone."""
    where = {f.path: i for i, f in enumerate(dataset.files)}
    for name in pending["files"]:
        if name not in where:
            raise DataError(
                f"increment {pending['increment']} was cut short while training on the file "
                f"(checkpoint {path}), which is no longer among the input files; restore it "
                "to finish that increment",
                path=name,
            )
    return ledger.subset(dataset, [where[name] for name in pending["files"]])


def _train(
    state: TrainState,
    sub: Dataset,
    config: FitConfig,
    options: RunOptions,
    hooks: CallbackList,
    manager: CheckpointManager,
    *,
    resumed: str | None = None,
) -> tuple[TrainState, dict[str, Any]]:
    """Run the increment in progress to its end, then enter it in the books and checkpoint.
    ``resumed``: the checkpoint it was cut short in, whose input it must be."""
    pending = state.continual.pending
    assert pending is not None  # set by every caller
    run_config = dataclasses.replace(config, epochs=pending["until"])
    state.config = run_config.to_dict()  # the epochs this state now runs to
    source, replayed = with_replay(sub, state) if options.replay else (sub, 0)
    if resumed is not None:
        check_compatible(state, config, source, resumed)
        hooks.on_resume(state, resumed)
    else:
        state.data = source.fingerprint()
    trainer = Trainer(source, run_config, options, callbacks=hooks.callbacks, manager=manager)
    state = trainer.run(state)
    books = state.continual
    if options.replay:
        number = pending["increment"]
        update_reservoir(state, sub, options.replay, seed=config.seed, increment=number)
    record = {
        "increment": pending["increment"],
        "files": pending["files"],
        "rows": (state.history[-1]["rows"] if state.history else 0) - replayed,  # per pass
        "replayed": replayed,
        "rows_trained": state.rows_trained - pending["rows_before"],
        "epochs": len(state.history) - pending["epochs_before"],
        "step": state.step,
        "pre_score": pending["pre_score"],
        "train_loss": state.history[-1]["loss"] if state.history else None,
        "changed": pending["changed"],
        "removed": pending["removed"],
    }
    trained = ledger.entries(sub, pending["increment"])
    books.ledger = ledger.updated(books.ledger or [], trained, pending["removed"])
    books.runs.append(record)
    books.pending = None
    manager.save(state)  # the same step's checkpoint again, now with the increment entered
    report = {**record, "new_files": len(record["files"]), "trained": True}
    hooks.on_increment(report)
    return state, report


def restandardize(state: TrainState, spec: FeatureSpec, config: FitConfig) -> TrainState:
    """``state`` with ``spec``'s centring and scaling (features and target) and its weights
    re-expressed for them, so that every prediction stays what it was (to float rounding);
    the imputation values, encodings and bounds stay the old spec's. The solver's state
    starts afresh; the step counter (the schedule) carries on.

    With ``z = (x - c) / s`` and a target ``y = tc + ts * t``, a weight ``w`` becomes
    ``w * (ts / ts') * (s' / s)``, the code weights scale by ``ts / ts'`` and the intercept
    absorbs the change of centres."""
    old = state.spec
    n = len(old.names)
    params = np.array(state.params, dtype=np.float64)
    cols = (slice(None),) + (None,) * (params.ndim - 1)  # broadcast over classes
    ratio = old.target_scale / spec.target_scale
    w = params[:n]
    w_new = w * ratio * (spec.scale / old.scale)[cols]
    # the constant part of the prediction in target units: tc + ts * (b - sum w c / s)
    constant = old.target_center + old.target_scale * (
        params[n] - ((old.center / old.scale)[cols] * w).sum(axis=0)
    )
    b_new = (constant - spec.target_center) / spec.target_scale + (
        (spec.center / spec.scale)[cols] * w_new
    ).sum(axis=0)
    params[:n], params[n] = w_new, b_new
    params[n + 1 :] *= ratio
    new_spec = dataclasses.replace(
        old,
        center=spec.center,
        scale=spec.scale,
        target_center=spec.target_center,
        target_scale=spec.target_scale,
        precond=spec.precond if old.precond is not None else None,
    )
    solver = get_solver(config.solver)
    return dataclasses.replace(
        state,
        params=params,
        spec=new_spec,
        opt_state=solver.init_state(params, config.make_optimizer()),
    )
