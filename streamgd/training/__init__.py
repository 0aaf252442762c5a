"""Training: the state, its checkpoints, the starting state, the epoch loop (one process or
Dask), callbacks, and the public entry points :func:`fit` and :func:`train`.

The entry points load on first use, so that importing a light submodule (the command line
imports :mod:`.callbacks`) does not import numpy and pyarrow."""

from __future__ import annotations

from typing import Any

__all__ = ["fit", "train", "TrainResult"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import api

        globals().update(fit=api.fit, train=api.train, TrainResult=api.TrainResult)
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
