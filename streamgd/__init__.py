"""streamgd: out-of-core mini-batch gradient descent on Parquet and CSV files, and on data
already in Python (pyarrow tables and datasets, pandas and polars frames, numpy arrays, streams
of batches).

>>> import streamgd  # doctest: +SKIP
>>> model = streamgd.fit(["data/regression"], target="y")  # doctest: +SKIP
>>> model = streamgd.fit(frame, target="y")  # doctest: +SKIP
>>> model.predict(table)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

# The public names load on first use, so that ``import streamgd`` (and the console entry point,
# which installs its signal handlers first) does not import numpy, pyarrow and pandas.
_PUBLIC = {
    "fit": "training",
    "train": "training",
    "load": "model",
    "evaluate": "scoring",
    "predict_files": "scoring",
    "describe_dataset": "describe",
    "Model": "model",
    "Loss": "losses",
    "register_loss": "losses",
    "FitConfig": "config",
    "RunOptions": "config",
    "StreamgdError": "errors",
}

__all__ = [
    "fit",
    "train",
    "load",
    "evaluate",
    "predict_files",
    "describe_dataset",
    "Model",
    "Loss",
    "register_loss",
    "FitConfig",
    "RunOptions",
    "StreamgdError",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    try:  # a submodule not imported yet: streamgd.errors, streamgd.training, ...
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
