"""The commands besides ``fit``: predict, evaluate, inspect, plot, schema and shuffle."""

from __future__ import annotations

from typing import Any

import click

from ..training.callbacks import json_safe
from .options import (
    EXIT_CODES_HELP,
    ListOption,
    csv_options,
    csv_settings,
    emit_json,
    flatten,
    format_option,
    paths_argument,
)
from .reports import metrics_text, plot_lines, shuffle_line

__all__ = ["predict", "evaluate", "inspect", "plot", "schema", "shuffle_command", "COMMANDS"]


# -- predict / evaluate / inspect -----------------------------------------------------------
@click.command(
    epilog=EXIT_CODES_HELP,
    short_help="Write MODEL's predictions for the rows of PATHS to a Parquet/CSV file.",
)
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False))
@paths_argument
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False),
    help="Predictions file: .parquet, or .csv (written atomically).",
)
@click.option(
    "--id",
    "ids",
    type=ListOption(),
    multiple=True,
    help="Columns to copy next to each prediction (comma-separated or repeated).",
)
@format_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def predict(
    model_path: str,
    paths: tuple[str, ...],
    output: str,
    ids: tuple[list[str], ...],
    fmt: str,
    as_json: bool,
) -> None:
    """Stream predictions of MODEL for the rows of PATHS into --output, in input order.

    Logistic models predict the probability of class 1. Missing features are imputed exactly
    as in training.

    Example:

    \b
    streamgd predict model.npz "data/new/*.parquet" -o predictions.parquet --id row_id
    """
    from ..model import load
    from ..scoring import predict_files

    model = load(model_path)
    rows = predict_files(model, list(paths), output, id_columns=flatten(ids), fmt=fmt)
    if as_json:
        emit_json({"output": output, "rows": rows})
    else:
        click.echo(f"{rows} predictions written to {output}", err=True)


@click.command(
    epilog=EXIT_CODES_HELP,
    short_help="Score MODEL on labelled PATHS (mse, r2, logloss, accuracy, auc, ...).",
)
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False))
@paths_argument
@format_option
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
def evaluate(model_path: str, paths: tuple[str, ...], fmt: str, as_json: bool) -> None:
    """Metrics of MODEL on labelled PATHS (squared: mse, rmse, mae, r2; logistic: logloss,
    accuracy, precision, recall, f1, auc). Rows with a null target are skipped and counted.

    Example:

    \b
    streamgd evaluate model.npz "data/test/*.parquet" --json
    """
    from ..model import load
    from ..scoring import evaluate as run_evaluate

    result = json_safe(run_evaluate(load(model_path), list(paths), fmt=fmt))
    if as_json:
        emit_json(result)
        return
    text = metrics_text(result)
    if text:
        click.echo(text)


@click.command(
    epilog=EXIT_CODES_HELP,
    short_help="Show a model or a checkpoint: features, coefficients, history, settings.",
)
@click.argument("path", metavar="MODEL_OR_CHECKPOINT", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print everything as one JSON object.")
def inspect(path: str, as_json: bool) -> None:
    """Show a model (features, coefficients in original units, intercept, training summary,
    history) or a checkpoint (step, epoch, cursor, loss so far, settings). A checkpoint
    directory shows its newest valid checkpoint.

    Example:

    \b
    streamgd inspect model.npz
    streamgd inspect model.npz.ckpt --json
    """
    from ..inspection import describe

    info = json_safe(describe(path))
    if as_json:
        emit_json(info)
    else:
        from ..inspection import render_text

        click.echo(render_text(info))


@click.command(
    epilog=EXIT_CODES_HELP,
    short_help="Plot MODEL's loss curves and, for one feature, its loss surface.",
)
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False))
@click.argument("data", nargs=-1, metavar="[DATA...]")
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False),
    help="Image file: .png, .svg or .pdf (written atomically).",
)
@click.option(
    "--max-rows",
    type=click.IntRange(min=1),
    default=200_000,
    show_default=True,
    help="Rows of DATA read for the loss surface.",
)
@format_option
@click.option("--json", "as_json", is_flag=True, help="Print what was drawn as one JSON object.")
def plot(model_path: str, data: tuple[str, ...], output: str, max_rows: int, fmt: str,
         as_json: bool) -> None:  # fmt: skip
    """Plot MODEL's loss curves (training and validation per epoch) and, for a one-feature
    model, the loss surface over (weight, intercept) computed from DATA with the recorded
    path (--record-path) on top; for more features, the recorded weights against the step.
    Needs matplotlib: pip install "streamgd[plot]".

    Example:

    \b
    streamgd plot model.npz "data/regression/*.parquet" -o loss.png
    """
    from ..model import load
    from ..plotting import plot_model

    info = plot_model(load(model_path), output, data=list(data) or None, max_rows=max_rows,
                      fmt=fmt)  # fmt: skip
    if as_json:
        emit_json(info)
        return
    for line in plot_lines(info, output):
        click.echo(line, err=True)


@click.command(
    epilog=EXIT_CODES_HELP,
    short_help="Show the unified schema of PATHS: columns, types, row and null counts.",
)
@paths_argument
@format_option
@csv_options
@click.option(
    "--target", "-y", default=None, help="Also say which columns would be features for this target."
)
@click.option("--json", "as_json", is_flag=True, help="Print everything as one JSON object.")
def schema(paths: tuple[str, ...], fmt: str, target: str | None, as_json: bool,
           **csv_values: Any) -> None:  # fmt: skip
    """The unified schema of PATHS: columns and types, row counts, null counts per column,
    and (with --target) the default features. Parquet counts come from metadata where the
    files have it; CSV files are streamed (and so checked) once. Hive partition columns are
    marked *; columns whose type was widened between files are noted.

    Example:

    \b
    streamgd schema "data/regression/*.parquet" --target y
    """
    from ..config import csv_options_from
    from ..describe import describe_dataset, render_schema

    csv = csv_options_from(csv_settings(**csv_values))
    info = describe_dataset(list(paths), fmt=fmt, csv=csv, target=target)
    if as_json:
        emit_json(info)
    else:
        click.echo(render_schema(info))


@click.command(
    name="shuffle",
    epilog=EXIT_CODES_HELP,
    short_help="Shuffle PATHS into new Parquet files in bounded memory (external shuffle).",
)
@paths_argument
@click.option(
    "--output",
    "-o",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory for the shuffled Parquet files (part-00000.parquet, ...).",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--rows-per-file", type=click.IntRange(min=1), default=1_000_000, show_default=True)
@click.option("--row-group-size", type=click.IntRange(min=1), default=131_072, show_default=True)
@click.option(
    "--memory-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=256,
    show_default=True,
    help="Memory budget of the shuffle (buckets are sized to it).",
)
@format_option
@csv_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def shuffle_command(paths: tuple[str, ...], out_dir: str, seed: int, rows_per_file: int,
                    row_group_size: int, memory_mb: float, fmt: str, as_json: bool,
                    **csv_values: Any) -> None:  # fmt: skip
    """Shuffle PATHS (sorted or clustered data, which a shuffle buffer cannot mix) into new
    Parquet files in bounded memory: rows are scattered to random buckets on disk, then each
    bucket is permuted. Every row appears once; the same seed gives the same files.

    Example:

    \b
    streamgd shuffle "sorted/*.parquet" -o shuffled/ --seed 1 --memory-mb 512
    """
    from ..config import csv_options_from
    from ..external_shuffle import shuffle_files

    csv = csv_options_from(csv_settings(**csv_values))
    summary = shuffle_files(list(paths), out_dir, fmt=fmt, csv=csv, seed=seed,
                            rows_per_file=rows_per_file, row_group_size=row_group_size,
                            memory_budget_mb=memory_mb)  # fmt: skip
    if as_json:
        emit_json(summary)
    else:
        click.echo(shuffle_line(summary, out_dir), err=True)


COMMANDS = (predict, evaluate, inspect, plot, schema, shuffle_command)
