"""Agents used by the tests, importable as ``tests.agents_for_tests:Name`` in subprocesses."""

from __future__ import annotations

import os

from hivebus.agents.runtime import Agent, Context, handles
from hivebus.domain.models import Signal


class Echo(Agent):
    """Answers PING with PONG to the sender."""

    agent_type = "echo"

    @handles("PING")
    async def on_ping(self, signal: Signal, ctx: Context) -> None:
        await ctx.publish("PONG", to=[signal.source_agent], data={"n": signal.data.get("n")},
                          allow_unregistered=True)


class Flaky(Agent):
    """Raises on BOOM, handles PING."""

    agent_type = "flaky"

    @handles("BOOM")
    async def on_boom(self, signal: Signal, ctx: Context) -> None:
        raise RuntimeError(f"cannot handle {signal.data}")

    @handles("PING")
    async def on_ping(self, signal: Signal, ctx: Context) -> None:
        return None


class Recorder(Agent):
    """Counts each WORK signal it handles in a Redis hash, and which process handled it."""

    agent_type = "recorder"

    @handles("WORK")
    async def on_work(self, signal: Signal, ctx: Context) -> None:
        redis = ctx.bus.redis
        prefix = ctx.bus.keys.prefix
        pipe = redis.pipeline(transaction=False)
        pipe.hincrby(f"{prefix}test:handled", signal.signal_id, 1)
        pipe.hincrby(f"{prefix}test:by_pid", str(os.getpid()), 1)
        await pipe.execute()


class FailUntilFixed(Agent):
    """FIXME signals fail while the key <ns>:test:broken exists; each try is counted."""

    agent_type = "fail-until-fixed"

    @handles("FIXME")
    async def on_fixme(self, signal: Signal, ctx: Context) -> None:
        prefix = ctx.bus.keys.prefix
        await ctx.bus.redis.hincrby(f"{prefix}test:tries", signal.signal_id, 1)
        if await ctx.bus.redis.exists(f"{prefix}test:broken"):
            raise RuntimeError("downstream is broken")
        ctx.effect("HINCRBY", f"{prefix}test:applied", signal.signal_id, 1)

    @handles("PING")
    async def on_ping(self, signal: Signal, ctx: Context) -> None:
        prefix = ctx.bus.keys.prefix
        ctx.effect("HINCRBY", f"{prefix}test:applied", signal.signal_id, 1)


class Slow(Agent):
    """Sleeps data.seconds (``data.again_seconds`` on a later run, when given), then records
    which process finished the signal (an effect). Each start is counted, and its Redis server
    time (ms) appended to ``<ns>:test:started_at:<signal id>``."""

    agent_type = "slow"

    @handles("SLOW")
    async def on_slow(self, signal: Signal, ctx: Context) -> None:
        import anyio

        prefix = ctx.bus.keys.prefix
        seconds, micros = await ctx.bus.redis.time()
        pipe = ctx.bus.redis.pipeline(transaction=False)
        pipe.hincrby(f"{prefix}test:started", signal.signal_id, 1)
        pipe.rpush(f"{prefix}test:started_at:{signal.signal_id}", int(seconds) * 1000 + int(micros) // 1000)
        runs, _ = await pipe.execute()
        wait = signal.data.get("seconds", 1)
        if int(runs) > 1:
            wait = signal.data.get("again_seconds", wait)
        await anyio.sleep(float(wait))
        pid = str(os.getpid())
        ctx.effect("HINCRBY", f"{prefix}test:finished_by", pid, 1)


class Counter(Agent):
    """WORK: counts each run of its handler (a direct write, so re-runs show), waits
    ``data.seconds`` (awaiting) and/or blocks the event loop ``data.block_s`` (``time.sleep``),
    fails its first ``data.fail`` runs, then asks for its effect:
    ``HINCRBY <ctx.key("applied")> <signal id> 1``, applied at settle."""

    agent_type = "counter"

    @handles("WORK")
    async def on_work(self, signal: Signal, ctx: Context) -> None:
        import time

        import anyio

        prefix = ctx.bus.keys.prefix
        pipe = ctx.bus.redis.pipeline(transaction=False)
        pipe.hincrby(f"{prefix}test:runs", signal.signal_id, 1)
        pipe.hincrby(f"{prefix}test:runs_by", str(os.getpid()), 1)
        runs, _ = await pipe.execute()
        if int(runs) <= int(signal.data.get("fail", 0)):
            raise RuntimeError(f"asked to fail run {runs}")
        if signal.data.get("seconds"):
            await anyio.sleep(float(signal.data["seconds"]))
        if signal.data.get("block_s"):
            time.sleep(float(signal.data["block_s"]))  # noqa: ASYNC251 - blocks the event loop on purpose
        ctx.effect("HINCRBY", ctx.key("applied"), signal.signal_id, 1)


class Forwarder(Agent):
    """FORWARD: publishes WORK to ``data.to`` (each try counted), then applies its own effect.

    A full inbox at the target makes ``ctx.publish`` raise InboxFull: a retryable failure."""

    agent_type = "forwarder"

    @handles("FORWARD")
    async def on_forward(self, signal: Signal, ctx: Context) -> None:
        prefix = ctx.bus.keys.prefix
        await ctx.bus.redis.hincrby(f"{prefix}test:tries", signal.signal_id, 1)
        await ctx.publish("WORK", to=[str(signal.data["to"])], data={"from": signal.signal_id})
        ctx.effect("HINCRBY", ctx.key("applied"), signal.signal_id, 1)
