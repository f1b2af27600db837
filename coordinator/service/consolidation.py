"""STM -> LTM consolidation: learn from outcomes, promote patterns, archive aged decisions, retain.

Each step is safe to interrupt at any instant and to run again:

* **learn** reads each agent's outcomes queue (``hive:outcomes:{<agent>}``, of the agents
  that logged decisions) in batches, counts each batch in one store transaction that skips
  decisions counted before, and only then removes the batch from the queue;
* **promote** turns counts into pattern versions in one store transaction;
* **archive** copies decisions older than the STM window into the store (a decision
  archived twice is kept once) and only then deletes them from Redis: their locators, then
  the decisions in a script in the agent's slot that first checks the agent's fence (no
  coordinator of a newer epoch deleted there).

Store writes carry the leader's fencing epoch, so a deposed leader's writes are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import exceptions as redis_errors

from hivebus.domain.clock import now_s
from hivebus.domain.decision import DecisionOutcome, DecisionRecord
from hivebus.domain.errors import InvalidId, NotLeader, RedisUnavailable
from hivebus.domain.keys import Keys, check_agent_id, check_item_id
from hivebus.domain.learning import Thresholds, credits_for
from hivebus.infra.logs import get_logger
from hivebus.infra.lua import DELETE_ARCHIVED
from hivebus.infra.redis_errors import Redis, hash_page, range_members, text_set, translate_redis_errors
from hivebus.memory.decisions import DecisionLog, indexed_type
from hivebus.service.retention import Retention
from hivebus.service.set_aside import SetAside
from hivebus.settings import Settings
from hivebus.store.base import Store

BATCH = 1000
Progress = Callable[[str, int, int], None]

INDEX_RESULTS = (None, "pending", "ok", "failed")


@dataclass
class PassResult:
    """What one consolidation pass did."""

    outcomes_seen: int = 0
    counted: int = 0
    promoted: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    demoted: list[str] = field(default_factory=list)
    archived: int = 0
    skipped: int = 0
    expired: int = 0
    trimmed: int = 0
    agents_removed: int = 0
    memories_removed: int = 0
    memories_purged: int = 0
    registry_repaired: int = 0

    def summary(self) -> str:
        """One line for people."""
        return (f"learned from {self.counted} new outcome(s) ({self.outcomes_seen} read); "
                f"patterns: {len(self.promoted)} promoted, {len(self.updated)} updated, "
                f"{len(self.demoted)} demoted; {self.archived} decision(s) archived"
                + (f"; {self.skipped} unreadable decision(s) set aside" if self.skipped else "")
                + f"; retention: {self.expired} signal(s) expired unprocessed, {self.trimmed} stream "
                f"entries trimmed, {self.agents_removed} dead agent(s) removed, "
                f"{self.memories_removed} faded memory item(s) removed, {self.memories_purged} "
                f"expired one(s) purged from the indexes"
                + (f"; {self.registry_repaired} registration(s) cut short completed"
                   if self.registry_repaired else ""))

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return self.__dict__.copy()


class Consolidator:
    """Runs learn / promote / archive for the leading coordinator."""

    def __init__(self, redis: Redis, settings: Settings, store: Store) -> None:
        self.redis = redis
        self.settings = settings
        self.store = store
        self.keys = Keys(settings.namespace)
        self.thresholds = Thresholds(settings.promote_min_samples,
                                     settings.promote_min_confidence, settings.wilson_z)
        self.share_with = [s.strip() for s in settings.pattern_share_with.split(",") if s.strip()]
        self._delete = redis.register_script(DELETE_ARCHIVED)
        self.log = get_logger(agent_id="coordinator")
        self.set_aside = SetAside(redis, self.keys)
        self.decisions = DecisionLog(redis, settings)

    async def run_pass(self, epoch: int, token: str = "", progress: Progress | None = None) -> PassResult:
        """Learn, promote, archive. Raises NotLeader when a coordinator of a newer epoch wrote
        meanwhile (``token``, the lease's, is not needed since the lease moved to a slot of its
        own: the store's epoch and the agents' fences guard the writes)."""
        result = PassResult()
        await self._set_aside_wrong_types()
        agents = await self.decision_agents()
        await self.learn(epoch, result, progress, agents)
        report = await self.store.promote(self.thresholds, self.share_with, epoch)
        result.promoted, result.updated, result.demoted = report.promoted, report.updated, report.demoted
        await self.archive(epoch, result, progress, agents)
        retained = await Retention(self.redis, self.settings).run()
        result.expired, result.trimmed = retained.expired, retained.trimmed
        result.agents_removed, result.memories_removed = retained.agents_removed, retained.memories_removed
        result.memories_purged = retained.memories_purged
        result.registry_repaired = retained.registry_repaired
        return result

    async def decision_agents(self) -> list[str]:
        """The agents that logged decisions, sorted (members that are not agent ids are set
        aside); their outcomes queues are learned from and their decisions archived."""
        async with translate_redis_errors():
            members = sorted(text_set(await self.redis.smembers(self.keys.decision_agents())))
        return await self.set_aside.valid(self.keys.decision_agents(), members, check_agent_id,
                                          "an agent id")

    async def learn(self, epoch: int, result: PassResult, progress: Progress | None,
                    agents: Sequence[str] | None = None) -> None:
        """Count every queued outcome once (those of archived decisions first, then each
        agent's queue)."""
        await self._learn_late(epoch, result)
        agents = await self.decision_agents() if agents is None else agents
        queues = {agent_id: self.keys.outcomes(agent_id) for agent_id in agents}
        await self._set_aside_wrong_types(dict.fromkeys(queues.values(), "zset"))
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for queue in queues.values():
                pipe.zcard(queue)
            total = sum(int(n) for n in await pipe.execute()) if queues else 0
        for agent_id, queue in queues.items():
            while True:
                async with translate_redis_errors():
                    read = range_members(await self.redis.zrange(queue, 0, BATCH - 1))
                if not read:
                    break
                ids = await self.set_aside.valid(queue, read, check_item_id, "a decision id", scores=True)
                rows = await self._decisions(agent_id, ids)
                batch = []
                for decision_id, fields in zip(ids, rows, strict=True):
                    record = await self._decision(agent_id, decision_id, fields)
                    if record is not None and record.outcome is not None:
                        batch.append((record, credits_for(record)))
                result.counted += await self.store.credit(batch, epoch)
                if ids:
                    async with translate_redis_errors():
                        await self.redis.zrem(queue, *ids)
                result.outcomes_seen += len(read)
                if progress:
                    progress("learn", result.outcomes_seen, max(total, result.outcomes_seen))

    async def _set_aside_wrong_types(self, expected: dict[str, str] | None = None) -> None:
        """Move aside any of the keys a pass reads that holds the wrong type (edited by hand),
        so the pass goes on with a fresh one instead of failing on every tick: the shared ones,
        or those of ``expected`` (key -> type)."""
        if expected is None:
            expected = {self.keys.late_outcomes(): "hash", self.keys.agents(): "set",
                        self.keys.decision_agents(): "set",
                        **dict.fromkeys(self.keys.signal_logs(), "stream")}
        if not expected:
            return
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for key in expected:
                pipe.type(key)
            found = await pipe.execute()
        for (key, want), have in zip(expected.items(), found, strict=True):
            if have not in ("none", want):
                await self.set_aside.rename(key, f"a {have} where a {want} belongs")

    async def _learn_late(self, epoch: int, result: PassResult) -> None:
        """Record the outcomes of archived decisions in the archive and count each once; one
        that cannot be (no such decision, already an outcome, nonsense) is set aside."""
        key = self.keys.late_outcomes()
        cursor = 0
        while True:
            async with translate_redis_errors():
                cursor, found = hash_page(await self.redis.hscan(key, cursor, count=BATCH))
            for decision_id, text in found.items():
                result.outcomes_seen += 1
                result.counted += await self._late(epoch, key, str(decision_id), str(text))
            if not cursor:
                return

    async def _late(self, epoch: int, key: str, decision_id: str, text: str) -> int:
        try:
            check_item_id(decision_id)
            outcome = DecisionOutcome.model_validate_json(text)
        except (InvalidId, ValueError):
            await self.set_aside.fields(key, decision_id, text, "not a decision id and an outcome")
            return 0
        archived = await self.store.archived_decision(decision_id)
        if archived is None:
            agent_id = await self.decisions.locate(decision_id)
            in_redis = 0
            if agent_id is not None:
                async with translate_redis_errors():
                    in_redis = int(await self.redis.exists(self.keys.decision(agent_id, decision_id)))
            if not in_redis:
                await self.set_aside.fields(key, decision_id, text,
                                            "outcome of a decision neither in Redis nor archived")
            return 0  # (in Redis: archived by a later pass, then recorded)
        record = archived[0]
        counted = 0
        if record.outcome is None:
            updated = record.model_copy(update={"outcome": outcome})
            counted = int(await self.store.record_late_outcome(updated, credits_for(updated), epoch))
        elif record.outcome != outcome:
            await self.set_aside.fields(key, decision_id, text,
                                        "the archived decision already has an outcome (the first is kept)")
            return 0
        async with translate_redis_errors():
            await self.redis.hdel(key, decision_id)
        return counted

    async def _decisions(self, agent_id: str, ids: Sequence[str]) -> list[dict[str, str]]:
        """The stored fields of each of an agent's decisions ({} when gone); a decision key of
        the wrong type (edited by hand) is set aside and read as gone."""
        async with translate_redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for decision_id in ids:
                pipe.hgetall(self.keys.decision(agent_id, decision_id))
            rows = await pipe.execute(raise_on_error=False)
        found: list[dict[str, str]] = []
        for decision_id, row in zip(ids, rows, strict=True):
            if isinstance(row, redis_errors.ResponseError) and "WRONGTYPE" in str(row):
                await self.set_aside.rename(self.keys.decision(agent_id, decision_id),
                                            "a decision that is not a hash")
                row = {}
            elif isinstance(row, Exception):
                raise RedisUnavailable(f"Redis error: {row}")
            found.append(row)
        return found

    async def _decision(self, agent_id: str, decision_id: str,
                        fields: dict[str, str]) -> DecisionRecord | None:
        if fields:
            try:
                return DecisionRecord.from_fields(fields)
            except (KeyError, ValueError) as exc:
                await self.set_aside.note(self.keys.decision(agent_id, decision_id),
                                          f"unreadable decision, not learned from: {exc}")
                return None
        archived = await self.store.archived_decision(decision_id)  # archived before it was learned
        return archived[0] if archived else None

    async def archive(self, epoch: int, result: PassResult, progress: Progress | None,
                      agents: Sequence[str] | None = None) -> None:
        """Move decisions older than the STM window from Redis into the store."""
        cutoff = now_s() - self.settings.stm_window_s
        agents = await self.decision_agents() if agents is None else agents
        async with translate_redis_errors():
            total = 0
            for agent_id in agents:
                total += int(await self.redis.zcount(self.keys.decisions(agent_id), "-inf", cutoff))
        done = 0
        for agent_id in agents:
            index = self.keys.decisions(agent_id)
            while True:
                async with translate_redis_errors():
                    read = range_members(await self.redis.zrangebyscore(index, "-inf", cutoff, start=0,
                                                                        num=BATCH))
                if not read:
                    break
                ids = await self.set_aside.valid(index, read, check_item_id, "a decision id", scores=True)
                rows = await self._decisions(agent_id, ids)
                async with translate_redis_errors():
                    pipe = self.redis.pipeline(transaction=False)
                    for decision_id in ids:
                        pipe.smembers(self.keys.decision_signals(agent_id, decision_id))
                    signal_sets = await pipe.execute(raise_on_error=False)
                batch, unreadable = [], []
                for n, decision_id in enumerate(ids):
                    fields = rows[n]
                    caused = signal_sets[n] if isinstance(signal_sets[n], set) else set()
                    record = await self._decision(agent_id, decision_id, fields) if fields else None
                    if record is None:
                        unreadable.append(decision_id)
                        continue
                    batch.append((record, sorted(caused)))
                result.archived += await self.store.archive(batch, epoch)
                await self._delete_from_redis(agent_id, epoch,
                                              [(r.decision_id, r.decision_type) for r, _ in batch])
                if unreadable:  # left in Redis for a person to look at, out of the index
                    result.skipped += len(unreadable)
                    await self.set_aside.members(index, unreadable, "decision gone or unreadable; "
                                                 "its hash (if any) is left as it is", scores=True)
                done += len(ids)
                if progress:
                    progress("archive", done, max(total, done))

    async def _delete_from_redis(self, agent_id: str, epoch: int, ids: list[tuple[str, str]]) -> None:
        """Delete an agent's archived decisions (id, type): their locators first, then the
        decisions and their index entries in one script in the agent's slot, unless a
        coordinator of a newer epoch has deleted there (NotLeader). Cut short in between, the
        decisions are found from their agent's indexes only, and by id in the archive, which
        holds them; the next pass archives them again (kept once) and deletes them."""
        if not ids:
            return
        async with translate_redis_errors():
            await self.redis.delete(*(self.keys.decision_at(decision_id) for decision_id, _ in ids))
        keys = [self.keys.fence(agent_id),
                *(self.keys.decision_index(agent_id, None, r) for r in INDEX_RESULTS)]
        for decision_id, decision_type in ids:
            keys += [self.keys.decision(agent_id, decision_id),
                     self.keys.decision_signals(agent_id, decision_id),
                     *(self.keys.decision_index(agent_id, indexed_type(decision_type), r)
                       for r in INDEX_RESULTS)]
        async with translate_redis_errors():
            try:
                await self._delete(keys=keys, args=[epoch, *(decision_id for decision_id, _ in ids)])
            except redis_errors.ResponseError as exc:
                if "STALE_EPOCH" in str(exc):
                    raise NotLeader(f"a coordinator of a newer epoch than {epoch} archived decisions "
                                    f"of {agent_id} meanwhile; stopping") from None
                raise
