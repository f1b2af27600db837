"""End-to-end: the CLI, the coordinator and agents as real subprocesses on a real redis-server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis

from hivebus.domain.ids import new_id
from hivebus.domain.keys import Keys
from tests.conftest import Processes, hivebus_argv, hivebus_env, wait_until

pytestmark = pytest.mark.e2e


def wait_alive(procs: Processes, *agent_ids: str) -> None:
    def alive() -> bool:
        agents = {a["agent_id"]: a for a in procs.cli_json("agents")}
        return all(a in agents and agents[a]["alive"] for a in agent_ids)

    wait_until(alive, 30, f"{agent_ids} to be alive")


def statuses(procs: Processes, signal_id: str) -> dict[str, str]:
    report = procs.cli_json("signal", "show", signal_id)
    return {agent: s["status"] for agent, s in report["status"].items()}


def test_publish_to_two_agents_is_processed_by_both(
    procs: Processes, raw: sync_redis.Redis, namespace: str
) -> None:
    """Acceptance 2: a CLI-published signal is PROCESSED by both targets and nothing is pending."""
    procs.start("agent", "run", "risk-manager", "--id", "rm-1")
    procs.start("agent", "run", "trade-executor", "--id", "te-1")
    wait_alive(procs, "rm-1", "te-1")
    out = procs.cli_json("publish", "WHALE_ACTIVITY", "--to", "rm-1,te-1", "--data",
                         '{"amount_btc": 1500}', "--severity", "HIGH", "--confidence", "0.8")
    signal_id = out["signal_id"]
    wait_until(lambda: statuses(procs, signal_id) == {"rm-1": "PROCESSED", "te-1": "PROCESSED"},
               5, "both targets to process the signal")
    keys = Keys(namespace)
    for agent in ("rm-1", "te-1"):  # te-1 may still be handling rm-1's answer for a moment
        wait_until(lambda a=agent: raw.xinfo_groups(keys.inbox(a))[0]["pending"] == 0, 5,
                   f"{agent} to have nothing pending")
        assert raw.xinfo_groups(keys.inbox(agent))[0]["name"] == agent
    # the risk manager answered with a RISK_ASSESSMENT, caused by a decision our signal triggered
    [answer] = [f for _, f in raw.xrange(keys.inbox("te-1")) if f["type"] == "RISK_ASSESSMENT"]
    assert raw.get(keys.decision_at(answer["causation_id"])) == "rm-1"
    decision = raw.hgetall(keys.decision("rm-1", answer["causation_id"]))
    assert decision["decision_type"] == "RISK_ASSESSMENT"
    assert decision["triggered_by"] == signal_id


def test_replicas_share_one_agent_id_exactly_once(
    procs: Processes, raw: sync_redis.Redis, namespace: str
) -> None:
    """Acceptance 3: 1,000 signals to two replicas of one id are each processed once; both work."""
    keys = Keys(namespace)
    first = procs.start("agent", "run", "tests.agents_for_tests:Recorder", "--id", "worker")
    second = procs.start("agent", "run", "tests.agents_for_tests:Recorder", "--id", "worker")
    wait_until(lambda: len(procs.cli_json("agents")[0]["instances"]) == 2
               if procs.cli_json("agents") else False, 30, "two replicas")
    pipe = raw.pipeline(transaction=False)
    import time

    now = time.time()
    for n in range(1000):
        sid = new_id()
        fields = {"id": sid, "type": "WORK", "source": "tester", "targets": "worker",
                  "severity": "INFO", "confidence": "1.0", "data": json.dumps({"n": n}),
                  "created_at": repr(now), "expires_at": repr(now + 3600)}
        pipe.xadd(keys.inbox("worker"), fields)
    pipe.execute()
    handled_key = f"{keys.prefix}test:handled"
    wait_until(lambda: raw.hlen(handled_key) == 1000, 60, "1000 signals handled")
    wait_until(lambda: raw.xinfo_groups(keys.inbox("worker"))[0]["pending"] == 0, 10, "all acked")
    counts = raw.hgetall(handled_key)
    assert set(counts.values()) == {"1"}
    by_pid = raw.hgetall(f"{keys.prefix}test:by_pid")
    assert set(by_pid) == {str(first.pid), str(second.pid)}
    assert sum(int(v) for v in by_pid.values()) == 1000


def test_signal_waits_for_a_stopped_agent(procs: Processes) -> None:
    """Acceptance 4: a signal sent while te-1 is stopped is processed when it starts again."""
    te = procs.start("agent", "run", "trade-executor", "--id", "te-1")
    wait_alive(procs, "te-1")
    te.send_signal(signal.SIGTERM)
    assert te.wait(15) == 0
    [agent] = procs.cli_json("agents")
    assert agent["status"] == "stopped" and not agent["alive"]
    signal_id = procs.cli_json("publish", "RISK_ASSESSMENT", "--to", "te-1", "--data",
                               '{"position_limit_btc": 0.5}')["signal_id"]
    assert statuses(procs, signal_id) == {"te-1": "PENDING"}
    procs.start("agent", "run", "trade-executor", "--id", "te-1")
    wait_until(lambda: statuses(procs, signal_id) == {"te-1": "PROCESSED"}, 30, "te-1 to catch up")


def test_killed_agent_is_reported_dead(procs: Processes) -> None:
    """Acceptance 5: a SIGKILLed agent is dead within its heartbeat TTL plus a coordinator tick."""
    procs.start("coordinator")
    victim = procs.start("agent", "run", "risk-manager", "--id", "rm-1")
    wait_alive(procs, "rm-1")
    victim.kill()
    victim.wait()
    import time

    killed_at = time.monotonic()
    wait_until(lambda: procs.cli_json("agents")[0]["status"] == "dead", 10, "rm-1 reported dead")
    assert time.monotonic() - killed_at <= 2 + 0.3 + 2  # TTL + tick + CLI start-up slack
    wait_until(lambda: procs.cli_json("agents")[0]["instances"] == [], 10, "coordinator reaping")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["publish", "PING", "--to", "nobody-here"], "has never registered"),
        (["publish", "PING", "--to", "rm-1", "--data", "{bad"], "not valid JSON"),
        (["publish", "PING", "--to", "rm-1", "--data", "[1]"], "JSON object"),
        (["publish", "PING", "--to", "rm-1", "--confidence", "1.5"], "between 0 and 1"),
        (["publish", "PING", "--to", "rm-1", "--severity", "LOUD"], "unknown severity"),
        (["publish", "PING", "--to", "bad:id"], "invalid agent id"),
        (["publish", "PING", "--to", "*"], "invalid agent id"),
        (["publish", "not a type"], "invalid signal type"),
        (["publish", "PING", "--confidence", "high"], "invalid float value"),
        (["publish", "PING", "--to", "rm-1", "--ttl", "-5"], "--ttl must be"),
        (["signals", "--limit", "0"], "must be at least 1"),
        (["publish", "PING", "--to", "rm-1", "--data", '{"x": "' + "y" * 70_000 + '"}'], "limit"),
        (["signal", "show", "nope"], "invalid signal id"),
        (["signal", "show", "01M806JF1AMQYHATDHNYM1N2WS"], "no signal"),
        (["agent", "run", "nope", "--id", "x"], "unknown agent"),
        (["agent", "run", "risk-manager", "--id", "a b"], "invalid agent id"),
    ],
)
def test_bad_input_is_one_clear_line(procs: Processes, args: list[str], expected: str) -> None:
    """Acceptance 6: each user mistake exits non-zero with one line naming it, no traceback."""
    result = procs.cli(*args, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_sigterm_drains_and_exits_zero(procs: Processes, raw: sync_redis.Redis, namespace: str) -> None:
    """An agent told to stop acks what it handled, deregisters and exits 0."""
    agent = procs.start("agent", "run", "tests.agents_for_tests:Recorder", "--id", "w1")
    wait_alive(procs, "w1")
    for _ in range(50):
        procs_env_publish(raw, namespace, "w1")
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(15) == 0
    keys = Keys(namespace)
    handled = raw.hlen(f"{keys.prefix}test:handled")
    group = raw.xinfo_groups(keys.inbox("w1"))[0]
    assert group["pending"] == 0  # whatever was handled was acked
    unread = len(raw.xrange(keys.inbox("w1"), min=f"({group['last-delivered-id']}"))
    assert handled + unread == 50


def procs_env_publish(raw: sync_redis.Redis, namespace: str, target: str) -> None:
    """Write one WORK signal straight into ``target``'s inbox."""
    import time

    now = time.time()
    raw.xadd(Keys(namespace).inbox(target), {
        "id": new_id(), "type": "WORK", "source": "tester", "targets": target,
        "data": "{}", "created_at": repr(now), "expires_at": repr(now + 60)})


def test_redis_cli_opens_on_the_same_redis(procs: Processes, namespace: str) -> None:
    """Acceptance 7: hivebus redis-cli talks to the Redis the other commands use."""
    procs.cli("publish", "PING", "--allow-unregistered", "--to", "somebody")
    result = procs.cli("redis-cli", "XLEN", f"{namespace}:inbox:{{somebody}}")
    assert result.stdout.strip() == "1"


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes (other than this one) whose command line or cwd mentions ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if state != "Z" and (text in cmdline or cwd.startswith(text)):
            found.append(int(entry.name))
    return found


def test_demo_with_managed_redis_leaves_nothing_running(tmp_path: Path, namespace: str) -> None:
    """Acceptance 1: hivebus demo with no Redis configured exits 0, summarises, stops everything."""
    env = hivebus_env(None, namespace)
    result = subprocess.run(hivebus_argv("demo", "--cycles", "12"), env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "signals this run:" in result.stdout and "trades closed:" in result.stdout
    assert "XINFO GROUPS" in result.stdout
    assert "12 MARKET_TICK" in result.stdout
    assert not (tmp_path / ".hivebus" / "redis.json").exists()
    assert processes_mentioning(str(tmp_path)) == []
    assert (tmp_path / ".hivebus" / "appendonly.aof").exists() or (
        tmp_path / ".hivebus" / "appendonlydir").exists()


def test_managed_redis_is_shared_and_stopped_by_the_last_user(tmp_path: Path, namespace: str) -> None:
    """Commands started in one directory join one managed Redis; the last one out stops it."""
    env = hivebus_env(None, namespace)

    def start_agent(agent_id: str) -> subprocess.Popen[bytes]:
        with open(tmp_path / f"{agent_id}.log", "wb") as log:
            return subprocess.Popen(hivebus_argv("agent", "run", "risk-manager", "--id", agent_id),
                                    env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)

    def cli_json(*args: str) -> Any:
        out = subprocess.run(hivebus_argv(*args, "--json"), env=env, cwd=tmp_path, check=True,
                             capture_output=True, text=True, timeout=60).stdout
        return json.loads(out)

    runtime = tmp_path / ".hivebus" / "redis.json"
    first = start_agent("rm-1")
    try:
        wait_until(runtime.exists, 30, "the managed Redis to start")
        second = start_agent("rm-2")
        try:
            wait_until(lambda: {a["agent_id"] for a in cli_json("agents") if a["alive"]}
                       == {"rm-1", "rm-2"}, 30, "both agents on the same Redis")
            server_pid = json.loads(runtime.read_text())["pid"]
            first.send_signal(signal.SIGTERM)
            assert first.wait(15) == 0
            assert runtime.exists()  # rm-2 still uses it
            sid = cli_json("publish", "WHALE_ACTIVITY", "--to", "rm-2")["signal_id"]
            wait_until(lambda: cli_json("signal", "show", sid)["status"]["rm-2"]["status"]
                       == "PROCESSED", 15, "rm-2 to keep working")
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(15) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert not runtime.exists()
    wait_until(lambda: not Path(f"/proc/{server_pid}").exists(), 15, "redis-server to stop")
