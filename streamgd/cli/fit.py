"""The ``fit`` command: train a model from the command line, a TOML job file or the
environment. Its options are generated from the settings' declarations (FitConfig,
RunOptions and :class:`OutputOptions` below), shown in --help in titled groups."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Any

import click

from .. import __version__
from ..config import CONFIG_SETTINGS, RUN_SETTINGS, FitConfig, RunOptions, split_settings
from ..constraints import Flag, Integer, Options
from ..errors import StreamgdError, UsageError
from ..search import is_grid
from ..search.options import GRID_OPTIONS
from ..settings import Setting, setting, settings_of
from ..training.callbacks import (
    Callback,
    JsonLogger,
    ProgressReporter,
)
from . import signals
from .options import (
    EXIT_CODES_HELP,
    GroupedCommand,
    from_command_line,
    publish_summary,
    setting_options,
)
from .reports import NOT_SAVED, coefficients_text, fit_done_line

__all__ = ["fit", "OutputOptions", "FIT_SETTINGS"]


@dataclass(frozen=True)
class OutputOptions:
    """What ``fit`` writes and prints besides training: settings of the command only."""

    output: str | None = setting(
        None,
        None,
        "output",
        "Write the model here (atomically), and its history beside it as STEM.history.csv "
        "and STEM.history.json.",
        flags=("--output", "-o"),
        path="file",
    )
    quiet: bool = setting(
        False, Flag(), "output", "No progress or epoch lines on stderr.", flags=("--quiet", "-q")
    )
    json: bool = setting(False, Flag(), "output", "Print a JSON summary on stdout.")
    log_format: str = setting(
        "text",
        Options(("text", "json")),
        "output",
        "json: every event (start, resume, epoch, checkpoint, warning, finish, error) as one "
        "JSON object per line on stderr, and nothing else there.",
    )
    keep_models: int | None = setting(
        None,
        Integer(1),
        "output",
        "--continual: also keep the models of the last N increments beside --output, as "
        "STEM.inc-NNNNNN.EXT.",
    )
    metrics_out: str | None = setting(
        None,
        None,
        "output",
        "Write the final metrics and training summary to this JSON file (atomically).",
        path="file",
    )


OUTPUT_SETTINGS = settings_of(OutputOptions)
# Every option of ``fit`` but --config and --print-config, in --help's group order (within a
# group: how a run is carried out, then what decides the model, then the output).
FIT_SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in sorted(
        [
            *RUN_SETTINGS.values(),
            *CONFIG_SETTINGS.values(),
            *OUTPUT_SETTINGS.values(),
            *GRID_OPTIONS.values(),  # a grid's (streamgd.search)
        ],
        key=lambda s: s.group_rank,
    )
}


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        from ..jobconfig import read_config

        ctx.default_map = {**(ctx.default_map or {}), **read_config(value, ctx.command, ctx)}


@click.command(
    cls=GroupedCommand,
    extra_groups={"config": "jobs", "print_config": "jobs"},
    short_help="Train a model on Parquet/CSV files, streaming them in mini-batches.",
    epilog="Every option can also be set in a --config TOML file (keys: the option names, and "
    "'paths') or an environment variable STREAMGD_<OPTION> (e.g. STREAMGD_BATCH_SIZE); the "
    "command line wins over the environment, which wins over the file. " + EXIT_CODES_HELP,
    context_settings={"auto_envvar_prefix": "STREAMGD"},
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    is_eager=True,
    expose_value=False,
    callback=_load_config,
    help="Read settings from this TOML file (command line and environment override it).",
)
@click.option(
    "--print-config",
    is_flag=True,
    help="Print the effective settings as TOML and exit, without training.",
)
@click.argument("paths", nargs=-1, required=False, metavar="PATHS...")
@setting_options(FIT_SETTINGS.values())
def fit(paths: tuple[str, ...], print_config: bool, **values: Any) -> None:
    """Train a model on PATHS (Parquet/CSV files, globs or directories; key=value directories
    above a file, as in data/region=eu/year=2024/, are hive partition columns).

    Without --target, the one column named target, label or y is the target. Without -o,
    nothing is saved: the coefficients are printed at the end.

    Examples:

    \b
    streamgd fit data/*.parquet
    streamgd fit "data/regression/*.parquet" --target y -o model.npz
    streamgd fit data/classification --target y --loss logistic -o clf.npz
    streamgd fit --config job.toml --resume --log-format json
    """
    ctx = click.get_current_context()
    if print_config:
        click.echo(_effective_toml(ctx), nl=False)
        return
    if not paths:
        raise click.UsageError("no input PATHS (give them as arguments or as 'paths' in --config)")
    settings = {name: from_command_line(s, values[name]) for name, s in FIT_SETTINGS.items()}
    out = OutputOptions(**{name: settings.pop(name) for name in OUTPUT_SETTINGS})
    grid = {name: settings.pop(name) for name in GRID_OPTIONS}
    logger = JsonLogger() if out.log_format == "json" else None
    try:
        # several values of a training setting, or --cv K: models side by side in one pass
        if is_grid(settings) or (settings.get("cv") and settings.get("cv_fold") is None):
            from .grid_fit import fit_grid_command

            if settings.get("memory_limit"):
                raise UsageError(
                    "--memory-limit sizes one model's fit: leave it out of a grid or --cv run"
                )
            _check_paths(out)
            with _output_lock(out.output):  # as a single model's fit
                fit_grid_command(logger, list(paths), out, settings, **grid)
        elif grid["all_models"] is not None or grid["select_metric"] != "loss":
            raise UsageError(
                "--select-metric and --all-models choose among the models of a grid: give a "
                "training setting several values (for example --l2 0,1e-4,1e-2)"
            )
        else:
            _fit(logger, list(paths), out, settings)
    except StreamgdError as exc:
        if logger is not None:
            logger.emit(
                "error", message=str(exc), exit_code=exc.exit_code, error=type(exc).__name__
            )
            exc.reported = True  # type: ignore[attr-defined]
        raise


def _fit(
    logger: JsonLogger | None, paths: list[str], out: OutputOptions, settings: dict[str, Any]
) -> None:
    """Train with the library's own entry (:func:`streamgd.training.train`), then write the
    model, its history and the summaries."""
    if settings.get("memory_limit") and "pyarrow" not in sys.modules:
        # pyarrow's allocator, mimalloc, reads its options as pyarrow loads: let it return
        # freed pages at once, or the column readers of row groups read in slices leave
        # theirs resident (a 300MB plan peaked at 318MB; BENCHMARKS.md "Footprint")
        os.environ.setdefault("MIMALLOC_PURGE_DELAY", "0")
    from ..training import train

    config_settings, run_settings = split_settings(settings)
    config = FitConfig(**config_settings)
    if run_settings["checkpoint_dir"] is None and out.output is not None:
        run_settings["checkpoint_dir"] = out.output + ".ckpt"
    options = RunOptions(**run_settings, handle_signals=True)
    if out.keep_models and not (options.continual and out.output):
        raise UsageError(
            "--keep-models keeps the models of --continual increments: give "
            "--continual and --output"
        )
    _check_paths(out)
    with _output_lock(out.output):
        if logger is not None:
            run = ("checkpoint_dir", "checkpoint_every", "resume", "init")
            logger.emit(
                "start",
                version=__version__,
                paths=paths,
                output=out.output,
                settings=config.to_dict(),
                run={name: getattr(options, name) for name in run},
            )
            callbacks: list = [logger]
        else:
            callbacks = [] if out.quiet else [ProgressReporter()]
        if out.output is None and callbacks:  # said as training begins, not after an hour
            callbacks.insert(0, _WarnAtStart(NOT_SAVED, list(callbacks)))
        with _warnings_to(logger):
            result = train(paths, config, options, callbacks=callbacks)
        # Training is over (and checkpointed): a signal now waits until the files are written.
        signals.finishing()
        _write_outputs(result, out, options, logger)


class _WarnAtStart(Callback):
    """Gives ``message`` to the other callbacks as a warning when training begins (once the
    data are open and checked, so that an error in them is still the one line printed)."""

    def __init__(self, message: str, callbacks: list[Callback]) -> None:
        self.message, self.callbacks = message, callbacks

    def on_train_begin(self, state: Any, dataset: Any) -> None:
        for callback in self.callbacks:
            callback.on_warning(self.message)


def _write_outputs(result: Any, out: OutputOptions, options: RunOptions, logger: Any) -> None:
    """Write the model (unless a finished run's model is already there), its history and the
    metrics, each durably (fsynced file and directory); only then print that they were."""

    model = result.model
    if out.output is not None:
        rewrite = _model_needs_writing(result, out.output, logger, out.quiet)
        if rewrite:
            model.save(out.output, option="--output")
        if out.keep_models and result.continual and result.continual["trained"]:
            from .versions import keep_version

            keep_version(out.output, result.continual["increment"], out.keep_models)
        # a finished run resumed: the history files too are checked, and written when not its
        model.save_history(out.output, option="--output", only_changed=not rewrite)
    summary = {
        "model": out.output,
        "checkpoint_dir": options.checkpoint_dir,
        "trained": result.trained,
        "resumed_from": result.resumed_from,
        **model.summary,
    }
    if result.continual is not None:
        summary["continual"] = result.continual
    if result.memory is not None:  # the plan's estimate beside the measured peak
        summary["memory"] = result.memory
    if publish_summary(summary, model.history, out, logger):
        return
    if not out.quiet and logger is None:
        click.echo(fit_done_line(summary, out.output), err=True)
    if out.output is None:  # the result would otherwise be lost
        click.echo(coefficients_text(model))


def _model_needs_writing(result: Any, output: str, logger: Any, quiet: bool) -> bool:
    """A trained model is always written. A finished run resumed is written again unless
    ``output`` holds exactly its final model (the digest its checkpoint recorded): a write
    that failed after training, or another file put there since, never passes for it."""
    from ..archive import read_archive_digest
    from ..errors import CheckpointError
    from ..model import MODEL_VERSION

    if result.trained:
        return True
    expected = result.model_digest or result.model.digest()
    try:
        found = read_archive_digest(output, kind="model", max_version=MODEL_VERSION)[2]
    except CheckpointError as exc:
        if not os.path.exists(output):
            return True
        why = f"it cannot be used ({exc})"
    else:
        if found == expected:
            return False
        why = "it is not that run's final model"
    message = f"{output}: {why}; writing the final model from {result.resumed_from} again"
    if logger is not None:
        logger.emit("warning", message=message)
    elif not quiet:
        click.echo(f"warning: {message}", err=True)
    return True


def _check_paths(out: OutputOptions) -> None:
    """Usage mistakes in the output paths, found before any work (exit 2): a directory where
    the file should be, or a file where its directory should be."""
    for path, option in ((out.output, "--output"), (out.metrics_out, "--metrics-out")):
        if path is None:
            continue
        if os.path.isdir(path):
            raise UsageError(f"{option} {path}: is a directory; give a file name")
        parent = os.path.dirname(os.path.abspath(path))
        while parent and not os.path.exists(parent):
            parent = os.path.dirname(parent) if os.path.dirname(parent) != parent else ""
        if parent and not os.path.isdir(parent):
            raise UsageError(
                f"{option} {path}: {parent} is a file, not a directory; give another path"
            )


@contextlib.contextmanager
def _output_lock(output: str | None):
    """While a job writes the model at ``output`` no other job may: a lock file beside it
    (``.NAME.lock``, holding the PID), taken before any work. Then the temporary files a
    killed write of this model or its history left there are removed."""
    if output is None:
        yield
        return
    from ..archive import remove_leftovers
    from ..training.checkpoint import PathLock

    directory, name = os.path.split(os.path.abspath(output))
    lock = PathLock(
        os.path.join(directory, f".{name}.lock"),
        busy=f"{output}: another streamgd job (pid {{pid}}) is writing this model; wait for "
        "it or use another --output",
        option="--output",
    )
    with lock:
        stem = os.path.splitext(name)[0]
        for prefix in (name, f"{stem}.history.csv", f"{stem}.history.json"):
            remove_leftovers(directory, before=lock.acquired_at or 0.0, stem=prefix)
        yield


def _effective_toml(ctx: click.Context) -> str:
    """The settings this command line resolves to (file, environment and options merged), as
    TOML keyed like a --config file."""
    from ..jobconfig import to_toml

    values: dict[str, Any] = {"paths": list(ctx.params.get("paths") or ()) or None}
    for name, declared in FIT_SETTINGS.items():
        value = from_command_line(declared, ctx.params.get(name))
        values[declared.key] = list(value) if isinstance(value, tuple) else value
    return to_toml(values, header=f"streamgd {__version__} fit settings (--print-config)")


@contextlib.contextmanager
def _warnings_to(logger: JsonLogger | None):
    """With a JSON log, Python warnings become ``warning`` events instead of stray text."""
    if logger is None:
        yield
        return
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001
        logger.emit("warning", message=f"{category.__name__}: {message}")

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        old, warnings.showwarning = warnings.showwarning, show
        try:
            yield
        finally:
            warnings.showwarning = old
