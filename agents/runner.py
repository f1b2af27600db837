"""Running one agent: register, heartbeat, read its inbox in batches, handle, settle, deregister.

The consume loop reads with a blocking ``XREADGROUP`` (no polling sleeps), handles
each signal of the batch, then settles the whole batch in one script call. A stop
request (SIGTERM / SIGINT) lets the batch in hand finish and be acked before the
agent deregisters. ``burst=True`` processes until the inbox is empty and returns,
for tests and one-shot jobs.
"""

from __future__ import annotations

import contextlib
import importlib
import signal as os_signal
from typing import Any

import anyio
from anyio.abc import TaskStatus
from structlog.contextvars import bound_contextvars

from agents.memory import AgentMemory
from agents.runtime import Agent, Context
from coordinator.bus import Bus, Delivery, Outcome
from coordinator.errors import HivebusError, InvalidInput, RedisUnavailable
from coordinator.logs import get_logger
from coordinator.models import SignalStatus
from coordinator.registry import Instance, Registry

BUILTIN_AGENTS = {
    "market-hunter": "agents.builtin.market_hunter:MarketHunter",
    "risk-manager": "agents.builtin.risk_manager:RiskManager",
    "trade-executor": "agents.builtin.trade_executor:TradeExecutor",
}

MAX_REASON = 500


def load_agent_class(spec: str) -> type[Agent]:
    """Resolve a built-in agent name or ``module:Class``. Raises InvalidInput."""
    target = BUILTIN_AGENTS.get(spec, spec)
    if ":" not in target:
        names = ", ".join(BUILTIN_AGENTS)
        raise InvalidInput(f"unknown agent {spec!r}: use one of {names}, or module:Class")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInput(f"cannot import module {module_name!r}: {exc}") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise InvalidInput(f"{target!r} is not a hivebus Agent class")
    return cls


class AgentRunner:
    """Runs one agent instance against a bus until told to stop."""

    def __init__(self, agent: Agent, bus: Bus, registry: Registry) -> None:
        self.agent = agent
        self.bus = bus
        self.registry = registry
        self.settings = bus.settings
        self.instance = Instance.here(agent.agent_id)
        self.memory = AgentMemory(bus.redis, bus.settings, agent.agent_id)
        agent.memory = self.memory
        self.log = get_logger(agent_id=agent.agent_id, instance=self.instance.instance_id)
        self.handled = 0

    async def run(
        self,
        stop: anyio.Event,
        *,
        burst: bool = False,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Register, then consume until ``stop`` is set (or, in burst mode, the inbox is empty)."""
        agent_id = self.agent.agent_id
        with bound_contextvars(agent_id=agent_id):
            await self.registry.register(
                agent_id,
                self.instance,
                agent_type=self.agent.agent_type,
                subscriptions=self.agent.subscriptions(),
                version=self.agent.version,
            )
            await self.bus.ensure_group(agent_id)
            state = await self.memory.load_state(self.agent.version)
            await self.agent.setup()
            self.log.info("agent started", subscriptions=list(self.agent.subscriptions()),
                          cycle=state.current_cycle, state_version=state.version)
            task_status.started()
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._heartbeat_loop)
                    await self._consume(stop, burst)
                    tg.cancel_scope.cancel()
            finally:
                with anyio.CancelScope(shield=True):
                    await self.agent.teardown()
                    await self._deregister()
                    await self.memory.close()

    async def _deregister(self) -> None:
        try:
            await self.registry.deregister(self.agent.agent_id, self.instance)
            self.log.info("agent stopped", handled=self.handled)
        except RedisUnavailable as exc:
            self.log.warning("could not deregister", error=str(exc))

    async def _heartbeat_loop(self) -> None:
        failing = False
        while True:
            await anyio.sleep(self.settings.heartbeat_interval_s)
            try:
                await self.registry.heartbeat(self.agent.agent_id, self.instance)
                if failing:
                    self.log.info("redis reachable again")
                failing = False
            except RedisUnavailable as exc:
                if not failing:
                    self.log.warning("heartbeat failed", error=str(exc))
                failing = True

    async def _consume(self, stop: anyio.Event, burst: bool) -> None:
        agent_id = self.agent.agent_id
        backoff = 0.1
        while not stop.is_set():
            try:
                deliveries = await self.bus.read(
                    agent_id,
                    self.instance.instance_id,
                    count=self.settings.read_batch,
                    block_ms=None if burst else self.settings.read_block_ms,
                )
                if not deliveries:
                    if burst:
                        return
                    continue
                outcomes = [await self._handle(delivery) for delivery in deliveries]
                await self.bus.settle(agent_id, outcomes)
                self.handled += len(outcomes)
                backoff = 0.1
            except RedisUnavailable as exc:
                self.log.warning("redis unavailable, retrying", error=str(exc), retry_in=backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                if "NOGROUP" in str(exc):  # inbox or group deleted by hand, or Redis lost its data
                    with contextlib.suppress(RedisUnavailable):
                        await self.bus.ensure_group(agent_id)

    async def _handle(self, delivery: Delivery) -> Outcome:
        signal = delivery.signal
        if signal is None:
            reason = (delivery.error or "malformed entry")[:MAX_REASON]
            self.log.warning("dead-lettered malformed entry", entry=delivery.entry_id, reason=reason)
            return Outcome(delivery, SignalStatus.DEAD, reason)
        with bound_contextvars(signal_id=signal.signal_id, signal_type=signal.signal_type):
            if signal.is_expired():
                self.log.info("signal expired before it was handled")
                return Outcome(delivery, SignalStatus.EXPIRED, "expired before it was handled")
            ctx = Context(self.bus, self.agent.agent_id, signal, self.memory)
            try:
                handled = await self.agent.dispatch(signal, ctx)
            except HivebusError as exc:
                return self._failed(delivery, f"{type(exc).__name__}: {exc}")
            except Exception as exc:
                self.log.exception("handler raised")
                return self._failed(delivery, f"{type(exc).__name__}: {exc}")
            if not handled:
                return self._failed(delivery, f"no handler for {signal.signal_type}")
            self.log.debug("signal processed", published=ctx.published)
            return Outcome(delivery, SignalStatus.PROCESSED)

    def _failed(self, delivery: Delivery, reason: str) -> Outcome:
        reason = reason.splitlines()[0][:MAX_REASON] if reason else "failed"
        self.log.warning("signal dead-lettered", reason=reason)
        return Outcome(delivery, SignalStatus.DEAD, reason)


async def stop_on_signals(stop: anyio.Event, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    """Set ``stop`` on the first SIGTERM or SIGINT."""
    with anyio.open_signal_receiver(os_signal.SIGTERM, os_signal.SIGINT) as received:
        task_status.started()
        async for signum in received:
            get_logger().info("stop requested", signal=os_signal.Signals(signum).name)
            stop.set()
