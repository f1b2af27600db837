"""Dead letters: list, show, replay (back into the agent's inbox, status reset), purge."""

from __future__ import annotations

import json
from typing import Any

from hivebus.domain.errors import HivebusError, NotFound
from hivebus.domain.keys import Keys, check_agent_id, check_signal_id
from hivebus.infra.lua import REPLAY
from hivebus.infra.redis_errors import Redis, stream_entries, translate_redis_errors
from hivebus.settings import Settings


class DeadLetters:
    """One namespace's dead-letter streams."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.keys = Keys(settings.namespace)
        self._replay = redis.register_script(REPLAY)

    async def list(self, agent_id: str, count: int = 100) -> list[dict[str, Any]]:
        """The newest dead letters of an agent, newest first."""
        async with translate_redis_errors():
            letters = stream_entries(await self.redis.xrevrange(
                self.keys.dead_letters(check_agent_id(agent_id)), count=count))
        return [{"dlq_entry": entry_id, **fields} for entry_id, fields in letters]

    async def show(self, agent_id: str, dlq_entry: str) -> dict[str, Any]:
        """One dead letter with its original fields decoded. Raises NotFound."""
        async with translate_redis_errors():
            found = stream_entries(await self.redis.xrange(
                self.keys.dead_letters(check_agent_id(agent_id)), dlq_entry, dlq_entry))
        if not found:
            raise NotFound(f"agent {agent_id!r} has no dead letter {dlq_entry!r}")
        entry_id, fields = found[0]
        try:
            original = json.loads(fields.get("original") or "{}")
        except ValueError:
            original = fields.get("original")  # edited by hand: shown as it is
        return {"dlq_entry": entry_id, **fields, "original": original if isinstance(original, dict) else {}}

    async def replay(self, agent_id: str, dlq_entry: str) -> str:
        """Put a dead letter back into the agent's inbox, status PENDING; return the new entry id."""
        letter = await self.show(agent_id, dlq_entry)
        original: dict[str, str] = {str(k): str(v) for k, v in letter["original"].items()}
        if not original:
            raise NotFound(f"dead letter {dlq_entry!r} has no original entry to replay")
        signal_id = original.get("id", "")
        try:
            check_signal_id(signal_id)
        except HivebusError:
            signal_id = ""  # a malformed entry goes back as it was
        flat = [x for pair in original.items() for x in pair]
        keys = [self.keys.dead_letters(agent_id), self.keys.inbox(agent_id), self.keys.pending(agent_id),
                self.keys.done(agent_id), self.keys.status(agent_id)]
        async with translate_redis_errors():
            return str(await self._replay(keys=keys, args=[dlq_entry, signal_id, *flat]))

    async def purge(self, agent_id: str, dlq_entry: str | None = None) -> int:
        """Delete one dead letter, or all of an agent's; return how many were deleted."""
        key = self.keys.dead_letters(check_agent_id(agent_id))
        async with translate_redis_errors():
            if dlq_entry is None:
                count = int(await self.redis.xlen(key))
                await self.redis.delete(key)
                return count
            return int(await self.redis.xdel(key, dlq_entry))
