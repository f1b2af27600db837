"""Issue 14 on the session's real Redis Cluster (3 masters, 3 replicas): the registry, the
decision log, short-term memory, a coordinator pass and the set-aside records run through redis-py's
cluster client, which refuses any script, transaction or multi-key command spanning two slots.
The agents chosen live on different masters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from hivebus.bus.registry import Instance, Registry
from hivebus.domain.keys import Keys
from hivebus.infra.connection import open_client
from hivebus.memory.decisions import DecisionLog
from hivebus.memory.stm import ShortTermMemory
from hivebus.service.set_aside import SetAside
from hivebus.settings import Settings
from hivebus.store.sqlite import SQLiteStore
from tests.cluster_server import RedisCluster
from tests.contract.test_key_slots import drive_registry_decisions_memory_and_a_pass

pytestmark = pytest.mark.anyio


def agents_on_every_master(cluster: RedisCluster) -> list[str]:
    """Three agent ids whose slots are served by three different masters."""
    found: list[str] = []
    for node in cluster.masters():
        slots = cluster.slots_of(node)
        found.append(next(a for a in (f"agent-{n}" for n in range(10_000))
                          if key_slot(a.encode()) in slots and a not in found))
    return found


async def test_registry_decisions_memory_and_a_pass_run_on_a_cluster(
    redis_cluster: RedisCluster, settings: Settings, tmp_path: Path
) -> None:
    """The same drive as the slot test on fakeredis, on a real cluster: register, re-register,
    remove (and one cut short), decisions with outcomes and caused signals, private, shared and
    everyone memory, a pass that learns, archives (fenced, per agent slot), purges and
    repairs, set-aside records and a key moved aside; then reads by id across the slots."""
    agents = agents_on_every_master(redis_cluster)
    client: Any = open_client(redis_cluster.url)
    store = await SQLiteStore.open(tmp_path / "ltm.sqlite3")
    try:
        await drive_registry_decisions_memory_and_a_pass(client, settings, store, agents)
        keys, log = Keys(settings.namespace), DecisionLog(client, settings, archive=store)
        assert await client.smembers(keys.agents()) == {*agents[1:], "cli"}
        assert await client.smembers(keys.subscribers("NEW")) == set(agents[1:])
        assert await client.smembers(keys.subscribers("OLD")) == set()
        for agent_id in agents:
            [decision] = await DecisionLog(client, settings).query(agent_id)  # in the window
            assert (await log.get(decision.decision_id)).agent_id == agent_id
            assert len(await log.caused_signals(decision.decision_id)) == 1
            assert decision.outcome is not None and not decision.outcome.success
            assert await client.get(keys.fence(agent_id)) is not None
            archived = await log.query(agent_id, success=True)  # from the archive
            assert [d.agent_id for d in archived] == [agent_id]
            memory = ShortTermMemory(client, settings, agent_id)
            assert {i.content for i in await memory.items(include_shared=False)} == {"mine"}
        seen = {i.content for i in await ShortTermMemory(client, settings, agents[1]).items()}
        assert seen == {"mine", "for one", "for all"}
        records = await SetAside(client, keys).list()
        [moved] = [r for r in records if r.get("moved_to")]
        assert await client.get(moved["moved_to"]) == "edited by hand"
    finally:
        await store.close()
        await client.aclose()


async def test_a_registration_cut_short_on_a_cluster_is_completed_by_the_pass(
    redis_cluster: RedisCluster, settings: Settings
) -> None:
    """A re-registration whose registry transaction never ran (the agent's slot and the
    registry's are on different masters here) is completed by Registry.repair."""
    [agent_id, *_] = [a for a in agents_on_every_master(redis_cluster)
                      if key_slot(a.encode()) != key_slot(b"~registry")]
    client: Any = open_client(redis_cluster.url)
    try:
        registry, keys = Registry(client, settings), Keys(settings.namespace)
        instance = Instance.here(agent_id)
        await registry.register(agent_id, instance, agent_type="t", subscriptions=("PING",), version="1")
        await registry.deregister(agent_id, instance)
        await client.hset(keys.agent(agent_id), "subscriptions", "NEW,PING")  # as if cut short
        assert await registry.repair() == 1
        assert await client.smembers(keys.subscribers("NEW")) == {agent_id}
        await registry.remove(agent_id)
        assert await client.smembers(keys.subscribers("PING")) == set()
        assert not await client.sismember(keys.agents(), agent_id)
    finally:
        await client.aclose()
