"""Risk Manager: assesses the risk of what the hunter reports and tells the executor."""

from __future__ import annotations

from agents.runtime import Agent, Context, handles
from coordinator.decisions import DecisionType
from coordinator.models import Severity, Signal

POSITION_LIMIT_BTC = {"LOW": 1.0, "MEDIUM": 0.5, "HIGH": 0.0}


def assess(signal: Signal) -> str:
    """Risk level of acting on ``signal``: LOW, MEDIUM or HIGH."""
    if signal.severity is Severity.CRITICAL or signal.confidence < 0.55:
        return "HIGH"
    if signal.severity is Severity.HIGH:
        return "MEDIUM"
    return "LOW"


class RiskManager(Agent):
    """Answers every market signal with a RISK_ASSESSMENT for the RISK_ASSESSMENT subscribers."""

    agent_type = "risk-manager"

    @handles("WHALE_ACTIVITY", "EXTREME_FUNDING")
    async def on_market_signal(self, signal: Signal, ctx: Context) -> None:
        """Log the assessment as a decision and publish it."""
        level = assess(signal)
        limit = POSITION_LIMIT_BTC[level]
        decision_id, confidence = await ctx.decide(
            DecisionType.RISK_ASSESSMENT, confidence=signal.confidence,
            symbol=str(signal.data.get("symbol", "BTC")),
            reasoning={"risk_level": level, "position_limit": limit},
            context={"assessed_type": signal.signal_type, "severity": signal.severity.value},
        )
        await ctx.publish(
            "RISK_ASSESSMENT",
            data={"risk_level": level, "position_limit_btc": limit,
                  "assessed_signal": signal.signal_id, "assessed_type": signal.signal_type},
            severity=Severity.HIGH if level == "HIGH" else Severity.INFO,
            confidence=confidence, decision_id=decision_id,
        )
        counts = dict(self.memory.state.context_performance)
        counts[level] = int(counts.get(level, 0)) + 1
        await self.memory.save_state(current_cycle=self.memory.state.current_cycle + 1,
                                     context_performance=counts)
