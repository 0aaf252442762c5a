"""scikit-learn estimators: :class:`StreamGDRegressor` and :class:`StreamGDClassifier`.

Needs the optional ``sklearn`` extra (``pip install streamgd[sklearn]``); ``import streamgd``
and the command line never import scikit-learn.

>>> from streamgd.sklearn import StreamGDRegressor  # doctest: +SKIP
>>> StreamGDRegressor(l2=0.1).fit(X, y).predict(X)  # doctest: +SKIP
"""

from .base import InputError, ParameterError
from .estimators import StreamGDClassifier, StreamGDRegressor

__all__ = ["StreamGDRegressor", "StreamGDClassifier", "ParameterError", "InputError"]
