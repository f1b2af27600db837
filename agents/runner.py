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
from dataclasses import replace
from typing import Any

import anyio
from anyio.abc import TaskStatus
from structlog.contextvars import bound_contextvars

from agents.memory import AgentMemory
from agents.runtime import Agent, Context
from coordinator.bus import Bus, Delivery, Outcome
from coordinator.errors import InvalidInput, RedisUnavailable, UnknownAgent
from coordinator.logs import get_logger
from coordinator.models import SignalStatus, now_s
from coordinator.redelivery import Redelivery, backoff_s
from coordinator.registry import Instance, Registry

BUILTIN_AGENTS = {
    "market-hunter": "agents.builtin.market_hunter:MarketHunter",
    "risk-manager": "agents.builtin.risk_manager:RiskManager",
    "trade-executor": "agents.builtin.trade_executor:TradeExecutor",
}

MAX_REASON = 500
DUE_CHECK_S = 0.05  # how often a busy consumer looks for retries that are due


class Permanent(Exception):
    """Raise from a handler when retrying cannot help: the signal is dead-lettered at once."""


PERMANENT = (Permanent, InvalidInput, UnknownAgent)


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
        self.redelivery = Redelivery(bus)
        self._next_orphan_check = 0.0
        self._next_due_check = 0.0
        self._working: list[str] = []  # inbox entries of the batch being handled

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
                    tg.start_soon(self._renew_loop)
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

    async def _next_batch(self, burst: bool) -> tuple[list[Delivery], bool]:
        """Reclaimed orphans and due retries first, else new entries (blocking read); and whether
        the entries are new (never delivered before, so the processed-ledger cannot hold them:
        the publish script leaves out a target that already processed the signal id)."""
        agent_id, consumer = self.agent.agent_id, self.instance.instance_id
        count = self.settings.read_batch
        if anyio.current_time() >= self._next_orphan_check:
            self._next_orphan_check = anyio.current_time() + min(1.0, self.settings.claim_idle_s / 2)
            orphans = await self.redelivery.orphans(agent_id, consumer, count)
            if orphans:
                self.log.info("reclaimed signals of a dead replica", count=len(orphans))
                return orphans, False
        if burst or anyio.current_time() >= self._next_due_check:  # not a round trip per batch
            self._next_due_check = anyio.current_time() + DUE_CHECK_S
            due = await self.redelivery.due(agent_id, consumer, count)
            if due:
                return due, False
        block = None if burst else self.settings.read_block_ms
        return await self.bus.read(agent_id, consumer, count=count, block_ms=block), True

    async def _consume(self, stop: anyio.Event, burst: bool) -> None:
        agent_id = self.agent.agent_id
        backoff = 0.1
        unsettled: list[Outcome] = []
        while not stop.is_set():
            try:
                settling, unsettled = unsettled, []  # a failed settle is not sent again: see below
                deliveries, new = await self._settle_and_read(settling, burst)
                if not deliveries:
                    if burst:
                        due = await self.redelivery.next_due(agent_id)
                        if due is None:
                            return
                        await anyio.sleep(max(0.0, due - now_s()))  # burst waits for its retries
                    continue
                unsettled = await self._handle_batch(deliveries, new)
                if backoff > 0.1:
                    self.log.info("redis reachable again")
                backoff = 0.1
            except RedisUnavailable as exc:
                if backoff == 0.1:
                    self.log.warning("redis unavailable, retrying", error=str(exc))
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                if "NOGROUP" in str(exc):  # inbox or group deleted by hand, or Redis lost its data
                    with contextlib.suppress(RedisUnavailable):
                        await self.bus.ensure_group(agent_id)
        if unsettled:
            with contextlib.suppress(RedisUnavailable):
                await self._settle(unsettled)

    async def _settle_and_read(self, outcomes: list[Outcome], burst: bool) -> tuple[list[Delivery], bool]:
        """Settle the last batch and ask for the next one at the same time (one round trip where
        there were two); the next batch is handled only after the settle is applied, so each
        handler sees the effects of the signals before it.

        A settle that fails is not sent again (its transaction may have been applied with the
        reply lost, and effects must not apply twice): its entries stay pending and are
        claimed again after ``claim_idle_s``, and the ledger decides what runs again.
        """
        if not outcomes:
            return await self._next_batch(burst)
        failures: list[RedisUnavailable] = []

        async def settle() -> None:
            try:
                await self._settle(outcomes)
            except RedisUnavailable as exc:
                failures.append(exc)

        batch: tuple[list[Delivery], bool] = ([], True)
        async with anyio.create_task_group() as tg:
            tg.start_soon(settle)
            try:
                batch = await self._next_batch(burst)
            except RedisUnavailable as exc:
                failures.append(exc)  # let the settle finish rather than cancel it mid-flight
        if failures:
            raise failures[0]
        return batch

    async def _settle(self, outcomes: list[Outcome]) -> None:
        await self.bus.settle(self.agent.agent_id, outcomes)
        self.handled += sum(1 for o in outcomes if o.status is not SignalStatus.FAILED)

    async def _handle_batch(self, deliveries: list[Delivery], new: bool) -> list[Outcome]:
        """Handle a batch while renewing its claim; skip what the ledger says is done (asked only
        for redeliveries: new entries cannot be in it, and asking costs a round trip)."""
        agent_id = self.agent.agent_id
        done = set() if new else await self.bus.processed(
            agent_id, [d.signal.signal_id for d in deliveries if d.signal])
        outcomes: list[Outcome] = []
        self._working = [d.entry_id for d in deliveries]
        try:
            for delivery in deliveries:
                if delivery.signal is not None and delivery.signal.signal_id in done:
                    outcomes.append(Outcome(delivery, SignalStatus.PROCESSED))  # effects applied before
                else:
                    outcomes.append(await self._handle(delivery))
        finally:
            self._working = []
        return await self._schedule_failures(outcomes)

    async def _renew_loop(self) -> None:
        """Every third of ``claim_idle_s``, renew the claim on the batch being handled, so a long
        handler's entries never look idle enough to be claimed by another replica."""
        while True:
            await anyio.sleep(self.settings.claim_idle_s / 3)
            if self._working:
                with contextlib.suppress(RedisUnavailable):
                    await self.redelivery.renew(self.agent.agent_id, self.instance.instance_id,
                                                self._working)

    async def _schedule_failures(self, outcomes: list[Outcome]) -> list[Outcome]:
        """FAILED outcomes get their attempt number and a retry time, or become DEAD at the limit."""
        failed = [o for o in outcomes if o.status is SignalStatus.FAILED and o.delivery.signal]
        if not failed:
            return outcomes
        agent_id = self.agent.agent_id
        before = await self.bus.attempts(agent_id, [o.delivery.signal.signal_id for o in failed
                                                    if o.delivery.signal])
        result = []
        for outcome in outcomes:
            signal = outcome.delivery.signal
            if outcome.status is not SignalStatus.FAILED or signal is None:
                result.append(outcome)
                continue
            attempts = before.get(signal.signal_id, 0) + 1
            if attempts >= self.settings.max_deliveries:
                self.log.warning("signal dead-lettered after retries", signal_id=signal.signal_id,
                                 attempts=attempts, reason=outcome.reason)
                result.append(replace(outcome, status=SignalStatus.DEAD, attempts=attempts))
            else:
                delay = backoff_s(attempts, self.settings.retry_base_s, self.settings.retry_max_s)
                result.append(replace(outcome, attempts=attempts, retry_at=now_s() + delay))
        return result

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
            except PERMANENT as exc:
                return self._dead(delivery, f"{type(exc).__name__}: {exc}")
            except Exception as exc:
                self.log.warning("handler failed; will retry", error=f"{type(exc).__name__}: {exc}")
                return Outcome(delivery, SignalStatus.FAILED, _one_line(f"{type(exc).__name__}: {exc}"))
            if not handled:
                return self._dead(delivery, f"no handler for {signal.signal_type}")
            self.log.debug("signal processed", published=ctx.published)
            return Outcome(delivery, SignalStatus.PROCESSED, effects=tuple(ctx.effects))

    def _dead(self, delivery: Delivery, reason: str) -> Outcome:
        reason = _one_line(reason)
        self.log.warning("signal dead-lettered", reason=reason)
        return Outcome(delivery, SignalStatus.DEAD, reason)


def _one_line(reason: str) -> str:
    return reason.splitlines()[0][:MAX_REASON] if reason else "failed"


async def stop_on_signals(stop: anyio.Event, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    """Set ``stop`` on the first SIGTERM or SIGINT."""
    with anyio.open_signal_receiver(os_signal.SIGTERM, os_signal.SIGINT) as received:
        task_status.started()
        async for signum in received:
            get_logger().info("stop requested", signal=os_signal.Signals(signum).name)
            stop.set()
