"""The coordinator service: one async loop that leads (or stands by) and keeps the team's memory.

Several coordinators may run; the one holding the lease (:mod:`hivebus.service.lease`)
leads, the others stand by and take over within the lease TTL when it dies. The
leader removes agent instances whose heartbeat expired (marking an agent with none left
``dead``) every half heartbeat TTL, and every ``consolidate_interval_s`` runs a consolidation
pass: learn from outcomes, promote patterns, archive aged decisions
(:mod:`hivebus.service.consolidation`). While a pass runs, a task renews the lease every third
of its TTL, so a long pass never lets a standby take over; a lease lost anyway (Redis
paused past the TTL) stops the pass at once. A lease is taken with an epoch above the
highest the store has seen, so a Redis that started over does not lock the coordinators
out; losing the lead is one log line saying why.
"""

from __future__ import annotations

import contextlib
import os
import socket

import anyio
from anyio.abc import TaskStatus

from hivebus.bus.registry import Registry
from hivebus.domain.clock import now_s
from hivebus.domain.errors import HivebusError, NotLeader, RedisUnavailable, first_leaf
from hivebus.infra.logs import get_logger
from hivebus.infra.redis_errors import Redis
from hivebus.service.consolidation import Consolidator, PassResult, Progress
from hivebus.service.lease import Lease
from hivebus.settings import Settings
from hivebus.store.base import Store


class Coordinator:
    """Runs the coordinator's periodic passes."""

    def __init__(self, redis: Redis, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.registry = Registry(redis, settings)
        self.consolidator = Consolidator(redis, settings, store)
        self.instance_id = f"{socket.gethostname()[:40]}-{os.getpid()}-{os.urandom(2).hex()}"
        self.lease = Lease(redis, settings, self.instance_id)
        self.log = get_logger(agent_id="coordinator", instance=self.instance_id)
        self._last_pass = 0.0
        self._last_reap = 0.0

    async def reap(self) -> int:
        """Remove dead agent instances; return how many."""
        removed = await self.registry.reap_dead()
        for agent_id, instance in removed:
            self.log.warning(
                "agent instance dead: heartbeat expired",
                dead_agent=agent_id, dead_instance=instance.instance_id, pid=instance.pid,
                host=instance.host,
            )
        return len(removed)

    async def once(self, progress: Progress | None = None) -> PassResult:
        """Take the lease, run one full pass (reap, learn, promote, archive), give the lease up.

        Raises NotLeader when another coordinator leads now (or takes the lead during the pass).
        """
        epoch = await self._lead()
        if not epoch:
            raise NotLeader(f"another coordinator leads ({await self.lease.holder()}); "
                            "--once runs only when none does")
        try:
            await self.reap()
            return await self._pass(epoch, progress)
        finally:
            with anyio.CancelScope(shield=True):
                await self.lease.release()

    async def _lead(self) -> int:
        """Take or renew the lease, a new one with an epoch above the store's highest. The
        store is read only when this coordinator does not lead: a renewal (every TTL / 3, in
        the middle of a pass) must not wait behind the pass's store writes; should the lease
        have vanished meanwhile (Redis started over), the new one is above the epoch held."""
        floor = self.lease.epoch or await self.store.highest_epoch()
        return await self.lease.try_lead(floor)

    async def _pass(self, epoch: int, progress: Progress | None = None) -> PassResult:
        """One consolidation pass, the lease renewed throughout; a lease lost meanwhile stops it
        (NotLeader). An error is raised as itself, not wrapped in an exception group."""
        result = PassResult()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._renew_lease, epoch)
                result = await self.consolidator.run_pass(epoch, self.lease.token, progress)
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise first_leaf(group) from None
        return result

    async def _renew_lease(self, epoch: int) -> None:
        while True:
            await anyio.sleep(self.settings.lease_ttl_s / 3)
            try:
                renewed = await self._lead()
            except RedisUnavailable as exc:
                self.log.warning("could not renew the lease", error=str(exc))
                continue
            if renewed != epoch:
                holder = await self.lease.holder()
                raise NotLeader(f"the lease expired during a pass (Redis paused or unreachable "
                                f"past {self.settings.lease_ttl_s:g} s?) and {holder or 'another'} "
                                f"took it; this pass stopped")

    async def tick(self) -> None:
        """One loop step: lead or stand by; the leader reaps and, when due, consolidates."""
        epoch = await self._lead()
        if not epoch:
            return
        # liveness is read from heartbeat keys wherever it is shown; reaping only tidies the
        # registry, so it runs every half heartbeat TTL, not every tick (commands per idle agent)
        if now_s() - self._last_reap >= max(self.settings.coordinator_tick_s,
                                             self.settings.heartbeat_ttl_s / 2):
            self._last_reap = now_s()
            await self.reap()
        if now_s() - self._last_pass >= self.settings.consolidate_interval_s:
            self._last_pass = now_s()
            result = await self._pass(epoch)
            if result.counted or result.archived or result.promoted or result.demoted:
                self.log.info("consolidation pass", **result.as_dict())

    async def run(
        self, stop: anyio.Event, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Tick every ``coordinator_tick_s`` until ``stop`` is set; survive Redis outages."""
        self.log.info("coordinator started", tick_s=self.settings.coordinator_tick_s)
        task_status.started()
        failing, leading = False, False
        try:
            while not stop.is_set():
                try:
                    await self.tick()
                    if failing:
                        self.log.info("redis reachable again")
                    failing = False
                except RedisUnavailable as exc:
                    if not failing:
                        self.log.warning("redis unavailable", error=str(exc))
                    failing = True
                except NotLeader as exc:
                    self.log.warning(f"lost the lead: {exc}")
                    with contextlib.suppress(RedisUnavailable):
                        await self.lease.release()  # taken again (above the store's epoch) or not
                except HivebusError as exc:
                    self.log.error("coordinator pass failed", error=str(exc))
                if bool(self.lease.epoch) != leading:
                    leading = bool(self.lease.epoch)
                    self.log.info("leading" if leading else "standing by", epoch=self.lease.epoch)
                with anyio.move_on_after(self.settings.coordinator_tick_s):
                    await stop.wait()
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(RedisUnavailable):
                await self.lease.release()
        self.log.info("coordinator stopped")

