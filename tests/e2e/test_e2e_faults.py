"""End-to-end faults of issue 10, each against real agent processes on a real redis-server.

Every signal of the Counter agent applies ``HINCRBY <ctx.key("applied")> <signal id> 1`` as an
effect at settle, and counts each run of its handler with a direct write; so "applied once" is
read from the effect hash, and "handled again" from the runs hash.
"""

from __future__ import annotations

import json
import os
import signal as os_signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis

from hivebus.domain.keys import LAYOUT_VERSION, Keys
from hivebus.domain.models import Signal
from tests.conftest import (
    REAL_SERVERS,
    Processes,
    RedisServer,
    hivebus_argv,
    hivebus_env,
    publish_batch,
    start_server,
    stop_server,
    wait_until,
)

pytestmark = pytest.mark.e2e

COUNTER = "tests.agents_for_tests:Counter"
FAST_RECLAIM = {"HIVEBUS_CLAIM_IDLE_S": "1", "HIVEBUS_HEARTBEAT_TTL_S": "1.5",
                "HIVEBUS_READ_BLOCK_MS": "200"}


def client(url: str) -> sync_redis.Redis:
    return sync_redis.Redis.from_url(url, decode_responses=True)


def start_agent(procs: Processes, agent_id: str, spec: str = COUNTER) -> subprocess.Popen[bytes]:
    """Start one replica and wait until it logs 'agent started' (replicas are started one after
    another: see test_replicas_of_a_new_agent_starting_together_all_start for starting together)."""
    proc = procs.start("agent", "run", spec, "--id", agent_id)

    def started() -> bool:
        assert proc.poll() is None, procs.log(proc)[-3000:]
        return any(e.get("event") == "agent started" for e in procs.log_events(proc))

    wait_until(started, 30, f"a replica of {agent_id} to start")
    return proc


def work(agent_id: str, count: int, **data: Any) -> list[Signal]:
    return [Signal.create("WORK", "tester", targets=[agent_id], data=data) for _ in range(count)]


def settled_cleanly(raw: sync_redis.Redis, keys: Keys, agent_id: str, signals: list[Signal]) -> None:
    """Every signal PROCESSED by ``agent_id``: in its ledger, no pending record, nothing unacked."""
    assert raw.hlen(keys.pending(agent_id)) == 0
    assert raw.xpending(keys.inbox(agent_id), agent_id)["pending"] == 0
    assert raw.hlen(keys.status(agent_id)) == 0  # nothing DEAD or EXPIRED
    for signal in signals:
        assert raw.zscore(keys.done(agent_id), signal.signal_id) is not None


@pytest.fixture
def fast(procs: Processes) -> Processes:
    procs.env.update(FAST_RECLAIM)
    return procs


def test_replica_paused_mid_batch_is_superseded_and_each_effect_applies_once(
    fast: Processes, real_server: RedisServer, namespace: str, raw: sync_redis.Redis
) -> None:
    """Fault 1: SIGSTOP one of two replicas while it handles a batch; the other reclaims and
    processes it; after SIGCONT the paused one's settle is superseded (logged) and applies
    nothing; every effect applied exactly once, all settled, and the resumed replica goes on."""
    keys, procs = Keys(namespace), fast
    replicas = [start_agent(procs, "ctr") for _ in range(2)]
    signals = work("ctr", 6, seconds=0.4)
    publish_batch(real_server.url, namespace, signals)  # one script call: one replica reads them all
    runs_by = f"{keys.prefix}test:runs_by"
    started = wait_until(lambda: (by := raw.hgetall(runs_by)) and sum(map(int, by.values())) >= 2 and by,
                         15, "a replica to be two signals into the batch")
    assert len(started) == 1, started  # the batch went to one replica
    victim = next(p for p in replicas if str(p.pid) in started)
    survivor = next(p for p in replicas if p is not victim)
    os.kill(victim.pid, os_signal.SIGSTOP)
    applied_key = keys.effect_key("ctr", "applied")
    try:
        wait_until(lambda: raw.hlen(applied_key) == 6, 30, "the survivor to process the whole batch")
        assert raw.hget(runs_by, str(survivor.pid)) == "6"
    finally:
        os.kill(victim.pid, os_signal.SIGCONT)

    def superseded() -> int:
        return sum(int(e.get("count", 0)) for e in procs.log_events(victim)
                   if str(e.get("event", "")).startswith("settle superseded"))

    assert wait_until(superseded, 15, "the resumed replica to log 'settle superseded'") == 6
    assert raw.hgetall(applied_key) == {s.signal_id: "1" for s in signals}
    settled_cleanly(raw, keys, "ctr", signals)
    assert victim.poll() is None
    # the resumed replica keeps running: alone now, it handles the next signal
    survivor.terminate()
    survivor.wait(15)
    [after] = work("ctr", 1)
    publish_batch(real_server.url, namespace, [after])
    wait_until(lambda: raw.hget(applied_key, after.signal_id) == "1", 15,
               "the resumed replica to handle more")
    assert int(raw.hget(runs_by, str(victim.pid)) or 0) >= 7
    assert raw.hgetall(applied_key) == {s.signal_id: "1" for s in [*signals, after]}


def test_handler_blocking_the_event_loop_past_claim_idle_applies_once(
    fast: Processes, real_server: RedisServer, namespace: str, raw: sync_redis.Redis
) -> None:
    """Fault 2: a handler that blocks its event loop (time.sleep 2.5 s: past claim_idle 1 s and the
    heartbeat TTL 1.5 s), two replicas: the signal is settled, its effect applied exactly once."""
    keys, procs = Keys(namespace), fast
    for _ in range(2):
        start_agent(procs, "ctr")
    signals = work("ctr", 1, block_s=2.5)
    publish_batch(real_server.url, namespace, signals)
    sid = signals[0].signal_id
    applied_key, runs = keys.effect_key("ctr", "applied"), f"{keys.prefix}test:runs"
    wait_until(lambda: raw.hget(runs, sid), 15, "a replica to start the handler")
    wait_until(lambda: raw.zscore(keys.done("ctr"), sid) is not None, 20, "the signal to settle",
               explain=lambda: (f"handled {raw.hget(runs, sid)!r} times, applied "
                                f"{raw.hget(applied_key, sid)!r}, pending record "
                                f"{raw.hget(keys.pending('ctr'), sid)!r}"))
    assert raw.hgetall(applied_key) == {sid: "1"}
    settled_cleanly(raw, keys, "ctr", signals)


def test_consumer_group_destroyed_while_running_is_recreated_without_repeats(
    procs_each: Processes, each_server: RedisServer, namespace: str
) -> None:
    """Fault 3: XGROUP DESTROY of a running agent's group after it processed 5 signals: nothing
    applied (or handled) twice, the recreation logged once, and new signals still processed."""
    keys, procs = Keys(namespace), procs_each
    procs.env.update(HIVEBUS_READ_BLOCK_MS="300")
    raw = client(each_server.url)
    agent = start_agent(procs, "ctr")
    first = work("ctr", 5)
    publish_batch(each_server.url, namespace, first)
    applied_key = keys.effect_key("ctr", "applied")
    wait_until(lambda: raw.hlen(applied_key) == 5, 15, "the first five to be processed")
    assert raw.xgroup_destroy(keys.inbox("ctr"), "ctr") == 1

    def recreations() -> int:
        return sum(1 for e in procs.log_events(agent) if "consumer group was missing" in str(e.get("event")))

    wait_until(recreations, 15, "the agent to recreate its group")
    wait_until(lambda: raw.xpending(keys.inbox("ctr"), "ctr")["pending"] == 0, 15,
               "the old entries delivered again to be acked")
    second = work("ctr", 3)
    publish_batch(each_server.url, namespace, second)
    wait_until(lambda: raw.hlen(applied_key) == 8, 15, "the new signals to be processed")
    everything = [*first, *second]
    assert raw.hgetall(applied_key) == {s.signal_id: "1" for s in everything}
    assert raw.hgetall(f"{keys.prefix}test:runs") == {s.signal_id: "1" for s in everything}
    settled_cleanly(raw, keys, "ctr", everything)
    assert recreations() == 1
    assert agent.poll() is None
    raw.close()


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed hivebus command (fails the test otherwise)."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def written_for(raw: sync_redis.Redis, keys: Keys, agent_id: str) -> tuple[int, int, int, int]:
    """What publishing writes: the target's inbox and pending lengths, the signal log, signal keys."""
    signal_keys = len(list(raw.scan_iter(match=f"{keys.prefix}signal:*", count=1000)))
    return (raw.xlen(keys.inbox(agent_id)), raw.hlen(keys.pending(agent_id)),
            sum(raw.xlen(log) for log in keys.signal_logs()), signal_keys)


def test_full_inbox_refuses_cli_publish_and_a_forwarding_handler_retries_until_room(
    procs: Processes, real_server: RedisServer, namespace: str, raw: sync_redis.Redis
) -> None:
    """Fault 4: b is stopped with HIVEBUS_INBOX_MAX=50 signals waiting: `hivebus publish` to it
    exits 1 with one line naming b and its backlog, writing nothing; agent fwd, whose handler
    forwards to b, gets FAILED (retried, not DEAD) until b starts and drains, then succeeds."""
    keys = Keys(namespace)
    procs.env.update(HIVEBUS_INBOX_MAX="50", HIVEBUS_READ_BLOCK_MS="300", HIVEBUS_RETRY_BASE_S="0.2",
                     HIVEBUS_RETRY_MAX_S="0.5", HIVEBUS_MAX_DELIVERIES="60")
    registering = procs.start("agent", "run", COUNTER, "--id", "b", "--burst")
    assert registering.wait(30) == 0
    backlog = work("b", 50)
    publish_batch(real_server.url, namespace, backlog, inbox_max=50)
    before = written_for(raw, keys, "b")
    assert before[:2] == (50, 50)
    refused = procs.cli("publish", "WORK", "--to", "b", check=False)
    line = one_line_error(refused)
    assert "'b'" in line and "50 unsettled" in line and "HIVEBUS_INBOX_MAX" in line
    assert refused.stdout == ""
    assert written_for(raw, keys, "b") == before  # no entry, no pending record, no log, no signal key
    fwd = start_agent(procs, "fwd", "tests.agents_for_tests:Forwarder")
    sid = procs.cli_json("publish", "FORWARD", "--to", "fwd", "--data", '{"to": "b"}')["signal_id"]
    tries = f"{keys.prefix}test:tries"
    wait_until(lambda: int(raw.hget(tries, sid) or 0) >= 2, 15, "the forward to be tried again")
    record = raw.hget(keys.pending("fwd"), sid) or ""
    assert "InboxFull" in record, record  # FAILED with the reason, still pending: not DEAD
    assert raw.hget(keys.status("fwd"), sid) is None and raw.xlen(keys.dead_letters("fwd")) == 0
    assert written_for(raw, keys, "b")[:2] == (50, 50)
    procs.start("agent", "run", COUNTER, "--id", "b")
    b_applied = keys.effect_key("b", "applied")
    wait_until(lambda: raw.zscore(keys.done("fwd"), sid) is not None, 30, "the forward to succeed")
    wait_until(lambda: raw.hlen(b_applied) == 51, 30, "b to process its backlog and the forwarded one")
    assert set(raw.hvals(b_applied)) == {"1"}
    assert raw.hgetall(keys.effect_key("fwd", "applied")) == {sid: "1"}
    assert raw.xlen(keys.dead_letters("fwd")) == 0 and raw.hlen(keys.status("fwd")) == 0
    shown = procs.cli_json("signal", "show", sid)
    assert shown["status"]["fwd"]["status"] == "PROCESSED"
    assert fwd.poll() is None


def test_signals_queued_past_inbox_retain_are_all_processed(
    procs: Processes, real_server: RedisServer, namespace: str, raw: sync_redis.Redis
) -> None:
    """Fault 4: HIVEBUS_INBOX_RETAIN=100, 250 signals queued while the agent is down and a
    coordinator pass meanwhile: nothing unsettled is trimmed; once started, all are PROCESSED."""
    keys = Keys(namespace)
    procs.env.update(HIVEBUS_INBOX_RETAIN="100", HIVEBUS_READ_BATCH="32", HIVEBUS_READ_BLOCK_MS="300")
    assert procs.start("agent", "run", COUNTER, "--id", "ctr", "--burst").wait(30) == 0
    signals = work("ctr", 250)
    publish_batch(real_server.url, namespace, signals, inbox_retain=100)
    procs.cli("coordinator", "--once")  # retention runs while the agent is down
    assert raw.xlen(keys.inbox("ctr")) == 250 and raw.hlen(keys.pending("ctr")) == 250
    agent = procs.start("agent", "run", COUNTER, "--id", "ctr")
    applied_key = keys.effect_key("ctr", "applied")
    wait_until(lambda: raw.hlen(applied_key) == 250, 30, "every queued signal to be processed")
    assert raw.hgetall(applied_key) == {s.signal_id: "1" for s in signals}
    settled_cleanly(raw, keys, "ctr", signals)
    assert raw.xlen(keys.inbox("ctr")) < 250  # settled entries were trimmed meanwhile
    assert agent.poll() is None


def run_together(env: dict[str, str],
                 commands: list[tuple[str, ...]]) -> list[subprocess.CompletedProcess[str]]:
    """Run hivebus commands side by side; return each one's result."""
    started = [subprocess.Popen(hivebus_argv(*c), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True) for c in commands]
    results = []
    for command, proc in zip(commands, started, strict=True):
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results.append(subprocess.CompletedProcess(list(command), proc.returncode, out, err))
    return results


@pytest.mark.parametrize("version", list(REAL_SERVERS))
def test_evicting_redis_is_refused_by_every_command_unless_allowed(
    version: str, tmp_path: Path, namespace: str
) -> None:
    """Fault 5: on a redis-server with maxmemory 64mb and allkeys-lru, `agent run`, `coordinator
    --once`, `publish` and `agents` each exit non-zero with one stderr line naming maxmemory-policy
    and noeviction (writing nothing); with HIVEBUS_ALLOW_EVICTION=1 they run and warn; with
    maxmemory 0 the same policy is accepted."""
    binary, cli = REAL_SERVERS[version]
    server = start_server(f"{version}-lru", binary, cli,
                          ["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"])
    raw = client(server.url)
    try:
        env = hivebus_env(server.url, namespace, HIVEBUS_HOME=str(tmp_path / ".hivebus"),
                          HIVEBUS_STORE=str(tmp_path / "ltm.sqlite3"), HIVEBUS_READ_BLOCK_MS="100")
        refused = run_together(env, [("agent", "run", COUNTER, "--id", "ctr"), ("coordinator", "--once"),
                                     ("publish", "WORK", "--to", "ctr", "--allow-unregistered"), ("agents",)])
        for result in refused:
            line = one_line_error(result)
            assert "maxmemory-policy" in line and "noeviction" in line, (result.args, line)
        assert raw.dbsize() == 0  # refused before writing anything
        allowed = run_together({**env, "HIVEBUS_ALLOW_EVICTION": "1"}, [
            ("agent", "run", COUNTER, "--id", "ctr", "--burst"), ("coordinator", "--once"),
            ("publish", "WORK", "--to", "ctr", "--allow-unregistered"), ("agents",)])
        for result in allowed:
            assert result.returncode == 0, (result.args, result.stderr)
            warnings = [json.loads(x) for x in result.stderr.splitlines() if "HIVEBUS_ALLOW_EVICTION" in x]
            assert [w["level"] for w in warnings] == ["warning"], (result.args, result.stderr)
        assert raw.config_set("maxmemory", "0")
        assert raw.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lru"
        [accepted] = run_together(env, [("agents",)])
        assert accepted.returncode == 0 and "evict" not in accepted.stderr, accepted.stderr
    finally:
        raw.close()
        stop_server(server)


def test_poison_is_dead_lettered_by_a_running_agent_that_keeps_going(
    procs: Processes, real_server: RedisServer, namespace: str, raw: sync_redis.Redis
) -> None:
    """Fault 6: entries whose value or field name is not UTF-8 (written with a raw client), a
    pending record with attempts 'abc' and a retry member that is no entry id: the running agent
    dead-letters the entries with a reason and their bytes escaped, sets the member aside, reads
    'abc' as 0, processes every good signal before and after, and is still running; `hivebus dlq
    list/show` print the letters without a traceback."""
    keys = Keys(namespace)
    procs.env.update(HIVEBUS_READ_BLOCK_MS="300")
    [odd] = work("ctr", 1)
    publish_batch(real_server.url, namespace, [odd], allow_unregistered=True)
    entry = str(raw.hget(keys.pending("ctr"), odd.signal_id)).split()[0]
    raw.hset(keys.pending("ctr"), odd.signal_id, f"{entry} abc")
    raw.zadd(keys.retries("ctr"), {"not-an-entry": 0})
    agent = procs.start("agent", "run", COUNTER, "--id", "ctr")
    applied_key = keys.effect_key("ctr", "applied")
    wait_until(lambda: raw.hget(applied_key, odd.signal_id) == "1", 30, "the signal with attempts 'abc'")
    before = work("ctr", 3)
    publish_batch(real_server.url, namespace, before)
    wait_until(lambda: raw.hlen(applied_key) == 4, 15, "the good signals before the poison")
    raw_bytes = sync_redis.Redis.from_url(real_server.url, decode_responses=False)
    try:
        bad_value: dict[Any, Any] = {k.encode(): v.encode() for k, v in work("ctr", 1)[0].to_fields().items()}
        bad_value[b"data"] = b'{"x": "\xff\xfe"}'
        bad_name: dict[Any, Any] = {k.encode(): v.encode() for k, v in work("ctr", 1)[0].to_fields().items()}
        bad_name[b"n\xe9me"] = b"x"
        raw_bytes.xadd(keys.inbox("ctr").encode(), bad_value)
        raw_bytes.xadd(keys.inbox("ctr").encode(), bad_name)
    finally:
        raw_bytes.close()
    after = work("ctr", 3)
    publish_batch(real_server.url, namespace, after)
    good = [odd, *before, *after]
    wait_until(lambda: raw.hlen(applied_key) == 7, 15, "the good signals after the poison")
    wait_until(lambda: raw.xlen(keys.dead_letters("ctr")) == 2, 15, "two dead letters")
    assert raw.hgetall(applied_key) == {s.signal_id: "1" for s in good}
    settled_cleanly(raw, keys, "ctr", good)
    assert raw.zcard(keys.retries("ctr")) == 0
    assert agent.poll() is None
    events = [str(e.get("event")) for e in procs.log_events(agent)]
    assert events.count("dead-lettered malformed entry") == 2
    assert "removed retry schedule members that are not entry ids" in events
    table = procs.cli("dlq", "list", "ctr")
    assert "Traceback" not in table.stderr and table.stdout.count("not UTF-8") == 2
    letters = procs.cli_json("dlq", "list", "ctr")
    assert len(letters) == 2 and all("not UTF-8" in r["reason"] for r in letters)
    originals = []
    for letter in letters:
        shown = procs.cli("dlq", "show", "ctr", letter["dlq_entry"])
        assert "Traceback" not in shown.stderr
        originals.append(json.loads(shown.stdout)["original"])
    assert {o.get("data") for o in originals} >= {'{"x": "\\xff\\xfe"}'}  # the raw bytes, escaped
    assert any(o.get("n\\xe9me") == "x" for o in originals)


def test_cli_publish_into_a_wrong_typed_key_prints_one_line_and_writes_nothing(
    procs: Processes, namespace: str, raw: sync_redis.Redis
) -> None:
    """Fault 7 (CLI): b's inbox replaced by a string: `hivebus publish --to a,b` exits 1 with one
    line naming the key, writing nothing for a either; after DEL, it delivers to both."""
    keys = Keys(namespace)
    raw.set(keys.inbox("b"), "edited by hand")
    before = written_for(raw, keys, "a")
    failed = procs.cli("publish", "WORK", "--to", "a,b", "--allow-unregistered", check=False)
    assert keys.inbox("b") in one_line_error(failed)
    assert written_for(raw, keys, "a") == before == (0, 0, 0, 0)
    raw.delete(keys.inbox("b"))
    published = procs.cli_json("publish", "WORK", "--to", "a,b", "--allow-unregistered")
    assert sorted(published["delivered_to"]) == ["a", "b"]
    assert raw.pttl(keys.signal(published["signal_id"])) > 0
    assert (raw.xlen(keys.inbox("a")), raw.xlen(keys.inbox("b"))) == (1, 1)


def test_agent_that_cannot_start_says_why_in_one_line(procs: Processes, namespace: str,
                                                     raw: sync_redis.Redis) -> None:
    """Found while testing fault 1 (a replica that lost the first-state race died with a
    traceback): an agent whose start fails with a hivebus error (here its state, edited by hand
    into an invalid version) exits 1 with one stderr line, like every other command."""
    raw.hset(Keys(namespace).state("ctr"), mapping={"agent_id": "ctr", "version": "abc"})
    proc = procs.start("agent", "run", COUNTER, "--id", "ctr")
    assert proc.wait(30) == 1
    lines = [x for x in procs.log(proc).splitlines() if not x.startswith("{")]  # JSON log lines aside
    assert len(lines) == 1 and lines[0].startswith("hivebus: error: "), lines[:5]
    assert "state" in lines[0]


def test_old_key_layout_is_refused_until_reset(procs_each: Processes, each_server: RedisServer,
                                               namespace: str) -> None:
    """Fault 9: `hive:agents` and `hive:stream:x` but no `hive:layout`: `hivebus agents` (and
    `agent run`) exit 1 with one line naming 'hivebus reset --yes'; after it, `agents` works."""
    procs, raw = procs_each, client(each_server.url)
    keys = Keys(namespace)
    raw.sadd(f"{keys.prefix}agents", "x")  # the registry as hivebus 0.1 named it
    raw.xadd(f"{keys.prefix}stream:x", {"id": "old", "type": "PING"})
    for refused in run_together(procs.env, [("agents",), ("agent", "run", COUNTER, "--id", "x")]):
        assert "'hivebus reset --yes'" in one_line_error(refused)
    assert raw.get(keys.layout()) is None and raw.exists(f"{keys.prefix}stream:x")
    assert "removed" in procs.cli("reset", "--yes").stdout
    assert procs.cli_json("agents") == []
    assert raw.get(keys.layout()) == LAYOUT_VERSION and not raw.exists(f"{keys.prefix}stream:x")
    raw.close()
