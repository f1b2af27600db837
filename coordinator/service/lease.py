"""Leadership among coordinators: a lease in Redis with a fencing epoch.

The lease key holds ``<instance>|<epoch>`` with a TTL. Taking a free lease bumps the
epoch counter, so every new leader gets a larger epoch than any before it — and above
the highest epoch the durable store has seen, which the taker passes in: a Redis that
started over (its counter back at 0) does not lock the coordinators out of a store that
remembers epoch 4. The store refuses writes carrying an older epoch, and Redis-side
deletions check the lease value in the same script, so a deposed leader's late writes
are refused.
"""

from __future__ import annotations

from hivebus.domain.keys import Keys
from hivebus.infra.lua import ACQUIRE, RELEASE
from hivebus.infra.redis_errors import Redis, translate_redis_errors
from hivebus.settings import Settings


class Lease:
    """One coordinator's view of the leadership lease."""

    def __init__(self, redis: Redis, settings: Settings, instance_id: str) -> None:
        self.redis = redis
        self.keys = Keys(settings.namespace)
        self.instance_id = instance_id
        self.ttl_ms = int(settings.lease_ttl_s * 1000)
        self.epoch = 0
        self._acquire = redis.register_script(ACQUIRE)
        self._release = redis.register_script(RELEASE)

    @property
    def token(self) -> str:
        """The lease value this instance writes while it leads."""
        return f"{self.instance_id}|{self.epoch}"

    async def try_lead(self, floor: int = 0) -> int:
        """Take or renew the lease; return this instance's epoch, or 0 if another one leads.
        A lease taken now gets an epoch above ``floor`` (the store's highest)."""
        async with translate_redis_errors():
            self.epoch = int(await self._acquire(
                keys=[self.keys.lease(), self.keys.epoch()],
                args=[self.instance_id, self.ttl_ms, floor]))
        return self.epoch

    async def release(self) -> None:
        """Give the lease up (if held) so a standby takes over at once."""
        async with translate_redis_errors():
            await self._release(keys=[self.keys.lease()], args=[self.instance_id])
        self.epoch = 0

    async def holder(self) -> str | None:
        """Who leads now (``<instance>|<epoch>``), or None."""
        async with translate_redis_errors():
            value = await self.redis.get(self.keys.lease())
        return None if value is None else str(value)
