"""Writing an agent: declare the signal types it handles and write async handlers.

::

    class Pinger(Agent):
        agent_type = "pinger"

        @handles("PING")
        async def on_ping(self, signal: Signal, ctx: Context) -> None:
            await ctx.publish("PONG", to=[signal.source_agent])

A signal published through ``ctx`` while handling carries ``causation_id`` = the
handled signal's id and keeps its ``correlation_id``. :mod:`hivebus.agents.runner` runs
an agent as a process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from redis.crc import key_slot

from hivebus.bus.bus import Bus
from hivebus.bus.effects import Effect, make_effect
from hivebus.domain.errors import InvalidInput
from hivebus.domain.ids import derived_id
from hivebus.domain.keys import check_item_id, check_signal_type
from hivebus.domain.models import Severity, Signal

if TYPE_CHECKING:
    from hivebus.agents.memory import AgentMemory

Handler = Callable[[Any, Signal, "Context"], Awaitable[None]]
H = TypeVar("H", bound=Handler)

_HANDLES_ATTR = "__hivebus_handles__"


def handles(*signal_types: str) -> Callable[[H], H]:
    """Mark an async method as the handler of ``signal_types``."""
    for signal_type in signal_types:
        check_signal_type(signal_type)

    def mark(func: H) -> H:
        setattr(func, _HANDLES_ATTR, signal_types)
        return func

    return mark


class Context:
    """What a handler may do besides compute: publish follow-up signals, decide, remember."""

    def __init__(
        self, bus: Bus, agent_id: str, cause: Signal | None, memory: AgentMemory | None = None
    ) -> None:
        self.bus = bus
        self.agent_id = agent_id
        self.cause = cause
        self._memory = memory
        self.published: list[str] = []
        self.effects: list[Effect] = []
        self._decisions = 0

    def effect(self, command: str, key: str, *args: str | int | float) -> None:
        """Queue one Redis write to apply, exactly once, when this signal is settled.

        ``ctx.effect("HINCRBY", ctx.key("wins"), "BTC", 1)``. Allowed: single-key writes
        (SET DEL EXPIRE PEXPIRE INCRBY INCRBYFLOAT HSET HDEL HINCRBY HINCRBYFLOAT SADD SREM ZADD
        ZINCRBY ZREM LPUSH RPUSH LTRIM XADD). They are applied in the same atomic step as the
        ack, only if this replica still owns the signal and it is not settled yet: if the process
        dies, pauses or stalls before that, none applied and the signal is handled again; after
        it, never again. Raises InvalidInput for a command or argument that cannot apply, and on
        a Redis Cluster for a key outside this agent's slot (the settle could not run it).
        """
        effect = make_effect(self.bus.keys, command, key, *args)
        if self.bus.per_slot and key_slot(key.encode()) != key_slot(self.key("x").encode()):
            raise InvalidInput(f"effect {effect[0]}: {key!r} is not in agent {self.agent_id}'s hash slot, "
                               "which a Redis Cluster needs for an effect to apply with the ack; "
                               "use ctx.key(name)")
        self.effects.append(effect)

    def key(self, name: str) -> str:
        """A key of this agent's own for effects (``<ns>:fx:{<agent>}:<name>``): it shares the
        agent's cluster slot, so its effects stay atomic with the ack on a Redis Cluster too."""
        return self.bus.keys.effect_key(self.agent_id, name)

    @property
    def memory(self) -> AgentMemory:
        """The agent's memory (state, STM, decisions, events)."""
        if self._memory is None:
            raise RuntimeError("this context has no memory attached")
        return self._memory

    async def decide(self, decision_type: str, *, confidence: float, **options: Any) -> tuple[str, float]:
        """Log a decision triggered by the handled signal; return (decision id, adjusted confidence)."""
        triggers = [self.cause.signal_id] if self.cause else []
        if self.cause is not None:  # the same id when a redelivered signal is handled again
            options.setdefault("decision_id", derived_id(self.cause.signal_id, self.agent_id, "decision",
                                                         str(self._decisions)))
        self._decisions += 1
        return await self.memory.decide(decision_type, confidence=confidence,
                                        triggered_by=triggers, **options)

    async def publish(
        self,
        signal_type: str,
        *,
        to: Iterable[str] = (),
        data: Mapping[str, Any] | None = None,
        severity: Severity | str = Severity.INFO,
        confidence: float = 1.0,
        allow_unregistered: bool = False,
        decision_id: str | None = None,
    ) -> str:
        """Publish a signal caused by the one being handled (or by ``decision_id``); return its id."""
        cause = self.cause
        causation = cause.signal_id if cause else None
        if decision_id is not None:
            causation = check_item_id(decision_id)
        extra: dict[str, Any] = {}
        if cause is not None:  # same id when a redelivered signal is handled again
            extra["signal_id"] = derived_id(cause.signal_id, self.agent_id, str(len(self.published)))
        signal = Signal.create(
            signal_type,
            self.agent_id,
            targets=list(to),
            ttl_s=self.bus.settings.signal_ttl_s,
            severity=Severity(severity),
            confidence=confidence,
            data=dict(data or {}),
            causation_id=causation,
            correlation_id=(cause.correlation_id or cause.signal_id) if cause else None,
            **extra,
        )
        await self.bus.publish(signal, allow_unregistered=allow_unregistered)
        if decision_id is not None and self._memory is not None:
            await self._memory.decisions.record_caused_signal(decision_id, signal.signal_id)
        self.published.append(signal.signal_id)
        return signal.signal_id


class Agent:
    """Base class of every agent. Subclasses set ``agent_type`` and mark handlers with @handles."""

    agent_type: ClassVar[str] = "agent"
    version: ClassVar[str] = "0.1.0"
    _handlers: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for name, member in vars(klass).items():
                for signal_type in getattr(member, _HANDLES_ATTR, ()):
                    table[signal_type] = name
        cls._handlers = table

    memory: AgentMemory

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id

    @classmethod
    def subscriptions(cls) -> tuple[str, ...]:
        """The signal types this agent handles."""
        return tuple(sorted(cls._handlers))

    async def setup(self) -> None:
        """Called once after the agent registered, before it reads signals."""

    async def teardown(self) -> None:
        """Called once after the last signal was settled, before it deregisters."""

    async def dispatch(self, signal: Signal, ctx: Context) -> bool:
        """Run the handler for ``signal``; return False when there is none."""
        name = self._handlers.get(signal.signal_type)
        if name is None:
            return False
        await getattr(self, name)(signal, ctx)
        return True
