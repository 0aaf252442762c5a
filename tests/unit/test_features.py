"""Features: streaming statistics, the per-chunk prepare function, standardisation and the
map back to original units, checked against numpy."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamgd.batches import BatchStream
from streamgd.decode import Decoder
from streamgd.errors import DataError, UsageError
from streamgd.features import (
    MIN_EIGENVALUE,
    FeatureSpec,
    Stats,
    preconditioner,
    select_features,
)
from streamgd.features.rows import preparer
from streamgd.losses import LOSSES
from streamgd.sources import open_dataset
from streamgd.stats_pass import compute_stats


def _random_data(rng, rows=1200, cols=4, nan_share=0.0):
    x = rng.normal(size=(rows, cols)) * [1.0, 30.0, 0.01, 5.0][:cols] + [3, -200, 0.5, 1e3][:cols]
    if nan_share:
        x[rng.random(x.shape) < nan_share] = np.nan
    return x


def _chunks(x, rng, n_chunks=7):
    """Random non-empty chunks, in order."""
    cuts = np.sort(rng.choice(np.arange(1, len(x)), n_chunks - 1, replace=False))
    return np.split(x, cuts)


def _merged(parts) -> Stats:
    acc = None
    for p in parts:
        s = Stats.of(p)
        acc = s if acc is None else acc.merge(s)
    return acc


# -- Stats -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stats_match_numpy_without_missing_values(seed):
    rng = np.random.default_rng(seed)
    x = _random_data(rng)
    s = _merged(_chunks(x, rng))
    assert s.rows == len(x)
    assert np.array_equal(s.count, [len(x)] * x.shape[1])
    assert np.array_equal(s.missing, np.zeros(x.shape[1]))
    np.testing.assert_allclose(s.mean, x.mean(axis=0), rtol=1e-12, atol=1e-12)
    dev = x - x.mean(axis=0)
    np.testing.assert_allclose(s.comoment, dev.T @ dev, rtol=1e-9)
    np.testing.assert_allclose(s.std, x.std(axis=0, ddof=1), rtol=1e-10)
    np.testing.assert_allclose(s.correlation(3), np.corrcoef(x[:, :3].T), rtol=1e-10, atol=1e-12)


def test_stats_do_not_depend_on_the_chunking():
    rng = np.random.default_rng(3)
    x = _random_data(rng)
    a, b = _merged([x]), _merged(_chunks(x, rng, 40))
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-12)
    np.testing.assert_allclose(a.comoment, b.comoment, rtol=1e-9)


def test_stats_of_one_chunk_with_missing_values_match_nan_aware_numpy():
    rng = np.random.default_rng(4)
    x = _random_data(rng, nan_share=0.1)
    s = Stats.of(x)
    nan = np.isnan(x)
    assert np.array_equal(s.count, (~nan).sum(axis=0))
    assert np.array_equal(s.missing, nan.sum(axis=0))
    np.testing.assert_allclose(s.mean, np.nanmean(x, axis=0), rtol=1e-12)
    np.testing.assert_allclose(s.std, np.nanstd(x, axis=0, ddof=1), rtol=1e-10)
    # the documented convention: missing values count as the mean in the co-moments
    dev = np.where(nan, 0.0, x - np.nanmean(x, axis=0))
    np.testing.assert_allclose(s.comoment, dev.T @ dev, rtol=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_merged_counts_and_means_with_missing_values(seed):
    rng = np.random.default_rng(seed)
    x = _random_data(rng, nan_share=0.1)
    s = _merged(_chunks(x, rng))
    assert s.rows == len(x)
    assert np.array_equal(s.count, (~np.isnan(x)).sum(axis=0))
    assert np.array_equal(s.missing, np.isnan(x).sum(axis=0))
    np.testing.assert_allclose(s.mean, np.nanmean(x, axis=0), rtol=1e-12)


def _column_missing_in_first_chunk(rng):
    x = _random_data(rng)
    x[:400, 3] = np.nan  # mean 1e3, std 5: a feature missing from a whole row group
    return [x[:400], x[400:]], x


def _scattered_missing(rng):
    x = _random_data(rng, nan_share=0.1)
    return _chunks(x, rng), x


@pytest.mark.parametrize("case", [_scattered_missing, _column_missing_in_first_chunk])
def test_merged_std_with_missing_values_matches_nanstd(case):
    parts, x = case(np.random.default_rng(5))
    s = _merged(parts)
    np.testing.assert_allclose(s.std, np.nanstd(x, axis=0, ddof=1), rtol=1e-9)


@pytest.mark.parametrize("where", ["first", "middle"])
def test_an_empty_chunk_changes_nothing(where):
    rng = np.random.default_rng(6)
    x = _random_data(rng)
    parts = [x[:500], x[500:]]
    parts.insert(0 if where == "first" else 1, x[:0])
    s = _merged(parts)
    assert s.rows == len(x)
    np.testing.assert_allclose(s.mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(s.std, x.std(axis=0, ddof=1), rtol=1e-10)


def test_correlation_of_a_constant_column_is_an_identity_row():
    rng = np.random.default_rng(7)
    x = _random_data(rng)
    x[:, 1] = 4.0
    corr = _merged(_chunks(x, rng)).correlation(4)
    assert np.array_equal(corr[1], [0, 1, 0, 0]) and np.array_equal(corr[:, 1], [0, 1, 0, 0])
    keep = [0, 2, 3]
    np.testing.assert_allclose(corr[np.ix_(keep, keep)], np.corrcoef(x[:, keep].T), rtol=1e-9)
    assert np.isfinite(corr).all()


# -- compute_stats over files ---------------------------------------------------------------


def _write_xy(path, x, y, row_group_size):
    cols = {f"x{j}": x[:, j] for j in range(x.shape[1])}
    cols["y"] = pa.array(y, mask=np.isnan(y))
    pq.write_table(pa.table(cols), path, row_group_size=row_group_size)
    return str(path)


def _stats_decoder(names):
    return Decoder.for_statistics(
        names, "y", loss=LOSSES["squared"], missing="impute", infinite="error"
    )


def test_compute_stats_matches_numpy_over_files(tmp_path):
    rng = np.random.default_rng(8)
    x, y = _random_data(rng, rows=1000, cols=3), rng.normal(size=1000)
    a = _write_xy(tmp_path / "a.parquet", x[:600], y[:600], 128)
    b = _write_xy(tmp_path / "b.parquet", x[600:], y[600:], 77)
    names = ["x0", "x1", "x2"]
    s = compute_stats(open_dataset([a, b]), _stats_decoder(names), max_rows=0, seed=0)
    data = np.c_[x, y]
    assert s.rows == 1000
    np.testing.assert_allclose(s.mean, data.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(s.std, data.std(axis=0, ddof=1), rtol=1e-10)


def test_compute_stats_with_a_row_limit_reads_whole_seeded_row_groups(tmp_path):
    rng = np.random.default_rng(9)
    x, y = _random_data(rng, rows=1000, cols=2), rng.normal(size=1000)
    path = _write_xy(tmp_path / "a.parquet", x, y, 100)
    names = ["x0", "x1"]
    ds = open_dataset([path])

    def run(seed):
        return compute_stats(ds, _stats_decoder(names), max_rows=300, seed=seed)

    s = run(1)
    assert s.rows == 300
    data = np.c_[x, y]
    # its means are those of some 3 of the 10 row groups: find which
    means = {
        combo: data[np.r_[tuple(slice(100 * g, 100 * g + 100) for g in combo)]].mean(axis=0)
        for combo in itertools.combinations(range(10), 3)
    }
    matches = [c for c, m in means.items() if np.allclose(m, s.mean, rtol=1e-12, atol=1e-12)]
    assert len(matches) == 1 and matches[0] != (0, 1, 2)  # not simply the first three
    np.testing.assert_array_equal(run(1).mean, s.mean)


def test_compute_stats_with_a_row_group_of_null_targets(tmp_path):
    rng = np.random.default_rng(10)
    x, y = _random_data(rng, rows=400, cols=2), rng.normal(size=400)
    y[100:200] = np.nan
    path = _write_xy(tmp_path / "a.parquet", x, y, 100)
    names = ["x0", "x1"]
    s = compute_stats(open_dataset([path]), _stats_decoder(names), max_rows=0, seed=0)
    keep = ~np.isnan(y)
    np.testing.assert_allclose(s.mean, np.c_[x, y][keep].mean(axis=0), rtol=1e-12)


# -- preparer ------------------------------------------------------------------------------------

NAMES = ["a", "b", "c"]


def _raw(rng, rows=20):
    return np.c_[rng.normal(size=(rows, 3)), rng.integers(0, 2, rows).astype(float)]


# counts: [rows without a target, rows dropped (--missing drop), missing per feature...]
def test_clean_rows_pass_through_untouched():
    m = _raw(np.random.default_rng(0))
    prepare = preparer(NAMES, "y", missing="impute", fill=np.zeros(3), check_target=None)
    rows, counts = prepare(m.copy(), "f.parquet", 0)
    assert np.array_equal(rows, m) and np.array_equal(counts, [0, 0, 0, 0, 0])


def test_null_targets_are_dropped_and_counted():
    m = _raw(np.random.default_rng(1))
    m[[2, 5, 19], 3] = np.nan
    prepare = preparer(NAMES, "y", missing="impute", fill=np.zeros(3), check_target=None)
    rows, counts = prepare(m.copy(), "f.parquet", 0)
    assert np.array_equal(rows, np.delete(m, [2, 5, 19], axis=0))
    assert np.array_equal(counts, [3, 0, 0, 0, 0])


def test_null_features_are_imputed_with_fill_and_counted_per_column():
    m = _raw(np.random.default_rng(2))
    m[[1, 4, 7], 0] = np.nan
    m[[4], 2] = np.nan
    m[6, 3] = np.nan  # a null target too: its row goes, and so does its imputation count
    m[6, 1] = np.nan
    fill = np.array([10.0, 20.0, 30.0])
    prepare = preparer(NAMES, "y", missing="impute", fill=fill, check_target=None)
    rows, counts = prepare(m.copy(), "f.parquet", 0)
    expected = np.delete(m, 6, axis=0)
    nan = np.isnan(expected)
    expected[nan] = np.broadcast_to(np.r_[fill, np.nan], expected.shape)[nan]
    assert np.array_equal(rows, expected)
    assert np.array_equal(counts, [1, 0, 3, 0, 1])


def test_without_fill_missing_features_stay_nan_for_the_statistics():
    m = _raw(np.random.default_rng(3))
    m[[0, 3], 1] = np.nan
    prepare = preparer(NAMES, "y", missing="impute", fill=None, check_target=None)
    rows, counts = prepare(m.copy(), "f.parquet", 0)
    assert np.array_equal(rows, m, equal_nan=True)
    assert np.array_equal(counts, [0, 0, 0, 2, 0])


@pytest.mark.parametrize(
    "cells,column,row",
    [
        ([(7, 1)], "b", 108),  # first_row 100 + index 7 + 1
        ([(3, 3), (9, 0)], "y", 104),  # the first missing cell in row order wins
        ([(0, 2), (0, 0)], "a", 101),
    ],
)
def test_missing_error_names_column_and_one_based_row(cells, column, row):
    m = _raw(np.random.default_rng(4))
    for r, c in cells:
        m[r, c] = np.nan
    prepare = preparer(NAMES, "y", missing="error", fill=np.zeros(3), check_target=None)
    with pytest.raises(DataError) as info:
        prepare(m, "data/f.parquet", 100)
    err = info.value
    assert (err.path, err.column, err.row) == ("data/f.parquet", column, row)
    assert "data/f.parquet" in str(err) and f"row {row}" in str(err) and column in str(err)


@pytest.mark.parametrize("missing", ["impute", "error"])
@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinity_is_an_error_with_its_place(missing, value):
    m = _raw(np.random.default_rng(5))
    m[2, 0] = np.nan  # a missing value first does not hide the infinity
    m[12, 2] = value
    prepare = preparer(NAMES, "y", missing=missing, fill=np.zeros(3), check_target=None)
    with pytest.raises(DataError) as info:
        prepare(m, "f.csv", 0)
    assert (info.value.column, info.value.row) == ("c", 13)


def test_invalid_logistic_target_is_reported_at_its_original_row():
    loss = LOSSES["logistic"]
    m = _raw(np.random.default_rng(6))
    m[[1, 4], 3] = np.nan  # dropped rows before the bad one shift positions in the chunk
    m[9, 3] = 2.0
    m[15, 3] = 0.5
    prepare = preparer(
        NAMES, "y", missing="impute", fill=np.zeros(3), check_target=loss.invalid_target
    )
    with pytest.raises(DataError) as info:
        prepare(m, "f.parquet", 50)
    assert (info.value.column, info.value.row) == ("y", 60)
    assert "2" in str(info.value)
    # without the null targets, the same row number
    m[[1, 4], 3] = 0.0
    with pytest.raises(DataError) as info:
        prepare(m, "f.parquet", 50)
    assert info.value.row == 60


def test_valid_logistic_targets_pass():
    prepare = preparer(
        NAMES,
        "y",
        missing="impute",
        fill=np.zeros(3),
        check_target=LOSSES["logistic"].invalid_target,
    )
    m = _raw(np.random.default_rng(7))
    rows, _ = prepare(m.copy(), "f", 0)
    assert np.array_equal(rows, m)


def test_data_errors_surface_through_the_stream_with_file_rows(tmp_path):
    """A bad target at row_id 250 of a file with row groups of 100: row 251 of that file."""
    ids = np.arange(400, dtype=float)
    y = (ids % 2).astype(float)
    y[250] = 3.0
    path = str(tmp_path / "f.parquet")
    pq.write_table(pa.table({"x": ids, "y": y}), path, row_group_size=100)
    prepare = preparer(
        ["x"],
        "y",
        missing="impute",
        fill=np.zeros(1),
        check_target=LOSSES["logistic"].invalid_target,
    )
    stream = BatchStream(
        open_dataset([path]),
        Decoder(("x", "y"), prepare),
        epoch=0,
        seed=0,
        batch_size=32,
        shuffle=False,
        buffer_size=0,
    )
    with pytest.raises(DataError) as info:
        for _ in stream:
            pass
    assert (info.value.path, info.value.column, info.value.row) == (path, "y", 251)


def test_prepare_without_target():
    m = _raw(np.random.default_rng(8))[:, :3]
    m[4, 1] = np.nan
    prepare = preparer(
        NAMES,
        "y",
        missing="impute",
        fill=np.array([1.0, 2.0, 3.0]),
        check_target=None,
        has_target=False,
    )
    rows, counts = prepare(m.copy(), "f", 0)
    assert len(rows) == len(m) and rows[4, 1] == 2.0
    assert np.array_equal(counts, [0, 0, 0, 1, 0])


def test_unknown_missing_policy_is_a_usage_error():
    with pytest.raises(UsageError, match="missing"):
        preparer(NAMES, "y", missing="skip", fill=None, check_target=None)


@pytest.mark.parametrize("missing", ["impute", "error"])
def test_large_finite_values_are_not_mistaken_for_missing(missing):
    m = np.array([[1e308, 1.0], [1e308, 0.0], [-5.0, 1.0]])
    prepare = preparer(["a"], "y", missing=missing, fill=np.zeros(1), check_target=None)
    rows, counts = prepare(m.copy(), "f", 0)
    assert np.array_equal(rows, m) and np.array_equal(counts, [0, 0, 0])


# -- select_features ----------------------------------------------------------------------------


def test_select_features():
    schema = pa.schema(
        [("a", pa.float64()), ("s", pa.string()), ("y", pa.int64()), ("b", pa.int8())]
    )
    assert select_features(schema, "y", None, path="f") == ("a", "b")
    assert select_features(schema, "y", ["b", "a", "b"], path="f") == ("b", "a")
    with pytest.raises(UsageError, match="nope"):
        select_features(schema, "nope", None, path="f")
    with pytest.raises(UsageError, match="target"):
        select_features(schema, "y", ["y"], path="f")
    with pytest.raises(DataError) as info:
        select_features(schema, "y", ["s"], path="f")
    assert info.value.column == "s"
    with pytest.raises(DataError) as info:
        select_features(schema, "s", None, path="f")
    assert info.value.column == "s"


# -- preconditioner, FeatureSpec ----------------------------------------------------------------


def test_preconditioner_is_the_inverse_of_a_well_conditioned_correlation():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(500, 5)) @ rng.normal(size=(5, 5)) * 0.3 + rng.normal(size=(500, 5))
    corr = np.corrcoef(x.T)
    assert np.linalg.eigvalsh(corr).min() > 10 * MIN_EIGENVALUE
    np.testing.assert_allclose(preconditioner(corr), np.linalg.inv(corr), rtol=1e-9, atol=1e-12)


def test_preconditioner_of_a_singular_correlation_is_finite_and_bounded():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(300, 3))
    x = np.c_[x, x[:, 0], 2 * x[:, 1] - x[:, 2]]  # a duplicate and a linear combination
    corr = np.corrcoef(x.T)
    p = preconditioner(corr)
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p, p.T, rtol=0, atol=0)
    eig = np.linalg.eigvalsh(p)
    assert eig.min() > 0 and eig.max() <= 1 / MIN_EIGENVALUE * (1 + 1e-9)


def test_to_original_maps_standardised_weights_to_identical_predictions():
    rng = np.random.default_rng(13)
    n = 4
    spec = FeatureSpec(
        names=tuple("abcd"),
        target="y",
        center=rng.normal(size=n) * 50,
        scale=10.0 ** rng.uniform(-2, 2, size=n),
        fill=np.zeros(n),
        target_center=123.0,
        target_scale=7.5,
    )
    w, b = rng.normal(size=n), 0.3
    raw = np.c_[rng.normal(size=(50, n)) * spec.scale + spec.center, np.zeros(50)]
    standardised = spec.target_center + spec.target_scale * (spec.transform(raw) @ w + b)
    coef, intercept = spec.to_original(w, b)
    np.testing.assert_allclose(raw[:, :n] @ coef + intercept, standardised, rtol=1e-10)


def test_from_stats_standardises_with_mean_and_std():
    rng = np.random.default_rng(14)
    data = np.c_[_random_data(rng, cols=3), rng.normal(size=1200) * 4 + 9]
    data[:, 1] = 2.0  # a constant feature is left unscaled
    stats = Stats.of(data)
    spec = FeatureSpec.from_stats(
        ["a", "b", "c"],
        "y",
        stats,
        standardize=True,
        missing="impute",
        scale_target=True,
        precondition=True,
    )
    z = spec.transform(data)
    # the centre is the mean rounded to float32 (so float32 data is centred exactly)
    assert np.array_equal(spec.center, data[:, :3].mean(axis=0).astype(np.float32))
    np.testing.assert_allclose(z[:, [0, 2]].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, [0, 2]].std(axis=0, ddof=1), 1, rtol=1e-10)
    assert np.array_equal(z[:, 1], np.zeros(len(z))) and spec.scale[1] == 1.0
    t = spec.scaled_target(data)
    assert abs(t.mean()) < 1e-6 and abs(t.std(ddof=1) - 1) < 1e-10  # float32-rounded centre
    assert spec.precond is not None and np.isfinite(spec.precond).all()
    plain = FeatureSpec.from_stats(
        ["a", "b", "c"], "y", stats, standardize=False, missing="impute", scale_target=False
    )
    assert np.array_equal(plain.transform(data), data[:, :3])
    assert np.array_equal(plain.scaled_target(data), data[:, 3])
    assert plain.precond is None
    np.testing.assert_allclose(plain.fill, data[:, :3].mean(axis=0), rtol=1e-12)
