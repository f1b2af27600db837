"""The signal bus on Redis Streams: publish, read through a consumer group, settle, inspect.

Each agent has an inbox stream whose consumer group is named after the agent;
replicas of one agent are consumers in that group and share its work. Publishing
is one Lua script call (one round trip) whatever the number of targets, and it
touches only the targets' streams, so its cost does not grow with the number of
agents that are not targets; it checks everything before its first write (all or
nothing), refuses a target whose backlog is full (``InboxFull``) and is idempotent per
target. Reading is a batched blocking ``XREADGROUP``; settling a batch is one fenced
script call (effects, ack, ledger, retries, dead letters) that applies nothing for an
entry this consumer no longer owns or whose signal is settled already.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from hivebus.bus.effects import Effect
from hivebus.domain.clock import now_s
from hivebus.domain.errors import (
    BadKey,
    HivebusError,
    InboxFull,
    InvalidInput,
    NotFound,
    NotReplicated,
    PublishIncomplete,
    RedisUnavailable,
    UnknownAgent,
)
from hivebus.domain.ids import entry_order, printable
from hivebus.domain.keys import Keys, check_signal_id, signal_shard
from hivebus.domain.models import Signal, SignalStatus
from hivebus.infra.lua import PUBLISH, SETTLE
from hivebus.infra.redis_errors import (
    Entry,
    Redis,
    redis_unavailable,
    stream_entries,
    text_or_none,
    translate_redis_errors,
)
from hivebus.settings import Settings

DLQ_MAXLEN = 100_000
PUBLISH_CHUNK = 256  # signals per publish-script call: one round trip, Redis busy ~6 ms at most


@dataclass(frozen=True, slots=True)
class Delivery:
    """One entry read from an agent's inbox: the decoded signal, or why it could not be decoded.

    ``redelivered`` is true for an entry claimed again (a retry, a dead replica's work, a
    recreated group): its signal may be settled already, which the runner asks the ledger."""

    entry_id: str
    fields: dict[str, str]
    signal: Signal | None
    error: str | None = None
    redelivered: bool = False
    deliveries: int = 1  # times Redis delivered the entry (known for entries taken over)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one delivery ended, to be recorded by :meth:`Bus.settle`.

    ``effects`` are Redis commands given as data (``ctx.effect("HINCRBY", key, field, 1)``):
    the settle script applies them in the same atomic step as the ack, and only if this
    consumer still owns the entry and the signal is not settled yet, so they apply once.
    """

    delivery: Delivery
    status: SignalStatus
    reason: str = ""
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True, slots=True)
class Settled:
    """What one settle did: counts per result, and the entries that went to the dead letters."""

    processed: int = 0
    failed: int = 0
    dead: int = 0
    superseded: int = 0
    duplicate: int = 0
    dead_letters: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """Processing status of one signal for one target agent."""

    agent_id: str
    status: SignalStatus
    entry_id: str | None
    error: str | None = None
    deliveries: int = 0
    consumer: str | None = None
    attempts: int = 0


@dataclass
class _Plan:
    """A publish batch: each signal's targets and shard, every target and shard it touches."""

    signals: Sequence[Signal]
    names: list[list[str]] = field(default_factory=list)
    shard_of: list[int] = field(default_factory=list)
    targets: dict[str, None] = field(default_factory=dict)  # in first-seen order
    shards: set[int] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class SignalReport:
    """A signal with the status of each of its targets."""

    signal: Signal
    targets: list[TargetStatus] = field(default_factory=list)


class Bus:
    """Publishes and consumes signals on one Redis, under one namespace."""

    def __init__(self, redis: Redis, settings: Settings, *, per_slot: bool | None = None) -> None:
        self.redis = redis
        self.settings = settings
        # a publish as one call per cluster slot: on a Redis Cluster (also possible on one Redis)
        self.per_slot = is_cluster(redis) if per_slot is None else per_slot
        self.keys = Keys(settings.namespace)
        self._publish = redis.register_script(PUBLISH)
        self._settle = redis.register_script(SETTLE)
        self._settle_loaded = False  # whether the server is known to hold the settle script
        self._subscribers: dict[str, list[str]] = {}  # signal type -> subscribers, as last seen

    # --- publishing ---------------------------------------------------------------
    async def publish(self, signal: Signal, *, allow_unregistered: bool = False) -> dict[str, str]:
        """Deliver ``signal`` to its targets (or the type's subscribers) in one round trip.

        Returns target agent id -> new inbox entry id ({} when every target already had it).
        Publishing an id again delivers it only to targets that lack it.
        Raises InvalidInput (payload too large), UnknownAgent, InboxFull, BadKey, RedisUnavailable;
        when it raises, nothing of the signal was written.
        """
        [reply] = await self._run_publish([signal], allow_unregistered)
        return _pairs(reply[1:])

    async def publish_many(self, signals: Sequence[Signal], *, allow_unregistered: bool = False) -> int:
        """Publish a batch, one script call (one round trip) per ``PUBLISH_CHUNK`` signals; return
        how many were new. Each chunk is all or nothing: an unknown target or a full inbox raises
        and nothing of that chunk is written; otherwise raises like :meth:`publish`."""
        new = 0
        for start in range(0, len(signals), PUBLISH_CHUNK):
            replies = await self._run_publish(signals[start:start + PUBLISH_CHUNK], allow_unregistered)
            new += sum(1 for reply in replies if reply and reply[0] == 1)
        return new

    async def _run_publish(self, signals: Sequence[Signal], allow_unregistered: bool) -> list[Any]:
        self._check_lifetimes(signals)
        if self.per_slot:
            return await self._run_publish_per_slot(signals, allow_unregistered)
        untargeted = sorted({s.signal_type for s in signals if not s.target_agents})
        attempt = 0
        while True:  # subscribers changed under the client: refresh them and retry (4 times)
            attempt += 1
            missing = [t for t in untargeted if t not in self._subscribers]
            if missing:
                await self._load_subscribers(missing)
            plan = self._plan(signals)
            keys, args = self._publish_call(plan, range(len(signals)), list(plan.targets),
                                            sorted(plan.shards), untargeted, allow_unregistered, "all")
            async with translate_redis_errors():
                try:
                    return await self._publish_once(keys, args)
                except redis_errors.ResponseError as exc:
                    text = str(exc)
                    if "SUBSCRIBERS_CHANGED" in text and attempt < 5:
                        for signal_type in untargeted:
                            self._subscribers.pop(signal_type, None)
                        continue
                    raise publish_error(text) from None

    async def _run_publish_per_slot(self, signals: Sequence[Signal], allow_unregistered: bool) -> list[Any]:
        """Publish on a Redis Cluster: one script call per slot (a target's keys, a shard's
        record and log), all in one round trip; when they span several slots, a round trip of
        checks first, so a refusal (unknown agent, full inbox, bad key) writes nothing.
        Subscribers are read afresh for every call. A write that fails in one slot after others
        succeeded raises PublishIncomplete: publishing the same signals again completes them."""
        untargeted = sorted({s.signal_type for s in signals if not s.target_agents})
        await self._load_subscribers(untargeted)
        plan = self._plan(signals)
        groups: dict[int, tuple[list[str], list[int]]] = {}
        for target in plan.targets:
            groups.setdefault(key_slot(self.keys.inbox(target).encode()), ([], []))[0].append(target)
        for shard in sorted(plan.shards):
            groups.setdefault(key_slot(self.keys.signal_log(shard).encode()), ([], []))[1].append(shard)
        calls = []
        for targets, shards in groups.values():
            wanted = set(targets)
            indexes = [n for n, names in enumerate(plan.names)
                       if wanted.intersection(names) or plan.shard_of[n] in shards]
            calls.append((indexes, targets, shards))
        async with translate_redis_errors():
            if len(calls) > 1:
                checks = await self._publish_round(plan, calls, allow_unregistered, "check")
                for reply in checks:
                    if isinstance(reply, Exception):
                        raise _publish_refusal(reply)
            results = await self._publish_round(plan, calls, allow_unregistered, "write")
        replies: list[list[Any]] = [[0] for _ in signals]
        delivered: set[str] = set()
        failed: list[tuple[list[str], Exception]] = []
        for (indexes, targets, _shards), result in zip(calls, results, strict=True):
            if isinstance(result, Exception):
                failed.append((targets, result))
                continue
            delivered.update(targets)
            for n, reply in zip(indexes, result, strict=True):
                replies[n][0] = max(replies[n][0], int(reply[0]))
                replies[n] += reply[1:]
        if failed and not delivered and len(failed) == len(calls):
            raise _publish_refusal(failed[0][1])
        if failed:
            lacking = sorted({t for targets, _ in failed for t in targets})
            raise PublishIncomplete(
                f"publish incomplete: {', '.join(lacking) or 'the signal record'} did not get "
                f"{len(signals)} signal(s) ({_publish_refusal(failed[0][1])}); publishing the same "
                f"signal(s) again completes it and delivers nothing twice")
        return replies

    async def _publish_once(self, keys: list[str], args: list[str | int]) -> list[Any]:
        """One publish-script call on one Redis; with HIVEBUS_PUBLISH_REPLICAS, followed on the
        same connection by WAIT, so the publish returns once that many replicas have it."""
        replicas = self.settings.publish_replicas
        if not replicas:
            return list(await self._publish(keys=keys, args=args))
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            pipe.execute_command("EVALSHA", self._publish.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", replicas, self.settings.publish_wait_ms)
            reply, acked = await pipe.execute(raise_on_error=False)
            if isinstance(reply, redis_errors.NoScriptError) and attempt == 1:
                await self.redis.script_load(PUBLISH)  # a new or restarted server
                continue
            if isinstance(reply, Exception):
                raise reply
            self._check_replicated([acked])
            break
        return list(reply)

    def _check_replicated(self, acks: Sequence[Any]) -> None:
        """Raise NotReplicated unless every WAIT saw HIVEBUS_PUBLISH_REPLICAS replicas."""
        wanted = self.settings.publish_replicas
        short = [a for a in acks if isinstance(a, Exception) or int(a) < wanted]
        if short:
            seen = min((int(a) for a in short if not isinstance(a, Exception)), default=0)
            raise NotReplicated(
                f"published, but {seen} of the {wanted} replica(s) HIVEBUS_PUBLISH_REPLICAS asks "
                f"for confirmed it within {self.settings.publish_wait_ms} ms: a failover now could "
                f"lose it; publishing the same signal(s) again is safe")

    async def _publish_round(self, plan: _Plan, calls: list[tuple[list[int], list[str], list[int]]],
                             allow_unregistered: bool, mode: str) -> list[Any]:
        """:meth:`_publish_slots`; where a node lacks the script (a new node, a replica promoted
        by a failover), it is loaded on every primary and the round runs again — harmless, as
        a publish is idempotent per target."""
        replies = await self._publish_slots(plan, calls, allow_unregistered, mode)
        if any(isinstance(r, redis_errors.NoScriptError) for r in replies):
            await self.redis.script_load(PUBLISH)
            replies = await self._publish_slots(plan, calls, allow_unregistered, mode)
        return replies

    async def _publish_slots(self, plan: _Plan, calls: list[tuple[list[int], list[str], list[int]]],
                             allow_unregistered: bool, mode: str) -> list[Any]:
        """One pipelined call per slot; when writing with HIVEBUS_PUBLISH_REPLICAS, each call is
        followed by a WAIT on its slot's node (the same connection, after the write)."""
        waiting = mode == "write" and self.settings.publish_replicas > 0
        pipe = self.redis.pipeline(transaction=False)
        for indexes, targets, shards in calls:
            keys, args = self._publish_call(plan, indexes, targets, shards, [], allow_unregistered, mode)
            pipe.execute_command("EVALSHA", self._publish.sha, len(keys), *keys, *args)
            if waiting:  # on a cluster, to the node of the call's slot
                where = ({"target_nodes": self.redis.get_node_from_key(keys[0])}
                         if isinstance(self.redis, RedisCluster) else {})
                pipe.execute_command("WAIT", self.settings.publish_replicas, self.settings.publish_wait_ms,
                                     **where)
        replies = list(await pipe.execute(raise_on_error=False))
        if not waiting:
            return replies
        results, acks = replies[0::2], replies[1::2]
        if not any(isinstance(r, Exception) for r in results):
            self._check_replicated(acks)
        return results

    def _plan(self, signals: Sequence[Signal]) -> _Plan:
        """Each signal's targets (its own, or its type's subscribers as last read) and shard."""
        plan = _Plan(signals)
        for signal in signals:
            names = signal.target_agents or self._subscribers[signal.signal_type]
            plan.names.append(list(names))
            for target in names:
                plan.targets.setdefault(target, None)
            shard = signal_shard(signal.signal_id)
            plan.shard_of.append(shard)
            plan.shards.add(shard)
        return plan

    async def _load_subscribers(self, signal_types: Sequence[str]) -> None:
        if not signal_types:
            return
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for signal_type in signal_types:
                pipe.smembers(self.keys.subscribers(signal_type))
            found = await pipe.execute()
        for signal_type, members in zip(signal_types, found, strict=True):
            self._subscribers[signal_type] = sorted(members)

    def _check_lifetimes(self, signals: Sequence[Signal]) -> None:
        """Refuse a signal that would outlive HIVEBUS_SIGNAL_TTL_S: retention expires inbox
        entries by that age, and agents remember settled ids only a grace period beyond it."""
        latest = now_s() + self.settings.signal_ttl_s + 1
        for signal in signals:
            if signal.expires_at > latest:
                raise InvalidInput(
                    f"signal {signal.signal_id} expires {signal.expires_at - now_s():.0f} s from now, "
                    f"later than HIVEBUS_SIGNAL_TTL_S ({self.settings.signal_ttl_s} s) allows; give it "
                    f"a shorter ttl or raise HIVEBUS_SIGNAL_TTL_S")

    def _publish_call(self, plan: _Plan, indexes: Sequence[int], targets: list[str], shards: list[int],
                      untargeted: list[str], allow_unregistered: bool,
                      mode: str) -> tuple[list[str], list[str | int]]:
        """KEYS and ARGV of one publish-script call (see coordinator/infra/lua/publish.lua): the
        signals ``indexes`` of the plan, delivered to those of ``targets`` they name and
        recorded when their shard is one of ``shards``."""
        target_index = {t: i for i, t in enumerate(targets, 1)}
        shard_index = {s: i for i, s in enumerate(shards, 1)}
        apart = mode != "all"  # a signal's record may be in another call than its deliveries
        batch = []
        records = []
        for n in indexes:
            signal = plan.signals[n]
            shard = shard_index.get(plan.shard_of[n], 0)
            if shard:
                records.append(self.keys.signal(signal.signal_id))
            item: list[Any] = [self._signal_ttl_ms(signal),
                               [target_index[t] for t in plan.names[n] if t in target_index],
                               1 if signal.target_agents else 0, shard, self._fields(signal)]
            if apart:
                item.append(plan.names[n])
            batch.append(item)
        keys = [self.keys.subscribers(t) for t in untargeted]
        for target in targets:
            keys += [self.keys.inbox(target), self.keys.pending(target), self.keys.done(target),
                     self.keys.agent(target)]
        for shard in shards:
            keys += [self.keys.signal_log(shard), self.keys.published(shard)]
        keys += records
        payload = {"y": [[t, self._subscribers[t]] for t in untargeted], "t": targets,
                   "s": len(shards), "b": batch}
        args: list[str | int] = [self.settings.inbox_max, self.settings.log_stream_maxlen,
                                 1 if allow_unregistered else 0, mode,
                                 json.dumps(payload, separators=(",", ":"))]
        return keys, args

    def _fields(self, signal: Signal) -> list[str]:
        """The signal's fields, flat ('id', 'type', 'source' first). Raises InvalidInput (too large)."""
        fields = signal.to_fields()
        if len(fields["data"]) > self.settings.max_payload_bytes:
            raise InvalidInput(
                f"signal data is {len(fields['data'])} bytes; the limit is "
                f"{self.settings.max_payload_bytes} (HIVEBUS_MAX_PAYLOAD_BYTES)"
            )
        return [x for pair in fields.items() for x in pair]

    def _signal_ttl_ms(self, signal: Signal) -> int:
        # the signal key outlives the signal by a grace period, so its status stays readable
        return max(1, int((signal.expires_at - now_s() + self.settings.signal_grace_s) * 1000))

    # --- consuming ----------------------------------------------------------------
    async def ensure_group(self, agent_id: str, start: str = "0") -> bool:
        """Create the agent's inbox and consumer group if missing; return whether it was created.

        A group is created reading from ``start``; ``0`` means every entry the inbox still
        holds is delivered again, and the ledger keeps what was settled from running twice."""
        async with translate_redis_errors():
            try:
                await self.redis.xgroup_create(self.keys.inbox(agent_id), agent_id, id=start, mkstream=True)
            except redis_errors.ResponseError as exc:
                if "BUSYGROUP" in str(exc):
                    return False
                if "WRONGTYPE" in str(exc):
                    raise BadKey(f"{self.keys.inbox(agent_id)} is not a stream (edited by hand?)") from None
                raise
        return True

    async def read(
        self, agent_id: str, consumer: str, *, count: int, block_ms: int | None
    ) -> list[Delivery]:
        """Read up to ``count`` new entries for ``consumer`` in the agent's group."""
        async with translate_redis_errors():
            reply = await self.redis.xreadgroup(
                agent_id, consumer, {self.keys.inbox(agent_id): ">"}, count=count, block=block_ms
            )
        return self._deliveries(reply)

    def _deliveries(self, reply: Any) -> list[Delivery]:
        """Decode an XREADGROUP reply."""
        deliveries: list[Delivery] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                deliveries.append(decode_delivery(entry_id, fields, self.settings.max_payload_bytes))
        return deliveries

    async def settle(self, agent_id: str, consumer: str, outcomes: Sequence[Outcome]) -> Settled:
        """Record a batch's outcomes in one fenced script call: effects, ack, ledger, retries,
        dead letters, counters — for the entries ``consumer`` still owns, and only once."""
        if not outcomes:
            return Settled()
        keys, args = self._settle_call(agent_id, consumer, outcomes)
        async with translate_redis_errors():
            try:
                return _settled(await self._settle(keys=keys, args=args))
            except redis_errors.ResponseError as exc:
                raise publish_error(str(exc)) from None

    async def settle_and_read(
        self, agent_id: str, consumer: str, outcomes: Sequence[Outcome], *, count: int,
        block_ms: int | None,
    ) -> tuple[Settled | RedisUnavailable, list[Delivery]]:
        """Settle ``outcomes`` and read the next batch in one round trip: a pipeline of the settle
        script and the read, which Redis runs in that order (so the next batch's handlers see
        this batch's effects). The settle's failure is returned beside what was read, not raised
        (the read's entries must not be dropped with it); a failed read raises."""
        keys, args = self._settle_call(agent_id, consumer, outcomes)
        async with translate_redis_errors():
            if not self._settle_loaded:  # else a NOSCRIPT would wait for the read to return
                await self.redis.script_load(SETTLE)
                self._settle_loaded = True
            pipe = self.redis.pipeline(transaction=False)
            # EVALSHA as a plain command: a cluster pipeline refuses its evalsha method
            pipe.execute_command("EVALSHA", self._settle.sha, len(keys), *keys, *args)
            pipe.xreadgroup(agent_id, consumer, {self.keys.inbox(agent_id): ">"}, count=count,
                            block=block_ms)
            settle_reply, read_reply = await pipe.execute(raise_on_error=False)
            if isinstance(read_reply, Exception):
                raise read_reply
        deliveries = self._deliveries(read_reply)
        try:
            async with translate_redis_errors():
                if isinstance(settle_reply, redis_errors.NoScriptError):  # a restarted server
                    settle_reply = await self._settle(keys=keys, args=args)  # loads it, runs it
                if isinstance(settle_reply, redis_errors.ResponseError):
                    raise publish_error(str(settle_reply))
                if isinstance(settle_reply, Exception):
                    raise settle_reply
                return _settled(settle_reply), deliveries
        except RedisUnavailable as exc:
            return exc, deliveries

    def _settle_call(self, agent_id: str, consumer: str,
                     outcomes: Sequence[Outcome]) -> tuple[list[str], list[str]]:
        """KEYS and ARGV of one settle-script call (see coordinator/infra/lua/settle.lua)."""
        keys = [self.keys.inbox(agent_id), self.keys.pending(agent_id), self.keys.done(agent_id),
                self.keys.status(agent_id), self.keys.retries(agent_id), self.keys.dead_letters(agent_id),
                self.keys.agent(agent_id)]
        key_index: dict[str, int] = {}
        entries = []
        for outcome in outcomes:
            delivery = outcome.delivery
            # a failure may turn DEAD in the script (at the max deliveries): it needs the original too
            unprocessed = outcome.status is not SignalStatus.PROCESSED
            original = json.dumps(delivery.fields, separators=(",", ":")) if unprocessed else ""
            effects = []
            if outcome.status is SignalStatus.PROCESSED:
                for command, key, *rest in outcome.effects:
                    index = key_index.get(key)
                    if index is None:
                        keys.append(key)
                        index = key_index[key] = len(keys)
                    effects.append([command, index, *rest])
            entries.append([delivery.entry_id, delivery.signal.signal_id if delivery.signal else "",
                            outcome.status.value, printable(outcome.reason), original,
                            random.random(), 1 if delivery.redelivered else 0, effects])
        ids = [o.delivery.entry_id for o in outcomes]
        payload = {"g": agent_id, "c": consumer, "now": int(now_s() * 1000),
                   "keep": self.settings.ledger_ttl_ms, "dlq": DLQ_MAXLEN,
                   "max": self.settings.max_deliveries, "base": int(self.settings.retry_base_s * 1000),
                   "cap": int(self.settings.retry_max_s * 1000), "retain": self.settings.inbox_retain,
                   "lo": min(ids, key=entry_order), "hi": max(ids, key=entry_order), "e": entries}
        return keys, [json.dumps(payload, separators=(",", ":"))]

    async def processed(self, agent_id: str, signal_ids: Sequence[str]) -> set[str]:
        """Which of ``signal_ids`` the agent has settled already (its ``done`` ledger holds them)."""
        if not signal_ids:
            return set()
        async with translate_redis_errors():
            scores = await self.redis.zmscore(self.keys.done(agent_id), list(signal_ids))
        return {s for s, score in zip(signal_ids, scores, strict=True) if score is not None}

    # --- inspecting -----------------------------------------------------------------
    async def report(self, signal_id: str) -> SignalReport:
        """The signal and its status per target. Raises NotFound, InvalidId."""
        key = self.keys.signal(check_signal_id(signal_id))
        async with translate_redis_errors():
            raw = text_or_none(await self.redis.get(key))
        record = _record(raw)
        if record is None:
            raise NotFound(f"no signal {signal_id} (unknown, or expired after its TTL)")
        to = sorted(record["to"].items())
        pipe = self.redis.pipeline(transaction=False)
        for agent_id, _entry in to:
            pipe.hget(self.keys.pending(agent_id), signal_id)
            pipe.hget(self.keys.status(agent_id), signal_id)
            pipe.zscore(self.keys.done(agent_id), signal_id)
        async with translate_redis_errors():
            found = await pipe.execute(raise_on_error=False)
            # a record written apart from its deliveries (a Redis Cluster) names no entry: the
            # target's pending or status record does, while the signal is unsettled or failed
            entries = [entry or _entry_of(*found[3 * n:3 * n + 2]) for n, (_, entry) in enumerate(to)]
            pipe = self.redis.pipeline(transaction=False)
            for (agent_id, _), entry in zip(to, entries, strict=True):
                pipe.xpending_range(self.keys.inbox(agent_id), agent_id, entry or "-", entry or "-", 1)
            pels = await pipe.execute(raise_on_error=False)
        targets = [_target_status(agent_id, entries[n] or None, *found[3 * n:3 * n + 3],
                                  pel=pels[n] if entries[n] else None)
                   for n, (agent_id, _) in enumerate(to)]
        return SignalReport(await self._body(signal_id, record), targets)

    async def _body(self, signal_id: str, record: dict[str, Any]) -> Signal:
        """The signal's fields: from its key when kept there, else from a target's inbox entry."""
        if isinstance(record.get("fields"), dict):
            return Signal.from_fields({str(k): str(v) for k, v in record["fields"].items()})
        async with translate_redis_errors():
            for agent_id, entry in sorted(record["to"].items()):
                found = stream_entries(await self.redis.xrange(self.keys.inbox(agent_id), entry, entry))
                if found:
                    return Signal.from_fields(found[0][1])
        raise NotFound(f"signal {signal_id} is known but its entries were trimmed from every inbox")

    async def records(self, signal_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Each signal's key (type, source, ``to``: target -> entry), None when gone; one round trip."""
        if not signal_ids:
            return []
        async with translate_redis_errors():  # GETs, not one MGET: the records are in 16 shards
            pipe = self.redis.pipeline(transaction=False)
            for signal_id in signal_ids:
                pipe.get(self.keys.signal(signal_id))
            raws = await pipe.execute()
        return [_record(raw) for raw in raws]

    async def statuses(self, pairs: Sequence[tuple[str, str]]) -> list[SignalStatus]:
        """The status of each (signal id, target agent), from the target's records; one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for signal_id, agent_id in pairs:
            pipe.hget(self.keys.pending(agent_id), signal_id)
            pipe.hget(self.keys.status(agent_id), signal_id)
            pipe.zscore(self.keys.done(agent_id), signal_id)
        async with translate_redis_errors():
            found = await pipe.execute(raise_on_error=False)
        return [_target_status(agent_id, "", *found[3 * n:3 * n + 3], pel=None).status
                for n, (_, agent_id) in enumerate(pairs)]

    async def recent(self, count: int = 20) -> list[dict[str, str]]:
        """The last ``count`` published signals from the signal log, newest first (the newest
        ``count`` of each shard, merged by signal id, which orders signals by creation time)."""
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for log in self.keys.signal_logs():
                pipe.xrevrange(log, count=count)
            shards = await pipe.execute()
        logged = sorted((entry for shard in shards for entry in stream_entries(shard)),
                        key=lambda entry: entry[1].get("id", ""), reverse=True)[:count]
        rows = []
        for entry_id, fields in logged:  # text that is not UTF-8 (written by hand) shown escaped
            rows.append({"entry": entry_id, **{printable(k): printable(v) for k, v in fields.items()}})
        return rows

    async def log_heads(self) -> list[str]:
        """The last entry id of each shard of the signal log (``0-0`` for an empty shard)."""
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for log in self.keys.signal_logs():
                pipe.xrevrange(log, count=1)
            shards = await pipe.execute()
        return [last[0][0] if last else "0-0" for last in map(stream_entries, shards)]

    async def logged_after(self, heads: Sequence[str]) -> tuple[list[Entry], list[str]]:
        """The signal-log entries after ``heads`` (one entry id per shard, as :meth:`log_heads`
        gives), ordered by signal id, and the new heads."""
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for log, head in zip(self.keys.signal_logs(), heads, strict=True):
                pipe.xrange(log, min=f"({head}")
            shards = [stream_entries(reply) for reply in await pipe.execute()]
        moved = [shard[-1][0] if shard else head for shard, head in zip(shards, heads, strict=True)]
        entries = sorted((entry for shard in shards for entry in shard), key=lambda e: e[1].get("id", ""))
        return entries, moved


def _record(raw: str | None) -> dict[str, Any] | None:
    """A signal key's JSON, with ``to`` as target -> entry id; None when missing or unreadable."""
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    to = record.get("to")
    record["to"] = {str(k): str(v) for k, v in to.items()} if isinstance(to, dict) else {}
    return record


def _entry_of(pending: Any, status: Any) -> str:
    """The inbox entry a target's pending record (``<entry> <attempts> …``) or status record
    (``<STATE> <entry> …``) names, else ''."""
    if isinstance(pending, str) and pending:
        return pending.split(" ", 1)[0]
    if isinstance(status, str) and len(status.split(" ")) > 1:
        return status.split(" ")[1]
    return ""


def _target_status(agent_id: str, entry: str | None, pending: Any, status: Any, done: Any, *,
                   pel: Any) -> TargetStatus:
    """One target's status from its pending record, status record, ledger and pending-entries list."""
    deliveries, consumer = 0, None
    if isinstance(pel, list) and pel:
        deliveries, consumer = int(pel[0]["times_delivered"]), str(pel[0]["consumer"])
    if isinstance(pending, str):
        parts = pending.split(" ", 2)
        attempts = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        error = parts[2] if len(parts) > 2 else None
        state = SignalStatus.FAILED if error else SignalStatus.PENDING
        if consumer is not None and not error:
            state = SignalStatus.PROCESSING
        return TargetStatus(agent_id, state, entry, error, deliveries, consumer, attempts)
    if isinstance(status, str):
        parts = status.split(" ", 3)
        try:
            state = SignalStatus(parts[0])
        except ValueError:
            state = SignalStatus.DEAD
        attempts = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0
        return TargetStatus(agent_id, state, entry, parts[3] if len(parts) > 3 else None,
                            deliveries, consumer, attempts)
    if done is not None and not isinstance(done, Exception):
        return TargetStatus(agent_id, SignalStatus.PROCESSED, entry, None, deliveries, consumer)
    return TargetStatus(agent_id, SignalStatus.PENDING, entry, None, deliveries, consumer)


def decode_delivery(entry_id: str, fields: dict[str, str], max_data: int | None = None,
                    *, redelivered: bool = False) -> Delivery:
    """Decode one inbox entry; a malformed, oversize or undecodable entry becomes a Delivery
    carrying the error (its raw fields kept, bytes that are not UTF-8 escaped)."""
    fields = fields or {}
    for name, value in fields.items():
        if not _is_text(name) or not _is_text(value):
            return Delivery(entry_id, {printable(k): printable(v) for k, v in fields.items()}, None,
                            f"malformed entry: field '{printable(name)}' holds bytes that are not UTF-8",
                            redelivered)
    if max_data is not None and len(fields.get("data", "")) > max_data:
        return Delivery(entry_id, fields, None,
                        f"malformed entry: data is {len(fields['data'])} bytes; the limit is {max_data}",
                        redelivered)
    try:
        return Delivery(entry_id, fields, Signal.from_fields(fields), None, redelivered)
    except InvalidInput as exc:
        return Delivery(entry_id, fields, None, f"malformed entry: {printable(str(exc))}", redelivered)


def _is_text(value: object) -> bool:
    """Whether a decoded reply is valid UTF-8 text (the client maps other bytes to surrogates)."""
    if not isinstance(value, str):
        return False
    if value.isascii():  # the usual case, checked in C
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _settled(reply: Any) -> Settled:
    letters = tuple((str(reply[i]), str(reply[i + 1])) for i in range(5, len(reply), 2))
    return Settled(int(reply[0]), int(reply[1]), int(reply[2]), int(reply[3]), int(reply[4]), letters)


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


def is_cluster(redis: Redis) -> bool:
    """Whether ``redis`` is a Redis Cluster client (its calls must name keys of one slot)."""
    return isinstance(redis, RedisCluster)


def _publish_refusal(reply: Exception) -> Exception:
    """The hivebus error for a failed publish-script call of a pipeline."""
    if isinstance(reply, redis_errors.ResponseError):
        refusal = publish_error(str(reply))
        return refusal if isinstance(refusal, HivebusError) else redis_unavailable(reply)
    if isinstance(reply, (redis_errors.RedisError, redis_errors.RedisClusterException, OSError)):
        return redis_unavailable(reply)  # a node gone mid-call (a failover): one line, retryable
    return reply


def publish_error(text: str) -> Exception:
    """The hivebus error a script's error reply stands for (UNKNOWN_AGENT, INBOX_FULL, BAD_KEY),
    else a redis-py ResponseError to be translated as usual."""
    if "UNKNOWN_AGENT" in text:
        agent = text.split("UNKNOWN_AGENT", 1)[1].strip().split()[0]
        return UnknownAgent(
            f"agent {agent!r} has never registered (start it first, or pass --allow-unregistered)"
        )
    if "INBOX_FULL" in text:
        agent, backlog = [*text.split("INBOX_FULL", 1)[1].split(), "?", "?"][:2]
        return InboxFull(f"agent {agent!r} has {backlog} unsettled signals, the most its inbox takes "
                         f"(HIVEBUS_INBOX_MAX): it is stopped or behind; try again later")
    if "BAD_KEY" in text:
        message = text.split("BAD_KEY", 1)[1].strip().split(" script:")[0].strip()
        return BadKey(message, message.split(" ", 1)[0])
    return redis_errors.ResponseError(text)
