"""Contract tests of learning, promotion, archival and the lease, on fakeredis and real Redis."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from hivebus.domain.errors import AlreadyRecorded, NotLeader, RedisUnavailable
from hivebus.domain.keys import Keys
from hivebus.memory.decisions import DecisionLog
from hivebus.service.consolidation import Consolidator
from hivebus.service.lease import Lease
from hivebus.settings import Settings
from hivebus.store.sqlite import SQLiteStore
from tests.unit.test_learning import wilson_by_quadratic

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

# (agent, action, features, decisions, success probability)
PLAN = [
    ("te-1", "buy", {"whale": "accumulation", "funding": 0.002}, 60, 0.85),   # clearly good
    ("te-1", "sell", {"whale": "distribution"}, 40, 0.5),                      # coin flip
    ("te-1", "buy", {"whale": "distribution"}, 10, 1.0),                       # too few samples
    ("rm-1", "LOW", {}, 30, 0.9),                                              # good, other agent
]


def coordinator_settings(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, promote_min_samples=20, promote_min_confidence=0.55,
                               **changes)


async def generate(log: DecisionLog, seed: int = 3, age_s: float = 0.0) -> dict[str, tuple[int, int]]:
    """Log the PLAN's decisions with outcomes; return signature -> (samples, successes)."""
    import time

    rng = random.Random(seed)
    expected: dict[str, tuple[int, int]] = {}
    for agent, action, features, count, p in PLAN:
        buckets = {"whale": features.get("whale"), "funding": "+1e-3"} if "funding" in features else (
            {"whale": features["whale"]} if features else {})
        signature = f"{agent}/TRADE_EXECUTION/{action}" + (
            "/" + ",".join(f"{k}={v}" for k, v in sorted(buckets.items())) if buckets else "")
        samples, wins = expected.get(signature, (0, 0))
        for _ in range(count):
            decision_id = await log.log_decision(
                agent, "TRADE_EXECUTION", reasoning={"action": action}, context={"features": features},
                timestamp=time.time() - age_s)
            success = rng.random() < p
            await log.log_outcome(decision_id, success=success)
            samples, wins = samples + 1, wins + int(success)
        expected[signature] = (samples, wins)
    return expected


async def test_promoted_patterns_match_independent_figures(
    redis: Any, settings: Settings, store: SQLiteStore
) -> None:
    """Acceptance 1: promoted patterns, rates and Wilson confidences equal figures computed here."""
    settings = coordinator_settings(settings)
    expected = await generate(DecisionLog(redis, settings))
    lease = Lease(redis, settings, "c1")
    epoch = await lease.try_lead()
    result = await Consolidator(redis, settings, store).run_pass(epoch, lease.token)
    assert result.counted == sum(n for *_, n, _ in PLAN)
    should = {sig for sig, (n, s) in expected.items()
              if n >= 20 and wilson_by_quadratic(s, n) >= 0.55}
    assert set(result.promoted) == should
    patterns = {p.pattern_id: p for p in await store.query_patterns(viewer=None)}
    assert set(patterns) == should
    for sig in should:
        n, s = expected[sig]
        assert patterns[sig].sample_size == n and patterns[sig].successes == s
        assert patterns[sig].success_rate == pytest.approx(s / n)
        assert patterns[sig].confidence == pytest.approx(wilson_by_quadratic(s, n))
    stats = {row["pattern_id"]: (row["samples"], row["successes"]) for row in await store.stats()}
    assert stats == expected
    again = await Consolidator(redis, settings, store).run_pass(epoch, lease.token)
    assert again.counted == 0 and again.promoted == [] and again.updated == []


async def test_archival_moves_old_decisions_and_queries_span_both(
    redis: Any, settings: Settings, store: SQLiteStore
) -> None:
    """Decisions past the STM window move to the store; one query returns both, newest first."""
    settings = coordinator_settings(settings, stm_window_s=3600)
    log = DecisionLog(redis, settings)
    old = [await log.log_decision("te-1", "TRADE_EXECUTION", timestamp=1_000_000.0 + n) for n in range(5)]
    new = [await log.log_decision("te-1", "TRADE_EXECUTION") for _ in range(3)]
    lease = Lease(redis, settings, "c1")
    result = await Consolidator(redis, settings, store).run_pass(await lease.try_lead(), lease.token)
    assert result.archived == 5
    keys = Keys(settings.namespace)
    for decision_id in old:
        assert not await redis.exists(keys.decision("te-1", decision_id))
        assert not await redis.exists(keys.decision_at(decision_id))  # its locator went after it
    assert await redis.zcard(keys.decisions("te-1")) == 3
    spanning = DecisionLog(redis, settings, archive=store)
    assert [d.decision_id for d in await spanning.query("te-1", limit=100)] == new[::-1] + old[::-1]
    assert (await spanning.get(old[0])).decision_id == old[0]


async def test_deposed_leader_cannot_write(redis: Any, settings: Settings, store: SQLiteStore) -> None:
    """Acceptance 3 (library): after another coordinator took the lease, the old one is refused."""
    settings = coordinator_settings(settings, stm_window_s=3600)
    log = DecisionLog(redis, settings)
    await log.log_decision("te-1", "TRADE_EXECUTION", timestamp=1_000_000.0)
    old, new = Lease(redis, settings, "old"), Lease(redis, settings, "new")
    old_epoch = await old.try_lead()
    assert await new.try_lead() == 0                     # only one leads
    old_token = old.token
    await redis.delete(Keys(settings.namespace).lease())  # the old leader's lease lapses
    new_epoch = await new.try_lead()
    assert new_epoch > old_epoch
    await Consolidator(redis, settings, store).run_pass(new_epoch, new.token)
    await log.log_decision("te-1", "TRADE_EXECUTION", timestamp=1_000_001.0)
    with pytest.raises(NotLeader):
        await Consolidator(redis, settings, store).run_pass(old_epoch, old_token)
    assert await store.count_archived() == 1


async def test_a_redis_that_started_over_does_not_lock_the_coordinator_out(
    redis: Any, settings: Settings, store: SQLiteStore
) -> None:
    """Issue 12: the store remembers epoch 4, Redis is new (its epoch counter at 0, or edited by
    hand into text): the coordinator takes the lease above 4 and its pass writes."""
    from hivebus.service.coordinator import Coordinator

    settings = coordinator_settings(settings, stm_window_s=3600)
    await store.archive([], 4)  # a write fenced at epoch 4: the store's highest
    await generate(DecisionLog(redis, settings))
    coordinator = Coordinator(redis, settings, store)
    result = await coordinator.once()
    assert result.counted == 140 and result.promoted
    assert await store.highest_epoch() == 5
    await redis.set(Keys(settings.namespace).epoch(), "nonsense")
    await Coordinator(redis, settings, store).once()
    assert await store.highest_epoch() == 6


async def test_a_long_pass_keeps_its_lease_and_a_lost_lease_stops_it(
    redis: Any, settings: Settings, store: SQLiteStore
) -> None:
    """Issue 12: a pass three lease TTLs long keeps the lease (a standby never takes it); a lease
    lost during a pass (taken by another coordinator) stops the pass with NotLeader, raised as
    itself (one line), not as an exception group."""
    import anyio

    from hivebus.service.coordinator import Coordinator

    settings = coordinator_settings(settings, lease_ttl_s=0.6)
    leader, standby = Coordinator(redis, settings, store), Coordinator(redis, settings, store)
    standby_epochs: list[int] = []

    async def slow_pass(*_: Any) -> Any:
        for _ in range(18):  # 1.8 s: three TTLs
            standby_epochs.append(await standby.lease.try_lead())
            await anyio.sleep(0.1)
        from hivebus.service.consolidation import PassResult
        return PassResult()

    leader.consolidator.run_pass = slow_pass  # type: ignore[method-assign]
    await leader.once()
    assert standby_epochs and set(standby_epochs) == {0}

    async def deposed_pass(*_: Any) -> Any:
        await redis.set(Keys(settings.namespace).lease(), "other-host|99", px=60_000)
        await anyio.sleep(10)  # the renewal (every TTL / 3) must stop this long before

    leader.consolidator.run_pass = deposed_pass  # type: ignore[method-assign]
    with anyio.fail_after(5), pytest.raises(NotLeader, match="other-host"):
        await leader.once()


async def test_an_outcome_after_its_decision_was_archived_is_recorded_and_learned_once(
    redis: Any, settings: Settings, store: SQLiteStore
) -> None:
    """Issue 12: a trade that closes after the STM window: its decision is archived already;
    the outcome is queued, the next pass records it in the archive and learns from it once; an
    outcome of a decision nobody knows, or a second one, is set aside with the reason."""
    import time

    from hivebus.service.coordinator import Coordinator
    from hivebus.service.set_aside import SetAside

    settings = coordinator_settings(settings, stm_window_s=60)
    log = DecisionLog(redis, settings)
    decision_id = await log.log_decision("te-1", "TRADE_EXECUTION", reasoning={"action": "buy"},
                                         context={"features": {"whale": "accumulation"}},
                                         timestamp=time.time() - 120)
    first = await Coordinator(redis, settings, store).once()
    assert first.archived == 1
    assert not await redis.exists(Keys(settings.namespace).decision("te-1", decision_id))
    await log.log_outcome(decision_id, success=True, metrics={"pnl": 3.0})
    with pytest.raises(AlreadyRecorded):
        await log.log_outcome(decision_id, success=False)      # one is queued already
    unknown = "01KAAAAAAAAAAAAAAAAAAAAAAB"
    await log.log_outcome(unknown, success=True)
    result = await Coordinator(redis, settings, store).once()
    assert result.counted == 1
    archived = await DecisionLog(redis, settings, archive=store).get(decision_id)
    assert archived.outcome is not None and archived.outcome.success
    assert archived.outcome.metrics == {"pnl": 3.0}
    assert (await Coordinator(redis, settings, store).once()).counted == 0   # learned once
    await log.log_outcome(decision_id, success=False)           # too late, and a second one
    await Coordinator(redis, settings, store).once()
    reasons = {r["member"]: r["reason"] for r in await SetAside(redis, Keys(settings.namespace)).list()}
    assert reasons[unknown] == "outcome of a decision neither in Redis nor archived"
    assert reasons[decision_id] == "the archived decision already has an outcome (the first is kept)"
    with pytest.raises(AlreadyRecorded):
        await DecisionLog(redis, settings, archive=store).log_outcome(decision_id, success=False)
    assert not await redis.exists(Keys(settings.namespace).late_outcomes())


async def test_deleting_archived_decisions_is_fenced_per_agent_slot(
    redis: Any, settings: Settings, store: SQLiteStore
) -> None:
    """Issue 14: the archival script checks no lease (another slot) but the agent's fence: the
    highest epoch that deleted there. A coordinator of an older epoch is refused there (NotLeader,
    nothing deleted); the fence rises with a newer one."""
    settings = coordinator_settings(settings, stm_window_s=3600)
    keys, log = Keys(settings.namespace), DecisionLog(redis, settings)
    old = [await log.log_decision("te-1", "TRADE_EXECUTION", timestamp=1_000_000.0 + n) for n in range(2)]
    consolidator = Consolidator(redis, settings, store)
    await consolidator._delete_from_redis("te-1", 7, [(old[0], "TRADE_EXECUTION")])
    assert await redis.get(keys.fence("te-1")) == "7"
    assert not await redis.exists(keys.decision("te-1", old[0]))
    with pytest.raises(NotLeader, match="newer epoch than 6"):
        await consolidator._delete_from_redis("te-1", 6, [(old[1], "TRADE_EXECUTION")])
    assert await redis.exists(keys.decision("te-1", old[1]))         # nothing deleted
    assert await redis.zscore(keys.decisions("te-1"), old[1]) is not None
    await consolidator._delete_from_redis("te-1", 9, [(old[1], "TRADE_EXECUTION")])
    assert await redis.get(keys.fence("te-1")) == "9"
    assert await redis.zcard(keys.decisions("te-1")) == 0
    assert not await redis.exists(keys.fence("rm-1"))                 # per agent


async def test_an_archival_cut_short_after_the_locators_reads_from_the_archive_and_completes(
    redis: Any, settings: Settings, store: SQLiteStore
) -> None:
    """Locators are deleted before the decisions: cut short in between, a decision is still in
    its agent's indexes, read by id from the archive (its outcome queued as a late one); the
    next pass archives it again (kept once) and deletes it."""
    settings = coordinator_settings(settings, stm_window_s=3600)
    keys, log = Keys(settings.namespace), DecisionLog(redis, settings)
    decision_id = await log.log_decision("te-1", "TRADE_EXECUTION", timestamp=1_000_000.0,
                                         reasoning={"action": "buy"})
    consolidator = Consolidator(redis, settings, store)

    async def cut_short(*_: Any, **__: Any) -> Any:
        raise RedisUnavailable("Redis went away")

    consolidator._delete = cut_short  # type: ignore[assignment]
    with pytest.raises(RedisUnavailable):
        await consolidator.run_pass(1)
    assert not await redis.exists(keys.decision_at(decision_id))
    assert await redis.exists(keys.decision("te-1", decision_id))
    spanning = DecisionLog(redis, settings, archive=store)
    assert (await spanning.get(decision_id)).decision_id == decision_id  # from the archive
    await spanning.log_outcome(decision_id, success=True)
    result = await Consolidator(redis, settings, store).run_pass(2)
    assert result.archived == 0 and result.counted == 1  # archived before: kept once
    assert not await redis.exists(keys.decision("te-1", decision_id))
    assert await store.count_archived() == 1
    assert (await spanning.get(decision_id)).outcome is not None
