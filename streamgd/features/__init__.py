"""Features: which columns are used, what the statistics say, how rows are prepared, and how
categorical columns and class labels are encoded. One job per module:

- :mod:`.select`: the feature columns, and the missing/infinite policy names;
- :mod:`.stats`: column statistics and the preconditioner (arithmetic only; the pass that
  reads the data is :mod:`streamgd.stats_pass`);
- :mod:`.spec`: :class:`FeatureSpec`, saved with the model;
- :mod:`.rows`: row preparation (null targets, missing and infinite values, the selection)
  and its counts; built only by :class:`streamgd.decode.Decoder`;
- :mod:`.classes`: class labels of a multi-class target;
- :mod:`.categorical`: categorical vocabularies, one-hot codes and the hashing trick.
- :mod:`.interactions`: ``--interactions``: crosses of columns (products, categorical crosses,
  per-category slopes), derived from each Arrow piece before it is decoded.
- :mod:`.weights`: sample weights (``--weight``, ``--class-weight``): their checks, class
  weights and :class:`~.weights.Weighting`, saved with the spec.
"""

from .categorical import MAX_HASH_BITS, OTHER, Categorical, check_categorical, scan_categories
from .classes import MAX_CLASSES, label_encoder, scan_classes
from .rows import TargetCheck, count_vector, describe_counts, target_check
from .select import INFINITE_POLICIES, MISSING_POLICIES, select_features
from .spec import FeatureSpec
from .stats import MIN_EIGENVALUE, Stats, preconditioner

__all__ = [
    "MISSING_POLICIES",
    "INFINITE_POLICIES",
    "select_features",
    "Stats",
    "MIN_EIGENVALUE",
    "preconditioner",
    "FeatureSpec",
    "TargetCheck",
    "target_check",
    "count_vector",
    "describe_counts",
    "MAX_CLASSES",
    "scan_classes",
    "label_encoder",
    "Categorical",
    "MAX_HASH_BITS",
    "OTHER",
    "check_categorical",
    "scan_categories",
]
