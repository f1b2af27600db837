"""Risk Manager: assesses the risk of what the hunter reports and tells the executor."""

from __future__ import annotations

from agents.runtime import Agent, Context, handles
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
        """Publish a risk level and a position limit for ``signal``."""
        level = assess(signal)
        await ctx.publish(
            "RISK_ASSESSMENT",
            data={
                "risk_level": level,
                "position_limit_btc": POSITION_LIMIT_BTC[level],
                "assessed_signal": signal.signal_id,
                "assessed_type": signal.signal_type,
            },
            severity=Severity.HIGH if level == "HIGH" else Severity.INFO,
            confidence=signal.confidence,
        )
