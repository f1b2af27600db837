"""The coordinator service: one async loop that keeps the agent registry.

Each tick it removes agent instances whose heartbeat expired and logs them;
an agent with no live instance left is marked ``dead``. Later work (learning,
promotion, archival, retention, leadership) joins this same loop.
"""

from __future__ import annotations

import anyio
from anyio.abc import TaskStatus

from coordinator.errors import RedisUnavailable
from coordinator.logs import get_logger
from coordinator.registry import Registry


class Coordinator:
    """Runs the coordinator's periodic passes."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.settings = registry.settings
        self.log = get_logger(agent_id="coordinator")

    async def tick(self) -> int:
        """Run one pass; return how many dead instances were removed."""
        removed = await self.registry.reap_dead()
        for agent_id, instance in removed:
            self.log.warning(
                "agent instance dead: heartbeat expired",
                dead_agent=agent_id, instance=instance.instance_id, pid=instance.pid,
                host=instance.host,
            )
        return len(removed)

    async def run(
        self, stop: anyio.Event, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Tick every ``coordinator_tick_s`` until ``stop`` is set; survive Redis outages."""
        self.log.info("coordinator started", tick_s=self.settings.coordinator_tick_s)
        task_status.started()
        failing = False
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
            with anyio.move_on_after(self.settings.coordinator_tick_s):
                await stop.wait()
        self.log.info("coordinator stopped")
