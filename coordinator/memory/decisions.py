"""The decision log: what an agent decided, why, what triggered it, and how it turned out.

A decision is a hash; each agent has time indexes of its decisions: all of them, and by
type, by result (``pending``, ``ok``, ``failed``) and by both, so a query with any of those
filters pages through one index and reads only what it returns. ``log_outcome`` is a Lua
script: the outcome is attached once, moving the decision from the pending indexes to
the ok or failed ones; a second outcome for the same decision is refused with
AlreadyRecorded (the first one is kept — corrections are new decisions whose parent is
the old one).
Decisions stay in Redis for the STM window; the coordinator archives older ones to
the durable store, and :meth:`DecisionLog.query` is the API that will span both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from redis import exceptions as redis_errors

from hivebus.domain.clock import now_s
from hivebus.domain.decision import DecisionOutcome, DecisionRecord
from hivebus.domain.errors import AlreadyRecorded, InvalidId, InvalidInput, NotFound
from hivebus.domain.ids import new_id
from hivebus.domain.keys import Keys, check_agent_id, check_item_id, check_signal_id, check_signal_type
from hivebus.domain.models import describe_validation_error
from hivebus.infra.lua import LOG_OUTCOME
from hivebus.infra.redis_errors import (
    Redis,
    hash_fields,
    range_members,
    text_map,
    text_set,
    texts_or_none,
    translate_redis_errors,
)
from hivebus.settings import Settings

if TYPE_CHECKING:
    from hivebus.store.base import Store

QUERY_PAGE = 64  # decisions read per round trip while a query fills its limit


def indexed_type(decision_type: object) -> str | None:
    """The type a decision is indexed under; None for a type edited by hand into one no index
    can be named after (such a decision is in the agent-wide indexes only)."""
    if not isinstance(decision_type, str):
        return None
    try:
        return check_signal_type(decision_type)
    except InvalidId:
        return None


def _readable(fields: dict[str, str]) -> DecisionRecord | None:
    if not fields:
        return None
    try:
        return DecisionRecord.from_fields(fields)
    except (KeyError, ValueError, ValidationError):
        return None


class DecisionLog:
    """Writes and queries decision records; with an ``archive`` store, reads span both."""

    def __init__(self, redis: Redis, settings: Settings, archive: Store | None = None) -> None:
        self.redis = redis
        self.archive = archive
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self._log_outcome = redis.register_script(LOG_OUTCOME)

    async def log_decision(
        self, agent_id: str, decision_type: str, *, context: dict[str, Any] | None = None,
        reasoning: dict[str, Any] | None = None, parent_decision_id: str | None = None,
        triggered_by: Iterable[str] = (), timestamp: float | None = None,
        decision_id: str | None = None,
    ) -> str:
        """Record a decision; return its id. Raises InvalidInput / InvalidId for bad input.

        With an explicit ``decision_id`` that already exists nothing is written (a handler
        running again for a redelivered signal logs each decision once).
        """
        check_agent_id(agent_id)
        check_signal_type(decision_type)
        triggers = tuple(check_signal_id(s) for s in triggered_by)
        if parent_decision_id:
            check_item_id(parent_decision_id)
        try:
            record = DecisionRecord(
                decision_id=check_item_id(decision_id) if decision_id else new_id(),
                agent_id=agent_id, decision_type=decision_type, context=dict(context or {}),
                reasoning=dict(reasoning or {}), parent_decision_id=parent_decision_id,
                triggered_by=triggers, timestamp=timestamp if timestamp is not None else now_s(),
            )
        except ValidationError as exc:
            raise InvalidInput(describe_validation_error(exc)) from None
        confidence = record.reasoning.get("confidence")
        if confidence is not None and not (
            isinstance(confidence, int | float) and 0.0 <= confidence <= 1.0
        ):
            raise InvalidInput(f"reasoning.confidence must be between 0 and 1, got {confidence!r}")
        async with translate_redis_errors():
            if decision_id and await self.redis.exists(self.keys.decision(decision_id)):
                return decision_id
            pipe = self.redis.pipeline(transaction=True)
            pipe.hset(self.keys.decision(record.decision_id), mapping=hash_fields(record.to_fields()))
            entry = {record.decision_id: record.timestamp}
            for of_type in (None, decision_type):
                pipe.zadd(self.keys.decision_index(agent_id, of_type), entry)
                pipe.zadd(self.keys.decision_index(agent_id, of_type, "pending"), entry)
            pipe.sadd(self.keys.decision_agents(), agent_id)
            await pipe.execute()
        return record.decision_id

    async def log_outcome(
        self, decision_id: str, *, success: bool, quality_score: float | None = None,
        latency_ms: float | None = None, error: str | None = None,
        metrics: dict[str, Any] | None = None, queue_unknown: bool = True,
    ) -> DecisionOutcome:
        """Attach the outcome of a decision, once.

        An outcome of a decision no longer in Redis (archived after the STM window: a trade
        that closes after a day) is queued for the coordinator, which records it in the archive
        and learns from it once, or sets it aside with the reason when the archive does not
        know the decision (with an ``archive``, that is checked here: NotFound; without one and
        with ``queue_unknown=False``, a decision not in Redis is NotFound).
        Raises AlreadyRecorded (it has an outcome, or one is queued; the first is kept),
        InvalidInput (bad values), NotFound. Nothing changes when it raises.
        """
        key = self.keys.decision(decision_id)
        try:
            outcome = DecisionOutcome(success=success, quality_score=quality_score,
                                      latency_ms=latency_ms, error=error, metrics=dict(metrics or {}))
        except ValidationError as exc:
            raise InvalidInput(describe_validation_error(exc)) from None
        async with translate_redis_errors():
            found = await self.redis.hmget(key, ["agent_id", "decision_type"])
            agent_id, decision_type = texts_or_none(found)
            if agent_id is None:
                if self.archive is None and not queue_unknown:
                    raise NotFound(f"no decision {decision_id} in Redis (and no archive here to look in)")
                return await self._late_outcome(decision_id, outcome)
            result = "ok" if success else "failed"
            of_type = indexed_type(decision_type)
            try:
                await self._log_outcome(
                    keys=[key, self.keys.outcomes(),
                          self.keys.decision_index(agent_id, None, "pending"),
                          self.keys.decision_index(agent_id, of_type, "pending"),
                          self.keys.decision_index(agent_id, None, result),
                          self.keys.decision_index(agent_id, of_type, result)],
                    args=[outcome.model_dump_json(), "1" if success else "0", decision_id,
                          outcome.recorded_at],
                )
            except redis_errors.ResponseError as exc:
                if "HAS_OUTCOME" in str(exc):
                    raise AlreadyRecorded(
                        f"decision {decision_id} already has an outcome; the first one is kept"
                    ) from None
                if "UNKNOWN_DECISION" in str(exc):
                    raise NotFound(f"no decision {decision_id}") from None
                raise
        return outcome

    async def _late_outcome(self, decision_id: str, outcome: DecisionOutcome) -> DecisionOutcome:
        if self.archive is not None:
            archived = await self.archive.archived_decision(decision_id)
            if archived is None:
                raise NotFound(f"no decision {decision_id}")
            if archived[0].outcome is not None:
                raise AlreadyRecorded(f"decision {decision_id} already has an outcome; the first one is kept")
        async with translate_redis_errors():
            queued = await self.redis.hsetnx(self.keys.late_outcomes(), decision_id,
                                             outcome.model_dump_json())
        if not queued:
            raise AlreadyRecorded(f"decision {decision_id} already has an outcome queued; "
                                  "the first one is kept")
        return outcome

    async def get(self, decision_id: str) -> DecisionRecord:
        """One decision. Raises NotFound, InvalidId."""
        async with translate_redis_errors():
            fields = text_map(await self.redis.hgetall(self.keys.decision(decision_id)))
        if fields:
            record = _readable(fields)
            if record is None:
                raise InvalidInput(f"decision {decision_id} is unreadable (edited by hand?); "
                                   f"its fields: hivebus redis-cli HGETALL {self.keys.decision(decision_id)}")
            return record
        archived = await self.archive.archived_decision(decision_id) if self.archive else None
        if archived is None:
            raise NotFound(f"no decision {decision_id}")
        return archived[0]

    async def record_caused_signal(self, decision_id: str, signal_id: str) -> None:
        """Remember that ``signal_id`` was published because of ``decision_id``."""
        async with translate_redis_errors():
            await self.redis.sadd(self.keys.decision_signals(decision_id), signal_id)

    async def caused_signals(self, decision_id: str) -> list[str]:
        """Ids of the signals a decision caused, oldest first."""
        async with translate_redis_errors():
            caused = sorted(text_set(await self.redis.smembers(self.keys.decision_signals(decision_id))))
        if not caused and self.archive is not None:
            archived = await self.archive.archived_decision(decision_id)
            caused = archived[1] if archived else []
        return caused

    async def query(
        self, agent_id: str, *, decision_type: str | None = None, success: bool | None = None,
        since: float | None = None, until: float | None = None, pending: bool = False,
        limit: int = 100,
    ) -> list[DecisionRecord]:
        """An agent's decisions, newest first, filtered by type, success, time, outcome-pending.

        Pages through the one index that holds exactly the decisions asked for (by type, by
        result, by both), newest first, until ``limit`` are found: a filter that matches
        nothing costs one empty read. Archived decisions (with a store) are merged in."""
        if pending and success is not None:
            return []  # a decision awaiting its outcome has neither succeeded nor failed
        result = "pending" if pending else None if success is None else "ok" if success else "failed"
        index = self.keys.decision_index(agent_id, decision_type, result)
        lo = since if since is not None else "-inf"
        hi = until if until is not None else "+inf"
        found: list[DecisionRecord] = []
        offset = 0
        while len(found) < limit:
            page = min(QUERY_PAGE, limit - len(found))
            async with translate_redis_errors():
                ids = range_members(await self.redis.zrevrangebyscore(index, hi, lo, start=offset, num=page))
                pipe = self.redis.pipeline(transaction=False)
                for decision_id in ids:
                    pipe.hgetall(self.keys.decision(decision_id))
                rows = await pipe.execute() if ids else []
            for fields in rows:
                record = _readable(fields)
                if record is None:
                    continue  # archived meanwhile, or edited by hand into nonsense
                if decision_type and record.decision_type != decision_type:
                    continue
                if success is not None and (record.outcome is None or record.outcome.success != success):
                    continue
                found.append(record)
            offset += len(ids)
            if len(ids) < page:
                break
        if self.archive is not None and not pending:
            seen = {d.decision_id for d in found}
            older = await self.archive.archived(agent_id, since=since, until=until,
                                                decision_type=decision_type, success=success,
                                                limit=limit)
            found += [d for d in older if d.decision_id not in seen]
            found.sort(key=lambda d: -d.timestamp)
            found = found[:limit]
        return found
