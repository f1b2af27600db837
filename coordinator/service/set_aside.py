"""Records the coordinator cannot process, set aside with the reason, so its passes go on.

A member edited by hand into something that is not an id (``SADD hive:agents:{~registry} "bad id!"``,
``ZADD hive:outcomes 0 not-a-decision-id``) is removed from its set and a key holding the
wrong type (a decision hash that is a string) is renamed to ``<key>:set-aside:<ms>``; each is
recorded in the stream ``hive:set-aside`` (``key member reason at [moved_to] [score]``, the
member shown with bytes that are not UTF-8 escaped). ``hivebus set-aside`` lists the records,
``hivebus set-aside clear`` removes them once an operator has looked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from redis import exceptions as redis_errors

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


class SetAside:
    """Sets records aside and lists them."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.key = f"{keys.namespace}:set-aside"
        self.log = get_logger(agent_id="coordinator")

    async def members(self, key: str, members: Sequence[str], reason: str, *, scores: bool = False) -> None:
        """Remove ``members`` from the set (or sorted set, ``scores``) ``key`` and record each."""
        if not members:
            return
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=True)
            found: list[Any] = []
            if scores:
                found = await self.redis.zmscore(key, list(members))
                pipe.zrem(key, *members)
            else:
                pipe.srem(key, *members)
            for n, member in enumerate(members):
                record: dict[FieldT, EncodableT] = {"key": key, "member": shown(member), "reason": reason,
                                                    "at": f"{time.time():.3f}"}
                if scores and found[n] is not None:
                    record["score"] = repr(found[n])
                pipe.xadd(self.key, record, maxlen=MAXLEN, approximate=True)
            await pipe.execute()
        for member in members:
            self.log.warning("set aside a record", key=key, member=shown(member), reason=reason)

    async def fields(self, key: str, field: str, value: str, reason: str) -> None:
        """Remove ``field`` from the hash ``key`` and record it with its value and the reason."""
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=True)
            pipe.hdel(key, field)
            pipe.xadd(self.key, {"key": key, "member": shown(field), "value": shown(value),
                                 "reason": shown(reason), "at": f"{time.time():.3f}"},
                      maxlen=MAXLEN, approximate=True)
            await pipe.execute()
        self.log.warning("set aside a record", key=key, member=shown(field), reason=shown(reason))

    async def note(self, key: str, reason: str) -> None:
        """Record that ``key`` was skipped (left as it is) and why."""
        async with translate_redis_errors():
            await self.redis.xadd(self.key, {"key": key, "member": "", "reason": shown(reason),
                                             "at": f"{time.time():.3f}"}, maxlen=MAXLEN, approximate=True)
        self.log.warning("skipped a record", key=key, reason=shown(reason))

    async def rename(self, key: str, reason: str) -> str:
        """Move a key holding nonsense to ``<key>:set-aside:<ms>`` (content kept) and record it."""
        moved = f"{key}:set-aside:{int(time.time() * 1000)}"
        async with translate_redis_errors():
            try:
                await self.redis.rename(key, moved)
            except redis_errors.ResponseError:  # gone meanwhile
                return moved
            await self.redis.xadd(self.key, {"key": key, "member": "", "reason": reason,
                                             "at": f"{time.time():.3f}", "moved_to": moved},
                                  maxlen=MAXLEN, approximate=True)
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
