"""Pure rules of pattern learning: which patterns a decision credits, Wilson bounds, promotion.

For every decision with an outcome the coordinator credits

* each pattern named in ``reasoning.patterns_applied`` (pattern id = the name), and
* one discovered *signature*: ``<agent>/<decision type>/<action>[/<features>]`` where
  the action is ``reasoning.action`` (else ``signal_type``, else ``risk_level``) and the
  features come from ``context.features``: strings and booleans verbatim, numbers
  bucketed by sign and order of magnitude (``1500 -> +1e3``, ``-0.002 -> -1e-3``,
  ``0 -> 0``), sorted by name.

A pattern's confidence is the Wilson score lower bound of its success rate (z = 1.96,
95 %). It is promoted when it has at least ``min_samples`` samples and a confidence of
at least ``min_confidence``; a promoted pattern that falls below is demoted (kept,
marked inactive).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hivebus.domain.decision import DecisionRecord

MAX_FEATURES = 8


def wilson_lower_bound(successes: int, samples: int, z: float = 1.96) -> float:
    """Lower bound of the Wilson score interval of ``successes / samples`` (0 when no samples)."""
    if samples <= 0:
        return 0.0
    p = successes / samples
    z2 = z * z
    centre = p + z2 / (2 * samples)
    margin = z * math.sqrt(p * (1 - p) / samples + z2 / (4 * samples * samples))
    return max(0.0, (centre - margin) / (1 + z2 / samples))


def bucket(value: Any) -> str:
    """A feature value as a bucket label (see the module docstring)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)[:32]
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    sign = "+" if value > 0 else "-"
    return f"{sign}1e{math.floor(math.log10(abs(value)))}"


def action_of(decision: DecisionRecord) -> str:
    """What the decision chose: reasoning.action, else signal_type, else risk_level, else '-'."""
    reasoning = decision.reasoning
    for name in ("action", "signal_type", "risk_level"):
        if reasoning.get(name) is not None:
            return str(reasoning[name])[:32]
    return "-"


@dataclass(frozen=True)
class Credit:
    """One pattern a decision counts towards."""

    pattern_id: str
    agent_id: str
    decision_type: str
    kind: str  # "named" or "signature"
    data: dict[str, Any]


def credits_for(decision: DecisionRecord) -> list[Credit]:
    """The patterns credited by ``decision`` (named ones first, then its signature)."""
    credits = []
    for name in decision.reasoning.get("patterns_applied") or []:
        if isinstance(name, str) and name:
            credits.append(Credit(name[:128], decision.agent_id, decision.decision_type, "named",
                                  {"name": name[:128]}))
    features = decision.context.get("features")
    buckets: dict[str, str] = {}
    if isinstance(features, dict):
        for key in sorted(features)[:MAX_FEATURES]:
            buckets[str(key)[:32]] = bucket(features[key])
    action = action_of(decision)
    signature = f"{decision.agent_id}/{decision.decision_type}/{action}"
    if buckets:
        signature += "/" + ",".join(f"{k}={v}" for k, v in buckets.items())
    credits = [c for c in credits if c.pattern_id != signature]  # counted once, as the signature
    credits.append(Credit(signature, decision.agent_id, decision.decision_type, "signature",
                          {"action": action, "features": buckets}))
    return credits


@dataclass(frozen=True)
class Thresholds:
    """When a pattern is promoted."""

    min_samples: int = 20
    min_confidence: float = 0.55
    z: float = 1.96

    def qualifies(self, successes: int, samples: int) -> bool:
        """Whether a pattern with these counts meets the promotion thresholds."""
        return samples >= self.min_samples and wilson_lower_bound(
            successes, samples, self.z) >= self.min_confidence
