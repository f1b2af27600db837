"""The agent registry: who is registered, which replicas run, and who is alive.

An agent id is registered once (``hive:agents:{~registry}``, ``hive:agent:{<id>}``); each running
process of it is an *instance* with a heartbeat key that expires unless refreshed.
Liveness is read from the heartbeat keys, so a SIGKILLed process is seen dead as
soon as its heartbeat TTL runs out; the coordinator then removes the dead instance
and marks the agent ``dead`` when none of its instances is left.

The agent's own keys (its hash, with ``subscriptions``; instances; heartbeats) are in its Redis
Cluster slot, the agents set and the subscriber sets in the registry's (``{~registry}``), so a
registration is a transaction in each, in an order that keeps one rule at every instant: **an
agent is in a subscriber set only while its hash lists that type** (it leaves the sets of the
types it drops before its hash changes, and joins those of its types after). It joins the agents
set after its hash exists, and leaves it last when removed. Interrupted part-way (the process
died, Redis went away), what is left reads as the registration before (or the removal not
done yet), and the coordinator's pass (:meth:`Registry.repair`) completes it: a registered
agent with no live replica is added to the subscriber sets its hash lists, and an agents-set
member whose hash and instances are gone (a removal cut short) leaves the registry.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from hivebus.domain.clock import now_s
from hivebus.domain.errors import InvalidInput, NotFound
from hivebus.domain.keys import (
    AGENT_ID_RE,
    SIGNAL_SHARDS,
    SIGNAL_TYPE_RE,
    Keys,
    check_agent_id,
    check_signal_type,
)
from hivebus.infra.redis_errors import Redis, text_or_none, text_set, translate_redis_errors
from hivebus.settings import Settings


@dataclass(frozen=True, slots=True)
class Instance:
    """One running process of an agent."""

    instance_id: str
    host: str
    pid: int
    started_at: float
    alive: bool = False

    @classmethod
    def here(cls, agent_id: str) -> Instance:
        """Describe the current process as an instance of ``agent_id``."""
        host = socket.gethostname()
        safe_host = "".join(c if c.isalnum() or c in "-_." else "-" for c in host)[:64] or "host"
        return cls(f"{safe_host}-{os.getpid()}-{os.urandom(2).hex()}", host, os.getpid(), now_s())


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """A registered agent as the registry sees it."""

    agent_id: str
    agent_type: str
    subscriptions: tuple[str, ...]
    version: str
    status: str
    registered_at: float
    last_seen: float | None
    counters: dict[str, int]
    instances: list[Instance] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        """True when at least one instance has a live heartbeat."""
        return any(i.alive for i in self.instances)


COUNTER_FIELDS = ("published", "processed", "dead", "expired")


class Registry:
    """Reads and writes the agent registry."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self.skipped: list[str] = []  # registry members list_agents left out: not agent ids

    async def register(
        self,
        agent_id: str,
        instance: Instance,
        *,
        agent_type: str,
        subscriptions: tuple[str, ...],
        version: str,
    ) -> None:
        """Register (or re-register) ``agent_id`` and start ``instance``'s heartbeat: out of the
        subscriber sets of the types it no longer handles, then its hash, instance and heartbeat
        (one transaction in its slot), then into the agents set and the subscriber sets of its
        types (one in the registry's)."""
        check_agent_id(agent_id)
        subs = tuple(sorted({check_signal_type(s) for s in subscriptions}))
        agent_key = self.keys.agent(agent_id)
        async with translate_redis_errors():
            previous = text_or_none(await self.redis.hget(agent_key, "subscriptions")) or ""
            dropped = sorted(set(filter(None, previous.split(","))) - set(subs))
            if dropped:
                pipe = self.redis.pipeline(transaction=True)  # the registry's slot
                for old in dropped:
                    pipe.srem(self.keys.subscribers(old), agent_id)
                await pipe.execute()
            pipe = self.redis.pipeline(transaction=True)  # the agent's slot
            pipe.hsetnx(agent_key, "registered_at", f"{now_s():.3f}")
            pipe.hset(
                agent_key,
                mapping={
                    "type": agent_type,
                    "subscriptions": ",".join(subs),
                    "version": version,
                    "status": "active",
                    "last_seen": f"{now_s():.3f}",
                },
            )
            pipe.hset(self.keys.instances(agent_id), instance.instance_id, _instance_json(instance))
            pipe.set(
                self.keys.heartbeat(agent_id, instance.instance_id),
                f"{now_s():.3f}",
                px=int(self.settings.heartbeat_ttl_s * 1000),
            )
            await pipe.execute()
            pipe = self.redis.pipeline(transaction=True)  # the registry's slot
            pipe.sadd(self.keys.agents(), agent_id)
            for sub in subs:
                pipe.sadd(self.keys.subscribers(sub), agent_id)
            await pipe.execute()

    async def register_publisher(self, agent_id: str) -> None:
        """Register a source that only publishes (the CLI's ``cli``), so that replies to what it
        publishes are accepted and wait in its inbox; a real agent of that id is left as it is."""
        agent_key = self.keys.agent(check_agent_id(agent_id))
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=True)  # the agent's slot, then the registry's
            pipe.hsetnx(agent_key, "registered_at", f"{now_s():.3f}")
            pipe.hsetnx(agent_key, "type", "publisher")
            pipe.hsetnx(agent_key, "status", "stopped")
            await pipe.execute()
            await self.redis.sadd(self.keys.agents(), agent_id)

    async def heartbeat(self, agent_id: str, instance: Instance) -> None:
        """Refresh ``instance``'s heartbeat key: one command, so an idle agent costs little.

        ``last_seen`` is written when an instance registers, stops, or is found dead."""
        async with translate_redis_errors():
            await self.redis.set(self.keys.heartbeat(agent_id, instance.instance_id), f"{now_s():.3f}",
                                 px=int(self.settings.heartbeat_ttl_s * 1000))

    async def deregister(self, agent_id: str, instance: Instance) -> None:
        """Remove ``instance``; mark the agent ``stopped`` when it was the last one running.

        The agent stays registered: signals sent to it wait in its inbox until it returns.
        """
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=True)
            pipe.hdel(self.keys.instances(agent_id), instance.instance_id)
            pipe.delete(self.keys.heartbeat(agent_id, instance.instance_id))
            pipe.hlen(self.keys.instances(agent_id))
            pipe.hset(self.keys.agent(agent_id), "last_seen", f"{now_s():.3f}")
            _, _, remaining, _ = await pipe.execute()
            if remaining == 0:
                await self.redis.hset(self.keys.agent(agent_id), "status", "stopped")

    async def remove(self, agent_id: str, *, force: bool = False) -> AgentInfo:
        """Deregister ``agent_id`` for good: out of the registry and its subscriptions (publishing
        to it then says it never registered). Refused while a replica is alive, unless
        ``force``. Its inbox, dead letters and memory stay. Raises NotFound, InvalidInput."""
        info = await self.get(agent_id)
        alive = [i.instance_id for i in info.instances if i.alive]
        if alive and not force:
            raise InvalidInput(f"agent {agent_id!r} has {len(alive)} live replica(s) "
                               f"({', '.join(alive)}): stop them first, or --force")
        await self.unregister(agent_id, info.subscriptions)
        return info

    async def unregister(self, agent_id: str, subscriptions: Iterable[str]) -> None:
        """Take ``agent_id`` out of the registry for good, in three steps: out of the subscriber
        sets of ``subscriptions`` (its hash's), then its hash and instances deleted (its slot),
        then out of the agents set. Cut short after the first, the agent is still registered
        (the pass adds it to its sets again, as its hash says, and a removal can run again);
        after the second, the pass finishes it."""
        check_agent_id(agent_id)
        types = _signal_types(subscriptions)
        async with translate_redis_errors():
            if types:
                pipe = self.redis.pipeline(transaction=True)  # the registry's slot
                for signal_type in types:
                    pipe.srem(self.keys.subscribers(signal_type), agent_id)
                await pipe.execute()
            await self.redis.delete(self.keys.agent(agent_id), self.keys.instances(agent_id))
            await self.redis.srem(self.keys.agents(), agent_id)

    async def repair(self) -> int:
        """Complete registrations and removals cut short (see the module docstring); return how
        many agents it changed. Agents with a live replica are left alone (theirs finished: a
        registration that fails stops the replica)."""
        infos = [info for info in await self.list_agents() if not info.alive]
        if not infos:
            return 0
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for info in infos:
                pipe.exists(self.keys.agent(info.agent_id), self.keys.instances(info.agent_id))
                for signal_type in _signal_types(info.subscriptions):
                    pipe.sismember(self.keys.subscribers(signal_type), info.agent_id)
            found = iter(await pipe.execute())
            missing: list[tuple[str, str]] = []  # (signal type, agent) its hash lists, not in the set
            gone: list[str] = []  # agents-set members with neither a hash nor instances
            for info in infos:
                if not int(next(found)):
                    gone.append(info.agent_id)
                for signal_type in _signal_types(info.subscriptions):
                    if not next(found):
                        missing.append((signal_type, info.agent_id))
            if gone:  # looked at again just before: registering (hash first) brings one back
                pipe = self.redis.pipeline(transaction=False)
                for agent_id in gone:
                    pipe.exists(self.keys.agent(agent_id), self.keys.instances(agent_id))
                gone = [a for a, n in zip(gone, await pipe.execute(), strict=True) if not int(n)]
            if not missing and not gone:
                return 0
            pipe = self.redis.pipeline(transaction=True)  # the registry's slot
            for signal_type, agent_id in missing:
                pipe.sadd(self.keys.subscribers(signal_type), agent_id)
            if gone:
                pipe.srem(self.keys.agents(), *gone)
            await pipe.execute()
        return len({a for _, a in missing} | set(gone))

    async def get(self, agent_id: str) -> AgentInfo:
        """One registered agent with its instances' liveness. Raises NotFound, InvalidId."""
        if not await self.is_registered(agent_id):
            raise NotFound(f"no registered agent {agent_id!r}")
        [info] = await self._infos([agent_id])
        return info

    async def is_registered(self, agent_id: str) -> bool:
        """Whether ``agent_id`` has ever registered."""
        async with translate_redis_errors():
            return bool(await self.redis.sismember(self.keys.agents(), check_agent_id(agent_id)))

    async def list_agents(self) -> list[AgentInfo]:
        """Every registered agent with its instances and their liveness, sorted by id. Registry
        members that are not agent ids (edited by hand) are left out, and listed in ``skipped``
        (the coordinator sets them aside)."""
        async with translate_redis_errors():
            members = sorted(text_set(await self.redis.smembers(self.keys.agents())))
        self.skipped = [a for a in members if not AGENT_ID_RE.fullmatch(a)]
        return await self._infos([a for a in members if AGENT_ID_RE.fullmatch(a)])

    async def _infos(self, agent_ids: list[str]) -> list[AgentInfo]:
        """The registry entries of ``agent_ids`` with their instances' liveness (two round trips)."""
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for agent_id in agent_ids:
                pipe.hgetall(self.keys.agent(agent_id))
                pipe.hgetall(self.keys.instances(agent_id))
            raw = await pipe.execute()
            infos = []
            hb_pipe = self.redis.pipeline(transaction=False)
            for index, agent_id in enumerate(agent_ids):
                fields, instances = raw[2 * index], raw[2 * index + 1]
                for instance_id in instances:
                    hb_pipe.get(self.keys.heartbeat(agent_id, instance_id))
                infos.append((agent_id, fields, instances))
            if agent_ids:  # published counters: one hash per shard of the signal log, summed
                for log_shard in range(SIGNAL_SHARDS):
                    hb_pipe.hmget(self.keys.published(log_shard), agent_ids)
            replies = await hb_pipe.execute()
        beats = iter(replies[:len(replies) - (SIGNAL_SHARDS if agent_ids else 0)])
        published = [sum(int(_number(counts[n])) for counts in replies[len(replies) - SIGNAL_SHARDS:])
                     for n in range(len(agent_ids))] if agent_ids else []
        return [_agent_info(agent_id, {**fields, "published": str(count)}, instances, beats)
                for (agent_id, fields, instances), count in zip(infos, published, strict=True)]

    async def reap_dead(self) -> list[tuple[str, Instance]]:
        """Remove instances whose heartbeat expired; mark agents with none left ``dead``.

        Returns the (agent id, instance) pairs removed.
        """
        removed: list[tuple[str, Instance]] = []
        for info in await self.list_agents():
            dead = [i for i in info.instances if not i.alive]
            if not dead:
                continue
            async with translate_redis_errors():
                await self.redis.hdel(
                    self.keys.instances(info.agent_id), *(i.instance_id for i in dead)
                )
                if not info.alive:  # last seen about when the newest heartbeat lapsed
                    await self.redis.hset(self.keys.agent(info.agent_id), mapping={
                        "status": "dead", "last_seen": f"{now_s() - self.settings.heartbeat_ttl_s:.3f}"})
            removed += [(info.agent_id, i) for i in dead]
        return removed


def _signal_types(subscriptions: Iterable[str]) -> list[str]:
    """The signal types of a hash's ``subscriptions``, sorted; one edited by hand into something
    that is not a type is left out (it has no subscriber set)."""
    return sorted({t for t in subscriptions if SIGNAL_TYPE_RE.fullmatch(t)})


def _instance_json(instance: Instance) -> str:
    return json.dumps(
        {"host": instance.host, "pid": instance.pid, "started_at": round(instance.started_at, 3)}
    )


def _agent_info(
    agent_id: str, fields: dict[str, str], instances: dict[str, str], beats: Iterator[str | None]
) -> AgentInfo:
    parsed = []
    newest_beat = 0.0
    for instance_id, raw in sorted(instances.items()):
        beat = next(beats)
        if beat is not None:
            newest_beat = max(newest_beat, _number(beat))
        try:
            data = json.loads(raw)
            parsed.append(
                Instance(instance_id, str(data.get("host", "?")), int(data.get("pid", 0)),
                         float(data.get("started_at", 0.0)), alive=beat is not None)
            )
        except (ValueError, TypeError):
            continue
    alive = any(i.alive for i in parsed)
    status = fields.get("status", "unknown")
    if alive:
        status = "alive"
    elif status in ("active", "alive"):
        status = "dead"
    last_seen = max(_number(fields.get("last_seen")), newest_beat) or None
    return AgentInfo(
        agent_id=agent_id,
        agent_type=fields.get("type", "?"),
        subscriptions=tuple(filter(None, fields.get("subscriptions", "").split(","))),
        version=fields.get("version", "?"),
        status=status,
        registered_at=_number(fields.get("registered_at")),
        last_seen=last_seen,
        counters={name: int(_number(fields.get(name))) for name in COUNTER_FIELDS},
        instances=parsed,
    )


def _number(text: str | None) -> float:
    """A stored number, or 0 when missing or edited into something else."""
    try:
        value = float(text or 0)
    except ValueError:
        return 0.0
    return value if value == value and abs(value) != float("inf") else 0.0
