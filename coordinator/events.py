"""Episodic memory (seed 002): timestamped events per agent in a bounded Redis stream.

The stream entry id carries the time, so a time range is an ``XREVRANGE`` range. Each event
is also added, with the same id, to a stream of its type, so a query by type reads only that
type's events. A query reads a page at a time, newest first, until it has ``limit``.
"""

from __future__ import annotations

import json
from typing import Any

from coordinator.connection import Redis, translate_redis_errors
from coordinator.errors import InvalidInput
from coordinator.keys import Keys, check_signal_type
from coordinator.scoring import words
from coordinator.settings import Settings

# KEYS: 1 the agent's events, 2 its events of this type. ARGV: 1 maxlen, 2 type, 3 payload.
RECORD = r"""
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'type', ARGV[2], 'payload', ARGV[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], id, 'type', ARGV[2], 'payload', ARGV[3])
return id
"""
PAGE = 200


class EpisodicLog:
    """Records and queries an agent's episodic events."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self._record = redis.register_script(RECORD)

    async def record(self, agent_id: str, event_type: str, payload: dict[str, Any]) -> str:
        """Append an event; return its entry id (``<ms>-<seq>``). Raises InvalidInput."""
        check_signal_type(event_type)
        body = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        if len(body) > self.settings.max_payload_bytes:
            raise InvalidInput(f"event payload is {len(body)} bytes; the limit is "
                               f"{self.settings.max_payload_bytes}")
        async with translate_redis_errors():
            return str(await self._record(
                keys=[self.keys.events(agent_id), self.keys.events(agent_id, event_type)],
                args=[self.settings.events_maxlen, event_type, body]))

    async def query(
        self, agent_id: str, *, event_type: str | None = None, since: float | None = None,
        until: float | None = None, word: str | None = None, limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Events newest first: ``{id, at, type, payload}``, filtered by type, time and a word."""
        hi = f"{int(until * 1000)}" if until is not None else "+"
        lo = f"{int(since * 1000)}" if since is not None else "-"
        wanted = words(word) if word else set()
        stream = self.keys.events(agent_id, event_type)
        found: list[dict[str, Any]] = []
        while len(found) < limit:
            async with translate_redis_errors():
                entries = await self.redis.xrevrange(stream, hi, lo, count=PAGE)
            for entry_id, fields in entries:
                if event_type and fields.get("type") != event_type:
                    continue
                if wanted and not wanted <= words(fields.get("payload", "")):
                    continue
                try:
                    payload = json.loads(fields.get("payload") or "{}")
                except ValueError:
                    payload = {"unreadable": fields.get("payload")}  # edited by hand
                found.append({"id": entry_id, "at": int(entry_id.split("-")[0]) / 1000,
                              "type": fields.get("type"), "payload": payload})
                if len(found) >= limit:
                    break
            if len(entries) < PAGE:
                break
            hi = "(" + entries[-1][0]  # the next page starts below the last entry read
        return found
