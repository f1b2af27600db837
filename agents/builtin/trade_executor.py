"""Trade Executor: combines market signals with risk assessments and takes paper trades."""

from __future__ import annotations

from agents.runtime import Agent, Context, handles
from coordinator.logs import get_logger
from coordinator.models import Signal

MAX_REMEMBERED = 1000


class TradeExecutor(Agent):
    """Opens a paper position when a market signal is assessed as tradeable."""

    agent_type = "trade-executor"

    def __init__(self, agent_id: str) -> None:
        super().__init__(agent_id)
        self.market_signals: dict[str, Signal] = {}
        self.trades = 0
        self.log = get_logger(agent_id=agent_id)

    @handles("WHALE_ACTIVITY", "EXTREME_FUNDING")
    async def on_market_signal(self, signal: Signal, ctx: Context) -> None:
        """Remember the market signal until its assessment arrives."""
        self.market_signals[signal.signal_id] = signal
        while len(self.market_signals) > MAX_REMEMBERED:
            self.market_signals.pop(next(iter(self.market_signals)))

    @handles("RISK_ASSESSMENT")
    async def on_assessment(self, signal: Signal, ctx: Context) -> None:
        """Trade when the assessed signal allows a position."""
        limit = float(signal.data.get("position_limit_btc", 0.0))
        assessed = self.market_signals.pop(str(signal.data.get("assessed_signal")), None)
        if limit <= 0:
            self.log.info("trade skipped", reason="risk too high", risk=signal.data.get("risk_level"))
            return
        side = "buy"
        if assessed is not None and assessed.data.get("direction") == "distribution":
            side = "sell"
        self.trades += 1
        self.log.info("paper trade", side=side, size_btc=limit, trades=self.trades)
