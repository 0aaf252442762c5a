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

__all__ = ["describe", "render_text"]


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
        "classes": model["classes"],
        "coefficients": model["coefficients"],
        "intercept": model["intercept"],
        "history": state.history,
        "settings": state.config,
        "files": len(state.data.get("files", [])),
    }


def _num(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def render_text(info: dict[str, Any]) -> str:
    lines = []
    if info["kind"] == "checkpoint":
        lines.append(f"checkpoint {info['path']}")
        lines.append(
            f"  step {info['step']}, epoch {info['epoch']}"
            f"{' (finished)' if info['finished'] else ''}, "
            f"{info['rows_into_epoch']} rows into the epoch "
            f"(unit {info['cursor']['position']}, offset {info['cursor']['offset']}), "
            f"{info['buffer_rows']} rows in the shuffle buffer"
        )
        if info["loss_so_far"] is not None:
            lines.append(f"  running loss this epoch: {_num(info['loss_so_far'])}")
    else:
        lines.append(f"model: {info['loss']} loss, target {info['target']}")
    coef = info["coefficients"]
    # numeric features, then categorical codes as name=value (or the largest hashed buckets)
    names = list(next(iter(coef.values())) if info.get("classes") else coef)
    width = max([len(n) for n in names] + [9])
    lines.append("")
    if info.get("classes"):  # multi-class: one column of coefficients per class
        classes = [str(c) for c in info["classes"]]
        cw = max([len(c) for c in classes] + [11])
        lines.append(f"  {'feature':<{width}}  " + "  ".join(f"{c:>{cw}}" for c in classes))
        for name in names:
            values = [_num(info["coefficients"][c][name]) for c in classes]
            lines.append(f"  {name:<{width}}  " + "  ".join(f"{v:>{cw}}" for v in values))
        values = [_num(info["intercept"][c]) for c in classes]
        lines.append(f"  {'intercept':<{width}}  " + "  ".join(f"{v:>{cw}}" for v in values))
        lines.append("  (coefficients in original units, per class)")
    else:
        lines.append(f"  {'feature':<{width}}  coefficient (original units)")
        for name in names:
            lines.append(f"  {name:<{width}}  {_num(info['coefficients'][name])}")
        lines.append(f"  {'intercept':<{width}}  {_num(info['intercept'])}")
    for name, enc in (info.get("categorical") or {}).items():
        if enc["encoding"] == "hash":
            what = f"hashed into {enc['buckets']} buckets; the largest weights are listed"
        else:
            what = f"one-hot, {enc['categories']} codes, the last one {enc['other']}"
        lines.append(f"  categorical {name}: {what}")
    summary = info.get("summary")
    if summary:
        lines.append("")
        lines.append(
            "training: "
            + ", ".join(
                f"{k.replace('_', ' ')} {_num(v)}"
                for k, v in summary.items()
                if v not in (None, {}, 0) or k in ("epochs", "steps")
            )
        )
    if info.get("history"):
        lines.append("")
        val = any("val_loss" in h for h in info["history"])
        lines.append("  epoch  loss          rows      update norm" + ("  val loss" if val else ""))
        for h in info["history"]:
            row = (
                f"  {h['epoch']:>5}  {h['loss']:<12.6g}  {h['rows']:<8}  {h['update_norm']:<11.4g}"
            )
            if val and h.get("val_loss") is not None:
                row += f"  {h['val_loss']:.6g}"
            lines.append(row.rstrip())
    lines.append("")
    settings = info.get("settings", {})
    lines.append("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items() if v is not None))
    return "\n".join(lines)
