"""Many models per pass: hyperparameter grids trained side by side over one stream.

:func:`fit_grid` expands settings given several values (:mod:`.grid`), trains every
combination over one shared stream (:mod:`.engine`) and ranks them on validation rows
(:mod:`.leaderboard`). Importing the package stays light (the command line builds its
options from :mod:`.grid`); the training modules load on first use of :func:`fit_grid`.
"""

from __future__ import annotations

from typing import Any

from .grid import GRID_SETTINGS, expand_grid, is_grid

__all__ = ["fit_grid", "GridResult", "expand_grid", "is_grid", "GRID_SETTINGS"]


def __getattr__(name: str) -> Any:
    if name in ("fit_grid", "GridResult"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
