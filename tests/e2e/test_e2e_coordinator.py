"""End-to-end: coordinator processes killed mid-pass, leadership hand-over, a 100,000-decision pass."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
import redis as sync_redis

from hivebus.domain.keys import Keys
from tests.conftest import Processes, RedisServer, hivebus_argv, wait_until
from tests.decision_factory import write_decisions

pytestmark = pytest.mark.e2e


def store_counts(path: Path) -> tuple[dict[str, tuple[int, int]], set[str]]:
    with sqlite3.connect(path) as conn:
        stats = {r[0]: (r[1], r[2]) for r in conn.execute(
            "SELECT pattern_id, samples, successes FROM pattern_stats")}
        archived = {r[0] for r in conn.execute("SELECT decision_id FROM decisions")}
    return stats, archived


def kill_when(procs: Processes, raw: sync_redis.Redis, lease: str, marker: str) -> None:
    """Once no coordinator leads (a killed one's lease lapsed), start `coordinator --once` and
    SIGKILL it as soon as its progress shows ``marker``; fail the test if the pass ended
    without showing it (then nothing was killed mid-pass)."""
    wait_until(lambda: not raw.exists(lease), 15, "the lease to be free")
    proc = subprocess.Popen(hivebus_argv("coordinator", "--once"), env=procs.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen: list[str] = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(marker):
            proc.kill()
            break
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, (
        f"coordinator --once ended with {proc.returncode} before printing {marker!r}; "
        f"its last lines: {''.join(seen[-5:])}")


def test_killed_mid_pass_loses_and_duplicates_nothing(
    procs: Processes, real_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    """Acceptance 2: SIGKILL during learning and during archival, then a full pass: exact counts."""
    procs.env.update(HIVEBUS_STORE=str(tmp_path / "ltm.sqlite3"), HIVEBUS_LEASE_TTL_S="1")
    expected = write_decisions(real_server.url, namespace, 12_000, seed=5)
    raw = sync_redis.Redis.from_url(real_server.url, decode_responses=True)
    keys = Keys(namespace)
    every_id = set(raw.zrange(keys.decisions("te-1"), 0, -1))
    kill_when(procs, raw, keys.lease(), "learn: 6000/")
    kill_when(procs, raw, keys.lease(), "archive: 2000/")
    wait_until(lambda: procs.cli("coordinator", "--once", check=False).returncode == 0, 30,
               "a complete pass once the dead leader's lease lapsed")
    stats, archived = store_counts(tmp_path / "ltm.sqlite3")
    assert stats == expected
    in_redis = set(raw.zrange(keys.decisions("te-1"), 0, -1))
    assert not in_redis & archived
    assert in_redis | archived == every_id
    assert all(raw.exists(keys.decision("te-1", d)) for d in list(in_redis)[:200])
    raw.close()


def test_one_leader_and_takeover(procs: Processes, real_server: RedisServer, namespace: str,
                                 tmp_path: Path) -> None:
    """Acceptance 3: two coordinators, one leads; SIGKILL it and the other leads within the TTL."""
    procs.env.update(HIVEBUS_STORE=str(tmp_path / "ltm.sqlite3"), HIVEBUS_LEASE_TTL_S="1.5",
                     HIVEBUS_COORDINATOR_TICK_S="0.2")
    first, second = procs.start("coordinator"), procs.start("coordinator")
    raw = sync_redis.Redis.from_url(real_server.url, decode_responses=True)
    lease = Keys(namespace).lease()
    holder = wait_until(lambda: raw.get(lease), 15, "a leader")
    leader, standby = (first, second) if f"-{first.pid}-" in holder else (second, first)
    assert f"-{leader.pid}-" in holder
    leader.send_signal(signal.SIGKILL)
    leader.wait()
    new_holder = wait_until(lambda: (raw.get(lease) or "") if f"-{standby.pid}-" in (raw.get(lease) or "")
                            else None, 1.5 + 0.2 + 2, "the standby to take over")
    assert int(new_holder.split("|")[1]) > int(holder.split("|")[1])
    raw.close()


def test_once_over_100k_decisions_reports_progress(
    procs: Processes, real_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    """Acceptance 8: a pass over 100,000 decisions finishes, shows progress and says what it did."""
    procs.env.update(HIVEBUS_STORE=str(tmp_path / "ltm.sqlite3"))
    write_decisions(real_server.url, namespace, 100_000, seed=9)
    result = procs.cli("coordinator", "--once")
    assert "learned from 100000 new outcome(s)" in result.stdout
    assert "decision(s) archived" in result.stdout
    progress = result.stderr.splitlines()
    assert "learn: 100000/100000 (100%)" in progress
    assert sum(1 for line in progress if line.startswith("learn:")) >= 10


def test_patterns_cli_versions_rollback_and_privacy(
    procs: Processes, real_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    """Acceptance 4 and 5 through the CLI: versions, rollback, and no peeking at private patterns."""
    procs.env.update(HIVEBUS_STORE=str(tmp_path / "ltm.sqlite3"), HIVEBUS_PROMOTE_MIN_SAMPLES="50")
    seed = 1
    for _ in range(4):  # four passes over new decisions: promoted, then updated three times
        write_decisions(real_server.url, namespace, 300, seed=seed, old_share=0)
        seed += 1
        procs.cli("coordinator", "--once")
    [pattern] = procs.cli_json("patterns")
    pid = pattern["pattern_id"]
    assert pattern["agent_id"] == "te-1" and pattern["version"] == 4
    history = procs.cli_json("pattern", "history", pid)
    assert [h["version"] for h in history] == [1, 2, 3, 4]
    procs.cli("pattern", "rollback", pid, "2")
    shown = procs.cli_json("pattern", "show", pid)
    assert shown["version"] == 5 and shown["sample_size"] == history[1]["pattern"]["sample_size"]
    assert procs.cli_json("pattern", "history", pid)[-1]["reason"] == "rollback to version 2"
    # te-1's private pattern: invisible to another agent through every pattern command
    assert procs.cli_json("patterns", "--as", "te-1")[0]["pattern_id"] == pid
    assert procs.cli_json("patterns", "--as", "rm-1") == []
    for args in (["pattern", "show", pid, "--as", "rm-1"], ["pattern", "history", pid, "--as", "rm-1"]):
        result = procs.cli(*args, check=False)
        assert result.returncode == 1 and "no pattern" in result.stderr
