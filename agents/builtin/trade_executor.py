"""Trade Executor: combines market signals with risk assessments and takes paper trades."""

from __future__ import annotations

from agents.runtime import Agent, Context, handles
from coordinator.decisions import DecisionType
from coordinator.logs import get_logger
from coordinator.models import Signal

MAX_REMEMBERED = 1000


class TradeExecutor(Agent):
    """Opens a paper position when a market signal is assessed as tradeable."""

    agent_type = "trade-executor"

    def __init__(self, agent_id: str) -> None:
        super().__init__(agent_id)
        self.market_signals: dict[str, Signal] = {}
        self.log = get_logger(agent_id=agent_id)

    @handles("WHALE_ACTIVITY", "EXTREME_FUNDING")
    async def on_market_signal(self, signal: Signal, ctx: Context) -> None:
        """Remember the market signal until its assessment arrives."""
        self.market_signals[signal.signal_id] = signal
        while len(self.market_signals) > MAX_REMEMBERED:
            self.market_signals.pop(next(iter(self.market_signals)))

    @handles("RISK_ASSESSMENT")
    async def on_assessment(self, signal: Signal, ctx: Context) -> None:
        """Trade when the assessed signal allows a position, logging a TRADE_EXECUTION decision."""
        limit = float(signal.data.get("position_limit_btc", 0.0))
        assessed = self.market_signals.pop(str(signal.data.get("assessed_signal")), None)
        if limit <= 0:
            self.log.info("trade skipped", reason="risk too high", risk=signal.data.get("risk_level"))
            return
        side = "buy"
        if assessed is not None and assessed.data.get("direction") == "distribution":
            side = "sell"
        symbol = str(assessed.data.get("symbol", "BTC")) if assessed else "BTC"
        decision_id, confidence = await ctx.decide(
            DecisionType.TRADE_EXECUTION, confidence=signal.confidence, symbol=symbol,
            reasoning={"action": side, "size": limit},
            context={"price": assessed.data.get("price") if assessed else None},
        )
        await self.memory.remember("trade", f"{side} {limit} {symbol}", score=confidence,
                                   symbol=symbol, metadata={"decision_id": decision_id})
        performance = dict(self.memory.state.context_performance)
        performance["trades"] = int(performance.get("trades", 0)) + 1
        await self.memory.save_state(current_cycle=self.memory.state.current_cycle + 1,
                                     context_performance=performance)
        self.log.info("paper trade", side=side, size_btc=limit, trades=performance["trades"],
                      decision_id=decision_id)
