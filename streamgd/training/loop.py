"""The trainer: a loop you can read top to bottom, over an explicit :class:`TrainState`.

``fit`` = open the data, fix the features (statistics pass, or a warm-start model), then run
epochs of mini-batch steps. Every step is ``state -> state``; checkpoints save the state and
resume loads it, so an interrupted run continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from .. import folds, holdout
from ..batches import BatchStream
from ..config import FitConfig, RunOptions
from ..cursor import Cursor
from ..decode import Decoder
from ..errors import DataError, DivergedError, PreemptedError
from ..features import count_vector, describe_counts
from ..features.outliers import OutlierNotes
from ..metrics import Accumulator
from ..model import Model
from ..scoring import evaluate_model
from ..solvers import get_solver
from ..sources import Dataset
from ..step import make_step
from .callbacks import Callback, CallbackList
from .checkpoint import CheckpointManager
from .state import EpochTotals, StreamState, TrainState

__all__ = ["Trainer", "LocalSteps", "StepSource", "StepReport", "model_from_state", "MAX_PATH"]


# Rows stream as float32 (centred first, in float64, so no precision is lost to an offset):
# half the memory and memory traffic of float64; weights and sums stay float64.
STREAM_DTYPE = np.float32


@dataclass
class _Stop:
    """Set by a signal handler; the loop checks it between steps."""

    signum: int | None = None


class StepReport(NamedTuple):
    """What a step (or a Dask round) reports to the epoch skeleton: its summed loss (before
    the update), the weights after it, the rows it took, how many optimiser steps it counts
    for, and a Dask round's timing."""

    loss_sum: float
    params: np.ndarray
    rows: int
    steps: int = 1
    timing: dict[str, Any] | None = None


class StepSource(Protocol):
    """How an epoch's steps are produced: the one thing the single-process trainer
    (:class:`LocalSteps`) and the Dask trainer differ in. Everything else (the epoch loop,
    the divergence guard, preemption, checkpoint timing, the epoch's end, validation and
    early stopping) is :class:`Trainer`'s, shared by both."""

    def session(self, state: TrainState) -> AbstractContextManager[object]:
        """Around the whole run (a Dask client, say)."""
        ...

    def epoch(self, state: TrainState) -> Iterator[StepReport]:
        """Run the rest of the epoch ``state`` is in, reporting after each step."""
        ...

    def sync(self, state: TrainState) -> None:
        """Write what the steps hold back between reports (weights, cursor, buffer) into
        ``state``, before it is saved and at the end of the epoch."""
        ...


class Trainer:
    """Runs a :class:`TrainState` forward over a dataset under a config: the epoch skeleton,
    with the steps from a :class:`StepSource` (by default this process's :class:`LocalSteps`)."""

    def __init__(
        self,
        dataset: Dataset,
        config: FitConfig,
        options: RunOptions,
        *,
        callbacks: Sequence[Callback] = (),
        manager: CheckpointManager | None = None,
        validation: Dataset | None = None,
    ) -> None:
        self.dataset, self.config, self.options = dataset, config, options
        dataset.piece_rows = config.piece_rows  # --piece-rows: how larger row groups are read
        # in-memory validation data (the API's validation=frame), opened once; None: the
        # --validation files of the config, opened for every epoch's scoring
        self.validation = validation
        self.loss = config.make_loss()
        self.optimizer = config.make_optimizer()
        self.schedule = config.make_schedule()
        self.solver = get_solver(config.solver)
        self.callbacks = CallbackList(callbacks)
        self.manager = manager
        self._stop = _Stop()
        self._last_save = time.monotonic()
        # outliers met in training under --outliers warn: recorded by the decoder's guard on
        # the prefetch thread, warned about once per column per run (see _note_outliers)
        self.outlier_notes = OutlierNotes()

    # -- checkpoints --------------------------------------------------------------------------
    def _save(self, state: TrainState, reason: str) -> None:
        if self.manager is not None:
            path = self.manager.save(state)
            self._last_save = time.monotonic()
            self.callbacks.on_checkpoint(state, path, reason)

    def _due(self, step: int) -> bool:
        o = self.options
        if o.checkpoint_every and step % o.checkpoint_every == 0:
            return True
        return bool(
            o.checkpoint_interval and time.monotonic() - self._last_save >= o.checkpoint_interval
        )

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT ask the loop to stop after the current step (and checkpoint)."""
        if not self.options.handle_signals:
            yield
            return

        def handler(signum, frame):  # noqa: ARG001
            self._stop.signum = signum

        old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    # -- the loop -----------------------------------------------------------------------------
    def run(self, state: TrainState, *, source: StepSource | None = None) -> TrainState:
        """Train ``state`` until it is finished, with the steps from ``source``."""
        source = source or LocalSteps(self)
        if self.config.record_path and not state.trajectory.stride:
            state.trajectory.stride = self.config.record_path
            self._record(state, state.params)  # the starting point
        # Overflow is detected explicitly (the divergence guard), not reported as a warning.
        with source.session(state), self._signals(), np.errstate(over="ignore", invalid="ignore"):
            self.callbacks.on_train_begin(state, self.dataset)
            while not state.finished:
                if state.epoch >= self.config.epochs:
                    state.finished, state.stop_reason = True, "epochs"
                    break
                self._run_epoch(state, source)
            self._save(state, "end")
            self.callbacks.on_train_end(state)
        return state

    def _run_epoch(self, state: TrainState, source: StepSource) -> None:
        totals, trajectory = state.totals, state.trajectory
        if totals.start is None:
            totals.start = state.params.copy()
        if totals.counts is None:
            totals.counts = count_vector(len(state.spec.names))
        # bound once, and left out when no callback has anything to do: called every batch
        on_batch_end = (
            self.callbacks.on_batch_end if self.callbacks.overrides("on_batch_end") else None
        )
        stop, due = self._stop, self._due
        for report in source.epoch(state):
            # the weights' sum is finite exactly when every weight is (or one is ~1e308)
            loss_sum, params = report.loss_sum, report.params
            if not (math.isfinite(loss_sum) and math.isfinite(np.add.reduce(params, axis=None))):
                raise DivergedError(
                    f"training diverged at step {state.step + 1} (epoch {state.epoch + 1}): "
                    "the loss or the weights became NaN or infinite; lower --lr "
                    "(the last good checkpoint is kept)"
                )
            if report.steps:
                state.step += report.steps
                if trajectory.stride and state.step % trajectory.stride == 0:
                    self._record(state, params)
                state.rows_trained += report.rows
                totals.rows += report.rows
                totals.loss += loss_sum
                if on_batch_end is not None:
                    on_batch_end(state, report.rows, loss_sum)
            if report.timing is not None:
                self.callbacks.on_round(state, report.timing)
            if stop.signum is not None:
                source.sync(state)
                self._note_outliers()
                self._save(state, "signal")
                raise PreemptedError(
                    f"stopped by {signal.Signals(stop.signum).name} at step {state.step}; "
                    "a checkpoint was written: rerun with --resume to continue"
                )
            if due(state.step):
                source.sync(state)
                self._save(state, "step")
        source.sync(state)
        self._note_outliers()
        self._end_pass(state)
        self._end_epoch(state)

    def _note_outliers(self) -> None:
        for message in self.outlier_notes.drain():
            self.callbacks.on_warning(message)

    def end_pass(self, state: TrainState) -> None:
        """Public for epochs whose steps ran elsewhere (a grid's shared stream, see
        :mod:`streamgd.search.engine`): what :meth:`run` does after an epoch's steps is
        ``end_pass`` then ``end_epoch``."""
        self._end_pass(state)

    def end_epoch(self, state: TrainState, scores: dict[str, Any] | None = None) -> None:
        """The history entry, validation (``scores``: the validation scores of the state's
        weights when the caller computed them, as :meth:`_validate` would), early stopping."""
        self._end_epoch(state, scores)

    def _end_pass(self, state: TrainState) -> None:
        """The solver's end of a pass (the normal equations are solved here)."""
        state.params, state.opt_state, mean_loss = self.solver.finish(
            state.params, state.opt_state, l2=self.config.l2
        )
        if mean_loss is not None:
            state.totals.loss = mean_loss * state.totals.rows

    def _end_epoch(self, state: TrainState, scores: dict[str, Any] | None = None) -> None:
        totals = state.totals
        if totals.rows == 0:
            raise DataError("no rows to train on: every row's target is missing")
        update_norm = float(np.linalg.norm(state.params - totals.start))
        entry = {
            "epoch": state.epoch + 1,
            "step": state.step,
            "rows": totals.rows,
            "loss": state.running_loss(),
            "update_norm": update_norm,
            "lr": self.schedule(state.step),
            **describe_counts(totals.counts, state.spec.names, state.spec.missing),
        }
        if totals.metrics is not None and self.solver.train_metrics:
            acc = Accumulator.restore(self.loss.task, totals.metrics, auc=False)
            entry |= {f"train_{k}": v for k, v in acc.result().items()}
        if self.config.validates:
            self._validate(state, entry, scores)
        state.history.append(entry)
        state.stream = StreamState(Cursor(state.epoch + 1, 0, 0))
        state.totals = EpochTotals()
        if self.config.tol is not None and update_norm < self.config.tol:
            state.finished, state.stop_reason = True, "tol"
        if self.solver.one_pass:  # one pass gives the exact answer; more would repeat it
            state.finished, state.stop_reason = True, "solved"
        patience = self.config.patience
        if patience is not None and state.early.bad_epochs >= patience:
            state.params = state.early.best_params.copy()  # type: ignore[union-attr]
            state.finished, state.stop_reason = True, "patience"
        self.callbacks.on_epoch_end(state, entry)
        if not state.finished and state.epoch < self.config.epochs:
            self._save(state, "epoch")

    def check_order(self, rows: np.ndarray, *, target_scale: float, spread: bool = True) -> None:
        """Warn when the rows that first fill the shuffle buffer look ordered by the target:
        then the buffer is too small to mix the data and early batches are biased.
        ``spread``: whether the column is the target, whose spread can be compared to the
        statistics pass's (not a categorical code, which the rows end with when there are
        categorical columns: their trend alone is looked at)."""
        t = rows[:, -1].astype(np.float64)
        if len(t) < 1000 or t.std() == 0:
            return
        trend = float(np.corrcoef(np.arange(len(t)), t)[0, 1])
        narrow = spread and self.loss.scale_target and t.std() < 0.25 * target_scale
        if abs(trend) > 0.3 or narrow:
            why = (
                f"correlation {trend:+.2f} with the reading order"
                if abs(trend) > 0.3
                else ("a much narrower spread than in the statistics pass")
            )
            self.callbacks.on_warning(
                f"the target in the first {len(t)} rows of the shuffle buffer looks ordered "
                f"({why}): the buffer is too small to mix this data; shuffle it once with "
                "'streamgd shuffle', or raise --shuffle-buffer"
            )

    def validation_data(self) -> tuple[Any, Any]:
        """What each epoch is scored on: the data (files or an opened dataset) and the row
        selector (the held-out rows of the training data; None: every row)."""
        if self.config.cv_fold is not None:  # --cv: the rows of its fold
            return self.dataset, folds.fold_selector(self.config, self.config.cv_fold)
        if self.config.holds_out:  # the held-out rows of the training data itself
            select = holdout.selector(self.config, keep=True, dataset=self.dataset)
            return self.dataset, select
        if self.validation is not None:
            return self.validation, None
        return list(self.config.validation), None

    def _validate(
        self, state: TrainState, entry: dict[str, Any], scores: dict[str, Any] | None = None
    ) -> None:
        """Score the epoch's weights on the --validation files (unless ``scores`` has them);
        track the best for --patience. Adds ``val_<metric>`` keys (``val_loss`` in the
        target's units)."""
        if scores is None:
            model = model_from_state(state, self.config)
            paths, select = self.validation_data()
            scores = evaluate_model(model, paths, fmt=self.config.format, select=select)
        for key, value in scores.items():
            if isinstance(value, float) and key != "total_weight":  # weighted: val_* weighted
                entry[f"val_{key}"] = value
        entry["val_rows"] = scores["rows"]
        loss = scores["loss"]
        early = state.early
        if early.best_loss is None or loss < early.best_loss:
            early.best_loss, early.best_epoch, early.bad_epochs = loss, state.epoch + 1, 0
            early.best_params = state.params.copy()
        else:
            early.bad_epochs += 1
        entry["best_epoch"] = early.best_epoch

    def _record(self, state: TrainState, params: np.ndarray) -> None:
        """Append ``[step, params...]`` to the trajectory every ``trajectory_stride`` steps;
        past MAX_PATH rows keep every other row and double the stride, so the trajectory stays
        bounded and evenly spaced."""
        row = np.append(float(state.step), params)[None, :]
        trajectory = state.trajectory
        old = trajectory.rows
        trajectory.rows = row if old is None else np.concatenate([old, row])
        if len(trajectory.rows) > MAX_PATH:
            trajectory.rows = trajectory.rows[::2]
            trajectory.stride *= 2


class LocalSteps:
    """The single-process step source: an epoch's batches from a :class:`BatchStream`, each
    through the solver's update. The weights, solver state and running metrics stay here
    between reports (a step costs tens of microseconds: copying them into the state at every
    step would show); :meth:`sync` writes them into the state."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def session(self, state: TrainState) -> AbstractContextManager[object]:  # noqa: ARG002
        return contextlib.nullcontext()

    def epoch(self, state: TrainState) -> Iterator[StepReport]:
        trainer, spec = self.trainer, state.spec
        loss = trainer.loss
        self.stream = stream = self._stream(state)
        self.params, self.opt_state = state.params, state.opt_state
        self.base_counts = state.totals.counts.copy()
        # running training metrics on each batch's predictions before its update
        self.running = running = (
            Accumulator(loss.task, auc=False)
            if state.totals.metrics is None
            else Accumulator.restore(loss.task, state.totals.metrics, auc=False)
        )
        update = trainer.solver.make_update(
            step=make_step(trainer.config, spec, loss, trainer.optimizer),
            n_features=len(spec.names),
            inv_scale=1.0 / spec.scale,
            target_scale=spec.target_scale,
            weights=_weights(spec),
        )
        metrics, schedule, link = trainer.solver.train_metrics, trainer.schedule, loss.link
        t_center = spec.target_center if loss.scale_target else 0.0
        unit = spec.target_scale if loss.scale_target else 1.0
        weighted = spec.weight_column is not None  # running metrics weighted by the column
        tagged, fold = stream.decoder.tagged, trainer.config.cv_fold
        for raw in stream:
            if tagged:  # --cv: the batch less its rows of this model's fold, if any
                raw = folds.fold_rows(raw, fold)
                if not len(raw):
                    continue
            self.params, self.opt_state, loss_sum, p, t, residual = update(
                self.params, self.opt_state, raw, schedule(state.step)
            )
            if metrics:
                w = raw[:, -1].astype(np.float64) if weighted else None
                running.update_scaled(t, p, unit, t_center, link, weight=w, residual=residual)
            yield StepReport(loss_sum, self.params, len(t))

    def sync(self, state: TrainState) -> None:
        stream = self.stream
        state.params, state.opt_state = self.params, self.opt_state
        state.stream = StreamState.of(stream.cursor, stream.shuffle_state())
        done = stream.counts
        state.totals.counts = self.base_counts if done is None else self.base_counts + done
        state.totals.metrics = self.running.state()

    def stream(self, state: TrainState) -> BatchStream:
        """The epoch's batches from where ``state`` stands (public for a grid's shared
        stream, see :mod:`streamgd.search.engine`)."""
        return self._stream(state)

    def _stream(self, state: TrainState) -> BatchStream:
        """The epoch's batches from where ``state`` stands: centred rows (subtracted while
        decoding; the scaling is folded into the step), through the shuffle buffer."""
        trainer, cfg, spec = self.trainer, self.trainer.config, state.spec
        decoder = Decoder.for_training(
            spec,
            loss=trainer.loss,
            select=holdout.selector(cfg, keep=False, dataset=trainer.dataset),
            dtype=STREAM_DTYPE,
            notes=trainer.outlier_notes,
            tag=folds.fold_tag(cfg),
        )
        check_order = functools.partial(
            trainer.check_order, target_scale=spec.target_scale, spread=not spec.categoricals
        )
        # the buffer hands the check its rows' last column: with --weight that is the weight
        # column, not the target, so there is nothing to look at
        first_fill = state.epoch == 0 and spec.weight_column is None
        return BatchStream(
            trainer.dataset,
            decoder,
            epoch=state.epoch,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            shuffle=cfg.shuffle,
            buffer_size=cfg.shuffle_buffer,
            prefetch=trainer.options.prefetch,
            cursor=dataclasses.replace(state.stream.cursor),
            shuffle_state=state.stream.shuffle_state(),
            run=cfg.shuffle_run,
            lanes=cfg.lanes,
            on_first_fill=check_order if first_fill else None,
        )


def _weights(spec):
    """The rows' normalised sample weights for the solver (None: unweighted)."""
    if spec.weighting is None:
        return None
    return functools.partial(spec.weighting.effective, n_features=len(spec.names))


# A recorded weight trajectory holds at most this many rows (see Trainer._record).
MAX_PATH = 4096


def model_from_state(state: TrainState, config: FitConfig) -> Model:
    n_feat = len(state.spec.names)
    last = state.history[-1] if state.history else {}
    summary: dict[str, Any] = {
        "epochs": len(state.history),
        "steps": state.step,
        "rows_trained": state.rows_trained,
        "rows_per_epoch": last.get("rows"),
        "skipped_null_target": last.get("skipped_null_target", 0),
        **{k: last[k] for k in ("imputed", "dropped_missing", "missing") if k in last},
        "final_loss": last.get("loss"),
        "stop_reason": state.stop_reason,
    }
    if config.validates:
        summary["final_val_loss"] = last.get("val_loss")
        summary["best_epoch"] = state.early.best_epoch
    if state.continual.runs:  # --continual: one record per increment (see training.continual)
        summary["increments"] = [dict(run) for run in state.continual.runs]
    return Model(
        spec=state.spec,
        loss=config.loss,
        weights=state.params[:n_feat].copy(),
        intercept=float(state.params[n_feat])
        if state.params.ndim == 1
        else state.params[n_feat].copy(),
        code_weights=state.params[n_feat + 1 :].copy() if state.spec.n_codes else None,
        config=config.to_dict(),
        summary=summary,
        history=list(state.history),
        trajectory=None if state.trajectory.rows is None else state.trajectory.rows.copy(),
    )
