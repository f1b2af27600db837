"""Security: ACL rules enforced by a real Redis, AUTH through the URL, no password in any output."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis import exceptions as redis_errors

from hivebus.agents.runner import AgentRunner
from hivebus.bus.bus import Bus
from hivebus.bus.registry import Registry
from hivebus.domain.keys import Keys
from hivebus.domain.models import Signal
from hivebus.infra.acl import acl_script, agent_rule, agent_user, coordinator_rule
from hivebus.infra.connection import open_client
from hivebus.memory.decisions import DecisionLog
from hivebus.memory.state import AgentState, StateStore
from hivebus.settings import Settings
from tests.agents_for_tests import Echo
from tests.conftest import REAL_SERVERS, RedisServer, hivebus_argv, hivebus_env, start_server, stop_server

REDIS7 = [name for name in REAL_SERVERS if name >= "redis70"]
SECRET = "s3cr3t-Pa55"


@pytest.fixture(scope="module")
def acl_server() -> Any:
    """A Redis 7 server for the ACL tests (selectors need 7.0+)."""
    if not REDIS7:
        pytest.skip("no redis-server 7.0+ here; .ci/run installs Debian's")
    binary, cli = REAL_SERVERS[REDIS7[0]]
    server = start_server("acl", binary, cli)
    yield server
    stop_server(server)


@pytest.mark.anyio
async def test_agent_credentials_are_limited_by_redis(acl_server: RedisServer, namespace: str,
                                                     tmp_path: Path) -> None:
    """Acceptance 5: a1's user works for a1's job; Redis refuses reading b1's state or acking b1's signals."""
    keys = Keys(namespace)
    settings = Settings(namespace=namespace, home=tmp_path, read_block_ms=100)
    admin = open_client(acl_server.url)
    for agent_id in ("a1", "b1"):
        await admin.execute_command("ACL", "SETUSER", agent_user(agent_id),
                                    *agent_rule(keys, agent_id, SECRET))
    await admin.execute_command("ACL", "SETUSER", "hivebus-coordinator", *coordinator_rule(keys, SECRET))
    port = acl_server.port
    as_a1 = open_client(f"redis://{agent_user('a1')}:{SECRET}@127.0.0.1:{port}/0")
    as_b1 = open_client(f"redis://{agent_user('b1')}:{SECRET}@127.0.0.1:{port}/0")
    try:
        # b1 runs with its own credentials and saves its state
        await AgentRunner(Echo("b1"), Bus(as_b1, settings), Registry(as_b1, settings)).run(
            anyio.Event(), burst=True)
        await StateStore(as_b1, settings).save(AgentState(agent_id="b1", current_cycle=3, version=1))
        # a1 runs too, and may publish to b1
        await AgentRunner(Echo("a1"), Bus(as_a1, settings), Registry(as_a1, settings)).run(
            anyio.Event(), burst=True)
        ping = Signal.create("PING", "a1", targets=["b1"])
        await Bus(as_a1, settings).publish(ping)
        [(_, [(entry_id, _)])] = await as_b1.xreadgroup("b1", "c", {keys.inbox("b1"): ">"}, count=1)
        forbidden = [
            lambda: as_a1.hgetall(keys.state("b1")),
            lambda: as_a1.xack(keys.inbox("b1"), "b1", entry_id),
            lambda: as_a1.xrange(keys.inbox("b1")),
            lambda: as_a1.xreadgroup("b1", "thief", {keys.inbox("b1"): "0"}),
            lambda: as_a1.delete(keys.inbox("b1")),
            lambda: as_a1.hset(keys.state("b1"), "current_cycle", "99"),
            lambda: as_a1.config_get("*"),
        ]
        for attempt in forbidden:
            with pytest.raises(redis_errors.NoPermissionError):
                await attempt()
        assert (await admin.xinfo_groups(keys.inbox("b1")))[0]["pending"] == 1  # not acked by a1
        # b1 itself handles and acks its signal
        await AgentRunner(Echo("b1"), Bus(as_b1, settings), Registry(as_b1, settings)).run(
            anyio.Event(), burst=True)
        # a1 logs a decision and, once it is archived (gone from Redis), its late outcome
        decisions = DecisionLog(as_a1, settings)
        decision_id = await decisions.log_decision("a1", "TRADE_EXECUTION")
        await admin.delete(keys.decision("a1", decision_id))
        await decisions.log_outcome(decision_id, success=True)
        assert await admin.hexists(keys.late_outcomes(), decision_id)
    finally:
        for client in (as_a1, as_b1, admin):
            await client.aclose()


def test_acl_command_prints_loadable_rules(acl_server: RedisServer, namespace: str) -> None:
    """`hivebus acl a1 b1` prints rules that redis-cli loads as they are."""
    out = subprocess.run(hivebus_argv("acl", "a1", "b1"), env=hivebus_env(acl_server.url, namespace),
                         capture_output=True, text=True, check=True).stdout
    lines = [line for line in out.splitlines() if line.startswith("ACL ")]
    assert lines == acl_script(Keys(namespace), ["a1", "b1"])
    for line in lines:
        result = subprocess.run([acl_server.cli, "-p", str(acl_server.port)], input=line + "\n",
                                capture_output=True, text=True, check=True)
        assert result.stdout.strip() == "OK", result.stdout


def test_no_password_in_any_output(tmp_path: Path, namespace: str) -> None:
    """Acceptance 6: with a password URL, no log line, error or CLI output shows the password."""
    _name, (binary, cli) = next(iter(REAL_SERVERS.items()))
    server = start_server("auth", binary, cli, ["--requirepass", SECRET])
    try:
        url = f"redis://:{SECRET}@127.0.0.1:{server.port}/0"
        env = hivebus_env(url, namespace, HIVEBUS_HOME=str(tmp_path / ".hivebus"))
        outputs = []
        agent = subprocess.Popen(hivebus_argv("agent", "run", "risk-manager", "--id", "rm-1", "--burst"),
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        outputs.append(agent.communicate(timeout=60)[0])
        assert agent.returncode == 0, outputs[-1]
        for args in (["publish", "WHALE_ACTIVITY", "--to", "rm-1", "--json"], ["agents"], ["signals"],
                     ["publish", "PING", "--to", "nobody"], ["coordinator", "--once"],
                     ["redis-cli", "PING"]):
            result = subprocess.run(hivebus_argv(*args), env=env, capture_output=True, text=True)
            outputs.append(result.stdout + result.stderr)
        wrong = hivebus_env(f"redis://:{SECRET}-wrong@127.0.0.1:{server.port}/0", namespace)
        result = subprocess.run(hivebus_argv("agents"), env=wrong, capture_output=True, text=True)
        assert result.returncode == 1
        outputs.append(result.stdout + result.stderr)
        down = hivebus_env(f"redis://:{SECRET}@127.0.0.1:1/0", namespace)
        result = subprocess.run(hivebus_argv("agents"), env=down, capture_output=True, text=True)
        outputs.append(result.stdout + result.stderr)
        assert "PONG" in outputs[6]
        for text in outputs:
            assert SECRET not in text
        assert "***" in outputs[-1]
    finally:
        stop_server(server)


def test_logs_redact_urls(tmp_path: Path) -> None:
    """The log processor hides a password wherever a Redis URL shows up in an event."""
    from hivebus.infra.logs import redact_secrets

    event = redact_secrets(None, "info", {"event": "x", "url": f"rediss://u:{SECRET}@h:6380/0"})
    assert SECRET not in str(event)


def _certificates(folder: Path) -> dict[str, Path]:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=hivebus-test-ca",
        "-keyout", "ca.key", "-out", "ca.crt")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr")
        (folder / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt")
    return {n: folder / n for n in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


def test_tls_with_client_certificates(tmp_path: Path, namespace: str) -> None:
    """rediss:// with CA and client certificate works end to end; without the CA it is one clear error."""
    import shutil

    if not REDIS7 or shutil.which("openssl") is None:
        pytest.skip("needs Debian's redis-server (built with TLS) and openssl")
    binary, cli = REAL_SERVERS[REDIS7[0]]
    certs = _certificates(tmp_path)
    from hivebus.infra.managed_redis import free_port

    port = free_port()
    server = start_server("tls", binary, cli, [
        "--tls-port", str(port), "--tls-cert-file", str(certs["server.crt"]),
        "--tls-key-file", str(certs["server.key"]), "--tls-ca-cert-file", str(certs["ca.crt"]),
        "--tls-auth-clients", "yes"])
    try:
        url = f"rediss://127.0.0.1:{port}/0"
        env = hivebus_env(url, namespace, HIVEBUS_REDIS_TLS_CA_FILE=str(certs["ca.crt"]),
                          HIVEBUS_REDIS_TLS_CERT_FILE=str(certs["client.crt"]),
                          HIVEBUS_REDIS_TLS_KEY_FILE=str(certs["client.key"]))
        result = subprocess.run(hivebus_argv("publish", "PING", "--to", "someone", "--allow-unregistered",
                                             "--json"), env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        result = subprocess.run(hivebus_argv("redis-cli", "XLEN", f"{namespace}:inbox:{{someone}}"), env=env,
                                capture_output=True, text=True)
        assert result.stdout.strip() == "1", result.stdout + result.stderr
        no_ca = hivebus_env(url, namespace)
        result = subprocess.run(hivebus_argv("agents"), env=no_ca, capture_output=True, text=True)
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1 and "cannot reach Redis" in result.stderr
    finally:
        stop_server(server)
