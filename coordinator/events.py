"""Episodic memory (seed 002): timestamped events per agent in a bounded Redis stream.

The stream entry id carries the time, so a time-range query is one ``XREVRANGE``.
"""

from __future__ import annotations

import json
from typing import Any

from coordinator.connection import Redis, translate_redis_errors
from coordinator.errors import InvalidInput
from coordinator.keys import Keys, check_signal_type
from coordinator.scoring import words
from coordinator.settings import Settings


class EpisodicLog:
    """Records and queries an agent's episodic events."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.namespace)

    async def record(self, agent_id: str, event_type: str, payload: dict[str, Any]) -> str:
        """Append an event; return its entry id (``<ms>-<seq>``). Raises InvalidInput."""
        check_signal_type(event_type)
        body = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        if len(body) > self.settings.max_payload_bytes:
            raise InvalidInput(f"event payload is {len(body)} bytes; the limit is "
                               f"{self.settings.max_payload_bytes}")
        async with translate_redis_errors():
            return str(await self.redis.xadd(
                self.keys.events(agent_id), {"type": event_type, "payload": body},
                maxlen=self.settings.events_maxlen, approximate=True))

    async def query(
        self, agent_id: str, *, event_type: str | None = None, since: float | None = None,
        until: float | None = None, word: str | None = None, limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Events newest first: ``{id, at, type, payload}``, filtered by type, time and a word."""
        hi = f"{int(until * 1000)}" if until is not None else "+"
        lo = f"{int(since * 1000)}" if since is not None else "-"
        wanted = words(word) if word else set()
        async with translate_redis_errors():
            entries = await self.redis.xrevrange(self.keys.events(agent_id), hi, lo)
        found = []
        for entry_id, fields in entries:
            if event_type and fields.get("type") != event_type:
                continue
            if wanted and not wanted <= words(fields.get("payload", "")):
                continue
            found.append({"id": entry_id, "at": int(entry_id.split("-")[0]) / 1000,
                          "type": fields.get("type"), "payload": json.loads(fields.get("payload") or "{}")})
            if len(found) >= limit:
                break
        return found
