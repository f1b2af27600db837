"""Market Hunter: each market tick, chooses its sources, detects whale activity and extreme
funding, and publishes them to their subscribers (the risk manager and the executor)."""

from __future__ import annotations

from typing import Any

from hivebus.agents.desk.decision_types import DecisionType
from hivebus.agents.desk.market import funding_bucket
from hivebus.agents.runner import Permanent
from hivebus.agents.runtime import Agent, Context, handles
from hivebus.domain.models import Severity, Signal

DEFAULT_CONFIGURATION = {"whale_flow_btc": 500.0, "extreme_funding": 0.0025}
SOURCES = ("coinglass", "cryptoquant", "glassnode")
PATTERN_BOOST = 0.1


def whale_severity(flow_btc: float) -> Severity:
    """Severity of a whale flow by its size."""
    size = abs(flow_btc)
    if size >= 2000:
        return Severity.CRITICAL
    if size >= 1000:
        return Severity.HIGH
    return Severity.MEDIUM


class MarketHunter(Agent):
    """Turns MARKET_TICK signals into WHALE_ACTIVITY / EXTREME_FUNDING, logging each choice."""

    agent_type = "market-hunter"

    async def setup(self) -> None:
        """Start from the default thresholds unless the saved state has its own."""
        if not self.memory.state.configuration:
            await self.memory.save_state(configuration=DEFAULT_CONFIGURATION, reason="defaults")

    @handles("MARKET_TICK")
    async def on_tick(self, signal: Signal, ctx: Context) -> None:
        """One cycle: select sources, detect, publish, remember, save state."""
        tick, config = signal.data, self.memory.state.configuration
        missing = [k for k in ("price", "funding_rate", "whale_net_flow_btc", "cycle")
                   if not isinstance(tick.get(k), int | float)]
        if missing:
            raise Permanent(f"MARKET_TICK data lacks numeric {', '.join(missing)}")
        metrics = dict(self.memory.state.source_metrics)
        scores = {s: float(metrics.get(s, {}).get("quality", 0.9 - 0.05 * n))
                  for n, s in enumerate(SOURCES)}
        selected = sorted(scores, key=lambda s: -scores[s])[:2]
        await ctx.decide(DecisionType.SOURCE_SELECTION, confidence=round(max(scores.values()), 4),
                         reasoning={"sources": list(SOURCES), "scores": scores, "selected": selected},
                         context={"cycle": tick.get("cycle")})
        flow, funding = float(tick["whale_net_flow_btc"]), float(tick["funding_rate"])
        features = {"whale": "accumulation" if flow > 0 else "distribution",
                    "funding": funding_bucket(funding)}
        common = {"symbol": tick.get("symbol", "BTC"), "price": tick["price"], "cycle": tick["cycle"],
                  "features": features}
        found: list[tuple[str, dict[str, Any], Severity, float]] = []
        if abs(flow) >= float(config.get("whale_flow_btc", 500.0)):
            found.append(("WHALE_ACTIVITY", {**common, "amount_btc": round(abs(flow), 2),
                                             "direction": features["whale"]},
                          whale_severity(flow), min(0.95, 0.5 + abs(flow) / 5000)))
        if abs(funding) >= float(config.get("extreme_funding", 0.0025)):
            found.append(("EXTREME_FUNDING", {**common, "funding_rate": funding}, Severity.HIGH, 0.6))
        known = await self.memory.patterns(min_confidence=0.5) if found else []
        for signal_type, data, severity, confidence in found:
            applied = [p.pattern_id for p in known if p.data.get("features") == features
                       and p.pattern_id.split("/")[2:3] == [signal_type]]
            if applied:
                confidence = min(0.99, confidence + PATTERN_BOOST)
            decision_id, confidence = await ctx.decide(
                DecisionType.SIGNAL_GENERATION, confidence=confidence, symbol=data["symbol"],
                reasoning={"signal_type": signal_type, "patterns_applied": applied},
                context={"cycle": tick["cycle"], "features": features, "price": tick["price"]})
            await ctx.publish(signal_type, data=data, severity=severity, confidence=confidence,
                              decision_id=decision_id)
            await self.memory.remember("signal", f"{signal_type} {features['whale']} whales, funding "
                                       f"{features['funding']} at {tick['price']}", score=confidence,
                                       symbol=data["symbol"], metadata={"decision_id": decision_id})
        metrics["ticks_seen"] = int(metrics.get("ticks_seen", 0)) + 1
        metrics["signals_emitted"] = int(metrics.get("signals_emitted", 0)) + len(found)
        await self.memory.save_state(current_cycle=self.memory.state.current_cycle + 1,
                                     source_metrics=metrics)
