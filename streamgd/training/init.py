"""The state a run starts from: a fresh one (features from the schema, statistics from a
statistics pass), a warm start from a saved model, and the check that a checkpoint fits the
run that would resume it."""

from __future__ import annotations

import dataclasses
import functools
import shlex
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import holdout
from ..config import FitConfig, RunOptions
from ..decode import Decoder
from ..errors import CheckpointError, DataError, UsageError
from ..features import (
    FeatureSpec,
    Stats,
    check_categorical,
    scan_categories,
    scan_classes,
    select_features,
)
from ..features.interactions import Deriver, encodings, extend_names, parse_terms, resolve
from ..features.outliers import Screen
from ..features.select import check_in_every_file
from ..features.text import TextColumn, check_text, scan_texts, split_terms
from ..features.weights import CLASS_WEIGHT_TASKS, Weighting, resolve_class_weights
from ..losses import Loss
from ..model import Model, load
from ..solvers import get_solver
from ..sources import Dataset, is_numeric
from ..sources.fingerprint import differences
from ..stats_pass import Progress, compute_class_stats, compute_stats, pass_dtype, stats_order
from .state import TrainState

__all__ = ["initial_state", "check_compatible", "check_settings"]


def initial_state(
    dataset: Dataset,
    config: FitConfig,
    options: RunOptions,
    *,
    warn: Callable[[str], None] | None = None,
    classes: tuple[tuple, np.ndarray] | None = None,
    progress: Progress | None = None,
) -> TrainState:
    """A fresh state: features from the schema, statistics from a statistics pass (or the
    warm-start model's), zero weights but for the loss's starting intercept (or the model's
    weights) and a fresh solver state. What the statistics pass found that a user should know
    (outliers) goes to ``warn`` (a Python warning without one); how far it has read, to
    ``progress`` (see :func:`~streamgd.stats_pass.compute_stats`).

    ``classes``: for a softmax loss, the labels and their counts when the caller knows them
    (scikit-learn's ``partial_fit`` is told every class on its first call, and the first rows
    need not hold them all); otherwise they come from a scan of the target column. The counts
    set the starting intercept, so each must be positive."""
    dataset.piece_rows = config.piece_rows  # the statistics pass reads the same pieces
    if options.init:
        return _warm_state(dataset, config, load(options.init), options.init)
    loss = config.make_loss()
    spec, mean = _fresh_spec(
        dataset,
        config,
        loss,
        warn=warn or _python_warning,
        known_classes=classes,
        progress=progress,
    )
    # weights of the numeric features, the intercept, then one per categorical code; one
    # column per class for a multi-class loss
    classes = () if spec.classes is None else (len(spec.classes),)
    params = np.zeros((len(spec.names) + 1 + spec.n_codes, *classes))
    params[len(spec.names)] = loss.initial_intercept(mean)
    return _state(params, spec, dataset, config)


def _state(
    params: np.ndarray, spec: FeatureSpec, dataset: Dataset, config: FitConfig, *, step: int = 0
) -> TrainState:
    """The state that starts training from ``params``: the solver's fresh state, the run's
    settings and the input files' fingerprint."""
    solver = get_solver(config.solver)
    return TrainState(
        params=params,
        opt_state=solver.init_state(params, config.make_optimizer()),
        spec=spec,
        config=config.to_dict(),
        data=dataset.fingerprint(),
        step=step,
    )


def _python_warning(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)


def _fresh_spec(
    dataset: Dataset,
    config: FitConfig,
    loss: Loss,
    *,
    warn: Callable[[str], None],
    known_classes: tuple[tuple, np.ndarray] | None = None,
    progress: Progress | None = None,
) -> tuple[FeatureSpec, Any]:
    """The feature spec from the schema and a statistics pass, and the target's mean (the
    class frequencies for a multi-class loss) that the starting intercept fits."""
    first = dataset.files[0].path
    multiclass = loss.task == "multiclass"
    categorical = config.categorical or ()
    check_categorical(dataset.schema, categorical, config.target, path=first)
    check_text(dataset.schema, config.text or (), config.target, path=first)
    names = select_features(
        dataset.schema,
        config.target,
        config.features,
        path=first,
        labels=multiclass,
        categorical=(*categorical, *(config.text or ())),  # neither is a numeric feature
    )
    names = _without_weight(names, dataset, config, first)
    interactions = _interactions(dataset, config)
    names = extend_names(names, interactions)  # products, and what slopes multiply
    classes, frequencies = None, None
    if multiclass and known_classes is not None:
        classes, frequencies = known_classes
    elif multiclass:
        # a one-shot stream gives its first rows only, as to the statistics pass
        head = config.stats_rows if dataset.one_shot else 0
        classes, frequencies = scan_classes(dataset, config.target, max_rows=head)
    decoder = Decoder.for_statistics(
        names,
        config.target,
        loss=loss,
        missing=config.missing,
        infinite=config.infinite,
        classes=classes,
        select=holdout.selector(config, keep=False, dataset=dataset),
        screen=(screen := _screen(names, config, loss)),
        weight=config.weight,
        derive=Deriver(interactions) if interactions else None,
        dtype=pass_dtype(
            dataset.schema,
            (*names, config.target, *([config.weight] if config.weight else [])),
            converted=() if classes is None else (config.target,),
            derived=bool(interactions),
            clip=config.outliers == "clip",
        ),
    )
    weighting = None
    if config.weight is None and config.class_weight is None:
        stats = compute_stats(
            dataset, decoder, max_rows=config.stats_rows, seed=config.seed, progress=progress
        )
    else:
        stats, weighting, class_totals = _weighted_stats(
            dataset, decoder, config, loss, classes, progress
        )
    _check_stats(stats, screen, dataset, warn)
    spec = FeatureSpec.from_stats(
        names,
        config.target,
        stats,
        standardize=config.standardize,
        missing=config.missing,
        scale_target=loss.scale_target,
        precondition=config.precondition,
    )
    spec = dataclasses.replace(
        spec,
        categoricals=_categoricals(dataset, config, interactions),
        interactions=interactions,
        texts=_texts(dataset, config, warn),
        infinite=config.infinite,
        classes=classes,
        outliers=config.outliers,
        bounds=screen.bounds(),
        weighting=weighting,
    )
    if frequencies is not None and weighting is not None:  # the weighted class frequencies
        return spec, np.maximum(class_totals / class_totals.sum(), 1e-12)
    if frequencies is not None:
        return spec, frequencies / frequencies.sum()
    return spec, float(stats.mean[len(names)])


def _without_weight(
    names: tuple[str, ...], dataset: Dataset, config: FitConfig, first: str
) -> tuple[str, ...]:
    """The features without the ``--weight`` column (never a feature), which must be a
    numeric column of every file."""
    weight = config.weight
    if weight is None:
        return names
    schema = dataset.schema
    if weight not in schema.names:
        raise UsageError(
            f"{first}: no weight column {weight!r}; columns are: {', '.join(schema.names)}"
        )
    check_in_every_file(schema, [weight])
    if not is_numeric(schema.field(weight).type):
        raise DataError(
            f"the weight column must be numeric, but its type is {schema.field(weight).type}",
            path=first,
            column=weight,
        )
    names = tuple(n for n in names if n != weight)
    if not names and not config.categorical and not config.text:
        raise DataError("no numeric column besides the target and the weight", path=first)
    return names


def _weighted_stats(
    dataset: Dataset,
    decoder: Decoder,
    config: FitConfig,
    loss: Loss,
    classes,
    progress: Progress | None = None,
) -> tuple[Stats, Weighting, np.ndarray | None]:
    """The statistics pass weighted by the row weights and class weights, the
    :class:`Weighting` it settles (class weights, mean weight) and, for a classification
    loss, each class's total effective weight. Each class's rows are summed apart, so that
    ``balanced`` weights found at the end of the pass weight them (see README, Design)."""
    weighted = config.weight is not None
    rows, seed = config.stats_rows, config.seed
    if loss.task not in CLASS_WEIGHT_TASKS:
        stats = compute_stats(
            dataset, decoder, max_rows=rows, seed=seed, weighted=weighted, progress=progress
        )
        return stats, Weighting(config.weight, None, _mean_weight(stats, dataset)), None
    k = 2 if classes is None else len(classes)
    parts = compute_class_stats(
        dataset,
        decoder,
        max_rows=rows,
        seed=seed,
        weighted=weighted,
        n_classes=k,
        progress=progress,
    )
    totals = np.array([p.weight_total for p in parts])
    class_weights = None
    if config.class_weight is not None:
        class_weights = resolve_class_weights(config.class_weight, classes, totals)
        parts = [p.scaled(float(c)) for p, c in zip(parts, class_weights, strict=True)]
        totals = totals * class_weights
    stats = functools.reduce(Stats.merge, parts)
    weighting = Weighting(config.weight, class_weights, _mean_weight(stats, dataset))
    return stats, weighting, totals


def _mean_weight(stats: Stats, dataset: Dataset) -> float:
    """The mean effective weight of the statistics pass's rows (it normalises the weights)."""
    mean = stats.weight_total / max(stats.rows, 1)
    if not mean > 0:
        raise DataError(
            "every row the statistics pass read weighs 0 (--weight, --class-weight): "
            "nothing to train on",
            path=dataset.files[0].path if len(dataset.files) == 1 else None,
        )
    return mean


def _screen(names: tuple[str, ...], config: FitConfig, loss: Loss) -> Screen:
    """The outlier screen of the statistics pass: every numeric feature, and the target of a
    regression (a classification target is checked by the loss)."""
    checked = np.ones(len(names) + 1, dtype=bool)
    checked[-1] = bool(loss.scale_target) and loss.task != "multiclass"
    return Screen((*names, config.target), checked, config.outliers)


def _check_stats(stats: Stats, screen: Screen, dataset: Dataset, warn) -> None:
    """Refuse statistics that overflowed float64, and report the outliers the screen saw."""
    bad = stats.unusable_columns()
    if len(bad):
        raise DataError(
            "the column's values spread too widely to compute its mean and variance in "
            "float64 (beyond about 1e154); rescale the column or leave it out",
            path=dataset.files[0].path if len(dataset.files) == 1 else None,
            column=screen.columns[int(bad[0])],
        )
    largest = np.zeros(len(screen.columns))
    for j, seen in screen.seen.items():
        largest[j] = seen.largest
    for message in screen.warnings(stats.largest_share(largest)):
        warn(message)


def _categoricals(dataset: Dataset, config: FitConfig, interactions=()):
    """The --categorical columns' encodings, then the --interactions' crosses and slopes,
    from scans in the statistics pass's order."""
    order = stats_order(dataset, max_rows=config.stats_rows, seed=config.seed)
    how = {
        "max_rows": config.stats_rows,
        "max_categories": config.max_categories,
        "hash_bits": config.hash_bits,
        "select": holdout.selector(config, keep=False, dataset=dataset),
    }
    plain = scan_categories(dataset, config.categorical or (), order, **how)
    return plain + encodings(dataset, interactions, order, **how)


def _interactions(dataset: Dataset, config: FitConfig):
    """The --interactions terms, checked against the data's columns."""
    if not config.interactions:
        return ()
    terms, _ = split_terms(  # (text x categorical terms: see _text_columns)
        parse_terms(config.interactions), config.text or (), config.categorical or ()
    )
    return resolve(
        terms,
        dataset.schema,
        target=config.target,
        categorical=config.categorical or (),
        weight=config.weight,
        path=dataset.files[0].path,
    )


def _texts(dataset: Dataset, config: FitConfig, warn) -> tuple[TextColumn, ...]:
    """The --text columns' encodings, with what a scan in the statistics pass's order saw
    (the tokens naming buckets; rows with more distinct tokens than --text-slots: warned)."""
    texts = scan_texts(
        dataset,
        _text_columns(config),
        stats_order(dataset, max_rows=config.stats_rows, seed=config.seed),
        max_rows=config.stats_rows,
        select=holdout.selector(config, keep=False, dataset=dataset),
    )
    for t in texts:
        if t.truncated:
            warn(
                f"text column {t.name!r}: {t.truncated} of {t.rows} rows of the statistics "
                f"pass have more than {t.slots} distinct tokens; each keeps its first "
                f"{t.slots} (raise --text-slots to keep more)"
            )
    return texts


def _warm_state(dataset: Dataset, config: FitConfig, model: Model, path: str) -> TrainState:
    categorical = config.categorical or ()
    interactions = _interactions(dataset, config)
    derived = () if model.spec.deriver is None else model.spec.deriver.outputs
    names = select_features(
        dataset.schema,
        config.target,
        config.features or [n for n in model.features if n not in derived],
        path=dataset.files[0].path,
        categorical=(*categorical, *(config.text or ())),
    )
    names = extend_names(names, interactions)
    _check_warm_texts(config, model, path)
    if interactions != model.spec.interactions:
        raise UsageError(
            f"--init {path}: the model's interactions are "
            f"[{', '.join(i.name for i in model.spec.interactions)}], this run has "
            f"[{', '.join(i.name for i in interactions)}]"
        )
    weighting = (config.weight, config.class_weight)
    if weighting != (model.config.get("weight"), model.config.get("class_weight")):
        raise UsageError(
            f"--init {path}: the model was trained with --weight "
            f"{model.config.get('weight')} and --class-weight "
            f"{model.config.get('class_weight')}; this run has {weighting[0]} and {weighting[1]}"
        )
    model_categorical = tuple(c.name for c in model.spec.categoricals if c.parts is None)
    if tuple(categorical) != model_categorical:
        raise UsageError(
            f"--init {path}: the model's categorical features are "
            f"[{', '.join(model_categorical)}], this run has [{', '.join(categorical)}]"
        )
    if tuple(names) != model.features or config.target != model.target:
        only_model = sorted(set(model.features) - set(names))
        only_data = sorted(set(names) - set(model.features))
        raise UsageError(
            f"--init {path}: its features do not match: model has "
            f"[{', '.join(model.features)}] -> {model.target}, this run has "
            f"[{', '.join(names)}] -> {config.target}"
            + (f"; only in the model: {', '.join(only_model)}" if only_model else "")
            + (f"; only in this run: {', '.join(only_data)}" if only_data else "")
        )
    if model.loss != config.loss or _loss_params(model.config) != _loss_params(config.to_dict()):
        raise UsageError(
            f"--init {path}: the model was trained with --loss {model.loss}, "
            f"this run uses --loss {config.loss}"
        )
    return _state(
        model.params(), model.spec, dataset, config, step=int(model.summary.get("steps", 0))
    )


def _text_columns(config: FitConfig) -> list[TextColumn]:
    """The --text columns' encodings, then the text x categorical --interactions terms'."""
    norm = None if config.text_norm == "none" else config.text_norm
    how = (config.text_bits, config.ngrams, config.text_binary, norm, config.text_slots)
    terms = parse_terms(config.interactions or ())
    _, crosses = split_terms(terms, config.text or (), config.categorical or ())
    return [TextColumn(name, *how) for name in config.text or ()] + [
        TextColumn(name, *how, source=source, by=by) for name, source, by in crosses
    ]


def _check_warm_texts(config: FitConfig, model: Model, path: str) -> None:
    """--init: the run's --text columns (and crosses) and their encoding are the model's."""

    def key(t: TextColumn) -> tuple:
        return (t.name, t.bits, t.ngrams, t.binary, t.norm, t.slots)

    now = [key(t) for t in _text_columns(config)]
    had = [key(t) for t in model.spec.texts]
    if now != had:
        what = "(column, bits, ngrams, binary, norm, slots)"
        raise UsageError(
            f"--init {path}: the model's text columns {what} are {had or 'none'}, this run "
            f"has {now or 'none'}"
        )


def _loss_params(settings: dict[str, Any]) -> tuple:
    return settings.get("huber_delta"), settings.get("quantile")


def check_compatible(state: TrainState, config: FitConfig, dataset: Dataset, path: str) -> None:
    """Refuse a checkpoint whose settings or input files differ, saying what changed."""
    check_settings(state, config, path)
    _check_inputs(state.data, dataset.fingerprint(), path)


def check_settings(state: TrainState, config: FitConfig, path: str) -> None:
    """Refuse a checkpoint whose settings (but ``epochs`` and ``tol``) differ from
    ``config``'s, saying which."""
    saved = FitConfig.from_dict(state.config).fingerprint()
    now = config.fingerprint()
    changed = [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in now if saved.get(k) != now[k]]
    if changed:
        raise CheckpointError(
            f"{path}: the checkpoint was written with other settings ({'; '.join(changed)}); "
            "use the same settings, or another --checkpoint-dir to start afresh"
        )


def _check_inputs(saved: dict[str, Any], now: dict[str, Any], path: str) -> None:
    """Refuse a checkpoint whose input files differ from ``now``'s, naming each file and what
    changed (size, modification time, content, layout, CSV options). A checkpoint whose
    fingerprint is of another version (version 1 held no content digest) cannot say whether
    the files changed, and is refused too."""
    if saved.get("version") != now["version"]:
        held = (
            "paths, sizes and row-group layouts only (an older streamgd)"
            if saved.get("version") is None
            else f"a fingerprint of version {saved['version']} (another streamgd)"
        )
        raise CheckpointError(
            f"{path}: the checkpoint identifies its input files by {held}, so it cannot "
            "tell whether their content changed since; rerun without --resume to start "
            "afresh (its first checkpoint replaces this one), or finish the run with the "
            "streamgd that wrote it"
        )
    old = {f["path"]: f for f in saved["files"]}
    new = {f["path"]: f for f in now["files"]}
    if old != new:
        diff = [f"removed {p}" for p in old if p not in new]
        diff += [f"added {p}" for p in new if p not in old]
        diff += [_file_change(p, old[p], new[p]) for p in new if p in old and old[p] != new[p]]
        raise CheckpointError(
            f"{path}: the input files differ from the checkpoint's ({'; '.join(diff[:5])}"
            f"{' ...' if len(diff) > 5 else ''}); resume needs the same files: rerun without "
            "--resume (or with another --checkpoint-dir) to train on them afresh"
        )


def _file_change(name: str, old: dict[str, Any], new: dict[str, Any]) -> str:
    """``"changed NAME (what)"``; for a file only touched, also how to restore its time.

    >>> old = {"size": 5, "mtime_ns": 1_700_000_000_250_000_000, "digest": "d"}
    >>> _file_change("a.csv", old, {**old, "digest": "e"})
    'changed a.csv (content changed)'
    >>> _file_change("a.csv", old, {**old, "mtime_ns": 1_800_000_000_000_000_000}).split("; ")
    ['changed a.csv (modification time changed (content digest the same)', \
'if its data did not change, `touch -d @1700000000.250000000 a.csv` restores the time)']
    """
    stamp = differences(old, new)
    what = [stamp] if stamp else []
    if old.get("row_groups") != new.get("row_groups"):
        what.append("row-group layout changed")
    if old.get("csv") != new.get("csv"):
        what.append("CSV options changed")
    mtime = old.get("mtime_ns")
    if what == [stamp] and stamp.endswith("(content digest the same)") and mtime:
        touch = f"touch -d @{mtime // 10**9}.{mtime % 10**9:09d} {shlex.quote(name)}"
        what.append(f"if its data did not change, `{touch}` restores the time")
    return f"changed {name} ({'; '.join(what) or 'changed'})"
