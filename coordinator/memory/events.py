"""Episodic memory (seed 002): timestamped events per agent in a bounded Redis stream.

The stream entry id carries the time, so a time range is an ``XREVRANGE`` range. Each event
is also added, with the same id, to a stream of its type, so a query by type reads only that
type's events; and each word of its payload is indexed (``events:{<agent>}:words``, a sorted
set read by lexical range: ``<word> \\x1f <ms>-<seq>``, both zero-padded, so one word's events
sort by time), so a query by word reads only the events holding its rarest word. An event
with more than ``MAX_WORDS`` distinct words is indexed under the empty word instead, and a
word query reads those too. Index entries of events the stream has trimmed are removed as
events are recorded (``events:{<agent>}:words:time`` finds them). Every query reads a page
at a time, newest first, until it has ``limit``.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from hivebus.domain.errors import InvalidInput
from hivebus.domain.keys import Keys, check_signal_type
from hivebus.domain.scoring import words
from hivebus.infra.lua import RECORD
from hivebus.infra.redis_errors import Redis, stream_entries, texts, translate_redis_errors
from hivebus.settings import Settings

PAGE = 200
MAX_WORDS = 256  # distinct payload words indexed per event; more: indexed as "too many"
SEPARATOR = "\x1f"


def _padded(ms: int, seq: int) -> str:
    return f"{ms:015d}-{seq:010d}"


def _entry_id(member: str) -> str:
    ms, _, seq = member.rsplit(SEPARATOR, 1)[1].partition("-")
    return f"{int(ms)}-{int(seq)}"


class EpisodicLog:
    """Records and queries an agent's episodic events."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self._record = redis.register_script(RECORD)

    def _word_index(self, agent_id: str) -> tuple[str, str]:
        events = self.keys.events(agent_id)
        return f"{events}:words", f"{events}:words:time"

    async def record(self, agent_id: str, event_type: str, payload: dict[str, Any]) -> str:
        """Append an event; return its entry id (``<ms>-<seq>``). Raises InvalidInput."""
        check_signal_type(event_type)
        body = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        if len(body) > self.settings.max_payload_bytes:
            raise InvalidInput(f"event payload is {len(body)} bytes; the limit is "
                               f"{self.settings.max_payload_bytes}")
        found = sorted(words(body))
        indexed = found if len(found) <= MAX_WORDS else [""]
        async with translate_redis_errors():
            return str(await self._record(
                keys=[self.keys.events(agent_id), self.keys.events(agent_id, event_type),
                      *self._word_index(agent_id)],
                args=[self.settings.events_maxlen, event_type, body, *indexed]))

    async def query(
        self, agent_id: str, *, event_type: str | None = None, since: float | None = None,
        until: float | None = None, word: str | None = None, limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Events newest first: ``{id, at, type, payload}``, filtered by type, time and words
        (all of the words of ``word`` in the payload)."""
        wanted = words(word) if word else set()
        stream = self.keys.events(agent_id, event_type)
        found: list[dict[str, Any]] = []
        if limit <= 0:
            return found
        async with translate_redis_errors():
            indexed = wanted and await self.redis.exists(self._word_index(agent_id)[0])
            if indexed and event_type and not await self.redis.exists(stream):
                return found  # no event of that type: nothing to read
        if indexed:
            batches = self._by_word(agent_id, wanted, since, until)
        else:
            batches = self._by_time(stream, since, until)
        async for entries in batches:
            for entry_id, fields in entries:
                if event_type and fields.get("type") != event_type:
                    continue
                if wanted and not wanted <= words(fields.get("payload", "")):
                    continue
                found.append(_event(entry_id, fields))
                if len(found) >= limit:
                    return found
        return found

    async def _by_time(self, stream: str, since: float | None,
                       until: float | None) -> AsyncIterator[list[tuple[str, dict[str, str]]]]:
        """Pages of a stream's entries, newest first."""
        hi = f"{int(until * 1000)}" if until is not None else "+"
        lo = f"{int(since * 1000)}" if since is not None else "-"
        while True:
            async with translate_redis_errors():
                page = stream_entries(await self.redis.xrevrange(stream, hi, lo, count=PAGE))
            yield [(str(i), f) for i, f in page]
            if len(page) < PAGE:
                return
            hi = "(" + page[-1][0]  # the next page starts below the last entry read

    async def _by_word(self, agent_id: str, wanted: set[str], since: float | None,
                       until: float | None) -> AsyncIterator[list[tuple[str, dict[str, str]]]]:
        """Pages of the events indexed under the rarest wanted word (and of those with too many
        words to index), newest first."""
        index, _ = self._word_index(agent_id)
        low = _padded(int(since * 1000), 0) if since is not None else ""
        high = _padded(int(until * 1000), 9_999_999_999) if until is not None else "\x7f"
        ordered = sorted(wanted)
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for w in ordered:
                pipe.zlexcount(index, f"[{w}{SEPARATOR}{low}", f"[{w}{SEPARATOR}{high}")
            counts = await pipe.execute()
        rarest = min(zip(counts, ordered, strict=True))[1]
        lists = [self._members(index, rarest, low, high), self._members(index, "", low, high)]
        stream = self.keys.events(agent_id)
        batch: list[str] = []
        async for entry_id in _newest_first(lists):
            batch.append(entry_id)
            if len(batch) >= PAGE:
                yield await self._entries(stream, batch)
                batch = []
        if batch:
            yield await self._entries(stream, batch)

    async def _members(self, index: str, word: str, low: str, high: str) -> AsyncIterator[str]:
        """Entry ids indexed under ``word`` between ``low`` and ``high``, newest first."""
        top = f"[{word}{SEPARATOR}{high}"
        while True:
            async with translate_redis_errors():
                members = texts(await self.redis.zrevrangebylex(index, top, f"[{word}{SEPARATOR}{low}",
                                                                start=0, num=PAGE))
            for member in members:
                yield _entry_id(member)
            if len(members) < PAGE:
                return
            top = f"({members[-1]}"

    async def _entries(self, stream: str, ids: Sequence[str]) -> list[tuple[str, dict[str, str]]]:
        """The entries of ``ids`` still in the stream, in the order given."""
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for entry_id in ids:
                pipe.xrange(stream, entry_id, entry_id)
            replies = await pipe.execute()
        return [(str(reply[0][0]), reply[0][1]) for reply in replies if reply]


async def _newest_first(lists: Sequence[AsyncIterator[str]]) -> AsyncIterator[str]:
    """Merge iterators of entry ids, each newest first, into one (without repeats)."""
    heads: list[tuple[tuple[int, int], int, str]] = []
    for n, source in enumerate(lists):
        first = await anext(source, None)
        if first is not None:
            heapq.heappush(heads, (_descending(first), n, first))
    last = None
    while heads:
        _, n, entry_id = heapq.heappop(heads)
        if entry_id != last:
            yield entry_id
            last = entry_id
        following = await anext(lists[n], None)
        if following is not None:
            heapq.heappush(heads, (_descending(following), n, following))


def _descending(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return -int(ms), -int(seq or 0)


def _event(entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    try:
        payload = json.loads(fields.get("payload") or "{}")
    except ValueError:
        payload = {"unreadable": fields.get("payload")}  # edited by hand
    return {"id": entry_id, "at": int(entry_id.split("-")[0]) / 1000, "type": fields.get("type"),
            "payload": payload}
