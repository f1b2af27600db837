"""Retention: keep Redis bounded without losing anything silently.

* **Signal streams** are trimmed by age: an inbox entry older than the signal TTL that its
  agent has not settled (still pending, or never delivered) is first marked EXPIRED, written
  to the agent's dead-letter stream with the reason, and acked, in the same script call that
  trims it (:data:`hivebus.infra.lua.EXPIRE`, a bounded batch per call). The signal log is
  trimmed by the same age. (Agents trim their settled entries past ``HIVEBUS_INBOX_RETAIN``
  as they settle; nothing unsettled is ever trimmed.)
* **Dead agents** (no live replica, status ``dead``, unseen for the grace period) leave
  the registry and their subscriptions. Stopped agents stay: their signals wait for them.
  Registrations and removals cut short are completed first (:meth:`Registry.repair`).
* **Short-term memory**: the index entries of items that expired are purged (each agent's
  own and shared scopes, a bounded batch per round trip), and, with
  ``HIVEBUS_STM_CLEANUP_MIN_SCORE`` > 0, items whose decayed score fell below it are removed.
"""

from __future__ import annotations

from dataclasses import dataclass

from hivebus.bus.bus import DLQ_MAXLEN
from hivebus.bus.registry import Registry
from hivebus.domain.clock import now_s
from hivebus.domain.errors import RedisUnavailable
from hivebus.domain.keys import Keys, check_agent_id
from hivebus.infra.logs import get_logger
from hivebus.infra.lua import EXPIRE
from hivebus.infra.redis_errors import Redis, text_set, translate_redis_errors
from hivebus.memory.stm import ShortTermMemory
from hivebus.service.set_aside import SetAside
from hivebus.settings import Settings

BATCH = 500


@dataclass
class RetentionResult:
    """What one retention pass removed."""

    expired: int = 0
    trimmed: int = 0
    agents_removed: int = 0
    memories_removed: int = 0
    memories_purged: int = 0
    registry_repaired: int = 0


class Retention:
    """Runs the retention steps."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self.registry = Registry(redis, settings)
        self._expire = redis.register_script(EXPIRE)

    async def run(self) -> RetentionResult:
        """One pass over streams, registry and memory."""
        result = RetentionResult()
        cutoff_ms = int((now_s() - self.settings.signal_ttl_s) * 1000)
        async with translate_redis_errors():
            members = sorted(text_set(await self.redis.smembers(self.keys.agents())))
        agents = await SetAside(self.redis, self.keys).valid(self.keys.agents(), members, check_agent_id,
                                                             "an agent id")
        async with translate_redis_errors():
            for agent_id in agents:
                try:
                    await self._expire_inbox(agent_id, cutoff_ms, result)
                except RedisUnavailable as exc:
                    if "BAD_KEY" not in str(exc) and "NOGROUP" not in str(exc):
                        raise
                    get_logger().warning("retention skipped an inbox", agent_id=agent_id, error=str(exc))
            for log in self.keys.signal_logs():
                result.trimmed += int(await self.redis.xtrim(log, minid=cutoff_ms, approximate=False))
        result.registry_repaired = await self.registry.repair()
        await self._remove_dead_agents(result)
        purged: set[str] = set()
        for agent_id in agents:
            memory = ShortTermMemory(self.redis, self.settings, agent_id)
            for scope in memory.scopes():
                if scope.prefix not in purged:  # the everyone scope is every agent's
                    purged.add(scope.prefix)
                    result.memories_purged += await memory.purge_expired(scope)
            if self.settings.stm_cleanup_min_score > 0:
                result.memories_removed += await memory.cleanup(self.settings.stm_cleanup_min_score)
        return result

    async def _expire_inbox(self, agent_id: str, cutoff_ms: int, result: RetentionResult) -> None:
        """Expire and trim an inbox's entries older than the signal TTL, one bounded batch per
        script call: the unsettled ones are marked EXPIRED and dead-lettered first."""
        keys = [self.keys.inbox(agent_id), self.keys.pending(agent_id), self.keys.done(agent_id),
                self.keys.status(agent_id), self.keys.dead_letters(agent_id), self.keys.agent(agent_id)]
        while True:
            now_ms = int(now_s() * 1000)
            looked, expired, _last = await self._expire(
                keys=keys, args=[agent_id, "-", cutoff_ms, BATCH, now_ms,
                                 now_ms + self.settings.ledger_ttl_ms, DLQ_MAXLEN])
            result.expired += int(expired)
            result.trimmed += int(looked)
            if int(looked) < BATCH:
                return

    async def _remove_dead_agents(self, result: RetentionResult) -> None:
        horizon = now_s() - self.settings.dead_agent_grace_s
        for info in await self.registry.list_agents():
            if info.status != "dead" or info.alive or (info.last_seen or 0) > horizon:
                continue
            await self.registry.unregister(info.agent_id, info.subscriptions)
            result.agents_removed += 1
