"""Contract tests over every learning-rate schedule in the registry, and their formulas."""

from __future__ import annotations

import doctest
import math

import pytest

import streamgd.schedules
from streamgd.errors import UsageError
from streamgd.schedules import SCHEDULES, make_schedule

NAMES = sorted(SCHEDULES)
STEPS = [0, 1, 2, 3, 10, 100, 9_999, 10_000, 10**9]
# Every default schedule is positive up to here (the cosine's default decay ends at 10_000;
# beyond, it rests at its floor, 0 by default, and the exponential ones underflow to 0).
POSITIVE_UNTIL = 9_999
# Non-default settings the contract also covers (a warmup is not monotone).
VARIANTS = [
    ("step", {"step_size": 3, "gamma": 0.9}),
    ("exponential", {"gamma": 0.99}),
    ("cosine", {"warmup_steps": 50, "decay_steps": 200, "min_factor": 0.1}),
    ("invscaling", {"power_t": 0.5}),
]
CASES = [(name, {}) for name in NAMES] + VARIANTS


@pytest.mark.parametrize(("name", "hyper"), CASES, ids=lambda v: str(v or "defaults"))
@pytest.mark.parametrize("lr", [1e-3, 0.5])
def test_schedule_is_a_pure_non_negative_function_of_the_step(name, hyper, lr):
    sched = make_schedule(name, lr, **hyper)
    values = [sched(t) for t in STEPS]
    fresh = make_schedule(name, lr, **hyper)
    assert values == [fresh(t) for t in reversed(STEPS)][::-1]  # another one, in another order
    assert values == [sched(t) for t in STEPS]  # called again: the same
    assert values == [sched(t) for t in (5, *STEPS)][1:]  # no state carried between calls
    assert all(isinstance(v, float) and math.isfinite(v) and v >= 0 for v in values)
    assert all(v > 0 for t, v in zip(STEPS, values, strict=True) if t <= POSITIVE_UNTIL)
    assert all(v <= lr * (1 + 1e-15) for v in values)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("lr", [1e-3, 0.5])
def test_default_schedules_start_at_lr_and_never_increase(name, lr):
    values = [SCHEDULES[name](lr)(t) for t in STEPS]
    assert values[0] == lr
    assert all(b <= a for a, b in zip(values, values[1:], strict=False))


def test_schedule_formulas():
    """Plain formulas, written out here, at a few steps."""
    for t in STEPS:
        assert make_schedule("constant", 0.2)(t) == 0.2
        assert make_schedule("invscaling", 0.2, power_t=0.5)(t) == pytest.approx(
            0.2 / math.sqrt(t + 1), rel=1e-12
        )
        assert make_schedule("step", 0.2)(t) == pytest.approx(0.2 * 0.5 ** (t // 1000), rel=1e-12)
        assert make_schedule("step", 0.2, step_size=7, gamma=0.9)(t) == pytest.approx(
            0.2 * 0.9 ** (t // 7), rel=1e-12
        )
        assert make_schedule("exponential", 0.2)(t) == pytest.approx(0.2 * 0.999**t, rel=1e-9)
    inv = make_schedule("invscaling", 1.0)
    assert inv(100) < inv(10) < inv(0)
    assert [make_schedule("step", 1.0, step_size=2, gamma=0.5)(t) for t in range(6)] == [
        1.0,
        1.0,
        0.5,
        0.5,
        0.25,
        0.25,
    ]


def _cosine_reference(t, lr, warmup, decay, floor):
    if t < warmup:
        return lr * (t + 1) / warmup
    if t >= warmup + decay:
        return lr * floor
    return lr * floor + lr * (1 - floor) * (1 + math.cos(math.pi * (t - warmup) / decay)) / 2


@pytest.mark.parametrize(
    ("warmup", "decay", "floor"), [(0, 10_000, 0.0), (0, 100, 0.2), (10, 100, 0.0), (25, 1, 0.5)]
)
def test_cosine_formula(warmup, decay, floor):
    sched = make_schedule("cosine", 0.3, warmup_steps=warmup, decay_steps=decay, min_factor=floor)
    for t in [0, 1, 5, 9, 10, 24, 25, 26, 50, 99, 100, 109, 110, 111, 5000, 10_000, 10**6]:
        assert sched(t) == pytest.approx(_cosine_reference(t, 0.3, warmup, decay, floor), rel=1e-12)
    # the warmup climbs to lr, the decay falls from it to the floor, which then holds
    assert sched(max(warmup - 1, 0)) == pytest.approx(0.3)
    assert sched(warmup) == pytest.approx(0.3)
    if decay % 2 == 0:
        assert sched(warmup + decay // 2) == pytest.approx(0.3 * (1 + floor) / 2)
    assert sched(warmup + decay) == sched(warmup + decay + 10**7) == pytest.approx(0.3 * floor)
    warm = [sched(t) for t in range(warmup)]
    assert all(0 < a < b for a, b in zip(warm, warm[1:], strict=False))


def test_cosine_with_warmup_is_positive_from_the_first_step():
    sched = make_schedule("cosine", 1.0, warmup_steps=100, min_factor=0.01)
    assert sched(0) == 0.01
    assert min(sched(t) for t in range(0, 20_000, 7)) >= 0.01


@pytest.mark.parametrize(
    ("name", "hyper", "message"),
    [
        ("step", {"step_size": 0}, "--step-size must be an integer >= 1, got 0"),
        ("step", {"step_size": 2.5}, "--step-size must be an integer >= 1, got 2.5"),
        ("step", {"step_size": True}, "--step-size must be an integer >= 1, got True"),
        ("step", {"gamma": 0.0}, "--gamma must be a number > 0 and <= 1, got 0.0"),
        ("exponential", {"gamma": 1.5}, "--gamma must be a number > 0 and <= 1, got 1.5"),
        ("exponential", {"gamma": math.nan}, "--gamma must be a number > 0 and <= 1, got nan"),
        ("cosine", {"decay_steps": 0}, "--decay-steps must be an integer >= 1, got 0"),
        ("cosine", {"warmup_steps": -1}, "--warmup-steps must be an integer >= 0, got -1"),
        ("cosine", {"min_factor": 1.5}, "--min-factor must be a number >= 0 and <= 1, got 1.5"),
        ("cosine", {"min_factor": "0.1"}, "--min-factor must be a number >= 0 and <= 1"),
    ],
)
def test_bad_hyperparameters_are_usage_errors_naming_the_option(name, hyper, message):
    with pytest.raises(UsageError) as info:
        make_schedule(name, 0.1, **hyper)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("name", NAMES)
def test_factories_ignore_what_they_do_not_take_and_read_none_as_the_default(name):
    every = {"power_t": None, "step_size": None, "gamma": None, "decay_steps": None}
    every |= {"warmup_steps": None, "min_factor": None, "momentum": 0.9}
    sched, default = make_schedule(name, 0.1, **every), make_schedule(name, 0.1)
    if name == "invscaling":  # predates None-as-default; its caller always passes power_t
        sched = make_schedule(name, 0.1, momentum=0.9)
    assert [sched(t) for t in STEPS] == [default(t) for t in STEPS]


def test_docstrings_pin_their_numbers():
    assert doctest.testmod(streamgd.schedules).failed == 0


def test_unknown_schedule_is_a_usage_error():
    with pytest.raises(UsageError) as info:
        make_schedule("onecycle", 0.1)
    assert "onecycle" in str(info.value) and all(n in str(info.value) for n in NAMES)
