"""Indexed recall and bounded memory reads (issue 11), on fakeredis and each real redis-server.

Recall reads indexes instead of every item; these tests hold it to the full ranking: on random
data, every query gives exactly what ranking every readable item by the README's formula gives.
"""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

import pytest

from hivebus.domain.scoring import relevance, words
from hivebus.memory.stm import ShortTermMemory
from hivebus.settings import Settings
from tests.contract.test_memory_contract import Clock

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

VOCABULARY = [f"w{n}" for n in range(25)] + ["whale", "btc", "accumulation", "funding"]
KINDS = ["note", "trade", "outcome"]
SYMBOLS = [None, "BTC", "ETH", "SOL"]
AGENTS = ["mh-1", "rm-1", "te-1"]


async def brute_force(memory: ShortTermMemory, query: str, kind: str | None, symbol: str | None,
                      topk: int) -> list[tuple[float, str]]:
    """The answer by ranking every readable item (what recall returned before it had indexes)."""
    now, query_words = memory.clock(), words(query)
    ranked = []
    for item in await memory.items():
        if (kind is None or item.kind == kind) and (symbol is None or item.symbol == symbol):
            value = relevance(item.score, now - item.timestamp, query_words, item.content,
                              memory.settings.recall_half_life_s)
            ranked.append((value, item.timestamp, item.item_id))
    ranked.sort(key=lambda r: (-r[0], -r[1]))
    return [(value, item_id) for value, _, item_id in ranked[:topk]]


async def fill(redis: Any, settings: Settings, rng: random.Random, clock: Clock, count: int) -> None:
    for n in range(count):
        clock.now = 1_800_000_000.0 - rng.uniform(0, 10 * settings.recall_half_life_s) + n * 1e-3
        writer = ShortTermMemory(redis, settings, rng.choice(AGENTS), clock=clock)
        share = rng.random()
        shared_with = (None if share < 0.6 else ["*"] if share < 0.75
                       else rng.sample(AGENTS, rng.randint(1, 2)))
        score = rng.choice([0.0, 2.0, 5.0]) if rng.random() < 0.1 else rng.random()
        content = " ".join(rng.choices(VOCABULARY, k=rng.randint(0, 8)))
        await writer.remember(rng.choice(KINDS), content, score=score, symbol=rng.choice(SYMBOLS),
                              shared_with=shared_with)


async def test_indexed_recall_equals_the_full_ranking_on_random_data(redis: Any, settings: Settings) -> None:
    """300 random items (private and shared, scores 0 to 5, overlapping words), 120 random
    queries with and without filters, from three agents: ids and relevances as the full ranking."""
    rng = random.Random(11)
    clock = Clock()
    await fill(redis, settings, rng, clock, 300)
    clock.now = 1_800_000_000.0
    for _ in range(120):
        reader = ShortTermMemory(redis, settings, rng.choice(AGENTS), clock=clock)
        query = " ".join(rng.sample([*VOCABULARY, "nowhere"], rng.randint(0, 3)))
        kind = rng.choice([None, None, *KINDS])
        symbol = rng.choice([None, None, "BTC", "ETH"])
        topk = rng.randint(1, 8)
        got = [(value, item.item_id) for value, item in
               await reader.recall(query, kind=kind, symbol=symbol, topk=topk)]
        expected = await brute_force(reader, query, kind, symbol, topk)
        assert [i for _, i in got] == [i for _, i in expected], (reader.agent_id, query, kind, symbol, topk)
        assert [v for v, _ in got] == pytest.approx([v for v, _ in expected])


async def test_recent_pages_a_time_index_and_equals_sorting_everything(
    redis: Any, settings: Settings
) -> None:
    """recent(kind, symbol, n) gives the n newest readable items, as sorting every item would."""
    rng = random.Random(12)
    clock = Clock()
    await fill(redis, settings, rng, clock, 150)
    clock.now = 1_800_000_000.0
    for agent_id in AGENTS:
        reader = ShortTermMemory(redis, settings, agent_id, clock=clock)
        everything = sorted(await reader.items(), key=lambda i: -i.timestamp)
        for kind in [None, "outcome"]:
            for symbol in [None, "BTC"]:
                got = [i.item_id for i in await reader.recent(kind, symbol, 7)]
                want = [i.item_id for i in everything
                        if (kind is None or i.kind == kind) and (symbol is None or i.symbol == symbol)][:7]
                assert got == want


async def index_keys(redis: Any, memory: ShortTermMemory) -> list[str]:
    return sorted([k async for k in redis.scan_iter(match=f"{memory.own.prefix}*", count=1000)])


async def test_expired_items_leave_every_index(redis: Any, settings: Settings) -> None:
    """Items past their TTL are purged from all their indexes: by remember once enough have
    expired, and by purge_expired (the coordinator's retention pass); none is left behind."""
    clock = Clock()
    memory = ShortTermMemory(redis, settings, "mh-1", clock=clock)
    for n in range(70):
        await memory.remember("note", f"whale w{n} btc", score=0.5, symbol="BTC", ttl_s=10)
    assert len(await index_keys(redis, memory)) > 70  # time, rank, kind, symbol, word indexes…
    clock.now += 20
    fresh = await memory.remember("note", "funding", score=0.5, ttl_s=10)  # 70 expired: purged
    assert [i.item_id for i in await memory.items()] == [fresh]
    assert await redis.zrange(memory.own.ranks, 0, -1) == [fresh]
    assert await redis.hkeys(memory.own.terms) == [fresh]
    clock.now += 20
    assert await memory.purge_expired() == 1
    assert await index_keys(redis, memory) == []


async def test_recall_reads_a_bounded_part_of_a_large_memory(redis: Any, settings: Settings) -> None:
    """With 2,000 items, a recall for a rare word reads a few dozen items, not the 2,000."""
    clock = Clock()
    memory = ShortTermMemory(redis, settings, "mh-1", clock=clock)
    for n in range(2000):
        clock.now = 1_800_000_000.0 - n
        await memory.remember("note", "rare sighting" if n % 500 == 0 else f"noise w{n % 40}",
                              score=0.5)
    clock.now = 1_800_000_000.0
    fetched = 0
    original = memory._fetch

    async def counting(scope: Any, ids: Any, index: str) -> Any:
        nonlocal fetched
        fetched += len(ids)
        return await original(scope, ids, index)

    memory._fetch = counting  # type: ignore[method-assign]
    ranked = await memory.recall("rare", topk=3)
    assert [item.content for _, item in ranked] == ["rare sighting"] * 3
    assert fetched <= 100


async def test_decision_queries_page_one_index_and_equal_filtering_everything(
    redis: Any, settings: Settings
) -> None:
    """Type, success, pending, time range and limit, alone and combined, as filtering all
    decisions would give, newest first; outcomes move decisions between the indexes; a filter
    that matches nothing returns nothing."""
    from hivebus.memory.decisions import DecisionLog

    rng = random.Random(13)
    log = DecisionLog(redis, settings)
    types = ["RISK_ASSESSMENT", "TRADE_EXECUTION", "SIGNAL_GENERATION"]
    logged = []
    for n in range(120):
        decision_id = await log.log_decision("rm-1", rng.choice(types), timestamp=1_800_000_000.0 + n)
        if rng.random() < 0.6:
            await log.log_outcome(decision_id, success=rng.random() < 0.5)
        logged.append(await log.get(decision_id))
    await log.log_decision("other", "TRADE_EXECUTION")  # another agent's: never in rm-1's answers
    newest_first = sorted(logged, key=lambda d: -d.timestamp)
    for _ in range(40):
        decision_type = rng.choice([None, *types])
        state = rng.choice(["any", "pending", "ok", "failed"])
        since = rng.choice([None, 1_800_000_030.0])
        limit = rng.choice([1, 5, 50, 500])
        success = {"ok": True, "failed": False}.get(state)
        got = await log.query("rm-1", decision_type=decision_type, success=success, since=since,
                              pending=state == "pending", limit=limit)
        want = [d for d in newest_first
                if (decision_type is None or d.decision_type == decision_type)
                and (state != "pending" or d.outcome is None)
                and (success is None or (d.outcome is not None and d.outcome.success == success))
                and (since is None or d.timestamp >= since)][:limit]
        assert [d.decision_id for d in got] == [d.decision_id for d in want], (decision_type, state)
    assert await log.query("rm-1", decision_type="QUERY_EXECUTION") == []
    assert await log.query("rm-1", pending=True, success=True) == []


async def test_event_queries_page_and_read_only_their_type(redis: Any, settings: Settings) -> None:
    """Events past one page (200), queried by type (its own stream, same ids), by word and with
    a limit: as filtering every event would give, newest first."""
    from hivebus.memory.events import EpisodicLog

    events = EpisodicLog(redis, settings)
    recorded = []
    for n in range(450):
        event_type = "FILL" if n % 3 == 0 else "QUOTE"
        payload = {"n": n, "note": "whale" if n % 7 == 0 else "calm"}
        recorded.append((await events.record("te-1", event_type, payload), event_type, payload))
    newest_first = recorded[::-1]
    fills = await events.query("te-1", event_type="FILL", limit=1000)
    assert [e["id"] for e in fills] == [i for i, t, _ in newest_first if t == "FILL"]
    whales = await events.query("te-1", word="whale", limit=30)
    assert [e["id"] for e in whales] == [i for i, _, p in newest_first if p["note"] == "whale"][:30]
    both = await events.query("te-1", event_type="QUOTE", word="whale", limit=1000)
    assert [e["payload"]["n"] for e in both] == [p["n"] for _, t, p in newest_first
                                                 if t == "QUOTE" and p["note"] == "whale"]
    assert await events.query("te-1", event_type="NEVER_SEEN") == []


async def test_event_word_queries_read_the_rarest_words_events(redis: Any, settings: Settings) -> None:
    """By word, with a time range and a type: the events holding every word, newest first, as
    filtering all would give; an event with too many words to index is still found; index
    entries of events the stream trimmed leave the index."""
    from hivebus.memory.events import MAX_WORDS, EpisodicLog

    settings = dataclasses.replace(settings, events_maxlen=100)
    events = EpisodicLog(redis, settings)
    rng = random.Random(14)
    recorded = []
    for n in range(300):
        text = " ".join(rng.sample(VOCABULARY, 3))
        payload: dict[str, Any] = {"note": text}
        if n == 290:
            payload["long"] = " ".join(f"x{k}" for k in range(MAX_WORDS + 10)) + " whale btc"
        event_type = "FILL" if n % 2 else "QUOTE"
        recorded.append((await events.record("te-1", event_type, payload), event_type,
                         words(json.dumps(payload, sort_keys=True, separators=(",", ":")))))
    kept = {e["id"] for e in await events.query("te-1", limit=10_000)}
    assert 100 <= len(kept) < 300  # the stream trimmed the oldest (MAXLEN ~ 100)
    live = [r for r in recorded[::-1] if r[0] in kept]
    middle = int(live[len(live) // 2][0].split("-")[0]) / 1000
    for query, event_type, since in [("whale", None, None), ("whale btc", None, None),
                                     ("btc", "FILL", None), ("w3 whale", None, middle),
                                     ("nowhere", None, None), ("x3", None, None)]:
        want = words(query)
        got = [e["id"] for e in await events.query("te-1", word=query, event_type=event_type,
                                                    since=since, limit=1000)]
        expected = [i for i, t, ws in live if want <= ws and (event_type is None or t == event_type)
                    and (since is None or int(i.split("-")[0]) / 1000 >= since)]
        assert got == expected, query
    index = f"{events.keys.events('te-1')}:words:time"
    oldest = int(live[-1][0].split("-")[0])
    assert await redis.zcount(index, "-inf", f"({oldest}") == 0  # the trimmed events' entries left
