"""Streaming metrics in bounded memory: sums and fixed-size histograms, merged batch by batch.

Metrics follow the loss's task; ``margin`` (the hinge loss) scores classes by the sign of the
decision score and has no log loss.

Regression: ``mse``, ``rmse``, ``mae``, ``r2``. Binary classification (``p`` a probability of
class 1): ``logloss``, ``accuracy``, ``precision``, ``recall``, ``f1``, ``auc``. The AUC is
computed from histograms of the logit in ``AUC_BINS`` bins over ``[-AUC_RANGE, AUC_RANGE]``;
ties within a bin count one half, so it differs from the exact AUC by less than the share of
positive/negative pairs that fall in one bin.
"""

from __future__ import annotations

import numpy as np

from .losses import identity

__all__ = ["METRICS", "Accumulator", "StackedMetrics", "metric_names"]

AUC_BINS = 1 << 14
AUC_RANGE = 20.0
_EPS = 1e-15

METRICS = {
    "regression": ("mse", "rmse", "mae", "r2"),
    "binary": ("logloss", "accuracy", "precision", "recall", "f1", "auc"),
    # a decision score (hinge): class 1 when the score is positive; no probability, no logloss
    "margin": ("accuracy", "precision", "recall", "f1", "auc"),
    # class codes against (rows, classes) probabilities
    "multiclass": ("logloss", "accuracy"),
}


def metric_names(task: str) -> tuple[str, ...]:
    return METRICS[task]


class Accumulator:
    """Accumulates the metrics of one task over batches; ``result()`` gives a dict.

    Weighted metrics: an update with ``weight`` (one per row) counts each row by its weight
    (the sums, the AUC histograms, the target's mean and spread, and the total that means
    divide by, ``total``); an accumulator is either weighted or not throughout.
    """

    def __init__(self, task: str, *, auc: bool = True) -> None:
        self.task = task
        self.auc = auc  # the AUC histogram costs two bincounts a batch; training skips it
        self.n = 0
        self.sums = np.zeros(6)  # regression: err2, |err| / binary: logloss, tp, fp, tn, fn
        self.y_mean = 0.0  # regression: running mean and sum of squared deviations of y
        self.y_m2 = 0.0
        self.total: float | None = None  # weighted: the rows' summed weight
        if task in ("binary", "margin"):
            self.hist = np.zeros((2, AUC_BINS), dtype=np.int64)

    def state(self) -> dict[str, np.ndarray]:
        """Everything accumulated so far, as arrays (for checkpoints)."""
        out = {
            "n": np.asarray(self.n),
            "sums": self.sums.copy(),
            "y": np.array([self.y_mean, self.y_m2]),
        }
        if hasattr(self, "hist"):
            out["hist"] = self.hist.copy()
        if self.total is not None:
            out["total"] = np.asarray(self.total)
        return out

    @classmethod
    def restore(cls, task: str, state: dict[str, np.ndarray], *, auc: bool = True) -> Accumulator:
        acc = cls(task, auc=auc)
        acc.n, acc.sums = int(state["n"]), state["sums"].copy()
        acc.y_mean, acc.y_m2 = (float(v) for v in state["y"])
        if "hist" in state:
            acc.hist = state["hist"].copy()
        if "total" in state:
            acc.total = float(state["total"])
        return acc

    def update_scaled(
        self, t, p, unit: float, center: float, link, *, weight=None, residual=None
    ) -> None:
        """``update(t * unit + center, link(p * unit + center), weight)`` for a batch in
        training units (the trainer's standardised target); for regression (identity link)
        without forming either, since the error and the target's spread only scale by
        ``unit``. ``residual``: ``p - t`` when the caller has it (the step's, see
        :class:`~streamgd.solvers.BatchUpdate`)."""
        if self.task != "regression" or link is not identity or len(t) == 0 or weight is not None:
            self.update(t * unit + center, link(p * unit + center), weight)
            return
        n0, n = self.n, len(t)
        self.n += n
        err = p - t if residual is None else residual  # float64
        self.sums[0] += float(err @ err) * (unit * unit)
        self.sums[1] += float(np.add.reduce(np.abs(err))) * unit
        mean_t = float(np.add.reduce(t, dtype=np.float64)) / n
        dev = t - np.float64(mean_t)  # float64
        mean = mean_t * unit + center
        delta = mean - self.y_mean
        self.y_m2 += float(dev @ dev) * (unit * unit) + delta * delta * n0 * n / self.n
        self.y_mean += delta * n / self.n

    def update(self, y: np.ndarray, p: np.ndarray, weight: np.ndarray | None = None) -> None:
        if len(y) == 0:
            return
        if weight is not None:
            self._update_weighted(y, p, np.asarray(weight, dtype=np.float64))
            return
        n0 = self.n
        self.n += len(y)
        if self.task == "multiclass":
            codes = np.asarray(y).astype(np.int64)
            picked = np.clip(p[np.arange(len(codes)), codes], _EPS, 1.0)
            correct = np.count_nonzero(p.argmax(axis=1) == codes)
            self.sums += [-np.log(picked).sum(), correct, 0.0, 0.0, 0.0, 0.0]
            return
        if self.task == "regression":  # once per training batch: kept to few numpy calls
            err = p - y
            self.sums[0] += err @ err
            self.sums[1] += np.abs(err).sum()
            # Chan's merge: exact even when the target's mean dwarfs its spread
            mean = float(y.sum()) / len(y)  # y.mean() to the bit, without its Python layer
            dev = y - mean
            delta = mean - self.y_mean
            self.y_m2 += float(dev @ dev) + delta * delta * n0 * len(y) / self.n
            self.y_mean += delta * len(y) / self.n
            return
        if self.task == "margin":  # a monotone map of the score: same AUC, threshold 0 -> 0.5
            p = 0.5 * (1.0 + np.tanh(0.5 * np.clip(p, -40, 40)))
        q = np.clip(p, _EPS, 1.0 - _EPS)
        logloss = -(y * np.log(q) + (1.0 - y) * np.log1p(-q)).sum()
        pred = p >= 0.5
        pos = y == 1.0
        tp = np.count_nonzero(pred & pos)
        fp = np.count_nonzero(pred & ~pos)
        fn = np.count_nonzero(~pred & pos)
        self.sums += [logloss, tp, fp, len(y) - tp - fp - fn, fn, 0.0]
        if not self.auc:
            return
        logit = np.log(q) - np.log1p(-q)
        idx = ((logit + AUC_RANGE) * (AUC_BINS / (2 * AUC_RANGE))).astype(np.int64)
        np.clip(idx, 0, AUC_BINS - 1, out=idx)
        self.hist[1] += np.bincount(idx[pos], minlength=AUC_BINS)
        self.hist[0] += np.bincount(idx[~pos], minlength=AUC_BINS)

    def _update_weighted(self, y: np.ndarray, p: np.ndarray, w: np.ndarray) -> None:
        """:meth:`update` counting each row by its weight ``w``."""
        before = self.total or 0.0
        batch = float(w.sum())
        self.n += len(y)
        self.total = before + batch
        if self.task == "multiclass":
            codes = np.asarray(y).astype(np.int64)
            picked = np.clip(p[np.arange(len(codes)), codes], _EPS, 1.0)
            correct = float(w[p.argmax(axis=1) == codes].sum())
            self.sums += [-(w * np.log(picked)).sum(), correct, 0.0, 0.0, 0.0, 0.0]
            return
        if self.task == "regression":
            err = p - y
            self.sums[0] += (w * err) @ err
            self.sums[1] += w @ np.abs(err)
            if batch > 0:  # the weighted Chan merge of the target's mean and spread
                mean = float(w @ y) / batch
                dev = y - mean
                delta = mean - self.y_mean
                self.y_m2 += float((w * dev) @ dev) + delta * delta * before * batch / self.total
                self.y_mean += delta * batch / self.total
            return
        if self.task == "margin":
            p = 0.5 * (1.0 + np.tanh(0.5 * np.clip(p, -40, 40)))
        q = np.clip(p, _EPS, 1.0 - _EPS)
        logloss = -(w * (y * np.log(q) + (1.0 - y) * np.log1p(-q))).sum()
        pred = p >= 0.5
        pos = y == 1.0
        tp, fp = w[pred & pos].sum(), w[pred & ~pos].sum()
        tn, fn = w[~pred & ~pos].sum(), w[~pred & pos].sum()
        self.sums += [logloss, tp, fp, tn, fn, 0.0]
        if not self.auc:
            return
        logit = np.log(q) - np.log1p(-q)
        idx = ((logit + AUC_RANGE) * (AUC_BINS / (2 * AUC_RANGE))).astype(np.int64)
        np.clip(idx, 0, AUC_BINS - 1, out=idx)
        self.hist = self.hist.astype(np.float64, copy=False)
        self.hist[1] += np.bincount(idx[pos], weights=w[pos], minlength=AUC_BINS)
        self.hist[0] += np.bincount(idx[~pos], weights=w[~pos], minlength=AUC_BINS)

    def result(self) -> dict[str, float]:
        n = max(self.n, 1) if self.total is None else (self.total if self.total > 0 else 1.0)
        if self.task == "regression":
            err2, abs_err = self.sums[:2]
            sst = self.y_m2
            mse = err2 / n
            return {
                "mse": mse,
                "rmse": float(np.sqrt(mse)),
                "mae": abs_err / n,
                "r2": float(1.0 - err2 / sst) if sst > 0 else float("nan"),
            }
        if self.task == "multiclass":
            return {"logloss": self.sums[0] / n, "accuracy": self.sums[1] / n}
        logloss, tp, fp, tn, fn = self.sums[:5]
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        result = {
            "logloss": logloss / n,
            "accuracy": (tp + tn) / n,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "auc": _auc(self.hist[1], self.hist[0]) if self.auc else float("nan"),
        }
        if not self.auc:
            del result["auc"]
        return {k: v for k, v in result.items() if k in METRICS[self.task]}


class StackedMetrics:
    """The running training metrics of several models on the same rows (a grid's stacked
    group, see :mod:`streamgd.search.stacked`): :meth:`Accumulator.update_scaled` of each
    model's predictions, a row of ``p`` (models, rows), as array operations over all of them
    (the target's statistics once), the same bits per model. Regression with the identity
    link and binary classification, unweighted; any other accumulator is updated on its own.
    :meth:`write` puts the sums back into the accumulators."""

    def __init__(self, accs: list[Accumulator], unit: float, center: float, link) -> None:
        self.accs, self.unit, self.center, self.link = list(accs), unit, center, link
        first = accs[0]
        # the models see the same rows: one count and one target mean and spread for all
        same = all(
            (a.n, a.y_mean, a.y_m2, a.total) == (first.n, first.y_mean, first.y_m2, None)
            for a in accs
        )
        self.kind = None
        if same and first.task == "regression" and link is identity:
            self.kind = "regression"
        elif same and first.task == "binary":
            self.kind = "binary"
        self.n, self.y_mean, self.y_m2 = first.n, first.y_mean, first.y_m2
        self.sums = np.stack([a.sums for a in accs])

    def update(self, t: np.ndarray, p: np.ndarray) -> None:
        """Add a batch: target ``t`` (rows,) in training units, predictions ``p``."""
        if self.kind is None or len(t) == 0:
            for acc, row in zip(self.accs, p, strict=True):
                acc.update_scaled(t, row, self.unit, self.center, self.link)
            return
        n, unit = len(t), self.unit
        n0 = self.n
        self.n += n
        if self.kind == "binary":  # Accumulator.update of link(p * unit + center)
            y = t * unit + self.center
            prob = self.link(p * unit + self.center)
            q = np.clip(prob, _EPS, 1.0 - _EPS)
            logloss = -(y * np.log(q) + (1.0 - y) * np.log1p(-q)).sum(axis=1)
            pred = prob >= 0.5
            pos = y == 1.0
            tp = np.count_nonzero(pred & pos, axis=1)
            fp = np.count_nonzero(pred & ~pos, axis=1)
            fn = np.count_nonzero(~pred & pos, axis=1)
            zero = np.zeros(len(p))
            self.sums += np.stack([logloss, tp, fp, n - tp - fp - fn, fn, zero], axis=1)
            return
        # the regression branch of Accumulator.update_scaled, per row of p
        err = p - t  # float64
        self.sums[:, 0] += np.matmul(err[:, None, :], err[:, :, None])[:, 0, 0] * (unit * unit)
        self.sums[:, 1] += np.add.reduce(np.abs(err), axis=1) * unit
        mean_t = float(np.add.reduce(t, dtype=np.float64)) / n
        dev = t - np.float64(mean_t)  # float64
        mean = mean_t * unit + self.center
        delta = mean - self.y_mean
        self.y_m2 += float(dev @ dev) * (unit * unit) + delta * delta * n0 * n / self.n
        self.y_mean += delta * n / self.n

    def write(self, row: int) -> None:
        """Put model ``row``'s sums back into its accumulator."""
        if self.kind is None:
            return
        acc = self.accs[row]
        acc.n, acc.sums = self.n, self.sums[row].copy()
        if self.kind == "regression":
            acc.y_mean, acc.y_m2 = self.y_mean, self.y_m2

    def take(self, keep: np.ndarray) -> None:
        """Keep the models of the boolean mask ``keep`` (the others left the group)."""
        self.accs = [a for a, k in zip(self.accs, keep, strict=True) if k]
        self.sums = self.sums[keep]


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count 1/2)."""
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    wins = (pos * neg_below).sum() + 0.5 * (pos * neg).sum()
    return float(wins / (n_pos * n_neg))
