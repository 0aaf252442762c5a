"""The training history beside a model file: ``<stem>.history.csv`` and ``<stem>.history.json``,
one row per epoch, written atomically (see :meth:`streamgd.model.Model.save_history`)."""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

from .archive import atomic_write

__all__ = ["write_history"]


def write_history(
    history: list[dict[str, Any]],
    model_path: str,
    *,
    option: str | None = None,
    only_changed: bool = False,
) -> tuple[str, str]:
    """Write ``history`` beside ``model_path``; returns the CSV's and the JSON's paths. With
    ``only_changed``, a file that already holds exactly this history is left as it is."""
    stem = os.path.splitext(model_path)[0]
    rows = [
        {k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in h.items()} for h in history
    ]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path, json_path = f"{stem}.history.csv", f"{stem}.history.json"
    blobs = {
        csv_path: text.getvalue().encode(),
        json_path: json.dumps(history, indent=2, allow_nan=True).encode(),
    }
    for path, blob in blobs.items():
        if only_changed and _holds(path, blob):
            continue
        atomic_write(
            path, lambda fh, b=blob: fh.write(b), what="the training history", option=option
        )
    return csv_path, json_path


def _holds(path: str, blob: bytes) -> bool:
    """Whether the history file ``path`` holds what ``blob`` does, whatever the order of its
    columns (a checkpoint keeps an epoch's entries with their keys sorted); False when it
    cannot be read."""
    try:
        with open(path, "rb") as fh:
            found = fh.read()
        if path.endswith(".json"):
            return json.loads(found) == json.loads(blob)
        rows = [list(csv.DictReader(io.StringIO(b.decode()))) for b in (found, blob)]
        return rows[0] == rows[1]
    except (OSError, ValueError):
        return False
