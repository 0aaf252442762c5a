"""The training API: :func:`fit` (keywords in, a model out) and :func:`train` (a config and
run options in, the model, final state and how the run went out), resuming from checkpoints."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..blas import single_blas_thread
from ..config import FitConfig, RunOptions, split_settings
from ..config_checks import check_cluster_settings
from ..errors import UsageError
from ..features.select import resolve_target
from ..memory_plan import memory_report, plan_run
from ..model import Model
from ..settings import check_instance
from ..sources import Dataset, is_paths, open_source, source_kind, with_target
from .callbacks import Callback, CallbackList, api_callbacks
from .checkpoint import CheckpointManager
from .distributed import DistributedTrainer
from .init import check_compatible, initial_state
from .loop import Trainer, model_from_state
from .state import TrainState

__all__ = ["fit", "train", "TrainResult"]


@dataclass
class TrainResult:
    """What :func:`train` returns: the model, the final state, and how the run went."""

    model: Model
    state: TrainState
    trained: bool  # False when a resumed checkpoint had already finished: nothing was done
    resumed_from: str | None = None
    # when nothing was trained: the digest of the final model that the finished checkpoint
    # recorded (None for a checkpoint written before digests were recorded)
    model_digest: str | None = None
    continual: dict[str, Any] | None = None  # a --continual run's report (see on_increment)
    # the memory plan's estimate beside the measured peak (see streamgd.memory_plan)
    memory: dict[str, Any] | None = None


def train(
    source: Any,
    config: FitConfig,
    options: RunOptions | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    validation: Any = None,
) -> TrainResult:
    """Train, or resume training, on ``source`` (files or in-memory data: see
    :func:`streamgd.sources.open_source`) and return the model and the final state.

    With ``options.resume`` the newest valid checkpoint is continued (a fresh start when there
    is none); one that has already finished is returned as it is, without training. Without
    it, checkpoints of an earlier run in the directory are removed once this run has written
    its first checkpoint, so that a failed start never loses them.

    ``validation`` is in-memory validation data (any source but files, which go in
    ``config.validation``), scored after every epoch; ``config.validation`` then holds its
    name (see :func:`fit`).
    """
    options = options or RunOptions()
    check_instance(config, FitConfig)
    check_instance(options, RunOptions)
    with single_blas_thread():
        return _train(source, config, options, CallbackList(callbacks), validation)


def _train(
    source: Any,
    config: FitConfig,
    options: RunOptions,
    hooks: CallbackList,
    validation: Any = None,
) -> TrainResult:
    _check_cv(config, options)
    check_cluster_settings(config, options.cluster)
    # in-memory data is hashed only to check a resumed checkpoint's data against it
    digest = bool(options.checkpoint_dir)
    dataset = open_source(
        source, config.format, csv=config.csv_options(), head_rows=config.stats_rows, digest=digest
    )
    config = resolve_target(config, dataset.schema, warn=hooks.on_warning)  # None: the default
    config = _check_source(dataset, config, options, hooks)
    # --memory-limit: the buffer, lanes and pieces sized for it (recorded in the config); a
    # resumed run keeps the checkpoint's (planned below, once it is found)
    plan = None
    if options.continual or not (options.memory_limit and options.resume):
        config, options, plan = plan_run(dataset, config, options)
    for note in dataset.notes:  # columns widened between files
        hooks.on_warning(note)
    manager = None
    if options.checkpoint_dir:
        manager = CheckpointManager(
            options.checkpoint_dir, keep=options.keep, warn=hooks.on_warning
        )
        manager.model_digest = lambda s: model_from_state(s, config).digest()
        manager.acquire()
    try:
        if options.continual:
            if options.memory_limit and manager and (found := manager.latest()) is not None:
                # the sizes of the job's first run decide its model: keep them as files come
                config, options, plan = plan_run(dataset, config, options, found[1].config)
            result = _continual(dataset, config, options, hooks, manager)
            result.memory = memory_report(plan, options)
            return result
        state, resumed_from = None, None
        if manager is not None and options.resume:
            found = manager.latest()
            if found is not None:
                resumed_from, state = found
                if options.memory_limit:  # the model depends on the recorded sizes: keep them
                    config, options, plan = plan_run(dataset, config, options, state.config)
                check_compatible(state, config, dataset, resumed_from)
                if state.finished and not _wants_more(state, config):
                    hooks.on_warning(
                        f"{resumed_from}: training had already finished; nothing to do"
                    )
                    model = model_from_state(state, config)
                    recorded = manager.recorded_model_digest
                    return TrainResult(model, state, False, resumed_from, recorded)
                # the run's --epochs and --tol (free to differ) from now on, as a fresh run's
                state.config = config.to_dict()
                hooks.on_resume(state, resumed_from)
        elif manager is not None:
            manager.supersede_existing()
        if state is None:
            if plan is None:  # a resume that found no checkpoint: a fresh plan
                config, options, plan = plan_run(dataset, config, options)
            state = initial_state(
                dataset, config, options, warn=hooks.on_warning, progress=hooks.on_stats_progress
            )
        elif state.finished:  # finished its epochs; more were asked for
            state.finished, state.stop_reason = False, None
        scored = None
        if validation is not None:
            scored = open_source(validation, config.format, csv=config.csv_options())
        trainer = Trainer(
            dataset, config, options, callbacks=hooks.callbacks, manager=manager, validation=scored
        )
        if options.cluster:
            state = DistributedTrainer(trainer, options.cluster).run(state)
        else:
            state = trainer.run(state)
    except BaseException as error:
        hooks.on_train_abort(error)
        raise
    finally:
        if manager is not None:
            manager.release()
    result = TrainResult(model_from_state(state, config), state, True, resumed_from)
    result.memory = memory_report(plan, options)
    return result


def _continual(
    dataset: Dataset,
    config: FitConfig,
    options: RunOptions,
    hooks: CallbackList,
    manager: CheckpointManager | None,
) -> TrainResult:
    """One run of a --continual job (see :mod:`.continual`)."""
    from .continual import run_continual

    assert manager is not None  # RunOptions requires a checkpoint directory
    state, report, resumed_from = run_continual(dataset, config, options, hooks, manager)
    model = model_from_state(state, config)
    trained = report["trained"]
    recorded = None if trained else manager.recorded_model_digest
    return TrainResult(model, state, trained, resumed_from, recorded, continual=report)


def _check_source(
    dataset: Dataset, config: FitConfig, options: RunOptions, hooks: CallbackList
) -> FitConfig:
    """What in-memory data allows: Dask workers read files only; a one-shot iterator is read
    once (one pass, no checkpoint to resume, no held-out rows to score again)."""
    if options.cluster and (config.lanes or config.piece_rows):
        raise UsageError(
            "--lanes and --piece-rows size how this process reads the files; Dask workers "
            "read theirs shard by shard: leave them out with --cluster"
        )
    if options.cluster and dataset.in_memory:
        raise UsageError(
            f"{dataset.files[0].path}: --cluster trains from files every worker can read; write "
            "the data to Parquet (or pass a pyarrow dataset of files) to train on Dask"
        )
    if not dataset.one_shot:
        return config
    name = dataset.files[0].path
    if options.checkpoint_dir or options.resume:
        raise UsageError(
            f"{name}: a one-shot iterator cannot be resumed from a checkpoint; pass a callable "
            "that returns a fresh iterator of the same batches (for example lambda: batches())"
        )
    if not config.stats_rows:
        raise UsageError(
            f"{name}: --stats-rows 0 reads all the data before training, which a one-shot "
            "iterator cannot give twice; keep a sample (the default) or pass a callable"
        )
    if config.holds_out or config.holdout_rows:
        raise UsageError(
            f"{name}: held-out rows are scored by reading the data again, which a one-shot "
            "iterator cannot do; pass a callable that returns a fresh iterator, or validation files"
        )
    if config.epochs > 1:
        hooks.on_warning(
            f"{name}: a one-shot iterator is read once: training 1 epoch, not {config.epochs} "
            "(pass a callable that returns a fresh iterator to train more)"
        )
        config = dataclasses.replace(config, epochs=1)
    return config


def _check_cv(config: FitConfig, options: RunOptions) -> None:
    """One model of a --cv run is trained alone with --cv-fold; the K+1 models of each
    configuration are trained together by the grid (streamgd.search.fit_grid)."""
    if not config.cv:
        return
    if config.cv_fold is None:
        raise UsageError(
            "--cv K trains K+1 models per configuration in one pass: use "
            "streamgd.search.fit_grid (as 'streamgd fit --cv K' does), or train one fold's "
            "model with --cv-fold"
        )
    if options.continual:
        raise UsageError("--cv splits one dataset into folds: drop --continual")


def _wants_more(state: TrainState, config: FitConfig) -> bool:
    return state.stop_reason == "epochs" and state.epoch < config.epochs


def fit(
    data: Any,
    y: Any = None,
    *,
    target: str | None = None,
    callbacks: Sequence[Callback] = (),
    verbose: bool = False,
    quiet: bool = False,
    **settings: Any,
) -> Model:
    """Train a linear model, streaming ``data`` in mini-batches.

    ``data`` is any source of :func:`streamgd.sources.open_source`: a path, glob, directory or
    URI (one ``str`` is one path) or a list of them; a pyarrow Table, RecordBatch, dataset or
    RecordBatchReader; a pandas or polars DataFrame; a numpy ``X`` with ``y``; an iterator of
    batches (one pass) or a callable returning one (read again for every epoch). With ``y``
    (an array or Series of targets, one per row of ``data``), the target is ``y``.

    ``settings`` are the settings of :class:`FitConfig` (``loss``, ``optimizer``, ``lr``,
    ``epochs``, ``batch_size``, ``seed``, ...) and of :class:`RunOptions` (``checkpoint_dir``,
    ``resume``, ``init``, ``cluster``, ...), split by :func:`~streamgd.config.split_settings`:
    an unknown keyword is a UsageError naming the closest setting. ``validation`` takes
    validation files, or data like ``data`` (a DataFrame, a Table, ``(X, y)``, ...). Returns
    the trained :class:`Model`. Without ``target``, the one column named ``target``,
    ``label`` or ``y``.

    Warnings are Python warnings of category :class:`~streamgd.errors.StreamgdWarning`;
    ``verbose=True`` adds a progress bar (a widget in Jupyter) and one line per epoch on
    stderr; ``quiet=True`` silences the warnings too.

    >>> import streamgd  # doctest: +SKIP
    >>> model = streamgd.fit("data/regression/*.parquet", target="y")  # doctest: +SKIP
    >>> model = streamgd.fit(frame, target="price")  # doctest: +SKIP
    >>> model = streamgd.fit(X, y, loss="logistic")  # doctest: +SKIP
    """
    data, target = with_target(data, y, target)
    validation, settings = _in_memory_validation(settings)
    config_settings, run_settings = split_settings({"target": target, **settings})
    config = FitConfig(**config_settings)
    hooks = api_callbacks(callbacks, verbose=verbose, quiet=quiet)
    options = RunOptions(**run_settings)
    return train(data, config, options, callbacks=hooks, validation=validation).model


def _in_memory_validation(settings: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``validation=`` given data rather than paths (a DataFrame, ``(X, y)``, a Table...): the
    data, and the settings with its name in its place (recorded in the model and checkpoints;
    a resume is given the same data again)."""
    given = settings.get("validation")
    if given is None or is_paths(given):
        return None, settings
    if isinstance(given, tuple) and len(given) == 2 and not is_paths(given[0]):
        given, _ = with_target(given[0], given[1], settings.get("target"))
    return given, {**settings, "validation": (f"<{source_kind(given)}>",)}
