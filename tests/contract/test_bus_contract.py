"""Contract tests of the bus, run on fakeredis and on every real redis-server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hivebus.bus.bus import Bus, Outcome
from hivebus.bus.dlq import DeadLetters
from hivebus.bus.registry import Instance, Registry
from hivebus.domain.errors import InvalidInput, NotFound, UnknownAgent
from hivebus.domain.keys import Keys
from hivebus.domain.models import Signal, SignalStatus
from hivebus.settings import Settings

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]


async def register(redis: Any, settings: Settings, agent_id: str, *subs: str) -> Instance:
    """Register ``agent_id`` subscribed to ``subs`` and create its consumer group."""
    instance = Instance.here(agent_id)
    await Registry(redis, settings).register(
        agent_id, instance, agent_type="test", subscriptions=subs, version="1"
    )
    await Bus(redis, settings).ensure_group(agent_id)
    return instance


async def test_targeted_publish_reaches_only_its_targets(redis: Any, settings: Settings) -> None:
    """A targeted signal lands in each target's stream and nowhere else, status PENDING."""
    bus, keys = Bus(redis, settings), Keys(settings.namespace)
    for agent_id in ("rm-1", "te-1", "bystander"):
        await register(redis, settings, agent_id, "WHALE_ACTIVITY")
    signal = Signal.create("WHALE_ACTIVITY", "mh-1", targets=["rm-1", "te-1"],
                           data={"amount_btc": 1500})
    delivered = await bus.publish(signal)
    assert sorted(delivered) == ["rm-1", "te-1"]
    assert await redis.xlen(keys.inbox("rm-1")) == 1
    assert await redis.xlen(keys.inbox("te-1")) == 1
    assert await redis.xlen(keys.inbox("bystander")) == 0
    entry = (await redis.xrange(keys.inbox("rm-1")))[0][1]
    assert entry["type"] == "WHALE_ACTIVITY" and json.loads(entry["data"]) == {"amount_btc": 1500}
    report = await bus.report(signal.signal_id)
    assert {t.agent_id: t.status for t in report.targets} == {
        "rm-1": SignalStatus.PENDING, "te-1": SignalStatus.PENDING}


async def test_untargeted_publish_reaches_subscribers(redis: Any, settings: Settings) -> None:
    """With no targets a signal goes to every agent subscribed to its type."""
    bus = Bus(redis, settings)
    await register(redis, settings, "a1", "EXTREME_FUNDING")
    await register(redis, settings, "a2", "EXTREME_FUNDING", "OTHER")
    await register(redis, settings, "a3", "OTHER")
    delivered = await bus.publish(Signal.create("EXTREME_FUNDING", "mh-1"))
    assert sorted(delivered) == ["a1", "a2"]


async def test_unregistered_target_is_refused_unless_allowed(redis: Any, settings: Settings) -> None:
    """Publishing to a never-registered id fails and writes nothing, unless explicitly allowed."""
    bus, keys = Bus(redis, settings), Keys(settings.namespace)
    signal = Signal.create("PING", "cli", targets=["ghost"])
    with pytest.raises(UnknownAgent, match="ghost"):
        await bus.publish(signal)
    assert not await redis.exists(keys.signal(signal.signal_id), keys.inbox("ghost"))
    assert await bus.publish(signal, allow_unregistered=True) == {
        "ghost": (await redis.xrange(keys.inbox("ghost")))[0][0]}


async def test_republishing_the_same_signal_is_a_no_op(redis: Any, settings: Settings) -> None:
    """A publisher retrying with the same signal id does not create a second delivery."""
    bus, keys = Bus(redis, settings), Keys(settings.namespace)
    await register(redis, settings, "rm-1", "PING")
    signal = Signal.create("PING", "cli", targets=["rm-1"])
    assert await bus.publish(signal)
    assert await bus.publish(signal) == {}
    assert await redis.xlen(keys.inbox("rm-1")) == 1


async def test_oversize_payload_is_refused(redis: Any, settings: Settings) -> None:
    """Data larger than the configured limit is refused before anything is written."""
    bus = Bus(redis, settings)
    await register(redis, settings, "rm-1", "PING")
    big = Signal.create("PING", "cli", targets=["rm-1"], data={"x": "y" * 70_000})
    with pytest.raises(InvalidInput, match="limit"):
        await bus.publish(big)


async def test_a_signal_that_would_outlive_retention_is_refused(redis: Any, settings: Settings) -> None:
    """Retention expires inbox entries older than HIVEBUS_SIGNAL_TTL_S: a signal that expires
    later is refused before anything is written (it would be dead-lettered EXPIRED early)."""
    bus, keys = Bus(redis, settings), Keys(settings.namespace)
    await register(redis, settings, "rm-1", "PING")
    long_lived = Signal.create("PING", "cli", targets=["rm-1"], ttl_s=settings.signal_ttl_s + 60)
    with pytest.raises(InvalidInput, match="HIVEBUS_SIGNAL_TTL_S"):
        await bus.publish(long_lived)
    assert await redis.xlen(keys.inbox("rm-1")) == 0
    assert await bus.publish(Signal.create("PING", "cli", targets=["rm-1"], ttl_s=settings.signal_ttl_s))


async def test_replicas_share_work_and_settle_acks(redis: Any, settings: Settings) -> None:
    """Two consumers of one group split the entries; settling acks them and records PROCESSED."""
    bus, keys = Bus(redis, settings), Keys(settings.namespace)
    await register(redis, settings, "te-1", "PING")
    ids = [(await bus.publish(Signal.create("PING", "cli", targets=["te-1"])), None) for _ in range(10)]
    assert len(ids) == 10
    first = await bus.read("te-1", "replica-a", count=6, block_ms=None)
    second = await bus.read("te-1", "replica-b", count=10, block_ms=None)
    assert len(first) == 6 and len(second) == 4
    assert not {d.entry_id for d in first} & {d.entry_id for d in second}
    report = await bus.report(first[0].signal.signal_id)  # type: ignore[union-attr]
    assert report.targets[0].status is SignalStatus.PROCESSING
    assert report.targets[0].consumer == "replica-a"
    settled_a = await bus.settle("te-1", "replica-a", [Outcome(d, SignalStatus.PROCESSED) for d in first])
    settled_b = await bus.settle("te-1", "replica-b", [Outcome(d, SignalStatus.PROCESSED) for d in second])
    assert (settled_a.processed, settled_b.processed) == (6, 4)
    groups = await redis.xinfo_groups(keys.inbox("te-1"))
    assert groups[0]["pending"] == 0
    report = await bus.report(second[-1].signal.signal_id)  # type: ignore[union-attr]
    assert report.targets[0].status is SignalStatus.PROCESSED
    [agent] = await Registry(redis, settings).list_agents()
    assert agent.agent_id == "te-1" and agent.counters["processed"] == 10


async def test_malformed_entry_is_dead_lettered_with_reason(redis: Any, settings: Settings) -> None:
    """An entry written by hand with a bad field decodes to an error and lands in the DLQ."""
    bus, keys = Bus(redis, settings), Keys(settings.namespace)
    await register(redis, settings, "te-1", "PING")
    await redis.xadd(keys.inbox("te-1"), {"type": "PING", "data": "{broken"})
    [delivery] = await bus.read("te-1", "c", count=10, block_ms=None)
    assert delivery.signal is None and "not valid JSON" in (delivery.error or "")
    await bus.settle("te-1", "c", [Outcome(delivery, SignalStatus.DEAD, delivery.error or "")])
    [letter] = await DeadLetters(redis, settings).list("te-1")
    assert "not valid JSON" in letter["reason"]
    assert json.loads(letter["original"]) == {"type": "PING", "data": "{broken"}
    assert (await redis.xinfo_groups(keys.inbox("te-1")))[0]["pending"] == 0


async def test_report_of_unknown_signal_is_not_found(redis: Any, settings: Settings) -> None:
    """Asking for a signal that does not exist is a NotFound error."""
    with pytest.raises(NotFound):
        await Bus(redis, settings).report(Signal.create("PING", "a").signal_id)


async def test_recent_lists_newest_first(redis: Any, settings: Settings) -> None:
    """The signal log reads newest first."""
    bus = Bus(redis, settings)
    await register(redis, settings, "a1", "PING")
    sent = [Signal.create("PING", "cli", targets=["a1"]) for _ in range(3)]
    for signal in sent:
        await bus.publish(signal)
    assert [r["id"] for r in await bus.recent(3)] == [s.signal_id for s in reversed(sent)]


async def test_publish_many_is_one_batch_and_idempotent(redis: Any, settings: Settings) -> None:
    """A batch publish delivers every signal; publishing the same batch again adds nothing."""
    bus, keys = Bus(redis, settings), Keys(settings.namespace)
    await register(redis, settings, "rm-1", "PING")
    batch = [Signal.create("PING", "cli", targets=["rm-1"], data={"n": n}) for n in range(50)]
    assert await bus.publish_many(batch) == 50
    assert await bus.publish_many(batch) == 0
    assert await redis.xlen(keys.inbox("rm-1")) == 50
    with pytest.raises(UnknownAgent):
        await bus.publish_many([Signal.create("PING", "cli", targets=["ghost"])])


async def test_publish_and_settle_survive_a_flushed_script_cache(redis: Any, settings: Settings) -> None:
    """After SCRIPT FLUSH (as after a server restart) batches publish and settle as usual: the batch
    reloads its script, and settle (sent as EVAL) applies its effects once."""
    bus, keys = Bus(redis, settings), Keys(settings.namespace)
    await register(redis, settings, "rm-1", "PING")
    assert await bus.publish_many([Signal.create("PING", "cli", targets=["rm-1"])]) == 1
    await redis.script_flush()
    batch = [Signal.create("PING", "cli", targets=["rm-1"], data={"n": n}) for n in range(3)]
    assert await bus.publish_many(batch) == 3
    deliveries = await bus.read("rm-1", "c", count=10, block_ms=None)
    await redis.script_flush()
    effect = ("INCRBY", keys.effect_key("rm-1", "effects"), "1")  # in the agent's slot (ctx.key)
    outcomes = [Outcome(d, SignalStatus.PROCESSED, effects=(effect,)) for d in deliveries]
    assert (await bus.settle("rm-1", "c", outcomes)).processed == 4
    assert await redis.get(keys.effect_key("rm-1", "effects")) == "4"
    assert (await redis.xinfo_groups(keys.inbox("rm-1")))[0]["pending"] == 0
