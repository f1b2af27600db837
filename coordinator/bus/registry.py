"""The agent registry: who is registered, which replicas run, and who is alive.

An agent id is registered once (``hive:agents:{~registry}``, ``hive:agent:{<id>}``); each running
process of it is an *instance* with a heartbeat key that expires unless refreshed.
Liveness is read from the heartbeat keys, so a SIGKILLed process is seen dead as
soon as its heartbeat TTL runs out; the coordinator then removes the dead instance
and marks the agent ``dead`` when none of its instances is left.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

from hivebus.domain.clock import now_s
from hivebus.domain.errors import InvalidInput, NotFound
from hivebus.domain.keys import AGENT_ID_RE, SIGNAL_SHARDS, Keys, check_agent_id, check_signal_type
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
        """Register (or re-register) ``agent_id`` and start ``instance``'s heartbeat."""
        check_agent_id(agent_id)
        subs = tuple(sorted({check_signal_type(s) for s in subscriptions}))
        agent_key = self.keys.agent(agent_id)
        async with translate_redis_errors():
            previous = text_or_none(await self.redis.hget(agent_key, "subscriptions")) or ""
            pipe = self.redis.pipeline(transaction=True)
            pipe.sadd(self.keys.agents(), agent_id)
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
            for old in set(filter(None, previous.split(","))) - set(subs):
                pipe.srem(self.keys.subscribers(old), agent_id)
            for sub in subs:
                pipe.sadd(self.keys.subscribers(sub), agent_id)
            pipe.hset(self.keys.instances(agent_id), instance.instance_id, _instance_json(instance))
            pipe.set(
                self.keys.heartbeat(agent_id, instance.instance_id),
                f"{now_s():.3f}",
                px=int(self.settings.heartbeat_ttl_s * 1000),
            )
            await pipe.execute()

    async def register_publisher(self, agent_id: str) -> None:
        """Register a source that only publishes (the CLI's ``cli``), so that replies to what it
        publishes are accepted and wait in its inbox; a real agent of that id is left as it is."""
        agent_key = self.keys.agent(check_agent_id(agent_id))
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=True)
            pipe.sadd(self.keys.agents(), agent_id)
            pipe.hsetnx(agent_key, "registered_at", f"{now_s():.3f}")
            pipe.hsetnx(agent_key, "type", "publisher")
            pipe.hsetnx(agent_key, "status", "stopped")
            await pipe.execute()

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
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=True)
            pipe.srem(self.keys.agents(), agent_id)
            for signal_type in info.subscriptions:
                pipe.srem(self.keys.subscribers(signal_type), agent_id)
            pipe.delete(self.keys.agent(agent_id), self.keys.instances(agent_id))
            await pipe.execute()
        return info

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
