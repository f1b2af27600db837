"""Trade Executor: combines market signals with risk assessments, takes paper positions, and
when a position closes logs the outcome (success, P&L) on every decision that led to it."""

from __future__ import annotations

import contextlib
from typing import Any

from hivebus.agents.desk.decision_types import DecisionType
from hivebus.agents.desk.market import HORIZON, market_cycle
from hivebus.agents.runner import Permanent
from hivebus.agents.runtime import Agent, Context, handles
from hivebus.domain.errors import AlreadyRecorded, HivebusError
from hivebus.domain.models import Signal
from hivebus.infra.logs import get_logger


class TradeExecutor(Agent):
    """Opens a paper position per tradeable assessment and closes it HORIZON ticks later.

    Open positions live in the agent's state, so a restarted executor closes them; opening is
    keyed by the assessment's signal id, so a redelivered assessment opens nothing twice.
    """

    agent_type = "trade-executor"

    def __init__(self, agent_id: str) -> None:
        super().__init__(agent_id)
        self.log = get_logger(agent_id=agent_id)

    @handles("WHALE_ACTIVITY", "EXTREME_FUNDING")
    async def on_market_signal(self, signal: Signal, ctx: Context) -> None:
        """Remember the market signal; the trade waits for its risk assessment."""
        await self.memory.remember("signal", f"{signal.signal_type} {signal.data.get('direction', '')}",
                                   score=signal.confidence, symbol=str(signal.data.get("symbol", "BTC")),
                                   metadata={"signal_id": signal.signal_id})

    @handles("RISK_ASSESSMENT")
    async def on_assessment(self, signal: Signal, ctx: Context) -> None:
        """Open a position when the assessment allows one."""
        limit = float(signal.data.get("position_limit_btc", 0.0))
        assessed_id = str(signal.data.get("assessed_signal"))
        positions: list[dict[str, Any]] = list(self.memory.state.context_performance.get("positions", []))
        if limit <= 0 or any(p["id"] == assessed_id for p in positions):
            return
        try:
            assessed = (await ctx.bus.report(assessed_id)).signal
        except HivebusError:
            return  # the market signal expired meanwhile: nothing to trade on
        if not isinstance(assessed.data.get("price"), int | float):
            self.log.info("trade skipped", reason="the market signal carries no price")
            return
        side = "sell" if assessed.data.get("direction") == "distribution" else "buy"
        symbol = str(assessed.data.get("symbol", "BTC"))
        decision_id, _confidence = await ctx.decide(
            DecisionType.TRADE_EXECUTION, confidence=signal.confidence, symbol=symbol,
            reasoning={"action": side, "size": limit},
            context={"price": assessed.data.get("price"), "features": assessed.data.get("features", {})})
        positions.append({"id": assessed_id, "side": side, "size": limit, "symbol": symbol,
                          "entry": float(assessed.data["price"]),
                          "cycle": market_cycle(assessed.data, default=self.memory.state.current_cycle),
                          "decisions": [d for d in (decision_id, signal.causation_id, assessed.causation_id)
                                        if d]})
        performance = {**self.memory.state.context_performance, "positions": positions}
        await self.memory.save_state(context_performance=performance)

    @handles("MARKET_TICK")
    async def on_tick(self, signal: Signal, ctx: Context) -> None:
        """Close the positions held for HORIZON ticks; log outcomes; count the cycle."""
        if not isinstance(signal.data.get("price"), int | float):
            raise Permanent("MARKET_TICK needs a numeric price")
        cycle = self.memory.state.current_cycle + 1
        price = float(signal.data["price"])
        performance = dict(self.memory.state.context_performance)
        keep: list[dict[str, Any]] = []
        closed: list[dict[str, Any]] = []
        for position in performance.get("positions", []):
            (closed if cycle - position["cycle"] >= HORIZON else keep).append(position)
        for position in closed:
            direction = 1 if position["side"] == "buy" else -1
            pnl = round(position["size"] * (price - position["entry"]) * direction, 2)
            for decision_id in position["decisions"]:
                with contextlib.suppress(AlreadyRecorded):  # a redelivered tick closes nothing twice
                    await self.memory.decisions.log_outcome(decision_id, success=pnl > 0,
                                                            metrics={"pnl": pnl, "exit": price})
            await self.memory.stm.remember(
                "outcome", f"Trade {position['id']} {'win' if pnl > 0 else 'loss'}: PnL={pnl:.2f}",
                score=2.0 if abs(pnl) > 1 else 1.0, symbol=position["symbol"], shared_with=["*"],
                metadata={"trade_id": position["id"], "pnl": pnl, "entry": position["entry"],
                          "exit": price, "closed_cycle": cycle})
            self.log.info("position closed", side=position["side"], pnl=pnl)
            performance["trades_closed"] = int(performance.get("trades_closed", 0)) + 1
            performance["wins"] = int(performance.get("wins", 0)) + (pnl > 0)
            performance["pnl"] = round(float(performance.get("pnl", 0.0)) + pnl, 2)
        performance["positions"] = keep
        await self.memory.save_state(current_cycle=cycle, context_performance=performance)
