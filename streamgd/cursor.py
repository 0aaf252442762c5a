"""Where a stream of units stands in an epoch: the position the reader, the checkpoint and the
Dask shards all share (one type, no stage above the reader needed to name it)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Cursor"]


@dataclass
class Cursor:
    """Where an epoch's stream stands: units before ``position`` are done, and ``offset`` rows
    (after null-target rows are dropped) of the unit at ``position`` have been consumed."""

    epoch: int = 0
    position: int = 0
    offset: int = 0
