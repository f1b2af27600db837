"""Records the coordinator cannot process, set aside with the reason, so its passes go on.

A member edited by hand into something that is not an id (``SADD hive:agents:{~registry} "bad id!"``,
``ZADD 'hive:outcomes:{<agent>}' 0 not-a-decision-id``) is removed from its set and a key holding
the wrong type (a decision hash that is a string) is renamed to a name in its own Redis Cluster
slot (:func:`aside_name`); each is recorded in the stream ``hive:set-aside`` (``key member reason
at [moved_to] [score]``, the member shown with bytes that are not UTF-8 escaped). ``hivebus
set-aside`` lists the records, ``hivebus set-aside clear`` removes them once an operator has
looked.

The record is written first and the member removed (or the key moved) after, in two commands:
the stream and the key are in different slots, so no transaction can hold both. A crash in
between leaves the member in place, recorded; the next pass sets it aside again and records it
twice. Nothing is ever removed without its record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from redis import exceptions as redis_errors
from redis.crc import key_slot

from hivebus.domain.errors import InvalidId
from hivebus.domain.ids import printable
from hivebus.domain.keys import Keys
from hivebus.infra.logs import get_logger
from hivebus.infra.redis_errors import Redis, stream_entries, translate_redis_errors

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

MAXLEN = 10_000


def shown(value: object) -> str:
    """``value`` as text safe to store and log, at most 500 characters."""
    return printable(value)[:500]


def _slot(key: str) -> int:
    return key_slot(key.encode("utf-8", "surrogateescape"))


def aside_name(namespace: str, key: str, ms: int) -> str:
    """Where a key holding nonsense is moved: a name in the key's own cluster slot, so a RENAME
    works on a Redis Cluster too. A key with a hash tag keeps it (``<key>:set-aside:<ms>``); an
    untagged one, which hashes whole, becomes the tag of ``<ns>:set-aside:{<key>}:<ms>``."""
    start = key.find("{")
    if start >= 0 and key.find("}", start + 1) > start + 1:
        return f"{key}:set-aside:{ms}"
    moved = f"{namespace}:set-aside:{{{key}}}:{ms}"
    if _slot(moved) == _slot(key):
        return moved
    # braces that make no tag (``a{}b``, ``a}b``): a tag of the same slot, found by counting
    n, slot = 0, _slot(key)
    while _slot(f"{{~{n}}}") != slot:
        n += 1
    return f"{namespace}:set-aside:{{~{n}}}:{key}:{ms}"


class SetAside:
    """Sets records aside and lists them."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.namespace = keys.namespace
        self.key = f"{keys.namespace}:set-aside"
        self.log = get_logger(agent_id="coordinator")

    async def members(self, key: str, members: Sequence[str], reason: str, *, scores: bool = False) -> None:
        """Record each of ``members`` and then remove them from the set (or sorted set,
        ``scores``) ``key``."""
        if not members:
            return
        async with translate_redis_errors():
            found: list[Any] = []
            if scores:
                found = await self.redis.zmscore(key, list(members))
            pipe = self.redis.pipeline(transaction=False)
            for n, member in enumerate(members):
                record: dict[FieldT, EncodableT] = {"key": key, "member": shown(member), "reason": reason,
                                                    "at": f"{time.time():.3f}"}
                if scores and found[n] is not None:
                    record["score"] = repr(found[n])
                pipe.xadd(self.key, record, maxlen=MAXLEN, approximate=True)
            await pipe.execute()
            if scores:
                await self.redis.zrem(key, *members)
            else:
                await self.redis.srem(key, *members)
        for member in members:
            self.log.warning("set aside a record", key=key, member=shown(member), reason=reason)

    async def fields(self, key: str, field: str, value: str, reason: str) -> None:
        """Record ``field`` of the hash ``key`` with its value and the reason, then remove it."""
        async with translate_redis_errors():
            await self.redis.xadd(self.key, {"key": key, "member": shown(field), "value": shown(value),
                                             "reason": shown(reason), "at": f"{time.time():.3f}"},
                                  maxlen=MAXLEN, approximate=True)
            await self.redis.hdel(key, field)
        self.log.warning("set aside a record", key=key, member=shown(field), reason=shown(reason))

    async def note(self, key: str, reason: str) -> None:
        """Record that ``key`` was skipped (left as it is) and why."""
        async with translate_redis_errors():
            await self.redis.xadd(self.key, {"key": key, "member": "", "reason": shown(reason),
                                             "at": f"{time.time():.3f}"}, maxlen=MAXLEN, approximate=True)
        self.log.warning("skipped a record", key=key, reason=shown(reason))

    async def rename(self, key: str, reason: str) -> str:
        """Record, then move a key holding nonsense to :func:`aside_name` (content kept, same
        slot); the record is dropped again when the key was gone meanwhile."""
        moved = aside_name(self.namespace, key, int(time.time() * 1000))
        async with translate_redis_errors():
            record = await self.redis.xadd(self.key, {"key": key, "member": "", "reason": reason,
                                                      "at": f"{time.time():.3f}", "moved_to": moved},
                                           maxlen=MAXLEN, approximate=True)
            try:
                await self.redis.rename(key, moved)
            except redis_errors.ResponseError:  # gone meanwhile
                await self.redis.xdel(self.key, record)
                return moved
        self.log.warning("set aside a key", key=key, moved_to=moved, reason=reason)
        return moved

    async def valid(self, key: str, members: Iterable[str], check: Callable[[str], object], what: str,
                    *, scores: bool = False) -> list[str]:
        """The members of ``key`` that ``check`` accepts; the others are set aside."""
        good, bad = [], []
        for member in members:
            try:
                check(member)
                good.append(member)
            except InvalidId:
                bad.append(member)
        await self.members(key, bad, f"not {what}", scores=scores)
        return good

    async def list(self, limit: int = 100) -> list[dict[str, str]]:
        """The records, newest first."""
        async with translate_redis_errors():
            found = stream_entries(await self.redis.xrevrange(self.key, count=limit))
        return [{"id": str(entry_id), **{str(k): shown(v) for k, v in fields.items()}}
                for entry_id, fields in found]

    async def clear(self, ids: Sequence[str] = (), *, everything: bool = False) -> int:
        """Remove records (all with ``everything``); return how many."""
        async with translate_redis_errors():
            if everything:
                count = int(await self.redis.xlen(self.key))
                await self.redis.delete(self.key)
                return count
            return int(await self.redis.xdel(self.key, *ids)) if ids else 0
