"""What keeps start-up light: the names the settings choose from (``streamgd.choices``) agree
with the registries that implement them, and the float conversions between Arrow and numpy
(which avoid pyarrow's pandas-importing ones, and its compute functions for integers) give
exactly what pyarrow's give."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from streamgd import choices
from streamgd.columns import integer_values
from streamgd.decode import float_array, float_values
from streamgd.losses import _BUILTIN, LOSS_FACTORIES
from streamgd.optimizers import OPTIMIZERS
from streamgd.solvers import SOLVERS


def test_choices_name_every_registered_implementation():
    assert set(choices.OPTIMIZERS) == set(OPTIMIZERS)
    assert set(choices.SOLVERS) == set(SOLVERS)
    assert set(choices.LOSSES) == set(_BUILTIN)  # (a test may have registered others)
    assert set(choices.LOSSES) <= set(LOSS_FACTORIES)


@pytest.mark.parametrize("typ", [pa.float16(), pa.float32(), pa.float64()])
def test_float_values_equal_to_numpy(typ):
    rng = np.random.default_rng(7)
    for _ in range(150):
        n = int(rng.integers(0, 50))
        mask = rng.random(n) < rng.choice([0.0, 0.3, 1.0])
        array = pa.array(rng.normal(size=n), mask=mask).cast(typ)
        start = int(rng.integers(0, n + 1))
        array = array.slice(start, int(rng.integers(0, n - start + 1)))  # an offset
        column = pa.chunked_array([array] * int(rng.integers(0, 3)), typ)  # 0-2 chunks
        for values in (array, column):
            got = float_values(values)
            expected = (
                values.to_numpy()
                if isinstance(values, pa.ChunkedArray)
                else values.to_numpy(zero_copy_only=False)
            )
            assert got.dtype == expected.dtype
            np.testing.assert_array_equal(got, expected)  # NaN where null, on both sides


@pytest.mark.parametrize("typ", [pa.int8(), pa.uint16(), pa.int32(), pa.int64(), pa.uint64()])
def test_integer_values_round_as_arrows_cast(typ):
    """Integers converted by numpy are the bits Arrow's cast to float64 gives (nulls NaN),
    large ones (beyond 2**53, rounded) included."""
    rng = np.random.default_rng(11)
    info = np.iinfo(typ.to_pandas_dtype())
    for _ in range(100):
        n = int(rng.integers(0, 60))
        ints = rng.integers(info.min, info.max, size=n, dtype=typ.to_pandas_dtype(), endpoint=True)
        mask = rng.random(n) < rng.choice([0.0, 0.3, 1.0])
        array = pa.array(ints, typ, mask=mask)
        start = int(rng.integers(0, n + 1))
        array = array.slice(start, int(rng.integers(0, n - start + 1)))  # an offset
        column = pa.chunked_array([array] * int(rng.integers(0, 3)), typ)  # 0-2 chunks
        for values in (array, column):
            got = integer_values(values)
            expected = float_values(pc.cast(values, pa.float64(), safe=False))
            assert got.dtype == np.float64
            np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_array_equals_pa_array(dtype):
    values = np.random.default_rng(3).normal(size=(50, 3)).astype(dtype)
    values[4, 1] = np.nan  # stays a NaN, not a null, as pa.array makes it
    for column in (values[:, 1], values[10:10, 0]):  # strided, and empty
        got, expected = float_array(column), pa.array(column)
        assert got.type == expected.type and got.null_count == expected.null_count == 0
        np.testing.assert_array_equal(got.to_numpy(), expected.to_numpy())
