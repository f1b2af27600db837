"""Checks every hivebus process makes of its Redis before using it.

* **Eviction.** A server with ``maxmemory`` set and a ``maxmemory-policy`` other than
  ``noeviction`` deletes keys when memory runs short: inbox entries, pending records, the
  registry — signals would be lost without a trace. It is read from ``INFO memory`` (``CONFIG``
  may be refused to an application user) — of every primary on a Redis Cluster, each of which
  evicts its own slots' keys — and the process refuses to run unless
  ``HIVEBUS_ALLOW_EVICTION=1`` says otherwise, which is then warned about at every start.
* **Key layout.** ``<ns>:layout`` says which key layout a namespace's data is written in. Data of
  an older layout (no marker, and a registered agent whose keys are named the 0.1 way) is
  refused with how to start fresh; any other namespace gets the marker.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import RedisCluster

from hivebus.domain.errors import UnsafeRedis
from hivebus.domain.keys import LAYOUT_VERSION, Keys
from hivebus.infra.logs import get_logger
from hivebus.infra.redis_errors import Redis, one_member, text_or_none, translate_redis_errors
from hivebus.settings import Settings


async def check_server(redis: Redis, settings: Settings) -> None:
    """Refuse (UnsafeRedis) a server that evicts keys or holds data of another key layout."""
    await check_eviction(redis, settings)
    await check_layout(redis, settings)


async def check_eviction(redis: Redis, settings: Settings) -> None:
    """Refuse a server whose eviction policy can delete hivebus keys, unless allowed; on a Redis
    Cluster, refuse if any primary would (each evicts its own slots' keys)."""
    async with translate_redis_errors():
        infos = await primary_infos(redis, "memory")
    cluster = isinstance(redis, RedisCluster)
    for node, info in infos.items():
        maxmemory = int(info.get("maxmemory", 0) or 0)
        policy = str(info.get("maxmemory_policy", "noeviction"))
        if maxmemory == 0 or policy == "noeviction":
            continue
        where = f"cluster node {node}: " if cluster else ""
        problem = (f"Redis evicts keys when full ({where}maxmemory-policy {policy}, maxmemory {maxmemory} "
                   f"bytes): signals and memory would be lost without a trace")
        if settings.allow_eviction:
            get_logger().warning("running on an evicting Redis (HIVEBUS_ALLOW_EVICTION=1)", problem=problem)
            continue
        every = " on every primary" if cluster else ""
        raise UnsafeRedis(f"{problem}; set 'maxmemory-policy noeviction'{every} (CONFIG SET maxmemory-policy "
                          f"noeviction, and in redis.conf), or HIVEBUS_ALLOW_EVICTION=1 to run anyway")


async def primary_infos(client: Redis, section: str) -> dict[str, dict[str, Any]]:
    """``INFO <section>`` of every primary of a cluster, by node address (``host:port``); of the
    one server of a single-node client. Raises what redis-py raises (call it under
    :func:`~hivebus.infra.redis_errors.translate_redis_errors`)."""
    if isinstance(client, RedisCluster):
        await client.initialize()
        nodes = sorted(client.get_primaries(), key=lambda node: (node.host, node.port))
        replies = await asyncio.gather(*(client.info(section, target_nodes=node) for node in nodes))
        return {node.name: reply for node, reply in zip(nodes, replies, strict=True)}
    where = client.connection_pool.connection_kwargs
    name = where.get("path") or f"{where.get('host', 'localhost')}:{where.get('port', 6379)}"
    return {str(name): await client.info(section)}


async def check_layout(redis: Redis, settings: Settings) -> None:
    """Mark a namespace with this layout unless it holds data of another; refuse that data."""
    keys = Keys(settings.namespace)
    async with translate_redis_errors():
        found = text_or_none(await redis.get(keys.layout()))
        if found is None and not await _holds_old_layout(redis, keys):
            await redis.set(keys.layout(), LAYOUT_VERSION, nx=True)
            return
    if found == LAYOUT_VERSION:
        return
    written = f"key layout {found}" if found else "the key layout of hivebus 0.1"
    raise UnsafeRedis(
        f"namespace {settings.namespace!r} holds data written in {written}, which this version "
        f"(key layout {LAYOUT_VERSION}) does not read; start fresh with 'hivebus reset --yes' "
        f"(deletes the namespace's keys) or use another HIVEBUS_NAMESPACE")


async def _holds_old_layout(redis: Redis, keys: Keys) -> bool:
    """Whether a registered agent has keys named as hivebus 0.1 named them (O(1): one member)."""
    member = one_member(await redis.srandmember(f"{keys.prefix}agents"))  # 0.1's registry, untagged
    if not member:
        return False
    return bool(await redis.exists(f"{keys.prefix}agent:{member}", f"{keys.prefix}stream:{member}"))


async def reset_namespace(redis: Redis, settings: Settings) -> int:
    """Delete every key of the namespace (SCAN + UNLINK, 1,000 at a time) and mark it with this
    layout; return how many keys were deleted. The durable store is not touched."""
    keys = Keys(settings.namespace)
    removed = 0
    async with translate_redis_errors():
        batch: list[str] = []
        async for key in redis.scan_iter(match=f"{keys.prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                removed += int(await redis.unlink(*batch))
                batch = []
        if batch:
            removed += int(await redis.unlink(*batch))
        await redis.set(keys.layout(), LAYOUT_VERSION)
    return removed
