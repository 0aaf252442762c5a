"""Many models per pass: hyperparameter grids trained side by side over one stream.

:func:`fit_grid` expands settings given several values (:mod:`.grid`), trains every
combination over one shared stream (:mod:`.engine`) and ranks them on validation rows
(:mod:`.leaderboard`).
"""

from .api import GridResult, fit_grid
from .grid import GRID_SETTINGS, expand_grid

__all__ = ["fit_grid", "GridResult", "expand_grid", "GRID_SETTINGS"]
