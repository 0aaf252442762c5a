"""Scoring every model of a grid in one pass over the validation rows.

The models share their features and statistics (one :class:`~streamgd.features.FeatureSpec`),
so the rows are decoded once; each model then does exactly the arithmetic of
:func:`streamgd.scoring.evaluate_model` on them (same predictions, sums and accumulator, in
the same order), so its scores equal those of the model scored alone, to the bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..batches import Prefetcher
from ..config import csv_options_from
from ..decode import Decoder
from ..features import count_vector, describe_counts
from ..metrics import Accumulator
from ..model import Model
from ..scoring import check_scored_input
from ..sources import open_source

__all__ = ["evaluate_models"]


def evaluate_models(
    models: Sequence[Model], paths: Any, *, fmt: str = "auto", select=None
) -> list[dict[str, Any]]:
    """The scores :func:`streamgd.scoring.evaluate_model` gives each of ``models`` (which
    share one feature spec) on ``paths``, from one decode of the rows."""
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
        Decoder.for_scoring(lead, select=select, weighted=weight is not None),
    )
    try:
        for chunk in prefetch:
            counts += chunk.counts
            raw = chunk.rows
            if len(raw) == 0:
                continue
            y = raw[:, n_feat]
            w = None if weight is None else raw[:, -1]
            codes, text = lead.spec.codes(raw), lead.spec.text(raw)
            for i, (model, loss, acc) in enumerate(zip(models, losses, accs, strict=True)):
                p = model.decision(raw[:, :n_feat], codes, text)
                values = loss.value(p, y)
                sums[i] += float(values.sum() if w is None else w @ values)
                acc.update(y, loss.link(p), w)
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
