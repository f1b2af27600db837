"""Short-term (working) memory in Redis: items that expire, recalled by importance * decay + keywords.

Each item is a hash with its own key-level TTL (``PEXPIRE``, so it works on Redis 6.2).
Items are private to their agent unless written with a list of agents (or ``*``) that
may read them; a shared item is stored in the scope of each agent it names and of its owner
(or once for everyone), a copy per scope, so storing it in a scope and purging it from one
touch keys of one Redis Cluster slot. Every read goes through indexes
(:mod:`hivebus.memory.stm_index`): recall reads the best-ranked items of the lists that can
hold the answer until it is sure of it, ``recent`` pages a time index, so what a read costs
follows its answer, not the history. The ranking rule is in :mod:`hivebus.domain.scoring`.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hivebus.domain.clock import now_s
from hivebus.domain.errors import InvalidInput
from hivebus.domain.ids import new_id
from hivebus.domain.keys import Keys, check_agent_id
from hivebus.domain.models import describe_validation_error
from hivebus.domain.scoring import relevance, words
from hivebus.infra.lua import REMEMBER
from hivebus.infra.redis_errors import Redis, range_members, translate_redis_errors
from hivebus.memory.stm_index import (
    MAX_QUERY_WORDS,
    PURGE_BATCH,
    Cursor,
    Scope,
    ScopeSearch,
    Terms,
    decayed_bound,
    rank_key,
)
from hivebus.settings import Settings

EVERYONE = "*"
MAX_CONTENT = 10_000


class MemoryItem(BaseModel):
    """One short-term memory (seed 003): what, how important, about which symbol."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    item_id: str = Field(default_factory=new_id)
    kind: str = Field(min_length=1, max_length=64)
    content: str = Field(max_length=MAX_CONTENT)
    score: float = Field(default=0.5, ge=0.0, allow_inf_nan=False)
    symbol: str | None = Field(default=None, max_length=64)
    metadata: dict[str, Any] = Field(default_factory=dict)
    timestamp: float = Field(default_factory=now_s)
    owner: str = ""
    visible_to: tuple[str, ...] = ()

    def to_fields(self) -> dict[str, str]:
        """Readable hash fields."""
        fields = {
            "kind": self.kind, "content": self.content, "score": repr(self.score),
            "metadata": json.dumps(self.metadata, sort_keys=True, separators=(",", ":")),
            "timestamp": repr(self.timestamp), "owner": self.owner,
        }
        if self.symbol:
            fields["symbol"] = self.symbol
        if self.visible_to:
            fields["visible_to"] = ",".join(self.visible_to)
        return fields

    @classmethod
    def from_fields(cls, item_id: str, fields: dict[str, str]) -> MemoryItem:
        """Decode a stored item."""
        return cls(
            item_id=item_id, kind=fields["kind"], content=fields.get("content", ""),
            score=float(fields.get("score", 0)), symbol=fields.get("symbol"),
            metadata=json.loads(fields.get("metadata") or "{}"),
            timestamp=float(fields["timestamp"]), owner=fields.get("owner", ""),
            visible_to=tuple(filter(None, fields.get("visible_to", "").split(","))),
        )


Row = tuple[str, dict[str, str]]  # an item id and its stored fields, not yet decoded
PAGE = 500  # items per round trip when a read walks a whole index (items, summarize, cleanup)
PURGE_WHEN = 64  # expired items a scope may hold before remember purges a batch of them


def _build(rows: Iterable[Row]) -> list[MemoryItem]:
    """Decode stored items; one edited by hand into nonsense is skipped, not fatal."""
    items = []
    for item_id, fields in rows:
        try:
            items.append(MemoryItem.from_fields(item_id, fields))
        except (KeyError, ValueError, ValidationError):
            continue
    return items


def _matches(fields: dict[str, str], kind: str | None, symbol: str | None) -> bool:
    return (kind is None or fields.get("kind") == kind) and (symbol is None or fields.get("symbol") == symbol)


def _timestamp(fields: dict[str, str]) -> float | None:
    try:
        return float(fields["timestamp"])
    except (KeyError, ValueError):
        return None


@dataclass(frozen=True)
class Estimate:
    """An item met in the indexes, scored from them: its relevance lies in [low, high]."""

    scope: Scope
    item_id: str
    timestamp: float
    low: float
    high: float


class ShortTermMemory:
    """One agent's working memory, plus the shared items it may read."""

    def __init__(
        self, redis: Redis, settings: Settings, agent_id: str,
        clock: Callable[[], float] = now_s,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.agent_id = check_agent_id(agent_id)
        self.keys = Keys(settings.namespace)
        self.clock = clock
        self.own = Scope.private(self.keys, self.agent_id)
        self._remember = redis.register_script(REMEMBER)

    def scopes(self, include_shared: bool = True) -> list[Scope]:
        """What this agent reads: its own items, then those shared with it and with everyone."""
        if not include_shared:
            return [self.own]
        return [self.own, Scope.shared(self.keys, self.agent_id), Scope.shared(self.keys, EVERYONE)]

    async def remember(
        self, kind: str, content: str, *, score: float = 0.5, symbol: str | None = None,
        metadata: dict[str, Any] | None = None, ttl_s: float | None = None,
        shared_with: Iterable[str] | None = None,
    ) -> str:
        """Store an item; return its id. ``shared_with`` (agent ids or ``*``) makes it shared.

        The TTL defaults to HIVEBUS_STM_TTL_S and never exceeds the STM window.
        Raises InvalidInput for a bad item.
        """
        visible = tuple(shared_with or ())
        for agent_id in visible:
            if agent_id != EVERYONE:
                check_agent_id(agent_id)
        try:
            item = MemoryItem(kind=kind, content=content, score=score, symbol=symbol,
                              metadata=dict(metadata or {}), timestamp=self.clock(),
                              owner=self.agent_id, visible_to=visible)
        except ValidationError as exc:
            raise InvalidInput(describe_validation_error(exc)) from None
        ttl = min(ttl_s or self.settings.stm_ttl_s, self.settings.stm_window_s)
        if ttl <= 0:
            raise InvalidInput("ttl_s must be positive")
        if not visible:
            scopes = [self.own]
        elif EVERYONE in visible:
            scopes = [Scope.shared(self.keys, EVERYONE)]
        else:  # each agent it is shared with finds it in its own scope; so does its owner
            scopes = [Scope.shared(self.keys, a) for a in dict.fromkeys((*visible, self.agent_id))]
        item_words = words(content)
        rank = rank_key(item.score, item.timestamp, self.settings.recall_half_life_s)
        flat = [x for pair in item.to_fields().items() for x in pair]
        for scope in scopes:
            ranked, timed = scope.index_keys(kind, symbol, item_words)
            keys = [scope.item(item.item_id), scope.times, scope.expiry, scope.terms, *ranked, *timed]
            args: list[str | int] = [
                item.item_id, repr(item.timestamp), repr(rank), repr(item.timestamp + ttl),
                int(ttl * 1000), len(ranked),
                Terms(kind, symbol, item.timestamp, item.timestamp + ttl, frozenset(item_words)).encode(),
                repr(self.clock()), *flat]
            async with translate_redis_errors():
                expired = int(await self._remember(keys=keys, args=args))
            if expired >= PURGE_WHEN:
                await self.purge_expired(scope)
        return item.item_id

    # --- reading ------------------------------------------------------------------------------
    async def items(self, *, include_shared: bool = True) -> list[MemoryItem]:
        """Every live item this agent may read: its own, plus shared ones visible to it (read a
        page of the time index at a time)."""
        found: dict[str, Row] = {}
        for scope in self.scopes(include_shared):
            async for rows in self._pages(scope, scope.times, self.clock() - self.settings.stm_window_s):
                for item_id, fields in rows:
                    found.setdefault(item_id, (item_id, fields))
        return _build(found.values())

    async def _pages(self, scope: Scope, index: str, since: float) -> AsyncIterator[list[Row]]:
        """The live rows of ``index`` (a time index) from ``since`` on, oldest first, a page per
        round trip; entries whose item expired are purged from the indexes as they are met."""
        start = 0
        while True:
            async with translate_redis_errors():
                ids = range_members(await self.redis.zrangebyscore(index, since, "+inf", start=start,
                                                                   num=PAGE))
            if not ids:
                return
            rows = await self._fetch(scope, ids, index)
            yield [(i, f) for i, f in zip(ids, rows, strict=True) if f]
            start += len(ids) - sum(1 for f in rows if not f)  # purged entries left the index
            if len(ids) < PAGE:
                return

    async def _fetch(self, scope: Scope, ids: Sequence[str], index: str) -> list[dict[str, str]]:
        """The stored fields of ``ids`` ({} for an item that is gone: it is purged, and removed
        from ``index`` even when its terms were lost)."""
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for item_id in ids:
                pipe.hgetall(scope.item(item_id))
            rows: list[dict[str, str]] = await pipe.execute()
        gone = [item_id for item_id, fields in zip(ids, rows, strict=True) if not fields]
        if gone:
            await self.purge(scope, gone, also=[index])
        return rows

    async def recall(
        self, query: str = "", *, kind: str | None = None, symbol: str | None = None,
        topk: int = 5, include_shared: bool = True,
    ) -> list[tuple[float, MemoryItem]]:
        """The ``topk`` most relevant items (relevance, item), best first: the same answer as
        ranking every item by the README's formula (ties: newest first), found through the
        indexes (see :mod:`hivebus.memory.stm_index`)."""
        if topk <= 0:
            return []
        now, half_life = self.clock(), self.settings.recall_half_life_s
        since = now - self.settings.stm_window_s
        query_words = words(query)
        looked_up = sorted(query_words)[:MAX_QUERY_WORDS]
        unindexed = len(query_words) - len(looked_up)  # each can add 1 to an item not met yet
        searches = [ScopeSearch.start(s, kind, symbol, looked_up) for s in self.scopes(include_shared)]
        met: set[str] = set()
        estimates: list[Estimate] = []
        reading = [(n, cursor) for n, search in enumerate(searches) for cursor in search.cursors()]
        first = True
        while reading:
            pages = await self._read_pages([cursor for _, cursor in reading], sizes=first)
            first = False
            fresh: dict[int, list[tuple[str, float]]] = {}
            for (n, cursor), members in zip(reading, pages, strict=True):
                for item_id, key in cursor.advance(members):
                    if item_id not in met:
                        met.add(item_id)
                        fresh.setdefault(n, []).append((item_id, key))
            estimates += await self._estimate(searches, fresh, now, since, kind, symbol, query_words)
            estimates.sort(key=lambda e: (-e.low, -e.timestamp))
            kth = estimates[topk - 1].low if len(estimates) >= topk else -math.inf
            bound, reading = -math.inf, []
            for n, search in enumerate(searches):
                value, next_list = search.bound(now, half_life)
                if next_list is not None and value + unindexed > bound:
                    bound, reading = value + unindexed, [(n, next_list)]
            if bound * (1 + 1e-9) + 1e-12 < kth:
                break  # nothing not met yet can beat the k-th best
        return await self._verify(estimates, topk, kind, symbol, since, now, query_words)

    async def _estimate(self, searches: Sequence[ScopeSearch], fresh: dict[int, list[tuple[str, float]]],
                        now: float, since: float, kind: str | None, symbol: str | None,
                        query_words: set[str]) -> list[Estimate]:
        """Score items met in the indexes without reading them (one round trip): from their rank
        key and their terms (kind, symbol, time, expiry, words)."""
        if not fresh:
            return []
        half_life = self.settings.recall_half_life_s
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for n, met in fresh.items():
                pipe.hmget(searches[n].scope.terms, [item_id for item_id, _ in met])
            answers = await pipe.execute()
        estimates = []
        for (n, met), found in zip(fresh.items(), answers, strict=True):
            for (item_id, key), text in zip(met, found, strict=True):
                terms = Terms.decode(text)
                if terms is None:  # lost or edited by hand: scored from the item itself
                    estimates.append(Estimate(searches[n].scope, item_id, math.inf, -math.inf, math.inf))
                    continue
                if ((kind is not None and terms.kind != kind)
                        or (symbol is not None and terms.symbol != symbol)
                        or terms.timestamp < since or terms.expires_at <= now):
                    continue  # not of the kind / symbol asked for, out of the window, expired
                # decayed score from the rank key; an item stamped in the future scores its score
                value = decayed_bound(key, max(now, terms.timestamp), half_life)
                matched = len(query_words & terms.words)
                estimates.append(Estimate(searches[n].scope, item_id, terms.timestamp,
                                          value * (1 - 1e-9) - 1e-12 + matched,
                                          value * (1 + 1e-9) + 1e-12 + matched))
        return estimates

    async def _verify(self, estimates: list[Estimate], topk: int, kind: str | None, symbol: str | None,
                      since: float, now: float, query_words: set[str]) -> list[tuple[float, MemoryItem]]:
        """Read the candidates best first and score them from their fields, until none left can
        beat the k-th (an item edited by hand or gone meanwhile is skipped)."""
        candidates = sorted(estimates, key=lambda e: (-e.high, -e.timestamp))
        ranked: list[tuple[float, float, MemoryItem]] = []
        start = 0
        while start < len(candidates):
            if len(ranked) >= topk and candidates[start].high < ranked[topk - 1][0]:
                break
            batch = candidates[start: start + max(topk, 8)]
            start += len(batch)
            by_scope: dict[Scope, list[str]] = {}
            for estimate in batch:
                by_scope.setdefault(estimate.scope, []).append(estimate.item_id)
            for scope, ids in by_scope.items():
                rows = await self._fetch(scope, ids, scope.ranks)
                for item_id, fields in zip(ids, rows, strict=True):
                    scored = self._score(item_id, fields, kind, symbol, since, now, query_words)
                    if scored is not None:
                        ranked.append(scored)
            ranked.sort(key=lambda r: (-r[0], -r[1]))
        return [(value, item) for value, _, item in ranked[:topk]]

    def _score(self, item_id: str, fields: dict[str, str], kind: str | None, symbol: str | None,
               since: float, now: float, query_words: set[str]) -> tuple[float, float, MemoryItem] | None:
        """(relevance, timestamp, item) of a stored item that passes the filters, or None (it
        does not, or it was edited by hand into nonsense: skipped, as a full ranking would)."""
        if not fields or not _matches(fields, kind, symbol):
            return None
        timestamp = _timestamp(fields)
        if timestamp is None or timestamp < since:
            return None
        try:
            score = float(fields.get("score", 0))
        except ValueError:
            return None
        built = _build([(item_id, fields)])
        if not built:
            return None
        value = relevance(score, now - timestamp, query_words, fields.get("content", ""),
                          self.settings.recall_half_life_s)
        return value, timestamp, built[0]

    async def _read_pages(self, cursors: Sequence[Cursor], sizes: bool = False
                          ) -> list[list[tuple[str, float]]]:
        """The next page of each cursor, in one round trip (with ``sizes``, their sizes too)."""
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for cursor in cursors:
                key, below, offset, count = cursor.request()
                if sizes:
                    pipe.zcard(key)
                pipe.zrevrangebyscore(key, below, "-inf", start=offset, num=count, withscores=True)
            answers = await pipe.execute()
        if not sizes:
            return list(answers)
        for cursor, size in zip(cursors, answers[0::2], strict=True):
            cursor.left = int(size)
        return list(answers[1::2])

    async def recent(
        self, kind: str | None = None, symbol: str | None = None, n: int = 10
    ) -> list[MemoryItem]:
        """The ``n`` newest items of ``kind`` about ``symbol`` (None: any), ignoring decay,
        newest first: at most ``n`` entries of a time index per scope (more only past items
        that are gone)."""
        since = self.clock() - self.settings.stm_window_s
        newest: dict[str, tuple[float, MemoryItem]] = {}
        for scope in self.scopes(True):
            index = scope.timed_by(kind, symbol)
            start, found = 0, 0
            while found < n:
                async with translate_redis_errors():
                    ids = range_members(await self.redis.zrevrangebyscore(index, "+inf", since,
                                                                          start=start, num=n))
                if not ids:
                    break
                rows = await self._fetch(scope, ids, index)
                for item_id, fields in zip(ids, rows, strict=True):
                    timestamp = _timestamp(fields) if _matches(fields, kind, symbol) else None
                    built = _build([(item_id, fields)]) if fields and timestamp is not None else []
                    if built and timestamp is not None:
                        newest.setdefault(item_id, (timestamp, built[0]))
                        found += 1
                start += sum(1 for fields in rows if fields)  # the gone ones left the index
                if len(ids) < n:
                    break
        ordered = sorted(newest.values(), key=lambda pair: -pair[0])
        return [item for _, item in ordered[:n]]

    async def summarize(self, symbol: str | None = None, lookback_s: float = 86_400) -> dict[str, Any]:
        """Counts by kind and mean score of the items of the last ``lookback_s`` seconds (read a
        page of the time index at a time)."""
        since = self.clock() - lookback_s
        items = [i for i in await self.items()
                 if i.timestamp >= since and (symbol is None or i.symbol == symbol)]
        by_kind: dict[str, int] = {}
        for item in items:
            by_kind[item.kind] = by_kind.get(item.kind, 0) + 1
        mean = sum(i.score for i in items) / len(items) if items else 0.0
        return {"agent_id": self.agent_id, "symbol": symbol, "lookback_s": lookback_s,
                "count": len(items), "by_kind": by_kind, "avg_score": round(mean, 6)}

    # --- removing -----------------------------------------------------------------------------
    async def cleanup(self, min_score: float = 0.1) -> int:
        """Delete this agent's items whose decayed score fell below ``min_score``; return how
        many. Reads only them: the rank index lists items by decayed score."""
        if min_score <= 0:
            return 0
        now, half_life = self.clock(), self.settings.recall_half_life_s
        threshold = math.log2(min_score) + now / half_life
        removed = 0
        while True:
            async with translate_redis_errors():
                ids = range_members(await self.redis.zrangebyscore(self.own.ranks, "-inf", f"({threshold!r}",
                                                                   start=0, num=PAGE))
            if not ids:
                return removed
            rows = await self._fetch(self.own, ids, self.own.ranks)
            doomed = [item_id for item_id, fields in zip(ids, rows, strict=True) if fields]
            await self.purge(self.own, doomed)
            removed += len(doomed)
            if len(ids) < PAGE:
                return removed

    async def purge_expired(self, scope: Scope | None = None) -> int:
        """Remove the index entries of items that expired (a bounded batch per round trip) from
        ``scope`` (default: this agent's own); return how many."""
        scope = scope or self.own
        purged = 0
        while True:
            async with translate_redis_errors():
                ids = range_members(await self.redis.zrangebyscore(scope.expiry, "-inf", self.clock(),
                                                                   start=0, num=PURGE_BATCH))
            if not ids:
                return purged
            await self.purge(scope, ids)
            purged += len(ids)
            if len(ids) < PURGE_BATCH:
                return purged

    async def purge(self, scope: Scope, ids: Sequence[str], also: Sequence[str] = ()) -> None:
        """Delete items (this scope's copies) and every index entry of theirs (found through the
        terms hash), in one transaction in the scope's slot; ``also``: indexes of the scope to
        remove them from even when their terms were lost."""
        if not ids:
            return
        async with translate_redis_errors():
            terms = await self.redis.hmget(scope.terms, list(ids))
            pipe = self.redis.pipeline(transaction=True)
            for item_id, text in zip(ids, terms, strict=True):
                decoded = Terms.decode(text)
                indexes = [scope.times, scope.ranks, scope.expiry, *also]
                if decoded is not None:
                    ranked, timed = scope.index_keys(decoded.kind, decoded.symbol, decoded.words)
                    indexes += ranked + timed
                for index in dict.fromkeys(indexes):
                    pipe.zrem(index, item_id)
                pipe.hdel(scope.terms, item_id)
                pipe.delete(scope.item(item_id))
            await pipe.execute()
