"""Contract tests of retries, dead letters, replay, the processed-ledger and idempotent follow-ups."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import pytest

from hivebus.agents.runner import AgentRunner
from hivebus.bus.bus import Bus, Outcome
from hivebus.bus.dlq import DeadLetters
from hivebus.bus.registry import Registry
from hivebus.domain.models import Signal, SignalStatus
from hivebus.settings import Settings
from tests.agents_for_tests import Echo, FailUntilFixed
from tests.conftest import eventually
from tests.contract.test_runtime import run_burst as burst

pytestmark = pytest.mark.anyio


async def test_poison_signal_is_dead_lettered_after_max_deliveries_and_replayed(
    redis: Any, settings: Settings
) -> None:
    """Acceptance 3: retried up to the limit, then DLQ with the error; replay brings it back."""
    settings = dataclasses.replace(settings, max_deliveries=3)
    bus, prefix = Bus(redis, settings), f"{settings.namespace}:"
    await burst(FailUntilFixed("ff-1"), redis, settings)
    await redis.set(f"{prefix}test:broken", "1")
    poison = Signal.create("FIXME", "cli", targets=["ff-1"])
    pings = [Signal.create("PING", "cli", targets=["ff-1"]) for _ in range(5)]
    for signal in [poison, *pings]:
        await bus.publish(signal)
    await burst(FailUntilFixed("ff-1"), redis, settings)
    report = (await bus.report(poison.signal_id)).targets[0]
    assert report.status is SignalStatus.DEAD and "downstream is broken" in (report.error or "")
    assert await redis.hget(f"{prefix}test:tries", poison.signal_id) == "3"
    for ping in pings:  # the agent kept processing the others
        assert (await bus.report(ping.signal_id)).targets[0].status is SignalStatus.PROCESSED
    letters = DeadLetters(redis, settings)
    [letter] = await letters.list("ff-1")
    assert letter["attempts"] == "3" and "RuntimeError" in letter["reason"]
    await redis.delete(f"{prefix}test:broken")
    await letters.replay("ff-1", letter["dlq_entry"])
    assert (await bus.report(poison.signal_id)).targets[0].status is SignalStatus.PENDING
    assert await letters.list("ff-1") == []
    await burst(FailUntilFixed("ff-1"), redis, settings)
    assert (await bus.report(poison.signal_id)).targets[0].status is SignalStatus.PROCESSED
    assert await redis.hget(f"{prefix}test:applied", poison.signal_id) == "1"


async def test_a_retry_that_succeeds_is_processed_once(redis: Any, settings: Settings) -> None:
    """A signal that fails once and then works is PROCESSED, its effect applied once."""
    bus, prefix = Bus(redis, settings), f"{settings.namespace}:"
    await burst(FailUntilFixed("ff-1"), redis, settings)
    await redis.set(f"{prefix}test:broken", "1")
    signal = Signal.create("FIXME", "cli", targets=["ff-1"])
    await bus.publish(signal)
    runner = AgentRunner(FailUntilFixed("ff-1"), bus, Registry(redis, settings))
    batch = await runner._next_batch(burst=True)
    await bus.settle("ff-1", runner.consumer, await runner._handle_batch(batch))
    assert (await bus.report(signal.signal_id)).targets[0].status is SignalStatus.FAILED
    await redis.delete(f"{prefix}test:broken")
    await burst(FailUntilFixed("ff-1"), redis, settings)
    report = (await bus.report(signal.signal_id)).targets[0]
    assert report.status is SignalStatus.PROCESSED
    assert await redis.hget(f"{prefix}test:applied", signal.signal_id) == "1"
    assert await DeadLetters(redis, settings).list("ff-1") == []


async def test_processed_ledger_stops_a_second_application(redis: Any, settings: Settings) -> None:
    """A duplicate entry redelivered after the signal was processed is acked without running again."""
    settings = dataclasses.replace(settings, claim_idle_s=0.2)
    bus, prefix = Bus(redis, settings), f"{settings.namespace}:"
    await burst(FailUntilFixed("ff-1"), redis, settings)
    signal = Signal.create("PING", "cli", targets=["ff-1"])
    await bus.publish(signal)
    await burst(FailUntilFixed("ff-1"), redis, settings)
    inbox = bus.keys.inbox("ff-1")
    await redis.xadd(inbox, signal.to_fields())  # a duplicate entry, written by hand ...
    await redis.xreadgroup("ff-1", "ghost", {inbox: ">"})  # ... taken by a replica that died

    async def orphaned() -> bool:
        return bool(await redis.xpending_range(inbox, "ff-1", "-", "+", 1, idle=300))

    await eventually(orphaned, 10, "the duplicate to sit idle past claim_idle_s")
    await burst(FailUntilFixed("ff-1"), redis, settings)
    assert await redis.hget(f"{prefix}test:applied", signal.signal_id) == "1"
    assert (await redis.xinfo_groups(inbox))[0]["pending"] == 0


async def test_publishing_a_processed_signal_again_leaves_that_target_out(
    redis: Any, settings: Settings
) -> None:
    """Publishing an id its target already processed (its signal key gone, as after expiry) reaches
    the other targets only: a new entry is never one the ledger holds, so reads need not ask it."""
    bus, prefix = Bus(redis, settings), f"{settings.namespace}:"
    await burst(FailUntilFixed("ff-1"), redis, settings)
    await burst(FailUntilFixed("ff-2"), redis, settings)
    first = Signal.create("PING", "cli", targets=["ff-1"])
    await bus.publish(first)
    await burst(FailUntilFixed("ff-1"), redis, settings)
    await redis.delete(bus.keys.signal(first.signal_id))
    again = first.model_copy(update={"target_agents": ("ff-1", "ff-2")})
    delivered = await bus.publish(again)
    assert list(delivered) == ["ff-2"]
    assert json.loads(await redis.get(bus.keys.signal(first.signal_id)))["to"] == delivered
    assert await bus.publish_many([again]) == 0  # every target holds it now: nothing new
    assert await redis.xlen(bus.keys.inbox("ff-1")) == 1
    await burst(FailUntilFixed("ff-1"), redis, settings)
    await burst(FailUntilFixed("ff-2"), redis, settings)
    assert await redis.hget(f"{prefix}test:applied", first.signal_id) == "2"  # once by each agent
    assert [t.agent_id for t in (await bus.report(first.signal_id)).targets] == ["ff-2"]


async def test_handling_again_publishes_no_second_follow_up(redis: Any, settings: Settings) -> None:
    """Follow-up ids derive from the cause, so handling a signal twice publishes one PONG."""
    bus = Bus(redis, settings)
    await burst(Echo("echo-1"), redis, settings)
    ping = Signal.create("PING", "tester", targets=["echo-1"])
    await bus.publish(ping)
    runner = AgentRunner(Echo("echo-1"), bus, Registry(redis, settings))
    [delivery] = await runner._next_batch(burst=True)
    await runner._handle(delivery)  # handled, but the process "dies" before settling
    await runner._handle(delivery)  # handled again after a redelivery
    assert await redis.xlen(bus.keys.inbox("tester")) == 1


async def test_retries_back_off_exponentially_within_the_cap(redis: Any, settings: Settings) -> None:
    """The settle script schedules attempt n's retry base * 2^(n-1) later, capped, at a point in the
    upper half of that delay (equal jitter); the attempts are counted in the pending record."""
    settings = dataclasses.replace(settings, retry_base_s=0.5, retry_max_s=1.5, max_deliveries=10)
    bus = Bus(redis, settings)
    await burst(FailUntilFixed("ff-1"), redis, settings)
    await bus.publish(Signal.create("PING", "cli", targets=["ff-1"]))
    [delivery] = await bus.read("ff-1", "c", count=1, block_ms=None)
    for attempt, full in [(1, 0.5), (2, 1.0), (3, 1.5), (4, 1.5)]:
        before = time.time()
        settled = await bus.settle("ff-1", "c", [Outcome(delivery, SignalStatus.FAILED, "boom")])
        after = time.time()
        assert settled.failed == 1
        due = await redis.zscore(bus.keys.retries("ff-1"), delivery.entry_id)
        assert before + full / 2 - 0.01 <= due <= after + full + 0.01, (attempt, due - before)
        record = await redis.hget(bus.keys.pending("ff-1"), delivery.signal.signal_id)  # type: ignore[union-attr]
        assert record == f"{delivery.entry_id} {attempt} boom"


async def test_a_signal_that_kills_every_replica_is_dead_lettered(redis: Any, settings: Settings) -> None:
    """An entry taken over max_deliveries times (each replica handling it died: a poison pill that
    kills its handler) is dead-lettered with the reason, not handed to yet another replica."""
    settings = dataclasses.replace(settings, claim_idle_s=0.2, max_deliveries=3)
    bus, prefix = Bus(redis, settings), f"{settings.namespace}:"
    await burst(FailUntilFixed("ff-1"), redis, settings)
    signal = Signal.create("PING", "cli", targets=["ff-1"])
    await bus.publish(signal)
    inbox = bus.keys.inbox("ff-1")
    [[_, [(entry, _)]]] = await redis.xreadgroup("ff-1", "ghost-1", {inbox: ">"})  # delivery 1: died
    for ghost in ("ghost-2", "ghost-3"):  # deliveries 2 and 3: each taken over, each replica died
        await redis.xclaim(inbox, "ff-1", ghost, 0, [entry])

    async def idle() -> bool:
        return bool(await redis.xpending_range(inbox, "ff-1", "-", "+", 1, idle=300))

    await eventually(idle, 10, "the entry to sit idle past claim_idle_s")
    await burst(FailUntilFixed("ff-1"), redis, settings)
    report = (await bus.report(signal.signal_id)).targets[0]
    assert report.status is SignalStatus.DEAD and "delivered 4 times" in (report.error or "")
    assert await redis.hget(f"{prefix}test:applied", signal.signal_id) is None  # never handled
    [letter] = await DeadLetters(redis, settings).list("ff-1")
    assert letter["signal"] == signal.signal_id
