"""``hivebus feed``: publishes the seeded market's ticks as MARKET_TICK signals, paced by time.

The demo drives the same market in lock-step instead (:mod:`hivebus.agents.desk.demo`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio

from hivebus.agents.desk.market import MarketSimulator
from hivebus.bus.bus import Bus
from hivebus.domain.models import Signal

FEED_AGENT_ID = "market-feed"


def ticks(seed: int) -> Iterator[dict[str, Any]]:
    """Yield the seeded market's ticks forever (see :mod:`hivebus.agents.desk.market`)."""
    market = MarketSimulator(seed)
    while True:
        yield market.tick()


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
