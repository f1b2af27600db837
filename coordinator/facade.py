"""The embedding API: one object for a program that publishes signals, runs agents in its own
process and reads what they remember.

    async with Hivebus.connect() as hb:            # the managed local Redis when no URL is given
        await hb.run(Pinger("pinger-1"))           # an agent in this process, until hb closes
        await hb.publish("PING", to="pinger-1")
        decisions = await hb.decisions.query("pinger-1")

Everything here is a thin layer over the parts a hivebus process uses (Bus, Registry,
AgentRunner, AgentMemory, DecisionLog, the durable store); reach for those directly for more.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from hivebus.bus.bus import Bus
from hivebus.bus.registry import Registry
from hivebus.domain.models import Severity, Signal
from hivebus.infra import managed_redis
from hivebus.infra.connection import connected, open_sync_client
from hivebus.infra.redis_errors import Redis
from hivebus.memory.decisions import DecisionLog
from hivebus.settings import Settings, load_settings
from hivebus.store import open_store, store_exists
from hivebus.store.base import MemoryPattern, Store

if TYPE_CHECKING:
    from hivebus.agents.memory import AgentMemory
    from hivebus.agents.runtime import Agent

APP_SOURCE = "app"


class Patterns:
    """Read the promoted patterns of the durable store (opened on first use)."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self._settings = settings
        self._store = store
        self._opened_here = False  # a store given by the caller is the caller's to close

    async def store(self) -> Store:
        """The durable store, opened (created if need be) on first use."""
        if self._store is None:
            self._store = await open_store(self._settings)
            self._opened_here = True
        return self._store

    async def query(self, *, viewer: str | None = None, agent: str | None = None,
                    memory_type: str | None = None, min_confidence: float = 0.0) -> list[MemoryPattern]:
        """Active patterns, best first; with ``viewer``, only those that agent may see."""
        store = await self.store()
        return await store.query_patterns(viewer=viewer, agent=agent, memory_type=memory_type,
                                          min_confidence=min_confidence)

    async def get(self, pattern_id: str, *, viewer: str | None = None) -> MemoryPattern:
        """One pattern. Raises NotFound."""
        return await (await self.store()).get_pattern(pattern_id, viewer=viewer)

    async def close(self) -> None:
        """Close the store if it was opened here."""
        if self._store is not None and self._opened_here:
            await self._store.close()
        self._store = None


@dataclass
class RunningAgent:
    """An agent :meth:`Hivebus.run` started; :meth:`stop` ends it after its current batch."""

    agent: Agent
    stop_event: anyio.Event = field(default_factory=anyio.Event)
    finished: anyio.Event = field(default_factory=anyio.Event)

    async def stop(self) -> None:
        """Ask the agent to stop and wait until it has settled its batch and deregistered."""
        self.stop_event.set()
        await self.finished.wait()


class Hivebus:
    """A connection to a hivebus namespace: publish, run agents, read memory and decisions."""

    def __init__(self, redis: Redis, settings: Settings, url: str, tasks: TaskGroup,
                 archive: Store | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.url = url
        self.bus = Bus(redis, settings)
        self.registry = Registry(redis, settings)
        self.decisions = DecisionLog(redis, settings, archive)  # with the archive, when there is one
        self.patterns = Patterns(settings, archive)
        self._tasks = tasks
        self._running: list[RunningAgent] = []
        self._publishers: set[str] = set()

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str | None = None, *, namespace: str | None = None,
                      **settings: Any) -> AsyncIterator[Hivebus]:
        """Connect to ``url`` (else ``HIVEBUS_REDIS_URL``, else the managed local Redis, started
        or joined in ``HIVEBUS_HOME``); other settings as keyword arguments (``inbox_max=…``)
        or ``HIVEBUS_*`` variables. When the durable store exists (``HIVEBUS_STORE``, else
        ``<HIVEBUS_HOME>/ltm.sqlite3``), decision queries span it too. On exit, agents started
        with :meth:`run` stop first. Raises HivebusError subclasses (ConfigError,
        RedisUnavailable, UnsafeRedis, …)."""
        overrides = dict(settings)
        if url is not None:
            overrides["redis_url"] = url
        if namespace is not None:
            overrides["namespace"] = namespace
        config = load_settings(**overrides)
        server = None
        if config.redis_url is None:
            server = await anyio.to_thread.run_sync(managed_redis.start, config.home)
        endpoint = config.redis_url or (server.url if server else "")
        archive = await open_store(config) if store_exists(config) else None
        try:
            async with connected(endpoint, client_name="hivebus-app", settings=config) as redis, \
                    anyio.create_task_group() as tasks:
                hivebus = cls(redis, config, endpoint, tasks, archive)
                try:
                    yield hivebus
                finally:
                    with anyio.CancelScope(shield=True):
                        await hivebus.close()
        finally:
            if archive is not None:
                await archive.close()
            if server is not None:
                await anyio.to_thread.run_sync(server.release)

    async def publish(
        self, signal_type: str, data: Mapping[str, Any] | None = None, *,
        to: str | Sequence[str] = (), source: str = APP_SOURCE, confidence: float = 1.0,
        severity: Severity = Severity.INFO, ttl_s: float | None = None,
        correlation_id: str | None = None,
    ) -> str:
        """Publish a signal to ``to`` (an agent id or several), or with no ``to`` to every
        subscriber of its type; return its id. The default source ``app`` is registered as a
        publisher, so replies to it wait in its inbox instead of becoming dead letters."""
        targets = [to] if isinstance(to, str) else list(to)
        signal = Signal.create(signal_type, source, targets=targets, severity=severity,
                               confidence=confidence, data=dict(data or {}),
                               ttl_s=ttl_s if ttl_s is not None else self.settings.signal_ttl_s,
                               correlation_id=correlation_id)
        if source == APP_SOURCE and source not in self._publishers:
            await self.registry.register_publisher(source)
            self._publishers.add(source)
        await self.bus.publish(signal)
        return signal.signal_id

    async def run(self, agent: Agent) -> RunningAgent:
        """Run ``agent`` in this process, beside the caller, until :meth:`RunningAgent.stop` or
        until this connection closes; return once it is registered and reading its inbox."""
        from hivebus.agents.runner import AgentRunner

        running = RunningAgent(agent)
        liveness = open_sync_client(self.url, client_name=f"hivebus-agent-{agent.agent_id}",
                                    settings=self.settings)
        runner = AgentRunner(agent, self.bus, self.registry, liveness_client=liveness)

        async def serve(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            try:
                await runner.run(running.stop_event, task_status=task_status)
            finally:
                running.finished.set()
                liveness.close()

        await self._tasks.start(serve)
        self._running.append(running)
        return running

    def memory(self, agent_id: str) -> AgentMemory:
        """An agent's memory (state, short-term memory, decisions, events), as its handlers see it."""
        from hivebus.agents.memory import AgentMemory

        return AgentMemory(self.redis, self.settings, agent_id)

    async def close(self) -> None:
        """Stop the agents this connection runs and close the store; the connection closes on
        leaving ``connect``."""
        for running in self._running:
            await running.stop()
        self._running.clear()
        await self.patterns.close()
