"""Scoring every model of a grid in one pass over the validation rows.

The models share their features and statistics (one :class:`~streamgd.features.FeatureSpec`),
so the rows are decoded once; each model then does exactly the arithmetic of
:func:`streamgd.scoring.evaluate_model` on them (same predictions, sums and accumulator, in
the same order), so its scores equal those of the model scored alone, to the bit.

Under ``--cv`` each fold's model is scored on its own fold's rows: the rows are decoded once
with their fold (see :mod:`streamgd.folds`) and each model takes the rows of its fold of each
chunk, as the row selection of its run alone (``cv_fold``) keeps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..config import csv_options_from
from ..decode import Decoder
from ..features import count_vector, describe_counts
from ..metrics import Accumulator
from ..model import Model
from ..prefetch import Prefetcher
from ..scoring import check_scored_input
from ..sources import open_source

__all__ = ["evaluate_models"]


def evaluate_models(
    models: Sequence[Model],
    paths: Any,
    *,
    fmt: str = "auto",
    select=None,
    folds: Sequence[int] | None = None,
    tag=None,
) -> list[dict[str, Any]]:
    """The scores :func:`streamgd.scoring.evaluate_model` gives each of ``models`` (which
    share one feature spec) on ``paths``, from one decode of the rows. With ``folds`` (one
    per model) and ``tag`` (:func:`streamgd.folds.fold_tag`): model ``i`` on the rows of fold
    ``folds[i]`` only."""
    lead = models[0]
    dataset = open_source(paths, fmt, csv=csv_options_from(lead.config))
    first = dataset.files[0].path
    weight = check_scored_input(dataset.schema, lead, first)
    losses = [m.make_loss() for m in models]
    accs = [Accumulator(loss.task) for loss in losses]
    sums = [0.0] * len(models)
    n_feat = len(lead.features)
    counts = count_vector(n_feat)
    prefetch = Prefetcher(
        dataset,
        range(len(dataset.units)),
        Decoder.for_scoring(lead, select=select, weighted=weight is not None, tag=tag),
    )
    own = [None] * len(models) if folds is None else list(folds)
    groups: dict[int | None, list[int]] = {}  # the models of each fold, in model order
    for i, f in enumerate(own):
        groups.setdefault(f, []).append(i)
    try:
        for chunk in prefetch:
            counts += chunk.counts
            parts = _parts(chunk.rows, list(groups))
            for f, members in groups.items():
                raw = parts[f]
                if len(raw) == 0:
                    continue
                y = raw[:, n_feat]
                w = None if weight is None else raw[:, -1]
                codes, text = lead.spec.codes(raw), lead.spec.text(raw)
                # the standardised features once for the fold's models (they share the spec)
                z = lead.spec.transform(raw) if len(members) > 1 else None
                for i in members:
                    p = models[i].decision(raw[:, :n_feat], codes, text, z=z)
                    values = losses[i].value(p, y)
                    sums[i] += float(values.sum() if w is None else w @ values)
                    accs[i].update(y, losses[i].link(p), w)
            prefetch.release(chunk)
    finally:
        prefetch.close()
    described = describe_counts(counts, lead.features, lead.spec.missing)
    results = []
    for acc, loss_sum in zip(accs, sums, strict=True):
        total = max(acc.n, 1) if acc.total is None else (acc.total or 1.0)
        result: dict[str, Any] = {"rows": acc.n, **acc.result(), "loss": loss_sum / total}
        if weight is not None:
            result["weighted_by"] = weight
            result["total_weight"] = float(acc.total or 0.0)
        result |= described
        result["files"] = len(dataset.files)
        results.append(result)
    return results


def _parts(rows: np.ndarray, folds: list) -> dict:
    """Each fold's rows of a chunk (``[None]``: every row of an untagged chunk), as row
    preparation selects them, without the fold column: views of one copy of the chunk with
    its rows stably sorted by fold, so each fold's rows are a run of it, in their order: one
    gather for all folds, where a gather per fold read the whole column-major chunk once per
    fold (131,072 x 33, 5 folds: 6.3 ms against 8.5 ms a chunk)."""
    if folds == [None]:
        return {None: rows}
    # small integer codes: numpy's stable sort is then a radix sort (8x faster than intp's)
    tags = rows[:, -1].astype(np.int8 if max(folds) < 128 else np.intp)
    order = np.argsort(tags, kind="stable")
    sizes = np.bincount(tags, minlength=max(folds) + 1)
    ends = np.cumsum(sizes)
    grouped = rows[:, :-1].T.take(order, axis=1, mode="clip").T  # column-major, by fold
    return {f: grouped[ends[f] - sizes[f] : ends[f]] for f in folds}
