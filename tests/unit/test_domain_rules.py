"""Exact values and boundaries of the pure domain rules: scoring, learning, ids.

Written to fail on a one-token change of the rule (``python -m bench.mutation`` checks
that they do): each table row is computed by hand or by an independent formula.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time

import pytest

from hivebus.domain.decision import DecisionRecord
from hivebus.domain.ids import derived_id, entry_order, id_time_ms, new_id, printable
from hivebus.domain.learning import (
    MAX_FEATURES,
    Credit,
    Thresholds,
    action_of,
    bucket,
    credits_for,
    wilson_lower_bound,
)
from hivebus.domain.scoring import (
    DEFAULT_CONFIDENCE_CAP,
    DEFAULT_HALF_LIFE_S,
    ConfidenceAdjustment,
    adjust_confidence,
    decay,
    relevance,
    win_rate,
    words,
)

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

# --- scoring ------------------------------------------------------------------------------


def test_scoring_defaults() -> None:
    """The half-life is one hour and the confidence cap 20 %, as the module docstring says."""
    assert (DEFAULT_HALF_LIFE_S, DEFAULT_CONFIDENCE_CAP) == (3600.0, 0.2)


@pytest.mark.parametrize(("text", "expected"), [
    ("Whale-BTC, whale!", {"whale", "btc"}),
    ("BTC2 moved 3x", {"btc2", "moved", "3x"}),
    ("", set()),
    ("--- !!", set()),
    ("Ünïcode ok", {"n", "code", "ok"}),  # letters outside a-z split words
])
def test_words(text: str, expected: set[str]) -> None:
    """Words are the distinct lower-case runs of ASCII letters and digits."""
    assert words(text) == expected


@pytest.mark.parametrize(("age", "expected"), [(0, 1.0), (-1, 1.0), (3600, 0.5), (1, 0.5 ** (1 / 3600))])
def test_decay_default_half_life(age: float, expected: float) -> None:
    """With the default half-life an item halves in an hour; a future item counts as new."""
    assert decay(age) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("score", "age", "query", "content", "half_life", "expected"), [
    (2.0, 3600, {"whale", "btc"}, "Whale moves BTC", 3600, 3.0),   # 2 * 0.5 + 2 shared words
    (2.0, 0, set(), "whale", 3600, 2.0),                             # no query words: no overlap
    (2.0, 0, {"eth"}, "whale btc", 3600, 2.0),                       # nothing shared
    (0.0, 0, {"a", "b", "c"}, "A b", 3600, 2.0),                     # the intersection, not the union
    (4.0, 900, {"x"}, "x", 1800, 4.0 * 0.5 ** 0.5 + 1),             # another half-life
])
def test_relevance(score: float, age: float, query: set[str], content: str, half_life: float,
                   expected: float) -> None:
    """Relevance is the decayed score plus the number of query words the content shares."""
    assert relevance(score, age, query, content, half_life) == pytest.approx(expected, rel=1e-12)


def test_relevance_uses_the_default_half_life() -> None:
    """Without a half-life, relevance decays by the one-hour default."""
    assert relevance(1.0, 3600, set(), "") == pytest.approx(0.5)


@pytest.mark.parametrize(("pnls", "rate"), [([], 0.5), ([0], 0.0), ([1, -1, 0, 2], 0.5), ([3], 1.0),
                                             ([-0.01, 0.01, 0.02], 2 / 3)])
def test_win_rate(pnls: list[float], rate: float) -> None:
    """Only a positive P&L is a win; no results at all count as neutral 0.5."""
    assert win_rate(iter(pnls)) == pytest.approx(rate)


@pytest.mark.parametrize(("base", "pnls", "cap", "factor", "adjusted"), [
    (0.5, [1, 1, -1, -1, -1], 0.2, 1.0, 0.5),    # exactly 40 % wins: not below 0.4
    (0.5, [1, 1, 1, -1, -1], 0.2, 1.0, 0.5),     # exactly 60 % wins: not above 0.6
    (0.5, [-1, -1, -1], 0.2, 0.8, 0.4),          # the default 20 % cap bounds the 0.7
    (0.5, [1, 1, 1], 0.5, 1.2, 0.6),             # a loose cap does not raise the 1.2
    (0.5, [-1, -1, -1], 0.5, 0.7, 0.35),         # nor lower the 0.7
    (0.5, [1, 1, 1], 0.0, 1.0, 0.5),             # no room at all
    (2.0, [], 0.2, 1.0, 1.0),                    # clamped to 1
    (-0.5, [], 0.2, 1.0, 0.0),                   # clamped to 0
])
def test_adjust_confidence_boundaries(base: float, pnls: list[float], cap: float, factor: float,
                                      adjusted: float) -> None:
    """The win-rate thresholds are strict, the cap bounds the factor, the result stays in 0..1."""
    result = adjust_confidence(base, iter(pnls), cap)
    assert (result.factor, result.adjusted) == (pytest.approx(factor), pytest.approx(adjusted))
    assert (result.base, result.samples) == (base, len(pnls))


def test_adjust_confidence_default_cap() -> None:
    """Without a cap argument the 20 % cap applies (a losing streak scales by 0.8, not 0.7)."""
    assert adjust_confidence(0.5, [-1, -1]).factor == pytest.approx(0.8)


def test_confidence_adjustment_as_dict_and_frozen() -> None:
    """The adjustment's JSON view has every field; the record cannot be changed."""
    result = adjust_confidence(0.5, [1, 1, 1, -1])
    assert result.as_dict() == {"base": 0.5, "adjusted": pytest.approx(0.6), "win_rate": 0.75,
                                "samples": 4, "factor": pytest.approx(1.2)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.factor = 2.0  # type: ignore[misc]
    assert isinstance(result, ConfidenceAdjustment)


# --- learning -------------------------------------------------------------------------------

def wilson_by_quadratic(successes: int, n: int, z: float) -> float:
    """The smaller root of (1 + z²/n)·p² - (2·p̂ + z²/n)·p + p̂² = 0, clamped at 0."""
    phat = successes / n
    a, b, c = 1 + z * z / n, -(2 * phat + z * z / n), phat * phat
    return max(0.0, (-b - math.sqrt(b * b - 4 * a * c)) / (2 * a))


@pytest.mark.parametrize(("successes", "n", "z"), [(0, 5, 1.96), (5, 5, 1.96), (1, 2, 1.0), (7, 9, 2.576),
                                                   (2, 3, 1.96), (30, 31, 1.645)])
def test_wilson_bound_for_other_z(successes: int, n: int, z: float) -> None:
    """The bound matches the quadratic's smaller root for any z, and all-failures gives 0."""
    assert wilson_lower_bound(successes, n, z) == pytest.approx(wilson_by_quadratic(successes, n, z),
                                                                abs=1e-12)


def test_wilson_bound_known_values() -> None:
    """Textbook values at the default z = 1.96, and no (or negative) samples give 0."""
    assert wilson_lower_bound(18, 20) == pytest.approx(0.69896, abs=1e-5)
    assert wilson_lower_bound(5, 5) == pytest.approx(0.56551, abs=1e-5)
    assert wilson_lower_bound(0, 5) == 0.0
    assert wilson_lower_bound(0, 0) == 0.0
    assert wilson_lower_bound(3, -1) == 0.0


@pytest.mark.parametrize(("value", "label"), [
    (-1500, "-1e3"), (1, "+1e0"), (0.999, "+1e-1"), (100, "+1e2"), (0.0, "0"), (-0.0, "0"),
    (float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf"), (False, "False"),
    (None, "None"), ("x" * 40, "x" * 32), ([1, 2], "[1, 2]"),
])
def test_bucket_edges(value: object, label: str) -> None:
    """Sign and magnitude for finite non-zero numbers; others verbatim, cut at 32 characters."""
    assert bucket(value) == label


def decision(**fields: object) -> DecisionRecord:
    return DecisionRecord(agent_id="te-1", decision_type="TRADE_EXECUTION", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("reasoning", "action"), [
    ({"action": "buy", "signal_type": "X", "risk_level": "LOW"}, "buy"),
    ({"action": None, "signal_type": "WHALE", "risk_level": "LOW"}, "WHALE"),
    ({"risk_level": "LOW"}, "LOW"),
    ({"action": ""}, ""),          # present though empty: not skipped
    ({"action": 0}, "0"),
    ({"action": "y" * 40}, "y" * 32),
    ({}, "-"),
])
def test_action_of(reasoning: dict[str, object], action: str) -> None:
    """The action is the first of action, signal_type, risk_level that is not None, else '-'."""
    assert action_of(decision(reasoning=reasoning)) == action


def test_credits_without_features_or_names() -> None:
    """A bare decision credits its signature alone: agent/type/action, no feature part."""
    [credit] = credits_for(decision(reasoning={"action": "sell"}, context={"features": "not a dict"}))
    assert credit == Credit("te-1/TRADE_EXECUTION/sell", "te-1", "TRADE_EXECUTION", "signature",
                            {"action": "sell", "features": {}})


def test_credits_named_patterns_are_checked_and_cut() -> None:
    """Named patterns must be non-empty strings; names are cut at 128 characters; a name equal
    to the signature is counted once, as the signature."""
    long_name = "p" * 200
    signature = "te-1/TRADE_EXECUTION/-"
    credits = credits_for(decision(reasoning={"patterns_applied": ["a", "", 7, None, long_name, signature]}))
    assert [(c.pattern_id, c.kind) for c in credits] == [
        ("a", "named"), ("p" * 128, "named"), (signature, "signature")]
    assert credits[1].data == {"name": "p" * 128}
    assert (credits[0].agent_id, credits[0].decision_type) == ("te-1", "TRADE_EXECUTION")


def test_credits_take_the_first_features_by_name() -> None:
    """At most MAX_FEATURES features, the first by sorted name, names cut at 32 characters."""
    features = {f"f{n:02d}": n + 1 for n in range(10)} | {"a" * 40: "long"}
    [credit] = credits_for(decision(reasoning={"action": "buy"}, context={"features": features}))
    kept = {"a" * 32: "long", **{f"f{n:02d}": f"+1e{int(math.log10(n + 1))}" for n in range(7)}}
    assert MAX_FEATURES == 8 and len(kept) == MAX_FEATURES
    assert credit.data == {"action": "buy", "features": kept}
    assert credit.pattern_id == "te-1/TRADE_EXECUTION/buy/" + ",".join(f"{k}={v}" for k, v in kept.items())


def test_credit_and_thresholds_are_frozen() -> None:
    """Credits and thresholds are values: they cannot be changed after creation."""
    credit = credits_for(decision())[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        credit.kind = "named"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Thresholds().min_samples = 1  # type: ignore[misc]


def test_threshold_defaults() -> None:
    """Promotion needs 20 samples and a 95 % Wilson lower bound of 0.55 by default."""
    assert Thresholds() == Thresholds(min_samples=20, min_confidence=0.55, z=1.96)
    rule = Thresholds()
    assert rule.qualifies(18, 20)
    assert not rule.qualifies(19, 19)             # one sample short
    assert not rule.qualifies(15, 20)             # bound 0.53 < 0.55


def test_thresholds_are_inclusive() -> None:
    """Exactly min_samples and exactly min_confidence qualify; a hair less does not."""
    bound = wilson_lower_bound(18, 20)
    assert Thresholds(min_samples=20, min_confidence=bound).qualifies(18, 20)
    assert not Thresholds(min_samples=20, min_confidence=bound + 1e-9).qualifies(18, 20)
    assert not Thresholds(min_samples=21, min_confidence=0.1).qualifies(20, 20)


def test_thresholds_use_their_z() -> None:
    """A threshold's own z is the one its bound is computed with (9 of 10: 0.766 at z = 1,
    0.596 at z = 1.96)."""
    assert Thresholds(min_samples=1, min_confidence=0.7, z=1.0).qualifies(9, 10)
    assert not Thresholds(min_samples=1, min_confidence=0.7).qualifies(9, 10)


# --- ids ------------------------------------------------------------------------------------

@pytest.mark.parametrize("ms", [0, 1, 1_000, 1_700_000_000_123, 2**48 - 1])
def test_id_time_round_trip(ms: int) -> None:
    """An id is 26 Crockford characters whose first 10 encode the given millisecond time."""
    for _ in range(20):  # the random part must never spill into the time part
        made = new_id(ms)
        assert len(made) == 26 and set(made) <= set(CROCKFORD)
        assert id_time_ms(made) == ms


def test_id_time_part_is_big_endian_base32() -> None:
    """The time part is the time in base 32, most significant character first."""
    assert new_id(0)[:10] == "0000000000"
    assert new_id(2**48 - 1)[:10] == "7ZZZZZZZZZ"
    assert new_id(32 * 5 + 31)[:10] == "000000005Z"
    assert id_time_ms("000000005Z" + "0" * 16) == 191


def test_id_random_part_is_random() -> None:
    """Ids made in the same millisecond differ in their 16 random characters."""
    made = {new_id(5)[10:] for _ in range(50)}
    assert len(made) == 50
    assert all(len(tail) == 16 for tail in made)


def test_new_id_reads_the_clock() -> None:
    """Without a time, an id carries the current time in milliseconds."""
    before = int(time.time() * 1000)
    made = new_id()
    after = int(time.time() * 1000)
    assert before <= id_time_ms(made) <= after


def crockford(value: int, length: int) -> str:
    """``value`` as ``length`` base-32 characters, computed from its bit string."""
    bits = format(value, f"0{5 * length}b")
    return "".join(CROCKFORD[int(bits[i:i + 5], 2)] for i in range(0, len(bits), 5))


def test_derived_id() -> None:
    """A derived id is the cause's time part plus 16 characters of SHA-256 of cause|parts."""
    cause = "01J0000000000000000000000A"
    digest = hashlib.sha256(b"01J0000000000000000000000A|PONG|echo-1").digest()[:10]
    expected = cause[:10] + crockford(int.from_bytes(digest, "big"), 16)
    assert derived_id(cause, "PONG", "echo-1") == expected == "01J0000000VVEA9NW6N5VWANQ6"
    assert derived_id(cause) == "01J0000000B8SCM4XE28Y4Z01Z"
    assert derived_id(cause, "PONG", "echo-2") != expected
    assert id_time_ms(expected) == id_time_ms(cause)


@pytest.mark.parametrize(("value", "text"), [("plain é", "plain é"), ("a\udcffb", "a\\xffb"), (5, "5"),
                                             (b"x", "b'x'"), (None, "None")])
def test_printable(value: object, text: str) -> None:
    """Text stays as it is, other values become their str(), undecodable bytes show as \\xNN."""
    assert printable(value) == text


@pytest.mark.parametrize(("entry", "order"), [("10-2", (10, 2)), ("7", (7, 0)), ("7-", (7, 0)),
                                              ("1700000000000-15", (1_700_000_000_000, 15))])
def test_entry_order(entry: str, order: tuple[int, int]) -> None:
    """A stream entry id sorts by its numbers (9-1 before 10-0), a missing sequence as 0."""
    assert entry_order(entry) == order
    assert sorted(["10-0", "9-1", "9-0"], key=entry_order) == ["9-0", "9-1", "10-0"]
