"""The ``fit`` command: train a model from the command line, a TOML job file or the environment."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from typing import Any

import click

from .. import __version__
from ..categorical import MAX_HASH_BITS
from ..config import DEFAULT_LR, DEFAULT_SCHEDULE, FitConfig, RunOptions
from ..errors import StreamgdError
from ..features import INFINITE_POLICIES, MISSING_POLICIES
from ..losses import LOSSES
from ..optimizers import OPTIMIZERS
from ..schedules import SCHEDULES
from ..solvers import SOLVERS
from ..training.callbacks import JsonLogger, ProgressReporter, json_default, json_safe
from .options import (
    EXIT_CODES_HELP,
    ListOption,
    csv_options,
    csv_settings,
    emit_json,
    flatten,
    format_option,
)
from .reports import fit_done_line

__all__ = ["fit"]


# Defaults come from FitConfig, so the CLI and the Python API cannot drift apart.
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(FitConfig)}


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        from ..jobconfig import read_config

        ctx.default_map = {**(ctx.default_map or {}), **read_config(value, ctx.command, ctx)}


@click.command(
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
@click.option("--target", "-y", required=True, help="Target column.")
@click.option(
    "--features",
    "-f",
    type=ListOption(),
    multiple=True,
    help="Feature columns, comma-separated or repeated [default: every numeric "
    "column except the target and the --categorical ones].",
)
@click.option(
    "--categorical",
    "-c",
    type=ListOption(),
    multiple=True,
    help="Categorical feature columns (strings, dictionaries, integers...), comma-separated or "
    "repeated: one-hot encoded with the vocabulary of the statistics pass (values outside it "
    "share an '(other)' weight, also at predict time), or hashed with --hash-bits.",
)
@click.option(
    "--max-categories",
    type=click.IntRange(min=1),
    default=_DEFAULTS["max_categories"],
    show_default=True,
    help="One-hot: keep the N most frequent values of each categorical column; the rest are "
    "'(other)'.",
)
@click.option(
    "--hash-bits",
    type=click.IntRange(1, MAX_HASH_BITS),
    default=None,
    help="Hash the categorical values into 2**N weights per column (the hashing trick: no "
    "vocabulary, for unbounded values) instead of one-hot encoding them.",
)
@format_option
@csv_options
@click.option(
    "--loss",
    type=click.Choice(list(LOSSES)),
    default=_DEFAULTS["loss"],
    show_default=True,
    help="squared: least squares; huber, absolute, quantile: robust regression; poisson: "
    "counts (log link); logistic: 0/1 classification (probabilities); hinge: 0/1 "
    "classification (linear SVM, decision scores).",
)
@click.option(
    "--solver",
    type=click.Choice(list(SOLVERS)),
    default=_DEFAULTS["solver"],
    show_default=True,
    help="sgd: mini-batch gradient descent with --optimizer; normal: exact least squares "
    "(--loss squared, with --l2) from X'X and X'y accumulated in one streaming pass.",
)
@click.option(
    "--optimizer",
    type=click.Choice(list(OPTIMIZERS)),
    default=_DEFAULTS["optimizer"],
    show_default=True,
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Learning rate [default: "
    + ", ".join(f"{k} {v}" for k, v in DEFAULT_LR.items())
    + "; 0.3 times that for the absolute, quantile and hinge losses].",
)
@click.option(
    "--schedule",
    type=click.Choice(list(SCHEDULES)),
    default=None,
    help="Learning-rate schedule over the global step [default: "
    + ", ".join(f"{k} {v}" for k, v in DEFAULT_SCHEDULE.items())
    + "].",
)
@click.option(
    "--power-t",
    type=click.FloatRange(min=0),
    default=_DEFAULTS["power_t"],
    show_default=True,
    help="Exponent of --schedule invscaling: lr / (step+1)^power_t.",
)
@click.option(
    "--momentum",
    type=click.FloatRange(0, 1),
    default=_DEFAULTS["momentum"],
    show_default=True,
    help="Momentum coefficient of --optimizer momentum.",
)
@click.option(
    "--weight-decay",
    type=click.FloatRange(min=0),
    default=None,
    help="Decoupled weight decay of --optimizer adamw [default: 0.01].",
)
@click.option(
    "--step-size",
    type=click.IntRange(min=1),
    default=None,
    help="--schedule step: multiply the rate by --gamma every N steps [default: 1000].",
)
@click.option(
    "--gamma",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="Decay factor of --schedule step [default: 0.5] and exponential (per step) "
    "[default: 0.999].",
)
@click.option(
    "--decay-steps",
    type=click.IntRange(min=1),
    default=None,
    help="--schedule cosine: steps of the cosine decay after the warm-up [default: 10000].",
)
@click.option(
    "--warmup-steps",
    type=click.IntRange(min=0),
    default=None,
    help="--schedule cosine: steps of linear warm-up [default: 0].",
)
@click.option(
    "--huber-delta",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="--loss huber: residual size, in the target's units, where the loss turns from "
    "quadratic to linear [default: 1].",
)
@click.option(
    "--quantile",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="--loss quantile: the quantile to predict [default: 0.5, the median].",
)
@click.option(
    "--l2",
    type=click.FloatRange(min=0),
    default=_DEFAULTS["l2"],
    show_default=True,
    help="L2 penalty l2/2*||w||^2 on the standardised weights (not the intercept).",
)
@click.option(
    "--l1",
    type=click.FloatRange(min=0),
    default=_DEFAULTS["l1"],
    show_default=True,
    help="L1 penalty l1*||w||_1 (proximal: weights become exactly zero); with --l2, the "
    "elastic net.",
)
@click.option(
    "--clip-grad",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Clip each step's gradient (after preconditioning) to this L2 norm.",
)
@click.option(
    "--clip-weights",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Clip every standardised weight to [-X, X] after each step (the classic uses 100).",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=_DEFAULTS["epochs"],
    show_default=True,
    help="Passes over the data.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=_DEFAULTS["batch_size"],
    show_default=True,
    help="Rows per step (only the last batch of an epoch may be shorter).",
)
@click.option(
    "--tol",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop early when an epoch moves the weights by less than this (L2 norm).",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=_DEFAULTS["seed"],
    show_default=True,
    help="Seed of every random choice: same inputs and seed, same model.",
)
@click.option(
    "--shuffle/--no-shuffle",
    default=_DEFAULTS["shuffle"],
    show_default=True,
    help="Shuffle row groups and rows each epoch; --no-shuffle keeps file order.",
)
@click.option(
    "--shuffle-buffer",
    type=click.IntRange(min=0),
    default=_DEFAULTS["shuffle_buffer"],
    show_default=True,
    help="Rows held in the shuffle buffer.",
)
@click.option(
    "--shuffle-run",
    type=click.IntRange(min=1),
    default=_DEFAULTS["shuffle_run"],
    show_default=True,
    help="Rows the shuffle buffer moves together (a run of consecutive rows; 1: single rows). "
    "Runs are much cheaper to move; a batch still draws batch/run runs from the whole buffer.",
)
@click.option(
    "--standardize/--no-standardize",
    default=_DEFAULTS["standardize"],
    show_default=True,
    help="Scale features by mean/std from the statistics pass.",
)
@click.option(
    "--precondition/--no-precondition",
    default=_DEFAULTS["precondition"],
    show_default=True,
    help="Precondition steps by the inverse feature correlation and the loss's "
    "curvature (needs --standardize).",
)
@click.option(
    "--missing",
    type=click.Choice(MISSING_POLICIES),
    default=_DEFAULTS["missing"],
    show_default=True,
    help="impute: skip rows with a null target, fill null features with the mean; drop: "
    "skip rows with any null; error: stop at the first null.",
)
@click.option(
    "--infinite",
    type=click.Choice(INFINITE_POLICIES),
    default=_DEFAULTS["infinite"],
    show_default=True,
    help="error: stop at the first +-inf (naming file, row and column); missing: treat "
    "infinities as missing values (then --missing applies).",
)
@click.option(
    "--stats-rows",
    type=click.IntRange(min=0),
    default=_DEFAULTS["stats_rows"],
    show_default=True,
    help="Rows the statistics pass reads (a seeded sample of row groups); 0: all.",
)
@click.option(
    "--validation",
    type=ListOption(),
    multiple=True,
    help="Validation files (paths/globs/directories, comma-separated or repeated): scored "
    "after every epoch (val_* in the history).",
)
@click.option(
    "--holdout",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="Hold out this fraction of the rows (chosen by a hash of file and row number: the "
    "same rows every epoch and after a resume) and score them after every epoch.",
)
@click.option(
    "--holdout-rows",
    type=click.IntRange(min=1),
    default=None,
    help="Hold out this many rows, drawn uniformly by seeded reservoir sampling over the files "
    "(the same rows every epoch and after a resume), and score them after every epoch.",
)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after N epochs without a lower validation loss, restoring the best weights.",
)
@click.option(
    "--record-path",
    type=click.IntRange(min=1),
    default=None,
    help="Record the weights every N steps (a bounded trajectory, shown by 'plot').",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the model here (atomically), and its history beside it as "
    "STEM.history.csv and STEM.history.json.",
)
@click.option(
    "--checkpoint-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Checkpoint directory [default with --output: OUTPUT.ckpt].",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    default=None,
    help="Checkpoint every N steps (also at every epoch end and at the end).",
)
@click.option(
    "--checkpoint-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Checkpoint at most every this many seconds.",
)
@click.option(
    "--keep", type=click.IntRange(min=1), default=3, show_default=True, help="Checkpoints to keep."
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue from the newest valid checkpoint; start afresh if there is none.",
)
@click.option(
    "--init",
    "init",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Warm start from this model (weights, statistics, schedule step).",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Decoded row groups/blocks queued ahead of training.",
)
@click.option(
    "--cluster",
    default=None,
    help="Train data-parallel on Dask: local[:N] (N worker processes here), "
    "tcp://HOST:PORT or file:SCHEDULER.json. Workers must see the input paths.",
)
@click.option(
    "--shards",
    type=click.IntRange(min=1),
    default=None,
    help="With --cluster: fixed shards of row groups, one task each per round [default: 2].",
)
@click.option(
    "--sync-every",
    type=click.IntRange(min=1),
    default=_DEFAULTS["sync_every"],
    show_default=True,
    help="With --cluster: local steps per shard between model averages (1: synchronous SGD).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress or epoch lines on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: every event (start, resume, epoch, checkpoint, warning, finish, error) as one "
    "JSON object per line on stderr, and nothing else there.",
)
@click.option(
    "--metrics-out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the final metrics and training summary to this JSON file (atomically).",
)
def fit(
    paths: tuple[str, ...],
    target: str,
    features: tuple[list[str], ...],
    fmt: str,
    output: str | None,
    checkpoint_dir: str | None,
    checkpoint_every: int | None,
    checkpoint_interval: float | None,
    keep: int,
    resume: bool,
    init: str | None,
    prefetch: int,
    cluster: str | None,
    quiet: bool,
    as_json: bool,
    print_config: bool,
    log_format: str,
    metrics_out: str | None,
    **settings: Any,
) -> None:
    """Train a model on PATHS (Parquet/CSV files, globs or directories; key=value directories
    above a file, as in data/region=eu/year=2024/, are hive partition columns).

    \b
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
    logger = JsonLogger() if log_format == "json" else None
    try:
        _fit(
            ctx,
            logger,
            paths,
            target,
            features,
            fmt,
            output,
            checkpoint_dir,
            checkpoint_every,
            checkpoint_interval,
            keep,
            resume,
            init,
            prefetch,
            cluster,
            quiet,
            as_json,
            metrics_out,
            settings,
        )
    except StreamgdError as exc:
        if logger is not None:
            logger.emit(
                "error", message=str(exc), exit_code=exc.exit_code, error=type(exc).__name__
            )
            exc.reported = True  # type: ignore[attr-defined]
        raise


def _fit(ctx, logger, paths, target, features, fmt, output, checkpoint_dir, checkpoint_every,
         checkpoint_interval, keep, resume, init, prefetch, cluster, quiet, as_json,
         metrics_out, settings) -> None:  # fmt: skip
    from ..archive import atomic_write
    from ..training import train

    validation = tuple(flatten(settings.pop("validation", ()))) or None
    settings["categorical"] = tuple(flatten(settings.pop("categorical", ()))) or None
    csv_keys = ("delimiter", "header", "columns", "null_values", "dtypes")
    settings |= csv_settings(*(settings.pop(k) for k in csv_keys))
    config = FitConfig(
        target=target,
        features=tuple(flatten(features)) or None,
        format=fmt,
        validation=validation,
        **settings,
    )
    if checkpoint_dir is None and output is not None:
        checkpoint_dir = output + ".ckpt"
    options = RunOptions(
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        checkpoint_interval=checkpoint_interval,
        keep=keep,
        resume=resume,
        init=init,
        prefetch=prefetch,
        handle_signals=True,
        cluster=cluster,
    )
    if logger is not None:
        logger.emit(
            "start",
            version=__version__,
            paths=list(paths),
            output=output,
            settings=config.to_dict(),
            run={
                "checkpoint_dir": checkpoint_dir,
                "checkpoint_every": checkpoint_every,
                "resume": resume,
                "init": init,
            },
        )
        callbacks: list = [logger]
    else:
        callbacks = [] if quiet else [ProgressReporter()]
    with _warnings_to(logger):
        result = train(list(paths), config, options, callbacks=callbacks)
    model = result.model
    if output is not None and (result.trained or not os.path.exists(output)):
        model.save(output)
        model.save_history(output)
    summary = {
        "model": output,
        "checkpoint_dir": checkpoint_dir,
        "trained": result.trained,
        "resumed_from": result.resumed_from,
        **model.summary,
    }
    if metrics_out is not None:
        report = json_safe({"summary": summary, "history": model.history})
        text = json.dumps(report, indent=2, default=json_default, allow_nan=False) + "\n"
        atomic_write(metrics_out, lambda fh: fh.write(text.encode()))
    if logger is not None:
        logger.emit("finish", exit_code=0, **json_safe(summary))
    if as_json:
        emit_json(summary)
    elif not quiet and logger is None:
        click.echo(fit_done_line(summary, output), err=True)


def _effective_toml(ctx: click.Context) -> str:
    """The settings this command line resolves to (file, environment and options merged)."""
    from ..jobconfig import key_of, to_toml

    skip = {"print_config", "config"}
    values = {}
    for param in ctx.command.params:
        if param.name in skip or param.name is None:
            continue
        value = ctx.params.get(param.name)
        if param.name in ("features", "categorical", "validation", "columns", "null_values"):
            value = flatten(value) or None
        elif isinstance(value, tuple):
            value = list(value) or None
        values[key_of(param)] = value
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

