"""Contract tests of retention: age-trimming that expires instead of dropping, dead-agent removal."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from hivebus.bus.bus import Bus, Outcome
from hivebus.bus.dlq import DeadLetters
from hivebus.bus.registry import Instance, Registry
from hivebus.domain.keys import Keys
from hivebus.domain.models import Signal, SignalStatus
from hivebus.service.retention import Retention
from hivebus.settings import Settings

pytestmark = pytest.mark.anyio


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
    await redis.delete(*[k for k in await redis.keys(f"{keys.prefix}hb:{{dead-1}}:*")])
    await registry.reap_dead()
    await redis.hset(keys.agent("dead-1"), "last_seen", "1")
    result = await Retention(redis, settings).run()
    assert result.agents_removed == 1
    assert await redis.smembers(keys.agents()) == {"stopped-1"}
    assert await redis.smembers(keys.subscribers("PING")) == {"stopped-1"}
