"""What the settings choose from: the names of the input formats, the missing/infinite/outlier
policies, the built-in losses, the optimisers and the solvers, and the bound of --hash-bits.

They live in this module, which imports nothing, so that the settings' declarations
(:class:`~streamgd.config.FitConfig`) and with them the whole command tree (``streamgd fit
--help``) load without numpy and pyarrow. The modules that implement them import their names
from here (formats, policies) or keep a registry whose keys are these names (losses,
optimisers, solvers; ``tests/unit/test_startup.py`` checks that they agree).
"""

from __future__ import annotations

__all__ = [
    "FORMATS",
    "MISSING_POLICIES",
    "INFINITE_POLICIES",
    "OUTLIER_POLICIES",
    "MAX_HASH_BITS",
    "TEXT_NORMS",
    "LOSSES",
    "OPTIMIZERS",
    "SOLVERS",
]

FORMATS = ("auto", "parquet", "csv")
MISSING_POLICIES = ("impute", "drop", "error")
INFINITE_POLICIES = ("error", "missing")  # missing: an infinity is a missing value
OUTLIER_POLICIES = ("warn", "clip", "error")
MAX_HASH_BITS = 24  # categorical codes travel as float32, exact up to 2**24
TEXT_NORMS = ("none", "l2")  # --text-norm: per-row normalisation of a text column
# the built-in losses (``streamgd.register_loss`` adds to the live registry, losses.LOSSES)
LOSSES = ("squared", "logistic", "huber", "absolute", "quantile", "poisson", "hinge", "softmax")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
SOLVERS = ("sgd", "normal")
ROUND_PROTOCOLS = ("tasks", "peer")  # --cluster: how rounds run (training/rounds.py, peer.py)
