"""Short-term (working) memory in Redis: items that expire, recalled by importance * decay + keywords.

Each item is a hash with its own key-level TTL (``EXPIRE``, so it works on Redis
6.2), indexed by time in a sorted set per agent. Reading many items is one
``ZRANGEBYSCORE`` plus one pipelined batch of ``HGETALL`` — one round trip, never
one key at a time. Index entries of items that expired are pruned as they are met.
Items are private to their agent unless written to the shared scope with a list of
agents (or ``*``) that may read them. The ranking rule is in :mod:`coordinator.scoring`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coordinator.connection import Redis, translate_redis_errors
from coordinator.errors import InvalidInput
from coordinator.ids import new_id
from coordinator.keys import Keys, check_agent_id
from coordinator.models import describe_validation_error, now_s
from coordinator.scoring import relevance, words
from coordinator.settings import Settings

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

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return self.model_dump(mode="json")


Row = tuple[str, dict[str, str]]  # an item id and its stored fields, not yet decoded


def _dated(rows: Iterable[Row], kind: str | None, symbol: str | None) -> list[tuple[float, Row]]:
    """The rows of ``kind`` about ``symbol`` (None: any) with their timestamps; a row whose
    timestamp is unreadable is skipped, as :func:`_build` would skip it."""
    dated = []
    for row in rows:
        fields = row[1]
        if (kind is None or fields.get("kind") == kind) and (
                symbol is None or fields.get("symbol") == symbol):
            try:
                dated.append((float(fields["timestamp"]), row))
            except (KeyError, ValueError):
                continue
    return dated


def _build(rows: Iterable[Row]) -> list[MemoryItem]:
    """Decode stored items; one edited by hand into nonsense is skipped, not fatal."""
    items = []
    for item_id, fields in rows:
        try:
            items.append(MemoryItem.from_fields(item_id, fields))
        except (KeyError, ValueError, ValidationError):
            continue
    return items


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
        if visible:
            key, index = self.keys.shared_item(item.item_id), self.keys.shared_index()
        else:
            key = self.keys.memory_item(self.agent_id, item.item_id)
            index = self.keys.memory_index(self.agent_id)
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=True)
            pipe.hset(key, mapping=item.to_fields())
            pipe.pexpire(key, int(ttl * 1000))
            pipe.zadd(index, {item.item_id: item.timestamp})
            pipe.zremrangebyscore(index, "-inf", item.timestamp - self.settings.stm_window_s)
            await pipe.execute()
        return item.item_id

    async def items(self, *, include_shared: bool = True) -> list[MemoryItem]:
        """Every live item this agent may read: its own, plus shared ones visible to it."""
        return _build(await self._rows(include_shared))

    async def _rows(self, include_shared: bool) -> list[Row]:
        """The stored fields of every live item this agent may read (decoded lazily: building
        10,000 models to return the best 5 was most of a recall's time)."""
        own = await self._load(self.keys.memory_index(self.agent_id),
                               self.keys.memory_item_prefix(self.agent_id))
        if not include_shared:
            return own
        shared = await self._load(self.keys.shared_index(), self.keys.shared_item_prefix())
        visible = []
        for row in shared:
            readers = row[1].get("visible_to", "").split(",")
            if row[1].get("owner") == self.agent_id or EVERYONE in readers or self.agent_id in readers:
                visible.append(row)
        return own + visible

    async def _load(self, index: str, item_prefix: str) -> list[Row]:
        since = self.clock() - self.settings.stm_window_s
        async with translate_redis_errors():
            ids = await self.redis.zrangebyscore(index, since, "+inf")
            if not ids:
                return []
            pipe = self.redis.pipeline(transaction=False)
            for item_id in ids:
                pipe.hgetall(item_prefix + item_id)
            rows = await pipe.execute()
            gone = [item_id for item_id, fields in zip(ids, rows, strict=True) if not fields]
            if gone:
                await self.redis.zrem(index, *gone)
        return [(item_id, fields) for item_id, fields in zip(ids, rows, strict=True) if fields]

    async def recall(
        self, query: str = "", *, kind: str | None = None, symbol: str | None = None,
        topk: int = 5, include_shared: bool = True,
    ) -> list[tuple[float, MemoryItem]]:
        """The ``topk`` most relevant items (relevance, item), best first."""
        now, query_words = self.clock(), words(query)
        ranked: list[tuple[float, float, Row]] = []
        for timestamp, row in _dated(await self._rows(include_shared), kind, symbol):
            try:
                score = float(row[1].get("score", 0))
            except ValueError:
                continue  # edited by hand into nonsense: skipped, as _build would
            ranked.append((relevance(score, now - timestamp, query_words, row[1].get("content", ""),
                                     self.settings.recall_half_life_s), timestamp, row))
        ranked.sort(key=lambda r: (-r[0], -r[1]))
        best: list[tuple[float, MemoryItem]] = []
        for value, _timestamp, row in ranked:
            best += [(value, item) for item in _build([row])]
            if len(best) >= topk:
                break
        return best

    async def recent(
        self, kind: str | None = None, symbol: str | None = None, n: int = 10
    ) -> list[MemoryItem]:
        """The ``n`` newest items, ignoring decay, newest first."""
        dated = sorted(_dated(await self._rows(True), kind, symbol), key=lambda pair: -pair[0])
        newest: list[MemoryItem] = []
        for _timestamp, row in dated:
            newest += _build([row])
            if len(newest) >= n:
                break
        return newest

    async def summarize(self, symbol: str | None = None, lookback_s: float = 86_400) -> dict[str, Any]:
        """Counts by kind and mean score of the items of the last ``lookback_s`` seconds."""
        since = self.clock() - lookback_s
        items = [i for i in await self.items()
                 if i.timestamp >= since and (symbol is None or i.symbol == symbol)]
        by_kind: dict[str, int] = {}
        for item in items:
            by_kind[item.kind] = by_kind.get(item.kind, 0) + 1
        mean = sum(i.score for i in items) / len(items) if items else 0.0
        return {"agent_id": self.agent_id, "symbol": symbol, "lookback_s": lookback_s,
                "count": len(items), "by_kind": by_kind, "avg_score": round(mean, 6)}

    async def cleanup(self, min_score: float = 0.1) -> int:
        """Delete this agent's items whose decayed score fell below ``min_score``; return how many."""
        now = self.clock()
        doomed = [
            i for i in await self.items(include_shared=False)
            if relevance(i.score, now - i.timestamp, set(), "", self.settings.recall_half_life_s)
            < min_score
        ]
        if not doomed:
            return 0
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=True)
            pipe.delete(*(self.keys.memory_item(self.agent_id, i.item_id) for i in doomed))
            pipe.zrem(self.keys.memory_index(self.agent_id), *(i.item_id for i in doomed))
            await pipe.execute()
        return len(doomed)
