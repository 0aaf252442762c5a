"""Text summaries the commands print when ``--json`` is not given."""

from __future__ import annotations

from typing import Any

__all__ = [
    "fit_done_line",
    "memory_text",
    "coefficients_text",
    "NOT_SAVED",
    "metrics_text",
    "plot_lines",
    "shuffle_line",
]

# said when ``fit`` starts without --output (and again at its end)
NOT_SAVED = "no --output: the model will not be saved (its coefficients are printed at the end)"


def fit_done_line(summary: dict[str, Any], output: str | None) -> str:
    """The line ``fit`` ends with: epochs, steps, final loss and where the model went."""
    where = f"model written to {output}" if output else "model not saved (no --output)"
    return (
        f"done: {summary['epochs']} epoch(s), {summary['steps']} steps, "
        f"final loss {summary['final_loss']:.6g}; {where}{memory_text(summary.get('memory'))}"
    )


def memory_text(memory: dict[str, Any] | None) -> str:
    """``; peak RSS 150MB (estimate 170MB, limit 200MB)``, as far as known.

    >>> memory_text({"peak_mb": 150.2, "estimate_mb": 170.0, "limit": "200MB"})
    '; peak RSS 150MB (estimate 170MB, limit 200MB)'
    """
    if not memory or memory.get("peak_mb") is None:
        return ""
    notes = []
    if memory.get("estimate_mb") is not None:
        notes.append(f"estimate {memory['estimate_mb']:.0f}MB")
    if memory.get("limit"):
        notes.append(f"limit {memory['limit']}")
    return f"; peak RSS {memory['peak_mb']:.0f}MB" + (f" ({', '.join(notes)})" if notes else "")


def coefficients_text(model: Any) -> str:
    """A trained model's coefficients in original units, as ``streamgd inspect`` lists them
    (``fit`` prints them when the model is not saved)."""
    from ..inspection import coefficient_lines

    info = model.inspect()
    return "\n".join(
        [f"model: {info['loss']} loss, target {info['target']}", *coefficient_lines(info)]
    )


def metrics_text(result: dict[str, Any]) -> str:
    """``evaluate``'s metrics, one ``name value`` line each (empty counts left out)."""
    lines = []
    for key, value in result.items():
        if isinstance(value, float):
            lines.append(f"{key:<22} {value:.6g}")
        elif value or key == "rows":
            lines.append(f"{key:<22} {value}")
    return "\n".join(lines)


def plot_lines(info: dict[str, Any], output: str) -> list[str]:
    """What ``plot`` drew, and its notes."""
    return [f"{', '.join(info['panels'])} written to {output}"] + [
        f"note: {note}" for note in info.get("notes", [])
    ]


def shuffle_line(summary: dict[str, Any], out_dir: str) -> str:
    return (
        f"{summary['rows']} rows shuffled into {len(summary['files'])} file(s) in "
        f"{out_dir} ({summary['buckets']} buckets)"
    )
