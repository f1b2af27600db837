"""Running one agent: register, heartbeat, read its inbox in batches, handle, settle, deregister.

The consume loop reads with a blocking ``XREADGROUP`` (no polling sleeps), handles
each signal of the batch, then settles the whole batch in one fenced script call (the
handlers' effects apply only for entries this replica still owns and has not settled:
:mod:`hivebus.infra.lua`). Due retries and the work of dead or stalled replicas are
claimed before new entries; a lost consumer group is recreated; a key of this agent's
edited into the wrong type is set aside. Liveness (heartbeat, claim renewal) runs in a
thread when the runner has a client for one (:mod:`hivebus.agents.liveness`). A stop request
(SIGTERM / SIGINT) lets the batch in hand finish and be settled before the agent
deregisters. ``burst=True`` processes until the inbox is empty and returns, for tests and
one-shot jobs.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import signal as os_signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus
from redis.exceptions import RedisClusterException, RedisError
from structlog.contextvars import bound_contextvars

from hivebus.agents.liveness import LivenessThread
from hivebus.agents.memory import AgentMemory
from hivebus.agents.runtime import Agent, Context
from hivebus.bus.bus import Bus, Delivery, Outcome, Settled
from hivebus.bus.redelivery import Redelivery
from hivebus.bus.registry import Instance, Registry
from hivebus.domain.clock import now_s
from hivebus.domain.errors import BadKey, InvalidInput, RedisUnavailable, UnknownAgent
from hivebus.domain.ids import entry_order
from hivebus.domain.models import SignalStatus
from hivebus.infra.logs import get_logger, handling
from hivebus.service.set_aside import aside_name

if TYPE_CHECKING:
    from hivebus.infra.redis_errors import SyncRedis

BUILTIN_AGENTS = {
    "market-hunter": "hivebus.agents.desk.market_hunter:MarketHunter",
    "risk-manager": "hivebus.agents.desk.risk_manager:RiskManager",
    "trade-executor": "hivebus.agents.desk.trade_executor:TradeExecutor",
}

MAX_REASON = 500


class Permanent(Exception):
    """Raise from a handler when retrying cannot help: the signal is dead-lettered at once."""


PERMANENT = (Permanent, InvalidInput, UnknownAgent)  # InboxFull is not: retrying later can help


def load_agent_class(spec: str) -> type[Agent]:
    """Resolve a built-in agent name, ``module:Class`` (a module importable from the current
    directory too) or ``path/to/file.py:Class``. Raises InvalidInput."""
    target = BUILTIN_AGENTS.get(spec, spec)
    if ":" not in target:
        names = ", ".join(BUILTIN_AGENTS)
        raise InvalidInput(f"unknown agent {spec!r}: use one of {names}, module:Class or file.py:Class")
    module_name, _, class_name = target.rpartition(":")
    module = _load_file(module_name) if module_name.endswith(".py") else _import(module_name)
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise InvalidInput(f"{target!r} is not a hivebus Agent class")
    return cls


def _import(module_name: str) -> Any:
    """Import a module by name, the current directory first (where a user's own agents are)."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInput(f"cannot import module {module_name!r}: {exc}") from None
    except Exception as exc:  # the module itself failed while loading
        raise InvalidInput(f"module {module_name!r} failed to load: {type(exc).__name__}: {exc}") from None


def _load_file(path_text: str) -> Any:
    """Load a module from a ``.py`` file."""
    path = Path(path_text)
    if not path.is_file():
        raise InvalidInput(f"no such file {path_text!r}")
    spec = importlib.util.spec_from_file_location(f"hivebus_agent_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise InvalidInput(f"cannot load {path_text!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise InvalidInput(f"{path_text} failed to load: {type(exc).__name__}: {exc}") from None
    return module


class AgentRunner:
    """Runs one agent instance against a bus until told to stop."""

    def __init__(self, agent: Agent, bus: Bus, registry: Registry, *,
                 liveness_client: SyncRedis | None = None) -> None:
        """``liveness_client``: a synchronous redis-py client (``connection.open_sync_client``) for
        the liveness thread; without one, heartbeats run on the event loop."""
        self.agent = agent
        self._liveness_client = liveness_client
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
        self._due_at: float | None = None  # when a retry this replica scheduled comes due (wall clock)
        self._suspect_upto: tuple[int, int] | None = None  # entries up to here may be settled already
        self._working: list[str] = []  # inbox entries of the batch being handled
        self._stopping = False
        self._refused: list[Outcome] = []  # a settle the script refused before writing anything
        self._carried: list[Delivery] = []  # read beside a settle that failed: handled after it

    @property
    def consumer(self) -> str:
        """This replica's consumer name in the agent's group (its instance id)."""
        return self.instance.instance_id

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
            set_up = False
            try:  # from here on, whatever happens, the instance deregisters
                await self._set_aside_bad_keys()
                await self.bus.ensure_group(agent_id)
                self._due_at = await self.redelivery.next_due(agent_id)
                state = await self.memory.load_state(self.agent.version)
                await self.agent.setup()
                set_up = True
                self.log.info("agent started", subscriptions=list(self.agent.subscriptions()),
                              cycle=state.current_cycle, state_version=state.version)
                task_status.started()
                await self._run_until(stop, burst)
            finally:
                with anyio.CancelScope(shield=True):
                    if set_up:
                        await self.agent.teardown()
                    await self._deregister()
                    await self.memory.close()

    async def _run_until(self, stop: anyio.Event, burst: bool) -> None:
        """Consume, with liveness kept by a thread when this runner has a client for one (so a
        handler blocking the event loop does not make the replica look dead), else by tasks."""
        liveness = None
        if self._liveness_client is not None:
            liveness = LivenessThread(self._liveness_client, self.settings, self.agent.agent_id,
                                      self.consumer, lambda: self._working)
            liveness.start()
        try:
            async with anyio.create_task_group() as tg:
                if liveness is None:
                    tg.start_soon(self._heartbeat_loop)
                    tg.start_soon(self._renew_loop)
                else:
                    tg.start_soon(self._progress_loop, liveness)
                tg.start_soon(self._interrupt_read_on, stop)
                await self._consume(stop, burst)
                tg.cancel_scope.cancel()
        finally:
            if liveness is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(liveness.stop)

    async def _progress_loop(self, liveness: LivenessThread) -> None:
        """Tell the liveness thread the event loop runs (it stops heartbeating when this stops)."""
        while True:
            liveness.loop_alive()
            await anyio.sleep(self.settings.heartbeat_interval_s / 3)

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

    async def _interrupt_read_on(self, stop: anyio.Event) -> None:
        """After a stop request, reads no longer block. A read already blocking is let finish
        (within HIVEBUS_READ_BLOCK_MS): cancelling it could drop a reply that already holds
        entries, which would then sit in this replica's pending list until taken over."""
        await stop.wait()
        self._stopping = True

    async def _next_batch(self, burst: bool) -> list[Delivery]:
        """Reclaimed orphans and due retries first, else new entries (a blocking read)."""
        agent_id, consumer = self.agent.agent_id, self.consumer
        count = self.settings.read_batch
        if anyio.current_time() >= self._next_orphan_check:
            self._next_orphan_check = anyio.current_time() + min(5.0, self.settings.claim_idle_s / 2)
            orphans = await self.redelivery.orphans(agent_id, consumer, count)
            if orphans:
                self.log.info("reclaimed signals of a dead or stalled replica", count=len(orphans))
                return orphans
        if self._retry_due():
            due, bad = await self.redelivery.due(agent_id, consumer, count)
            if bad:
                self.log.warning("removed retry schedule members that are not entry ids",
                                 members=[b[:80] for b in bad[:10]], count=len(bad))
            self._due_at = now_s() if len(due) + len(bad) >= count else (
                await self.redelivery.next_due(agent_id))
            if due:
                return due
        return await self.bus.read(agent_id, consumer, count=count, block_ms=self._block_ms(burst))

    def _retry_due(self) -> bool:
        return self._due_at is not None and now_s() >= self._due_at

    def _claims_first(self) -> bool:
        """Whether the next batch starts with claims (an orphan check, due retries), not a read."""
        return anyio.current_time() >= self._next_orphan_check or self._retry_due()

    def _block_ms(self, burst: bool) -> int | None:
        """How long the next read may block: not at all in burst mode or once asked to stop, and
        never past the next due retry."""
        if burst or self._stopping:
            return None
        block = self.settings.read_block_ms
        if self._due_at is not None:
            block = max(1, min(block, int((self._due_at - now_s()) * 1000) + 1))
        return block

    async def _consume(self, stop: anyio.Event, burst: bool) -> None:
        backoff = 0.1
        unsettled: list[Outcome] = []
        while not stop.is_set():
            try:
                settling, unsettled = unsettled, []  # a failed settle is not sent again: see below
                deliveries = await self._settle_and_read(settling, burst)
                if not deliveries:
                    if burst:
                        if self._due_at is None:
                            return
                        await anyio.sleep(max(0.0, self._due_at - now_s()))  # burst waits for retries
                    continue
                unsettled = await self._handle_batch(deliveries)
                if backoff > 0.1:
                    self.log.info("redis reachable again")
                backoff = 0.1
            except RedisUnavailable as exc:
                if isinstance(exc, BadKey) or "WRONGTYPE" in str(exc):  # a key edited by hand
                    if not await self._set_aside_bad_keys():  # another agent's, or not a type problem
                        self.log.warning("redis refused a command on a key of the wrong type",
                                         error=str(exc))
                        await anyio.sleep(1.0)
                    unsettled, self._refused = self._refused, []  # a refused settle wrote nothing
                    continue
                if "NOGROUP" in str(exc):  # the group was destroyed, or Redis lost its data
                    await self._recreate_group()
                    continue
                if backoff == 0.1:
                    self.log.warning("redis unavailable, retrying", error=str(exc))
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        if unsettled:
            with contextlib.suppress(RedisUnavailable):
                await self._settle(unsettled)

    async def _set_aside_bad_keys(self) -> int:
        """Rename each key of this agent's that holds the wrong type (edited by hand) to
        ``<key>:set-aside:<ms>`` (same slot, content kept), so the agent carries on with fresh
        ones; logged per key. Another agent's bad key is only logged (it is that agent's to fix)."""
        keys, agent_id = self.bus.keys, self.agent.agent_id
        expected = {keys.inbox(agent_id): "stream", keys.pending(agent_id): "hash",
                    keys.done(agent_id): "zset", keys.status(agent_id): "hash",
                    keys.retries(agent_id): "zset", keys.dead_letters(agent_id): "stream",
                    keys.agent(agent_id): "hash"}
        moved = 0
        try:
            pipe = self.bus.redis.pipeline(transaction=False)
            for key in expected:
                pipe.type(key)
            found = await pipe.execute()  # one round trip at start, not one per key
            for (key, want), have in zip(expected.items(), found, strict=True):
                if have not in ("none", want):
                    aside = aside_name(keys.namespace, key, int(now_s() * 1000))
                    await self.bus.redis.rename(key, aside)
                    self.log.warning("set aside a key edited into the wrong type", key=key, held=have,
                                     moved_to=aside)
                    moved += 1
        except (RedisError, RedisClusterException) as err:
            self.log.warning("could not check this agent's keys", error=str(err))
        return moved

    async def _recreate_group(self) -> None:
        """Recreate a lost consumer group from the start of the inbox; what it delivers again is
        checked against the ledger, so nothing settled runs (or applies) twice. Logged once."""
        agent_id = self.agent.agent_id
        try:
            last = await self.bus.redis.xrevrange(self.bus.keys.inbox(agent_id), count=1)
            created = await self.bus.ensure_group(agent_id)
        except (RedisUnavailable, RedisError, RedisClusterException) as exc:
            self.log.warning("could not recreate the consumer group", error=str(exc))
            await anyio.sleep(1.0)
            return
        if last:
            self._suspect_upto = entry_order(str(last[0][0]))
        if created:
            self.log.warning("consumer group was missing; recreated it from the start of the inbox "
                             "(signals already settled are skipped)")

    async def _settle_and_read(self, outcomes: list[Outcome], burst: bool) -> list[Delivery]:
        """Settle the last batch and read the next one in one round trip (Redis runs the settle
        first, so each handler sees the effects of the signals before it). When the next batch
        starts with claims (orphans, due retries), the settle is sent on its own first.

        A settle that fails is not sent again (unless its script refused it before writing
        anything: a key of the wrong type, set aside first): its entries stay pending and are
        claimed again after ``claim_idle_s``, and the settle script's fence decides what
        applies. A batch read beside a failed settle is kept and handled next, after that.
        """
        if self._carried:
            if outcomes:
                await self._settle(outcomes)
            batch, self._carried = self._carried, []
            return batch
        if not outcomes:
            return await self._next_batch(burst)
        if self._claims_first():
            await self._settle(outcomes)
            return await self._next_batch(burst)
        result, batch = await self.bus.settle_and_read(
            self.agent.agent_id, self.consumer, outcomes, count=self.settings.read_batch,
            block_ms=self._block_ms(burst))
        if isinstance(result, RedisUnavailable):
            self._settle_failed(result, outcomes)
            self._carried = batch
            raise result
        self._settled(result, outcomes)
        return batch

    async def _settle(self, outcomes: list[Outcome]) -> None:
        try:
            result = await self.bus.settle(self.agent.agent_id, self.consumer, outcomes)
        except RedisUnavailable as exc:
            self._settle_failed(exc, outcomes)
            raise
        self._settled(result, outcomes)

    def _settle_failed(self, exc: RedisUnavailable, outcomes: list[Outcome]) -> None:
        if isinstance(exc, BadKey):  # refused by the script's checks, before any write: safe to resend
            self._refused = outcomes

    def _settled(self, result: Settled, outcomes: list[Outcome]) -> None:
        self.handled += result.processed + result.dead
        if result.failed:
            due = now_s() + self.settings.retry_base_s / 2
            self._due_at = due if self._due_at is None else min(self._due_at, due)
        if result.superseded:
            self.log.warning("settle superseded: another replica took these signals over while this "
                             "one was paused or stalled; nothing of them was applied here",
                             count=result.superseded)
        told = ({o.delivery.entry_id for o in outcomes if o.status is not SignalStatus.FAILED}
                if result.dead_letters else set())
        for entry, reason in result.dead_letters:
            if entry not in told:  # the settle script decided it (retries used up, effect rejected)
                self.log.warning("signal dead-lettered", entry=entry, reason=reason)

    async def _handle_batch(self, deliveries: list[Delivery]) -> list[Outcome]:
        """Handle a batch while renewing its claim; skip what the ledger says is settled (asked
        only for entries that may have been delivered before: a new entry cannot be settled)."""
        agent_id = self.agent.agent_id
        suspect = [d.signal.signal_id for d in deliveries if d.signal and self._maybe_settled(d)]
        done = await self.bus.processed(agent_id, suspect) if suspect else set()
        outcomes: list[Outcome] = []
        self._working = [d.entry_id for d in deliveries]
        try:
            for delivery in deliveries:
                if delivery.signal is not None and delivery.signal.signal_id in done:
                    outcomes.append(Outcome(delivery, SignalStatus.PROCESSED))  # settled before: ack only
                elif delivery.deliveries > self.settings.max_deliveries:
                    outcomes.append(self._dead(delivery, (
                        f"delivered {delivery.deliveries} times without being settled: every replica "
                        f"handling it died or stalled (HIVEBUS_MAX_DELIVERIES)")))
                else:
                    outcomes.append(await self._handle(delivery))
        finally:
            self._working = []
        return outcomes

    def _maybe_settled(self, delivery: Delivery) -> bool:
        if delivery.redelivered:
            return True
        if self._suspect_upto is None:
            return False
        if entry_order(delivery.entry_id) <= self._suspect_upto:
            return True
        self._suspect_upto = None  # past the entries a recreated group delivers again
        return False

    async def _renew_loop(self) -> None:
        """Every third of ``claim_idle_s``, renew the claim on the batch being handled, so a long
        handler's entries never look idle enough to be claimed by another replica."""
        while True:
            await anyio.sleep(self.settings.claim_idle_s / 3)
            if self._working:
                with contextlib.suppress(RedisUnavailable):
                    await self.redelivery.renew(self.agent.agent_id, self.consumer, self._working)

    async def _handle(self, delivery: Delivery) -> Outcome:
        signal = delivery.signal
        if signal is None:
            reason = (delivery.error or "malformed entry")[:MAX_REASON]
            self.log.warning("dead-lettered malformed entry", entry=delivery.entry_id, reason=reason)
            return Outcome(delivery, SignalStatus.DEAD, reason)
        with handling(signal.signal_id, signal.signal_type):
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
