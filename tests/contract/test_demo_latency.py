"""The demo report's tick latency, on fakeredis and every real redis-server: each tick's follow-ups
are found through their correlation id (or the lock-step window the demo saw them in), and the
latency runs from the tick's publish to the last settle in the targets' done ledgers."""

from __future__ import annotations

import time
from typing import Any

import pytest

from hivebus.agents.desk.report import Report, Tick, TickLatency, percentile
from hivebus.bus.bus import Bus, Outcome
from hivebus.bus.registry import Instance, Registry
from hivebus.domain.keys import Keys
from hivebus.domain.models import Signal, SignalStatus
from hivebus.settings import Settings

pytestmark = pytest.mark.anyio


async def settle_all(bus: Bus, agent_id: str) -> list[str]:
    """Read and settle (PROCESSED) everything in the agent's inbox; return the signal ids."""
    deliveries = await bus.read(agent_id, "c", count=100, block_ms=None)
    await bus.settle(agent_id, "c", [Outcome(d, SignalStatus.PROCESSED) for d in deliveries])
    return [d.signal.signal_id for d in deliveries if d.signal]


async def test_tick_latency_follows_correlation_ids_then_windows(redis: Any, settings: Settings) -> None:
    bus = Bus(redis, settings)
    for agent_id, subs in (("market-hunter", ("MARKET_TICK",)),
                           ("trade-executor", ("MARKET_TICK", "WHALE_ACTIVITY"))):
        await Registry(redis, settings).register(agent_id, Instance.here(agent_id), agent_type="test",
                                                 subscriptions=subs, version="1")
        await bus.ensure_group(agent_id)
    tick1 = Signal.create("MARKET_TICK", "feed")
    tick2 = Signal.create("MARKET_TICK", "feed")
    # caused by tick1 but logged while tick2 was awaited: its correlation id decides
    whale = Signal.create("WHALE_ACTIVITY", "market-hunter", correlation_id=tick1.signal_id,
                          causation_id=tick1.signal_id)
    # its inbox entry (where its correlation id is read) is gone: counted with the tick it was
    # logged under
    note = Signal.create("NOTE", "market-hunter", targets=["trade-executor"],
                         correlation_id=tick1.signal_id)
    tick3 = Signal.create("MARKET_TICK", "feed", targets=["market-hunter"])
    entries = [await bus.publish(signal) for signal in (tick1, tick2, whale, note, tick3)]
    await settle_all(bus, "trade-executor")
    await redis.xdel(Keys(settings.namespace).inbox("trade-executor"), entries[3]["trade-executor"])
    before_hunter = time.time() * 1000
    await settle_all(bus, "market-hunter")  # tick3 too, but its copy for nobody else: settled in all
    after_hunter = time.time() * 1000
    await bus.ensure_group("risk-manager")
    untouched = Signal.create("MARKET_TICK", "feed", targets=["risk-manager"])
    await bus.publish(untouched, allow_unregistered=True)  # never settled

    report = Report(seed=0, cycles=4, started_at=0.0)
    report.signal_ids = [tick1.signal_id, tick2.signal_id, whale.signal_id, note.signal_id,
                         tick3.signal_id, untouched.signal_id]
    published = [round(s.created_at * 1000) - 1000 for s in (tick1, tick2, tick3, untouched)]
    report.ticks = [Tick(tick1.signal_id, published[0], 0, 1), Tick(tick2.signal_id, published[1], 1, 4),
                    Tick(tick3.signal_id, published[2], 4, 5), Tick(untouched.signal_id, published[3], 5, 6)]
    await report._measure_latencies(redis, settings, await bus.records(report.signal_ids))

    assert report.unmeasured_ticks == 1  # the tick nobody settled
    assert (report.by_correlation, report.by_window) == (1, 1)
    first, second, third = report.latencies
    assert (first.run_tick, first.signals, second.signals, third.signals) == (1, 2, 2, 1)
    assert set(first.by_agent) == {"market-hunter", "trade-executor"}
    assert set(third.by_agent) == {"market-hunter"}
    for row in report.latencies:
        assert row.total_ms == max(row.by_agent.values())
        assert 1000 <= row.total_ms < 1000 + 60_000
    # the ledger's settle time, not a time the report took itself
    assert before_hunter - 1 <= first.by_agent["market-hunter"] + published[0] <= after_hunter + 1


def test_percentile_and_windows() -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert percentile([float(n) for n in range(1, 101)], 95) == 95.0
    assert percentile([7.0], 95) == 7.0
    report = Report(seed=0, cycles=0, started_at=0.0)
    report.latencies = [TickLatency(n, "x", 1, float(n), {}) for n in range(1, 2001)]
    window, first, last = report.latency_windows()
    assert (window, first[0].run_tick, first[-1].run_tick, last[0].run_tick) == (200, 1, 200, 1801)
    report.latencies = report.latencies[:200]
    assert report.latency_windows()[0] == 40
    report.latencies = report.latencies[:3]
    assert report.latency_windows()[0] == 1
