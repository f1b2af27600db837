"""Fault 8: every per-agent key, and every key a per-agent script is called with, is in the agent's
Redis Cluster slot (CRC16/XMODEM of the hash tag ``{<agent>}``, mod 16384).

The slot is computed here from first principles and checked against redis-py's ``key_slot``. The
scripts' KEYS are captured from real calls (settle, claim-due, renew, expire, replay) made by the
library's own code paths on fakeredis, so a key added to a call without the tag shows up here.
So are the keys of every transaction (``pipeline(transaction=True)``) and script call of the
registry, the decision log, short-term memory, the coordinator's pass and the set-aside records:
each touches keys of one slot (issue 14).
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import fakeredis
import pytest
from redis.crc import key_slot

from hivebus.agents.runner import AgentRunner
from hivebus.bus.bus import Bus
from hivebus.bus.dlq import DeadLetters
from hivebus.bus.registry import Registry
from hivebus.domain.ids import new_id
from hivebus.domain.keys import Keys
from hivebus.domain.models import Signal, SignalStatus
from hivebus.infra.lua import (
    CLAIM_DUE,
    DELETE_ARCHIVED,
    EXPIRE,
    LOG_OUTCOME,
    PUBLISH,
    REMEMBER,
    RENEW,
    REPLAY,
    SETTLE,
)
from hivebus.service.retention import Retention
from hivebus.service.set_aside import aside_name
from hivebus.settings import Settings
from tests.agents_for_tests import Counter

AGENTS = ["a", "risk-manager", "agent.7_x", "Z" * 64, "0"]
SLOTS = 16384


def crc16_xmodem(data: bytes) -> int:
    """CRC-16/XMODEM (poly 0x1021, init 0), the checksum Redis Cluster hashes keys with."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def slot(key: str) -> int:
    """The cluster slot of ``key``: the hash tag's content when there is a non-empty one."""
    data = key.encode()
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1:end]
    computed = crc16_xmodem(data) % SLOTS
    assert computed == key_slot(key.encode()), key  # agrees with redis-py
    return computed


def test_slot_function_matches_the_cluster_spec() -> None:
    """The reference values of the Redis Cluster spec: CRC16('123456789') = 0x31C3."""
    assert crc16_xmodem(b"123456789") == 0x31C3
    assert slot("{user1000}.following") == slot("{user1000}.followers") == slot("user1000")
    assert slot("foo{}{bar}") == crc16_xmodem(b"foo{}{bar}") % SLOTS  # an empty tag hashes it all


def per_agent_keys(keys: Keys, agent_id: str) -> dict[str, str]:
    """Every key method of Keys that takes an agent id, called for ``agent_id``."""
    extra = {"instance_id": "host-1-ab12", "item_id": new_id(), "decision_id": new_id(),
             "name": "applied:{odd}", "decision_type": "TRADE_EXECUTION", "result": "failed",
             "event_type": "FILL"}
    built: dict[str, str] = {}
    for name, method in inspect.getmembers(Keys, inspect.isfunction):
        params = list(inspect.signature(method).parameters)[1:]
        if not params or params[0] != "agent_id":
            continue
        built[name] = getattr(keys, name)(agent_id, *(extra[p] for p in params[1:]))
    return built


@pytest.mark.parametrize("namespace", ["hive", "t-1_x"])
@pytest.mark.parametrize("agent_id", AGENTS)
def test_every_per_agent_key_is_in_the_agents_slot(namespace: str, agent_id: str) -> None:
    """inbox, pending, done, status, retries, dead_letters, agent, instances, heartbeat, state,
    snapshots, config_history, memory_index, memory_item, decisions, decision_index, events,
    effect_key (and any other Keys method taking an agent id) hash to CRC16(agent) mod 16384."""
    built = per_agent_keys(Keys(namespace), agent_id)
    named = {"inbox", "pending", "done", "status", "retries", "dead_letters", "agent", "instances",
             "heartbeat", "state", "snapshots", "config_history", "memory_index", "memory_item",
             "decisions", "decision_index", "events", "effect_key"}
    assert named <= set(built), named - set(built)
    expected = crc16_xmodem(agent_id.encode()) % SLOTS
    wrong = {name: key for name, key in built.items() if slot(key) != expected}
    assert wrong == {}
    assert all(key.startswith(f"{namespace}:") for key in built.values())


@pytest.mark.parametrize("agent_id", AGENTS)
def test_memory_index_keys_of_a_scope_are_in_its_agents_slot(agent_id: str) -> None:
    """An agent's memory scopes (its own items, items shared with it): every index of an item,
    whatever its kind, symbol and words (braces included), is in the agent's slot."""
    from hivebus.memory.stm_index import Scope

    keys = Keys("hive")
    expected = crc16_xmodem(agent_id.encode()) % SLOTS
    for scope in (Scope.private(keys, agent_id), Scope.shared(keys, agent_id)):
        ranked, timed = scope.index_keys("k{x}", "S}{", ["whale", "{odd}"])
        built = [scope.times, scope.expiry, scope.terms, *ranked, *timed]
        assert {key: slot(key) for key in built if slot(key) != expected} == {}
    assert slot(Keys("hive").memory_item(agent_id, new_id())) == expected


# --- the KEYS of the per-agent scripts, captured from real calls ------------------------------

SCRIPT_NAMES = {hashlib.sha1(source.encode()).hexdigest(): name for name, source in
                [("publish", PUBLISH), ("settle", SETTLE), ("claim_due", CLAIM_DUE), ("renew", RENEW),
                 ("expire", EXPIRE), ("replay", REPLAY), ("log_outcome", LOG_OUTCOME),
                 ("delete_archived", DELETE_ARCHIVED), ("remember", REMEMBER)]}


class ScriptCalls:
    """Wraps a fakeredis client's EVAL and EVALSHA to record (script name, KEYS) of each call."""

    def __init__(self, client: Any) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        evalsha, eval_ = client.evalsha, client.eval

        async def recording_evalsha(sha: str, numkeys: int, *keys_and_args: Any) -> Any:
            self.calls.append((SCRIPT_NAMES.get(sha, sha), [str(k) for k in keys_and_args[:numkeys]]))
            return await evalsha(sha, numkeys, *keys_and_args)

        async def recording_eval(script: str, numkeys: int, *keys_and_args: Any) -> Any:
            sha = hashlib.sha1(script.encode()).hexdigest()
            self.calls.append((SCRIPT_NAMES.get(sha, sha), [str(k) for k in keys_and_args[:numkeys]]))
            return await eval_(script, numkeys, *keys_and_args)

        client.evalsha = recording_evalsha
        client.eval = recording_eval

    def of(self, name: str) -> Iterator[list[str]]:
        return (keys for called, keys in self.calls if called == name)


async def drive_one_agent(redis: Any, settings: Settings, agent_id: str) -> None:
    """Settle (with an effect), a failure and its due retry, renewals of a slow batch, a dead
    letter and its replay, and a retention pass, all through the library's own code."""
    bus = Bus(redis, settings)

    async def burst() -> None:
        runner = AgentRunner(Counter(agent_id), bus, Registry(redis, settings))
        with anyio.fail_after(10):
            await runner.run(anyio.Event(), burst=True)

    await burst()  # registers
    retried = Signal.create("WORK", "tester", targets=[agent_id], data={"fail": 1})
    slow = Signal.create("WORK", "tester", targets=[agent_id], data={"seconds": 0.3})
    dead = Signal.create("WORK", "tester", targets=[agent_id], data={"fail": 99})
    await bus.publish_many([retried, slow, dead])
    await burst()
    statuses = await bus.statuses([(s.signal_id, agent_id) for s in (retried, slow, dead)])
    assert statuses == [SignalStatus.PROCESSED, SignalStatus.PROCESSED, SignalStatus.DEAD]
    letters = DeadLetters(redis, settings)
    [letter] = await letters.list(agent_id)
    await letters.replay(agent_id, letter["dlq_entry"])
    await Retention(redis, settings).run()


@pytest.mark.anyio
async def test_per_agent_scripts_are_called_with_keys_of_one_slot(tmp_path: Any) -> None:
    """settle, claim-due, renew, expire and replay are each called with KEYS all in the slot of
    the agent they serve (effect keys made with ctx.key included), for several agents."""
    redis = fakeredis.FakeAsyncRedis(decode_responses=True, encoding_errors="surrogateescape")
    calls = ScriptCalls(redis)
    settings = Settings(namespace="slots", home=tmp_path, heartbeat_ttl_s=1.5, read_block_ms=100,
                        retry_base_s=0.01, retry_max_s=0.05, max_deliveries=2, claim_idle_s=0.15)
    agents = AGENTS[:3]
    for agent_id in agents:
        await drive_one_agent(redis, settings, agent_id)
    await redis.aclose()
    per_agent = ("settle", "claim_due", "renew", "expire", "replay")
    seen: dict[str, set[str]] = {name: set() for name in per_agent}
    for name in per_agent:
        for keys in calls.of(name):
            slots = {slot(k) for k in keys}
            assert len(slots) == 1, (name, keys)
            [agent_id] = [a for a in agents if slot(a) in slots]
            assert all(f"{{{agent_id}}}" in k for k in keys), (name, keys)
            seen[name].add(agent_id)
    assert seen == {name: set(agents) for name in per_agent}  # each script seen for each agent
    effect_keys = [k for keys in calls.of("settle") for k in keys if ":fx:" in k]
    assert effect_keys  # the effects' keys travel in the settle's KEYS, in the slot checked above


# --- every transaction and script of the registry, decisions, memory and the pass -------------

MULTI_KEY_COMMANDS = {"DEL", "UNLINK", "EXISTS", "TOUCH"}
ONE_KEY_COMMANDS = {"SET", "HSET", "HSETNX", "HDEL", "HLEN", "SADD", "SREM", "ZADD", "ZREM", "XADD",
                    "PEXPIRE", "EXPIRE", "INCR", "LPUSH", "LTRIM"}


def _library_caller() -> str:
    """The hivebus function (module.qualname) that is running the current call."""
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.startswith("hivebus."):
            return f"{module}.{frame.f_code.co_qualname}"
        frame = frame.f_back  # type: ignore[assignment]
    return "?"


class Transactions:
    """Wraps a client's ``pipeline()``: records (library caller, keys) of each transaction run."""

    def __init__(self, client: Any) -> None:
        self.runs: list[tuple[str, list[str]]] = []
        original = client.pipeline

        def pipeline(**options: Any) -> Any:
            pipe = original(**options)
            if options.get("transaction", True):
                caller, execute = _library_caller(), pipe.execute

                async def recording_execute(raise_on_error: bool = True) -> Any:
                    keys = []
                    for args, _ in pipe.command_stack:
                        name = str(args[0]).upper()
                        assert name in MULTI_KEY_COMMANDS | ONE_KEY_COMMANDS, (caller, name)
                        keys += [str(k) for k in (args[1:] if name in MULTI_KEY_COMMANDS else args[1:2])]
                    self.runs.append((caller, keys))
                    return await execute(raise_on_error=raise_on_error)

                pipe.execute = recording_execute
            return pipe

        client.pipeline = pipeline

    def of(self, caller_suffix: str) -> list[list[str]]:
        return [keys for caller, keys in self.runs if caller.endswith(caller_suffix)]


async def drive_registry_decisions_memory_and_a_pass(redis: Any, settings: Settings, store: Any,
                                                     agents: list[str]) -> None:
    """Register, re-register with other types, stop, remove (also cut short) and register a
    publisher; log decisions, outcomes and caused signals; remember private, shared and everyone
    items (some expiring); one coordinator pass (learn, archive, retention: purge, repair, dead
    agents); set records and a key aside. All through the library's own code."""
    from hivebus.bus.registry import Instance
    from hivebus.memory.decisions import DecisionLog
    from hivebus.memory.stm import ShortTermMemory
    from hivebus.service.consolidation import Consolidator
    from hivebus.service.lease import Lease
    from hivebus.service.set_aside import SetAside

    keys, registry, log = Keys(settings.namespace), Registry(redis, settings), DecisionLog(redis, settings)
    for agent_id in agents:
        instance = Instance.here(agent_id)
        await registry.register(agent_id, instance, agent_type="t", subscriptions=("PING", "OLD"),
                                version="1")
        await registry.register(agent_id, instance, agent_type="t", subscriptions=("PING", "NEW"),
                                version="2")  # leaves OLD's set
        await registry.deregister(agent_id, instance)
    await registry.register_publisher("cli")
    await registry.remove(agents[0])
    await registry.register(agents[0], Instance.here(agents[0]), agent_type="t", subscriptions=("PING",),
                            version="3")
    await redis.delete(keys.agent(agents[0]), keys.instances(agents[0]))  # a removal cut short
    for agent_id in agents:
        old = await log.log_decision(agent_id, "TRADE_EXECUTION", timestamp=1_000_000.0,
                                     reasoning={"action": "buy"})
        new = await log.log_decision(agent_id, "RISK_ASSESSMENT")
        assert await log.record_caused_signal(new, new_id())
        await log.log_outcome(old, success=True)
        await log.log_outcome(new, success=False)
        memory = ShortTermMemory(redis, settings, agent_id)
        await memory.remember("note", "mine")
        await memory.remember("note", "for one", shared_with=[agents[1]])
        await memory.remember("note", "for all", shared_with=["*"])
        await memory.remember("note", "brief", ttl_s=0.01, shared_with=[agents[2], "0"])
        await memory.remember("note", "brief", ttl_s=0.01)
    await anyio.sleep(0.05)
    lease = Lease(redis, settings, "c1")
    result = await Consolidator(redis, settings, store).run_pass(await lease.try_lead())
    assert result.archived == len(agents) and result.counted == 2 * len(agents)
    assert result.memories_purged >= 2 * len(agents) and result.registry_repaired >= 1
    aside = SetAside(redis, keys)
    await redis.sadd(keys.agents(), "bad id!")
    await aside.members(keys.agents(), ["bad id!"], "not an agent id")
    await aside.fields(keys.late_outcomes(), "x", "y", "not a decision id")
    await redis.set(keys.late_outcomes(), "edited by hand")
    await aside.rename(keys.late_outcomes(), "a string where a hash belongs")


@pytest.mark.anyio
async def test_registry_decision_memory_and_pass_transactions_and_scripts_touch_one_slot(
    tmp_path: Any,
) -> None:
    """Every transaction and every script call the registry, the decision log, short-term memory,
    the coordinator's pass and the set-aside records make touches keys of one slot: the agent's
    (its tag in every key), the registry's (``{~registry}``) or a shared scope's (``{*}``). The
    ones issue 14 split are each seen: log_outcome, delete_archived (with the agent's fence),
    remember in a shared scope (its item copy in the scope), register / remove in two slots."""
    from hivebus.store.sqlite import SQLiteStore

    redis = fakeredis.FakeAsyncRedis(decode_responses=True, encoding_errors="surrogateescape")
    calls, transactions = ScriptCalls(redis), Transactions(redis)
    settings = Settings(namespace="slots", home=tmp_path, heartbeat_ttl_s=1.5, dead_agent_grace_s=0)
    store = await SQLiteStore.open(tmp_path / "ltm.sqlite3")
    agents = AGENTS[:3]
    try:
        await drive_registry_decisions_memory_and_a_pass(redis, settings, store, agents)
    finally:
        await store.close()
        await redis.aclose()
    tags = {f"{{{a}}}" for a in [*agents, "0", "cli"]} | {"{~registry}", "{*}"}
    runs = transactions.runs + [(name, keys) for name, keys in calls.calls
                                if name in ("log_outcome", "delete_archived", "remember")]
    assert runs
    for caller, keys in runs:
        assert len({slot(k) for k in keys}) == 1, (caller, keys)
        found = [t for t in tags if t in keys[0]]
        assert len(found) == 1 and all(found[0] in k for k in keys), (caller, keys)
    for name in ("log_outcome", "delete_archived", "remember"):
        assert {a for a in agents for keys in calls.of(name) if f"{{{a}}}" in keys[0]} == set(agents), name
    assert all(keys[0].startswith("slots:fence:{") for keys in calls.of("delete_archived"))
    shared = [keys for keys in calls.of("remember") if ":shared:" in keys[0]]
    assert {keys[0].rsplit(":", 2)[0] for keys in shared} >= {f"slots:shared:{{{agents[1]}}}",
                                                              "slots:shared:{*}"}
    assert all(keys[0].split(":item:")[0] == keys[1] for keys in shared)  # the scope's own copy
    assert transactions.of("Registry.register") and transactions.of("Registry.unregister")
    assert transactions.of("Registry.repair") and transactions.of("DecisionLog.log_decision")
    assert transactions.of("ShortTermMemory.purge")
    assert not transactions.of(".SetAside.members") and not transactions.of(".SetAside.fields")


@pytest.mark.parametrize("key", ["hive:late-outcomes", "hive:agents:{~registry}", "hive:outcomes:{a}",
                                 "hive:decision:{risk-manager}:01KAAAAAAAAAAAAAAAAAAAAAAA", "a{}b",
                                 "a}b", "x{", "{}", "}{"])
def test_a_key_set_aside_moves_within_its_slot(key: str) -> None:
    """A key edited into the wrong type is renamed into its own slot (a cluster renames only so):
    a tagged key keeps its tag, an untagged one becomes the tag of the new name."""
    moved = aside_name("hive", key, 1_700_000_000_000)
    assert slot(moved) == slot(key) and moved.startswith(("hive:", key)) and moved.endswith(":1700000000000")
    assert moved != key
