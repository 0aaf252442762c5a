"""Features: which columns are used, the statistics pass, missing values and standardisation.

Raw rows travel through the pipeline as float64 matrices whose columns are the features followed
by the target. :func:`make_prepare` turns a decoded chunk into training rows (drops or rejects
null targets, imputes or rejects missing features, rejects infinities and bad targets);
:class:`FeatureSpec` holds what was learned from the statistics pass and standardises batches.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .categorical import Categorical
from .errors import DataError, UsageError
from .sources import Dataset, is_numeric

__all__ = [
    "MISSING_POLICIES",
    "INFINITE_POLICIES",
    "count_vector",
    "holdout_mask",
    "describe_counts",
    "select_features",
    "Stats",
    "FeatureSpec",
    "make_prepare",
    "compute_stats",
]

MISSING_POLICIES = ("impute", "drop", "error")
INFINITE_POLICIES = ("error", "missing")  # missing: an infinity is a missing value

# Per-chunk counts, one vector: [rows without a target, rows dropped for a missing feature
# (--missing drop), then missing values per feature (imputed, or in dropped rows)].
NULL_TARGET, DROPPED, PER_FEATURE = 0, 1, 2


def count_vector(n_features: int) -> np.ndarray:
    return np.zeros(PER_FEATURE + n_features, dtype=np.int64)


def describe_counts(counts: np.ndarray, names: Sequence[str], missing: str) -> dict:
    """The counts as reported in histories, summaries and evaluate's output."""
    per = {n: int(c) for n, c in zip(names, counts[PER_FEATURE:], strict=True) if c}
    out = {"skipped_null_target": int(counts[NULL_TARGET])}
    if missing == "drop":
        out |= {"dropped_missing": int(counts[DROPPED]), "missing": per}
    else:
        out["imputed"] = per
    return out


def select_features(
    schema: pa.Schema,
    target: str,
    features: Sequence[str] | None,
    *,
    path: str,
    labels: bool = False,
    categorical: Sequence[str] = (),
) -> tuple[str, ...]:
    """The numeric feature columns: those asked for, or every numeric column except the target
    and the ``categorical`` ones. With ``labels`` (multi-class) the target may hold strings as
    well as numbers."""
    names = schema.names
    if target not in names:
        raise UsageError(f"{path}: no target column {target!r}; columns are: {', '.join(names)}")
    if not labels and not is_numeric(schema.field(target).type):
        raise DataError(
            f"the target must be numeric, but its type is {schema.field(target).type}",
            path=path,
            column=target,
        )
    if features:
        chosen = [f for f in dict.fromkeys(features) if f not in categorical]
        for name in chosen:
            if name not in names:
                raise UsageError(
                    f"{path}: no feature column {name!r}; columns are: {', '.join(names)}"
                )
            if name == target:
                raise UsageError(f"column {name!r} is the target; it cannot also be a feature")
            if not is_numeric(schema.field(name).type):
                raise DataError(
                    f"feature is not numeric (type {schema.field(name).type}); "
                    "choose numeric columns with --features, or name it with --categorical",
                    path=path,
                    column=name,
                )
    else:
        chosen = [
            f.name
            for f in schema
            if f.name != target and f.name not in categorical and is_numeric(f.type)
        ]
        if not chosen and not categorical:
            raise DataError(f"no numeric column besides the target {target!r}", path=path)
    return tuple(chosen)


@dataclass(frozen=True)
class Stats:
    """Column statistics from the statistics pass, NaN-aware, mergeable chunk by chunk.

    ``comoment`` is the matrix of summed products of deviations from the mean (missing values
    count as the mean); its diagonal gives the variances and the whole the correlations.
    """

    rows: int
    count: np.ndarray  # non-missing values per column
    mean: np.ndarray
    comoment: np.ndarray
    missing: np.ndarray

    @staticmethod
    def of(x: np.ndarray, *, overwrite: bool = False) -> Stats:
        """The statistics of the rows of ``x``; with ``overwrite``, ``x`` may be used as
        scratch space (saves allocating, and page-faulting, a copy of it)."""
        k = x.shape[1]
        if len(x) == 0:
            zeros = np.zeros(k, dtype=np.int64)
            return Stats(0, zeros, np.zeros(k), np.zeros((k, k)), zeros.copy())
        if _all_finite(x):  # no missing values: the fast path
            mean = x.mean(axis=0)
            dev = np.subtract(x, mean, out=x) if overwrite and x.flags.writeable else x - mean
            count = np.full(x.shape[1], len(x))
            return Stats(len(x), count, mean, dev.T @ dev, np.zeros(x.shape[1], dtype=np.int64))
        nan = np.isnan(x)
        count = (~nan).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            total = np.where(nan, 0.0, x).sum(axis=0)
            mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
            dev = np.where(nan, 0.0, x - mean)
        return Stats(len(x), count, mean, dev.T @ dev, nan.sum(axis=0))

    def merge(self, other: Stats) -> Stats:
        """Chan et al.'s pairwise update of means and co-moments."""
        n = self.count + other.count
        delta = other.mean - self.mean
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(n > 0, other.count / np.maximum(n, 1), 0.0)
        mean = self.mean + delta * frac
        # per-column weights n_a n_b / n make the diagonal (the variances) exact with missing
        # values; off the diagonal the cross term is the usual approximation for pairs
        with np.errstate(invalid="ignore", divide="ignore"):
            w = np.where(n > 0, self.count * other.count / np.maximum(n, 1), 0.0)
        d = delta * np.sqrt(w)
        cross = np.outer(d, d)
        return Stats(
            self.rows + other.rows,
            n,
            mean,
            self.comoment + other.comoment + cross,
            self.missing + other.missing,
        )

    @property
    def std(self) -> np.ndarray:
        var = np.where(self.count > 1, np.diag(self.comoment) / np.maximum(self.count - 1, 1), 0)
        return np.sqrt(np.maximum(var, 0.0))

    @property
    def imputed_std(self) -> np.ndarray:
        """Standard deviation of the columns as training sees them: missing values replaced by
        the mean (so they add rows but no spread). Consistent with :meth:`correlation`, which
        keeps the preconditioner true to the standardised data."""
        var = np.diag(self.comoment) / max(self.rows - 1, 1)
        return np.sqrt(np.maximum(var, 0.0))

    def correlation(self, k: int) -> np.ndarray:
        """Correlation matrix of the first ``k`` columns (constant columns: identity rows)."""
        c = self.comoment[:k, :k]
        d = np.sqrt(np.diag(c))
        d = np.where(d > 0, d, 1.0)
        corr = c / np.outer(d, d)
        const = np.diag(c) <= 0
        corr[const, :] = 0.0
        corr[:, const] = 0.0
        corr[const, const] = 1.0
        return corr


def _all_finite(m: np.ndarray) -> bool:
    """Whether ``m`` has no NaN or infinity: the column sums are finite unless a value is not,
    or a sum overflows (then look closer)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(m.sum(axis=0)).all():
            return True
    return bool(np.isfinite(m).all())


# Smallest eigenvalue kept when inverting the correlation matrix: a duplicated or nearly
# collinear feature gets at most 1/MIN_EIGENVALUE times a plain step, never an infinite one.
MIN_EIGENVALUE = 1e-3


def preconditioner(corr: np.ndarray) -> np.ndarray:
    """Inverse of a correlation matrix with its eigenvalues floored at ``MIN_EIGENVALUE``.

    >>> preconditioner(np.eye(2)).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    vals, vecs = np.linalg.eigh(corr)
    inv = (vecs / np.maximum(vals, MIN_EIGENVALUE)) @ vecs.T
    return (inv + inv.T) / 2


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

    @property
    def columns(self) -> tuple[str, ...]:
        """Raw matrix columns: the numeric features, the target, then the categorical codes."""
        return self.input_columns(has_target=True)

    def input_columns(self, *, has_target: bool) -> tuple[str, ...]:
        """Raw matrix columns with or without the target (which predict does not read)."""
        target = (self.target,) if has_target else ()
        return (*self.names, *target, *(c.name for c in self.categoricals))

    def converters(self) -> dict | None:
        """Column converters for the prefetcher: categorical values to codes, and class
        labels to class codes (multi-class targets)."""
        out = {c.name: c.converter() for c in self.categoricals}
        if self.classes is not None:
            out[self.target] = label_encoder(self.classes, self.target)
        return out or None

    def stream_center(self) -> np.ndarray:
        """What to subtract from each column of :attr:`columns` while decoding: the feature
        centres, the target's, and nothing from codes."""
        return np.concatenate([self.center, [self.target_center], np.zeros(len(self.categoricals))])

    @property
    def n_codes(self) -> int:
        """Weights of the categorical codes, after the intercept in the parameters."""
        return sum(c.size for c in self.categoricals)

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
        return raw[:, len(self.names) + 1 :].astype(np.intp) + self.code_offsets

    def table_codes(self, table) -> np.ndarray | None:
        """Indices into the code weights of a table's categorical columns, as :meth:`codes`."""
        if not self.categoricals:
            return None
        codes = np.column_stack([c.encode(table.column(c.name)) for c in self.categoricals])
        return codes + self.code_offsets

    def code_labels(self) -> list[str]:
        """``name=value`` (or ``name#bucket``) for each code weight, in order."""
        return [label for c in self.categoricals for label in c.labels()]

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


TargetCheck = Callable[[np.ndarray], np.ndarray]  # returns a mask of invalid target values


def target_check(loss) -> TargetCheck | None:
    """The loss's check of target values, carrying its ``expected`` text for messages."""
    if loss.invalid_target is None:
        return None
    invalid = loss.invalid_target

    def check(y: np.ndarray) -> np.ndarray:
        return invalid(y)

    check.expected = loss.expected_target  # type: ignore[attr-defined]
    return check


def holdout_mask(path: str, rows: np.ndarray, fraction: float) -> np.ndarray:
    """Whether each row (0-based row number within the file ``path``) is held out: a fixed
    hash of (path, row) compared with ``fraction``, so the same rows every epoch, after a
    resume and whatever the seed or the reading order.

    >>> holdout_mask("a.parquet", np.arange(100_000), 0.1).mean().round(2)
    np.float64(0.1)
    """
    import zlib

    key = np.uint64(zlib.crc32(str(path).encode())) << np.uint64(32)
    z = (np.asarray(rows, dtype=np.uint64) + key) * np.uint64(0x9E3779B97F4A7C15)  # splitmix64
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / 2.0**53 < fraction


# Rows drawn per block by the reservoir: bounds its memory however large a file is.
RESERVOIR_BLOCK = 1 << 20


def reservoir_rows(dataset: Dataset, k: int, seed: int) -> dict[str, np.ndarray]:
    """``k`` rows drawn uniformly from all the files' rows by reservoir sampling (Algorithm R
    over the files in order, seeded): ``{path: sorted row numbers}``. Parquet row counts come
    from metadata; a CSV file is counted by streaming it once. Memory: the reservoir and one
    block of random numbers.

    """
    rng = np.random.default_rng([seed, 0x484F4C44])  # "HOLD"
    files = np.empty(k, dtype=np.int64)
    rows = np.empty(k, dtype=np.int64)
    seen = 0
    for index, source in enumerate(dataset.files):
        n = source.num_rows if source.num_rows is not None else _count_rows(dataset, index)
        fill = min(max(k - seen, 0), n)  # the reservoir's first k rows go straight in
        files[seen : seen + fill] = index
        rows[seen : seen + fill] = np.arange(fill)
        for start in range(fill, n, RESERVOIR_BLOCK):
            m = min(RESERVOIR_BLOCK, n - start)
            position = seen + start + np.arange(m)  # 0-based index of each row in the stream
            slot = np.floor(rng.random(m) * (position + 1)).astype(np.int64)
            for a in np.flatnonzero(slot < k):  # in stream order: a later row replaces
                files[slot[a]], rows[slot[a]] = index, start + a
        seen += n
    if seen <= k:
        raise UsageError(f"--holdout-rows {k} would hold out every row: the data has {seen} rows")
    return {dataset.files[i].path: np.sort(rows[files == i]) for i in np.unique(files).tolist()}


def _count_rows(dataset: Dataset, index: int) -> int:
    from .sources import HandleCache

    handles = HandleCache()
    first = dataset.schema.names[:1]
    return sum(
        table.num_rows
        for unit in dataset.units
        if unit.file == index
        for table, _ in dataset.iter_unit(unit, first, handles)
    )


def make_prepare(
    names: Sequence[str],
    target: str,
    *,
    missing: str,
    fill: np.ndarray | None,
    check_target: TargetCheck | None,
    has_target: bool = True,
    select: Callable[[str, np.ndarray], np.ndarray] | None = None,
    infinite: str = "error",
):
    """Build the per-chunk function the prefetch thread applies to decoded rows.

    It returns ``(rows, counts)`` with the counts laid out as :func:`count_vector` says.
    Missing features are imputed with ``fill`` (``missing="impute"``), or their rows dropped
    (``"drop"``); with ``fill=None`` (the statistics pass) they are left as NaN for the
    statistics to skip. ``select(path, row_numbers)`` (the holdout split) keeps only the rows
    it marks, after every check, so errors still name the right rows. An infinity is an error,
    or with ``infinite="missing"`` a missing value (then ``missing`` decides).
    """
    if missing not in MISSING_POLICIES:
        raise UsageError(f"--missing must be one of {', '.join(MISSING_POLICIES)}, got {missing!r}")
    if infinite not in INFINITE_POLICIES:
        raise UsageError(
            f"--infinite must be one of {', '.join(INFINITE_POLICIES)}, got {infinite!r}"
        )
    n_feat = len(names)
    columns = [*names, target] if has_target else list(names)

    def prepare(m: np.ndarray, path: str, first_row: int) -> tuple[np.ndarray, np.ndarray]:
        counts = count_vector(n_feat)
        kept = None  # original positions of the rows that remain, when some were dropped
        if len(m) and not _all_finite(m):  # one cheap pass; details only if needed
            m, kept = _clean(m, counts, path, first_row)
        if has_target and check_target is not None and len(m):
            bad = check_target(m[:, n_feat])
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"target value {m[i, n_feat]:g} is not allowed "
                    f"(expected {getattr(check_target, 'expected', 'a valid target')})",
                    path=path,
                    column=target,
                    row=first_row + (int(kept[i]) if kept is not None else i) + 1,
                )
        if select is not None and len(m):
            positions = first_row + (kept if kept is not None else np.arange(len(m)))
            m = np.asfortranarray(m[select(path, positions)])
        return m, counts

    def _clean(m: np.ndarray, counts: np.ndarray, path: str, first_row: int):
        nan = np.isnan(m)
        inf = np.isinf(m)
        if inf.any():
            if infinite == "error":
                r, c = np.argwhere(inf)[0]
                raise DataError(
                    "infinite value; expected a finite number (--infinite missing treats "
                    "infinities as missing values)",
                    path=path,
                    column=columns[c],
                    row=first_row + int(r) + 1,
                )
            m = np.where(inf, np.nan, m)
            m = np.asfortranarray(m)
            nan |= inf
        if missing == "error":  # nothing is dropped or imputed: report the first missing value
            r, c = np.argwhere(nan)[0]
            what = "target" if has_target and c == n_feat else "value"
            raise DataError(
                f"{what} is missing (--missing impute skips rows without a target and imputes "
                "the mean, --missing drop drops rows with any missing value)",
                path=path,
                column=columns[c],
                row=first_row + int(r) + 1,
            )
        kept = None
        if has_target and nan[:, n_feat].any():
            kept = np.flatnonzero(~nan[:, n_feat])
            counts[NULL_TARGET] = len(m) - len(kept)
            m, nan = m[kept], nan[kept]
        feat_nan = nan[:, :n_feat]
        counts[PER_FEATURE:] = feat_nan.sum(axis=0)
        if missing == "drop" and fill is not None and counts[PER_FEATURE:].any():
            rows = np.flatnonzero(~feat_nan.any(axis=1))
            counts[DROPPED] = len(m) - len(rows)
            kept = rows if kept is None else kept[rows]
            return np.asfortranarray(m[rows]), kept
        if fill is not None and counts[PER_FEATURE:].any():
            m = np.array(m, order="F", copy=True)
            for c in np.flatnonzero(counts[PER_FEATURE:]):
                m[feat_nan[:, c], c] = fill[c]
        return m, kept

    return prepare


def stats_order(dataset: Dataset, *, max_rows: int, seed: int) -> np.ndarray:
    """The order in which the statistics pass (and the categorical scan) read units: the file
    order, or a seeded random one when a sample of ``max_rows`` rows is all they read."""
    n_units = len(dataset.units)
    total = dataset.num_rows
    if max_rows and total is not None and total > max_rows:
        return np.random.default_rng([seed, 0x53544154]).permutation(n_units)
    return np.arange(n_units)


def compute_stats(
    dataset: Dataset,
    names: Sequence[str],
    target: str,
    *,
    prepare,
    max_rows: int,
    seed: int,
    converters: dict | None = None,
) -> Stats:
    """The statistics pass: NaN-aware mean and std of every feature and of the target.

    Reads whole row groups, or CSV blocks, until ``max_rows`` rows were seen; with Parquet and
    more rows than that, the row groups are picked in a seeded random order so that the sample
    spans the data (a CSV file's rows are counted only by reading it: CSV gives the first
    rows). ``max_rows=0`` reads everything.
    """
    from .batches import Prefetcher  # the same decoding path as training

    order = stats_order(dataset, max_rows=max_rows, seed=seed)
    n_units = len(order)
    columns = [*names, target]
    acc: Stats | None = None
    start = 0
    while start < n_units and not (max_rows and acc is not None and acc.rows >= max_rows):
        # Hand the prefetcher only the units that can still be needed: one that decodes past
        # the sample wastes a row group's decode (and a wait to stop it) on every fit.
        stop = _units_for(dataset, order, start, max_rows - (acc.rows if acc else 0))
        # float64, unlike training: the statistics see raw values, before any centring
        # park: the CSV blocks it parsed of the epoch's first file are not parsed again
        prefetch = Prefetcher(
            dataset,
            order[:stop],
            columns,
            prepare,
            start=start,
            depth=1,
            converters=converters,
            park=start == 0,
        )
        try:
            for chunk in prefetch:
                part = Stats.of(chunk.rows, overwrite=True)  # released right after
                prefetch.release(chunk)
                acc = part if acc is None else acc.merge(part)
                # whole row groups (a seeded sample); a CSV file may stop after any block
                whole = chunk.last or dataset.units[order[chunk.position]].rows is None
                if max_rows and acc.rows >= max_rows and whole:
                    break
        finally:
            prefetch.close()
        start = stop
    if acc is None or acc.rows == 0:
        raise DataError(
            f"no rows with a target value in {len(dataset.files)} file(s)",
            path=dataset.files[0].path,
        )
    return acc


def _units_for(dataset: Dataset, order: np.ndarray, start: int, rows: int) -> int:
    """The end of the shortest run of ``order`` from ``start`` holding at least ``rows`` rows
    (all of it when ``rows`` is not positive or a unit's row count is unknown, as for CSV)."""
    if rows <= 0:
        return len(order)
    for stop in range(start, len(order)):
        n = dataset.units[order[stop]].rows
        if n is None:
            return len(order)
        rows -= n
        if rows <= 0:
            return stop + 1
    return len(order)


# -- class labels (multi-class targets) --------------------------------------------------------
MAX_CLASSES = 1000


def scan_classes(dataset: Dataset, target: str) -> tuple[tuple, np.ndarray]:
    """The distinct non-null labels of the target column and their counts, by one pass over
    that column alone (bounded memory: one row group or CSV block at a time). Labels are
    sorted; numbers that are whole become ints."""
    import pyarrow.compute as pc

    from .sources import HandleCache

    counts: dict = {}
    handles = HandleCache()
    for unit in dataset.units:
        for table, _ in dataset.iter_unit(unit, [target], handles):
            col = table.column(target)
            if pa.types.is_dictionary(col.type):
                col = col.cast(col.type.value_type)
            for item in pc.value_counts(col.drop_null()).to_pylist():
                counts[item["values"]] = counts.get(item["values"], 0) + item["counts"]
            if len(counts) > MAX_CLASSES:
                raise DataError(
                    f"more than {MAX_CLASSES} distinct values: not a class label for "
                    "--loss softmax",
                    path=dataset.files[unit.file].path,
                    column=target,
                )
    if len(counts) < 2:
        raise DataError(
            f"--loss softmax needs at least 2 classes, found {len(counts)}",
            path=dataset.files[0].path,
            column=target,
        )
    labels = sorted(counts, key=lambda v: (isinstance(v, str), v))
    frequencies = np.array([counts[v] for v in labels], dtype=np.int64)
    whole = [int(v) if isinstance(v, float) and v.is_integer() else v for v in labels]
    return tuple(whole), frequencies


def label_encoder(classes: Sequence, target: str):
    """A converter ``(column, path, first_row) -> float64 codes`` (NaN where null) for the
    prefetcher; a label outside ``classes`` is an error naming its row."""
    import pyarrow.compute as pc

    numeric = all(not isinstance(c, str) for c in classes)
    value_set = pa.array([float(c) for c in classes] if numeric else [str(c) for c in classes])

    def encode(col: pa.ChunkedArray, path: str, first_row: int) -> pa.Array:
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        col = col.cast(pa.float64()) if numeric else col.cast(pa.string())
        codes = pc.index_in(col, value_set=value_set)
        unknown = pc.and_(pc.is_valid(col), pc.is_null(codes))
        if pc.any(unknown).as_py():
            i = pc.index(unknown, True).as_py()
            raise DataError(
                f"class {col[i].as_py()!r} was not among the training classes "
                f"({', '.join(map(str, classes[:10]))}{', ...' if len(classes) > 10 else ''})",
                path=path,
                column=target,
                row=first_row + i + 1,
            )
        return codes.cast(pa.float64())

    return encode
