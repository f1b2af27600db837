"""Risk Manager: assesses each market signal from recent outcomes and drawdown, tells the
executor the risk level and position limit, and pauses the desk after a losing streak."""

from __future__ import annotations

from typing import Any

from hivebus.agents.desk.decision_types import DecisionType
from hivebus.agents.desk.market import market_cycle
from hivebus.agents.runtime import Agent, Context, handles
from hivebus.domain.models import Severity, Signal
from hivebus.memory.state import AgentStatus

POSITION_LIMIT_BTC = {"LOW": 1.0, "MEDIUM": 0.5, "HIGH": 0.0}
DEFAULT_CONFIGURATION = {"losing_streak": 4, "cooldown_cycles": 8}


def next_status(status: AgentStatus, performance: dict[str, Any], cycle: int, streak: int,
                config: dict[str, Any]) -> AgentStatus:
    """The desk's status for ``cycle``: pause after a losing streak, resume after the cool-down.
    Records the pause in ``performance``."""
    if status is AgentStatus.ACTIVE and streak >= int(config.get("losing_streak", 4)):
        performance["paused_at"] = cycle
        performance["pauses"] = int(performance.get("pauses", 0)) + 1
        return AgentStatus.PAUSED
    if status is AgentStatus.PAUSED and cycle - int(performance.get("paused_at", cycle)) >= int(
            config.get("cooldown_cycles", 8)):
        return AgentStatus.ACTIVE
    return status


def assess(signal: Signal, streak: int, paused: bool) -> str:
    """Risk level of acting on ``signal``: LOW, MEDIUM or HIGH."""
    if paused or signal.severity is Severity.CRITICAL:
        return "HIGH"
    if signal.severity is Severity.HIGH or streak >= 2:
        return "MEDIUM"
    return "LOW"


class RiskManager(Agent):
    """Answers every market signal with a RISK_ASSESSMENT for the RISK_ASSESSMENT subscribers."""

    agent_type = "risk-manager"

    async def setup(self) -> None:
        """Start from the default limits unless the saved state has its own."""
        if not self.memory.state.configuration:
            await self.memory.save_state(configuration=DEFAULT_CONFIGURATION, reason="defaults")

    async def losing_streak(self, before_cycle: int) -> tuple[int, float]:
        """Consecutive losses among the newest trade outcomes closed before ``before_cycle``
        (shared by the executor), and their P&L. Counting only earlier cycles keeps the
        assessment independent of which agent handled the current tick first; ordering by
        cycle, then wins first, keeps it independent of the order positions of one cycle
        were written in."""
        outcomes = sorted((i for i in await self.memory.stm.recent("outcome", None, 100)
                           if int(i.metadata.get("closed_cycle", 0)) < before_cycle),
                          key=lambda i: (-int(i.metadata.get("closed_cycle", 0)),
                                         -float(i.metadata.get("pnl", 0))))[:20]
        streak = 0
        for item in outcomes:
            if float(item.metadata.get("pnl", 0)) > 0:
                break
            streak += 1
        return streak, sum(float(i.metadata.get("pnl", 0)) for i in outcomes)

    @handles("MARKET_TICK")
    async def on_tick(self, signal: Signal, ctx: Context) -> None:
        """Count cycles; pause after a losing streak, resume after the cool-down."""
        state, config = self.memory.state, self.memory.state.configuration
        performance = dict(state.context_performance)
        cycle = state.current_cycle + 1
        streak, _ = await self.losing_streak(cycle)
        status = next_status(state.status, performance, cycle, streak, config)
        await self.memory.save_state(current_cycle=cycle, status=status,
                                     context_performance=performance)

    @handles("WHALE_ACTIVITY", "EXTREME_FUNDING")
    async def on_market_signal(self, signal: Signal, ctx: Context) -> None:
        """Log the assessment as a decision and publish it.

        The assessment depends only on the signal's market cycle and outcomes closed before it,
        never on whether this agent has handled that cycle's tick yet, so a seeded desk
        assesses the same way every run."""
        state = self.memory.state
        cycle = market_cycle(signal.data, default=state.current_cycle)
        streak, drawdown = await self.losing_streak(cycle)
        status = state.status
        if state.current_cycle < cycle:  # this cycle's tick has not reached us yet: look ahead
            status = next_status(status, dict(state.context_performance), cycle, streak,
                                 state.configuration)
        paused = status is AgentStatus.PAUSED
        level = assess(signal, streak, paused)
        limit = POSITION_LIMIT_BTC[level]
        decision_id, confidence = await ctx.decide(
            DecisionType.RISK_ASSESSMENT, confidence=signal.confidence,
            symbol=str(signal.data.get("symbol", "BTC")),
            reasoning={"risk_level": level, "position_limit": limit, "losing_streak": streak,
                       "recent_pnl": round(drawdown, 2), "desk_paused": paused},
            context={"assessed_type": signal.signal_type, "severity": signal.severity.value})
        await ctx.publish(
            "RISK_ASSESSMENT",
            data={"risk_level": level, "position_limit_btc": limit, "assessed_signal": signal.signal_id,
                  "assessed_type": signal.signal_type, "desk_paused": paused},
            severity=Severity.HIGH if level == "HIGH" else Severity.INFO,
            confidence=confidence, decision_id=decision_id)
