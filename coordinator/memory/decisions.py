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

Every key of a decision is in its agent's Redis Cluster slot (``hive:decision:{<agent>}:<id>``,
its caused-signals set, the indexes, the agent's outcomes queue ``hive:outcomes:{<agent>}``), so
logging it is one transaction and attaching its outcome one script call, in that slot. A small
locator ``hive:decision-at:<id>`` (the agent id) finds a decision from its id alone; it is written
before the decision and deleted after the decision is archived, so a locator whose decision is
not there reads as "not in Redis" (then the archive answers).
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
from hivebus.domain.keys import (
    AGENT_ID_RE,
    Keys,
    check_agent_id,
    check_item_id,
    check_signal_id,
    check_signal_type,
)
from hivebus.domain.models import describe_validation_error
from hivebus.infra.lua import LOG_OUTCOME
from hivebus.infra.redis_errors import (
    Redis,
    hash_fields,
    range_members,
    text_map,
    text_or_none,
    text_set,
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
        running again for a redelivered signal logs each decision once); one that another
        agent's decision has is refused (InvalidInput).

        Written in this order, each step safe to interrupt: the agent joins the set of agents
        that logged decisions (walked by the coordinator) and the locator is set, then one
        transaction in the agent's slot writes the decision and its indexes. Interrupted
        before the transaction, nothing a read trips on is left: an agent with no decision to
        walk, a locator of no decision (read as not in Redis; logging the same id again
        completes it).
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
        key = self.keys.decision(agent_id, record.decision_id)
        locator = self.keys.decision_at(record.decision_id)
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.sadd(self.keys.decision_agents(), agent_id)
            pipe.set(locator, agent_id, nx=True)
            pipe.get(locator)
            pipe.exists(key)
            _, _, owner, exists = await pipe.execute()
            if owner is not None and owner != agent_id:
                raise InvalidInput(f"decision id {record.decision_id} is another agent's "
                                   f"({owner!r}): log this decision with a new id")
            if exists:
                return record.decision_id
            pipe = self.redis.pipeline(transaction=True)  # every key in the agent's slot
            pipe.hset(key, mapping=hash_fields(record.to_fields()))
            entry = {record.decision_id: record.timestamp}
            for of_type in (None, decision_type):
                pipe.zadd(self.keys.decision_index(agent_id, of_type), entry)
                pipe.zadd(self.keys.decision_index(agent_id, of_type, "pending"), entry)
            await pipe.execute()
        return record.decision_id

    async def locate(self, decision_id: str) -> str | None:
        """The agent in whose slot decision ``decision_id`` is kept in Redis, from its locator;
        None when it has none (archived, never logged, or a locator edited by hand into
        something that is not an agent id). Raises InvalidId."""
        locator = self.keys.decision_at(decision_id)
        async with translate_redis_errors():
            try:
                found = text_or_none(await self.redis.get(locator))
            except redis_errors.ResponseError as exc:
                if "WRONGTYPE" not in str(exc):
                    raise
                return None
        return found if found is not None and AGENT_ID_RE.fullmatch(found) else None

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
        check_item_id(decision_id)
        try:
            outcome = DecisionOutcome(success=success, quality_score=quality_score,
                                      latency_ms=latency_ms, error=error, metrics=dict(metrics or {}))
        except ValidationError as exc:
            raise InvalidInput(describe_validation_error(exc)) from None
        agent_id = await self.locate(decision_id)
        if agent_id is None:
            return await self._late_outcome(decision_id, outcome, queue_unknown)
        key = self.keys.decision(agent_id, decision_id)
        async with translate_redis_errors():
            decision_type = text_or_none(await self.redis.hget(key, "decision_type"))
            result = "ok" if success else "failed"
            of_type = indexed_type(decision_type)
            try:
                await self._log_outcome(  # every key in the agent's slot
                    keys=[key, self.keys.outcomes(agent_id),
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
                if "UNKNOWN_DECISION" not in str(exc):
                    raise
                unknown = True  # archived meanwhile, or a locator whose decision never was
            else:
                unknown = False
        if unknown:
            return await self._late_outcome(decision_id, outcome, queue_unknown)
        return outcome

    async def _late_outcome(self, decision_id: str, outcome: DecisionOutcome,
                            queue_unknown: bool) -> DecisionOutcome:
        """The outcome of a decision not in Redis: queued for the coordinator (see log_outcome)."""
        if self.archive is None and not queue_unknown:
            raise NotFound(f"no decision {decision_id} in Redis (and no archive here to look in)")
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
        agent_id = await self.locate(decision_id)
        if agent_id is not None:
            key = self.keys.decision(agent_id, decision_id)
            async with translate_redis_errors():
                fields = text_map(await self.redis.hgetall(key))
            if fields:
                record = _readable(fields)
                if record is None:
                    raise InvalidInput(f"decision {decision_id} is unreadable (edited by hand?); "
                                       f"its fields: hivebus redis-cli HGETALL '{key}'")
                return record
        archived = await self.archive.archived_decision(decision_id) if self.archive else None
        if archived is None:
            raise NotFound(f"no decision {decision_id}")
        return archived[0]

    async def record_caused_signal(self, decision_id: str, signal_id: str, *,
                                   agent_id: str | None = None) -> bool:
        """Remember that ``signal_id`` was published because of ``decision_id``, a decision of
        ``agent_id`` (None: found from its locator). False, and nothing written, when the
        decision is not in Redis (archived already, or unknown)."""
        check_signal_id(signal_id)
        agent_id = check_agent_id(agent_id) if agent_id is not None else await self.locate(decision_id)
        if agent_id is None:
            return False
        async with translate_redis_errors():
            await self.redis.sadd(self.keys.decision_signals(agent_id, decision_id), signal_id)
        return True

    async def caused_signals(self, decision_id: str) -> list[str]:
        """Ids of the signals a decision caused, oldest first."""
        agent_id = await self.locate(decision_id)
        caused: list[str] = []
        if agent_id is not None:
            key = self.keys.decision_signals(agent_id, decision_id)
            async with translate_redis_errors():
                caused = sorted(text_set(await self.redis.smembers(key)))
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
                    pipe.hgetall(self.keys.decision(agent_id, decision_id))
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
