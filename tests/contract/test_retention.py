"""Contract tests of retention: age-trimming that expires instead of dropping, dead-agent removal."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from redis import exceptions as redis_errors

from hivebus.bus.bus import Bus, Outcome
from hivebus.bus.dlq import DeadLetters
from hivebus.bus.registry import Instance, Registry
from hivebus.domain.errors import RedisUnavailable, UnknownAgent
from hivebus.domain.keys import Keys
from hivebus.domain.models import Signal, SignalStatus
from hivebus.service.retention import Retention
from hivebus.settings import Settings

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]


async def test_trimming_expires_what_was_never_processed(redis: Any, settings: Settings) -> None:
    """Old entries are trimmed; the unprocessed ones become EXPIRED with a dead letter first."""
    settings = dataclasses.replace(settings, signal_ttl_s=60)
    bus, keys = Bus(redis, settings), Keys(settings.namespace)
    await Registry(redis, settings).register("te-1", Instance.here("te-1"), agent_type="t",
                                             subscriptions=("PING",), version="1")
    await bus.ensure_group("te-1")
    old = []
    for n in range(3):  # written as if published long ago
        signal = Signal.create("PING", "cli", targets=["te-1"])
        entry = await redis.xadd(keys.inbox("te-1"), signal.to_fields(), id=f"{1000 + n}-0")
        await redis.hset(keys.pending("te-1"), signal.signal_id, f"{entry} 0")
        old.append(signal)
    fresh = Signal.create("PING", "cli", targets=["te-1"], ttl_s=60)
    await bus.publish(fresh)
    delivered = await bus.read("te-1", "c1", count=2, block_ms=None)  # old[0], old[1]
    await bus.settle("te-1", "c1", [Outcome(delivered[0], SignalStatus.PROCESSED)])  # old[0] done
    result = await Retention(redis, settings).run()
    assert result.expired == 2
    status = await bus.statuses([(s.signal_id, "te-1") for s in old])
    assert status == [SignalStatus.PROCESSED, SignalStatus.EXPIRED, SignalStatus.EXPIRED]
    assert await redis.hlen(keys.pending("te-1")) == 1  # only the fresh one is unsettled
    letters = await DeadLetters(redis, settings).list("te-1")
    assert sorted(x["entry"] for x in letters) == ["1001-0", "1002-0"]
    assert all(x["reason"] == "expired before it was processed" for x in letters)
    assert [fields["id"] for _, fields in await redis.xrange(keys.inbox("te-1"))] == [fresh.signal_id]
    assert (await redis.xinfo_groups(keys.inbox("te-1")))[0]["pending"] == 0
    again = await Retention(redis, settings).run()
    assert again.expired == 0


async def test_dead_agents_leave_after_grace_but_stopped_ones_stay(redis: Any, settings: Settings) -> None:
    """A dead agent past the grace period leaves the registry; a stopped one stays."""
    settings = dataclasses.replace(settings, dead_agent_grace_s=0)
    registry, keys = Registry(redis, settings), Keys(settings.namespace)
    for agent_id in ("dead-1", "stopped-1"):
        instance = Instance.here(agent_id)
        await registry.register(agent_id, instance, agent_type="t", subscriptions=("PING",), version="1")
        if agent_id == "stopped-1":
            await registry.deregister(agent_id, instance)
    await redis.delete(*[k async for k in redis.scan_iter(match=f"{keys.prefix}hb:{{dead-1}}:*")])
    await registry.reap_dead()
    await redis.hset(keys.agent("dead-1"), "last_seen", "1")
    result = await Retention(redis, settings).run()
    assert result.agents_removed == 1
    assert await redis.smembers(keys.agents()) == {"stopped-1"}
    assert await redis.smembers(keys.subscribers("PING")) == {"stopped-1"}


@contextlib.contextmanager
def cut_short(redis: Any, transaction: int = 0, command: str = "") -> Iterator[None]:
    """Make the client's ``transaction``-th transaction from now (or its next ``command``) fail
    as if Redis went away before it ran: a registration or removal cut short there."""
    original = redis.pipeline
    count = 0

    async def gone(*_: Any, **__: Any) -> Any:
        raise redis_errors.ConnectionError("Redis went away")

    def pipeline(**options: Any) -> Any:
        nonlocal count
        pipe = original(**options)
        if options.get("transaction", True):
            count += 1
            if count == transaction:
                pipe.execute = gone
        return pipe

    redis.pipeline = pipeline
    if command:
        setattr(redis, command, gone)
    try:
        yield
    finally:
        del redis.pipeline
        if command:
            delattr(redis, command)


async def test_a_registration_cut_short_reads_as_the_one_before_and_the_pass_completes_it(
    redis: Any, settings: Settings
) -> None:
    """Issue 14: registering is a transaction in the agent's slot and one in the registry's; an
    agent is in a subscriber set only while its hash lists the type. Re-registered with other
    types and cut short before the registry's transaction, it has left the set of the type it
    dropped and not joined the new one; once no replica of it is alive the pass adds it."""
    registry, keys = Registry(redis, settings), Keys(settings.namespace)
    first = Instance.here("te-1")
    await registry.register("te-1", first, agent_type="t", subscriptions=("PING", "OLD"), version="1")
    with cut_short(redis, transaction=3), pytest.raises(RedisUnavailable):
        await registry.register("te-1", Instance.here("te-1"), agent_type="t",
                                subscriptions=("PING", "NEW"), version="2")
    assert (await registry.get("te-1")).subscriptions == ("NEW", "PING")
    assert await redis.smembers(keys.subscribers("OLD")) == set()
    assert await redis.smembers(keys.subscribers("NEW")) == set()
    assert await redis.smembers(keys.subscribers("PING")) == {"te-1"}
    assert await registry.repair() == 0  # a replica is alive: left alone
    await redis.delete(*[k async for k in redis.scan_iter(match=f"{keys.prefix}hb:{{te-1}}:*")])
    result = await Retention(redis, settings).run()
    assert result.registry_repaired == 1 and result.agents_removed == 0
    assert await redis.smembers(keys.subscribers("NEW")) == {"te-1"}
    assert await redis.smembers(keys.subscribers("OLD")) == set()
    assert (await Retention(redis, settings).run()).registry_repaired == 0


async def test_a_removal_cut_short_is_refused_to_publishers_and_the_pass_completes_it(
    redis: Any, settings: Settings
) -> None:
    """Removing leaves the subscriber sets, then deletes the hash, then leaves the agents set.
    Cut short after the hash, publishing to the agent is refused (no hash) and it receives no
    untargeted signal; the pass takes it out of the agents set. Cut short before the hash, it
    is still registered: the pass puts it back into its sets and the removal can run again."""
    registry, keys, bus = Registry(redis, settings), Keys(settings.namespace), Bus(redis, settings)
    for agent_id in ("a1", "b1"):
        instance = Instance.here(agent_id)
        await registry.register(agent_id, instance, agent_type="t", subscriptions=("PING",), version="1")
        await registry.deregister(agent_id, instance)
    with cut_short(redis, command="srem"), pytest.raises(RedisUnavailable):
        await registry.remove("a1")
    assert not await redis.exists(keys.agent("a1"))
    assert await redis.smembers(keys.subscribers("PING")) == {"b1"}
    with pytest.raises(UnknownAgent):
        await bus.publish(Signal.create("PING", "cli", targets=["a1"]))
    with cut_short(redis, command="delete"), pytest.raises(RedisUnavailable):
        await registry.remove("b1")
    assert await redis.smembers(keys.subscribers("PING")) == set()
    assert (await registry.get("b1")).subscriptions == ("PING",)
    result = await Retention(redis, settings).run()
    assert result.registry_repaired == 2
    assert await redis.smembers(keys.agents()) == {"b1"}
    assert await redis.smembers(keys.subscribers("PING")) == {"b1"}
    await registry.remove("b1")
    assert await redis.smembers(keys.agents()) == set()
    assert await redis.smembers(keys.subscribers("PING")) == set()
    assert (await Retention(redis, settings).run()).registry_repaired == 0
