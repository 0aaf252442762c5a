"""streamgd: out-of-core mini-batch gradient descent on Parquet and CSV files.

>>> import streamgd  # doctest: +SKIP
>>> model = streamgd.fit(["data/regression"], target="y")  # doctest: +SKIP
>>> model.predict(table)  # doctest: +SKIP
"""

from .config import FitConfig, RunOptions
from .errors import StreamgdError
from .losses import Loss, register_loss
from .model import Model, load
from .scoring import evaluate, predict_files
from .training import fit, train

__all__ = [
    "fit",
    "train",
    "load",
    "evaluate",
    "predict_files",
    "Model",
    "Loss",
    "register_loss",
    "FitConfig",
    "RunOptions",
    "StreamgdError",
]
__version__ = "0.1.0"
