"""The hivebus command on a real Redis Cluster (issue 14, item 1; the connection layer): redis-cli
in cluster mode, status with every primary, ACL rules set on every node, and one-line errors
(not tracebacks) from the commands that do not run on a cluster yet."""

from __future__ import annotations

import shlex
import subprocess
import uuid
from collections.abc import Iterator

import anyio
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from hivebus.domain.errors import RedisUnavailable
from hivebus.infra.acl import COORDINATOR_USER, agent_user
from hivebus.infra.connection import open_client
from hivebus.infra.redis_errors import translate_redis_errors
from tests.cluster_server import RedisCluster
from tests.conftest import hivebus_argv, hivebus_env


def hivebus(cluster: RedisCluster, namespace: str, *args: str,
            **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(hivebus_argv(*args), env=hivebus_env(cluster.url, namespace, **env),
                          capture_output=True, text=True, timeout=60, check=False)


def one_line_or_success(result: subprocess.CompletedProcess[str]) -> str:
    """What a command printed, having checked it succeeded or failed with one line."""
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode == 0:
        return result.stdout
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hivebus: error: "), result.stderr
    return lines[0]


def test_redis_cli_follows_the_cluster_to_every_master(redis_cluster: RedisCluster, namespace: str) -> None:
    for node in redis_cluster.masters():
        key = redis_cluster.key_on(node, f"{namespace}:cli:")
        written = hivebus(redis_cluster, namespace, "redis-cli", "SET", key, f"v{node.port}")
        assert (written.returncode, written.stdout.strip()) == (0, "OK"), written.stderr
        read = hivebus(redis_cluster, namespace, "redis-cli", "GET", key)
        assert (read.returncode, read.stdout.strip()) == (0, f"v{node.port}"), read.stderr
        assert node.client().get(key) == f"v{node.port}"  # on the node that serves its slot
    # without cluster mode redis-cli shows the redirect instead of following it
    away = redis_cluster.key_on(redis_cluster.masters()[1], f"{namespace}:cli:")
    plain = hivebus(redis_cluster, namespace, "redis-cli", "GET", away, HIVEBUS_REDIS_CLUSTER="no")
    assert "MOVED" in plain.stdout + plain.stderr


def test_status_shows_the_cluster_and_every_primary(redis_cluster: RedisCluster, namespace: str) -> None:
    import json

    result = hivebus(redis_cluster, namespace, "status", "--json")
    assert result.returncode == 0, result.stderr
    redis = json.loads(result.stdout)["redis"]
    assert {"url", "managed", "server", "version", "maxmemory", "maxmemory_policy"} <= set(redis)
    cluster = redis["cluster"]
    assert (cluster["state"], cluster["nodes"], cluster["masters"], cluster["failing"]) == ("ok", 6, 3, [])
    masters = sorted(f"127.0.0.1:{n.port}" for n in redis_cluster.masters())
    assert sorted(p["node"] for p in cluster["primaries"]) == masters
    assert sum(p["slots"] for p in cluster["primaries"]) == 16384
    assert all(p["maxmemory_policy"] == "noeviction" and len(p["replicas"]) == 1 and p["version"]
               for p in cluster["primaries"])
    text = hivebus(redis_cluster, namespace, "status")
    assert text.returncode == 0, text.stderr
    assert "Redis Cluster, cluster_state ok, 6 nodes, 3 masters" in text.stdout
    assert sum(line.startswith("  primary    ") for line in text.stdout.splitlines()) == 3


@pytest.fixture
def agent_ids(redis_cluster: RedisCluster) -> Iterator[tuple[str, str]]:
    """Two agent ids of this test; their ACL users (and the coordinator's) are deleted from every
    node afterwards."""
    ids = (f"a{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}")
    yield ids
    for node in redis_cluster.live_nodes():
        node.client().acl_deluser(*(agent_user(a) for a in ids), COORDINATOR_USER)


def test_acl_rules_are_set_on_every_node_and_let_an_agent_use_the_cluster(
        redis_cluster: RedisCluster, namespace: str, agent_ids: tuple[str, str]) -> None:
    mine, other = agent_ids
    printed = hivebus(redis_cluster, namespace, "acl", mine, other)
    assert printed.returncode == 0, printed.stderr
    commands = [shlex.split(line.replace("REPLACE_WITH_A_SECRET", "s3cret"))
                for line in printed.stdout.splitlines() if not line.startswith("#")]
    assert len(commands) == 6 * 3  # every node, replicas included, times three users
    assert {(c[2], c[4]) for c in commands} == {("127.0.0.1", str(n.port)) for n in redis_cluster.nodes}
    for command in commands:
        assert command[0] == "redis-cli" and command[5:7] == ["ACL", "SETUSER"]
        assert "+cluster|slots" in command
        done = subprocess.run([redis_cluster.cli, *command[1:]], capture_output=True, text=True, timeout=30)
        assert done.stdout.strip() == "OK", (command, done.stdout, done.stderr)
    for node in redis_cluster.nodes:
        assert node.client().acl_getuser(agent_user(mine)) is not None

    async def as_agent() -> None:
        client = open_client(f"redis://{agent_user(mine)}:s3cret@127.0.0.1:{redis_cluster.nodes[0].port}/0")
        try:
            assert isinstance(client, aioredis.RedisCluster)
            async with translate_redis_errors():
                await client.hset(f"{namespace}:state:{{{mine}}}", "x", "1")
                assert await client.hget(f"{namespace}:state:{{{mine}}}", "x") == "1"
            with pytest.raises(RedisUnavailable, match="no permissions"):
                async with translate_redis_errors():
                    await client.hget(f"{namespace}:state:{{{other}}}", "x")
        finally:
            await client.aclose()

    anyio.run(as_agent)


def test_acl_prints_the_single_node_script_with_the_cluster_setting_off(
        redis_cluster: RedisCluster, namespace: str) -> None:
    printed = hivebus(redis_cluster, namespace, "acl", "a1", HIVEBUS_REDIS_CLUSTER="no")
    assert printed.returncode == 0, printed.stderr
    lines = [line for line in printed.stdout.splitlines() if not line.startswith("#")]
    assert [line.split()[:3] for line in lines] == [["ACL", "SETUSER", COORDINATOR_USER],
                                                    ["ACL", "SETUSER", agent_user("a1")]]
    assert "cluster|slots" not in printed.stdout


def test_commands_that_do_not_run_on_a_cluster_yet_fail_with_one_line(
        redis_cluster: RedisCluster, namespace: str) -> None:
    agents = one_line_or_success(hivebus(redis_cluster, namespace, "agents"))
    published = one_line_or_success(hivebus(redis_cluster, namespace, "publish", "MARKET_TICK",
                                             "--data", '{"p": 1}', "--allow-unregistered"))
    print(f"hivebus agents: {agents.strip()}\nhivebus publish: {published.strip()}")
    # a namespace whose layout marker (read first) is on another node than the one the URL names
    away = next(ns for ns in (f"t{uuid.uuid4().hex[:12]}" for _ in range(1000))
                if key_slot(f"{ns}:layout".encode()) not in redis_cluster.slots_of(redis_cluster.nodes[0]))
    refused = hivebus(redis_cluster, away, "signals", HIVEBUS_REDIS_CLUSTER="no")
    line = one_line_or_success(refused)
    assert refused.returncode == 1 and "HIVEBUS_REDIS_CLUSTER=yes" in line, line
