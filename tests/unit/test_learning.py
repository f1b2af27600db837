"""Unit tests of the learning rules: Wilson bound, feature buckets, credited patterns."""

from __future__ import annotations

import math

import pytest

from hivebus.domain.decision import DecisionOutcome, DecisionRecord
from hivebus.domain.learning import Thresholds, bucket, credits_for, wilson_lower_bound


def wilson_by_quadratic(successes: int, n: int, z: float = 1.96) -> float:
    """The Wilson lower bound solved independently: the smaller root of
    (1 + z²/n)·p² - (2·p̂ + z²/n)·p + p̂² = 0."""
    phat = successes / n
    a = 1 + z * z / n
    b = -(2 * phat + z * z / n)
    c = phat * phat
    return (-b - math.sqrt(b * b - 4 * a * c)) / (2 * a)


@pytest.mark.parametrize(("successes", "n"), [(0, 1), (1, 1), (5, 10), (18, 20), (70, 100),
                                              (3, 40), (999, 1000)])
def test_wilson_matches_an_independent_solution(successes: int, n: int) -> None:
    """The bound equals the smaller root of the Wilson quadratic."""
    assert wilson_lower_bound(successes, n) == pytest.approx(wilson_by_quadratic(successes, n), abs=1e-12)


def test_wilson_known_value_and_no_samples() -> None:
    """A textbook value (8 of 10 at 95 % -> 0.4902) and zero samples -> 0."""
    assert wilson_lower_bound(8, 10) == pytest.approx(0.4902, abs=1e-4)
    assert wilson_lower_bound(0, 0) == 0.0


@pytest.mark.parametrize(("value", "label"), [(1500, "+1e3"), (0.0023, "+1e-3"), (-0.002, "-1e-3"),
                                               (0, "0"), (True, "True"), ("accumulation", "accumulation"),
                                               (9.99, "+1e0"), (10, "+1e1")])
def test_feature_buckets(value: object, label: str) -> None:
    """Numbers bucket by sign and order of magnitude; strings and booleans stay as they are."""
    assert bucket(value) == label


def test_credits_for_a_decision() -> None:
    """A decision credits each named pattern and its discovered signature."""
    decision = DecisionRecord(
        agent_id="te-1", decision_type="TRADE_EXECUTION",
        reasoning={"action": "buy", "patterns_applied": ["whale-pump"]},
        context={"features": {"whale": "accumulation", "funding": 0.002}},
        outcome=DecisionOutcome(success=True))
    credits = credits_for(decision)
    assert [c.pattern_id for c in credits] == [
        "whale-pump", "te-1/TRADE_EXECUTION/buy/funding=+1e-3,whale=accumulation"]
    assert credits[1].data == {"action": "buy", "features": {"funding": "+1e-3", "whale": "accumulation"}}


def test_thresholds() -> None:
    """Promotion needs both enough samples and a high enough lower bound."""
    rule = Thresholds(min_samples=20, min_confidence=0.55)
    assert rule.qualifies(18, 20)          # 0.70 lower bound
    assert not rule.qualifies(9, 9)        # too few samples
    assert not rule.qualifies(13, 20)      # 0.43 lower bound
