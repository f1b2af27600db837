"""A deterministic, seeded market: price random walk with regimes, funding, whale flows, volatility.

Same seed, same ticks. Two setups are planted in it, so there is something true to learn
and something that only looks like it:

* **planted regularity** — funding *high* (≥ 0.10 %) while whales *accumulate*
  (net flow ≥ +500 BTC): the next 3 ticks are pushed up with probability 0.8 (down otherwise);
* **planted noise** — whales *distribute* (net flow ≤ -500 BTC) with *normal* funding:
  the next 3 ticks are pushed down or up with probability 0.5 each.

Every other tick moves by regime drift plus noise.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

HORIZON = 3            # ticks a setup's effect lasts (and a position is held)
HIGH_FUNDING = 0.001
WHALE_FLOW = 500.0
REGIMES = {"bull": 0.0006, "bear": -0.0006, "sideways": 0.0}


def funding_bucket(rate: float) -> str:
    """high / normal / negative."""
    return "high" if rate >= HIGH_FUNDING else ("negative" if rate < 0 else "normal")


def market_cycle(data: dict[str, Any], default: int) -> int:
    """The market cycle a tick or market signal belongs to (its ``cycle`` field), else ``default``."""
    cycle = data.get("cycle")
    return cycle if isinstance(cycle, int) and not isinstance(cycle, bool) else default


class MarketSimulator:
    """Yields one tick per call to :meth:`tick`."""

    def __init__(self, seed: int, price: float = 45_000.0) -> None:
        self.rng = random.Random(seed)
        self.price = price
        self.cycle = 0
        self.regime = "sideways"
        self.bias: deque[float] = deque()

    def tick(self) -> dict[str, Any]:
        """The next tick: cycle, price, funding_rate, whale_net_flow_btc, volatility, regime."""
        rng = self.rng
        self.cycle += 1
        if rng.random() < 0.05:
            self.regime = rng.choice(sorted(REGIMES))
        volatility = 0.004 if rng.random() < 0.7 else 0.009
        move = REGIMES[self.regime] + rng.gauss(0, volatility * 0.3)
        if self.bias:
            move += self.bias.popleft()
        self.price = round(self.price * (1 + move), 2)
        setup = rng.random()
        if setup < 0.22:      # the planted regularity
            flow, funding = rng.uniform(600, 1800), rng.uniform(0.0011, 0.003)
            direction = 0.008 if rng.random() < 0.8 else -0.008
        elif setup < 0.40:    # the planted noise
            flow, funding = -rng.uniform(600, 1800), rng.uniform(0.0, 0.0008)
            direction = 0.004 if rng.random() < 0.5 else -0.004
        else:
            flow, funding = rng.gauss(0, 200), rng.gauss(0.0003, 0.0003)
            direction = 0.0
        if direction:  # adds to whatever earlier setups still push
            while len(self.bias) < HORIZON:
                self.bias.append(0.0)
            for i in range(HORIZON):
                self.bias[i] += direction
        return {"symbol": "BTC", "cycle": self.cycle, "price": self.price, "regime": self.regime,
                "funding_rate": round(funding, 6), "whale_net_flow_btc": round(flow, 2),
                "volatility": volatility}
