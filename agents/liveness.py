"""Keeping a replica's claim alive from a thread, so a handler that blocks the event loop does
not make its replica look dead.

A replica's heartbeat key says it is alive, and renewing the entries it is working on keeps
them from looking idle; another replica takes over only entries whose owner has neither
(:mod:`hivebus.bus.redelivery`). Done on the event loop, both stop while a handler runs
synchronous code, and the work is taken over although the replica is alive — then the
replica that takes it over blocks too, and the signal goes round for ever. This thread, with
a connection of its own, does both whatever the loop is doing, as long as the loop showed
progress within ``HIVEBUS_STALL_LIMIT_S``: a loop stalled longer than that (or a process
paused or killed) stops heartbeating, and its work is taken over after ``claim_idle_s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from redis import exceptions as redis_errors

from hivebus.bus.redelivery import renew_call
from hivebus.domain.keys import Keys
from hivebus.infra.logs import get_logger
from hivebus.infra.lua import RENEW
from hivebus.settings import Settings

if TYPE_CHECKING:
    from hivebus.infra.redis_errors import SyncRedis


class LivenessThread(threading.Thread):
    """Heartbeats and renews one replica's claims while its event loop makes progress."""

    def __init__(self, client: SyncRedis, settings: Settings, agent_id: str, instance_id: str,
                 working: Callable[[], Sequence[str]]) -> None:
        super().__init__(name=f"hivebus-liveness-{agent_id}", daemon=True)
        self.client = client  # a synchronous redis-py client of this thread's own (cluster or not)
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self.agent_id = agent_id
        self.instance_id = instance_id
        self.working = working
        self.progress_at = time.monotonic()  # set by the event loop while it runs
        self._stop_event = threading.Event()
        self._renew = client.register_script(RENEW)
        self.log = get_logger(agent_id=agent_id, instance=instance_id)

    def loop_alive(self) -> None:
        """Called from the event loop: it is making progress."""
        self.progress_at = time.monotonic()

    def stop(self) -> None:
        """Stop heartbeating; returns once the thread has ended (at most one Redis call later)."""
        self._stop_event.set()
        self.join(timeout=15)
        self.client.close()

    def run(self) -> None:
        """Every heartbeat interval: heartbeat, and renew the batch in hand every third of claim_idle."""
        beat = self.settings.heartbeat_interval_s
        renew_every = self.settings.claim_idle_s / 3
        step = min(beat, renew_every)
        next_beat = next_renew = 0.0
        stalled = failing = False
        while not self._stop_event.wait(step if next_beat else 0):
            now = time.monotonic()
            if now - self.progress_at > self.settings.stall_limit_s:
                if not stalled:
                    self.log.warning("event loop stalled past HIVEBUS_STALL_LIMIT_S: no more heartbeats, "
                                     "its signals will be taken over",
                                     stalled_s=round(now - self.progress_at))
                stalled = True
                continue
            stalled = False
            try:
                if now >= next_beat:
                    next_beat = now + beat
                    self.client.set(self.keys.heartbeat(self.agent_id, self.instance_id),
                                    f"{time.time():.3f}", px=int(self.settings.heartbeat_ttl_s * 1000))
                entries = list(self.working())
                if entries and now >= next_renew:
                    next_renew = now + renew_every
                    keys, args = renew_call(self.keys, self.agent_id, self.instance_id, entries)
                    self._renew(keys=keys, args=args)
                if failing:
                    self.log.info("redis reachable again")
                failing = False
            except (redis_errors.RedisError, redis_errors.RedisClusterException, OSError) as exc:
                if not failing:
                    self.log.warning("heartbeat failed", error=str(exc).splitlines()[0] if str(exc) else "")
                failing = True
