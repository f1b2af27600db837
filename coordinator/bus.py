"""The signal bus on Redis Streams: publish, read through a consumer group, settle, inspect.

Each agent has an inbox stream whose consumer group is named after the agent;
replicas of one agent are consumers in that group and share its work. Publishing
is one Lua script call (one round trip) whatever the number of targets, and it
touches only the targets' streams, so its cost does not grow with the number of
agents that are not targets. Reading is a batched blocking ``XREADGROUP``;
settling a batch (ack + status + dead letters) is one more script call.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import exceptions as redis_errors

from coordinator.connection import Redis, translate_redis_errors
from coordinator.errors import InvalidInput, NotFound, UnknownAgent
from coordinator.keys import Keys, check_signal_id
from coordinator.models import Signal, SignalStatus, now_s
from coordinator.scripts import PUBLISH, SETTLE
from coordinator.settings import Settings

DLQ_MAXLEN = 100_000
PUBLISH_CHUNK = 256  # signals per publish-script call: one round trip, Redis busy ~6 ms at most
Effect = Callable[[Any], None]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One entry read from an agent's inbox: the decoded signal, or why it could not be decoded."""

    entry_id: str
    fields: dict[str, str]
    signal: Signal | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one delivery ended, to be recorded by :meth:`Bus.settle`.

    ``effects`` are Redis commands the handler asked for (``ctx.effect``): they run in the
    same MULTI/EXEC as the ack and the processed-ledger, so they apply exactly once.
    """

    delivery: Delivery
    status: SignalStatus
    reason: str = ""
    retry_at: float = 0.0
    attempts: int = 1
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """Processing status of one signal for one target agent."""

    agent_id: str
    status: SignalStatus
    entry_id: str | None
    error: str | None = None
    deliveries: int = 0
    consumer: str | None = None


@dataclass(frozen=True, slots=True)
class SignalReport:
    """A signal with the status of each of its targets."""

    signal: Signal
    targets: list[TargetStatus] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready view."""
        return {
            **self.signal.model_dump(mode="json"),
            "status": {
                t.agent_id: {
                    "status": t.status.value,
                    "entry_id": t.entry_id,
                    "error": t.error,
                    "deliveries": t.deliveries,
                    "consumer": t.consumer,
                }
                for t in self.targets
            },
        }


class Bus:
    """Publishes and consumes signals on one Redis, under one namespace."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self._publish = redis.register_script(PUBLISH)

    # --- publishing ---------------------------------------------------------------
    async def publish(self, signal: Signal, *, allow_unregistered: bool = False) -> dict[str, str]:
        """Deliver ``signal`` to its targets (or the type's subscribers) in one round trip.

        Returns target agent id -> stream entry id ({} if the id was already published).
        Raises InvalidInput (payload too large), UnknownAgent, RedisUnavailable.
        """
        [reply] = await self._run_publish([signal], allow_unregistered)
        return _pairs(reply[1:])

    async def publish_many(self, signals: Sequence[Signal], *, allow_unregistered: bool = False) -> int:
        """Publish a batch, one script call (one round trip) per ``PUBLISH_CHUNK`` signals; return
        how many were new. An unknown target raises UnknownAgent and nothing of its chunk is
        published; otherwise raises like :meth:`publish`."""
        new = 0
        for start in range(0, len(signals), PUBLISH_CHUNK):
            replies = await self._run_publish(signals[start:start + PUBLISH_CHUNK], allow_unregistered)
            new += sum(1 for reply in replies if reply and reply[0] == 1)
        return new

    async def _run_publish(self, signals: Sequence[Signal], allow_unregistered: bool) -> list[Any]:
        batch = [self._publish_entry(signal) for signal in signals]
        keys = [self.keys.signal_log(), self.keys.agents()]
        args: list[str | int] = [
            self.settings.stream_maxlen, self.settings.log_stream_maxlen, 1 if allow_unregistered else 0,
            self.keys.signal_prefix(), self.keys.inbox_prefix(), self.keys.ledger_prefix(),
            self.keys.subscribers_prefix(), self.keys.agent_prefix(),
            json.dumps(batch, separators=(",", ":")),
        ]
        async with translate_redis_errors():
            try:
                return list(await self._publish(keys=keys, args=args))
            except redis_errors.ResponseError as exc:
                unknown = unknown_agent_from(exc)
                if unknown is not None:
                    raise unknown from None
                raise

    def _publish_entry(self, signal: Signal) -> list[Any]:
        """One signal as the publish script takes it. Raises InvalidInput (data too large)."""
        fields = signal.to_fields()
        if len(fields["data"]) > self.settings.max_payload_bytes:
            raise InvalidInput(
                f"signal data is {len(fields['data'])} bytes; the limit is "
                f"{self.settings.max_payload_bytes} (HIVEBUS_MAX_PAYLOAD_BYTES)"
            )
        flat: list[str] = []
        for name, value in fields.items():  # 'id', 'type', 'source' come first: the script relies on it
            flat += (name, value)
        # the hash outlives the signal by a grace period, so retention can still mark it EXPIRED
        ttl_ms = max(1, int((signal.expires_at - now_s() + self.settings.signal_grace_s) * 1000))
        return [ttl_ms, list(signal.target_agents), flat]

    # --- consuming ----------------------------------------------------------------
    async def ensure_group(self, agent_id: str) -> None:
        """Create the agent's inbox and consumer group (reading from the start) if missing."""
        async with translate_redis_errors():
            try:
                await self.redis.xgroup_create(
                    self.keys.inbox(agent_id), agent_id, id="0", mkstream=True
                )
            except redis_errors.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read(
        self, agent_id: str, consumer: str, *, count: int, block_ms: int | None
    ) -> list[Delivery]:
        """Read up to ``count`` new entries for ``consumer`` in the agent's group."""
        async with translate_redis_errors():
            reply = await self.redis.xreadgroup(
                agent_id, consumer, {self.keys.inbox(agent_id): ">"}, count=count, block=block_ms
            )
        deliveries: list[Delivery] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                deliveries.append(decode_delivery(entry_id, fields, self.settings.max_payload_bytes))
        return deliveries

    async def settle(self, agent_id: str, outcomes: Sequence[Outcome]) -> int:
        """Record a batch's outcomes in one MULTI/EXEC: effects, status, ledger, ack, DLQ, retries."""
        if not outcomes:
            return 0
        keys = [self.keys.inbox(agent_id), self.keys.agent(agent_id), self.keys.dead_letters(agent_id),
                self.keys.retries(agent_id)]
        entries = []
        for outcome in outcomes:
            delivery = outcome.delivery
            dead = outcome.status is SignalStatus.DEAD
            original = json.dumps(delivery.fields, separators=(",", ":")) if dead else ""
            entries.append([delivery.entry_id, delivery.signal.signal_id if delivery.signal else "",
                            outcome.status.value, outcome.reason, original,
                            repr(round(outcome.retry_at, 6)), str(outcome.attempts)])
        args = [agent_id, DLQ_MAXLEN, round(now_s(), 6), self.settings.ledger_ttl_ms,
                self.keys.signal_prefix(), self.keys.agent_ledger_prefix(agent_id),
                json.dumps(entries, separators=(",", ":"))]
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=True)
            for outcome in outcomes:
                if outcome.status is SignalStatus.PROCESSED:
                    for effect in outcome.effects:
                        effect(pipe)
            # EVAL, not EVALSHA: a script missing from a restarted server's cache must not fail
            # inside EXEC after the effects ran; redis-py's Script would add a SCRIPT EXISTS
            # round trip instead. Redis caches the body by its SHA, so this costs only the bytes.
            pipe.eval(SETTLE, len(keys), *keys, *args)
            results = await pipe.execute()
        return int(results[-1])

    async def processed(self, agent_id: str, signal_ids: Sequence[str]) -> set[str]:
        """Which of ``signal_ids`` the processed-ledger says ``agent_id`` already processed."""
        if not signal_ids:
            return set()
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for signal_id in signal_ids:
                pipe.exists(self.keys.ledger(agent_id, signal_id))
            found = await pipe.execute()
        return {s for s, hit in zip(signal_ids, found, strict=True) if hit}

    async def attempts(self, agent_id: str, signal_ids: Sequence[str]) -> dict[str, int]:
        """Failed attempts recorded so far for each signal (0 when none or the hash is gone)."""
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for signal_id in signal_ids:
                pipe.hget(self.keys.signal(signal_id), f"attempts:{agent_id}")
            values = await pipe.execute()
        return {s: int(v or 0) for s, v in zip(signal_ids, values, strict=True)}

    # --- inspecting -----------------------------------------------------------------
    async def report(self, signal_id: str) -> SignalReport:
        """The signal and its status per target. Raises NotFound, InvalidId."""
        key = self.keys.signal(check_signal_id(signal_id))
        async with translate_redis_errors():
            fields = await self.redis.hgetall(key)
        if not fields:
            raise NotFound(f"no signal {signal_id} (unknown, or expired after its TTL)")
        delivered = targets_of(fields)
        signal = await self._body(signal_id, fields, delivered)
        pipe = self.redis.pipeline(transaction=False)
        for agent_id in delivered:
            entry = fields.get(f"entry:{agent_id}")
            pipe.xpending_range(self.keys.inbox(agent_id), agent_id, entry, entry, 1)
        async with translate_redis_errors():
            pending = await pipe.execute(raise_on_error=False)
        targets = []
        for agent_id, pel in zip(delivered, pending, strict=True):
            status = SignalStatus(fields.get(f"status:{agent_id}", "PENDING"))
            deliveries, consumer = 0, None
            if isinstance(pel, list) and pel:
                deliveries = int(pel[0]["times_delivered"])
                consumer = str(pel[0]["consumer"])
                if status is SignalStatus.PENDING:
                    status = SignalStatus.PROCESSING
            targets.append(
                TargetStatus(
                    agent_id, status, fields.get(f"entry:{agent_id}"),
                    fields.get(f"error:{agent_id}"), deliveries, consumer,
                )
            )
        return SignalReport(signal, targets)

    async def _body(self, signal_id: str, fields: dict[str, str], delivered: list[str]) -> Signal:
        """The signal's fields: from the hash when kept there, else from a target's inbox entry."""
        if "created_at" in fields:
            return Signal.from_fields(fields)
        async with translate_redis_errors():
            for agent_id in delivered:
                entry = fields.get(f"entry:{agent_id}")
                if entry:
                    found = await self.redis.xrange(self.keys.inbox(agent_id), entry, entry)
                    if found:
                        return Signal.from_fields(found[0][1])
        raise NotFound(f"signal {signal_id} is known but its entries were trimmed from every inbox")

    async def recent(self, count: int = 20) -> list[dict[str, str]]:
        """The last ``count`` published signals from the signal log, newest first."""
        async with translate_redis_errors():
            entries = await self.redis.xrevrange(self.keys.signal_log(), count=count)
        rows = []
        for entry_id, fields in entries:
            rows.append({"entry": entry_id, **fields})
        return rows


def decode_delivery(entry_id: str, fields: dict[str, str], max_data: int | None = None) -> Delivery:
    """Decode one inbox entry; a malformed or oversize entry becomes a Delivery carrying the error."""
    if max_data is not None and len(fields.get("data", "")) > max_data:
        return Delivery(entry_id, fields, None,
                        f"malformed entry: data is {len(fields['data'])} bytes; the limit is {max_data}")
    try:
        return Delivery(entry_id, fields, Signal.from_fields(fields))
    except InvalidInput as exc:
        return Delivery(entry_id, fields, None, f"malformed entry: {exc}")


def targets_of(fields: dict[str, str]) -> list[str]:
    """The agents a signal was delivered to, sorted, from its hash: one ``entry:<agent>`` field each."""
    return sorted(name[6:] for name in fields if name.startswith("entry:"))


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


def unknown_agent_from(exc: Exception) -> UnknownAgent | None:
    """Recognise the publish script's UNKNOWN_AGENT reply."""
    text = str(exc)
    if "UNKNOWN_AGENT" in text:
        agent = text.split("UNKNOWN_AGENT", 1)[1].strip().split()[0]
        return UnknownAgent(
            f"agent {agent!r} has never registered (start it first, or pass --allow-unregistered)"
        )
    return None
