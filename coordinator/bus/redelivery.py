"""Getting signals handled again: retries with backoff, and reclaiming a dead replica's work.

* A handler that fails is retried: its entry stays pending in the agent's group and the settle
  script schedules it in ``hive:retry:{<agent>}`` at now + base * 2^(attempt-1), capped, at a
  random point in the upper half of that delay ("equal jitter"); when due,
  a replica claims it (``XCLAIM``) and handles it again, up to ``max_deliveries`` attempts
  (the settle script counts attempts and dead-letters at the limit).
* An entry delivered to a replica that died is reclaimed by a live replica of the same
  agent once it has been idle for ``claim_idle_s`` *and* its consumer's heartbeat is gone:
  reclaim is decided by liveness, not by a timeout alone. A replica renews the entries it
  is working on (``XCLAIM … JUSTID``), so a long handler is never taken from a live process.
  An entry taken over ``max_deliveries`` times (every replica handling it died or stalled:
  a signal that kills its handler) is dead-lettered instead of handled again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from hivebus.bus.bus import Bus, Delivery, decode_delivery
from hivebus.domain.clock import now_s
from hivebus.domain.ids import entry_order, printable
from hivebus.domain.keys import INSTANCE_ID_RE, Keys
from hivebus.infra.lua import CLAIM_DUE, RENEW
from hivebus.infra.redis_errors import translate_redis_errors

if TYPE_CHECKING:
    from redis.typing import StreamIdT


def renew_call(keys: Keys, agent_id: str, consumer: str,
               entry_ids: Sequence[str]) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of the RENEW script for ``entry_ids`` (not empty)."""
    lo, hi = min(entry_ids, key=entry_order), max(entry_ids, key=entry_order)
    return [keys.inbox(agent_id)], [agent_id, consumer, lo, hi, *entry_ids]


class Redelivery:
    """Claims due retries and orphaned entries for one agent's consumer."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.redis = bus.redis
        self.keys = bus.keys
        self.settings = bus.settings
        self._claim_due = bus.redis.register_script(CLAIM_DUE)
        self._renew = bus.redis.register_script(RENEW)

    async def due(self, agent_id: str, consumer: str, count: int) -> tuple[list[Delivery], list[str]]:
        """Claim the failed entries whose retry time has come (one script call).

        Returns the deliveries and the schedule members that were not entry ids (removed)."""
        async with translate_redis_errors():
            claimed, bad = await self._claim_due(
                keys=[self.keys.inbox(agent_id), self.keys.retries(agent_id)],
                args=[agent_id, consumer, now_s(), count])
        return self._decode(claimed), [printable(b) for b in bad]

    async def renew(self, agent_id: str, consumer: str, entry_ids: Sequence[str]) -> int:
        """Reset the idle time of the entries this consumer still owns and is working on."""
        if not entry_ids:
            return 0
        keys, args = renew_call(self.keys, agent_id, consumer, entry_ids)
        async with translate_redis_errors():
            return int(await self._renew(keys=keys, args=args))

    async def orphans(self, agent_id: str, consumer: str, count: int) -> list[Delivery]:
        """Claim entries idle for ``claim_idle_s`` that nobody alive is working on.

        That is: entries of consumers with no live heartbeat (a dead or paused replica), and
        this consumer's own idle entries that no retry is scheduled for (their settle was lost,
        e.g. to a dropped connection). XCLAIM's min-idle-time makes the take-over atomic: an
        entry its owner renewed meanwhile is not taken.
        """
        idle_ms = int(self.settings.claim_idle_s * 1000)
        inbox = self.keys.inbox(agent_id)
        async with translate_redis_errors():
            pel = await self.redis.xpending_range(inbox, agent_id, "-", "+", count, idle=idle_ms)
            if not pel:
                return []
            owners = sorted({str(p["consumer"]) for p in pel} - {consumer})
            replicas = [o for o in owners if INSTANCE_ID_RE.fullmatch(o)]  # others have no heartbeat
            pipe = self.redis.pipeline(transaction=False)
            for owner in replicas:
                pipe.exists(self.keys.heartbeat(agent_id, owner))
            own = [str(p["message_id"]) for p in pel if str(p["consumer"]) == consumer]
            for entry_id in own:
                pipe.zscore(self.keys.retries(agent_id), entry_id)
            answers = await pipe.execute()
            alive = {o for o, hit in zip(replicas, answers, strict=False) if int(hit)}
            scheduled = {e for e, score in zip(own, answers[len(replicas):], strict=True)
                         if score is not None}
            orphaned: list[StreamIdT] = [
                str(p["message_id"]) for p in pel
                if (str(p["consumer"]) != consumer and str(p["consumer"]) not in alive)
                or (str(p["consumer"]) == consumer and str(p["message_id"]) not in scheduled)]
            if not orphaned:
                return []
            claimed = await self.redis.xclaim(inbox, agent_id, consumer, idle_ms, orphaned)
        delivered = {str(p["message_id"]): int(p["times_delivered"]) + 1 for p in pel}  # +1: this claim
        return [replace(d, deliveries=delivered.get(d.entry_id, 1)) for d in self._decode(claimed)]

    def _decode(self, claimed: Sequence[Any]) -> list[Delivery]:
        deliveries = []
        for entry_id, fields in claimed:
            if not fields:
                continue  # deleted from the inbox (by hand): nothing left to handle
            if isinstance(fields, list):  # a script's reply: a flat field/value list
                fields = {str(fields[i]): str(fields[i + 1]) for i in range(0, len(fields), 2)}
            deliveries.append(decode_delivery(str(entry_id), fields, self.settings.max_payload_bytes,
                                              redelivered=True))
        return deliveries

    async def next_due(self, agent_id: str) -> float | None:
        """When the earliest scheduled retry is due, or None when none is scheduled."""
        async with translate_redis_errors():
            first = await self.redis.zrange(self.keys.retries(agent_id), 0, 0, withscores=True)
        return float(first[0][1]) if first else None
