"""Unit tests of the pieces that handle surprising data: outlier screening and bounds,
overflow-safe statistics, float conversion of every numeric and time type, CSV sniffing
(byte-order marks, ``sep=`` lines), text columns that are numbers, schema unification of
duplicate and partial columns, and the neutral "(other)" weight."""

from __future__ import annotations

import datetime
import decimal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from streamgd.decode import as_float
from streamgd.errors import DataError
from streamgd.features import Categorical, Stats
from streamgd.features.outliers import (
    HARD_LIMIT,
    OutlierNotes,
    Screen,
    guard,
    policy_bounds,
    reference,
)
from streamgd.sources.csv import numbers_as_text
from streamgd.sources.csv_options import sniff
from streamgd.sources.schema import missing_in, unify


# -- outliers -----------------------------------------------------------------------------------
def test_reference_is_median_and_interquartile_range_with_fallbacks():
    x = np.array([[1.0, 0.0, 5.0], [2.0, 0.0, 5.0], [3.0, 0.0, 5.0], [4.0, 1.0, 5.0], [np.nan] * 3])
    median, spread = reference(x)
    assert median.tolist() == [2.5, 0.0, 5.0]
    assert spread.tolist() == [1.5, 0.25, 1.0]  # IQR; mean |x - median|; constant: 1


def test_policy_bounds_widen_to_the_hard_limit_under_warn():
    low, high = policy_bounds(np.array([10.0]), np.array([2.0]), "clip")
    assert (low[0], high[0]) == (-190.0, 210.0)
    low, high = policy_bounds(np.array([10.0]), np.array([2.0]), "warn")
    assert (low[0], high[0]) == (10.0 - HARD_LIMIT, 10.0 + HARD_LIMIT)


def screen(policy: str) -> Screen:
    return Screen(("a", "y"), np.array([True, False]), policy)


def base(n: int = 100) -> np.ndarray:
    return np.column_stack([np.linspace(0, 1, n), np.full(n, 1e300)])  # y is not checked


@pytest.mark.parametrize("policy", ["warn", "clip", "error"])
def test_screen_per_policy(policy):
    s = screen(policy)
    s(base(), "f.parquet", 0)
    piece = base()
    piece[3, 0] = 1e6  # an outlier but not beyond the hard limit
    if policy == "error":
        with pytest.raises(DataError, match="row 104") as info:
            s(piece, "f.parquet", 100)
        assert info.value.column == "a"
        return
    out = s(piece, "f.parquet", 100)
    assert out[3, 0] == (1e6 if policy == "warn" else 0.5 + 100 * 0.5)
    (message,) = s.warnings(np.array([1.0, 0.0]))
    assert "f.parquet" in message and "'a'" in message and "row 104" in message
    assert ("clipped" in message) == (policy == "clip")
    bounds = s.bounds()
    # under warn, the outlier bounds (m +- 100 spreads) follow the widened ones and the medians
    assert bounds.shape == (5 if policy == "warn" else 3, 2) and np.isinf(bounds[:2, 1]).all()
    if policy == "warn":  # column a has had its warning: training need not repeat it
        assert np.isinf(bounds[3:, 1]).all() and (bounds[3:, 0] == bounds[:2, 0]).all()
        fresh = screen(policy)
        fresh(base(), "f.parquet", 0)
        assert fresh.bounds()[4, 0] - fresh.bounds()[2, 0] == pytest.approx(50, rel=0.05)


def test_screen_refuses_beyond_the_hard_limit_under_warn_and_ignores_infinities():
    s = screen("warn")
    s(base(), "f.csv", 0)
    piece = base()
    piece[0, 0] = np.inf  # the --infinite policy's, not an outlier
    s(piece, "f.csv", 0)
    assert not s.seen
    piece[1, 0] = 1e20
    with pytest.raises(DataError, match="1e\\+15"):
        s(piece, "f.csv", 0)


def test_small_first_pieces_set_the_reference_together():
    s = screen("error")
    tiny = base(3)
    tiny[0, 0] = 1e9  # three rows cannot say what is usual
    assert s(tiny, "f.csv", 0) is tiny and s.median is None and s.bounds() is None
    for start in range(3, 99, 48):
        s(base(48), "f.csv", start)
    assert s.median is None
    s(base(48), "f.csv", 99)  # 3 + 48 + 48 + 48 rows: enough
    assert s.median is not None and not s.early
    assert s.median[0] == pytest.approx(0.5, abs=0.05)


def test_guard_clips_or_refuses_raw_values_outside_the_bounds():
    bounds = np.array([[-1.0, -np.inf], [1.0, np.inf], [0.0, 0.0]])
    clip = guard(bounds, "clip", ("a", "y"))
    values = np.array([0.5, 3.0, -7.0, np.nan, np.inf])
    out = clip(0, values, "f", 10)
    assert out[:3].tolist() == [0.5, 1.0, -1.0] and np.isnan(out[3]) and np.isinf(out[4])
    assert values[1] == 3.0  # a copy was clipped
    assert clip(1, values, "f", 10) is values  # no bounds for y
    with pytest.raises(DataError, match="row 12") as info:
        guard(bounds, "error", ("a", "y"))(0, values, "f", 10)
    assert info.value.column == "a"
    assert guard(np.array([[-np.inf], [np.inf], [0.0]]), "warn", ("a",)) is None


def test_guard_notes_outliers_training_meets_under_warn_once_per_column():
    # low, high (widened), median, then the outlier bounds
    bounds = np.array(
        [[-1e15, -np.inf], [1e15, np.inf], [0.0, 0.0], [-100.0, -np.inf], [100.0, np.inf]]
    )
    notes = OutlierNotes()
    check = guard(bounds, "warn", ("a", "y"), notes)
    inside = np.array([0.5, -99.0, np.nan])
    assert check(0, inside, "f", 0) is inside and notes.drain() == []
    values = np.array([0.5, 1e9, -1e9])
    assert check(0, values, "f", 10) is values  # used as it is
    assert values.tolist() == [0.5, 1e9, -1e9]
    assert check(0, values, "g", 20) is values  # the column has its note already
    (message,) = notes.drain()
    for needle in ("f:", "column 'a'", "row 12", "1e+09", "used as it is"):
        assert needle in message, message
    assert notes.drain() == []
    check(0, values, "f", 30)
    assert notes.drain() == []  # once per column per run
    with pytest.raises(DataError, match="1e\\+15"):
        check(0, np.array([2e15]), "f", 0)
    # an older file's bounds (no outlier bounds): no note, as before
    inf_too = OutlierNotes()  # an infinity in the piece (--infinite missing) hides nothing
    guard(bounds, "warn", ("a", "y"), inf_too)(0, np.array([-np.inf, 5e8]), "f", 0)
    (message,) = inf_too.drain()
    assert "row 2" in message and "5e+08" in message, message
    fresh = OutlierNotes()
    old = guard(bounds[:3], "warn", ("a", "y"), fresh)
    assert old(0, values, "f", 0) is values and fresh.drain() == []


# -- statistics that overflow -------------------------------------------------------------------
def test_statistics_that_overflow_say_which_column_without_numpy_warnings():
    x = np.column_stack([np.linspace(-1, 1, 50) * 1e200, np.linspace(0, 1, 50)])
    stats = Stats.of(x.copy()).merge(Stats.of(x.copy()))  # warnings are errors in tests
    assert stats.unusable_columns().tolist() == [0]
    assert stats.correlation(2).shape == (2, 2)


def test_largest_share():
    x = np.zeros((100, 1))
    x[0] = 100.0
    stats = Stats.of(x)
    # deviations 99 once and -1 99 times: 99**2 of 99**2 + 99
    assert stats.largest_share(np.array([99.0]))[0] == pytest.approx(0.99)


# -- float conversion ---------------------------------------------------------------------------
def test_as_float_of_every_kind():
    assert as_float(pa.array([2**63 - 1], pa.int64())).to_pylist() == [float(2**63)]
    assert as_float(pa.array([2**64 - 1], pa.uint64())).to_pylist() == [float(2**64)]
    dec = pa.array([decimal.Decimal("1234567.89"), None], pa.decimal128(10, 2))
    assert as_float(dec).to_pylist() == [1234567.89, None]
    t = datetime.datetime(2024, 1, 1, 12, 0, 0, 500000, tzinfo=datetime.UTC)
    epoch = t.timestamp()
    for unit in ("ms", "us", "ns"):
        arr = pa.array([t], pa.timestamp(unit, tz="Europe/Paris"))
        assert as_float(arr).to_pylist() == [epoch]  # the instant, whatever the zone
    seconds = pa.array([int(epoch)], pa.int64()).cast(pa.timestamp("s"))
    assert as_float(seconds).to_pylist() == [float(int(epoch))]
    assert as_float(pa.array([t.date()], pa.date64())).to_pylist() == [19723 * 86400.0]
    assert as_float(pa.array([datetime.time(1, 2, 3)], pa.time32("s"))).to_pylist() == [3723.0]
    assert as_float(pa.array([datetime.time(0, 0, 1, 5)], pa.time64("us"))).to_pylist() == [
        1.000005
    ]
    assert as_float(pa.array([1500], pa.duration("ms"))).to_pylist() == [1.5]
    assert as_float(pa.array([True, False, None])).to_pylist() == [1.0, 0.0, None]


# -- CSV sniffing and types ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "codec", "sep"),
    [
        (b"a,b\n", "utf-8", None),
        (b"\xef\xbb\xbfsep=;\na;b\n", "utf-8", ";"),
        ("sep=|\r\na|b\n".encode("utf-16"), "utf-16-le", "|"),
        ("a,b\n".encode("utf-32"), "utf-32-le", None),
        (b"\xfe\xff" + "a,b\n".encode("utf-16-be"), "utf-16-be", None),
        (b"sep=\n", "utf-8", None),
    ],
)
def test_sniff(tmp_path, raw, codec, sep):
    path = tmp_path / "f.csv"
    path.write_bytes(raw)
    found = sniff(str(path))
    assert (found.codec, found.sep) == (codec, sep)


def test_a_text_column_of_numbers_with_a_few_tokens_is_numeric():
    rows = [f"{i},{i}.5,n{i}" for i in range(30)]
    rows[7] = "7,oops,n7"
    batch = pacsv.read_csv(pa.BufferReader(("a,b,c\n" + "\n".join(rows)).encode())).to_batches()[0]
    schema = numbers_as_text(batch.schema, batch, {})
    assert schema.field("b").type == pa.float64() and schema.field("c").type == pa.string()
    assert numbers_as_text(batch.schema, batch, {"b": pa.string()}).field("b").type == pa.string()


# -- schemas ------------------------------------------------------------------------------------
def test_unify_marks_columns_some_files_lack_and_refuses_duplicates():
    a = pa.schema([("x", pa.int32()), ("y", pa.float64())])
    b = pa.schema([("x", pa.int64()), ("y", pa.float64()), ("z", pa.string())])
    schema, notes = unify([a, b], ["a.parquet", "b.parquet"])
    assert schema.names == ["x", "y", "z"] and schema.field("x").type == pa.int64()
    assert missing_in(schema.field("z")) == ["a.parquet"] and missing_in(schema.field("x")) == []
    assert any("'z'" in n and "a.parquet" in n for n in notes)
    dup = pa.schema([("x", pa.int32()), ("x", pa.float64())])
    with pytest.raises(DataError, match="'x'"):
        unify([a, dup], ["a.parquet", "dup.parquet"])


# -- the neutral "(other)" weight ---------------------------------------------------------------
def test_neutral_other_only_when_no_training_value_fell_there():
    w = np.array([1.0, 3.0, 100.0])
    assert Categorical("c", ("a", "b"), counts=(1, 3, 0)).neutral_other(w).tolist() == [
        1.0,
        3.0,
        2.5,
    ]
    assert Categorical("c", ("a", "b"), counts=(1, 3, 2)).neutral_other(w) is w
    assert Categorical("c", ("a", "b")).neutral_other(w) is w  # an older model: no counts
    assert Categorical("c", bits=2).neutral_other(w) is w
    multi = np.array([[1.0, 0.0], [3.0, 4.0], [9.0, 9.0]])
    out = Categorical("c", ("a", "b"), counts=(1, 1, 0)).neutral_other(multi)
    assert out[-1].tolist() == [2.0, 2.0]
    c = Categorical("c", ("a", None), counts=(2, 1, 0))
    assert Categorical.from_meta(c.to_meta()) == c
