"""Continuing a run on new data: one more pass of a :class:`TrainState` over another source.

This is the incremental step behind scikit-learn's ``partial_fit`` (and a continual mode that
keeps a model learning from data as it arrives): what was learned stays, what belongs to the
old data is replaced.

Kept from ``state``: the weights, the optimiser state (momentum, Adam's moments, ...), the
step counter (so the learning-rate schedule goes on where it was), the feature statistics
(centring, scaling, preconditioner, categorical vocabularies and classes: fixed by the data
the state was started on), the epoch counter and the history. Fresh: the data cursor and the
shuffle buffer (the new source is read from its start, shuffled as epoch ``state.epoch`` of
``config.seed``), the epoch's totals and the input fingerprint (the new source's).

A pass over a source whose rows are a whole number of batches takes exactly the steps that
the same rows would take as part of one longer pass without shuffling, so ``k`` continuations
over consecutive chunks give the weights of one pass over their concatenation, to the bit
(``tests/integration/test_sklearn.py`` checks it).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

from ..blas import single_blas_thread
from ..config import FitConfig, RunOptions
from ..cursor import Cursor
from ..errors import DataError, UsageError
from ..settings import check_instance
from ..sources import Dataset, open_source
from .callbacks import Callback, CallbackList
from .init import initial_state
from .loop import Trainer
from .state import EpochTotals, StreamState, TrainState

__all__ = ["open_for", "start_state", "continue_state", "fresh_pass"]


def open_for(source: Any, config: FitConfig) -> Dataset:
    """``source`` (anything :func:`~streamgd.sources.open_source` reads) as a dataset, read
    with ``config``'s format and CSV options. In-memory data is not hashed: no checkpoint
    of this state will be checked against it."""
    return open_source(
        source,
        config.format,
        csv=config.csv_options(),
        head_rows=config.stats_rows,
        digest=False,
    )


def start_state(
    source: Any,
    config: FitConfig,
    *,
    classes: tuple[tuple, Any] | None = None,
    callbacks: Sequence[Callback] = (),
) -> TrainState:
    """A fresh state whose statistics come from ``source`` (its statistics pass), before any
    step: what :func:`continue_state` then runs forward. ``config.target`` must be set.
    ``classes``: for a softmax loss, the labels and their row counts when the caller knows
    them (every class, also those ``source`` lacks: see :func:`~.init.initial_state`)."""
    check_instance(config, FitConfig)
    if config.target is None:
        raise UsageError("start_state needs config.target: the name of the target column")
    hooks = CallbackList(callbacks)
    with single_blas_thread():
        dataset = open_for(source, config)
        return initial_state(dataset, config, RunOptions(), warn=hooks.on_warning, classes=classes)


def continue_state(
    state: TrainState,
    source: Any,
    config: FitConfig,
    *,
    options: RunOptions | None = None,
    callbacks: Sequence[Callback] = (),
) -> TrainState:
    """Run ``state`` forward by one pass over ``source`` (see the module docstring) and
    return it (the same object, updated; on an error it is left as it was).

    ``config``: the settings that shaped ``state`` (loss, solver, optimiser, standardisation,
    weighting) must be those it was started with; the others (rate, schedule, penalties,
    batch size, seed, ...) apply from this pass on; ``epochs`` is not used (the pass is
    always one). A one-shot iterator is fine: it is read once. Checkpoint options in
    ``options`` are not supported (the state is the caller's to keep).
    """
    check_instance(config, FitConfig)
    check_instance(state, TrainState)
    options = options or RunOptions()
    if options.checkpoint_dir or options.resume or options.init or options.cluster:
        raise UsageError(
            "continue_state runs one pass in this process: checkpoint_dir, resume, init and "
            "cluster do not apply (save the returned state, or the model, yourself)"
        )
    with single_blas_thread():
        dataset = open_for(source, config)
        _check_columns(state, dataset)
        work = fresh_pass(state, dataset)
        one_more = dataclasses.replace(config, epochs=state.epoch + 1)
        trainer = Trainer(dataset, one_more, options, callbacks=callbacks)
        trainer.run(work)
    # only now, so that a failed pass (bad rows, divergence) leaves the caller's state intact
    for f in dataclasses.fields(TrainState):
        setattr(state, f.name, getattr(work, f.name))
    return state


def _check_columns(state: TrainState, dataset: Dataset) -> None:
    """A DataError naming the first column the state reads that the new source lacks."""
    spec = state.spec
    for name in spec.read_columns(spec.input_columns(has_target=True, weight=True)):
        if name not in dataset.schema.names:
            raise DataError(
                "the data lacks the column, which the state was trained on",
                path=dataset.files[0].path,
                column=name,
            )


def fresh_pass(state: TrainState, dataset: Dataset) -> TrainState:
    """A copy of ``state`` ready to read ``dataset`` from its start as the next epoch. The
    arrays are copied, since the steps update the weights and solver state in place (the
    continual mode's increments start this way too)."""
    return dataclasses.replace(
        state,
        params=state.params.copy(),
        opt_state={k: v.copy() for k, v in state.opt_state.items()},
        history=list(state.history),
        data=dataset.fingerprint(),
        finished=False,
        stop_reason=None,
        stream=StreamState(Cursor(state.epoch, 0, 0)),
        totals=EpochTotals(),
        early=dataclasses.replace(state.early),
        trajectory=dataclasses.replace(state.trajectory),
        continual=copy.deepcopy(state.continual),
    )
