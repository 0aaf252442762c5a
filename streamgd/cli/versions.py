"""``fit --continual --keep-models N``: the model of each increment kept beside ``--output``
as ``STEM.inc-NNNNNN.EXT`` (the increment's number), the last N of them."""

from __future__ import annotations

import contextlib
import os
import re

__all__ = ["keep_version", "version_path"]


def version_path(output: str, increment: int) -> str:
    """Where the model of ``increment`` is kept.

    >>> version_path("models/m.npz", 3)
    'models/m.inc-000003.npz'
    """
    stem, ext = os.path.splitext(output)
    return f"{stem}.inc-{increment:06d}{ext}"


def keep_version(output: str, increment: int, keep: int) -> str:
    """Copy the model just written at ``output`` to its increment's name (atomically), then
    remove the kept models of increments older than the last ``keep``; returns the copy."""
    from ..archive import atomic_write

    with open(output, "rb") as fh:
        blob = fh.read()
    path = version_path(output, increment)
    atomic_write(
        path, lambda out: out.write(blob), what="the increment's model", option="--keep-models"
    )
    directory, name = os.path.split(os.path.abspath(output))
    stem, ext = os.path.splitext(name)
    pattern = re.compile(re.escape(stem) + r"\.inc-(\d{6})" + re.escape(ext) + "$")
    kept = sorted((int(m.group(1)), n) for n in os.listdir(directory) if (m := pattern.match(n)))
    for _, old in kept[:-keep]:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, old))
    return path
