"""Where a stream of units stands in an epoch: the position the reader, the checkpoint and the
Dask shards all share (one type, no stage above the reader needed to name it)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Cursor"]


@dataclass
class Cursor:
    """Where an epoch's stream stands.

    Read one unit at a time (``lanes`` None): units before ``position`` are done, and
    ``offset`` rows (after null-target rows are dropped) of the unit at ``position`` have
    been consumed. Read several at once (a shuffled stream with a buffer: see
    :mod:`streamgd.lanes`): ``position`` is the number of lanes W (lane ``j`` reads the
    units at positions ``j, j + W, ...`` of the order), ``lanes`` holds each lane still
    reading as ``[position of its unit, rows handed on]``, ``draws`` counts the lane draws
    made, and ``offset`` the rows consumed of the slice handed on next; ``slices`` the rows
    of the slices that row groups too large to be read whole were read in (0: none recorded,
    a checkpoint of a streamgd that did not record them), which the lanes' rows depend on.
    """

    epoch: int = 0
    position: int = 0
    offset: int = 0
    lanes: list[list[int]] | tuple[tuple[int, int], ...] | None = None
    draws: int = 0
    slices: int = 0
