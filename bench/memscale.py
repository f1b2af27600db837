"""The ``memscale`` workload group (issue 11, line 6): memory and decision reads at a day's scale.

For each size N (1k, 10k and 100k by default; ``--quick``: 100 and 300), in a fresh namespace:

* **fill**: one agent's short-term memory gets N items through ``ShortTermMemory.remember``,
  50 calls in flight, with timestamps spread over the last 23 hours by a fake clock (kept an
  hour inside the 24 h STM window, so none leaves it while the run lasts) and the default TTL.
  Content is random sentences of 6-12 words drawn from 5,000 made-up words with Zipf weights;
  kinds from a handful, symbols from 20 tickers, scores uniform 0..1; outcome items score 1.0
  or 2.0 and carry ``{"pnl": ...}`` like ``AgentMemory.remember_outcome``.
* **recall**: 20 seeded two-word queries (some filtered by kind or symbol), ``topk=5``: p50 and
  p95 wall ms, and Redis's time per recall (below).
* **FTS5 baseline**: the same items in an in-memory SQLite FTS5 table with score and timestamp
  columns, answering each query with the ranking formula of :mod:`hivebus.domain.scoring` over the
  items matching any query word plus the top items by decay alone; its top 5 must equal
  hivebus's (mismatches are counted).
* **decide**: ``AgentMemory.decide("TRADE_EXECUTION", confidence=0.7, symbol=...)``, which reads
  the agent's latest outcome items.
* **decision queries**: N decisions logged through ``DecisionLog.log_decision`` (50 in flight,
  mixed types, about half given an outcome), then ``DecisionLog.query(agent, limit=5)``, by type,
  successes only, and a type that matches nothing.

Redis time per call is the usec of INFO commandstats between CONFIG RESETSTAT and the end of the
timed calls, counting what the client sent (a script call or EXEC whole) and not again the
commands run inside a script or MULTI/EXEC (commandstats lists those too). Which commands run
inside is learnt, not assumed: one untimed call of each operation runs under MONITOR first (it
is the warm-up), so the figure stays right whatever scripts or transactions the code under test
uses. Redis main-thread CPU over the same calls is given beside it.
"""

from __future__ import annotations

import itertools
import math
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import anyio
import redis.asyncio as aioredis

from bench.workloads import Env
from hivebus.agents.desk.decision_types import DecisionType
from hivebus.agents.memory import AgentMemory
from hivebus.domain.scoring import words
from hivebus.infra.connection import open_client
from hivebus.infra.redis_errors import Redis
from hivebus.memory.decisions import DecisionLog
from hivebus.memory.stm import ShortTermMemory

SIZES = (1_000, 10_000, 100_000)
QUICK_SIZES = (100, 300)
CONCURRENCY = 50
TOPK = 5
CALLS = 20  # timed calls per operation (the recall queries are this many, each asked once)
SPAN_S = 23 * 3600
VOCABULARY = 5_000
KINDS = ("observation", "trade", "outcome", "signal", "note")
TICKERS = ("BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE", "AVAX", "DOT", "LINK", "MATIC", "LTC",
           "ATOM", "UNI", "ARB", "OP", "NEAR", "APT", "FIL", "TRX")
MEMORY_AGENT = "mem-1"
DESK_AGENT = "desk-1"
NO_SUCH_TYPE = "NEVER_DECIDED"
OWN_COMMANDS = frozenset({"info", "config", "monitor", "client", "hello", "echo"})
"""Commands the bench sends itself (stats, the MONITOR probe and its marker): left out."""
TARGET_SIZE = 100_000
"""The size issue 11's targets are stated at; at other sizes the rows are shown, not judged."""


# --- data ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One short-term memory item to remember."""

    kind: str
    content: str
    score: float
    symbol: str
    metadata: dict[str, Any]
    timestamp: float


@dataclass(frozen=True)
class Query:
    """One recall query: two vocabulary words, perhaps a kind or symbol filter."""

    text: str
    kind: str | None = None
    symbol: str | None = None

    def label(self) -> str:
        return self.text + "".join(f" [{f}]" for f in (self.kind, self.symbol) if f)


class Corpus:
    """Made-up words with Zipf weights (the word of rank r drawn with weight 1/r), seeded."""

    def __init__(self, seed: int, size: int = VOCABULARY) -> None:
        rng = random.Random(seed)
        syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
        vocab: dict[str, None] = {}
        while len(vocab) < size:
            vocab["".join(rng.choices(syllables, k=rng.randint(2, 4)))] = None
        self.words = list(vocab)
        self.cum_weights = list(itertools.accumulate(1.0 / rank for rank in range(1, size + 1)))

    def draw(self, rng: random.Random, k: int) -> list[str]:
        return rng.choices(self.words, cum_weights=self.cum_weights, k=k)

    def sentence(self, rng: random.Random) -> str:
        return " ".join(self.draw(rng, rng.randint(6, 12))) + "."


def make_items(corpus: Corpus, n: int, now: float, seed: int) -> list[Item]:
    """``n`` items, timestamps uniform over the ``SPAN_S`` seconds before ``now``."""
    rng = random.Random(seed)
    items = []
    for k in range(n):
        kind, symbol = rng.choice(KINDS), rng.choice(TICKERS)
        score, metadata = rng.random(), {}
        if kind == "outcome":  # as AgentMemory.remember_outcome writes them
            pnl = round(rng.uniform(-100.0, 100.0), 2)
            score = 2.0 if abs(pnl) > 1.0 else 1.0
            metadata = {"trade_id": f"T{k}", "pnl": pnl, "outcome": "win" if pnl > 0 else "loss"}
        items.append(Item(kind, corpus.sentence(rng), score, symbol, metadata,
                          now - rng.uniform(0.0, SPAN_S)))
    return items


def make_queries(corpus: Corpus, seed: int, count: int = CALLS) -> list[Query]:
    """``count`` two-word queries; every fifth filtered by kind, every fifth (offset) by symbol."""
    rng = random.Random(seed)
    queries = []
    for k in range(count):
        first, second = corpus.draw(rng, 1)[0], corpus.draw(rng, 1)[0]
        while second == first:
            second = corpus.draw(rng, 1)[0]
        kind = rng.choice(KINDS) if k % 5 == 2 else None
        symbol = rng.choice(TICKERS) if k % 5 == 4 else None
        queries.append(Query(f"{first} {second}", kind, symbol))
    return queries


class FakeClock:
    """A clock that says what it was last set to."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- filling ---------------------------------------------------------------------------------
async def concurrently(n: int, call: Callable[[int], Awaitable[None]], width: int = CONCURRENCY) -> float:
    """Run ``call(k)`` for k in 0..n-1 with ``width`` in flight; return the seconds it took."""
    pending = iter(range(n))

    async def worker() -> None:
        for k in pending:  # one iterator shared by the workers: each k is taken once
            await call(k)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(width):
            tg.start_soon(worker)
    return time.perf_counter() - started


async def open_connections(client: Redis) -> None:
    """Have ``CONCURRENCY`` connections in the client's pool before a timed fill (opening them is
    not what a throughput figure should measure)."""
    async def ping(_k: int) -> None:
        await client.ping()

    await concurrently(CONCURRENCY, ping)


async def fill_memory(client: Redis, env: Env, items: Sequence[Item]) -> tuple[list[str], float]:
    """Remember ``items`` (each at its own timestamp); return their ids and items/s."""
    ids = [""] * len(items)
    clocks = [FakeClock() for _ in range(CONCURRENCY)]
    memories = [ShortTermMemory(client, env.settings, MEMORY_AGENT, clock=c) for c in clocks]
    free = list(range(CONCURRENCY))  # a worker's memory and clock, held for the whole call

    async def remember(k: int) -> None:
        slot = free.pop()
        item = items[k]
        clocks[slot].now = item.timestamp
        try:
            ids[k] = await memories[slot].remember(item.kind, item.content, score=item.score,
                                                   symbol=item.symbol, metadata=item.metadata)
        finally:
            free.append(slot)

    await open_connections(client)
    seconds = await concurrently(len(items), remember)
    return ids, len(items) / seconds


async def fill_decisions(client: Redis, env: Env, n: int, now: float, seed: int) -> dict[str, float]:
    """Log ``n`` decisions of mixed types over the last ``SPAN_S`` seconds, then outcomes for
    about half of them; return decisions/s and outcomes/s."""
    rng = random.Random(seed)
    log = DecisionLog(client, env.settings)
    types = [t.value for t in DecisionType]
    plan = [(rng.choice(types), now - rng.uniform(0.0, SPAN_S), rng.random()) for _ in range(n)]
    ids = [""] * n

    async def decide(k: int) -> None:
        decision_type, timestamp, confidence = plan[k]
        ids[k] = await log.log_decision(DESK_AGENT, decision_type, timestamp=timestamp,
                                        context={"symbol": TICKERS[k % len(TICKERS)]},
                                        reasoning={"confidence": confidence, "n": k})

    log_s = await concurrently(n, decide)
    outcomes = [(ids[k], rng.random() < 0.55) for k in range(n) if rng.random() < 0.5]

    async def settle(k: int) -> None:
        decision_id, success = outcomes[k]
        await log.log_outcome(decision_id, success=success, quality_score=0.5)

    outcome_s = await concurrently(len(outcomes), settle)
    return {"log_decision_per_s": n / log_s, "log_outcome_per_s": len(outcomes) / outcome_s,
            "with_outcome": len(outcomes)}


# --- timing and Redis time --------------------------------------------------------------------
@dataclass
class Probe:
    """Calls per command name in one probed operation: sent by the client, or run inside a
    script or a MULTI/EXEC (whose time commandstats already counts in EVALSHA's / EXEC's)."""

    sent: Counter[str] = field(default_factory=Counter)
    inside: Counter[str] = field(default_factory=Counter)

    def sent_share(self, name: str) -> float:
        """The share of ``name``'s commandstats time that is the client's own (1 when unseen)."""
        total = self.sent[name] + self.inside[name]
        return self.sent[name] / total if total else 1.0


async def probe(url: str, call: Callable[[], Awaitable[Any]]) -> Probe:
    """Run ``call`` once under MONITOR and classify the commands it made Redis run."""
    admin = aioredis.Redis.from_url(url, decode_responses=True)
    seen, in_multi = Probe(), set[str]()
    try:
        async with admin.monitor() as monitor:
            await call()
            await admin.echo("hivebus-memscale-probe")
            async for line in monitor.listen():
                command = str(line["command"])
                if command.startswith("ECHO hivebus-memscale-probe"):
                    break
                name, port = command.split(" ", 1)[0].lower(), str(line.get("client_port"))
                if line.get("client_type") == "lua" or (port in in_multi and name not in {"exec", "discard"}):
                    seen.inside[name] += 1
                    continue
                seen.sent[name] += 1
                if name == "multi":
                    in_multi.add(port)
                elif name in {"exec", "discard"}:
                    in_multi.discard(port)
    finally:
        await admin.aclose()
    return seen


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (as bench.__main__'s)."""
    return sorted_values[min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))]


def _cpu_s(info: dict[str, Any]) -> float:
    return float(info["used_cpu_sys_main_thread"]) + float(info["used_cpu_user_main_thread"])


@dataclass
class OpStats:
    """Wall time and Redis time of one operation's timed calls."""

    calls: int
    p50_ms: float
    p95_ms: float
    redis_us_per_call: float
    redis_cpu_us_per_call: float
    commands_sent_per_call: float
    inside_per_call: float
    unprobed: list[str]


async def measure(url: str, client: Redis, calls: Sequence[Callable[[], Awaitable[Any]]]
                  ) -> tuple[OpStats, list[Any]]:
    """Probe (and warm up with) the first call, then time each call in turn; return the figures
    and what each timed call returned."""
    seen = await probe(url, calls[0])
    await client.config_resetstat()
    cpu_before = _cpu_s(await client.info("cpu"))
    wall: list[float] = []
    replies: list[Any] = []
    for call in calls:
        started = time.perf_counter()
        replies.append(await call())
        wall.append((time.perf_counter() - started) * 1000)
    cpu_after = _cpu_s(await client.info("cpu"))
    stats = await client.info("commandstats")
    usec = sent = inside = 0.0
    unprobed: set[str] = set()
    for key, value in stats.items():
        name = str(key).removeprefix("cmdstat_").split("|")[0]
        if name in OWN_COMMANDS:
            continue
        if seen.sent[name] + seen.inside[name] == 0:
            unprobed.add(name)  # counted as sent: the probed call did not run it
        share = seen.sent_share(name)
        usec += int(value["usec"]) * share
        sent += int(value["calls"]) * share
        inside += int(value["calls"]) * (1 - share)
    wall.sort()
    n = len(calls)
    return OpStats(n, percentile(wall, 0.5), percentile(wall, 0.95), usec / n,
                   (cpu_after - cpu_before) * 1e6 / n, sent / n, inside / n, sorted(unprobed)), replies


# --- the FTS5 baseline ------------------------------------------------------------------------
class Fts5Baseline:
    """The same items in SQLite FTS5, ranked by ``score * 0.5 ** (age_s / half_life_s) + |query
    words ∩ content words|``, ties newest first, over the items matching any query word plus the
    top ``topk`` by decay alone (an item without any query word that makes the top ``topk`` has
    fewer than ``topk`` items decaying slower than it). ``decay_key`` = log2(score) + t/half-life
    orders items by decayed score at any moment, with an index per filter."""

    def __init__(self, items: Sequence[Item], ids: Sequence[str], half_life_s: float) -> None:
        self.half_life_s = half_life_s
        self.db = sqlite3.connect(":memory:")
        self.db.executescript("""
            CREATE TABLE items(id INTEGER PRIMARY KEY, item_id TEXT, kind TEXT, symbol TEXT,
                               score REAL, ts REAL, decay_key REAL);
            CREATE VIRTUAL TABLE fts USING fts5(content);""")
        self.db.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?)", (
            (k, item_id, i.kind, i.symbol, i.score, i.timestamp,
             (math.log2(i.score) if i.score > 0 else -1e300) + i.timestamp / half_life_s)
            for k, (i, item_id) in enumerate(zip(items, ids, strict=True))))
        self.db.executemany("INSERT INTO fts(rowid, content) VALUES (?, ?)",
                            ((k, i.content) for k, i in enumerate(items)))
        self.db.executescript("""
            CREATE INDEX by_decay ON items(decay_key);
            CREATE INDEX by_kind ON items(kind, decay_key);
            CREATE INDEX by_symbol ON items(symbol, decay_key);""")

    def top(self, query: Query, now: float, topk: int = TOPK) -> list[tuple[str, float]]:
        """The ``topk`` best (item id, relevance) for ``query`` at ``now``."""
        terms = sorted(words(query.text))
        hits = " UNION ALL ".join(["SELECT rowid AS id FROM fts WHERE fts MATCH ?"] * len(terms)) or (
            "SELECT NULL AS id WHERE 0")
        where, filters = _where(query, "")
        where_i, _ = _where(query, "i.")
        sql = f"""
            WITH hits(id, overlap) AS (SELECT id, count(*) FROM ({hits}) GROUP BY id),
                 by_decay(id, overlap) AS (
                     SELECT id, 0 FROM (SELECT id FROM items {where} ORDER BY decay_key DESC LIMIT ?)),
                 candidates(id, overlap) AS (SELECT * FROM hits UNION ALL SELECT * FROM by_decay)
            SELECT i.item_id, i.score * power(0.5, max(0.0, ? - i.ts) / ?) + max(c.overlap) AS rel
            FROM candidates c JOIN items i ON i.id = c.id {where_i}
            GROUP BY i.id ORDER BY rel DESC, i.ts DESC LIMIT ?"""
        # a few more by decay than topk: a near-tie rounded differently in decay_key cannot drop one
        params = [f'"{t}"' for t in terms] + filters + [topk + 5, now, self.half_life_s] + filters + [topk]
        return [(str(item_id), float(rel)) for item_id, rel in self.db.execute(sql, params)]


def _where(query: Query, prefix: str) -> tuple[str, list[str]]:
    """The SQL WHERE clause of ``query``'s kind and symbol filters (columns prefixed), and its
    parameters."""
    conditions, params = [], []
    for column, value in (("kind", query.kind), ("symbol", query.symbol)):
        if value is not None:
            conditions.append(f"{prefix}{column} = ?")
            params.append(value)
    return (f"WHERE {' AND '.join(conditions)}" if conditions else ""), params


def time_fts5(baseline: Fts5Baseline, queries: Sequence[Query], now: float
              ) -> tuple[dict[str, float], list[list[tuple[str, float]]]]:
    """p50 and p95 ms of the baseline over ``queries`` (after one warm-up pass), and its answers."""
    answers = [baseline.top(q, now) for q in queries]
    wall = []
    for q in queries:
        started = time.perf_counter()
        baseline.top(q, now)
        wall.append((time.perf_counter() - started) * 1000)
    wall.sort()
    return {"p50_ms": percentile(wall, 0.5), "p95_ms": percentile(wall, 0.95)}, answers


# --- one size ---------------------------------------------------------------------------------
async def _used_memory(client: Redis) -> int:
    return int((await client.info("memory"))["used_memory"])


async def recall_and_fts5(env: Env, client: Redis, items: Sequence[Item], ids: Sequence[str],
                          now: float, queries: Sequence[Query]) -> dict[str, Any]:
    """Recall's figures, the FTS5 baseline's on the same items and queries, and where their top
    5s differ (they should not)."""
    stm = ShortTermMemory(client, env.settings, MEMORY_AGENT, clock=FakeClock(now))
    recall, answers = await measure(env.url, client, [
        partial(stm.recall, q.text, kind=q.kind, symbol=q.symbol, topk=TOPK) for q in queries])
    ours = [[(item.item_id, value) for value, item in answer] for answer in answers]
    started = time.perf_counter()
    baseline = Fts5Baseline(items, ids, env.settings.recall_half_life_s)
    build_s = time.perf_counter() - started
    try:
        fts5, theirs = time_fts5(baseline, queries, now)
    finally:
        baseline.db.close()
    mismatched = [{"query": q.label(), "hivebus": a, "fts5": b}
                  for q, a, b in zip(queries, ours, theirs, strict=True)
                  if [i for i, _ in a] != [i for i, _ in b]]
    return {"recall": asdict(recall),
            "fts5": {**fts5, "build_s": build_s, "mismatches": len(mismatched),
                     "mismatched": mismatched[:3]},
            "recall_vs_fts5_p50": recall.p50_ms / fts5["p50_ms"] if fts5["p50_ms"] else None}


async def decision_reads(env: Env, client: Redis, n: int, now: float, seed: int) -> dict[str, Any]:
    """Log ``n`` decisions, then time ``DecisionLog.query`` with limit 5: unfiltered, by type,
    successes only, and a type that matches nothing."""
    before = await _used_memory(client)
    logged = await fill_decisions(client, env, n, now, seed)
    logged["redis_bytes_per_decision"] = (await _used_memory(client) - before) / n
    log = DecisionLog(client, env.settings)
    variants: dict[str, dict[str, Any]] = {
        "limit5": {}, "by_type": {"decision_type": DecisionType.TRADE_EXECUTION.value},
        "success": {"success": True}, "no_match": {"decision_type": NO_SUCH_TYPE}}
    queried = {}
    for name, options in variants.items():
        stats, _ = await measure(env.url, client,
                                 [partial(log.query, DESK_AGENT, limit=5, **options)] * CALLS)
        queried[name] = asdict(stats)
    return {"decisions": logged, "decision_query": queried}


async def one_size(env: Env, n: int, seed: int = 11) -> dict[str, Any]:
    """Every figure of the group at ``n`` items and ``n`` decisions, in ``env``'s namespace."""
    client = open_client(env.url)
    try:
        await client.flushall()  # the bench's own server: earlier groups' and sizes' keys go
        corpus, now = Corpus(seed), time.time()
        items = make_items(corpus, n, now, seed + n)
        before = await _used_memory(client)
        ids, remember_rate = await fill_memory(client, env, items)
        bytes_per_item = (await _used_memory(client) - before) / n
        reads = await recall_and_fts5(env, client, items, ids, now, make_queries(corpus, seed))
        desk = AgentMemory(client, env.settings, MEMORY_AGENT)
        decide, _ = await measure(env.url, client, [
            partial(desk.decide, "TRADE_EXECUTION", confidence=0.7, symbol=ticker)
            for ticker in itertools.islice(itertools.cycle(TICKERS), CALLS)])
        return {"items": n, "remember_per_s": remember_rate, "redis_bytes_per_item": bytes_per_item,
                **reads, "decide": asdict(decide),
                **await decision_reads(env, client, n, now, seed + n + 1)}
    finally:
        await client.flushall()
        await client.aclose()


# --- the group, its ratios and its targets ----------------------------------------------------
GROWTH: dict[str, tuple[str, ...]] = {
    "recall_p50_ms": ("recall", "p50_ms"),
    "redis_us_per_recall": ("recall", "redis_us_per_call"),
    "decide_p50_ms": ("decide", "p50_ms"),
    "decision_query_limit5_p50_ms": ("decision_query", "limit5", "p50_ms"),
}
"""The figures whose growth (largest size ÷ smallest) the group reports, and where they are."""


def _get(size: dict[str, Any], path: Sequence[str]) -> float:
    value: Any = size
    for step in path:
        value = value[step]
    return float(value)


def growth(by_size: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Each GROWTH figure at the largest size divided by the same at the smallest."""
    sizes = sorted(by_size, key=int)
    first, last = by_size[sizes[0]], by_size[sizes[-1]]
    return {name: (_get(last, path) / _get(first, path) if _get(first, path) else None)
            for name, path in GROWTH.items()}


async def run(make_env: Callable[[], Env], sizes: Sequence[int]) -> dict[str, Any]:
    """The group at every size, smallest first, printing each as it finishes."""
    by_size: dict[str, dict[str, Any]] = {}
    for n in sorted(sizes):
        by_size[str(n)] = await one_size(make_env(), n)
        print_size(by_size[str(n)])
    result = {"sizes": sorted(sizes), "concurrency": CONCURRENCY, "calls": CALLS, "topk": TOPK,
              "by_size": by_size, "growth": growth(by_size) if len(by_size) > 1 else {}}
    print_summary(result)
    return result


def targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Issue 11's targets (lines 5 and 6) as rows of the results' target table: the figures at
    the largest size, judged only when that is 100,000 items."""
    largest = max(result["sizes"])
    size, judged = result["by_size"][str(largest)], largest == TARGET_SIZE
    at = f"{largest // 1000}k" if largest >= 1000 else str(largest)
    rows: dict[str, dict[str, Any]] = {}

    def row(name: str, value: float | None, limit: float | None, target: str) -> None:
        met = None if value is None or limit is None or not judged else value <= limit
        rows[name] = {"value": None if value is None else round(value, 3), "target": target,
                      "met": met, "issue": "11"}

    row(f"memscale_recall_p50_ms_at_{at}", size["recall"]["p50_ms"], 10, "<= 10 (at 100k)")
    row(f"memscale_recall_vs_fts5_p50_at_{at}", size["recall_vs_fts5_p50"], 3, "<= 3 (at 100k)")
    row(f"memscale_redis_us_per_recall_at_{at}", size["recall"]["redis_us_per_call"], 1000,
        "<= 1000 (at 100k; line 5)")
    row(f"memscale_decide_p50_ms_at_{at}", size["decide"]["p50_ms"], 3, "<= 3 (at 100k)")
    row(f"memscale_decision_query_limit5_p50_ms_at_{at}", size["decision_query"]["limit5"]["p50_ms"], 3,
        "<= 3 (at 100k)")
    row(f"memscale_remember_per_s_at_{at}", size["remember_per_s"], None,
        "context: within 20 % of the previous version's")
    fts_ok = all(s["fts5"]["mismatches"] == 0 for s in result["by_size"].values())
    rows["memscale_fts5_top5_mismatches"] = {
        "value": sum(s["fts5"]["mismatches"] for s in result["by_size"].values()), "target": "= 0",
        "met": fts_ok, "issue": "11"}
    if result["growth"]:
        span = f"{largest:,} ÷ {min(result['sizes']):,}"
        value = result["growth"]["recall_p50_ms"]
        row("memscale_recall_growth", value, 3, f"<= 3 ({span}; judged at 100k ÷ 1k)")
        if judged and min(result["sizes"]) != 1_000:
            rows["memscale_recall_growth"]["met"] = None
        for name in ("redis_us_per_recall", "decide_p50_ms", "decision_query_limit5_p50_ms"):
            row(f"memscale_{name}_growth", result["growth"][name], None, f"context ({span})")
    return rows


# --- output -------------------------------------------------------------------------------------
ROWS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("remember, items/s (50 in flight)", ("remember_per_s",), "{:,.0f}"),
    ("Redis bytes per item", ("redis_bytes_per_item",), "{:,.0f}"),
    ("recall p50 ms", ("recall", "p50_ms"), "{:,.2f}"),
    ("recall p95 ms", ("recall", "p95_ms"), "{:,.2f}"),
    ("Redis µs per recall (commandstats, commands sent)", ("recall", "redis_us_per_call"), "{:,.1f}"),
    ("Redis main-thread CPU µs per recall", ("recall", "redis_cpu_us_per_call"), "{:,.1f}"),
    ("commands sent per recall", ("recall", "commands_sent_per_call"), "{:,.1f}"),
    ("commands run inside scripts or EXEC per recall", ("recall", "inside_per_call"), "{:,.1f}"),
    ("FTS5 baseline p50 ms", ("fts5", "p50_ms"), "{:,.2f}"),
    ("FTS5 baseline p95 ms", ("fts5", "p95_ms"), "{:,.2f}"),
    ("recall p50 ÷ FTS5 p50", ("recall_vs_fts5_p50",), "{:,.2f}"),
    (f"FTS5 top-5 ≠ hivebus top-5 (of {CALLS} queries)", ("fts5", "mismatches"), "{:,.0f}"),
    ("decide p50 ms", ("decide", "p50_ms"), "{:,.2f}"),
    ("decide p95 ms", ("decide", "p95_ms"), "{:,.2f}"),
    ("Redis µs per decide", ("decide", "redis_us_per_call"), "{:,.1f}"),
    ("log_decision, decisions/s (50 in flight)", ("decisions", "log_decision_per_s"), "{:,.0f}"),
    ("Redis bytes per decision", ("decisions", "redis_bytes_per_decision"), "{:,.0f}"),
    ("decision query limit 5 p50 ms", ("decision_query", "limit5", "p50_ms"), "{:,.2f}"),
    ("  by type, p50 ms", ("decision_query", "by_type", "p50_ms"), "{:,.2f}"),
    ("  successes only, p50 ms", ("decision_query", "success", "p50_ms"), "{:,.2f}"),
    ("  a type that matches nothing, p50 ms", ("decision_query", "no_match", "p50_ms"), "{:,.2f}"),
    ("Redis µs per decision query (limit 5)", ("decision_query", "limit5", "redis_us_per_call"),
     "{:,.1f}"),
)
"""The figures of the results.md table: label, where in a size's result, format."""


def _cell(size: dict[str, Any], path: Sequence[str], fmt: str) -> str:
    try:
        return fmt.format(_get(size, path))
    except (KeyError, TypeError):
        return "-"


def print_size(size: dict[str, Any]) -> None:
    r, f, d, q = size["recall"], size["fts5"], size["decide"], size["decision_query"]
    print(f"  {size['items']:>7,} items: remember {size['remember_per_s']:,.0f}/s; recall p50 "
          f"{r['p50_ms']:.2f} ms p95 {r['p95_ms']:.2f} (Redis {r['redis_us_per_call']:,.1f} µs, CPU "
          f"{r['redis_cpu_us_per_call']:,.1f} µs); FTS5 p50 {f['p50_ms']:.2f} ms (x"
          f"{size['recall_vs_fts5_p50'] or 0:.2f}, {f['mismatches']} mismatched); decide p50 "
          f"{d['p50_ms']:.2f} ms; decisions {size['decisions']['log_decision_per_s']:,.0f}/s, query "
          f"p50 ms limit5 {q['limit5']['p50_ms']:.2f} type {q['by_type']['p50_ms']:.2f} success "
          f"{q['success']['p50_ms']:.2f} none {q['no_match']['p50_ms']:.2f}", flush=True)
    for miss in f["mismatched"]:
        print(f"    mismatch {miss['query']!r}: hivebus {miss['hivebus']} fts5 {miss['fts5']}")


def print_summary(result: dict[str, Any]) -> None:
    sizes = result["sizes"]
    if result["growth"]:
        print(f"  growth ({max(sizes):,} ÷ {min(sizes):,}):", ", ".join(
            f"{name} x{value:.2f}" if value is not None else f"{name} -"
            for name, value in result["growth"].items()))
    for name, t in targets(result).items():
        met = "-" if t["met"] is None else ("yes" if t["met"] else "NO")
        print(f"  {name:<46} {t['value']!s:>12}  target {t['target']:<44} met {met}")


def markdown(result: dict[str, Any]) -> list[str]:
    """The group's section of results.md: every figure per size, and the growth column."""
    sizes = [str(n) for n in result["sizes"]]
    span = f"{int(sizes[-1]):,} ÷ {int(sizes[0]):,}"
    lines = ["", f"memscale (issue 11): one agent's memory and decision log at each size, "
             f"{CALLS} timed calls per figure after a warm-up, top {TOPK}; Redis µs counts the commands "
             "sent (a script call or EXEC whole, learnt from one MONITORed call), not again those run "
             "inside.", "",
             "| memscale | " + " | ".join(f"{int(n):,}" for n in sizes) + f" | growth {span} |",
             "|---|" + "---:|" * (len(sizes) + 1)]
    grown = {path: result["growth"].get(name) for name, path in GROWTH.items()}
    for label, path, fmt in ROWS:
        cells = [_cell(result["by_size"][n], path, fmt) for n in sizes]
        ratio = grown.get(path)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {'' if ratio is None else f'x{ratio:.2f}'} |")
    return lines
