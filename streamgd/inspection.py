"""What ``streamgd inspect`` shows: a model's coefficients and training summary, or a
checkpoint's position in training."""

from __future__ import annotations

import os
from typing import Any

from .archive import read_archive
from .errors import CheckpointError
from .model import MODEL_VERSION, load
from .training.checkpoint import CHECKPOINT_VERSION, CheckpointManager, TrainState
from .training.loop import model_from_state

__all__ = ["describe", "render_text", "coefficient_lines"]


def describe(path: str) -> dict[str, Any]:
    """A JSON-ready description of a model file, a checkpoint file or a checkpoint directory."""
    if os.path.isdir(path):
        found = CheckpointManager(path).latest()
        if found is None:
            raise CheckpointError(f"{path}: no checkpoint in this directory")
        path = found[0]
    meta, _ = read_archive(
        path, kind=("model", "checkpoint"), max_version=max(MODEL_VERSION, CHECKPOINT_VERSION)
    )
    if meta["kind"] == "model":
        return load(path).inspect()
    from .config import FitConfig
    from .training.checkpoint import load_checkpoint

    state: TrainState = load_checkpoint(path)
    model = model_from_state(state, FitConfig.from_dict(state.config)).inspect()
    return {
        "kind": "checkpoint",
        "path": path,
        "step": state.step,
        "epoch": state.epoch + 1,  # the epoch in progress (1-based)
        "epochs_completed": len(state.history),
        "finished": state.finished,
        "cursor": {
            "epoch": state.epoch + 1,
            "position": state.stream.cursor.position,
            "offset": state.stream.cursor.offset,
        },
        "rows_into_epoch": state.totals.rows,
        "loss_so_far": state.running_loss(),
        "buffer_rows": state.buffered_rows,
        "features": model["features"],
        "categorical": model["categorical"],
        **({"interactions": model["interactions"]} if "interactions" in model else {}),
        "classes": model["classes"],
        "coefficients": model["coefficients"],
        "intercept": model["intercept"],
        "history": state.history,
        "increments": state.continual.runs,  # --continual: one record per run
        "settings": state.config,
        "files": len(state.data.get("files", [])),
    }


def _num(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def render_text(info: dict[str, Any]) -> str:
    lines = _heading(info)
    lines += coefficient_lines(info)
    summary = dict(info.get("summary") or {})
    board = summary.pop("leaderboard", None)  # a grid's selected model (streamgd.search)
    lines += _summary(summary)
    lines += _history(info.get("history"))
    if board:
        from .search.leaderboard import table

        lines += [
            "",
            f"leaderboard ({len(board)} models, by validation {summary.get('select_metric')}):",
        ]
        lines += ["  " + line for line in table(board, limit=20).splitlines()]
    lines += _increments(info.get("increments") or summary.get("increments"))
    lines.append("")
    settings = info.get("settings", {})
    lines.append("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items() if v is not None))
    return "\n".join(lines)


def _heading(info: dict[str, Any]) -> list[str]:
    """What the file is: a checkpoint and its position in training, or a model."""
    if info["kind"] != "checkpoint":
        return [f"model: {info['loss']} loss, target {info['target']}"]
    lines = [
        f"checkpoint {info['path']}",
        f"  step {info['step']}, epoch {info['epoch']}"
        f"{' (finished)' if info['finished'] else ''}, "
        f"{info['rows_into_epoch']} rows into the epoch "
        f"(unit {info['cursor']['position']}, offset {info['cursor']['offset']}), "
        f"{info['buffer_rows']} rows in the shuffle buffer",
    ]
    if info["loss_so_far"] is not None:
        lines.append(f"  running loss this epoch: {_num(info['loss_so_far'])}")
    return lines


def coefficient_lines(info: dict[str, Any]) -> list[str]:
    """The coefficient table (one column per class when multi-class), then how each categorical
    feature is encoded."""
    coef = info["coefficients"]
    # numeric features, then categorical codes as name=value (or the largest hashed buckets)
    names = list(next(iter(coef.values())) if info.get("classes") else coef)
    width = max([len(n) for n in names] + [9])
    lines = [""]
    if info.get("classes"):
        lines += _class_table(info, names, width)
    else:
        lines.append(f"  {'feature':<{width}}  coefficient (original units)")
        for name in names:
            lines.append(f"  {name:<{width}}  {_num(coef[name])}")
        lines.append(f"  {'intercept':<{width}}  {_num(info['intercept'])}")
    for name, enc in (info.get("categorical") or {}).items():
        if enc["encoding"] == "hash":
            what = f"hashed into {enc['buckets']} buckets; the largest weights are listed"
        else:
            what = f"one-hot, {enc['categories']} codes, the last one {enc['other']}"
        lines.append(f"  categorical {name}: {what}")
    for name, kind in (info.get("interactions") or {}).items():
        lines.append(f"  interaction {name}: {INTERACTION_KINDS[kind]}")
    return lines


# how `inspect` describes each kind of --interactions term
INTERACTION_KINDS = {
    "product": "the product of the numeric columns, a feature standardised like the others",
    "cross": "one weight per combination of values (a categorical column of its own)",
    "slope": "one slope per category, per unit of the centred numeric feature (name|value)",
}


def _class_table(info: dict[str, Any], names: list[str], width: int) -> list[str]:
    """Multi-class coefficients: one column per class."""
    classes = [str(c) for c in info["classes"]]
    cw = max([len(c) for c in classes] + [11])

    def row(label: str, values: list[str]) -> str:
        return f"  {label:<{width}}  " + "  ".join(f"{v:>{cw}}" for v in values)

    lines = [row("feature", classes)]
    for name in names:
        lines.append(row(name, [_num(info["coefficients"][c][name]) for c in classes]))
    lines.append(row("intercept", [_num(info["intercept"][c]) for c in classes]))
    lines.append("  (coefficients in original units, per class)")
    return lines


def _summary(summary: dict[str, Any] | None) -> list[str]:
    """The training summary on one line, leaving out empty values (but never epochs, steps)."""
    if not summary:
        return []
    return [
        "",
        "training: "
        + ", ".join(
            f"{k.replace('_', ' ')} {_num(v)}"
            for k, v in summary.items()
            if (v not in (None, {}, 0) or k in ("epochs", "steps")) and k != "increments"
        ),
    ]


def _history(history: list[dict[str, Any]] | None) -> list[str]:
    """One row per completed epoch; a validation column only when some epoch has one."""
    if not history:
        return []
    val = any("val_loss" in h for h in history)
    lines = ["", "  epoch  loss          rows      update norm" + ("  val loss" if val else "")]
    for h in history:
        row = f"  {h['epoch']:>5}  {h['loss']:<12.6g}  {h['rows']:<8}  {h['update_norm']:<11.4g}"
        if val and h.get("val_loss") is not None:
            row += f"  {h['val_loss']:.6g}"
        lines.append(row.rstrip())
    return lines


def _increments(runs: list[dict[str, Any]] | None) -> list[str]:
    """--continual: one row per increment, with the model's score on its files before it
    trained on them (test-then-train: a jump there is drift or forgetting). The loss before
    and the training loss are in the same units (the training loss is the pass's mean)."""
    if not runs:
        return []
    scores = [r.get("pre_score") or {} for r in runs]
    metric = next((k for k in ("mse", "logloss") if any(k in s for s in scores)), "rows")
    lines = [
        "",
        f"  increment  files  rows      {metric + ' before':<14}  loss before   training loss",
    ]
    for r, score in zip(runs, scores, strict=True):
        cells = [_num(score.get(metric, "-")), _num(score.get("loss", "-"))]
        lines.append(
            f"  {r['increment']:>9}  {len(r['files']):>5}  {r['rows']:<8}  {cells[0]:<14}  "
            f"{cells[1]:<12}  {_num(r.get('train_loss'))}"
        )
    return lines
