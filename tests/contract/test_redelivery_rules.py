"""Reclaim safety rules of :mod:`hivebus.bus.redelivery`, with two (or more) consumers of one agent.

Who may take an entry over is decided by liveness and idle time. The tests control both
without waiting: a heartbeat is a key that is there or not, and an entry's idle time is set
with ``XCLAIM … IDLE <ms>`` (its owner unchanged) just under or just over ``claim_idle_s``.
Tests that depend on idle times run on each real redis-server; the rest on fakeredis too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hivebus.bus.bus import Bus, Delivery
from hivebus.bus.redelivery import Redelivery, renew_call
from hivebus.domain.clock import now_s
from hivebus.domain.keys import Keys
from hivebus.domain.models import Signal
from hivebus.settings import Settings
from tests.conftest import REAL_SERVERS, RedisServer, eventually

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

AGENT = "worker"
A, B, C = "host-1-aaaa", "host-2-bbbb", "host-3-cccc"  # consumer names (instance ids)
IDLE_MS = 60_000  # claim_idle_s below: a minute, so "just under" stays under while a test runs


def test_renew_call_orders_entry_ids_by_number() -> None:
    """RENEW looks between the lowest and highest entry id by number, not by text (9-1 < 10-0)."""
    keys, args = renew_call(Keys("ns"), AGENT, A, ["9-1", "10-0", "9-0"])
    assert keys == ["ns:inbox:{worker}"]
    assert args == [AGENT, A, "9-0", "10-0", "9-1", "10-0", "9-0"]


@pytest.fixture(params=list(REAL_SERVERS))
async def real(request: pytest.FixtureRequest, real_servers: dict[str, RedisServer]) -> AsyncIterator[Any]:
    """A client on each real redis-server in turn (idle times need a real one)."""
    from hivebus.infra.connection import open_client

    client = open_client(real_servers[request.param].url)
    yield client
    await client.aclose()


@pytest.fixture
def idle_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, claim_idle_s=IDLE_MS / 1000)


class Team:
    """One agent's inbox on one Redis, and helpers to put entries in consumers' hands."""

    def __init__(self, redis: Any, settings: Settings) -> None:
        self.redis = redis
        self.bus = Bus(redis, settings)
        self.keys = self.bus.keys
        self.redelivery = Redelivery(self.bus)
        self.inbox = self.keys.inbox(AGENT)

    async def deliver(self, consumer: str, count: int) -> list[Delivery]:
        """Publish ``count`` signals and have ``consumer`` read them (they become its pending)."""
        await self.bus.ensure_group(AGENT)
        signals = [Signal.create("WORK", "tester", targets=[AGENT], data={"n": n}) for n in range(count)]
        await self.bus.publish_many(signals, allow_unregistered=True)
        read = await self.bus.read(AGENT, consumer, count=count, block_ms=None)
        assert [d.signal.signal_id for d in read if d.signal] == [s.signal_id for s in signals]
        return read

    async def set_idle(self, owner: str, entry_ids: list[str], idle_ms: int) -> None:
        """Make ``entry_ids`` (owned by ``owner``) look idle for ``idle_ms`` now; owner kept, and
        the delivery count too (XCLAIM … IDLE … JUSTID)."""
        await self.redis.xclaim(self.inbox, AGENT, owner, 0, entry_ids, idle=idle_ms, justid=True)

    async def alive(self, consumer: str) -> None:
        """Give ``consumer`` a heartbeat, as a live replica has."""
        await self.redis.set(self.keys.heartbeat(AGENT, consumer), "1", px=60_000)

    async def owners(self) -> dict[str, str]:
        """Entry id -> owning consumer, from the group's pending-entries list."""
        pel = await self.redis.xpending_range(self.inbox, AGENT, "-", "+", 100)
        return {str(p["message_id"]): str(p["consumer"]) for p in pel}

    async def delivery_counts(self) -> dict[str, int]:
        pel = await self.redis.xpending_range(self.inbox, AGENT, "-", "+", 100)
        return {str(p["message_id"]): int(p["times_delivered"]) for p in pel}


def ids(deliveries: list[Delivery]) -> list[str]:
    return [d.entry_id for d in deliveries]


# --- orphans: idle time ---------------------------------------------------------------------

async def test_an_entry_idle_just_under_the_threshold_is_not_taken(
    real: Any, idle_settings: Settings
) -> None:
    """A dead replica's entries idle 2 s short of claim_idle_s stay where they are."""
    team = Team(real, idle_settings)
    entries = ids(await team.deliver(A, 2))
    await team.set_idle(A, entries, IDLE_MS - 2_000)
    assert await team.redelivery.orphans(AGENT, B, 10) == []
    assert await team.owners() == dict.fromkeys(entries, A)


async def test_an_entry_idle_just_over_the_threshold_is_taken(real: Any, idle_settings: Settings) -> None:
    """A dead replica's entries idle 5 ms past claim_idle_s are taken, decoded, counted, and
    only the ones past it (a fresher one stays)."""
    team = Team(real, idle_settings)
    entries = ids(await team.deliver(A, 3))
    await team.set_idle(A, entries[:2], IDLE_MS + 5)
    await team.set_idle(A, entries[2:], IDLE_MS - 2_000)
    taken = await team.redelivery.orphans(AGENT, B, 10)
    assert ids(taken) == entries[:2]
    assert all(d.redelivered and d.deliveries == 2 and d.signal and d.error is None for d in taken)
    assert [d.signal.data for d in taken if d.signal] == [{"n": 0}, {"n": 1}]
    assert await team.owners() == {entries[0]: B, entries[1]: B, entries[2]: A}
    assert await team.delivery_counts() == {entries[0]: 2, entries[1]: 2, entries[2]: 1}


async def test_claim_idle_s_is_the_threshold(real: Any, settings: Settings) -> None:
    """The threshold is claim_idle_s in milliseconds: 1.5 s takes 1.6 s of idleness, not 1.4 s."""
    team = Team(real, dataclasses.replace(settings, claim_idle_s=1.5))
    entries = ids(await team.deliver(A, 2))
    await team.set_idle(A, entries[:1], 1_400)
    await team.set_idle(A, entries[1:], 1_600)
    assert ids(await team.redelivery.orphans(AGENT, B, 10)) == entries[1:]


async def test_a_taken_over_entry_counts_every_delivery(real: Any, idle_settings: Settings) -> None:
    """Each take-over adds one delivery: read by A, taken by B, then by C once B died too."""
    team = Team(real, idle_settings)
    [entry] = ids(await team.deliver(A, 1))
    await team.set_idle(A, [entry], IDLE_MS + 5)
    [first] = await team.redelivery.orphans(AGENT, B, 10)
    await team.set_idle(B, [entry], IDLE_MS + 5)
    [second] = await team.redelivery.orphans(AGENT, C, 10)
    assert (first.deliveries, second.deliveries) == (2, 3)
    assert await team.owners() == {entry: C}


async def test_count_bounds_what_is_looked_at(real: Any, idle_settings: Settings) -> None:
    """At most ``count`` entries are taken per call, oldest first."""
    team = Team(real, idle_settings)
    entries = ids(await team.deliver(A, 5))
    await team.set_idle(A, entries, IDLE_MS + 5)
    assert ids(await team.redelivery.orphans(AGENT, B, 2)) == entries[:2]
    assert ids(await team.redelivery.orphans(AGENT, B, 10)) == entries[2:]


async def test_renewing_resets_the_idle_time(real: Any, idle_settings: Settings) -> None:
    """A live replica renewing a long-running entry keeps it; renewing only counts what it
    still owns and never takes anything back."""
    team = Team(real, idle_settings)
    entries = ids(await team.deliver(A, 2))
    await team.set_idle(A, entries, IDLE_MS + 5)
    assert await team.redelivery.renew(AGENT, A, entries[:1]) == 1
    assert ids(await team.redelivery.orphans(AGENT, B, 10)) == entries[1:]
    assert await team.redelivery.renew(AGENT, A, entries[1:]) == 0  # B's now
    assert await team.owners() == {entries[0]: A, entries[1]: B}
    assert await team.redelivery.renew(AGENT, A, []) == 0


async def test_renewing_a_batch_renews_every_entry(real: Any, idle_settings: Settings) -> None:
    """Renewing a batch resets the idle time of every entry in it, not only the first."""
    team = Team(real, idle_settings)
    entries = ids(await team.deliver(A, 3))
    await team.set_idle(A, entries, IDLE_MS + 5)
    assert await team.redelivery.renew(AGENT, A, entries) == 3
    assert await team.redelivery.orphans(AGENT, B, 10) == []


# --- orphans: liveness ---------------------------------------------------------------------

async def test_a_live_replica_keeps_its_idle_entries(real: Any, idle_settings: Settings) -> None:
    """Idle time alone never takes an entry from a replica whose heartbeat is there; once the
    heartbeat is gone (dead, or stalled past its TTL), the entry is taken."""
    team = Team(real, idle_settings)
    entries = ids(await team.deliver(A, 2))
    await team.alive(A)
    await team.set_idle(A, entries, IDLE_MS * 10)
    assert await team.redelivery.orphans(AGENT, B, 10) == []
    assert await team.owners() == dict.fromkeys(entries, A)
    await real.delete(team.keys.heartbeat(AGENT, A))
    assert ids(await team.redelivery.orphans(AGENT, B, 10)) == entries


async def test_a_stalled_replica_loses_its_entries_when_its_heartbeat_lapses(
    real: Any, idle_settings: Settings
) -> None:
    """A replica that stops refreshing its heartbeat (stalled) keeps its entries until the
    heartbeat's TTL runs out, and not a moment longer."""
    team = Team(real, idle_settings)
    entries = ids(await team.deliver(A, 1))
    await team.set_idle(A, entries, IDLE_MS + 5)
    heartbeat = team.keys.heartbeat(AGENT, A)
    await real.set(heartbeat, "1", px=300)
    assert await team.redelivery.orphans(AGENT, B, 10) == []
    await eventually(lambda: _gone(real, heartbeat), 5, "the heartbeat to lapse")
    assert ids(await team.redelivery.orphans(AGENT, B, 10)) == entries


async def _gone(redis: Any, key: str) -> bool:
    return not await redis.exists(key)


class RenewBeforeClaim:
    """A client that lets the owner renew its entries just before XCLAIM runs."""

    def __init__(self, redis: Any, renew: Any) -> None:
        self._redis = redis
        self._renew = renew

    def __getattr__(self, name: str) -> Any:
        return getattr(self._redis, name)

    async def xclaim(self, *args: Any, **kwargs: Any) -> Any:
        await self._renew()
        return await self._redis.xclaim(*args, **kwargs)


async def test_an_entry_renewed_during_the_take_over_is_not_taken(
    real: Any, idle_settings: Settings
) -> None:
    """The take-over is atomic: an entry its owner renews after the scan but before the claim
    (a paused replica coming back) stays with its owner."""
    team = Team(real, idle_settings)
    entries = ids(await team.deliver(A, 1))
    await team.set_idle(A, entries, IDLE_MS + 5)
    racing = Redelivery(Bus(RenewBeforeClaim(real, lambda: team.redelivery.renew(AGENT, A, entries)),
                            idle_settings))
    assert await racing.orphans(AGENT, B, 10) == []
    assert await team.owners() == {entries[0]: A}


async def test_orphan_selection_among_several_owners(real: Any, idle_settings: Settings) -> None:
    """Of idle entries, B takes those of dead replicas (C, and a consumer whose name is no
    instance id, so no heartbeat can keep it) and its own whose settle was lost (no retry
    scheduled); not a live replica's (A), nor its own that wait for a scheduled retry."""
    team = Team(real, idle_settings)
    of_a = ids(await team.deliver(A, 2))
    of_c = ids(await team.deliver(C, 2))
    of_odd = ids(await team.deliver("not an instance id", 1))
    of_b = ids(await team.deliver(B, 3))
    await team.alive(A)
    await team.alive(B)
    for owner, entries in ((A, of_a), (C, of_c), ("not an instance id", of_odd), (B, of_b)):
        await team.set_idle(owner, entries, IDLE_MS + 5)
    await real.zadd(team.keys.retries(AGENT), {of_b[1]: now_s() + 3600})
    taken = ids(await team.redelivery.orphans(AGENT, B, 20))
    assert taken == [*of_c, *of_odd, of_b[0], of_b[2]]
    owners = await team.owners()
    assert {e: owners[e] for e in of_a} == dict.fromkeys(of_a, A)
    assert owners[of_b[1]] == B


async def test_own_lost_settles_are_taken_back_when_alone(real: Any, idle_settings: Settings) -> None:
    """With no other owner at all, a replica still takes back its own idle, unscheduled entries."""
    team = Team(real, idle_settings)
    entries = ids(await team.deliver(B, 2))
    await team.alive(B)
    await team.set_idle(B, entries, IDLE_MS + 5)
    await real.zadd(team.keys.retries(AGENT), {entries[0]: now_s() + 3600})
    taken = await team.redelivery.orphans(AGENT, B, 10)
    assert ids(taken) == entries[1:]
    assert taken[0].deliveries == 2


async def test_nothing_pending_nothing_taken(redis: Any, settings: Settings) -> None:
    """An agent with nothing pending has no orphans (on every backend)."""
    team = Team(redis, settings)
    await team.bus.ensure_group(AGENT)
    assert await team.redelivery.orphans(AGENT, B, 10) == []


async def test_an_entry_deleted_by_hand_is_not_delivered(real: Any, idle_settings: Settings) -> None:
    """An orphan whose inbox entry was deleted (XDEL by hand) yields no delivery."""
    team = Team(real, idle_settings)
    entries = ids(await team.deliver(A, 2))
    await team.set_idle(A, entries, IDLE_MS + 5)
    await real.xdel(team.inbox, entries[0])
    assert ids(await team.redelivery.orphans(AGENT, B, 10)) == entries[1:]


# --- due retries ----------------------------------------------------------------------------

async def test_due_claims_only_what_is_due(redis: Any, settings: Settings) -> None:
    """Retries whose time has come are claimed (oldest due first, at most ``count``) and leave
    the schedule; later ones stay; members that are not entry ids are removed and returned."""
    team = Team(redis, settings)
    entries = ids(await team.deliver(A, 4))
    now = now_s()
    retries = team.keys.retries(AGENT)
    await redis.zadd(retries, {entries[0]: now - 30, entries[1]: now - 20, entries[2]: now - 10,
                               entries[3]: now + 3600, "garbage": now - 25})
    claimed, bad = await team.redelivery.due(AGENT, B, 3)
    assert ids(claimed) == [entries[0], entries[1]]
    assert bad == ["garbage"]
    assert all(d.redelivered and d.signal and d.error is None for d in claimed)
    assert [d.signal.data for d in claimed if d.signal] == [{"n": 0}, {"n": 1}]
    assert await redis.zrange(retries, 0, -1) == [entries[2], entries[3]]
    owners = await team.owners()
    assert (owners[entries[0]], owners[entries[1]], owners[entries[2]]) == (B, B, A)
    claimed, bad = await team.redelivery.due(AGENT, B, 3)
    assert (ids(claimed), bad) == ([entries[2]], [])
    assert await team.redelivery.due(AGENT, B, 3) == ([], [])


async def test_a_due_entry_that_does_not_decode_carries_its_error(redis: Any, settings: Settings) -> None:
    """A malformed inbox entry due for a retry comes back as a delivery with its error."""
    team = Team(redis, settings)
    await team.bus.ensure_group(AGENT)
    entry = await redis.xadd(team.inbox, {"type": "PING"})
    await team.bus.read(AGENT, A, count=1, block_ms=None)
    await redis.zadd(team.keys.retries(AGENT), {entry: now_s() - 1})
    [delivery], bad = await team.redelivery.due(AGENT, B, 5)
    assert bad == []
    assert (delivery.entry_id, delivery.signal, delivery.redelivered) == (entry, None, True)
    assert delivery.error == "malformed entry: missing field 'id'"
    assert delivery.fields == {"type": "PING"}


async def test_next_due(redis: Any, settings: Settings) -> None:
    """The earliest scheduled retry time, or None when nothing is scheduled."""
    team = Team(redis, settings)
    assert await team.redelivery.next_due(AGENT) is None
    await redis.zadd(team.keys.retries(AGENT), {"1-0": 2000.5, "2-0": 1000.25})
    assert await team.redelivery.next_due(AGENT) == 1000.25
