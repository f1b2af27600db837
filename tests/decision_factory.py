"""Writes many decisions with outcomes straight into Redis, fast, for coordinator tests and benches."""

from __future__ import annotations

import random
import time
from typing import Any

import redis as sync_redis

from hivebus.domain.decision import DecisionOutcome, DecisionRecord
from hivebus.domain.keys import Keys

ACTIONS = [("buy", {"whale": "accumulation"}, 0.8), ("sell", {"whale": "distribution"}, 0.5),
           ("buy", {"whale": "distribution"}, 0.3)]


def write_decisions(url: str, namespace: str, count: int, *, seed: int = 1, old_share: float = 0.5,
                    window_s: float = 86_400) -> dict[str, tuple[int, int]]:
    """Write ``count`` decisions of agent te-1 with outcomes; ``old_share`` of them older than the
    window. Return signature -> (samples, successes)."""
    rng = random.Random(seed)
    keys = Keys(namespace)
    client = sync_redis.Redis.from_url(url, decode_responses=True)
    expected: dict[str, tuple[int, int]] = {}
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        action, features, p = ACTIONS[n % len(ACTIONS)]
        success = rng.random() < p
        age = window_s + 3600 + n if rng.random() < old_share else rng.random() * 600
        record = DecisionRecord(agent_id="te-1", decision_type="TRADE_EXECUTION",
                                timestamp=now - age, reasoning={"action": action},
                                context={"features": features})
        outcome = DecisionOutcome(success=success)
        fields: dict[str, Any] = {**record.to_fields(), "outcome": outcome.model_dump_json(),
                                  "success": "1" if success else "0"}
        pipe.set(keys.decision_at(record.decision_id), "te-1")
        pipe.hset(keys.decision("te-1", record.decision_id), mapping=fields)
        pipe.zadd(keys.decisions("te-1"), {record.decision_id: record.timestamp})
        pipe.zadd(keys.outcomes("te-1"), {record.decision_id: now - age})
        sig = f"te-1/TRADE_EXECUTION/{action}/whale={features['whale']}"
        samples, wins = expected.get(sig, (0, 0))
        expected[sig] = (samples + 1, wins + int(success))
        if n % 5000 == 4999:
            pipe.execute()
    pipe.sadd(keys.decision_agents(), "te-1")
    pipe.execute()
    client.close()
    return expected
