"""Issue 12, the first hour: what a new user types works or fails in one line (CLI as a
subprocess against a real redis-server 7.0)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from hivebus.domain.keys import Keys
from tests.conftest import RedisServer, hivebus_argv, hivebus_env

AGENT = '''
from hivebus.agents.runtime import Agent, Context, handles


class Pinger(Agent):
    agent_type = "pinger"

    @handles("PING")
    async def on_ping(self, signal, ctx: Context) -> None:
        pass
'''


def run(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(hivebus_argv(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_agent_run_finds_a_module_in_the_current_directory_or_a_file(
    real_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    (tmp_path / "mymodule.py").write_text(AGENT)
    env = hivebus_env(real_server.url, namespace, HIVEBUS_HOME=str(tmp_path / ".hivebus"))
    for spec in ("mymodule:Pinger", "./mymodule.py:Pinger", str(tmp_path / "mymodule.py") + ":Pinger"):
        result = run(env, tmp_path, "agent", "run", spec, "--id", "pinger-1", "--burst")
        assert result.returncode == 0, (spec, result.stderr)
    for spec, message in (("./missing.py:Pinger", "no such file './missing.py'"),
                          ("./mymodule.py:Nope", "is not a hivebus Agent class"),
                          ("nomodule:Pinger", "cannot import module 'nomodule'")):
        result = run(env, tmp_path, "agent", "run", spec, "--id", "pinger-1", "--burst")
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0 and len(lines) == 1 and message in lines[0], (spec, result.stderr)


def test_bad_data_in_redis_is_one_line_or_shown_escaped(
    real_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    import redis as sync_redis

    env = hivebus_env(real_server.url, namespace, HIVEBUS_HOME=str(tmp_path / ".hivebus"))
    client: Any = sync_redis.Redis.from_url(real_server.url)
    keys = Keys(namespace)
    decision_id = "01KAAAAAAAAAAAAAAAAAAAAAAC"
    client.set(keys.decision_at(decision_id), "te-1")
    client.hset(keys.decision("te-1", decision_id), mapping={
        "decision_id": decision_id, "agent_id": "te-1", "decision_type": "TRADE_EXECUTION",
        "timestamp": "1", "context": "{bad"})
    shown = run(env, tmp_path, "decision", "show", decision_id)
    lines = shown.stderr.strip().splitlines()
    assert shown.returncode != 0 and len(lines) == 1 and "unreadable" in lines[0], shown.stderr
    client.xadd(keys.signal_log(0), {b"id": b"\xff\xfe", b"type": b"X"})
    listed = run(env, tmp_path, "signals")
    assert listed.returncode == 0 and "\\xff\\xfe" in listed.stdout, listed.stderr
    client.close()


def test_agent_remove_deregisters_and_publishing_to_it_then_says_so(
    real_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    (tmp_path / "mymodule.py").write_text(AGENT)
    env = hivebus_env(real_server.url, namespace, HIVEBUS_HOME=str(tmp_path / ".hivebus"))
    started = run(env, tmp_path, "agent", "run", "mymodule:Pinger", "--id", "pinger-1", "--burst")
    assert started.returncode == 0, started.stderr
    assert "pinger-1" in run(env, tmp_path, "agents").stdout
    removed = run(env, tmp_path, "agent", "remove", "pinger-1")
    assert removed.returncode == 0 and "removed pinger-1" in removed.stdout, removed.stderr
    assert "pinger-1" not in run(env, tmp_path, "agents").stdout
    published = run(env, tmp_path, "publish", "PING", "--to", "pinger-1")
    assert published.returncode != 0 and "never registered" in published.stderr
    again = run(env, tmp_path, "agent", "remove", "pinger-1")
    lines = again.stderr.strip().splitlines()
    assert again.returncode != 0 and len(lines) == 1 and "no registered agent" in lines[0]


def test_the_readmes_pinger_answers_a_cli_publish_without_a_dead_letter(
    real_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    """The README's flow: the Pinger replies PONG to the signal's source, the CLI; the reply
    waits in the CLI's inbox instead of dead-lettering the PING."""
    reply = '        await ctx.publish("PONG", to=[signal.source_agent], data={"seen": signal.data})'
    (tmp_path / "mymodule.py").write_text(AGENT.replace("        pass", reply))
    env = hivebus_env(real_server.url, namespace, HIVEBUS_HOME=str(tmp_path / ".hivebus"))
    started = run(env, tmp_path, "agent", "run", "mymodule:Pinger", "--id", "pinger-1", "--burst")
    assert started.returncode == 0, started.stderr
    published = run(env, tmp_path, "publish", "PING", "--to", "pinger-1", "--data", '{"n": 1}')
    assert published.returncode == 0, published.stderr
    handled = run(env, tmp_path, "agent", "run", "mymodule:Pinger", "--id", "pinger-1", "--burst")
    assert handled.returncode == 0, handled.stderr
    shown = run(env, tmp_path, "signal", "show", published.stdout.strip(), "--json")
    import json

    assert json.loads(shown.stdout)["status"]["pinger-1"]["status"] == "PROCESSED"
    assert "(none)" in run(env, tmp_path, "dlq", "list", "pinger-1").stdout
    replies = run(env, tmp_path, "redis-cli", "XLEN", Keys(namespace).inbox("cli"))
    assert replies.stdout.strip() == "1", (replies.stdout, replies.stderr)


def test_redis_cli_passes_every_argument_through_as_the_urls_user(
    real_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    """`hivebus redis-cli --scan --pattern …`, `--raw`, `-n` reach redis-cli unparsed; a URL with
    user:password connects as that user (password through the environment, never in argv);
    redis-cli's exit code comes back."""
    import redis as sync_redis

    client: Any = sync_redis.Redis.from_url(real_server.url, decode_responses=True)
    keys = Keys(namespace)
    client.set(f"{keys.prefix}probe", "value")
    env = hivebus_env(real_server.url, namespace, HIVEBUS_HOME=str(tmp_path / ".hivebus"))
    scanned = run(env, tmp_path, "redis-cli", "--scan", "--pattern", f"{keys.prefix}pro*")
    assert scanned.returncode == 0 and scanned.stdout.split() == [f"{keys.prefix}probe"], scanned.stderr
    assert run(env, tmp_path, "redis-cli", "--raw", "GET", f"{keys.prefix}probe").stdout == "value\n"
    user = f"hb-{namespace}"
    client.execute_command("ACL", "SETUSER", user, "on", ">s3cret:pw", "~*", "+@all")
    try:
        port = real_server.url.rsplit(":", 1)[1].split("/")[0]
        as_user = hivebus_env(f"redis://{user}:s3cret%3Apw@127.0.0.1:{port}/0", namespace,
                              HIVEBUS_HOME=str(tmp_path / ".hivebus"))
        whoami = run(as_user, tmp_path, "redis-cli", "ACL", "WHOAMI")
        assert whoami.stdout.strip() == user, (whoami.stdout, whoami.stderr)
        wrong = hivebus_env(f"redis://{user}:nope@127.0.0.1:{port}/0", namespace,
                            HIVEBUS_HOME=str(tmp_path / ".hivebus"))
        refused = run(wrong, tmp_path, "redis-cli", "ACL", "WHOAMI")
        assert "WRONGPASS" in refused.stdout + refused.stderr and "nope" not in refused.stdout
    finally:
        client.execute_command("ACL", "DELUSER", user)
    bad_flag = run(env, tmp_path, "redis-cli", "--no-such-flag")
    assert bad_flag.returncode != 0
    client.close()


def test_status_shows_the_redis_the_coordinator_and_the_store(
    real_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    import json

    port = real_server.url.rsplit(":", 1)[1].split("/")[0]
    env = hivebus_env(f"redis://:hunter2@127.0.0.1:{port}/0", namespace,
                      HIVEBUS_HOME=str(tmp_path / ".hivebus"), HIVEBUS_STORE=str(tmp_path / "ltm.sqlite3"))
    before = json.loads(run(env, tmp_path, "status", "--json").stdout)
    assert before["redis"]["url"] == f"redis://:***@127.0.0.1:{port}/0" and not before["redis"]["managed"]
    assert before["redis"]["version"] and before["redis"]["maxmemory_policy"]
    assert before["store"] == {"engine": "sqlite", "path": str(tmp_path / "ltm.sqlite3"), "exists": False}
    assert run(env, tmp_path, "coordinator", "--once").returncode == 0
    after = json.loads(run(env, tmp_path, "status", "--json").stdout)
    assert after["store"]["exists"] and after["store"]["highest_epoch"] >= 1
    table = run(env, tmp_path, "status")
    assert "hunter2" not in table.stdout + table.stderr and "coordinator" in table.stdout


def test_a_corrupt_state_is_named_and_a_snapshot_brings_the_agent_back(
    real_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    """An agent whose state hash was edited into nonsense refuses to start with one line naming
    the key and the way back; `state history` shows what is readable (a bad snapshot left out);
    `state rollback` to a good snapshot works over the corrupt state; the agent starts again."""
    import json

    import redis as sync_redis

    env = hivebus_env(real_server.url, namespace, HIVEBUS_HOME=str(tmp_path / ".hivebus"))
    client: Any = sync_redis.Redis.from_url(real_server.url, decode_responses=True)
    keys = Keys(namespace)
    assert run(env, tmp_path, "agent", "run", "market-hunter", "--id", "mh-9", "--burst").returncode == 0
    snapshot_id = run(env, tmp_path, "state", "checkpoint", "mh-9").stdout.split()[-1]
    client.hset(keys.state("mh-9"), mapping={"version": "notanumber", "current_cycle": "x"})
    client.lpush(keys.snapshots("mh-9"), "{bad")
    refused = run(env, tmp_path, "agent", "run", "market-hunter", "--id", "mh-9", "--burst")
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode != 0 and keys.state("mh-9") in lines[-1] and "rollback" in lines[-1]
    history = run(env, tmp_path, "state", "history", "mh-9")
    assert history.returncode == 0 and snapshot_id in history.stdout and "left out" in history.stdout
    listed = json.loads(run(env, tmp_path, "state", "history", "mh-9", "--json").stdout)["snapshots"]
    assert listed[0] == {"unreadable": "{bad"}
    rolled = run(env, tmp_path, "state", "rollback", "mh-9", snapshot_id)
    assert rolled.returncode == 0, rolled.stderr
    assert run(env, tmp_path, "agent", "run", "market-hunter", "--id", "mh-9", "--burst").returncode == 0
    client.close()


def test_a_store_that_cannot_be_created_is_one_line(
    real_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    """A store path that cannot be created (here: under a file; a read-only file system fails the
    same way) stops the coordinator with one line, not an OSError traceback."""
    (tmp_path / "afile").write_text("")
    env = hivebus_env(real_server.url, namespace, HIVEBUS_HOME=str(tmp_path / ".hivebus"),
                      HIVEBUS_STORE=str(tmp_path / "afile" / "ltm.sqlite3"))
    result = run(env, tmp_path, "coordinator", "--once")
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and "cannot be opened" in lines[0], result.stderr


def test_errors_name_the_option_that_was_wrong(
    real_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    env = hivebus_env(real_server.url, namespace, HIVEBUS_HOME=str(tmp_path / ".hivebus"))
    for args, expected in (
        (["decision", "outcome", "01KAAAAAAAAAAAAAAAAAAAAAAD", "--success", "--metrics", "notjson"],
         "--metrics is not valid JSON"),
        (["publish", "PING", "--ttl", "0", "--allow-unregistered"], "--ttl must be more than 0"),
        # longer than retention keeps an inbox entry: refused, not expired early
        (["publish", "PING", "--ttl", "86401", "--allow-unregistered"],
         "at most HIVEBUS_SIGNAL_TTL_S (86400)"),
        (["publish", "PING", "--data", "[1]"], "--data must be a JSON object"),
    ):
        result = run(env, tmp_path, *args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0 and len(lines) == 1 and expected in lines[0], (args, result.stderr)


def test_procedures_show_and_history_take_json_like_every_listing(
    real_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    import json

    env = hivebus_env(real_server.url, namespace, HIVEBUS_HOME=str(tmp_path / ".hivebus"),
                      HIVEBUS_STORE=str(tmp_path / "ltm.sqlite3"))
    steps = '[{"step": "set", "params": {"a": 1}}]'
    added = run(env, tmp_path, "procedures", "add", "sizing", "--steps", steps)
    assert added.returncode == 0, added.stderr
    history = run(env, tmp_path, "procedures", "history", "sizing", "--json")
    assert history.returncode == 0 and isinstance(json.loads(history.stdout), list), history.stderr
    shown = run(env, tmp_path, "procedures", "show", "sizing", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["procedure_id"] == "sizing", shown.stderr


def test_signals_json_names_fields_as_signal_show_does(
    real_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    import json

    env = hivebus_env(real_server.url, namespace, HIVEBUS_HOME=str(tmp_path / ".hivebus"))
    (tmp_path / "mymodule.py").write_text(AGENT)
    started = run(env, tmp_path, "agent", "run", "mymodule:Pinger", "--id", "pinger-1", "--burst")
    assert started.returncode == 0, started.stderr
    sent = run(env, tmp_path, "publish", "PING", "--to", "pinger-1").stdout.strip()
    [listed] = json.loads(run(env, tmp_path, "signals", "--json").stdout)
    shown = json.loads(run(env, tmp_path, "signal", "show", sent, "--json").stdout)
    for name in ("signal_id", "signal_type", "source_agent"):
        assert listed[name] == shown[name]
    assert listed["delivered_to"] == ["pinger-1"] and listed["published_at"] > 0
