"""Where hivebus meets redis-py: resolving the URL, opening clients, translating errors.

redis-py exceptions become :class:`~hivebus.domain.errors.RedisUnavailable` here and
nowhere else, with any password in the URL redacted from the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from hivebus.domain.errors import RedisUnavailable
from hivebus.infra import managed_redis
from hivebus.infra.redis_errors import Redis, SyncRedis, translate_redis_errors
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


def _with_hiredis_packing(client: Redis) -> Redis:
    pool = client.connection_pool
    base = pool.connection_class
    pool.connection_class = type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})
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


def open_client(url: str, *, client_name: str | None = None, settings: Settings | None = None) -> Redis:
    """Open an asyncio Redis client that decodes responses as UTF-8 text.

    For a ``rediss://`` URL the CA and client certificate files of ``settings`` are used.
    """
    tls: dict[str, Any] = (
        dict(settings.tls_options()) if settings is not None and url.startswith("rediss://") else {}
    )
    try:
        client = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            # bytes that are not UTF-8 (an entry written by hand) decode to surrogates instead of
            # failing the whole reply; hivebus dead-letters such an entry with them escaped
            encoding_errors="surrogateescape",
            client_name=client_name,
            socket_timeout=10,
            socket_connect_timeout=5,
            health_check_interval=30,
            **tls,
        )
    except ValueError as exc:
        raise RedisUnavailable(f"bad Redis URL {redact_url(url)}: {exc}") from None
    return _with_hiredis_packing(client)


def open_sync_client(url: str, *, client_name: str | None = None,
                     settings: Settings | None = None) -> SyncRedis:
    """A synchronous client configured like :func:`open_client`, for a thread of its own."""
    import redis as sync_redis

    tls: dict[str, Any] = (
        dict(settings.tls_options()) if settings is not None and url.startswith("rediss://") else {}
    )
    try:
        return sync_redis.Redis.from_url(url, decode_responses=True, encoding_errors="surrogateescape",
                                         client_name=client_name, socket_timeout=10,
                                         socket_connect_timeout=5, health_check_interval=30, **tls)
    except ValueError as exc:
        raise RedisUnavailable(f"bad Redis URL {redact_url(url)}: {exc}") from None


@contextlib.asynccontextmanager
async def connected(
    url: str, *, client_name: str | None = None, settings: Settings | None = None, check: bool = True
) -> AsyncIterator[Redis]:
    """Open a client, check it answers PING, and close it on exit. Raises RedisUnavailable.

    With ``settings`` (and ``check``), also refuses a server that evicts keys or holds data of
    another key layout (:mod:`hivebus.infra.preflight`; raises UnsafeRedis)."""
    client = open_client(url, client_name=client_name, settings=settings)
    try:
        async with translate_redis_errors(url):
            await _ping_until_loaded(client)
        if settings is not None and check:
            from hivebus.infra.preflight import check_server

            await check_server(client, settings)
        yield client
    finally:
        await client.aclose()


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
