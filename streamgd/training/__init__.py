"""Training: the state, its checkpoints, the starting state, the epoch loop (one process or
Dask), callbacks, and the public entry points :func:`fit` and :func:`train`."""

from .api import TrainResult, fit, train

__all__ = ["fit", "train", "TrainResult"]
