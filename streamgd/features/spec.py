"""The feature spec: what the statistics pass learned (centres, scales, fill values, the
preconditioner), the categorical encodings and class labels, saved with the model.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from .categorical import Categorical
from .classes import label_encoder
from .interactions import Deriver, Interaction
from .outliers import guard
from .stats import Stats, preconditioner
from .text import TextColumn, bag_sum
from .weights import Weighting

__all__ = ["FeatureSpec"]


@dataclass(frozen=True)
class FeatureSpec:
    """Everything needed to turn raw feature values into model inputs, saved with the model.

    ``z = (x - center) / scale``; a missing value is replaced by ``fill`` (the feature's mean
    from the statistics pass) before scaling. For regression the target is standardised too,
    ``t = (y - target_center) / target_scale``, so that default learning rates work whatever
    the target's units; predictions are mapped back.
    """

    names: tuple[str, ...]
    target: str
    center: np.ndarray
    scale: np.ndarray
    fill: np.ndarray
    missing: str = "impute"
    target_center: float = 0.0
    target_scale: float = 1.0
    precond: np.ndarray | None = None  # inverse correlation of the standardised features
    classes: tuple | None = None  # multi-class: the labels, in code order
    categoricals: tuple[Categorical, ...] = ()  # encoded as codes after the target column
    infinite: str = "error"  # or "missing": infinities are treated as missing values
    outliers: str = "warn"  # or "clip", "error": see features.outliers
    # (3, features + target): low and high bounds of usable values (raw units) and the
    # medians they are around (None: no check); under warn, two more rows (files since the
    # training warning): the outlier bounds, m +- 100 spreads; see features.outliers
    bounds: np.ndarray | None = None
    # --weight and --class-weight (None: every row weighs 1); the weight column is the raw
    # matrix's last, after the categorical codes
    weighting: Weighting | None = None
    # --interactions (see .interactions): their products are among ``names``, their crosses
    # and slopes among ``categoricals``; all are derived from each table before decoding
    interactions: tuple[Interaction, ...] = ()
    # --text columns (see features.text): in the training matrix after the categorical codes,
    # ``slots`` bucket columns then ``slots`` value columns each; their weights follow the
    # categorical code weights
    texts: tuple[TextColumn, ...] = ()

    @staticmethod
    def from_stats(
        names: Sequence[str],
        target: str,
        stats: Stats,
        *,
        standardize: bool,
        missing: str,
        scale_target: bool,
        precondition: bool = False,
    ) -> FeatureSpec:
        """``stats`` covers the features and, last, the target."""
        n = len(names)
        fill = stats.mean[:n].astype(np.float64)
        if standardize:
            # float32-representable, so that float32 data is centred exactly while streaming
            center = fill.astype(np.float32).astype(np.float64)
            spread = stats.imputed_std[:n]
            scale = np.where(spread > 0, spread, 1.0)
        else:
            center = np.zeros(n)
            scale = np.ones(n)
        t_center, t_scale = 0.0, 1.0
        if scale_target:
            t_center = float(np.float32(stats.mean[n]))
            t_scale = float(stats.std[n]) if stats.std[n] > 0 else 1.0
        precond = preconditioner(stats.correlation(n)) if standardize and precondition else None
        return FeatureSpec(
            tuple(names), target, center, scale, fill, missing, t_center, t_scale, precond
        )

    def outlier_guard(self, *, has_target: bool, notes=None):
        """The ``--outliers`` check of raw column values (see :func:`.outliers.guard`) for a
        matrix laid out as :attr:`columns` (or without the target); None without bounds.
        ``notes``: an :class:`.outliers.OutlierNotes` for the outliers training meets."""
        if self.bounds is None:
            return None
        return guard(self.bounds, self.outliers, (*self.names, self.target), notes)

    @property
    def columns(self) -> tuple[str, ...]:
        """Columns read into the training matrix: the numeric features, the target, the
        categorical codes, the text columns (each ``2 * slots`` matrix columns, see
        :attr:`width`), then the ``--weight`` column (when there is one)."""
        return self.input_columns(has_target=True, weight=True, text=True)

    @property
    def width(self) -> int:
        """Columns of the training matrix (:attr:`columns` with each text column expanded)."""
        return len(self.columns) + sum(2 * t.slots - 1 for t in self.texts)

    @property
    def weight_column(self) -> str | None:
        return None if self.weighting is None else self.weighting.column

    def input_columns(
        self, *, has_target: bool, weight: bool = False, text: bool = False
    ) -> tuple[str, ...]:
        """Raw matrix columns with or without the target (which predict does not read), the
        text columns (read by training into slots; scoring reads them as :meth:`table_text`)
        and the weight column (which only training and weighted evaluation read)."""
        target = (self.target,) if has_target else ()
        weights = (self.weight_column,) if weight and self.weight_column is not None else ()
        texts = tuple(t.name for t in self.texts) if text else ()
        return (*self.names, *target, *(c.name for c in self.categoricals), *texts, *weights)

    @functools.cached_property
    def deriver(self) -> Deriver | None:
        """What adds the interactions' columns to a table (None without interactions)."""
        return Deriver(self.interactions) if self.interactions else None

    def read_columns(self, columns: Sequence[str]) -> list[str]:
        """The data's columns that ``columns`` (some maybe derived) are made of."""
        columns = list(columns) if self.deriver is None else self.deriver.sources(columns)
        crosses = {t.name: t.reads for t in self.texts if t.by}  # text x categorical
        return list(dict.fromkeys(c for n in columns for c in crosses.get(n, (n,))))

    @functools.cached_property
    def slopes(self) -> tuple[tuple[int, int], ...]:
        """``(categorical, feature)`` index pairs: the categorical columns whose code weights
        are slopes, and the numeric feature each multiplies (see :meth:`code_values`)."""
        return tuple(
            (k, self.names.index(c.slope))
            for k, c in enumerate(self.categoricals)
            if c.slope is not None
        )

    def code_values(self, x: np.ndarray, *, centred: bool) -> np.ndarray | None:
        """What each code weight multiplies, (rows, categoricals): 1 for a one-hot or hashed
        column, the standardised feature for a slope; None without slopes. ``x``: the numeric
        features, raw or (``centred``) with the centres subtracted."""
        if not self.slopes:
            return None
        out = np.ones((len(x), len(self.categoricals)))
        for k, j in self.slopes:
            col = x[:, j].astype(np.float64)
            out[:, k] = (col if centred else col - self.center[j]) / self.scale[j]
        return out

    def converters(self) -> dict | None:
        """Column converters for the prefetcher: categorical values to codes, and class
        labels to class codes (multi-class targets)."""
        out = {c.name: c.converter() for c in self.categoricals}
        if self.classes is not None:
            out[self.target] = label_encoder(self.classes, self.target)
        return out or None

    def stream_center(self) -> np.ndarray:
        """What to subtract from each column of :attr:`columns` while decoding: the feature
        centres, the target's, and nothing from codes or the weights."""
        rest = len(self.categoricals) + len(self.texts) + (self.weight_column is not None)
        return np.concatenate([self.center, [self.target_center], np.zeros(rest)])

    @property
    def n_codes(self) -> int:
        """Weights of the categorical codes then of the text buckets, after the intercept in
        the parameters."""
        return self.n_category_codes + sum(t.size for t in self.texts)

    @property
    def n_category_codes(self) -> int:
        """Weights of the categorical codes (the text buckets' follow them)."""
        return sum(c.size for c in self.categoricals)

    def text(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The text slots of a training matrix laid out as :attr:`columns`: indices into the
        code weights (rows, slots of every text column) and their values; None without
        text columns."""
        if not self.texts:
            return None
        start = len(self.names) + 1 + len(self.categoricals)
        offset = self.n_category_codes
        idx, val = [], []
        for t in self.texts:
            idx.append(raw[:, start : start + t.slots].astype(np.intp) + offset)
            val.append(raw[:, start + t.slots : start + 2 * t.slots])
            start += 2 * t.slots
            offset += t.size
        if len(idx) == 1:
            return idx[0], val[0]
        return np.hstack(idx), np.hstack(val)

    def text_sum(self, weights: np.ndarray, text: tuple | None) -> np.ndarray:
        """Each row's part of the linear output from its text slots (``text``, as :meth:`text`)
        over the code ``weights``."""
        if text is None:
            raise DataError("the model has text columns: their buckets are needed")
        return bag_sum(weights, *text)

    def table_text(self, table) -> tuple[np.ndarray, np.ndarray] | None:
        """The text slots of a table's text columns, as :meth:`text` (float64 values)."""
        if not self.texts:
            return None
        offset = self.n_category_codes
        idx, val = [], []
        for t in self.texts:
            i, v = t.encode(table)
            idx.append(i + offset)
            val.append(v)
            offset += t.size
        return np.hstack(idx).astype(np.intp), np.hstack(val)

    @functools.cached_property  # once per spec: the step reads it every batch
    def code_offsets(self) -> np.ndarray:
        """Where each categorical column's weights start among the code weights."""
        sizes = [c.size for c in self.categoricals]
        return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)

    def codes(self, raw: np.ndarray) -> np.ndarray | None:
        """Indices into the code weights, (rows, categoricals), of a raw matrix laid out as
        :attr:`columns`; None without categorical features."""
        if not self.categoricals:
            return None
        start = len(self.names) + 1
        return raw[:, start : start + len(self.categoricals)].astype(np.intp) + self.code_offsets

    def table_codes(self, table) -> np.ndarray | None:
        """Indices into the code weights of a table's categorical columns, as :meth:`codes`."""
        if not self.categoricals:
            return None
        if self.deriver is not None:
            table = self.deriver(table, [c.name for c in self.categoricals])
        codes = np.column_stack([c.encode(table.column(c.name)) for c in self.categoricals])
        return codes + self.code_offsets

    def neutral_code_weights(self, weights: np.ndarray) -> np.ndarray:
        """The code weights prediction uses: each one-hot column's "(other)" weight made
        neutral when no training value fell there (see :meth:`Categorical.neutral_other`)."""
        parts = [
            c.neutral_other(weights[start : start + c.size])
            for c, start in zip(self.categoricals, self.code_offsets, strict=False)
        ]  # (code_offsets is [0] without categoricals)
        if parts and self.texts:  # the text buckets' weights as they are
            parts.append(weights[self.n_category_codes :])
        return np.concatenate(parts) if parts else weights

    def original_code_weights(self, weights: np.ndarray) -> np.ndarray:
        """The code weights in target units, as prediction uses them (see
        :meth:`neutral_code_weights`); a slope's per unit of the centred feature it
        multiplies."""
        out = self.neutral_code_weights(weights) * self.target_scale
        for k, j in self.slopes:
            start = self.code_offsets[k]
            out[start : start + self.categoricals[k].size] /= self.scale[j]
        return out

    def code_labels(self) -> list[str]:
        """``name=value`` (or ``name#bucket``) for each code weight, in order, then
        ``name~token`` (or ``name#bucket``) for each text bucket."""
        labels = [label for c in self.categoricals for label in c.labels()]
        return labels + [label for t in self.texts for label in t.labels()]

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Standardised features of a raw matrix (its first ``len(names)`` columns)."""
        return (raw[:, : len(self.names)] - self.center) / self.scale

    def scaled_target(self, raw: np.ndarray) -> np.ndarray:
        y = raw[:, len(self.names)]
        if self.target_center == 0.0 and self.target_scale == 1.0:
            return y
        return (y - self.target_center) / self.target_scale

    def to_original(self, w: np.ndarray, b: float) -> tuple[np.ndarray, float]:
        """Coefficients and intercept in original units: ``y = x @ coef + intercept``."""
        scale = self.scale if np.ndim(w) == 1 else self.scale[:, None]
        coef = w * self.target_scale / scale
        intercept = self.target_center + self.target_scale * np.asarray(b) - self.center @ coef
        return coef, intercept
