"""Unit tests of the pure scoring rules: decay, relevance, win-rate confidence."""

from __future__ import annotations

from typing import Any

import pytest

from hivebus.domain.scoring import adjust_confidence, decay, words


@pytest.mark.parametrize(("age", "half_life", "expected"),
                         [(0, 3600, 1.0), (3600, 3600, 0.5), (7200, 3600, 0.25), (-50, 3600, 1.0),
                          (900, 1800, 0.5 ** 0.5)])
def test_decay(age: float, half_life: float, expected: float) -> None:
    """Decay halves every half-life and treats future timestamps as now."""
    assert decay(age, half_life) == pytest.approx(expected)


def test_words_ignore_case_and_punctuation() -> None:
    """Keyword matching is by lower-case words."""
    assert words("Whale-BTC, whale!") == {"whale", "btc"}


@pytest.mark.parametrize(
    ("base", "pnls", "cap", "rate", "factor", "adjusted"),
    [
        (0.5, [], 0.2, 0.5, 1.0, 0.5),                  # no history: neutral, unchanged
        (0.5, [1, 1, 1, -1], 0.2, 0.75, 1.2, 0.6),      # 75 % wins: x1.2
        (0.9, [1, 1, 1], 0.2, 1.0, 1.2, 1.0),           # clamped to 1
        (0.5, [-1, -1, 1], 0.2, 1 / 3, 0.8, 0.4),       # 33 % wins: x0.7, capped at -20 %
        (0.5, [-1, -1, 1], 0.5, 1 / 3, 0.7, 0.35),      # a looser cap lets the seed's 0.7 through
        (0.5, [1, -1], 0.2, 0.5, 1.0, 0.5),             # 50 %: unchanged
        (0.5, [1, 1, 1], 0.1, 1.0, 1.1, 0.55),          # cap 10 %
        (0.5, [1, 0, -1, 0], 0.2, 0.25, 0.8, 0.4),      # a zero P&L is not a win
    ],
)
def test_adjust_confidence(base: float, pnls: list[float], cap: float, rate: float, factor: float,
                           adjusted: float) -> None:
    """The seed 003 rule with the cap, on a hand-computed table (win rate included)."""
    result = adjust_confidence(base, pnls, cap)
    assert result.win_rate == pytest.approx(rate)
    assert result.samples == len(pnls)
    assert result.factor == pytest.approx(factor)
    assert result.adjusted == pytest.approx(adjusted)


@pytest.mark.anyio
async def test_decide_records_the_win_rate_adjustment(redis: Any, settings: Any) -> None:
    """An agent with mostly winning outcomes logs boosted confidence, with the adjustment."""
    from hivebus.agents.memory import AgentMemory

    memory = AgentMemory(redis, settings, "te-1")
    for n, pnl in enumerate([5.0, 3.0, -1.0, 2.0]):
        await memory.remember_outcome(symbol="BTC", trade_id=f"t{n}", pnl=pnl,
                                      entry_price=100, exit_price=100 + pnl)
    decision_id, confidence = await memory.decide("TRADE_EXECUTION", confidence=0.5, symbol="BTC")
    assert confidence == pytest.approx(0.6)
    record = await memory.decisions.get(decision_id)
    assert record.reasoning["confidence"] == pytest.approx(0.6)
    assert record.reasoning["confidence_adjustment"] == {
        "base": 0.5, "adjusted": pytest.approx(0.6), "win_rate": 0.75, "samples": 4,
        "factor": pytest.approx(1.2)}
