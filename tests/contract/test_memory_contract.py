"""Contract tests of agent memory (state, STM, decisions, events) on fakeredis and real Redis."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from hivebus.agents.desk.decision_types import DecisionType
from hivebus.domain.errors import AlreadyRecorded, InvalidId, InvalidInput, NotFound, VersionConflict
from hivebus.domain.ids import new_id
from hivebus.domain.keys import Keys
from hivebus.domain.scoring import relevance, words
from hivebus.memory.decisions import DecisionLog
from hivebus.memory.events import EpisodicLog
from hivebus.memory.state import AgentState, AgentStatus, StateStore, StateType
from hivebus.memory.stm import ShortTermMemory
from hivebus.settings import Settings
from tests.conftest import RedisServer, eventually

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- state ------------------------------------------------------------------------------------


async def test_state_round_trip_and_versions(redis: Any, settings: Settings) -> None:
    """Saved state loads back equal, and each write bumps the version."""
    store = StateStore(redis, settings)
    assert await store.load("rm-1") is None
    state = AgentState(agent_id="rm-1", current_cycle=42, configuration={"threshold": 0.04},
                       source_metrics={"coinglass": {"quality": 0.95}},
                       context_performance={"accuracy": 0.7})
    saved = await store.save(state)
    assert saved.version == 1
    loaded = await store.load("rm-1")
    assert loaded is not None
    assert loaded.model_dump(exclude={"updated_at"}) == saved.model_dump(exclude={"updated_at"})
    again = await store.save(loaded.model_copy(update={"current_cycle": 43}))
    assert again.version == 2


async def test_stale_write_is_a_conflict(redis: Any, settings: Settings) -> None:
    """Two writers based on the same version: the first wins, the second gets VersionConflict."""
    store = StateStore(redis, settings)
    base = await store.save(AgentState(agent_id="rm-1"))
    first = base.model_copy(update={"current_cycle": 1})
    second = base.model_copy(update={"current_cycle": 2})
    await store.save(first)
    with pytest.raises(VersionConflict, match="stored version is 2"):
        await store.save(second)
    loaded = await store.load("rm-1")
    assert loaded is not None and loaded.current_cycle == 1


async def test_concurrent_writers_never_lose_a_write_silently(redis: Any, settings: Settings) -> None:
    """Many concurrent read-modify-write increments: every success is counted, conflicts raise."""
    store = StateStore(redis, settings)
    await store.save(AgentState(agent_id="rm-1"))
    successes = 0
    conflicts = 0

    async def writer() -> None:
        nonlocal successes, conflicts
        for _ in range(10):
            current = await store.load("rm-1")
            assert current is not None
            try:
                await store.save(current.model_copy(update={"current_cycle": current.current_cycle + 1}))
                successes += 1
            except VersionConflict:
                conflicts += 1

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(writer)
    final = await store.load("rm-1")
    assert final is not None
    assert final.current_cycle == successes
    assert successes + conflicts == 40


async def test_checkpoint_and_rollback_restore_exactly(redis: Any, settings: Settings) -> None:
    """Rollback restores a checkpoint's fields exactly, with a new version and a ROLLBACK entry."""
    store = StateStore(redis, settings)
    saved = await store.save(AgentState(agent_id="te-1", current_cycle=5,
                                        configuration={"size": 1}, source_metrics={"a": 1}))
    checkpoint = await store.snapshot("te-1", StateType.CHECKPOINT, "before change")
    changed = await store.save(saved.model_copy(update={"current_cycle": 9, "status": AgentStatus.PAUSED,
                                                        "configuration": {"size": 2}}), reason="tune")
    restored = await store.rollback("te-1", checkpoint)
    assert restored.version == changed.version + 1
    assert restored.model_dump(exclude={"version", "updated_at"}) == saved.model_dump(
        exclude={"version", "updated_at"})
    history = await store.history("te-1")
    assert history[0]["state_type"] == "ROLLBACK" and history[0]["rolled_back_to"] == checkpoint
    assert history[1]["snapshot_id"] == checkpoint
    changes = await store.config_history("te-1")
    assert [(c["from"], c["to"], c["reason"]) for c in changes] == [
        ({"size": 2}, {"size": 1}, f"rollback to {checkpoint}"),
        ({"size": 1}, {"size": 2}, "tune"),
        ({}, {"size": 1}, ""),
    ]


async def test_snapshot_history_is_bounded(redis: Any, namespace: str, tmp_path: Any) -> None:
    """Only the configured number of snapshots is kept."""
    store = StateStore(redis, Settings(namespace=namespace, home=tmp_path, state_history=3))
    await store.save(AgentState(agent_id="a1"))
    ids = [await store.snapshot("a1") for _ in range(5)]
    assert [h["snapshot_id"] for h in await store.history("a1")] == ids[::-1][:3]


async def test_unknown_snapshot_and_hostile_ids_change_nothing(redis: Any, settings: Settings) -> None:
    """Rollback to an unknown snapshot is NotFound; a hostile agent id is refused."""
    store = StateStore(redis, settings)
    saved = await store.save(AgentState(agent_id="a1", current_cycle=3))
    with pytest.raises(NotFound, match="no kept snapshot"):
        await store.rollback("a1", new_id())
    loaded = await store.load("a1")
    assert loaded is not None and loaded.version == saved.version
    with pytest.raises(InvalidId):
        await store.load("a1:*")
    with pytest.raises(NotFound):
        await store.snapshot("never-saved")


# --- short-term memory --------------------------------------------------------------------------

RECALL_TABLE = [
    # (content, score, age in half-lives) -> expected rank for the query "whale accumulation btc"
    ("whale accumulation on btc spotted", 0.2, 0.0),   # 0.2 + 3 words = 3.2
    ("whale moved coins", 0.9, 0.0),                    # 0.9 + 1 = 1.9
    ("funding spike", 1.0, 0.0),                        # 1.0
    ("whale accumulation", 0.8, 2.0),                   # 0.2 + 2 = 2.2
    ("quiet market", 0.9, 1.0),                         # 0.45
]
EXPECTED_ORDER = [0, 3, 1, 2, 4]


async def test_recall_orders_by_documented_formula(redis: Any, settings: Settings) -> None:
    """Recall ranks by score * 0.5**(age/half-life) + shared words, as computed by hand."""
    clock = Clock()
    memory = ShortTermMemory(redis, settings, "mh-1", clock=clock)
    half_life = settings.recall_half_life_s
    ids = []
    for content, score, age in RECALL_TABLE:
        clock.now = 1_800_000_000.0 - age * half_life
        ids.append(await memory.remember("note", content, score=score))
    clock.now = 1_800_000_000.0
    ranked = await memory.recall("Whale accumulation BTC", topk=10)
    assert [item.item_id for _, item in ranked] == [ids[i] for i in EXPECTED_ORDER]
    expected = [3.2, 2.2, 1.9, 1.0, 0.45]
    assert [round(r, 6) for r, _ in ranked] == pytest.approx(expected)


async def test_recall_decays_with_a_controlled_clock(redis: Any, settings: Settings) -> None:
    """An item's relevance halves each half-life, so a fresher weaker item overtakes it."""
    clock = Clock()
    memory = ShortTermMemory(redis, settings, "mh-1", clock=clock)
    strong = await memory.remember("note", "old strong", score=1.0)
    clock.now += 2 * settings.recall_half_life_s
    weak = await memory.remember("note", "new weak", score=0.3)
    [(first_score, first), (second_score, _)] = await memory.recall("", topk=2)
    assert first.item_id == weak and first_score == pytest.approx(0.3)
    assert second_score == pytest.approx(0.25)
    clock.now += settings.recall_half_life_s
    assert [i.item_id for _, i in await memory.recall("", topk=2)] == [weak, strong]


async def test_filters_recent_summarize_cleanup(redis: Any, settings: Settings) -> None:
    """kind/symbol filters, recent() newest first, summarize counts, cleanup drops faded items."""
    clock = Clock()
    memory = ShortTermMemory(redis, settings, "mh-1", clock=clock)
    await memory.remember("trade", "bought", score=0.9, symbol="BTC")
    clock.now += 1
    await memory.remember("signal", "whale", score=0.5, symbol="BTC")
    clock.now += 1
    await memory.remember("signal", "funding", score=0.1, symbol="ETH")
    assert [i.content for _, i in await memory.recall("", kind="signal", topk=5)] == ["whale", "funding"]
    assert [i.content for _, i in await memory.recall("", symbol="BTC", topk=5)] == ["bought", "whale"]
    assert [i.content for i in await memory.recent(n=2)] == ["funding", "whale"]
    summary = await memory.summarize("BTC")
    assert summary["count"] == 2 and summary["by_kind"] == {"trade": 1, "signal": 1}
    assert summary["avg_score"] == pytest.approx(0.7)
    clock.now += 2 * settings.recall_half_life_s   # scores now 0.225, 0.125, 0.025
    assert await memory.cleanup(min_score=0.1) == 1
    assert [i.content for i in await memory.recent()] == ["whale", "bought"]


async def test_shared_memory_is_visible_only_to_named_agents(redis: Any, settings: Settings) -> None:
    """Private items stay private; shared items reach the agents they name (or everyone)."""
    writer = ShortTermMemory(redis, settings, "mh-1")
    await writer.remember("note", "private thought")
    await writer.remember("note", "for the risk manager", shared_with=["rm-1"])
    await writer.remember("note", "for everyone", shared_with=["*"])
    seen = {i.content for i in await ShortTermMemory(redis, settings, "rm-1").items()}
    assert seen == {"for the risk manager", "for everyone"}
    seen = {i.content for i in await ShortTermMemory(redis, settings, "te-1").items()}
    assert seen == {"for everyone"}
    assert len(await writer.items()) == 3


async def test_bad_memory_items_are_refused(redis: Any, settings: Settings) -> None:
    """Negative scores, empty kinds and hostile sharing targets are refused."""
    memory = ShortTermMemory(redis, settings, "mh-1")
    with pytest.raises(InvalidInput, match="score"):
        await memory.remember("note", "x", score=-1)
    with pytest.raises(InvalidInput, match="kind"):
        await memory.remember("", "x")
    with pytest.raises(InvalidId):
        await memory.remember("note", "x", shared_with=["a:b"])


@pytest.mark.parametrize("server_name", list(__import__("tests.conftest").conftest.REAL_SERVERS))
async def test_stm_items_expire_on_real_redis(
    server_name: str, real_servers: dict[str, RedisServer], settings: Settings
) -> None:
    """Items written with a 2-second TTL are gone from Redis within 3 seconds (6.2 and 7.0)."""
    from hivebus.infra.connection import open_client

    client = open_client(real_servers[server_name].url)
    try:
        memory = ShortTermMemory(client, settings, "mh-1")
        item_id = await memory.remember("note", "short lived", ttl_s=2)
        key = Keys(settings.namespace).memory_item("mh-1", item_id)
        ttl_ms = await client.pttl(key)
        assert 0 < ttl_ms <= 2000
        with anyio.fail_after(3):
            await eventually(lambda: _gone(client, key), 3, "the item to expire")
        assert await memory.items() == []
    finally:
        await client.aclose()


async def _gone(client: Any, key: str) -> bool:
    return not await client.exists(key)


def test_relevance_formula_by_hand() -> None:
    """The formula itself, on a few hand-computed rows."""
    q = words("whale BTC")
    assert relevance(1.0, 0, q, "nothing") == 1.0
    assert relevance(1.0, 3600, q, "nothing") == pytest.approx(0.5)
    assert relevance(0.5, 7200, q, "Whale sells BTC!") == pytest.approx(0.125 + 2)


# --- decisions ---------------------------------------------------------------------------------


async def test_decision_outcome_once(redis: Any, settings: Settings) -> None:
    """An outcome attaches once; a second is AlreadyRecorded and the first is kept."""
    log = DecisionLog(redis, settings)
    decision_id = await log.log_decision("rm-1", "RISK_ASSESSMENT",
                                       reasoning={"risk_level": "LOW", "confidence": 0.8})
    assert [d.decision_id for d in await log.query("rm-1", pending=True)] == [decision_id]
    await log.log_outcome(decision_id, success=True, quality_score=0.9, latency_ms=12,
                          metrics={"pnl": 10})
    with pytest.raises(AlreadyRecorded):
        await log.log_outcome(decision_id, success=False)
    record = await log.get(decision_id)
    assert record.outcome is not None and record.outcome.success and record.outcome.metrics == {"pnl": 10}
    assert await log.query("rm-1", pending=True) == []


async def test_bad_decisions_change_nothing(redis: Any, settings: Settings) -> None:
    """Confidence 1.5, unknown decision ids and hostile agent ids are refused."""
    log = DecisionLog(redis, settings)
    with pytest.raises(InvalidInput, match="confidence"):
        await log.log_decision("te-1", "TRADE_EXECUTION", reasoning={"action": "buy", "confidence": 1.5})
    assert await log.query("te-1") == []
    with pytest.raises(NotFound):
        await log.log_outcome(new_id(), success=True, queue_unknown=False)
    with pytest.raises(InvalidId):
        await log.log_decision("te 1", "TRADE_EXECUTION")
    with pytest.raises(InvalidInput, match="quality_score"):
        decision_id = await log.log_decision("te-1", "TRADE_EXECUTION", reasoning={"confidence": 0.5})
        await log.log_outcome(decision_id, success=True, quality_score=2)


async def test_decision_queries(redis: Any, settings: Settings) -> None:
    """Queries filter by type, success, time range and pending, newest first."""
    log = DecisionLog(redis, settings)
    ids = {}
    for n, (kind, ok) in enumerate([("TRADE_EXECUTION", True), ("TRADE_EXECUTION", False),
                                    ("RISK_ASSESSMENT", True), ("TRADE_EXECUTION", None)]):
        ids[n] = await log.log_decision("te-1", kind, timestamp=1000.0 + n)
        if ok is not None:
            await log.log_outcome(ids[n], success=ok)
    assert [d.decision_id for d in await log.query("te-1")] == [ids[3], ids[2], ids[1], ids[0]]
    trades = await log.query("te-1", decision_type=DecisionType.TRADE_EXECUTION)
    assert [d.decision_id for d in trades] == [ids[3], ids[1], ids[0]]
    assert [d.decision_id for d in await log.query("te-1", success=True)] == [ids[2], ids[0]]
    assert [d.decision_id for d in await log.query("te-1", success=False)] == [ids[1]]
    assert [d.decision_id for d in await log.query("te-1", since=1001, until=1002)] == [ids[2], ids[1]]
    assert [d.decision_id for d in await log.query("te-1", pending=True)] == [ids[3]]


# --- episodic events ------------------------------------------------------------------------------


async def test_episodic_events(redis: Any, settings: Settings) -> None:
    """Events come back newest first, filtered by type and by a word in the payload."""
    events = EpisodicLog(redis, settings)
    await events.record("mh-1", "WHALE_SEEN", {"note": "big whale buying"})
    await events.record("mh-1", "FUNDING", {"note": "funding spike"})
    await events.record("mh-1", "WHALE_SEEN", {"note": "small whale selling"})
    assert [e["payload"]["note"] for e in await events.query("mh-1")] == [
        "small whale selling", "funding spike", "big whale buying"]
    assert len(await events.query("mh-1", event_type="WHALE_SEEN")) == 2
    assert [e["payload"]["note"] for e in await events.query("mh-1", word="buying")] == ["big whale buying"]
    assert len(await events.query("mh-1", since=0, until=4_000_000_000)) == 3


async def test_a_decision_lives_in_its_agents_slot_and_is_found_from_its_id(
    redis: Any, settings: Settings
) -> None:
    """Issue 14: a decision's hash, caused-signals set and outcomes queue carry the agent's tag;
    its locator names the agent, so get, caused_signals, record_caused_signal and log_outcome
    work from the id alone."""
    keys, log = Keys(settings.namespace), DecisionLog(redis, settings)
    decision_id = await log.log_decision("rm-1", "RISK_ASSESSMENT", reasoning={"confidence": 0.5})
    assert await redis.get(keys.decision_at(decision_id)) == "rm-1"
    assert await log.locate(decision_id) == "rm-1"
    assert (await redis.hgetall(keys.decision("rm-1", decision_id)))["agent_id"] == "rm-1"
    assert await redis.smembers(keys.decision_agents()) == {"rm-1"}
    signal_id = new_id()
    assert await log.record_caused_signal(decision_id, signal_id)
    assert await redis.smembers(keys.decision_signals("rm-1", decision_id)) == {signal_id}
    assert await log.caused_signals(decision_id) == [signal_id]
    assert (await log.get(decision_id)).agent_id == "rm-1"
    await log.log_outcome(decision_id, success=True)
    assert await redis.zrange(keys.outcomes("rm-1"), 0, -1) == [decision_id]
    other = await log.log_decision("te-1", "TRADE_EXECUTION")
    await log.log_outcome(other, success=False)
    assert await redis.zrange(keys.outcomes("te-1"), 0, -1) == [other]
    assert await redis.smembers(keys.decision_agents()) == {"rm-1", "te-1"}


async def test_a_decision_logged_part_way_reads_as_not_in_redis_and_logging_it_again_completes_it(
    redis: Any, settings: Settings
) -> None:
    """Cut short after its locator (the transaction in the agent's slot not run): nothing reads
    as a decision, an outcome is queued as for one no longer in Redis, a caused signal is not
    recorded against it; logging the same id again writes it. An explicit id another agent's
    decision has is refused."""
    keys, log = Keys(settings.namespace), DecisionLog(redis, settings)
    decision_id = new_id()
    await redis.sadd(keys.decision_agents(), "te-1")
    await redis.set(keys.decision_at(decision_id), "te-1")  # what log_decision writes first
    with pytest.raises(NotFound):
        await log.get(decision_id)
    assert await log.caused_signals(decision_id) == []
    assert await log.query("te-1") == []
    with pytest.raises(NotFound):
        await log.log_outcome(decision_id, success=True, queue_unknown=False)
    assert await log.log_decision("te-1", "TRADE_EXECUTION", decision_id=decision_id) == decision_id
    assert (await log.get(decision_id)).decision_type == "TRADE_EXECUTION"
    assert await log.log_decision("te-1", "TRADE_EXECUTION", decision_id=decision_id) == decision_id
    assert len(await log.query("te-1")) == 1
    with pytest.raises(InvalidInput, match="another agent's"):
        await log.log_decision("rm-1", "RISK_ASSESSMENT", decision_id=decision_id)
    assert not await redis.exists(keys.decision("rm-1", decision_id))
    await redis.delete(keys.decision("te-1", decision_id))  # archived, its locator not yet deleted
    await log.log_outcome(decision_id, success=True)       # queued for the coordinator
    assert await redis.hexists(keys.late_outcomes(), decision_id)
    await redis.delete(keys.decision_at(decision_id))
    assert not await log.record_caused_signal(decision_id, new_id())
    assert not await redis.exists(keys.decision_signals("te-1", decision_id))


async def test_a_shared_item_is_kept_in_each_scope_it_is_shared_into(redis: Any, settings: Settings) -> None:
    """Issue 14: each scope holds its own copy of a shared item, in its slot
    (``hive:shared:{<agent>}:item:<id>``, ``hive:shared:{*}:item:<id>``), so storing and purging
    touch one slot; purging one scope's copy leaves the others."""
    from hivebus.memory.stm_index import Scope

    keys = Keys(settings.namespace)
    writer = ShortTermMemory(redis, settings, "mh-1")
    item_id = await writer.remember("note", "for the risk manager", shared_with=["rm-1"])
    everyone = await writer.remember("note", "for everyone", shared_with=["*"])
    for viewer in ("rm-1", "mh-1"):
        assert await redis.hget(keys.shared_item(viewer, item_id), "content") == "for the risk manager"
    assert await redis.hget(keys.shared_item("*", everyone), "content") == "for everyone"
    assert not await redis.exists(keys.shared_item("*", item_id), keys.shared_item("rm-1", everyone))
    assert 0 < await redis.pttl(keys.shared_item("rm-1", item_id)) <= settings.stm_ttl_s * 1000
    reader = ShortTermMemory(redis, settings, "rm-1")
    await reader.purge(Scope.shared(keys, "rm-1"), [item_id])
    assert not await redis.exists(keys.shared_item("rm-1", item_id))
    assert {i.content for i in await reader.items()} == {"for everyone"}
    assert {i.content for i in await writer.items()} == {"for the risk manager", "for everyone"}
