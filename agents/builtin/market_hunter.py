"""Market Hunter: reads market ticks and reports whale activity and extreme funding."""

from __future__ import annotations

from agents.runtime import Agent, Context, handles
from coordinator.models import Severity, Signal

WHALE_FLOW_BTC = 500.0
EXTREME_FUNDING = 0.0015


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

    @handles("MARKET_TICK")
    async def on_tick(self, signal: Signal, ctx: Context) -> None:
        """Publish what is notable in one tick."""
        tick = signal.data
        flow = float(tick.get("whale_net_flow_btc", 0.0))
        funding = float(tick.get("funding_rate", 0.0))
        common = {"symbol": tick.get("symbol", "BTC"), "price": tick.get("price"),
                  "cycle": tick.get("cycle")}
        if abs(flow) >= WHALE_FLOW_BTC:
            await ctx.publish(
                "WHALE_ACTIVITY",
                data={**common, "amount_btc": round(abs(flow), 2),
                      "direction": "accumulation" if flow > 0 else "distribution"},
                severity=whale_severity(flow),
                confidence=min(0.99, 0.5 + abs(flow) / 4000),
            )
        if abs(funding) >= EXTREME_FUNDING:
            await ctx.publish(
                "EXTREME_FUNDING",
                data={**common, "funding_rate": funding},
                severity=Severity.HIGH,
                confidence=min(0.99, 0.5 + abs(funding) * 100),
            )
