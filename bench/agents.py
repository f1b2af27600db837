"""Agents used by benchmarks and the chaos script."""

from __future__ import annotations

from hivebus.agents.runtime import Agent, Context, handles
from hivebus.domain.models import Signal


class Counter(Agent):
    """Applies one effect per WORK signal, exactly once: HINCRBY <ns>:test:applied <signal id>."""

    agent_type = "counter"

    @handles("WORK")
    async def on_work(self, signal: Signal, ctx: Context) -> None:
        """Count the signal, atomically with its ack."""
        key = f"{ctx.bus.keys.prefix}test:applied"
        ctx.effect("HINCRBY", key, signal.signal_id, 1)


class Sink(Agent):
    """Handles WORK signals and does nothing else: the bus's own cost, per signal."""

    agent_type = "sink"

    @handles("WORK")
    async def on_work(self, signal: Signal, ctx: Context) -> None:
        """Nothing to do: validated, status recorded and acked by the runtime."""


class LatencyProbe(Agent):
    """Records publish-to-handler latency (ms) of each WORK signal, applied with the ack."""

    agent_type = "latency-probe"

    @handles("WORK")
    async def on_work(self, signal: Signal, ctx: Context) -> None:
        """Push now - sent_at (from the data) onto a list."""
        import time

        latency_ms = (time.time() - float(signal.data["sent_at"])) * 1000
        key = f"{ctx.bus.keys.prefix}bench:latency"
        ctx.effect("RPUSH", key, f"{latency_ms:.4f}")
