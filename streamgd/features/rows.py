"""Row preparation: what happens to a decoded chunk before it is trained on or scored.

Raw rows travel through the pipeline as float matrices whose columns are the features followed
by the target (then any categorical codes and, last, the ``--weight`` column).
:func:`preparer` builds the per-chunk function that drops or rejects null targets, imputes or
rejects missing features, rejects infinities, bad targets and bad weights, and keeps only the
rows of a selection (the holdout split); it reports what it did as a :func:`count_vector`.
Only :class:`streamgd.decode.Decoder` builds one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..errors import DataError, UsageError
from .select import INFINITE_POLICIES, MISSING_POLICIES
from .weights import bad_weight

__all__ = [
    "count_vector",
    "describe_counts",
    "all_finite",
    "TargetCheck",
    "target_check",
    "Select",
    "Prepare",
    "preparer",
]

# Per-chunk counts, one vector: [rows without a target, rows dropped for a missing feature
# (--missing drop), then missing values per feature (imputed, or in dropped rows)].
NULL_TARGET, DROPPED, PER_FEATURE = 0, 1, 2


def count_vector(n_features: int) -> np.ndarray:
    """Zero counts for ``n_features`` features, laid out as above."""
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


def all_finite(m: np.ndarray) -> bool:
    """Whether ``m`` has no NaN or infinity: the column sums are finite unless a value is not,
    or a sum overflows (then look closer)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(m.sum(axis=0)).all():
            return True
    return bool(np.isfinite(m).all())


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


# select(path, row_numbers) -> mask of the rows to keep (the holdout split, see streamgd.holdout)
Select = Callable[[str, np.ndarray], np.ndarray]
# prepare(matrix, path, first_row) -> (rows to train on, counts as count_vector lays them out)
Prepare = Callable[[np.ndarray, str, int], tuple[np.ndarray, np.ndarray]]


def preparer(
    names: Sequence[str],
    target: str,
    *,
    missing: str,
    fill: np.ndarray | None,
    check_target: TargetCheck | None,
    has_target: bool = True,
    select: Select | None = None,
    infinite: str = "error",
    weight: str | None = None,
    tag: Callable[[str, np.ndarray], np.ndarray] | None = None,
) -> Prepare:
    """Build the per-chunk function applied to decoded rows (by :class:`~streamgd.decode.Decoder`
    only, which fixes these arguments per pass: statistics, training, scoring, prediction).

    It returns ``(rows, counts)`` with the counts laid out as :func:`count_vector` says.
    Missing features are imputed with ``fill`` (``missing="impute"``), or their rows dropped
    (``"drop"``); with ``fill=None`` (the statistics pass) they are left as NaN for the
    statistics to skip. ``select(path, row_numbers)`` (the holdout split) keeps only the rows
    it marks, after every check, so errors still name the right rows. An infinity is an error,
    or with ``infinite="missing"`` a missing value (then ``missing`` decides). With ``weight``
    (the ``--weight`` column, the matrix's last), a weight that is missing, NaN, infinite or
    negative is an error naming its row, checked first. ``tag(path, row_numbers)`` (the
    ``--cv`` folds, see :mod:`streamgd.folds`) appends its values for the rows that remain as
    one more column, the last.
    """
    _check_policies(missing, infinite)
    n_feat = len(names)
    columns = [*names, target] if has_target else list(names)

    def prepare(m: np.ndarray, path: str, first_row: int) -> tuple[np.ndarray, np.ndarray]:
        # one body, not split: it runs on every chunk; only a NaN, inf or bad target calls out
        counts = count_vector(n_feat)
        if weight is not None and len(m):
            error = bad_weight(m[:, -1], weight, path, first_row)
            if error is not None:
                raise error
        kept = None  # original positions of the rows that remain, when some were dropped
        if len(m) and not all_finite(m):  # one cheap pass; details only if needed
            m, kept = _clean(
                m,
                counts,
                path,
                first_row,
                columns=columns,
                has_target=has_target,
                missing=missing,
                infinite=infinite,
                fill=fill,
            )
        if has_target and check_target is not None and len(m):
            bad = check_target(m[:, n_feat])
            if bad.any():
                raise _bad_target(m, bad, kept, path, first_row, target, n_feat, check_target)
        if select is not None and len(m):
            positions = first_row + (kept if kept is not None else np.arange(len(m)))
            chosen = select(path, positions)
            m = np.asfortranarray(m[chosen])
            kept = positions[chosen] - first_row
        if tag is not None:  # one copy, into a matrix one column wider
            out = np.empty((len(m), m.shape[1] + 1), dtype=m.dtype, order="F")
            out[:, :-1] = m
            out[:, -1] = tag(path, first_row + (kept if kept is not None else np.arange(len(m))))
            m = out
        return m, counts

    return prepare


def _check_policies(missing: str, infinite: str) -> None:
    if missing not in MISSING_POLICIES:
        raise UsageError(f"--missing must be one of {', '.join(MISSING_POLICIES)}, got {missing!r}")
    if infinite not in INFINITE_POLICIES:
        raise UsageError(
            f"--infinite must be one of {', '.join(INFINITE_POLICIES)}, got {infinite!r}"
        )


def _bad_target(
    m: np.ndarray,
    bad: np.ndarray,
    kept: np.ndarray | None,
    path: str,
    first_row: int,
    target: str,
    n_feat: int,
    check_target: TargetCheck,
) -> DataError:
    """The error naming the first row whose target ``check_target`` refuses (``bad``)."""
    i = int(np.flatnonzero(bad)[0])
    return DataError(
        f"target value {m[i, n_feat]:g} is not allowed "
        f"(expected {getattr(check_target, 'expected', 'a valid target')})",
        path=path,
        column=target,
        row=first_row + (int(kept[i]) if kept is not None else i) + 1,
    )


def _clean(
    m: np.ndarray,
    counts: np.ndarray,
    path: str,
    first_row: int,
    *,
    columns: Sequence[str],
    has_target: bool,
    missing: str,
    infinite: str,
    fill: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """A chunk with a NaN or an infinity: the error the policies ask for, or the rows kept (with
    their original positions, None if all) and the counts filled in."""
    n_feat = len(counts) - PER_FEATURE
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
