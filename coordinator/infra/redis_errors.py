"""The boundary between library code and redis-py: redis-py exceptions become RedisUnavailable
(password redacted); the types under which library code holds a client; its replies, typed as
what hivebus's clients return.

**Replies.** redis-py types a reply as ``bytes | str`` (a hash as ``dict[bytes | str, bytes |
str]``, a missing key as ``| None``) whatever the client's ``decode_responses``: the type cannot
say how the client was opened. Every client hivebus gives library code decodes responses
(:func:`hivebus.infra.connection.open_client` and ``open_sync_client``, the only places that open
one, pass ``decode_responses=True``; so do the tests' fixtures), so every reply holds ``str``.
The helpers below say so where a reply enters library code, all in this one place. Each is a
:func:`typing.cast`: no check and no copy, two plain function calls its only cost. Each takes
the type redis-py gives the replies it is for, so mypy refuses one applied to a reply of another
shape (a number, a hash where a list belongs). A client opened without ``decode_responses=True`` must not
be given to library code.

The helpers live here, not in a module of their own, because every module that talks to Redis
imports this one already: ``hivebus agents`` starts without loading one module more. redis-py's
client modules are imported here for type checking only.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, TypeAlias, cast

from redis import exceptions as redis_errors

from hivebus.domain.errors import HivebusError, RedisUnavailable
from hivebus.settings import redact_url

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis
    from redis.typing import EncodableT, FieldT, HScanResponse, StreamRangeResponse, ZSetRangeResponse

Redis: TypeAlias = "aioredis.Redis"  # an asyncio client from connection.open_client
SyncRedis: TypeAlias = "redis.Redis"  # a synchronous one from connection.open_sync_client (a thread's own)
Entry: TypeAlias = tuple[str, dict[str, str]]  # a stream entry: its id and its fields


# --- replies: what a decoding client returns ---------------------------------------------------
def text_or_none(reply: bytes | str | None) -> str | None:
    """GET, HGET: the value, or None when there is none."""
    return cast("str | None", reply)


def texts(reply: list[bytes | str]) -> list[str]:
    """LRANGE, ZRANGEBYLEX, ZREVRANGEBYLEX, KEYS: a list of values."""
    return cast("list[str]", reply)


def texts_or_none(reply: list[bytes | str | None]) -> list[str | None]:
    """MGET, HMGET: a value or None for each key or field asked for."""
    return cast("list[str | None]", reply)


def text_set(reply: set[bytes | str]) -> set[str]:
    """SMEMBERS: the members of a set."""
    return cast("set[str]", reply)


def text_map(reply: dict[bytes | str, bytes | str]) -> dict[str, str]:
    """HGETALL: a hash's fields and values ({} when the key is missing)."""
    return cast("dict[str, str]", reply)


def range_members(reply: ZSetRangeResponse) -> list[str]:
    """ZRANGE, ZRANGEBYSCORE, ZREVRANGEBYSCORE called without ``withscores``: the members.
    (redis-py gives the scored and the unscored form one type; a scored range is not for this.)"""
    return cast("list[str]", reply)


def one_member(reply: bytes | str | list[bytes | str] | None) -> str | None:
    """SRANDMEMBER called without a count: one member, or None for an empty set. (redis-py
    gives the forms with and without a count one type; the list form is not for this.)"""
    return cast("str | None", reply)


def stream_entries(reply: StreamRangeResponse | None) -> list[Entry]:
    """XRANGE, XREVRANGE: the entries, oldest or newest first. (redis-py adds ``| None`` and
    fields that may be None, which these commands never return: a range has entries, each with
    its fields.)"""
    return cast("list[Entry]", reply)


def hash_page(reply: HScanResponse) -> tuple[int, dict[str, str]]:
    """HSCAN called without ``no_values``: the next cursor and a page of fields and values."""
    return cast("tuple[int, dict[str, str]]", reply)


# --- arguments ----------------------------------------------------------------------------------
def hash_fields(fields: Mapping[str, str]) -> Mapping[FieldT, EncodableT]:
    """``fields`` as HSET's ``mapping`` is typed: redis-py's ``Mapping[FieldT, EncodableT]`` is
    invariant in its key, so a ``Mapping[str, str]`` (which it only reads) needs widening."""
    return cast("Mapping[FieldT, EncodableT]", fields)


# --- errors -------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def translate_redis_errors(url: str | None = None) -> AsyncIterator[None]:
    """Turn redis-py errors raised inside the block into RedisUnavailable, password redacted."""
    try:
        yield
    except HivebusError:
        raise
    except redis_errors.AuthenticationError:
        raise RedisUnavailable(f"Redis refused the credentials{_at(url)}") from None
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError, ssl.SSLError) as exc:
        raise RedisUnavailable(f"cannot reach Redis{_at(url)}: {_scrub(str(exc), url)}") from None
    except redis_errors.RedisError as exc:
        raise RedisUnavailable(f"Redis error{_at(url)}: {_scrub(str(exc), url)}") from None


def _at(url: str | None) -> str:
    return f" at {redact_url(url)}" if url else ""


def _scrub(message: str, url: str | None) -> str:
    if url:
        from urllib.parse import urlsplit

        with contextlib.suppress(ValueError):
            password = urlsplit(url).password
            if password:
                message = message.replace(password, "***")
    return message.splitlines()[0] if message else message
