"""End-to-end reliability: long handlers, dead replicas, and a chaos run with a Redis restart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis as sync_redis

from coordinator.keys import Keys
from tests.conftest import (
    Processes,
    RedisServer,
    wait_until,
)

pytestmark = pytest.mark.e2e


def test_long_handler_on_a_live_replica_is_not_redelivered(
    procs: Processes, real_server: RedisServer, namespace: str
) -> None:
    """Acceptance 2a: a handler taking 3x the idle time on a live replica is handled once."""
    procs.env.update(HIVEBUS_CLAIM_IDLE_S="1")
    for _ in range(2):
        procs.start("agent", "run", "tests.agents_for_tests:Slow", "--id", "slow")
    wait_until(lambda: sum(1 for i in procs.cli_json("agents")[0]["instances"] if i["alive"]) == 2
               if procs.cli_json("agents") else False, 30, "two replicas")
    sid = procs.cli_json("publish", "SLOW", "--to", "slow", "--data", '{"seconds": 3}')["signal_id"]
    raw = sync_redis.Redis.from_url(real_server.url, decode_responses=True)
    prefix = Keys(namespace).prefix
    wait_until(lambda: raw.hgetall(f"{prefix}test:finished_by"), 15, "the slow signal to finish")
    assert raw.hget(f"{prefix}test:started", sid) == "1"
    assert sum(int(v) for v in raw.hgetall(f"{prefix}test:finished_by").values()) == 1
    raw.close()


def test_signal_of_a_killed_replica_is_redelivered(
    procs: Processes, real_server: RedisServer, namespace: str
) -> None:
    """Acceptance 2b: the same handler on a SIGKILLed replica is redelivered after the idle time."""
    procs.env.update(HIVEBUS_CLAIM_IDLE_S="1")
    victim = procs.start("agent", "run", "tests.agents_for_tests:Slow", "--id", "slow")
    wait_until(lambda: procs.cli_json("agents"), 30, "the replica")
    sid = procs.cli_json("publish", "SLOW", "--to", "slow", "--data", '{"seconds": 2}')["signal_id"]
    raw = sync_redis.Redis.from_url(real_server.url, decode_responses=True)
    prefix = Keys(namespace).prefix
    wait_until(lambda: raw.hget(f"{prefix}test:started", sid) == "1", 15, "the first replica to start")
    victim.kill()
    victim.wait()
    killed_at = time.monotonic()
    survivor = procs.start("agent", "run", "tests.agents_for_tests:Slow", "--id", "slow")
    wait_until(lambda: raw.hget(f"{prefix}test:finished_by", str(survivor.pid)) == "1", 30,
               "the survivor to handle the reclaimed signal")
    assert raw.hget(f"{prefix}test:started", sid) == "2"
    assert time.monotonic() - killed_at >= 1.0  # not before the idle time
    assert raw.hgetall(f"{prefix}test:finished_by") == {str(survivor.pid): "1"}
    raw.close()


@pytest.mark.anyio
async def test_chaos_nothing_lost_nothing_twice(tmp_path: Path) -> None:
    """Acceptance 1: kill replicas at random and restart Redis once; every pair settles once."""
    from bench.chaos import run_chaos

    result = await run_chaos(signals=900, kill_every=60, workdir=tmp_path)
    print(result.line())
    assert result.kills == 15 and result.redis_restarts == 1
    assert result.lost == 0 and result.applied_twice == 0
    assert result.processed + result.dead == result.pairs
