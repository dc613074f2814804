"""Targets and constraints: validation with clear messages, thresholds, reached and achieved."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyprune import metrics
from pyprune.errors import TargetError
from pyprune.targets import Constraint, Latency, MACs, Params, Sparsity, Target, as_constraint

RATIO_TARGETS = (Params, MACs)


@pytest.mark.parametrize("cls", RATIO_TARGETS)
@pytest.mark.parametrize("value", [0.0, -0.1, 1.01, 2, math.nan, math.inf])
def test_ratio_targets_reject_values_outside_0_1(cls, value):
    with pytest.raises(TargetError, match=f"{cls.__name__} target"):
        cls(value)


@pytest.mark.parametrize("cls", RATIO_TARGETS + (Sparsity, Latency))
@pytest.mark.parametrize("value", ["0.5", None, True, [0.5]])
def test_targets_reject_non_numbers(cls, value):
    with pytest.raises(TargetError, match="must be a number"):
        cls(value)


@pytest.mark.parametrize("value", [-0.01, 1.0, 1.5, math.nan])
def test_sparsity_is_a_fraction_below_one(value):
    with pytest.raises(TargetError, match="Sparsity target"):
        Sparsity(value)


@pytest.mark.parametrize("kwargs, needle", [
    ({"value": 0.0}, "positive number of milliseconds"),
    ({"value": -3}, "positive number of milliseconds"),
    ({"value": math.inf}, "finite"),
    ({"value": 1.0, "batch_size": 0}, "batch_size must be a positive integer"),
    ({"value": 1.0, "batch_size": 2.0}, "batch_size must be a positive integer"),
    ({"value": 1.0, "threads": 0}, "threads must be a positive integer or None"),
    ({"value": 1.0, "threads": True}, "threads must be a positive integer or None"),
    ({"value": 1.0, "runs": 0}, "runs must be a positive integer"),
])
def test_latency_validation(kwargs, needle):
    with pytest.raises(TargetError, match=needle):
        Latency(**kwargs)


def test_valid_targets_and_their_descriptions():
    assert Params(1).value == 1 and MACs(0.25).kind == "macs" and Params(0.5).kind == "params"
    assert Sparsity(0.0).kind == "sparsity" and Latency(2.5).kind == "latency"
    assert MACs(0.25).describe() == "MACs <= 0.25 x original"
    assert Params(0.5).describe() == "params <= 0.5 x original"
    assert Sparsity(0.9).describe() == "sparsity >= 0.9"
    assert Latency(2.5, batch_size=8).describe() == "latency <= 2.5 ms (batch 8)"
    with pytest.raises(NotImplementedError):
        Target(0.5).describe()


@given(st.floats(0.01, 1.0), st.floats(0.0, 1.5))
def test_reached_for_kept_fractions_and_latency(goal, achieved):
    for target in (Params(goal), MACs(goal), Latency(goal * 10)):
        scale = 10 if target.kind == "latency" else 1
        assert target.reached(achieved * scale) == (achieved * scale <= goal * scale)


@given(st.floats(0.0, 0.99), st.floats(0.0, 1.0))
def test_reached_for_sparsity(goal, achieved):
    assert Sparsity(goal).reached(achieved) == (achieved >= goal)


def test_reached_at_the_boundary():
    assert MACs(0.5).reached(0.5) and not MACs(0.5).reached(0.5000001)
    assert Sparsity(0.5).reached(0.5) and not Sparsity(0.5).reached(0.4999999)


# -- constraints ---------------------------------------------------------------------------------


@pytest.mark.parametrize("max_drop, relative, needle", [
    (-0.01, False, "max_drop must be >= 0"),
    (math.nan, False, "max_drop must be finite"),
    ("0.1", False, "max_drop must be a number"),
    (0.1, 1, "relative must be True or False"),
])
def test_constraint_validation(max_drop, relative, needle):
    with pytest.raises(TargetError, match=needle):
        Constraint(max_drop, relative)


@given(st.floats(-5, 5), st.floats(0, 2))
def test_absolute_and_relative_thresholds(baseline, drop):
    higher, lower = metrics.accuracy(), metrics.relative_mse()
    assert Constraint(drop).threshold(baseline, higher) == pytest.approx(baseline - drop)
    assert Constraint(drop).threshold(baseline, lower) == pytest.approx(baseline + drop)
    assert Constraint(drop, relative=True).threshold(baseline, higher) == pytest.approx(baseline - abs(baseline) * drop)
    assert Constraint(drop, relative=True).threshold(baseline, lower) == pytest.approx(baseline + abs(baseline) * drop)


def test_constraint_decides_with_the_metric_direction():
    acc, kl = metrics.accuracy(), metrics.kl_divergence()
    t = Constraint(0.01).threshold(0.95, acc)
    assert acc.meets(0.94, t) and not acc.meets(0.9399, t)
    t = Constraint(0.1, relative=True).threshold(0.2, kl)
    assert t == pytest.approx(0.22)
    assert kl.meets(0.219, t) and not kl.meets(0.221, t)
    # a zero baseline leaves no room for a relative drop
    assert Constraint(0.5, relative=True).threshold(0.0, kl) == 0.0


def test_constraint_descriptions():
    assert Constraint(0.01).describe(metrics.accuracy()) == "accuracy may drop at most 0.01"
    assert Constraint(0.05, True).describe(metrics.relative_mse()) == "relative_mse may rise at most 0.05 x baseline"
    assert Constraint(0.02).describe() == "metric may drop at most 0.02"


def test_as_constraint():
    assert as_constraint(None) is None
    c = Constraint(0.3, True)
    assert as_constraint(c) is c
    assert as_constraint(0.02) == Constraint(0.02, False)
    assert as_constraint(0.02, relative=True) == Constraint(0.02, True)
    with pytest.raises(TargetError):
        as_constraint(-1.0)
