"""The statistics pass's footprint: pieces decoded in float32 where that is exact, summarised in
float64 blocks of at most ``BLOCK_ROWS`` rows, and statistics that still match numpy's."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamgd import stats_pass
from streamgd.decode import Decoder
from streamgd.features import Stats
from streamgd.features.outliers import Screen
from streamgd.losses import LOSSES
from streamgd.sources import open_dataset
from streamgd.stats_pass import compute_class_stats, compute_stats, float32_exact, pass_dtype

NAMES = ["x0", "x1", "x2"]


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 256 rows, so that small files have pieces of several blocks."""
    monkeypatch.setattr(stats_pass, "BLOCK_ROWS", 256)
    return 256


def _write(path, columns: dict, row_group_size: int) -> str:
    arrays = {k: pa.array(v, mask=np.isnan(v)) for k, v in columns.items()}
    pq.write_table(pa.table(arrays), path, row_group_size=row_group_size)
    return str(path)


def _data(rng, rows, *, missing=0.0):
    """float32 features (some missing) and a float32 target, as float32 arrays."""
    x = (rng.normal(size=(rows, 3)) * [1.0, 1e3, 1e-3] + [5.0, -2e4, 0.0]).astype(np.float32)
    x[rng.random(x.shape) < missing] = np.nan
    y = (x[:, 0] * 2 + rng.normal(size=rows)).astype(np.float32)
    y[np.isnan(y)] = 0.5
    return x, y


def _decoder(dtype, **kwargs):
    return Decoder.for_statistics(
        NAMES,
        "y",
        loss=LOSSES["squared"],
        missing="impute",
        infinite="error",
        dtype=dtype,
        **kwargs,
    )


def _file(tmp_path, x, y, group, name="a.parquet", **extra):
    cols = {n: x[:, j] for j, n in enumerate(NAMES)} | {"y": y} | extra
    return _write(tmp_path / name, cols, group)


def test_float32_exact_types():
    exact = [pa.float16(), pa.float32(), pa.int8(), pa.int16(), pa.uint8(), pa.uint16()]
    exact += [pa.bool_(), pa.null()]
    inexact = [pa.float64(), pa.int32(), pa.uint32(), pa.int64(), pa.uint64(), pa.decimal128(5)]
    inexact += [pa.date32(), pa.timestamp("s"), pa.duration("ms"), pa.string()]
    assert all(float32_exact(t) for t in exact)
    assert not any(float32_exact(t) for t in inexact)
    # the claim itself: the extremes of each exact integer type survive float32
    for t in (pa.int16(), pa.uint16()):
        lo, hi = np.iinfo(t.to_pandas_dtype()).min, np.iinfo(t.to_pandas_dtype()).max
        v = np.array([lo, hi, lo + 1, hi - 1], dtype=np.float64)
        assert np.array_equal(v.astype(np.float32).astype(np.float64), v)


def test_pass_dtype():
    schema = pa.schema(
        [("a", pa.float32()), ("b", pa.int16()), ("c", pa.float64()), ("k", pa.string())]
    )
    assert pass_dtype(schema, ["a", "b"]) is np.float32
    assert pass_dtype(schema, ["a", "c"]) is np.float64  # float64 data keeps float64
    assert pass_dtype(schema, ["a", "k"]) is np.float64
    assert pass_dtype(schema, ["a", "k"], converted=["k"]) is np.float32  # class codes
    assert pass_dtype(schema, ["a", "derived"]) is np.float64  # not a column of the files
    assert pass_dtype(schema, ["a"], derived=True) is np.float64
    assert pass_dtype(schema, ["a"], clip=True) is np.float64


@pytest.mark.parametrize("missing", [0.0, 0.05])
def test_float32_pieces_give_the_statistics_of_float64_ones_bit_for_bit(
    tmp_path, small_blocks, missing
):
    rng = np.random.default_rng(1)
    x, y = _data(rng, 3000, missing=missing)
    ds = open_dataset([_file(tmp_path, x, y, 1000)])
    a = compute_stats(ds, _decoder(np.float32), max_rows=0, seed=0)
    b = compute_stats(ds, _decoder(np.float64), max_rows=0, seed=0)
    for field in ("count", "mean", "comoment", "missing"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_blocked_statistics_match_numpy(tmp_path, small_blocks):
    rng = np.random.default_rng(2)
    x, y = _data(rng, 3000)
    # pieces of several blocks and a partial last one, then small pieces summed together
    ds = open_dataset(
        [
            _file(tmp_path, x[:2100], y[:2100], 700),
            _file(tmp_path, x[2100:], y[2100:], 100, "b.parquet"),
        ]
    )
    s = compute_stats(ds, _decoder(np.float32), max_rows=0, seed=0)
    data = np.c_[x, y].astype(np.float64)
    assert s.rows == 3000
    np.testing.assert_allclose(s.mean, data.mean(axis=0), rtol=1e-13, atol=1e-13)
    cov = np.cov(data, rowvar=False)
    np.testing.assert_allclose(s.comoment / 2999, cov, rtol=1e-11, atol=1e-12 * np.abs(cov).max())
    np.testing.assert_allclose(s.std, data.std(axis=0, ddof=1), rtol=1e-12)


def test_blocked_statistics_with_missing_values_match_nan_aware_numpy(tmp_path, small_blocks):
    rng = np.random.default_rng(3)
    x, y = _data(rng, 2500, missing=0.1)
    ds = open_dataset([_file(tmp_path, x, y, 900)])
    s = compute_stats(ds, _decoder(np.float32), max_rows=0, seed=0)
    data = np.c_[x, y].astype(np.float64)
    np.testing.assert_array_equal(s.count, (~np.isnan(data)).sum(axis=0))
    np.testing.assert_allclose(s.mean, np.nanmean(data, axis=0), rtol=1e-13)
    np.testing.assert_allclose(s.std, np.nanstd(data, axis=0, ddof=1), rtol=1e-12)


def test_blocked_weighted_statistics_match_numpy(tmp_path, small_blocks):
    rng = np.random.default_rng(4)
    x, y = _data(rng, 2000)
    w = rng.uniform(0.1, 3.0, 2000).astype(np.float32)
    ds = open_dataset([_file(tmp_path, x, y, 800, w=w)])
    decoder = _decoder(np.float32, weight="w")
    s = compute_stats(ds, decoder, max_rows=0, seed=0, weighted=True)
    data, wd = np.c_[x, y].astype(np.float64), w.astype(np.float64)
    mean = (wd[:, None] * data).sum(axis=0) / wd.sum()
    dev = data - mean
    comoment = (dev * wd[:, None]).T @ dev
    np.testing.assert_allclose(s.mean, mean, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(
        s.comoment, comoment, rtol=1e-11, atol=1e-12 * np.abs(comoment).max()
    )
    assert s.weight_total == pytest.approx(wd.sum(), rel=1e-14)


def test_blocked_class_statistics_match_numpy(tmp_path, small_blocks):
    rng = np.random.default_rng(5)
    x, _ = _data(rng, 2000)
    labels = rng.integers(0, 3, 2000)
    y = np.array(["a", "b", "c"])[labels]
    path = tmp_path / "k.parquet"
    cols = {n: pa.array(x[:, j]) for j, n in enumerate(NAMES)} | {"y": pa.array(y)}
    pq.write_table(pa.table(cols), path, row_group_size=700)
    ds = open_dataset([str(path)])
    assert pass_dtype(ds.schema, [*NAMES, "y"], converted=["y"]) is np.float32
    decoder = Decoder.for_statistics(
        NAMES,
        "y",
        loss=LOSSES["softmax"],
        missing="impute",
        infinite="error",
        classes=("a", "b", "c"),
        dtype=np.float32,
    )
    parts = compute_class_stats(ds, decoder, max_rows=0, seed=0, weighted=False, n_classes=3)
    for c, part in enumerate(parts):
        rows = np.c_[x[labels == c].astype(np.float64), np.full((labels == c).sum(), c)]
        assert part.rows == len(rows)
        np.testing.assert_allclose(part.mean, rows.mean(axis=0), rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(part.std, rows.std(axis=0, ddof=1), rtol=1e-12, atol=1e-15)


def test_the_float64_memory_is_one_block_whatever_the_piece(tmp_path, monkeypatch):
    """By design, not by measurement: the pieces stay float32, and every matrix the
    statistics are computed on (float64) has at most BLOCK_ROWS rows."""
    monkeypatch.setattr(stats_pass, "BLOCK_ROWS", 512)
    rng = np.random.default_rng(6)
    x, y = _data(rng, 6000)
    ds = open_dataset([_file(tmp_path, x, y, 6000)])  # one piece of 6000 rows
    seen, of = [], Stats.of

    def recording(m, **kwargs):
        seen.append((m.shape[0], m.dtype))
        return of(m, **kwargs)

    monkeypatch.setattr(Stats, "of", staticmethod(recording))
    decoded, merged = [], stats_pass._merged

    def merging(acc, summarise, m):
        if m is not None and len(m):
            decoded.append((len(m), m.dtype))
        return merged(acc, summarise, m)

    monkeypatch.setattr(stats_pass, "_merged", merging)
    s = compute_stats(ds, _decoder(np.float32), max_rows=0, seed=0)
    assert s.rows == 6000
    assert decoded == [(6000, np.dtype(np.float32))]  # the piece, as decoded
    assert len(seen) == -(-6000 // 512)
    assert max(n for n, _ in seen) == 512 and {d for _, d in seen} == {np.dtype(np.float64)}


@pytest.mark.parametrize("policy", ["warn", "error"])
def test_the_outlier_screen_sees_float32_pieces_as_float64_ones(policy):
    rng = np.random.default_rng(7)
    m = rng.normal(size=(3000, 2)).astype(np.float32)
    m[rng.random(m.shape) < 0.01] = np.nan
    if policy == "warn":
        m[17, 0] = 3e4  # an outlier, under the hard limit
    found = []
    for dtype in (np.float32, np.float64):
        screen = Screen(("a", "b"), np.array([True, True]), policy)
        out = screen(np.asfortranarray(m.astype(dtype)), "f", 0)
        found.append((screen.median, screen.spread, screen.seen, out.astype(np.float64)))
    (m32, s32, seen32, out32), (m64, s64, seen64, out64) = found
    np.testing.assert_array_equal(m32, m64)
    np.testing.assert_array_equal(s32, s64)
    assert seen32 == seen64
    np.testing.assert_array_equal(out32, out64)
