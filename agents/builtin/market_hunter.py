"""Market Hunter: reads market ticks and reports whale activity and extreme funding."""

from __future__ import annotations

from typing import Any

from agents.runtime import Agent, Context, handles
from coordinator.decisions import DecisionType
from coordinator.models import Severity, Signal

DEFAULT_CONFIGURATION = {"whale_flow_btc": 500.0, "extreme_funding": 0.0015}


def whale_severity(flow_btc: float) -> Severity:
    """Severity of a whale flow by its size."""
    size = abs(flow_btc)
    if size >= 2000:
        return Severity.CRITICAL
    if size >= 1000:
        return Severity.HIGH
    return Severity.MEDIUM


class MarketHunter(Agent):
    """Turns MARKET_TICK signals into WHALE_ACTIVITY / EXTREME_FUNDING for its subscribers."""

    agent_type = "market-hunter"

    async def setup(self) -> None:
        """Start from the default thresholds unless the saved state has its own."""
        if not self.memory.state.configuration:
            await self.memory.save_state(configuration=DEFAULT_CONFIGURATION, reason="defaults")

    @handles("MARKET_TICK")
    async def on_tick(self, signal: Signal, ctx: Context) -> None:
        """Publish what is notable in one tick, logging each as a SIGNAL_GENERATION decision."""
        tick = signal.data
        config = self.memory.state.configuration
        flow = float(tick.get("whale_net_flow_btc", 0.0))
        funding = float(tick.get("funding_rate", 0.0))
        symbol = str(tick.get("symbol", "BTC"))
        common = {"symbol": symbol, "price": tick.get("price"), "cycle": tick.get("cycle")}
        found: list[tuple[str, dict[str, Any], Severity, float]] = []
        if abs(flow) >= float(config.get("whale_flow_btc", 500.0)):
            direction = "accumulation" if flow > 0 else "distribution"
            found.append(("WHALE_ACTIVITY", {**common, "amount_btc": round(abs(flow), 2),
                                             "direction": direction},
                          whale_severity(flow), min(0.99, 0.5 + abs(flow) / 4000)))
        if abs(funding) >= float(config.get("extreme_funding", 0.0015)):
            found.append(("EXTREME_FUNDING", {**common, "funding_rate": funding}, Severity.HIGH,
                          min(0.99, 0.5 + abs(funding) * 100)))
        for signal_type, data, severity, confidence in found:
            decision_id, confidence = await ctx.decide(
                DecisionType.SIGNAL_GENERATION, confidence=confidence, symbol=symbol,
                reasoning={"signal_type": signal_type, "patterns_applied": []},
                context={"market": common},
            )
            await ctx.publish(signal_type, data=data, severity=severity, confidence=confidence,
                              decision_id=decision_id)
            detail = (f"{data['direction']} {data['amount_btc']} BTC" if "amount_btc" in data
                      else f"funding rate {data['funding_rate']}")
            await self.memory.remember("signal", f"{signal_type} {symbol} {detail} at {data['price']}",
                                       score=confidence, symbol=symbol,
                                       metadata={"decision_id": decision_id, **data})
        seen = dict(self.memory.state.source_metrics)
        seen["ticks_seen"] = int(seen.get("ticks_seen", 0)) + 1
        seen["signals_emitted"] = int(seen.get("signals_emitted", 0)) + len(found)
        await self.memory.save_state(current_cycle=self.memory.state.current_cycle + 1,
                                     source_metrics=seen)
