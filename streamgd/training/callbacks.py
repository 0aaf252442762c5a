"""Callbacks: hooks the trainer calls (Keras-style), and the progress reporter the CLI uses.

A callback observes; it never changes the training state, so progress output can never change
a model.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import IO, Any

__all__ = [
    "Callback",
    "CallbackList",
    "ProgressReporter",
    "WarningsCallback",
    "api_callbacks",
    "JsonLogger",
    "json_safe",
    "json_default",
]


class Callback:
    """Base class: override the hooks you need."""

    def on_stats_progress(self, rows: int, total: int | None, done: bool) -> None:
        """The statistics pass (before training, not on resume or warm start) has ``rows``
        rows of its sample of ``total`` (None: unknown, as for CSV files); called once with
        0 as it begins, at most every 0.25 s while it reads, and once with ``done``."""

    def on_train_begin(self, state: Any, dataset: Any) -> None: ...
    def on_resume(self, state: Any, path: str) -> None: ...
    def on_batch_end(self, state: Any, rows: int, loss_sum: float) -> None: ...
    def on_epoch_end(self, state: Any, entry: dict[str, Any]) -> None: ...
    def on_checkpoint(self, state: Any, path: str, reason: str) -> None: ...
    def on_round(self, state: Any, timing: dict[str, Any]) -> None: ...
    def on_warning(self, message: str) -> None: ...
    def on_train_end(self, state: Any) -> None: ...

    def on_train_abort(self, error: BaseException) -> None:
        """Training (or the statistics pass before it) stops with ``error``, which the caller
        then raises: put the screen or files in order (close a bar) so that its message is
        read on a line of its own."""

    def on_increment(self, report: dict[str, Any]) -> None:
        """A --continual run's outcome (see :mod:`.continual`): the increment, its new files
        and rows, the score of the model on them before training (``pre_score``) and the
        training loss; ``new_files`` 0 when there was nothing new."""


class CallbackList(Callback):
    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)

    def __getattribute__(self, name: str):
        if name.startswith("on_"):
            hooks = [getattr(c, name) for c in object.__getattribute__(self, "callbacks")]

            def call(*args: Any) -> None:
                for hook in hooks:
                    hook(*args)

            return call
        return object.__getattribute__(self, name)

    def overrides(self, name: str) -> bool:
        """Whether any callback does something on hook ``name`` (the base class's hooks do
        nothing): the trainer leaves out the per-batch call when none does."""
        base = getattr(Callback, name)
        hooks = (getattr(c, name) for c in object.__getattribute__(self, "callbacks"))
        return any(getattr(hook, "__func__", hook) is not base for hook in hooks)


def increment_line(report: dict[str, Any]) -> str:
    """One line on a --continual run: what was new, how the model scored on it before
    training, and the training loss."""
    if not report.get("new_files"):
        return f"continual: nothing new since increment {report.get('increment')}; nothing done"
    score = report.get("pre_score") or {}
    before = ", ".join(f"{k} {v:.6g}" for k, v in score.items() if k in _SCORE_KEYS)
    return (
        f"continual: increment {report['increment']}: {report['new_files']} new file(s), "
        f"{report['rows']} rows; before training: {before or 'not scored (first run)'}; "
        f"training loss {report['train_loss']:.6g}"
    )


_SCORE_KEYS = ("mse", "r2", "logloss", "accuracy", "auc")


def _fmt_rate(rows: float, seconds: float) -> str:
    rate = rows / seconds if seconds > 0 else 0.0
    return f"{rate / 1e6:.2f}M rows/s" if rate >= 1e6 else f"{rate / 1e3:.1f}k rows/s"


class ProgressReporter(Callback):
    """Progress on stderr: a live bar (rows/s, running loss, epoch, ETA) when stderr is a
    terminal or the code runs in a Jupyter kernel (tqdm's auto mode draws a notebook widget
    there), and one summary line per epoch either way. ``warnings=False`` leaves warnings to
    another callback (the Python API's :class:`WarningsCallback`)."""

    def __init__(
        self, *, stream: IO[str] | None = None, bar: bool | None = None, warnings: bool = True
    ) -> None:
        self.stream = stream or sys.stderr
        self.bar_enabled = (self.stream.isatty() or _in_notebook()) if bar is None else bar
        self.warnings = warnings
        self._bar = None
        self._epochs = 0
        self._rows_per_epoch: int | None = None
        self._rounds: list[dict[str, Any]] = []

    def _write(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def on_stats_progress(self, rows: int, total: int | None, done: bool) -> None:
        if not self.bar_enabled:
            return
        if self._bar is None and not done:
            self._bar = self._new_bar(total, "statistics")
        if self._bar is not None:
            self._bar.update(min(rows, total or rows) - self._bar.n)  # whole row groups
            if done:
                self._close_bar()

    def on_train_begin(self, state: Any, dataset: Any) -> None:
        self._epochs = int(state.config.get("epochs", 0))
        self._rows_per_epoch = dataset.num_rows
        self._epoch_t0 = time.perf_counter()
        self._epoch_rows0 = state.totals.rows
        self._open_bar(state)

    def _open_bar(self, state: Any) -> None:
        if not self.bar_enabled:
            return
        desc = f"epoch {state.epoch + 1}/{self._epochs}"
        self._bar = self._new_bar(self._rows_per_epoch, desc, initial=state.totals.rows)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_train_abort(self, error: BaseException) -> None:
        self._close_bar()  # the error's line then starts on a clean line, not after the bar

    def _new_bar(self, total: int | None, desc: str, *, initial: int = 0):
        """A progress bar of rows on this reporter's stream, gone once closed."""
        return _tqdm()(
            total=total,
            initial=initial,
            file=self.stream,
            unit=" rows",
            unit_scale=True,
            dynamic_ncols=True,
            leave=False,
            mininterval=0.25,
            desc=desc,
        )

    def on_resume(self, state: Any, path: str) -> None:
        self._write(
            f"resuming from {path}: epoch {state.epoch + 1}, step {state.step}, "
            f"{state.totals.rows} rows into the epoch"
        )

    def on_batch_end(self, state: Any, rows: int, loss_sum: float) -> None:
        if self._bar is not None:
            self._bar.update(rows)
            if state.step % 16 == 0:
                self._bar.set_postfix_str(f"loss={state.running_loss() or 0.0:.5g}", refresh=False)

    def on_epoch_end(self, state: Any, entry: dict[str, Any]) -> None:
        seconds = time.perf_counter() - self._epoch_t0
        rows = entry["rows"] - self._epoch_rows0
        self._close_bar()
        extra = ""
        if entry.get("val_loss") is not None:
            extra += f", val_loss {entry['val_loss']:.6g}"
        if entry["skipped_null_target"]:
            extra += f", skipped {entry['skipped_null_target']} rows with a null target"
        if entry["imputed"]:
            extra += ", imputed " + ", ".join(f"{k}={v}" for k, v in entry["imputed"].items())
        self._write(
            f"epoch {entry['epoch']}/{self._epochs}: loss {entry['loss']:.6g}, "
            f"{entry['rows']} rows, {_fmt_rate(rows, seconds)}, "
            f"update norm {entry['update_norm']:.3g}{extra}"
        )
        if self._rounds:
            wall = sum(r["wall_s"] for r in self._rounds)
            over = sum(r["overhead_s"] for r in self._rounds)
            self._write(
                f"  {len(self._rounds)} rounds: {wall / len(self._rounds):.3f} s each, "
                f"{over / max(wall, 1e-12):.0%} of it overhead (scheduling, transfer, waiting "
                "for the slowest shard; raise --sync-every to lower it)"
            )
            self._rounds = []
        self._epoch_t0, self._epoch_rows0 = time.perf_counter(), 0
        if not state.finished and state.epoch < self._epochs:
            self._open_bar(state)

    def on_round(self, state: Any, timing: dict[str, Any]) -> None:
        self._rounds.append(timing)

    def on_warning(self, message: str) -> None:
        if self.warnings:
            self._write(f"warning: {message}")

    def on_increment(self, report: dict[str, Any]) -> None:
        self._write(increment_line(report))

    def on_train_end(self, state: Any) -> None:
        self._close_bar()
        if state.stop_reason == "tol":
            self._write(
                f"stopped early: the update norm fell below --tol after "
                f"{len(state.history)} epoch(s)"
            )


def _tqdm() -> type:
    """tqdm's bar: its notebook widget in Jupyter (``tqdm.auto``), else the terminal's, without
    the asyncio import that ``tqdm.auto`` costs everywhere (tens of ms before the first bar)."""
    if _in_notebook():
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter (IPython) kernel, where stderr is not a terminal but
    tqdm draws a widget."""
    return "ipykernel" in sys.modules


class WarningsCallback(Callback):
    """Warnings as Python warnings of category :class:`~streamgd.errors.StreamgdWarning`:
    shown in notebooks and scripts, and filtered or escalated by the ``warnings`` module."""

    def on_warning(self, message: str) -> None:
        import os
        import warnings

        from ..errors import StreamgdWarning

        # attributed to the caller's line (streamgd.fit(...)), not to streamgd's own frames
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
        frame, level = sys._getframe(0), 1
        while frame is not None and frame.f_code.co_filename.startswith(package):
            frame, level = frame.f_back, level + 1
        warnings.warn(message, StreamgdWarning, stacklevel=level)


def api_callbacks(callbacks: Sequence[Callback], *, verbose: bool, quiet: bool) -> list[Callback]:
    """The callbacks of a Python API call: the caller's, plus by default warnings as
    :class:`WarningsCallback`; ``verbose`` adds a progress bar and epoch lines on stderr;
    ``quiet`` leaves out the warnings too (errors are still raised)."""
    from ..errors import UsageError

    if not isinstance(verbose, bool) or not isinstance(quiet, bool):
        raise UsageError(f"verbose and quiet take True or False, got {verbose!r}, {quiet!r}")
    if verbose and quiet:
        raise UsageError("verbose=True and quiet=True contradict each other; give one")
    if isinstance(callbacks, Callback | str) or not hasattr(callbacks, "__iter__"):
        raise UsageError(
            "callbacks takes a list of streamgd.training.callbacks.Callback objects, got "
            f"{type(callbacks).__name__}"
        )
    added: list[Callback] = []
    if verbose:
        added.append(ProgressReporter(warnings=False))
    if not quiet:
        added.append(WarningsCallback())
    return [*callbacks, *added]


class JsonLogger(Callback):
    """Machine-readable log: one JSON object per line on stderr for every event.

    Events (``"event"`` key): ``start`` (effective settings), ``statistics`` (the statistics
    pass: ``rows`` of its sample of ``total`` so far, ``seconds``, ``done``; about once a
    second, and once done), ``resume``, ``epoch`` (history entry plus ``rows_per_s`` and
    ``seconds``), ``checkpoint``, ``warning``, ``finish`` and ``error`` (the last two with
    ``exit_code``), each with an ISO-8601 UTC ``time``.
    """

    STATS_INTERVAL = 1.0  # seconds between two "statistics" events before the last

    def __init__(self, *, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self._t0 = time.perf_counter()
        self._rows0 = 0
        self._stats_t0 = self._stats_last = 0.0

    def emit(self, event: str, **fields: Any) -> None:
        import datetime
        import json

        record = {
            "event": event,
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            **fields,
        }
        line = json.dumps(record, default=json_default, allow_nan=False)
        print(line, file=self.stream, flush=True)

    def on_stats_progress(self, rows: int, total: int | None, done: bool) -> None:
        now = time.perf_counter()
        if rows == 0 and not done:  # the pass begins
            self._stats_t0 = self._stats_last = now
        elif done or now - self._stats_last >= self.STATS_INTERVAL:
            self._stats_last = now
            seconds = now - self._stats_t0
            self.emit("statistics", rows=rows, total=total, seconds=seconds, done=done)

    def on_train_begin(self, state: Any, dataset: Any) -> None:
        self._t0, self._rows0 = time.perf_counter(), state.totals.rows

    def on_resume(self, state: Any, path: str) -> None:
        self.emit(
            "resume",
            checkpoint=path,
            step=state.step,
            epoch=state.epoch + 1,
            rows_into_epoch=state.totals.rows,
        )

    def on_increment(self, report: dict[str, Any]) -> None:
        self.emit("increment", **json_safe(report))

    def on_epoch_end(self, state: Any, entry: dict[str, Any]) -> None:
        seconds = time.perf_counter() - self._t0
        rate = (entry["rows"] - self._rows0) / seconds if seconds > 0 else None
        self.emit("epoch", **json_safe(entry), rows_per_s=rate, seconds=seconds)
        self._t0, self._rows0 = time.perf_counter(), 0

    def on_checkpoint(self, state: Any, path: str, reason: str) -> None:
        self.emit("checkpoint", path=path, step=state.step, epoch=state.epoch + 1, reason=reason)

    def on_round(self, state: Any, timing: dict[str, Any]) -> None:
        self.emit("round", epoch=state.epoch + 1, step=state.step, **timing)

    def on_warning(self, message: str) -> None:
        self.emit("warning", message=message)


def json_safe(obj: Any) -> Any:
    """JSON has no NaN or infinity: report them as null."""
    import math

    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
