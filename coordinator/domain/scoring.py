"""Pure scoring rules of agent memory: decay-weighted recall and win-rate confidence.

Recall (seed 003)::

    relevance = score * 0.5 ** (age_s / half_life_s)  +  |query words ∩ content words|

Words are lower-cased, split on anything that is not a letter or digit. The default
half-life is one hour. Win-rate confidence (seed 003): a win rate below 0.4 scales a
confidence by 0.7, above 0.6 by 1.2; the change is capped at ±``cap`` (20 % by
default) and the result clamped to 0..1.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_HALF_LIFE_S = 3600.0
DEFAULT_CONFIDENCE_CAP = 0.2
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> set[str]:
    """The distinct lower-case words of ``text``."""
    return set(_WORD.findall(text.lower()))


def decay(age_s: float, half_life_s: float = DEFAULT_HALF_LIFE_S) -> float:
    """Exponential decay factor: 1 now, 0.5 after one half-life. Future items count as new."""
    return float(0.5 ** (max(0.0, age_s) / half_life_s))


def relevance(
    score: float, age_s: float, query_words: set[str], content: str,
    half_life_s: float = DEFAULT_HALF_LIFE_S,
) -> float:
    """Recall relevance of one memory item (see the module docstring)."""
    overlap = len(query_words & words(content)) if query_words else 0
    return score * decay(age_s, half_life_s) + overlap


def win_rate(pnls: Iterable[float]) -> float:
    """Share of positive results; 0.5 (neutral) when there are none."""
    values = list(pnls)
    if not values:
        return 0.5
    return sum(1 for p in values if p > 0) / len(values)


@dataclass(frozen=True)
class ConfidenceAdjustment:
    """How a confidence was changed by the recent win rate, for the decision's reasoning."""

    base: float
    adjusted: float
    win_rate: float
    samples: int
    factor: float

    def as_dict(self) -> dict[str, float | int]:
        """A JSON-ready view."""
        return {"base": self.base, "adjusted": self.adjusted, "win_rate": self.win_rate,
                "samples": self.samples, "factor": self.factor}


def adjust_confidence(
    base: float, pnls: Iterable[float], cap: float = DEFAULT_CONFIDENCE_CAP
) -> ConfidenceAdjustment:
    """Scale ``base`` by the win rate of ``pnls`` (seed 003 rule), capped at ±``cap``."""
    values = list(pnls)
    rate = win_rate(values)
    factor = 1.0
    if values and rate < 0.4:
        factor = 0.7
    elif values and rate > 0.6:
        factor = 1.2
    factor = min(1.0 + cap, max(1.0 - cap, factor))
    adjusted = min(1.0, max(0.0, base * factor))
    return ConfidenceAdjustment(base, adjusted, rate, len(values), factor)
