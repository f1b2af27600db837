"""A deterministic, seeded market feed that publishes MARKET_TICK signals.

Same seed, same ticks. The full market simulator (regimes, planted regularities)
grows here later; today it is a random walk with whale flows and funding.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import anyio

from coordinator.bus import Bus
from coordinator.models import Signal

FEED_AGENT_ID = "market-feed"


def ticks(seed: int, symbol: str = "BTC", price: float = 45_000.0) -> Iterator[dict[str, Any]]:
    """Yield market ticks forever: price, whale net flow (BTC), funding rate, cycle number."""
    rng = random.Random(seed)
    cycle = 0
    while True:
        cycle += 1
        price *= 1 + rng.gauss(0, 0.004)
        whale = rng.gauss(0, 450)
        funding = rng.gauss(0.0004, 0.0007)
        yield {
            "symbol": symbol,
            "cycle": cycle,
            "price": round(price, 2),
            "whale_net_flow_btc": round(whale, 2),
            "funding_rate": round(funding, 6),
        }


async def run_feed(bus: Bus, *, count: int, interval_s: float, seed: int) -> list[str]:
    """Publish ``count`` ticks to MARKET_TICK subscribers, ``interval_s`` apart; return their ids."""
    published: list[str] = []
    for tick in ticks(seed):
        if len(published) >= count:
            break
        signal = Signal.create(
            "MARKET_TICK", FEED_AGENT_ID, data=tick, ttl_s=bus.settings.signal_ttl_s
        )
        await bus.publish(signal)
        published.append(signal.signal_id)
        if interval_s > 0:
            await anyio.sleep(interval_s)
    return published
