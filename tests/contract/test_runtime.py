"""Contract tests of the agent runtime and registry, on fakeredis and real redis-servers."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from hivebus.agents.runner import AgentRunner, load_agent_class
from hivebus.bus.bus import Bus
from hivebus.bus.dlq import DeadLetters
from hivebus.bus.registry import Instance, Registry
from hivebus.domain.errors import InvalidInput
from hivebus.domain.models import Signal, SignalStatus
from hivebus.service.coordinator import Coordinator
from hivebus.settings import Settings
from tests.agents_for_tests import Echo, Flaky
from tests.conftest import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]


async def run_burst(agent: Any, redis: Any, settings: Settings) -> AgentRunner:
    """Run ``agent`` until its inbox is empty."""
    runner = AgentRunner(agent, Bus(redis, settings), Registry(redis, settings))
    with anyio.fail_after(10):
        await runner.run(anyio.Event(), burst=True)
    return runner


async def test_handler_publishes_with_causation(redis: Any, settings: Settings) -> None:
    """A signal published inside a handler carries the handled signal as its cause."""
    bus = Bus(redis, settings)
    await run_burst(Echo("echo-1"), redis, settings)  # registers
    ping = Signal.create("PING", "tester", targets=["echo-1"], data={"n": 1})
    await bus.publish(ping)
    runner = await run_burst(Echo("echo-1"), redis, settings)
    assert runner.handled == 1
    report = await bus.report(ping.signal_id)
    assert report.targets[0].status is SignalStatus.PROCESSED
    [pong] = await redis.xrange(bus.keys.inbox("tester"))
    assert pong[1]["type"] == "PONG"
    assert pong[1]["causation_id"] == ping.signal_id
    assert pong[1]["correlation_id"] == ping.signal_id


async def test_failing_handler_dead_letters_and_agent_goes_on(redis: Any, settings: Settings) -> None:
    """A handler that raises sends its signal to the DLQ with the error; the others still succeed."""
    bus = Bus(redis, settings)
    await run_burst(Flaky("fl-1"), redis, settings)
    boom = Signal.create("BOOM", "tester", targets=["fl-1"], data={"x": 1})
    pings = [Signal.create("PING", "tester", targets=["fl-1"]) for _ in range(3)]
    for signal in [boom, *pings]:
        await bus.publish(signal)
    await run_burst(Flaky("fl-1"), redis, settings)
    report = await bus.report(boom.signal_id)
    assert report.targets[0].status is SignalStatus.DEAD
    assert "RuntimeError: cannot handle" in (report.targets[0].error or "")
    for ping in pings:
        assert (await bus.report(ping.signal_id)).targets[0].status is SignalStatus.PROCESSED
    [letter] = await DeadLetters(redis, settings).list("fl-1")
    assert "RuntimeError" in letter["reason"]


async def test_unhandled_type_and_expired_signal(redis: Any, settings: Settings) -> None:
    """A type without handler is dead-lettered; an expired signal is EXPIRED, not handled."""
    bus = Bus(redis, settings)
    await run_burst(Echo("echo-1"), redis, settings)
    other = Signal.create("OTHER", "tester", targets=["echo-1"])
    stale = Signal.create("PING", "tester", targets=["echo-1"], created_at=1000.0, ttl_s=1)
    stale = stale.model_copy(update={"expires_at": 1001.0})
    await bus.publish(other)
    fields = stale.to_fields()
    await redis.xadd(bus.keys.inbox("echo-1"), fields)
    await run_burst(Echo("echo-1"), redis, settings)
    assert (await bus.report(other.signal_id)).targets[0].status is SignalStatus.DEAD
    assert not await redis.xrange(bus.keys.inbox("tester"))  # the stale PING got no PONG
    assert await bus.statuses([(stale.signal_id, "echo-1"), (other.signal_id, "echo-1")]) == [
        SignalStatus.EXPIRED, SignalStatus.DEAD]
    letters = {letter["signal"]: letter for letter in await DeadLetters(redis, settings).list("echo-1")}
    assert letters[stale.signal_id]["status"] == "EXPIRED"
    assert letters[stale.signal_id]["reason"] == "expired before it was handled"
    assert letters[other.signal_id]["status"] == "DEAD"
    assert (await redis.xinfo_groups(bus.keys.inbox("echo-1")))[0]["pending"] == 0


async def test_register_and_deregister(redis: Any, settings: Settings) -> None:
    """An agent is alive while it runs and 'stopped' after a clean exit, staying registered."""
    registry = Registry(redis, settings)
    instance = Instance.here("a1")
    await registry.register("a1", instance, agent_type="t", subscriptions=("PING",), version="1")
    [info] = await registry.list_agents()
    assert info.alive and info.status == "alive" and info.subscriptions == ("PING",)
    await registry.deregister("a1", instance)
    [info] = await registry.list_agents()
    assert not info.alive and info.status == "stopped"
    assert await registry.is_registered("a1")


async def test_dead_instance_is_reaped_after_heartbeat_ttl(
    real_redis: Any, settings: Settings, store: Any
) -> None:
    """On a real Redis, an instance whose heartbeat lapses is reported dead and reaped."""
    registry = Registry(real_redis, settings)
    await registry.register("a1", Instance.here("a1"), agent_type="t", subscriptions=(), version="1")
    coordinator = Coordinator(real_redis, settings, store)
    await eventually(coordinator.reap, settings.heartbeat_ttl_s + 5, "the instance to be reaped")
    [info] = await registry.list_agents()
    assert info.status == "dead" and info.instances == []


def test_load_agent_class_names_problems() -> None:
    """Unknown agent specs are one clear error."""
    assert load_agent_class("risk-manager").agent_type == "risk-manager"
    assert load_agent_class("tests.agents_for_tests:Echo") is Echo
    with pytest.raises(InvalidInput, match="unknown agent"):
        load_agent_class("nope")
    with pytest.raises(InvalidInput, match="cannot import"):
        load_agent_class("no_such_module:X")
    with pytest.raises(InvalidInput, match="not a hivebus Agent"):
        load_agent_class("hivebus.domain.models:Signal")


async def test_agent_recreates_a_deleted_inbox_group(redis: Any, settings: Settings) -> None:
    """If its inbox is deleted by hand, the agent recreates its group and handles what arrives."""
    bus = Bus(redis, settings)
    await run_burst(Echo("echo-1"), redis, settings)
    await redis.delete(bus.keys.inbox("echo-1"))
    ping = Signal.create("PING", "tester", targets=["echo-1"])
    await bus.publish(ping)
    await run_burst(Echo("echo-1"), redis, settings)
    assert (await bus.report(ping.signal_id)).targets[0].status is SignalStatus.PROCESSED
