"""Issue 12, do-item 7 (the wire format): a client made only of raw redis-cli commands, written
from the README's "Wire format" section, publishes to a hivebus agent and consumes as an agent
of its own; `hivebus signal show` reports both as hivebus's own clients would be reported."""

from __future__ import annotations

import json
import subprocess
import time
import zlib
from pathlib import Path

from hivebus.domain.ids import new_id
from hivebus.domain.keys import Keys, signal_shard
from hivebus.infra import lua
from hivebus.infra.managed_redis import find_cli
from tests.conftest import RedisServer, hivebus_argv, hivebus_env
from tests.e2e.test_cli_first_hour import AGENT


class RedisCli:
    """The foreign client: redis-cli, nothing else."""

    def __init__(self, url: str) -> None:
        self.binary, self.url = find_cli() or "redis-cli", url

    def __call__(self, *args: str) -> list[str]:
        result = subprocess.run([self.binary, "-u", self.url, "--raw", *args], capture_output=True,
                                text=True, timeout=30, check=True)
        assert "ERR" not in result.stdout[:3], result.stdout
        return result.stdout.splitlines()


def hivebus(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(hivebus_argv(*args), env=env, cwd=cwd, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, (args, result.stderr)
    return result


def test_a_redis_cli_client_publishes_and_consumes_as_the_readme_says(
    real_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    cli, keys = RedisCli(real_server.url), Keys(namespace)
    env = hivebus_env(real_server.url, namespace, HIVEBUS_HOME=str(tmp_path / ".hivebus"))
    (tmp_path / "mymodule.py").write_text(AGENT)
    hivebus(env, tmp_path, "agent", "run", "mymodule:Pinger", "--id", "pinger-1", "--burst")

    # --- publishing: the PUBLISH script, its KEYS and ARGV as documented -------------------
    signal_id, now = new_id(), round(time.time(), 3)
    fields = ["id", signal_id, "type", "PING", "source", "outsider", "targets", "pinger-1",
              "severity", "HIGH", "confidence", "0.9", "data", '{"n":1}',
              "created_at", repr(now), "expires_at", repr(now + 3600)]
    shard = signal_shard(signal_id)  # CRC-32 of the id, modulo 16
    assert shard == zlib.crc32(signal_id.encode()) % 16
    tagged = f"{{~s{shard:02d}}}"
    publish_keys = [keys.inbox("pinger-1"), keys.pending("pinger-1"), keys.done("pinger-1"),
                    keys.agent("pinger-1"), f"{namespace}:signals:{tagged}",
                    f"{namespace}:published:{tagged}", f"{namespace}:signal:{tagged}:{signal_id}"]
    document = {"y": [], "t": ["pinger-1"], "s": 1, "b": [[3_600_000, [1], 1, 1, fields]]}
    sha = cli("SCRIPT", "LOAD", lua.PUBLISH)[0]
    cli("EVALSHA", sha, str(len(publish_keys)), *publish_keys, "100000", "100000", "0", "all",
        json.dumps(document))
    hivebus(env, tmp_path, "agent", "run", "mymodule:Pinger", "--id", "pinger-1", "--burst")
    shown = json.loads(hivebus(env, tmp_path, "signal", "show", signal_id, "--json").stdout)
    assert (shown["signal_type"], shown["source_agent"], shown["severity"], shown["data"]) == (
        "PING", "outsider", "HIGH", {"n": 1})
    assert shown["status"]["pinger-1"]["status"] == "PROCESSED"

    # --- consuming: register, read with XREADGROUP, settle with the SETTLE script ----------
    agent, consumer = "outsider", "outsider-1"
    cli("HSET", keys.agent(agent), "type", "foreign", "status", "active", "subscriptions", "")
    cli("SADD", keys.agents(), agent)  # after its hash (no types: no subscriber set to join)
    cli("HSET", keys.instances(agent), consumer,
        json.dumps({"host": "elsewhere", "pid": 1, "started_at": now}))
    cli("SET", keys.heartbeat(agent, consumer), repr(now), "PX", "60000")
    cli("XGROUP", "CREATE", keys.inbox(agent), agent, "0", "MKSTREAM")
    sent = hivebus(env, tmp_path, "publish", "PONG", "--to", agent, "--data", '{"n": 2}').stdout.strip()
    read = cli("XREADGROUP", "GROUP", agent, consumer, "COUNT", "10", "STREAMS", keys.inbox(agent), ">")
    entry = read[1]  # --raw: the stream's name, then the entry id, then field, value, …
    assert read[read.index("id") + 1] == sent
    settle_keys = [keys.inbox(agent), keys.pending(agent), keys.done(agent), keys.status(agent),
                   keys.retries(agent), keys.dead_letters(agent), keys.agent(agent)]
    payload = {"g": agent, "c": consumer, "now": int(time.time() * 1000), "keep": 86_400_000,
               "dlq": 100_000, "max": 5, "base": 500, "cap": 60_000, "retain": 100_000,
               "lo": entry, "hi": entry, "e": [[entry, sent, "PROCESSED", "", "", 0.5, 0, []]]}
    settled = cli("EVAL", lua.SETTLE, str(len(settle_keys)), *settle_keys, json.dumps(payload))
    assert settled[:5] == ["1", "0", "0", "0", "0"]  # processed, failed, dead, superseded, duplicate
    shown = json.loads(hivebus(env, tmp_path, "signal", "show", sent, "--json").stdout)
    assert shown["status"][agent]["status"] == "PROCESSED"
    listed = {a["agent_id"]: a for a in json.loads(hivebus(env, tmp_path, "agents", "--json").stdout)}
    assert listed[agent]["counters"]["processed"] == 1

    # --- a decision and its outcome, keyed as documented ------------------------------------
    decision_id = new_id()
    record = {"decision_id": decision_id, "agent_id": agent, "decision_type": "TRADE_EXECUTION",
              "timestamp": repr(now), "is_stm": "1", "triggered_by": sent, "context": "{}",
              "reasoning": '{"action":"buy"}'}
    decision_key = f"{namespace}:decision:{{{agent}}}:{decision_id}"
    cli("SADD", f"{namespace}:decision-agents:{{~registry}}", agent)
    cli("SET", f"{namespace}:decision-at:{decision_id}", agent, "NX")
    indexes = [f"{namespace}:decisions:{{{agent}}}{suffix}"
               for suffix in ("", ":pending", ":type:TRADE_EXECUTION", ":type:TRADE_EXECUTION:pending")]
    transaction = ["MULTI", f"HSET {decision_key} " + " ".join(f"{k} '{v}'" for k, v in record.items()),
                   *(f"ZADD {index} {now!r} {decision_id}" for index in indexes), "EXEC"]
    subprocess.run([cli.binary, "-u", cli.url], input="\n".join(transaction) + "\n", text=True,
                   capture_output=True, timeout=30, check=True)
    shown = json.loads(hivebus(env, tmp_path, "decision", "show", decision_id, "--json").stdout)
    assert (shown["agent_id"], shown["decision_type"], shown["outcome"]) == (agent, "TRADE_EXECUTION", None)
    outcome_keys = [decision_key, f"{namespace}:outcomes:{{{agent}}}", indexes[1], indexes[3],
                    f"{namespace}:decisions:{{{agent}}}:ok",
                    f"{namespace}:decisions:{{{agent}}}:type:TRADE_EXECUTION:ok"]
    outcome = json.dumps({"success": True, "quality_score": None, "latency_ms": None, "error": None,
                          "metrics": {}, "recorded_at": now})
    assert cli("EVAL", lua.LOG_OUTCOME, str(len(outcome_keys)), *outcome_keys, outcome, "1",
               decision_id, repr(now)) == ["1"]
    shown = json.loads(hivebus(env, tmp_path, "decision", "show", decision_id, "--json").stdout)
    assert shown["outcome"]["success"] is True
    ok = json.loads(hivebus(env, tmp_path, "decisions", agent, "--success", "--json").stdout)
    assert [d["decision_id"] for d in ok] == [decision_id]
