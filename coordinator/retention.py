"""Retention: keep Redis bounded without losing anything silently.

* **Signal streams** are trimmed by age (``XTRIM MINID``): an inbox entry older than the
  signal TTL that its agent has not processed (still pending, or never delivered) is
  first marked EXPIRED in that target's status, written to the agent's dead-letter
  stream with the reason, and acked. The signal log is trimmed by the same age.
* **Dead agents** (no live replica, status ``dead``, unseen for the grace period) leave
  the registry and their subscriptions. Stopped agents stay: their signals wait for them.
* **Short-term memory** is cleaned of items whose decayed score fell below
  ``HIVEBUS_STM_CLEANUP_MIN_SCORE`` (off when 0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from coordinator.connection import Redis, translate_redis_errors
from coordinator.errors import HivebusError
from coordinator.keys import Keys
from coordinator.memory import ShortTermMemory
from coordinator.models import now_s
from coordinator.registry import Registry
from coordinator.settings import Settings

BATCH = 1000

# HSET only on an existing hash, so an expired signal hash is not recreated without a TTL.
MARK_EXPIRED = r"""
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'status:' .. ARGV[1], 'EXPIRED') end
return 0
"""


@dataclass
class RetentionResult:
    """What one retention pass removed."""

    expired: int = 0
    trimmed: int = 0
    agents_removed: int = 0
    memories_removed: int = 0


def _entry_ms(entry_id: str) -> int:
    return int(entry_id.split("-")[0])


def _after(a: str, b: str) -> bool:
    """Whether stream id ``a`` comes after ``b``."""
    ams, _, aseq = a.partition("-")
    bms, _, bseq = b.partition("-")
    return (int(ams), int(aseq or 0)) > (int(bms), int(bseq or 0))


class Retention:
    """Runs the retention steps."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self.registry = Registry(redis, settings)
        self._mark = redis.register_script(MARK_EXPIRED)

    async def run(self) -> RetentionResult:
        """One pass over streams, registry and memory."""
        result = RetentionResult()
        cutoff_ms = int((now_s() - self.settings.signal_ttl_s) * 1000)
        async with translate_redis_errors():
            agents = sorted(await self.redis.smembers(self.keys.agents()))
            for agent_id in agents:
                await self._expire_inbox(agent_id, cutoff_ms, result)
            log = self.keys.signal_log()
            result.trimmed += int(await self.redis.xtrim(log, minid=cutoff_ms, approximate=False))
        await self._remove_dead_agents(result)
        if self.settings.stm_cleanup_min_score > 0:
            for agent_id in agents:
                memory = ShortTermMemory(self.redis, self.settings, agent_id)
                result.memories_removed += await memory.cleanup(self.settings.stm_cleanup_min_score)
        return result

    async def _expire_inbox(self, agent_id: str, cutoff_ms: int, result: RetentionResult) -> None:
        inbox = self.keys.inbox(agent_id)
        if not await self.redis.exists(inbox):
            return
        groups = {g["name"]: g for g in await self.redis.xinfo_groups(inbox)}
        last_delivered = str(groups[agent_id]["last-delivered-id"]) if agent_id in groups else "0-0"
        start = "-"
        while True:
            entries = await self.redis.xrange(inbox, start, cutoff_ms, count=BATCH)
            if not entries:
                break
            pending = set()
            if agent_id in groups:
                rows = await self.redis.xpending_range(inbox, agent_id, entries[0][0], entries[-1][0],
                                                       len(entries))
                pending = {str(r["message_id"]) for r in rows}
            pipe = self.redis.pipeline(transaction=True)
            for entry_id, fields in entries:
                if entry_id in pending or _after(entry_id, last_delivered):
                    signal_id = fields.get("id", "")
                    reason = "expired before it was processed"
                    pipe.xadd(self.keys.dead_letters(agent_id),
                              {"entry": entry_id, "agent": agent_id, "reason": reason,
                               "failed_at": f"{now_s():.6f}", "original": json.dumps(fields)},
                              maxlen=100_000, approximate=True)
                    if signal_id:
                        await self._mark_expired(pipe, signal_id, agent_id)
                    if entry_id in pending:
                        pipe.xack(inbox, agent_id, entry_id)
                    pipe.hincrby(self.keys.agent(agent_id), "expired", 1)
                    result.expired += 1
            await pipe.execute()
            start = f"({entries[-1][0]}"
            if len(entries) < BATCH:
                break
        result.trimmed += int(await self.redis.xtrim(inbox, minid=cutoff_ms, approximate=False))

    async def _mark_expired(self, pipe: object, signal_id: str, agent_id: str) -> None:
        try:
            key = self.keys.signal(signal_id)
        except HivebusError:  # a hand-written entry with a bad id: the DLQ entry is the record
            return
        await self._mark(keys=[key], args=[agent_id], client=pipe)

    async def _remove_dead_agents(self, result: RetentionResult) -> None:
        horizon = now_s() - self.settings.dead_agent_grace_s
        for info in await self.registry.list_agents():
            if info.status != "dead" or info.alive or (info.last_seen or 0) > horizon:
                continue
            async with translate_redis_errors():
                pipe = self.redis.pipeline(transaction=True)
                pipe.srem(self.keys.agents(), info.agent_id)
                for signal_type in info.subscriptions:
                    pipe.srem(self.keys.subscribers(signal_type), info.agent_id)
                pipe.delete(self.keys.agent(info.agent_id), self.keys.instances(info.agent_id))
                await pipe.execute()
            result.agents_removed += 1
