"""Many models over one stream: every model of a grid takes its step on the same batch, so the
data is read, decoded, shuffled and summarised (the statistics pass) once for all of them.

Each model is a :class:`Member`: its own :class:`~streamgd.training.state.TrainState`, the
:class:`~streamgd.training.loop.Trainer` that ends its epochs (validation, early stopping,
history) and the update of its own settings (:func:`streamgd.step.make_step`). Members that
share the loss and the optimiser and train numeric features form a stacked group
(:mod:`.stacked`, each ``--cv`` fold a block of it) that takes one stacked step per batch;
the others take their own update in turn. Either way each member's arithmetic is exactly
the arithmetic of a run of that configuration alone (the same operations on the same
batches, in the same order), so each model is bit-identical to it. A member that stops
(``--patience``, ``--tol``) or diverges costs nothing more; the stream runs while any member
trains.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import FitConfig, RunOptions
from ..config_checks import check_cluster_settings
from ..errors import DataError, PreemptedError, UsageError
from ..features import count_vector
from ..folds import fold_parts, fold_tag
from ..metrics import Accumulator
from ..solvers import Update, get_solver
from ..sources import Dataset
from ..step import make_step
from ..training.callbacks import Callback
from ..training.init import initial_state
from ..training.loop import LocalSteps, Trainer, model_from_state
from ..training.state import EarlyStopping, EpochTotals, StreamState, TrainState, Trajectory
from .checkpoint import GridCheckpoints
from .grid import GRID_SETTINGS
from .scoring import evaluate_models
from .stacked import Group, stack_key

__all__ = ["Member", "train_members"]


@dataclass
class Member:
    """One model of a grid: its settings (``label``: the ones the grid varies), its training
    state and the trainer that ends its epochs."""

    index: int  # position in the grid
    label: dict[str, Any]
    config: FitConfig
    trainer: Trainer
    state: TrainState
    update: Update | None = None
    running: Accumulator | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _Warnings(Callback):
    """Passes a member's warnings on (once: only the first member's trainer reports them)."""

    def __init__(self, warn: Callable[[str], None]) -> None:
        self.warn = warn

    def on_warning(self, message: str) -> None:
        self.warn(message)


def _check_shared(configs: Sequence[FitConfig]) -> None:
    first = configs[0].to_dict_raw()
    for config in configs[1:]:
        other = config.to_dict_raw()
        for name, value in first.items():
            if name not in _GRID and other[name] != value:
                raise UsageError(
                    f"every model of a grid shares --{name.replace('_', '-')}: got {value!r} "
                    f"and {other[name]!r}"
                )


# a grid's settings, and the --cv models' (see streamgd.search.cv): free to differ
_GRID = frozenset(GRID_SETTINGS) | {"cv", "cv_fold"}


def train_members(
    dataset: Dataset,
    configs: Sequence[FitConfig],
    labels: Sequence[dict[str, Any]],
    options: RunOptions,
    *,
    warn: Callable[[str], None],
    on_epoch_end: Callable[[Member, dict[str, Any], int], None] | None = None,
    validation: Dataset | None = None,
) -> list[Member]:
    """Train one model per config over one stream of ``dataset`` and return the members,
    each finished with its own stop reason (``diverged`` for one whose loss or weights
    became NaN or infinite: it keeps its last finite weights). ``on_epoch_end(member, entry,
    n)``: after each member's epoch, ``n`` the number of members ending that epoch."""
    if options.init:
        raise UsageError("a grid of models starts from zero weights: drop --init")
    if options.continual:
        raise UsageError(
            "a grid of models is not a continual job: tune on the files at hand, then run the "
            "selected settings with --continual"
        )
    if configs[0].record_path:
        raise UsageError("--record-path records one model's weights: drop it for a grid")
    if options.cluster and configs[0].round_protocol != "tasks":
        raise UsageError(
            "a grid on --cluster averages its models in task rounds: leave out "
            f"--round-protocol {configs[0].round_protocol}"
        )
    _check_shared(configs)
    check_cluster_settings(configs[0], options.cluster)
    saver = _Saver(options, labels, warn) if options.checkpoint_dir else None
    found = None
    if saver is not None and options.resume:
        found = saver.resume()
    elif saver is not None:
        saver.store.supersede_existing()
    if found is None:
        base = initial_state(dataset, configs[0], options, warn=warn)
        states = [_fresh(base, config) for config in configs]
    else:
        states = found
        for state, config in zip(states, configs, strict=True):
            if state.data != dataset.fingerprint() or state.config != config.to_dict():
                raise UsageError(
                    f"{options.checkpoint_dir}: the grid checkpoint was written for other data "
                    "or settings; rerun without --resume to start afresh"
                )
    members = []
    for i, (config, label, state) in enumerate(zip(configs, labels, states, strict=True)):
        hooks = [_Warnings(warn)] if i == 0 else []
        trainer = Trainer(dataset, config, options, callbacks=hooks, validation=validation)
        members.append(Member(i, dict(label), config, trainer, state))
    lead = members[0].trainer
    signals = saver.signals() if saver is not None else contextlib.nullcontext()
    cluster = None
    if options.cluster:  # Dask: each round's rows read once, every model averaged on its own
        from .cluster import ClusterEpochs

        cluster = ClusterEpochs(lead, options.cluster, configs)
    session = cluster.session() if cluster is not None else contextlib.nullcontext()
    with signals, session, np.errstate(over="ignore", invalid="ignore"):
        while True:
            active = [m for m in members if not m.state.finished]
            for m in active:
                if m.state.epoch >= m.config.epochs:
                    m.state.finished, m.state.stop_reason = True, "epochs"
            active = [m for m in active if not m.state.finished]
            if not active:
                break
            if cluster is not None:
                cluster.epoch(active, members, saver)
            else:
                _run_epoch(active, lead, members, saver)
            for message in lead.outlier_notes.drain():
                warn(message)
            ending = [m for m in active if m.state.stop_reason != "diverged"]
            for m, scores in zip(ending, _end_passes(ending), strict=True):
                m.trainer.end_epoch(m.state, scores)
                if on_epoch_end is not None:  # with how many models end this epoch
                    on_epoch_end(m, m.state.history[-1], len(ending))
            if saver is not None:
                saver.save(members)
    return members


def _fresh(base: TrainState, config: FitConfig) -> TrainState:
    """A model's starting state: the shared statistics and starting weights, its own
    optimiser state and settings."""
    params = base.params.copy()
    return dataclasses.replace(
        base,
        params=params,
        opt_state=get_solver(config.solver).init_state(params, config.make_optimizer()),
        config=config.to_dict(),
        history=[],
        stream=StreamState(),
        totals=EpochTotals(),
        early=EarlyStopping(),
        trajectory=Trajectory(),
    )


class _Saver:
    """When and where a grid is checkpointed: every ``--checkpoint-every`` batches of the
    shared stream, every ``--checkpoint-interval`` seconds, and at each epoch's end."""

    def __init__(self, options: RunOptions, labels: Sequence[dict], warn) -> None:
        self.options, self.labels = options, list(labels)
        self.store = GridCheckpoints(options.checkpoint_dir, keep=options.keep, warn=warn)
        self.batches = 0
        self.last = time.monotonic()
        self.signum: int | None = None

    @contextlib.contextmanager
    def signals(self):
        """With ``handle_signals`` (the command line), SIGTERM/SIGINT ask the loop to write a
        checkpoint and stop after the current batch."""
        if not self.options.handle_signals:
            yield
            return

        def handler(signum, frame):  # noqa: ARG001
            self.signum = signum

        old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def resume(self) -> list[TrainState] | None:
        found = self.store.latest(self.labels)
        if found is None:
            return None
        _, states, self.batches = found
        return states

    def due(self) -> bool:
        o = self.options
        if o.checkpoint_every and self.batches % o.checkpoint_every == 0:
            return True
        return bool(o.checkpoint_interval and time.monotonic() - self.last >= o.checkpoint_interval)

    def save(self, members: Sequence[Member]) -> None:
        self.store.save([m.state for m in members], self.labels, self.batches)
        self.last = time.monotonic()


def _end_passes(ending: list[Member]) -> list[dict[str, Any] | None]:
    """The solvers' ends of pass, then every model's validation scores from one pass over
    the validation rows (None each without validation)."""
    for m in ending:
        m.trainer.end_pass(m.state)
    folded = [i for i, m in enumerate(ending) if m.config.cv_fold is not None]
    if folded:  # --cv: each fold's model on its fold's rows, in one pass
        scores: list[dict[str, Any] | None] = [None] * len(ending)
        lead = ending[folded[0]]
        found = evaluate_models(
            [model_from_state(ending[i].state, ending[i].config) for i in folded],
            lead.trainer.dataset,
            fmt=lead.config.format,
            folds=[ending[i].config.cv_fold for i in folded],
            tag=fold_tag(lead.config),
        )
        for i, score in zip(folded, found, strict=True):
            scores[i] = score
        return scores
    if not ending or not ending[0].config.validates:
        return [None] * len(ending)
    models = [model_from_state(m.state, m.config) for m in ending]
    paths, select = ending[0].trainer.validation_data()
    return evaluate_models(models, paths, fmt=ending[0].config.format, select=select)


def _run_epoch(
    active: list[Member], lead: Trainer, members: list[Member], saver: _Saver | None
) -> None:
    """One epoch (or the rest of one, after a resume) of the shared stream through every
    active member's update: stacked groups (:mod:`.stacked`) take one step for all their
    members, the others their own; checkpoints of every member when due."""
    first = active[0].state
    stream = LocalSteps(lead).stream(first)
    if first.totals.counts is None:
        first.totals.counts = count_vector(len(first.spec.names))
    base_counts = first.totals.counts.copy()  # the epoch's counts before this stream
    params = [m.state.params for m in active]
    opt = [m.state.opt_state for m in active]
    for m in active:
        _begin(m)
    groups, alone = _groups(active, params, opt)
    spec = first.spec
    weighted = spec.weight_column is not None
    live = list(range(len(active)))
    tagged = stream.decoder.tagged  # --cv: the batches carry their rows' folds
    own = [m.config.cv_fold for m in active]

    def sync() -> None:
        for group in groups:
            group.write()
        _sync(active, params, opt, stream, base_counts)

    for batch in stream:
        # --cv: each fold's rows of the batch once, shared by that fold's models
        parts = fold_parts(batch, {own[i] for i in live}) if tagged else {None: batch}
        weights = {f: raw[:, -1].astype(np.float64) for f, raw in parts.items()} if weighted else {}
        for group in groups:
            if group.members:
                group.step(parts)
        for i in alone:
            m = active[i]
            raw, w = parts[own[i]], weights.get(own[i])
            if not len(raw):  # every row of the batch is in this model's fold
                continue
            state, totals = m.state, m.state.totals
            new, new_opt, loss_sum, p, t, residual = m.update(
                params[i], opt[i], raw, m.trainer.schedule(state.step)
            )
            if not (math.isfinite(loss_sum) and math.isfinite(np.add.reduce(new, axis=None))):
                state.finished, state.stop_reason = True, "diverged"
                m.extra["diverged_at_step"] = state.step + 1
                continue
            params[i], opt[i] = new, new_opt
            state.step += 1
            state.rows_trained += len(t)
            totals.rows += len(t)
            totals.loss += loss_sum
            if m.extra["metrics"]:
                m.running.update_scaled(t, p, *m.extra["units"], weight=w, residual=residual)
        live = [i for i in live if not active[i].state.finished]
        alone = [i for i in alone if not active[i].state.finished]
        if not live:
            break
        if saver is not None:
            saver.batches += 1
            if saver.signum is not None:  # SIGTERM/SIGINT: a last checkpoint, then stop
                sync()
                saver.save(members)
                raise PreemptedError(
                    f"stopped by {signal.Signals(saver.signum).name} after batch "
                    f"{saver.batches} of the grid; a checkpoint was written: rerun with "
                    "--resume to continue"
                )
            if saver.due():
                sync()
                saver.save(members)
    sync()
    for m in active:
        if m.state.totals.rows == 0 and not m.state.finished:
            raise DataError("no rows to train on: every row's target is missing")


def _groups(active: list[Member], params: list, opt: list) -> tuple[list[Group], list[int]]:
    """The stacked groups of the active members (two or more sharing a :func:`stack_key`)
    and the positions of the members that take their own update."""
    keyed: dict[tuple, list[int]] = {}
    alone = []
    for i, m in enumerate(active):
        key = stack_key(m.config, m.state.spec, m.trainer.loss, m.trainer.solver.name)
        if key is None:
            alone.append(i)
        else:
            keyed.setdefault(key, []).append(i)
    groups = []
    for where in keyed.values():
        if len(where) == 1:
            alone.extend(where)
        else:
            groups.append(Group([active[i] for i in where], where, params, opt))
    return groups, sorted(alone)


def _sync(active, params, opt, stream, base_counts) -> None:
    """Write what the loop holds (weights, optimiser states, stream position, counts,
    running metrics) into the members' states."""
    done = stream.counts
    shuffled = stream.shuffle_state()
    for i, m in enumerate(active):
        state = m.state
        state.params, state.opt_state = params[i], opt[i]
        state.stream = StreamState.of(stream.cursor, shuffled)
        state.totals.counts = base_counts if done is None else base_counts + done
        state.totals.metrics = m.running.state()


def _begin(m: Member) -> None:
    """A member's update, running metrics and epoch totals at the start of an epoch."""
    trainer, state, spec = m.trainer, m.state, m.state.spec
    loss = trainer.loss
    totals = state.totals
    if totals.start is None:  # else resumed within the epoch
        totals.start = state.params.copy()
    m.running = (
        Accumulator(loss.task, auc=False)
        if totals.metrics is None
        else Accumulator.restore(loss.task, totals.metrics, auc=False)
    )
    weights = None
    if spec.weighting is not None:
        weights = functools.partial(spec.weighting.effective, n_features=len(spec.names))
    m.update = trainer.solver.make_update(
        step=make_step(m.config, spec, loss, trainer.optimizer),
        n_features=len(spec.names),
        inv_scale=1.0 / spec.scale,
        target_scale=spec.target_scale,
        weights=weights,
    )
    t_center = spec.target_center if loss.scale_target else 0.0
    unit = spec.target_scale if loss.scale_target else 1.0
    m.extra["metrics"] = trainer.solver.train_metrics
    m.extra["units"] = (unit, t_center, loss.link)
