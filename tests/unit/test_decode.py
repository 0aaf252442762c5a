"""The Decoder: the one path from an Arrow piece to prepared rows, checked against a numpy
oracle written from the documented policies (centre, impute, drop null targets, select),
not against the implementation's own helpers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamgd.batches import Prefetcher
from streamgd.decode import Decoder
from streamgd.errors import DataError
from streamgd.features import Categorical, FeatureSpec
from streamgd.features.rows import PER_FEATURE
from streamgd.holdout import holdout_mask
from streamgd.losses import LOSSES
from streamgd.model import Model
from streamgd.sources import open_dataset

PATH = "part-0.parquet"
FIRST_ROW = 1000  # the piece's first row within its file
ROWS = 400


def _values(seed: int = 0) -> dict[str, np.ndarray]:
    """Features with nulls and infinities, a 0/1 target with nulls, a categorical column."""
    rng = np.random.default_rng(seed)
    a = rng.normal(5.0, 2.0, ROWS)
    b = rng.normal(-300.0, 40.0, ROWS)
    y = rng.integers(0, 2, ROWS).astype(float)
    a[rng.choice(ROWS, 30, replace=False)] = np.nan
    b[rng.choice(ROWS, 20, replace=False)] = np.nan
    a[rng.choice(ROWS, 5, replace=False)] = np.inf
    y[rng.choice(ROWS, 25, replace=False)] = np.nan
    colour = rng.choice(["red", "green", "blue", "mauve"], ROWS)
    return {"a": a, "b": b, "y": y, "colour": colour}


def _table(values: dict[str, np.ndarray], *, target: bool = True) -> pa.Table:
    columns = {
        "a": pa.array(values["a"], mask=np.isnan(values["a"])),  # nulls, and inf kept as inf
        "b": pa.array(values["b"], mask=np.isnan(values["b"])),
        "colour": pa.array(values["colour"]),
    }
    if target:
        columns["y"] = pa.array(values["y"], mask=np.isnan(values["y"]))
    return pa.table(columns)


def _spec(**kw) -> FeatureSpec:
    base = dict(
        names=("a", "b"),
        target="y",
        center=np.array([5.0, -300.0]),
        scale=np.array([2.0, 40.0]),
        fill=np.array([5.25, -301.5]),
        missing="impute",
        target_center=0.0,
        infinite="missing",
        categoricals=(Categorical("colour", vocabulary=("blue", "red")),),
    )
    return FeatureSpec(**(base | kw))


def _select(path: str, rows: np.ndarray) -> np.ndarray:
    return ~holdout_mask(path, rows, 0.3)


def _oracle(values, spec: FeatureSpec, *, dtype, center: bool, select=None, target=True):
    """Prepared rows and counts as the policies say, in plain numpy."""
    x = np.c_[values["a"], values["b"]]
    x = np.where(np.isinf(x), np.nan, x)  # --infinite missing
    y = values["y"]
    keep = ~np.isnan(y) if target else np.ones(ROWS, bool)
    counts = np.zeros(PER_FEATURE + 2, dtype=np.int64)
    counts[0] = ROWS - keep.sum()
    counts[PER_FEATURE:] = np.isnan(x[keep]).sum(axis=0)
    filled = np.where(np.isnan(x), spec.fill, x)
    codes = np.array([{"blue": 0, "red": 1}.get(c, 2) for c in values["colour"]], float)
    if center:
        cols = [filled - spec.center]
        cols += [(y - spec.target_center)[:, None]] if target else []
    else:
        cols = [filled] + ([y[:, None]] if target else [])
    cols += [codes[:, None]] if center else []
    rows = np.concatenate(cols, axis=1).astype(dtype)
    if select is not None:
        keep &= select(PATH, FIRST_ROW + np.arange(ROWS))
    return rows[keep], counts


@pytest.mark.parametrize(("loss", "target_center"), [("logistic", 0.0), ("squared", 0.5)])
def test_training_decoder_equals_the_policies_in_numpy(loss, target_center):
    values, spec = _values(), _spec(target_center=target_center)
    decoder = Decoder.for_training(spec, loss=LOSSES[loss], select=_select)
    rows, counts = decoder.decode(_table(values), PATH, FIRST_ROW)
    expected, expected_counts = _oracle(values, spec, dtype=np.float32, center=True, select=_select)
    assert rows.dtype == np.float32 and rows.flags.f_contiguous
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_array_equal(counts, expected_counts)
    assert decoder.columns == ("a", "b", "y", "colour")


def test_training_decoder_drops_rows_with_a_missing_feature_under_missing_drop():
    values, spec = _values(1), _spec(missing="drop")
    rows, counts = Decoder.for_training(spec, loss=LOSSES["logistic"]).decode(
        _table(values), PATH, FIRST_ROW
    )
    x = np.c_[values["a"], values["b"]]
    has_target = ~np.isnan(values["y"])
    complete = has_target & np.isfinite(x).all(axis=1)
    assert len(rows) == complete.sum()
    assert counts[1] == (has_target & ~complete).sum()  # dropped for a missing feature
    np.testing.assert_array_equal(rows[:, :2], (x[complete] - spec.center).astype(np.float32))


def test_training_decoder_reuses_the_buffer_it_is_given():
    values = _values(2)
    values["a"] = np.nan_to_num(values["a"], nan=1.0, posinf=1.0)
    values["b"] = np.nan_to_num(values["b"], nan=1.0)
    values["y"] = np.nan_to_num(values["y"], nan=1.0)
    decoder = Decoder.for_training(_spec(), loss=LOSSES["logistic"])
    out = np.empty((ROWS + 10, len(decoder.columns)), np.float32, order="F")
    rows, _ = decoder.decode(_table(values), PATH, 0, out=out)
    assert np.shares_memory(rows, out) and len(rows) == ROWS  # no copy when nothing is cleaned


def test_training_decoder_names_the_row_of_a_bad_target():
    values = _values(3)
    values["y"][7] = 2.0
    decoder = Decoder.for_training(_spec(), loss=LOSSES["logistic"])
    with pytest.raises(DataError) as info:
        decoder.decode(_table(values), PATH, FIRST_ROW)
    assert (info.value.path, info.value.column) == (PATH, "y")
    assert info.value.row == FIRST_ROW + 7 + 1


def _model(spec: FeatureSpec, loss: str = "logistic") -> Model:
    return Model(spec=spec, loss=loss, weights=np.zeros(len(spec.names)), intercept=0.0)


def test_scoring_decoder_reads_raw_values_with_the_models_policy():
    values, spec = _values(4), _spec(categoricals=())
    decoder = Decoder.for_scoring(_model(spec), select=_select)
    rows, counts = decoder.decode(_table(values), PATH, FIRST_ROW)
    expected, expected_counts = _oracle(
        values, spec, dtype=np.float64, center=False, select=_select
    )
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_array_equal(counts, expected_counts)


def test_prediction_decoder_needs_no_target_and_keeps_every_row():
    values, spec = _values(5), _spec(missing="drop", categoricals=())
    decoder = Decoder.for_prediction(_model(spec))
    rows, counts = decoder.decode(_table(values, target=False), PATH, FIRST_ROW)
    expected, _ = _oracle(values, spec, dtype=np.float64, center=False, target=False)
    assert decoder.columns == ("a", "b") and len(rows) == ROWS  # --missing drop imputes here
    np.testing.assert_array_equal(rows, expected)
    assert counts[0] == 0


def test_statistics_decoder_leaves_missing_values_and_encodes_class_labels():
    values = _values(6)
    labels = np.where(values["y"] == 1, "yes", "no").astype(object)
    labels[np.isnan(values["y"])] = None
    table = _table(values).set_column(3, "y", pa.array(labels.tolist(), pa.string()))
    decoder = Decoder.for_statistics(
        ("a", "b"),
        "y",
        loss=LOSSES["softmax"],
        missing="impute",
        infinite="missing",
        classes=("no", "yes"),
    )
    rows, counts = decoder.decode(table, PATH, 0)
    has_target = ~np.isnan(values["y"])
    x = np.c_[values["a"], values["b"]][has_target]
    np.testing.assert_array_equal(rows[:, :2], np.where(np.isinf(x), np.nan, x))  # NaN kept
    np.testing.assert_array_equal(rows[:, 2], values["y"][has_target])  # "yes" is class 1
    assert counts[0] == (~has_target).sum()


def test_the_prefetcher_yields_what_the_decoder_decodes(tmp_path):
    """The prefetcher (one process) and a Dask worker (decode piece by piece) agree."""
    values = _values(7)
    path = str(tmp_path / PATH)
    pq.write_table(_table(values), path, row_group_size=150)
    dataset = open_dataset([path])
    decoder = Decoder.for_training(_spec(), loss=LOSSES["logistic"], select=_select)
    direct = [
        decoder.decode(table, path, first_row)
        for unit in dataset.units
        for table, first_row in dataset.iter_unit(unit, decoder.columns)
    ]
    prefetch = Prefetcher(dataset, range(len(dataset.units)), decoder)
    try:
        chunks = [(c.rows.copy(), c.counts) for c in prefetch]
    finally:
        prefetch.close()
    assert len(chunks) == len(direct) == 3
    for (rows, counts), (want, want_counts) in zip(chunks, direct, strict=True):
        np.testing.assert_array_equal(rows, want)
        np.testing.assert_array_equal(counts, want_counts)
