"""Issue 12: one bad record never stops the coordinator; it is set aside where an operator can
list and clear it. Library tests on fakeredis and each real redis-server, CLI tests on 7.0."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from redis.crc import key_slot

from hivebus.bus.registry import Registry
from hivebus.domain.errors import RedisUnavailable
from hivebus.domain.keys import Keys
from hivebus.memory.decisions import DecisionLog
from hivebus.service.coordinator import Coordinator
from hivebus.service.set_aside import SetAside
from hivebus.settings import Settings
from hivebus.store.sqlite import SQLiteStore
from tests.conftest import RedisServer, hivebus_argv, hivebus_env

pytestmark = pytest.mark.anyio

BAD_AGENT = "bad id!"


async def plant_bad_records(redis: Any, keys: Keys) -> str:
    """The four of the issue: a registry member and a decision-agents member that are not agent
    ids, an outcome-queue member that is not a decision id, a decision key holding a string."""
    await redis.sadd(keys.agents(), BAD_AGENT)
    await redis.sadd(keys.decision_agents(), "../../etc")
    await redis.zadd(keys.outcomes("te-1"), {"not-a-decision-id": 0})
    string_decision = "01KAAAAAAAAAAAAAAAAAAAAAAA"
    await redis.set(keys.decision("te-1", string_decision), "edited by hand")
    await redis.zadd(keys.outcomes("te-1"), {string_decision: 0})
    return string_decision


async def test_bad_records_are_set_aside_and_the_pass_goes_on(
    redis: Any, settings: Settings, store: SQLiteStore
) -> None:
    keys = Keys(settings.namespace)
    log = DecisionLog(redis, settings)
    for n in range(3):
        decision_id = await log.log_decision("te-1", "TRADE_EXECUTION", reasoning={"action": "buy"})
        await log.log_outcome(decision_id, success=n > 0)
    string_decision = await plant_bad_records(redis, keys)

    result = await Coordinator(redis, settings, store).once()
    assert result.counted == 3                      # the good outcomes were learned
    records = await SetAside(redis, keys).list()
    reasons = {(r["key"], r["member"]): r["reason"] for r in records}
    assert reasons[(keys.agents(), BAD_AGENT)] == "not an agent id"
    assert reasons[(keys.decision_agents(), "../../etc")] == "not an agent id"
    assert reasons[(keys.outcomes("te-1"), "not-a-decision-id")] == "not a decision id"
    [moved] = [r for r in records if r["key"] == keys.decision("te-1", string_decision)]
    assert moved["reason"] == "a decision that is not a hash"
    assert await redis.get(moved["moved_to"]) == "edited by hand"   # content kept
    assert key_slot(moved["moved_to"].encode()) == key_slot(moved["key"].encode())
    assert not await redis.sismember(keys.agents(), BAD_AGENT)
    assert await redis.zcard(keys.outcomes("te-1")) == 0
    assert (await Coordinator(redis, settings, store).once()).counted == 0  # and again: no error
    assert await SetAside(redis, keys).clear(everything=True) == len(records)


async def test_a_shared_key_of_the_wrong_type_is_moved_aside_and_the_pass_goes_on(
    redis: Any, settings: Settings, store: SQLiteStore
) -> None:
    keys = Keys(settings.namespace)
    await redis.lpush(keys.decision_agents(), "x")
    await redis.set(keys.late_outcomes(), "edited by hand")
    await Coordinator(redis, settings, store).once()
    await redis.sadd(keys.decision_agents(), "te-1")  # a set again: te-1's queue is read next
    await redis.set(keys.outcomes("te-1"), "edited by hand")
    await Coordinator(redis, settings, store).once()
    records = {r["key"]: r for r in await SetAside(redis, keys).list()}
    assert records[keys.outcomes("te-1")]["reason"] == "a string where a zset belongs"
    assert records[keys.decision_agents()]["reason"] == "a list where a set belongs"
    assert records[keys.late_outcomes()]["reason"] == "a string where a hash belongs"
    assert await redis.get(records[keys.outcomes("te-1")]["moved_to"]) == "edited by hand"
    assert await redis.get(records[keys.late_outcomes()]["moved_to"]) == "edited by hand"
    for key, record in records.items():  # moved within its slot (a cluster renames only so)
        assert key_slot(record["moved_to"].encode()) == key_slot(key.encode()), record
    assert not await redis.exists(keys.outcomes("te-1"))


async def test_listing_agents_skips_and_names_a_bad_registry_member(redis: Any, settings: Settings) -> None:
    keys = Keys(settings.namespace)
    await redis.sadd(keys.agents(), BAD_AGENT, "ok-agent\n")
    registry = Registry(redis, settings)
    assert await registry.list_agents() == []
    assert sorted(registry.skipped) == sorted([BAD_AGENT, "ok-agent\n"])


def test_cli_names_skipped_members_and_lists_and_clears_set_aside_records(
    real_server: RedisServer, namespace: str, tmp_path: Any
) -> None:
    env = hivebus_env(real_server.url, namespace, HIVEBUS_HOME=str(tmp_path / ".hivebus"))
    import redis as sync_redis

    client = sync_redis.Redis.from_url(real_server.url, decode_responses=True)
    keys = Keys(namespace)
    client.sadd(keys.agents(), BAD_AGENT)
    agents = subprocess.run(hivebus_argv("agents"), env=env, capture_output=True, text=True, timeout=60)
    assert agents.returncode == 0, agents.stderr
    assert "skipped 1 registry member(s)" in agents.stderr and BAD_AGENT in agents.stderr
    acl = subprocess.run(hivebus_argv("acl"), env=env, capture_output=True, text=True, timeout=60)
    assert acl.returncode == 0 and BAD_AGENT in acl.stderr
    once = subprocess.run(hivebus_argv("coordinator", "--once"), env=env, capture_output=True,
                          text=True, timeout=120)
    assert once.returncode == 0, once.stderr
    listed = subprocess.run(hivebus_argv("set-aside", "list", "--json"), env=env, capture_output=True,
                            text=True, timeout=60)
    rows = json.loads(listed.stdout)
    assert [(r["key"], r["member"], r["reason"]) for r in rows] == [
        (keys.agents(), BAD_AGENT, "not an agent id")]
    table = subprocess.run(hivebus_argv("set-aside", "list"), env=env, capture_output=True, text=True,
                           timeout=60)
    assert BAD_AGENT in table.stdout and "not an agent id" in table.stdout
    refused = subprocess.run(hivebus_argv("set-aside", "clear"), env=env, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1
    cleared = subprocess.run(hivebus_argv("set-aside", "clear", rows[0]["record_id"]), env=env,
                             capture_output=True, text=True, timeout=60)
    assert cleared.stdout.strip() == "cleared 1 record(s)"
    client.close()


async def test_a_member_is_recorded_before_it_is_removed(redis: Any, settings: Settings) -> None:
    """Issue 14: the record stream and the set are in different slots, so no transaction holds
    both: the record is written first. Cut short before the removal, the member is still there,
    recorded; setting it aside again records it twice and removes it."""
    keys, aside = Keys(settings.namespace), SetAside(redis, Keys(settings.namespace))
    await redis.sadd(keys.agents(), BAD_AGENT)

    async def gone(*_: Any) -> Any:
        raise ConnectionError("Redis went away")

    redis.srem = gone
    with pytest.raises(RedisUnavailable, match="went away"):
        await aside.members(keys.agents(), [BAD_AGENT], "not an agent id")
    del redis.srem
    assert await redis.sismember(keys.agents(), BAD_AGENT)
    assert [r["member"] for r in await aside.list()] == [BAD_AGENT]
    await aside.members(keys.agents(), [BAD_AGENT], "not an agent id")
    assert not await redis.sismember(keys.agents(), BAD_AGENT)
    assert [r["member"] for r in await aside.list()] == [BAD_AGENT, BAD_AGENT]
