"""Where hivebus meets redis-py: resolving the URL, opening clients, translating errors.

redis-py exceptions become :class:`~hivebus.domain.errors.RedisUnavailable` here and
nowhere else, with any password in the URL redacted from the message.

A Redis Cluster (issue 14, in progress) gets redis-py's cluster client, which routes each
command to the node serving its keys' slot: when ``HIVEBUS_REDIS_CLUSTER`` is ``yes``, or
``auto`` (the default) and the server's ``INFO cluster`` says ``cluster_enabled:1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import hiredis
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from hivebus.domain.errors import RedisUnavailable
from hivebus.infra import managed_redis
from hivebus.infra.redis_errors import Redis, SyncRedis, translate_redis_errors, translate_sync_redis_errors
from hivebus.settings import Settings, redact_url


class _HiredisPacking:
    """Packs commands with hiredis's C packer, as redis-py's synchronous client does; its asyncio
    client packs in Python, ~1 µs per argument (a publish or settle script call has a dozen).
    Arguments hiredis does not take (text that is not UTF-8, None, bool, memoryview) fall back
    to redis-py's own packer, which encodes them or raises as before."""

    def pack_command(self, *args: Any) -> list[bytes]:
        try:
            head = args[0]
            if isinstance(head, str) and " " in head:  # "CONFIG RESETSTAT": two arguments
                args = (*head.split(), *args[1:])
            return [hiredis.pack_command(args)]
        except (TypeError, UnicodeEncodeError):
            return super().pack_command(*args)  # type: ignore[misc, no-any-return]


def _packing(base: type[Any]) -> type[Any]:
    return type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})


def _with_hiredis_packing(client: Redis) -> Redis:
    if isinstance(client, aioredis.RedisCluster):
        # No connection pool: each node makes its connections from its own connection_class.
        # The nodes discovered later are made from the node manager's connection_kwargs (the
        # dict the client holds too); the start-up nodes were made from it already.
        options = client.nodes_manager.connection_kwargs
        options["connection_class"] = _packing(options["connection_class"])
        for node in client.nodes_manager.startup_nodes.values():
            node.connection_class = options["connection_class"]
        return client
    pool = client.connection_pool
    pool.connection_class = _packing(pool.connection_class)
    return client


@contextlib.contextmanager
def redis_endpoint(settings: Settings) -> Iterator[str]:
    """Yield the Redis URL to use: the configured one, else the managed local Redis.

    The managed Redis is joined when one runs in the hivebus home, else started; on
    exit it is shut down if no other hivebus process still uses it.
    Raises ManagedRedisError.
    """
    if settings.redis_url:
        yield settings.redis_url
        return
    server = managed_redis.start(settings.home)
    try:
        yield server.url
    finally:
        server.release()


def _options(url: str, client_name: str | None, settings: Settings | None) -> dict[str, Any]:
    """The options every hivebus client is opened with; for a ``rediss://`` URL the CA and client
    certificate files of ``settings``."""
    tls: dict[str, Any] = (
        dict(settings.tls_options()) if settings is not None and url.startswith("rediss://") else {}
    )
    return {
        "decode_responses": True,
        # bytes that are not UTF-8 (an entry written by hand) decode to surrogates instead of
        # failing the whole reply; hivebus dead-letters such an entry with them escaped
        "encoding_errors": "surrogateescape",
        "client_name": client_name,
        "socket_timeout": 10,
        "socket_connect_timeout": 5,
        "health_check_interval": 30,
        **tls,
    }


def cluster_setting(settings: Settings | None) -> bool | None:
    """What ``HIVEBUS_REDIS_CLUSTER`` says: True (yes), False (no), None (auto: ask the server)."""
    mode = settings.redis_cluster if settings is not None else "auto"
    return None if mode == "auto" else mode == "yes"


def is_cluster_node(url: str, *, client_name: str | None = None, settings: Settings | None = None) -> bool:
    """Whether the server at ``url`` is a Redis Cluster node (``INFO cluster`` says
    ``cluster_enabled:1``), asked on one plain connection, blocking. False when it cannot tell
    (unreachable, INFO refused): the first command says why (a MOVED reply: that it is a
    cluster node, see :func:`~hivebus.infra.redis_errors.redis_unavailable`)."""
    import redis as sync_redis

    try:
        probe = sync_redis.Redis.from_url(url, **_options(url, client_name, settings))
    except ValueError:
        return False  # the client opened next says what is wrong with the URL
    try:
        return _cluster_enabled(probe.info("cluster"))
    except (redis_errors.RedisError, OSError):
        return False
    finally:
        probe.close()


def _cluster_enabled(info: dict[str, Any]) -> bool:
    return str(info.get("cluster_enabled", 0)) == "1"


def open_client(url: str, *, client_name: str | None = None, settings: Settings | None = None,
                cluster: bool | None = None) -> Redis:
    """Open an asyncio client that decodes responses as UTF-8 text: a Redis Cluster client
    (``redis.asyncio.RedisCluster``) when ``cluster`` is True, a single-node one when False.
    ``cluster`` None: as ``HIVEBUS_REDIS_CLUSTER`` says, and for ``auto`` as the server says
    (:func:`is_cluster_node`, one blocking round trip; :func:`connected` asks without blocking).

    For a ``rediss://`` URL the CA and client certificate files of ``settings`` are used.
    """
    if cluster is None:
        cluster = cluster_setting(settings)
    if cluster is None:
        cluster = is_cluster_node(url, client_name=client_name, settings=settings)
    options = _options(url, client_name, settings)
    try:
        client: Redis = (aioredis.RedisCluster.from_url(url, **options) if cluster
                         else aioredis.Redis.from_url(url, **options))
    except (ValueError, redis_errors.RedisClusterException) as exc:
        kind = "Redis Cluster" if cluster else "Redis"
        raise RedisUnavailable(f"bad {kind} URL {redact_url(url)}: {exc}") from None
    return _with_hiredis_packing(client)


def open_sync_client(url: str, *, client_name: str | None = None,
                     settings: Settings | None = None, cluster: bool | None = None) -> SyncRedis:
    """A synchronous client configured like :func:`open_client`, for a thread of its own. A
    cluster client reads the cluster's layout as it opens (raises RedisUnavailable)."""
    import redis as sync_redis

    if cluster is None:
        cluster = cluster_setting(settings)
    if cluster is None:
        cluster = is_cluster_node(url, client_name=client_name, settings=settings)
    options = _options(url, client_name, settings)
    try:
        if not cluster:
            return sync_redis.Redis.from_url(url, **options)
        with translate_sync_redis_errors(url):
            return sync_redis.RedisCluster.from_url(url, **options)
    except ValueError as exc:
        raise RedisUnavailable(f"bad Redis URL {redact_url(url)}: {exc}") from None


@contextlib.asynccontextmanager
async def connected(
    url: str, *, client_name: str | None = None, settings: Settings | None = None, check: bool = True
) -> AsyncIterator[Redis]:
    """Open a client, check it answers PING, and close it on exit. Raises RedisUnavailable.

    A Redis Cluster client when the server is a cluster node (``HIVEBUS_REDIS_CLUSTER=auto``:
    ``INFO cluster`` asked on the single-node client first) or ``HIVEBUS_REDIS_CLUSTER=yes``.
    With ``settings`` (and ``check``), also refuses a server that evicts keys (any primary of a
    cluster) or holds data of another key layout (:mod:`hivebus.infra.preflight`; raises
    UnsafeRedis)."""
    cluster = cluster_setting(settings)
    client = open_client(url, client_name=client_name, settings=settings, cluster=bool(cluster))
    try:
        async with translate_redis_errors(url):
            await _ping_until_loaded(client)
            if cluster is None and await _answers_cluster_enabled(client):
                await client.aclose()
                client = open_client(url, client_name=client_name, settings=settings, cluster=True)
                await _ping_until_loaded(client)
        if settings is not None and check:
            from hivebus.infra.preflight import check_server

            await check_server(client, settings)
        yield client
    finally:
        await client.aclose()


async def _answers_cluster_enabled(client: Redis) -> bool:
    try:
        return _cluster_enabled(await client.info("cluster"))
    except redis_errors.ResponseError:  # INFO refused to this user: see is_cluster_node
        return False


async def cluster_layout(client: Redis) -> dict[str, Any] | None:
    """A cluster's state and nodes, from ``CLUSTER INFO`` and ``CLUSTER NODES`` of one node:
    ``{"state": "ok", "nodes": [{"node": "host:port", "role": "primary" | "replica",
    "primary": its primary's address or None, "slots": n, "failing": bool}, …]}``, primaries
    first; None for a single-node client. Raises what redis-py raises."""
    if not isinstance(client, aioredis.RedisCluster):
        return None
    info = await client.cluster_info()
    known = await client.cluster_nodes()
    address = {str(detail["node_id"]): name for name, detail in known.items()}
    nodes = []
    for name, detail in known.items():
        flags = str(detail.get("flags", "")).split(",")
        ranges = cast("list[list[str]]", detail.get("slots") or [])  # ["first", "last"] or ["slot"]
        nodes.append({
            "node": name,
            "role": "primary" if "master" in flags else "replica",
            "primary": address.get(str(detail.get("master_id", "-"))),
            "slots": sum(int(piece[-1]) - int(piece[0]) + 1 for piece in ranges),
            "failing": "fail" in flags or "fail?" in flags or detail.get("connected") is False,
        })
    nodes.sort(key=lambda node: (node["role"] != "primary", _host_port(str(node["node"]))))
    return {"state": info.get("cluster_state"), "nodes": nodes}


def _host_port(name: str) -> tuple[str, int]:
    host, _, port = name.rpartition(":")
    return host, int(port) if port.isdigit() else 0


async def _ping_until_loaded(client: Redis, limit_s: float = 60.0) -> None:
    """PING; while Redis is loading its data set after a restart, wait for it (up to ``limit_s``)."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            await client.ping()
            return
        except redis_errors.BusyLoadingError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.2)
