"""Publishing as on a Redis Cluster: one script call per slot (targets and signal shards spread
over slots), checks before writes, idempotent republish, and a publish that fails part-way.

Run on every server of the session with ``Bus(per_slot=True)``: the calls a cluster needs are
plain script calls a single Redis runs too. tests/e2e/test_cluster_* run it on a real cluster."""

from __future__ import annotations

from typing import Any

import pytest
from redis import exceptions as redis_errors
from redis.crc import key_slot

from hivebus.bus.bus import Bus
from hivebus.bus.registry import Registry
from hivebus.domain.errors import BadKey, InboxFull, PublishIncomplete, UnknownAgent
from hivebus.domain.keys import Keys
from hivebus.domain.models import Signal, SignalStatus
from hivebus.settings import Settings
from tests.contract.test_bus_contract import register

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]
AGENTS = ["a1", "b2", "c3", "d4", "e5"]


async def written(redis: Any, keys: Keys) -> tuple[list[int], int, int]:
    """Inbox lengths of AGENTS, signal-log entries, signal records."""
    inboxes = [await redis.xlen(keys.inbox(a)) for a in AGENTS]
    logged = sum([await redis.xlen(log) for log in keys.signal_logs()])
    records = len([k async for k in redis.scan_iter(match=f"{keys.prefix}signal:*", count=1000)])
    return inboxes, logged, records


async def test_a_batch_over_many_slots_reaches_every_target_once(redis: Any, settings: Settings) -> None:
    keys = Keys(settings.namespace)
    for agent in AGENTS:
        await register(redis, settings, agent, "TICK")
    assert len({key_slot(keys.inbox(a).encode()) for a in AGENTS}) == len(AGENTS)  # all apart
    bus = Bus(redis, settings, per_slot=True)
    batch = [Signal.create("PING", "app", targets=AGENTS[:3]) for _ in range(20)]
    batch += [Signal.create("TICK", "app") for _ in range(5)]  # to every subscriber
    assert await bus.publish_many(batch, allow_unregistered=True) == 25
    assert await written(redis, keys) == ([25, 25, 25, 5, 5], 25, 25)
    assert await bus.publish_many(batch, allow_unregistered=True) == 0  # again: nothing twice
    assert await written(redis, keys) == ([25, 25, 25, 5, 5], 25, 25)
    report = await bus.report(batch[0].signal_id)
    assert [(t.agent_id, t.status, bool(t.entry_id)) for t in report.targets] == [
        (a, SignalStatus.PENDING, True) for a in AGENTS[:3]]
    assert report.signal == batch[0]
    assert [r["id"] for r in await bus.recent(3)] == [s.signal_id for s in reversed(batch[-3:])]
    published = {i.agent_id: i.counters["published"] for i in await Registry(redis, settings).list_agents()}
    assert published == dict.fromkeys(AGENTS, 0)  # 'app' is no agent; counted, not listed


async def test_refusals_in_one_slot_write_nothing_in_any(redis: Any, settings: Settings) -> None:
    keys = Keys(settings.namespace)
    for agent in AGENTS[:2]:
        await register(redis, settings, agent)
    bus = Bus(redis, settings, per_slot=True)
    with pytest.raises(UnknownAgent, match="ghost"):
        await bus.publish(Signal.create("PING", "app", targets=["a1", "b2", "ghost"]))
    assert await written(redis, keys) == ([0, 0, 0, 0, 0], 0, 0)
    small = Bus(redis, Settings(namespace=settings.namespace, home=settings.home, inbox_max=1),
                per_slot=True)
    await small.publish(Signal.create("PING", "app", targets=["b2"]))
    with pytest.raises(InboxFull, match="'b2' has 1 unsettled"):
        await small.publish(Signal.create("PING", "app", targets=["a1", "b2"]))
    assert await written(redis, keys) == ([0, 1, 0, 0, 0], 1, 1)
    await redis.delete(keys.pending("a1"))
    await redis.set(keys.pending("a1"), "nonsense")
    with pytest.raises(BadKey, match="pending"):
        await bus.publish(Signal.create("PING", "app", targets=["a1", "b2"]))
    assert await written(redis, keys) == ([0, 1, 0, 0, 0], 1, 1)


async def test_a_write_that_fails_in_one_slot_is_named_and_completed_by_publishing_again(
        redis: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks pass, then one slot's write fails (as a failover would make it): the error
    names the target that lacks the signal; publishing the same signal again delivers it there
    and nowhere twice."""
    keys = Keys(settings.namespace)
    for agent in AGENTS[:3]:
        await register(redis, settings, agent)
    bus = Bus(redis, settings, per_slot=True)
    real_round = Bus._publish_round

    async def lose_c3(self: Bus, plan: Any, calls: Any, allow: bool, mode: str) -> list[Any]:
        if mode != "write":
            return await real_round(self, plan, calls, allow, mode)
        replies = await real_round(self, plan, [c for c in calls if "c3" not in c[1]], allow, mode)
        lost = [redis_errors.ResponseError("CLUSTERDOWN The cluster is down")]
        return [replies.pop(0) if "c3" not in c[1] else lost[0] for c in calls]

    signal = Signal.create("PING", "app", targets=AGENTS[:3])
    monkeypatch.setattr(Bus, "_publish_round", lose_c3)
    with pytest.raises(PublishIncomplete, match="c3 did not get 1 signal"):
        await bus.publish(signal)
    assert (await written(redis, keys))[0] == [1, 1, 0, 0, 0]
    monkeypatch.setattr(Bus, "_publish_round", real_round)
    assert await bus.publish(signal) == {"c3": (await redis.xrange(keys.inbox("c3")))[0][0]}
    assert await written(redis, keys) == ([1, 1, 1, 0, 0], 1, 1)
    assert {t.agent_id for t in (await bus.report(signal.signal_id)).targets} == set(AGENTS[:3])


async def test_on_a_cluster_an_effect_outside_the_agents_slot_is_refused_when_queued(
        redis: Any, settings: Settings) -> None:
    """A settle applies effects in the agent's slot: on a cluster a handler's effect on another
    slot's key is refused at ctx.effect (the handler fails, is retried, then dead-lettered with
    the reason) instead of failing every settle; ctx.key(name) keys pass, and on one Redis any
    key does."""
    from hivebus.agents.runtime import Context
    from hivebus.domain.errors import InvalidInput

    on_cluster = Context(Bus(redis, settings, per_slot=True), "a1", None)
    on_cluster.effect("HINCRBY", on_cluster.key("wins"), "BTC", 1)
    with pytest.raises(InvalidInput, match=r"not in agent a1's hash slot.*use ctx\.key"):
        on_cluster.effect("HINCRBY", "app:wins", "BTC", 1)
    assert len(on_cluster.effects) == 1
    single = Context(Bus(redis, settings, per_slot=False), "a1", None)
    single.effect("HINCRBY", "app:wins", "BTC", 1)
    assert len(single.effects) == 1
