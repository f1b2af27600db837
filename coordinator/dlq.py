"""Dead letters: list, show, replay (back into the agent's inbox, status reset), purge."""

from __future__ import annotations

import json
from typing import Any

from coordinator.connection import Redis, translate_redis_errors
from coordinator.errors import HivebusError, NotFound
from coordinator.keys import Keys, check_agent_id
from coordinator.settings import Settings

# KEYS: 1 dead-letter stream, 2 inbox, 3 signal hash (or the inbox again), 4 ledger (or inbox)
# ARGV: 1 dead-letter entry id, 2 agent id, 3 has signal hash (1/0), then the original field pairs
REPLAY = r"""
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return redis.error_reply('NO_ENTRY') end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
local entry = redis.call('XADD', KEYS[2], '*', unpack(fields))
if ARGV[3] == '1' then
  if redis.call('EXISTS', KEYS[3]) == 1 then
    redis.call('HSET', KEYS[3], 'status:' .. ARGV[2], 'PENDING', 'entry:' .. ARGV[2], entry)
    redis.call('HDEL', KEYS[3], 'error:' .. ARGV[2], 'attempts:' .. ARGV[2])
  end
  redis.call('DEL', KEYS[4])
end
redis.call('XDEL', KEYS[1], ARGV[1])
return entry
"""


class DeadLetters:
    """One namespace's dead-letter streams."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.keys = Keys(settings.namespace)
        self._replay = redis.register_script(REPLAY)

    async def list(self, agent_id: str, count: int = 100) -> list[dict[str, Any]]:
        """The newest dead letters of an agent, newest first."""
        async with translate_redis_errors():
            entries = await self.redis.xrevrange(self.keys.dead_letters(check_agent_id(agent_id)),
                                                 count=count)
        return [{"dlq_entry": entry_id, **fields} for entry_id, fields in entries]

    async def show(self, agent_id: str, dlq_entry: str) -> dict[str, Any]:
        """One dead letter with its original fields decoded. Raises NotFound."""
        async with translate_redis_errors():
            found = await self.redis.xrange(self.keys.dead_letters(check_agent_id(agent_id)),
                                            dlq_entry, dlq_entry)
        if not found:
            raise NotFound(f"agent {agent_id!r} has no dead letter {dlq_entry!r}")
        entry_id, fields = found[0]
        return {"dlq_entry": entry_id, **fields, "original": json.loads(fields.get("original") or "{}")}

    async def replay(self, agent_id: str, dlq_entry: str) -> str:
        """Put a dead letter back into the agent's inbox, status PENDING; return the new entry id."""
        letter = await self.show(agent_id, dlq_entry)
        original: dict[str, str] = {str(k): str(v) for k, v in letter["original"].items()}
        if not original:
            raise NotFound(f"dead letter {dlq_entry!r} has no original entry to replay")
        inbox = self.keys.inbox(agent_id)
        signal_key = ledger = inbox
        has_hash = 0
        try:
            signal_key = self.keys.signal(original.get("id", ""))
            ledger = self.keys.ledger(agent_id, original["id"])
            has_hash = 1
        except HivebusError:
            pass  # a malformed entry goes back as it was
        flat = [x for pair in original.items() for x in pair]
        async with translate_redis_errors():
            return str(await self._replay(keys=[self.keys.dead_letters(agent_id), inbox, signal_key, ledger],
                                          args=[dlq_entry, agent_id, has_hash, *flat]))

    async def purge(self, agent_id: str, dlq_entry: str | None = None) -> int:
        """Delete one dead letter, or all of an agent's; return how many were deleted."""
        key = self.keys.dead_letters(check_agent_id(agent_id))
        async with translate_redis_errors():
            if dlq_entry is None:
                count = int(await self.redis.xlen(key))
                await self.redis.delete(key)
                return count
            return int(await self.redis.xdel(key, dlq_entry))
