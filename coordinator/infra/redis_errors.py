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
import re
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, TypeAlias, cast

from redis import exceptions as redis_errors

from hivebus.domain.errors import HivebusError, RedisUnavailable
from hivebus.settings import redact_url

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis
    from redis.typing import EncodableT, FieldT, HScanResponse, StreamRangeResponse, ZSetRangeResponse

# An asyncio client from connection.open_client: a single-node client, or a Redis Cluster client
# when the server is a cluster node (both implement the same command methods; a cluster client
# routes each command to the node of its keys' slot and refuses keys of several slots).
Redis: TypeAlias = "aioredis.Redis | aioredis.RedisCluster"
# a synchronous one from connection.open_sync_client (a thread's own), likewise
SyncRedis: TypeAlias = "redis.Redis | redis.RedisCluster"
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
    except (redis_errors.RedisError, redis_errors.RedisClusterException, OSError) as exc:
        raise redis_unavailable(exc, url) from None


@contextlib.contextmanager
def translate_sync_redis_errors(url: str | None = None) -> Iterator[None]:
    """:func:`translate_redis_errors` for a synchronous client."""
    try:
        yield
    except HivebusError:
        raise
    except (redis_errors.RedisError, redis_errors.RedisClusterException, OSError) as exc:
        raise redis_unavailable(exc, url) from None


def redis_unavailable(exc: BaseException, url: str | None = None) -> RedisUnavailable:
    """A redis-py error (or an OSError under it) as one line for a user, password redacted.

    redis-py's cluster errors (``RedisClusterException`` and its subclasses) are not RedisErrors:
    a connection that failed while the cluster client read the cluster's layout arrives wrapped
    in one, so the first error of the chain is what is described."""
    at = _at(url)
    root = _first_cause(exc)
    if isinstance(exc, redis_errors.RedisClusterException) and root is not exc:
        if isinstance(root, redis_errors.NoPermissionError):
            return RedisUnavailable(
                f"the Redis user may not read the cluster's layout{at} (CLUSTER SLOTS): give it "
                f"+cluster|slots, as the rules 'hivebus acl' prints do: {_scrub(str(root), url)}")
        if isinstance(root, redis_errors.ResponseError) and "cluster support disabled" in str(root):
            return RedisUnavailable(f"Redis{at} is not a cluster node (cluster support disabled) but "
                                    f"HIVEBUS_REDIS_CLUSTER=yes: set it to auto or no")
        if isinstance(root, (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)):
            exc = root  # no node answered: say why, as for a single node
    message = _scrub(str(exc), url)
    if isinstance(exc, redis_errors.AuthenticationError):
        return RedisUnavailable(f"Redis refused the credentials{at}")
    if isinstance(exc, (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError, ssl.SSLError)):
        return RedisUnavailable(f"cannot reach Redis{at}: {message}")
    if isinstance(exc, redis_errors.AskError):  # MOVED or ASK: only a single-node client sees them
        redirect = "MOVED" if isinstance(exc, redis_errors.MovedError) else "ASK"
        return RedisUnavailable(
            f"Redis{at} is a cluster node (it answered {redirect} {exc.slot_id} {exc.host}:{exc.port}) "
            f"but hivebus opened a single-node client: set HIVEBUS_REDIS_CLUSTER=yes")
    if isinstance(exc, redis_errors.ClusterCrossSlotError):  # the server's CROSSSLOT
        return _cross_slot(_command_of(exc) or "a command", at)
    if isinstance(exc, redis_errors.CrossSlotTransactionError):
        return RedisUnavailable(f"Redis Cluster{at} cannot run a MULTI transaction whose keys are in "
                                f"different hash slots: a hivebus bug, please report it")
    if isinstance(exc, redis_errors.SlotNotCoveredError):
        return RedisUnavailable(f"Redis Cluster{at} has hash slots no node serves (a master down, no "
                                f"replica to take over?): {message}")
    if isinstance(exc, redis_errors.RedisClusterException):
        cross_slot = re.match(r"(\w[\w ]*) - all keys must map to the same key slot", message)
        if cross_slot:  # redis-py's routing refused it before sending it
            return _cross_slot(cross_slot.group(1), at)
        blocked = re.search(r"pipelined function (\w+) is blocked", message)
        if blocked:
            return RedisUnavailable(f"redis-py cannot pipeline {blocked.group(1).upper()} on a Redis "
                                    f"Cluster{at}: a hivebus bug, please report it")
        return RedisUnavailable(f"Redis Cluster error{at}: {message}")
    return RedisUnavailable(f"Redis error{at}: {message}")


def _cross_slot(command: str, at: str) -> RedisUnavailable:
    return RedisUnavailable(f"Redis Cluster{at} cannot run {command}: its keys are in different hash "
                            f"slots: a hivebus bug, please report it")


def _command_of(exc: BaseException) -> str | None:
    """The command redis-py was sending when the server refused it: read from the arguments of
    its ``execute_command`` in the traceback (the server's CROSSSLOT does not name it); from the
    message of a pipeline's error (``Command # 3 (MGET a b) of pipeline caused error: …``)."""
    found = re.match(r"Command # \d+ \((\S+)", str(exc))
    if found:
        return found.group(1).upper()
    trace = exc.__traceback__
    while trace is not None:
        frame = trace.tb_frame
        module = str(frame.f_globals.get("__name__"))
        if frame.f_code.co_name == "execute_command" and module.startswith("redis."):
            args = frame.f_locals.get("args")
            if isinstance(args, tuple) and args and isinstance(args[0], str):
                return args[0].split()[0].upper()
        trace = trace.tb_next
    return None


def _first_cause(exc: BaseException) -> BaseException:
    """The first exception of ``exc``'s chain (what it was raised from, or while handling)."""
    seen = {id(exc)}
    while True:
        cause = exc.__cause__ or exc.__context__
        if cause is None or id(cause) in seen:
            return exc
        seen.add(id(cause))
        exc = cause


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
