"""Agents used by benchmarks and the chaos script."""

from __future__ import annotations

from agents.runtime import Agent, Context, handles
from coordinator.models import Signal


class Counter(Agent):
    """Applies one effect per WORK signal, exactly once: HINCRBY <ns>:test:applied <signal id>."""

    agent_type = "counter"

    @handles("WORK")
    async def on_work(self, signal: Signal, ctx: Context) -> None:
        """Count the signal, atomically with its ack."""
        key = f"{ctx.bus.keys.prefix}test:applied"
        ctx.effect(lambda pipe: pipe.hincrby(key, signal.signal_id, 1))
