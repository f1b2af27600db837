"""Contract tests of the faults of issue 10, library level, on fakeredis and each real redis-server.

The Counter agent applies ``HINCRBY <ctx.key("applied")> <signal id> 1`` as an effect at settle
and counts each run of its handler with a direct write (``<ns>:test:runs``): "applied once" is
read from the former, "handled again" from the latter.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from hivebus.agents.runner import AgentRunner
from hivebus.bus.bus import Bus
from hivebus.bus.dlq import DeadLetters
from hivebus.bus.registry import Registry
from hivebus.domain.errors import BadKey, InboxFull, RedisUnavailable
from hivebus.domain.models import Signal, SignalStatus
from hivebus.service.retention import Retention
from hivebus.settings import Settings
from tests.agents_for_tests import Counter, Forwarder
from tests.conftest import eventually
from tests.contract.test_runtime import run_burst as burst

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]


def work(agent_id: str, count: int, **data: Any) -> list[Signal]:
    return [Signal.create("WORK", "tester", targets=[agent_id], data=data) for _ in range(count)]


async def applied(redis: Any, bus: Bus, agent_id: str) -> dict[str, str]:
    return dict(await redis.hgetall(bus.keys.effect_key(agent_id, "applied")))


async def status_of(bus: Bus, signal: Signal, agent_id: str) -> SignalStatus:
    [status] = await bus.statuses([(signal.signal_id, agent_id)])
    return status


async def inbox_state(redis: Any, bus: Bus, agent_id: str) -> tuple[int, int, int, int]:
    """What publishing writes for one target: inbox and pending lengths, the log, signal keys."""
    signal_keys = [k async for k in redis.scan_iter(match=f"{bus.keys.prefix}signal:*", count=1000)]
    return (await redis.xlen(bus.keys.inbox(agent_id)), await redis.hlen(bus.keys.pending(agent_id)),
            sum([await redis.xlen(log) for log in bus.keys.signal_logs()]), len(signal_keys))


class Replicas:
    """Agent runners running in this test's event loop; what each one raised, if anything."""

    def __init__(self, runners: list[AgentRunner]) -> None:
        self.runners = runners
        self.errors: list[Exception] = []
        self.stop = anyio.Event()

    async def until(self, predicate: Any, limit_s: float, what: str) -> Any:
        """Wait for ``predicate``; a runner that died fails the wait at once with its error."""
        async def check() -> Any:
            if self.errors:
                raise self.errors[0]
            return await predicate()

        return await eventually(check, limit_s, what)


@asynccontextmanager
async def running(*runners: AgentRunner) -> AsyncIterator[Replicas]:
    """Run ``runners`` until the block ends, then stop them (never cancel them: a fakeredis
    client cancelled mid-command hangs) and raise the block's or a runner's error."""
    replicas = Replicas(list(runners))

    async def one(runner: AgentRunner) -> None:
        try:
            await runner.run(replicas.stop)
        except Exception as exc:
            replicas.errors.append(exc)

    failure: BaseException | None = None
    async with anyio.create_task_group() as tg:
        for runner in runners:
            tg.start_soon(one, runner)
        try:
            yield replicas
        except (Exception, pytest.fail.Exception) as exc:
            failure = exc
        replicas.stop.set()
    if failure is not None:
        raise failure
    if replicas.errors:
        raise replicas.errors[0]


# --- fault 1: a replica paused between handling and settling ----------------------------------

async def test_settle_of_a_replica_whose_batch_was_taken_over_is_superseded(
    redis: Any, settings: Settings
) -> None:
    """Fault 1 (the fence): a replica handles a batch and stalls before settling; another replica
    reclaims and settles it; the stalled replica's settle then applies nothing (superseded)."""
    settings = dataclasses.replace(settings, claim_idle_s=0.2)
    bus = Bus(redis, settings)
    await burst(Counter("ctr"), redis, settings)  # registers
    signals = work("ctr", 3)
    await bus.publish_many(signals)
    paused = AgentRunner(Counter("ctr"), bus, Registry(redis, settings))  # no heartbeat: looks dead
    batch = await paused._next_batch(burst=True)
    assert len(batch) == 3
    late_outcomes = await paused._handle_batch(batch)  # handled, then the process stalls

    async def idle() -> bool:
        inbox = bus.keys.inbox("ctr")
        return len(await redis.xpending_range(inbox, "ctr", "-", "+", 10, idle=250)) == 3

    await eventually(idle, 10, "the stalled batch to sit idle past claim_idle_s")
    other = AgentRunner(Counter("ctr"), bus, Registry(redis, settings))
    taken = await other.redelivery.orphans("ctr", other.consumer, 10)
    assert sorted(d.entry_id for d in taken) == sorted(d.entry_id for d in batch)
    done = await bus.settle("ctr", other.consumer, await other._handle_batch(taken))
    assert (done.processed, done.superseded) == (3, 0)
    late = await bus.settle("ctr", paused.consumer, late_outcomes)
    assert (late.processed, late.superseded, late.duplicate) == (0, 3, 0)
    assert await applied(redis, bus, "ctr") == {s.signal_id: "1" for s in signals}
    assert await redis.hgetall(f"{bus.keys.prefix}test:runs") == {s.signal_id: "2" for s in signals}
    assert await redis.hlen(bus.keys.pending("ctr")) == 0
    assert (await redis.xinfo_groups(bus.keys.inbox("ctr")))[0]["pending"] == 0
    for signal in signals:
        assert await status_of(bus, signal, "ctr") is SignalStatus.PROCESSED


async def test_replicas_of_a_new_agent_starting_together_all_start(redis: Any, settings: Settings) -> None:
    """Found while testing fault 1: two replicas of an agent never started before, started at the
    same moment (a deployment of two), both start and share the work; neither dies of racing the
    other to save the agent's first state."""
    bus = Bus(redis, settings)

    async def both_alive() -> bool:
        agents = await Registry(redis, settings).list_agents()
        return sum(1 for a in agents for i in a.instances if i.alive) == 2

    signals = work("fresh", 4)
    async with running(*(AgentRunner(Counter("fresh"), bus, Registry(redis, settings))
                         for _ in range(2))) as replicas:
        await replicas.until(both_alive, 10, "both replicas to be registered and alive")
        await bus.publish_many(signals)
        await replicas.until(lambda: _has(redis, bus, "fresh", 4), 10, "the signals to be processed")
    assert await applied(redis, bus, "fresh") == {s.signal_id: "1" for s in signals}


async def _has(redis: Any, bus: Bus, agent_id: str, count: int) -> bool:
    return len(await applied(redis, bus, agent_id)) == count


async def test_settle_and_read_settles_first_and_keeps_what_it_read_when_the_settle_fails(
    redis: Any, settings: Settings
) -> None:
    """The runner settles a batch and reads the next in one pipeline: Redis runs the settle
    first; a settle the script refuses (a key edited into the wrong type) comes back beside the
    entries read, which are not dropped; a server that lost its script cache still settles."""
    settings = dataclasses.replace(settings, read_batch=1)
    bus = Bus(redis, settings)
    await burst(Counter("ctr"), redis, settings)  # registers
    signals = work("ctr", 4)
    await bus.publish_many(signals)
    runner = AgentRunner(Counter("ctr"), bus, Registry(redis, settings))
    batch = await runner._next_batch(burst=True)
    outcomes = await runner._handle_batch(batch)

    result, batch = await bus.settle_and_read("ctr", runner.consumer, outcomes, count=1, block_ms=None)
    assert not isinstance(result, Exception) and result.processed == 1
    assert await applied(redis, bus, "ctr") == {signals[0].signal_id: "1"}
    assert [d.signal.signal_id for d in batch if d.signal] == [signals[1].signal_id]

    outcomes = await runner._handle_batch(batch)
    pending = bus.keys.pending("ctr")
    saved = await redis.hgetall(pending)
    await redis.delete(pending)
    await redis.set(pending, "edited by hand")
    result, batch = await bus.settle_and_read("ctr", runner.consumer, outcomes, count=1, block_ms=None)
    assert isinstance(result, BadKey) and pending in str(result)
    assert [d.signal.signal_id for d in batch if d.signal] == [signals[2].signal_id]
    assert await applied(redis, bus, "ctr") == {signals[0].signal_id: "1"}  # nothing of it applied

    await redis.delete(pending)
    await redis.hset(pending, mapping=saved)
    await redis.script_flush()
    result, batch = await bus.settle_and_read("ctr", runner.consumer, outcomes, count=1, block_ms=None)
    assert not isinstance(result, Exception) and result.processed == 1
    assert await applied(redis, bus, "ctr") == {s.signal_id: "1" for s in signals[:2]}
    assert [d.signal.signal_id for d in batch if d.signal] == [signals[3].signal_id]


# --- fault 4: a full inbox -------------------------------------------------------------------

async def test_publishing_past_inbox_max_is_refused_and_writes_nothing(
    redis: Any, settings: Settings
) -> None:
    """Fault 4: past HIVEBUS_INBOX_MAX unsettled signals, publish raises InboxFull naming the agent
    and its backlog; nothing of the refused signal (or chunk) is written."""
    settings = dataclasses.replace(settings, inbox_max=5)
    bus = Bus(redis, settings)
    await burst(Counter("b"), redis, settings)
    queued = work("b", 3)
    await bus.publish_many(queued)
    before = await inbox_state(redis, bus, "b")
    with pytest.raises(InboxFull, match="'b' has 3 unsettled"):
        await bus.publish_many(work("b", 3))  # 3 + 3 > 5: the whole chunk is refused
    assert await inbox_state(redis, bus, "b") == before
    await bus.publish_many(work("b", 2))  # 5: at the max, accepted
    before = await inbox_state(redis, bus, "b")
    assert before[:2] == (5, 5)
    refused = Signal.create("WORK", "tester", targets=["b"])
    with pytest.raises(InboxFull, match=r"'b' has 5 unsettled signals.*HIVEBUS_INBOX_MAX"):
        await bus.publish(refused)
    assert await inbox_state(redis, bus, "b") == before
    assert not await redis.exists(bus.keys.signal(refused.signal_id))
    assert await bus.publish(queued[0]) == {}  # an id the inbox holds already is not new: no refusal
    await burst(Counter("b"), redis, settings)  # drained: room again
    assert list(await bus.publish(refused)) == ["b"]


async def test_handler_publishing_into_a_full_inbox_fails_retryably_and_succeeds_later(
    redis: Any, settings: Settings
) -> None:
    """Fault 4: a handler whose ctx.publish hits a full inbox gets FAILED (not DEAD); after the
    target drains its inbox, the retry succeeds and everything applies once."""
    settings = dataclasses.replace(settings, inbox_max=3)
    bus, prefix = Bus(redis, settings), f"{settings.namespace}:"
    await burst(Counter("b"), redis, settings)
    await burst(Forwarder("fwd"), redis, settings)
    backlog = work("b", 3)
    await bus.publish_many(backlog)  # b is stopped and its inbox is full
    forward = Signal.create("FORWARD", "tester", targets=["fwd"], data={"to": "b"})
    await bus.publish(forward)
    runner = AgentRunner(Forwarder("fwd"), bus, Registry(redis, settings))
    batch = await runner._next_batch(burst=True)
    result = await bus.settle("fwd", runner.consumer, await runner._handle_batch(batch))
    assert (result.failed, result.dead) == (1, 0)
    [report] = (await bus.report(forward.signal_id)).targets
    assert report.status is SignalStatus.FAILED and "InboxFull" in (report.error or "")
    assert await redis.xlen(bus.keys.inbox("b")) == 3  # nothing of the follow-up was written
    await burst(Counter("b"), redis, settings)  # b starts and drains
    await burst(Forwarder("fwd"), redis, settings)  # the retry
    assert await status_of(bus, forward, "fwd") is SignalStatus.PROCESSED
    assert await redis.hget(f"{prefix}test:tries", forward.signal_id) == "2"
    assert await applied(redis, bus, "fwd") == {forward.signal_id: "1"}
    assert await DeadLetters(redis, settings).list("fwd") == []
    await burst(Counter("b"), redis, settings)
    got = await applied(redis, bus, "b")
    assert len(got) == 4 and set(got.values()) == {"1"}  # the backlog and the forwarded one


async def test_nothing_unsettled_is_trimmed_past_inbox_retain(redis: Any, settings: Settings) -> None:
    """Fault 4: with HIVEBUS_INBOX_RETAIN=100 and 250 signals queued while the agent is down (and a
    retention pass meanwhile), every one is PROCESSED once the agent starts."""
    settings = dataclasses.replace(settings, inbox_retain=100, read_batch=64)
    bus = Bus(redis, settings)
    await burst(Counter("ctr"), redis, settings)
    signals = work("ctr", 250)
    await bus.publish_many(signals)
    await Retention(redis, settings).run()
    assert await redis.xlen(bus.keys.inbox("ctr")) == 250
    await burst(Counter("ctr"), redis, settings)
    assert await applied(redis, bus, "ctr") == {s.signal_id: "1" for s in signals}
    assert await redis.hlen(bus.keys.pending("ctr")) == 0
    assert await redis.zcard(bus.keys.done("ctr")) == 250
    assert await redis.xlen(bus.keys.inbox("ctr")) < 250  # settled entries were trimmed


# --- fault 6: poison -------------------------------------------------------------------------

async def test_poison_entries_and_records_are_set_aside_and_good_signals_go_on(
    redis: Any, settings: Settings
) -> None:
    """Fault 6: an inbox entry with a value that is not UTF-8, one with such a field name, a
    pending record with attempts 'abc' and a retry member that is no entry id: the entries end as
    dead letters with a reason and their raw bytes escaped, the rest is set aside or read as 0,
    and every good signal before and after is processed."""
    bus = Bus(redis, settings)
    await burst(Counter("ctr"), redis, settings)
    inbox, letters = bus.keys.inbox("ctr"), DeadLetters(redis, settings)
    odd = Signal.create("WORK", "tester", targets=["ctr"])
    await bus.publish(odd)
    entry = (await redis.hget(bus.keys.pending("ctr"), odd.signal_id)).split()[0]
    await redis.hset(bus.keys.pending("ctr"), odd.signal_id, f"{entry} abc")
    await redis.zadd(bus.keys.retries("ctr"), {"not-an-entry": 0, "12-x": 0})
    before, after = work("ctr", 2), work("ctr", 2)
    await bus.publish_many(before)
    bad_value = {**work("ctr", 1)[0].to_fields(), "source": "x"}
    bad_value_raw = {k.encode(): v.encode() for k, v in bad_value.items()} | {b"source": b"bad\xff\xfe"}
    bad_name = {k.encode(): v.encode() for k, v in work("ctr", 1)[0].to_fields().items()}
    bad_name[b"n\xe9me"] = b"x"
    await redis.xadd(inbox, bad_value_raw)
    await redis.xadd(inbox, bad_name)
    await bus.publish_many(after)
    await burst(Counter("ctr"), redis, settings)
    good = [odd, *before, *after]
    assert await applied(redis, bus, "ctr") == {s.signal_id: "1" for s in good}
    for signal in good:
        assert await status_of(bus, signal, "ctr") is SignalStatus.PROCESSED
    assert await redis.zcard(bus.keys.retries("ctr")) == 0  # the bad members were set aside
    assert (await redis.xinfo_groups(inbox))[0]["pending"] == 0
    dead = sorted(await letters.list("ctr"), key=lambda r: r["dlq_entry"])
    assert len(dead) == 2
    assert all("not UTF-8" in r["reason"] for r in dead)
    value_letter = await letters.show("ctr", dead[0]["dlq_entry"])
    name_letter = await letters.show("ctr", dead[1]["dlq_entry"])
    assert value_letter["original"]["source"] == "bad\\xff\\xfe"  # the raw bytes, escaped
    assert name_letter["original"]["n\\xe9me"] == "x"
    assert "xe9me" in name_letter["reason"]  # names the field (escaped)
    json.dumps([value_letter, name_letter]).encode("utf-8")  # printable as it is


# --- fault 7: a publish that would half-fail -------------------------------------------------

@pytest.mark.parametrize("kind", ["inbox", "pending", "done"])
async def test_publish_with_a_wrong_typed_key_writes_nothing_then_delivers_each_once(
    redis: Any, settings: Settings, kind: str
) -> None:
    """Fault 7: the second target's inbox (or pending, or done) key holds a string: publish raises
    BadKey naming it and writes nothing for either target; after DEL, publishing the same id
    delivers to both, each exactly once; the signal key has a TTL."""
    bus = Bus(redis, settings)
    for agent_id in ("a", "b"):
        await burst(Counter(agent_id), redis, settings)
    broken = getattr(bus.keys, kind)("b")
    await redis.set(broken, "edited by hand")
    signal = Signal.create("WORK", "tester", targets=["a", "b"])
    before = await inbox_state(redis, bus, "a")
    with pytest.raises(BadKey, match=re.escape(broken)) as err:
        await bus.publish(signal)
    assert isinstance(err.value, RedisUnavailable)
    assert await inbox_state(redis, bus, "a") == before
    assert not await redis.exists(bus.keys.signal(signal.signal_id))
    assert await redis.get(broken) == "edited by hand"
    await redis.delete(broken)
    assert sorted(await bus.publish(signal)) == ["a", "b"]
    assert await bus.publish(signal) == {}  # the same id again: nobody twice
    ttl_ms = await redis.pttl(bus.keys.signal(signal.signal_id))  # the key table: TTL, signal's
    assert 0 < ttl_ms <= (settings.signal_ttl_s + settings.signal_grace_s) * 1000
    for agent_id in ("a", "b"):  # the key table: no TTL (an inbox or backlog that expires loses signals)
        assert await redis.pttl(bus.keys.inbox(agent_id)) == -1
        assert await redis.pttl(bus.keys.pending(agent_id)) == -1
    assert [await redis.pttl(log) for log in bus.keys.signal_logs() if await redis.exists(log)] == [-1]
    for agent_id in ("a", "b"):
        await burst(Counter(agent_id), redis, settings)
        assert await applied(redis, bus, agent_id) == {signal.signal_id: "1"}
    assert [t.status for t in (await bus.report(signal.signal_id)).targets] == [SignalStatus.PROCESSED] * 2


async def test_group_destroyed_under_a_running_agent_repeats_nothing(redis: Any, settings: Settings) -> None:
    """Fault 3 (library): XGROUP DESTROY under a running agent after 4 signals: it recreates the
    group, re-delivered entries are acked without running again, new signals are processed."""
    bus = Bus(redis, settings)
    await burst(Counter("ctr"), redis, settings)
    first, second = work("ctr", 4), work("ctr", 2)
    await bus.publish_many(first)
    async with running(AgentRunner(Counter("ctr"), bus, Registry(redis, settings))) as replicas:
        await replicas.until(lambda: _has(redis, bus, "ctr", 4), 10, "the first signals")
        await redis.xgroup_destroy(bus.keys.inbox("ctr"), "ctr")
        await bus.publish_many(second)
        await replicas.until(lambda: _has(redis, bus, "ctr", 6), 10,
                             "the new signals after the group was recreated")
    everything = [*first, *second]
    assert await applied(redis, bus, "ctr") == {s.signal_id: "1" for s in everything}
    assert await redis.hgetall(f"{bus.keys.prefix}test:runs") == {s.signal_id: "1" for s in everything}
    assert (await redis.xinfo_groups(bus.keys.inbox("ctr")))[0]["pending"] == 0
