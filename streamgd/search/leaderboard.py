"""The leaderboard of a grid: each model's settings, validation scores, epochs and stop reason,
ranked by one validation metric in its right direction; as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

from ..archive import atomic_path
from ..errors import UsageError

__all__ = ["HIGHER_IS_BETTER", "score_entry", "rank", "table", "brief", "write_leaderboard"]

# Metrics where a larger value is better; every other metric (loss, mse, mae, logloss...) is
# better smaller.
HIGHER_IS_BETTER = frozenset({"accuracy", "precision", "recall", "f1", "auc", "r2"})


def score_entry(history: Sequence[dict[str, Any]], stop_reason: str | None) -> dict[str, Any]:
    """The history entry whose weights the model ends with: the best epoch's when early
    stopping restored them, else the last epoch's (empty when no epoch ended)."""
    if not history:
        return {}
    if stop_reason == "patience":
        best = history[-1].get("best_epoch")
        if best:
            return history[best - 1]
    return history[-1]


def rank(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """``rows`` (each with ``val_<metric>``) sorted best first, with a ``rank``; rows
    without a finite score (a diverged model) last, in their order."""
    key = f"val_{metric}"
    if rows and not any(key in r for r in rows):
        known = {k[4:] for r in rows for k in r if k.startswith("val_") and k != "val_rows"}
        raise UsageError(
            f"--select-metric {metric}: no model has that validation metric (known: "
            f"{', '.join(sorted(known)) or 'none'})"
        )
    sign = -1.0 if metric in HIGHER_IS_BETTER else 1.0

    def order(item: tuple[int, dict[str, Any]]) -> tuple[int, float, int]:
        i, row = item
        value = row.get(key)
        if value is None or not math.isfinite(value):
            return (1, 0.0, i)
        return (0, sign * value, i)

    ranked = [row for _, row in sorted(enumerate(rows), key=order)]
    return [{"rank": i + 1, **row} for i, row in enumerate(ranked)]


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Rank and model first, then the settings, the validation metrics, epochs and stop
    reason (a model file's JSON keeps its keys sorted: the order is restored here)."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    last = ("epochs", "stop_reason")

    def place(name: str) -> int:
        if name in ("rank", "model"):
            return ("rank", "model").index(name)
        if name in last:
            return 4 + last.index(name)
        return 3 if name.startswith("val_") else 2

    return sorted(seen, key=place)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def table(rows: Sequence[dict[str, Any]], *, limit: int | None = None) -> str:
    """The leaderboard as an aligned text table (the first ``limit`` rows)."""
    shown = list(rows if limit is None else rows[:limit])
    columns = _columns(shown)
    cells = [columns] + [[_cell(r.get(c)) for c in columns] for r in shown]
    widths = [max(len(line[j]) for line in cells) for j in range(len(columns))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)) for line in cells]
    if limit is not None and len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more")
    return "\n".join(lines)


def brief(rows: Sequence[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """The rows as the command line prints them: under --cv (rows with ``_std`` spreads) only
    the selecting metric's and the loss's means and spreads; the files keep every column."""
    if not any(k.endswith("_std") for r in rows for k in r):
        return list(rows)
    keep = {f"val_{m}{s}" for m in (metric, "loss") for s in ("", "_std")}
    return [{k: v for k, v in r.items() if not k.startswith("val_") or k in keep} for r in rows]


def write_leaderboard(rows: Sequence[dict[str, Any]], path: str) -> None:
    """Write the leaderboard to ``path``: JSON when it ends with ``.json``, else CSV."""
    if path.lower().endswith(".json"):
        text = json.dumps(list(rows), indent=1, default=str) + "\n"
    else:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=_columns(rows), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = out.getvalue()
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)
