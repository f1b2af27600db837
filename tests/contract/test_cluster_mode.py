"""Redis Cluster at the connection layer (issue 14, item 1), on the session's real 3-master,
3-replica cluster: hivebus detects it (``HIVEBUS_REDIS_CLUSTER=auto``) and opens redis-py's
cluster client, packs commands with hiredis on every node, checks the eviction policy of every
primary, and reports cluster errors as one line. What runs on top (publish, agents, the
coordinator) is tested elsewhere."""

from __future__ import annotations

import time
import uuid
from typing import Any

import hiredis
import pytest
import redis as sync_redis
import redis.asyncio as aioredis
from redis.crc import key_slot

from hivebus.domain.errors import ConfigError, RedisUnavailable, UnsafeRedis
from hivebus.infra.connection import (
    _HiredisPacking,
    cluster_layout,
    connected,
    is_cluster_node,
    open_client,
    open_sync_client,
)
from hivebus.infra.preflight import primary_infos
from hivebus.infra.redis_errors import translate_redis_errors
from hivebus.settings import Settings, load_settings
from tests.cluster_server import RedisCluster
from tests.conftest import RedisServer

pytestmark = pytest.mark.anyio


def test_the_setting_takes_auto_yes_or_no(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().redis_cluster == "auto"
    for value in ("auto", "yes", "no"):
        monkeypatch.setenv("HIVEBUS_REDIS_CLUSTER", value)
        assert load_settings().redis_cluster == value
    monkeypatch.setenv("HIVEBUS_REDIS_CLUSTER", "true")
    with pytest.raises(ConfigError, match=r"^bad configuration: HIVEBUS_REDIS_CLUSTER: must be one of "
                                          r"auto, yes, no \(got 'true'\)$"):
        load_settings()


async def test_auto_opens_a_cluster_client_on_a_cluster_and_a_plain_one_elsewhere(
        redis_cluster: RedisCluster, real_server: RedisServer, settings: Settings) -> None:
    assert is_cluster_node(redis_cluster.url) and not is_cluster_node(real_server.url)
    async with connected(redis_cluster.url, settings=settings) as client:
        assert isinstance(client, aioredis.RedisCluster)
        for node in redis_cluster.masters():  # every key reaches the node of its slot
            key = redis_cluster.key_on(node, f"{settings.namespace}:")
            await client.set(key, node.port)
            assert node.client().get(key) == str(node.port)
    async with connected(real_server.url, settings=settings) as client:
        assert type(client) is aioredis.Redis
    for url, kind in ((redis_cluster.url, aioredis.RedisCluster), (real_server.url, aioredis.Redis)):
        opened = open_client(url)
        assert type(opened) is kind
        await opened.aclose()
    sync_cluster = open_sync_client(redis_cluster.url)
    sync_plain = open_sync_client(real_server.url)
    try:
        assert isinstance(sync_cluster, sync_redis.RedisCluster)
        assert type(sync_plain) is sync_redis.Redis
    finally:
        sync_cluster.close()
        sync_plain.close()


async def test_the_setting_overrides_detection(redis_cluster: RedisCluster, real_server: RedisServer,
                                               settings: Settings) -> None:
    yes, no = Settings(namespace=settings.namespace, redis_cluster="yes"), Settings(redis_cluster="no")
    async with connected(redis_cluster.url, settings=yes) as client:
        assert isinstance(client, aioredis.RedisCluster)
    plain = open_client(redis_cluster.url, settings=no)
    assert type(plain) is aioredis.Redis
    await plain.aclose()
    with pytest.raises(RedisUnavailable) as refused:
        async with connected(real_server.url, settings=yes):
            pass
    assert str(refused.value) == (f"Redis at {real_server.url} is not a cluster node (cluster support "
                                  f"disabled) but HIVEBUS_REDIS_CLUSTER=yes: set it to auto or no")


async def test_no_against_a_cluster_is_one_line_naming_the_setting(redis_cluster: RedisCluster) -> None:
    first = redis_cluster.nodes[0]  # the node the URL names
    namespace = next(ns for ns in (f"t{uuid.uuid4().hex[:12]}" for _ in range(1000))
                     if key_slot(f"{ns}:layout".encode()) not in redis_cluster.slots_of(first))
    owner = next(n for n in redis_cluster.masters() if key_slot(f"{namespace}:layout".encode())
                 in redis_cluster.slots_of(n))
    with pytest.raises(RedisUnavailable) as refused:
        async with connected(redis_cluster.url, settings=Settings(namespace=namespace, redis_cluster="no")):
            pass
    slot = key_slot(f"{namespace}:layout".encode())
    assert str(refused.value) == (f"Redis is a cluster node (it answered MOVED {slot} 127.0.0.1:"
                                  f"{owner.port}) but hivebus opened a single-node client: set "
                                  f"HIVEBUS_REDIS_CLUSTER=yes")


async def test_hiredis_packs_the_commands_of_every_cluster_node(redis_cluster: RedisCluster) -> None:
    client = open_client(redis_cluster.url)
    assert isinstance(client, aioredis.RedisCluster)
    try:
        for node in redis_cluster.masters():
            await client.get(redis_cluster.key_on(node))
        nodes = client.get_nodes()
        # the primaries, and the replicas CLUSTER SLOTS listed yet
        assert len(nodes) >= 3 and all(issubclass(n.connection_class, _HiredisPacking) for n in nodes)
        used = [c for n in nodes for c in n._connections]
        assert len(used) >= 3 and all(isinstance(c, _HiredisPacking) for c in used)
        assert used[0].pack_command("SET", "k", "v") == [hiredis.pack_command(("SET", "k", "v"))]
    finally:
        await client.aclose()


async def test_every_primary_is_checked_for_eviction(redis_cluster: RedisCluster, settings: Settings) -> None:
    evicting = redis_cluster.masters()[-1]
    assert evicting is not redis_cluster.nodes[0]  # not the node the URL names
    evicting.client().config_set("maxmemory", "100mb")
    evicting.client().config_set("maxmemory-policy", "allkeys-lru")
    try:
        with pytest.raises(UnsafeRedis) as refused:
            async with connected(redis_cluster.url, settings=settings):
                pass
        assert str(refused.value) == (
            f"Redis evicts keys when full (cluster node 127.0.0.1:{evicting.port}: maxmemory-policy "
            f"allkeys-lru, maxmemory 104857600 bytes): signals and memory would be lost without a trace; "
            f"set 'maxmemory-policy noeviction' on every primary (CONFIG SET maxmemory-policy noeviction, "
            f"and in redis.conf), or HIVEBUS_ALLOW_EVICTION=1 to run anyway")
        async with connected(redis_cluster.url, settings=Settings(namespace=settings.namespace,
                                                                  allow_eviction=True)) as client:
            policies = {node: info["maxmemory_policy"] for node, info in
                        (await primary_infos(client, "memory")).items()}
        assert policies == {f"127.0.0.1:{n.port}": "allkeys-lru" if n is evicting else "noeviction"
                            for n in redis_cluster.masters()}
    finally:
        evicting.client().config_set("maxmemory-policy", "noeviction")
        evicting.client().config_set("maxmemory", "0")


async def test_cluster_layout_names_every_node(redis_cluster: RedisCluster) -> None:
    async with connected(redis_cluster.url) as client:
        layout = await cluster_layout(client)
    assert layout is not None and layout["state"] == "ok"
    primaries = [n for n in layout["nodes"] if n["role"] == "primary"]
    assert [n["node"] for n in primaries] == sorted((f"127.0.0.1:{m.port}" for m in redis_cluster.masters()),
                                                    key=lambda name: int(name.rsplit(":", 1)[1]))
    assert sum(n["slots"] for n in primaries) == 16384
    replicas = [n for n in layout["nodes"] if n["role"] == "replica"]
    assert sorted(n["primary"] for n in replicas) == sorted(n["node"] for n in primaries)
    assert not any(n["failing"] for n in layout["nodes"])


async def _one_line(call: Any, url: str | None = None) -> str:
    with pytest.raises(RedisUnavailable) as caught:
        async with translate_redis_errors(url):
            await call()
    assert "\n" not in str(caught.value) and caught.value.__cause__ is None
    return str(caught.value)


async def test_cluster_errors_become_one_line(redis_cluster: RedisCluster) -> None:
    nodes = redis_cluster.masters()
    here, there = redis_cluster.key_on(nodes[0]), redis_cluster.key_on(nodes[1])
    client = open_client(redis_cluster.url)
    try:
        mget = ("Redis Cluster cannot run MGET: its keys are in different hash slots: a hivebus bug, "
                "please report it")
        # client.mget is sent to a node, which answers CROSSSLOT; execute_command is refused by
        # redis-py's routing before it is sent
        assert await _one_line(lambda: client.mget(here, there)) == mget
        assert await _one_line(lambda: client.execute_command("MGET", here, there)) == mget
        assert await _one_line(lambda: client.rename(here, there)) == mget.replace("MGET", "RENAME")

        async def multi() -> None:
            async with client.pipeline(transaction=True) as pipe:
                await pipe.set(here, 1).set(there, 2).execute()

        assert await _one_line(multi) == ("Redis Cluster cannot run a MULTI transaction whose keys are in "
                                          "different hash slots: a hivebus bug, please report it")

        async def blocked() -> None:
            async with client.pipeline(transaction=False) as pipe:
                pipe.evalsha("0" * 40, 1, here)
                await pipe.execute()

        assert await _one_line(blocked) == ("redis-py cannot pipeline EVALSHA on a Redis Cluster: a hivebus "
                                            "bug, please report it")
    finally:
        await client.aclose()
    plain = aioredis.Redis(port=nodes[0].port, decode_responses=True)  # the server says CROSSSLOT
    try:
        crossing = next(k for k in (f"x{i}" for i in range(100_000))
                        if key_slot(k.encode()) in redis_cluster.slots_of(nodes[0])
                        and key_slot(k.encode()) != key_slot(here.encode()))
        assert await _one_line(lambda: plain.mget(here, crossing)) == mget

        async def pipelined() -> None:
            async with plain.pipeline(transaction=False) as pipe:
                await pipe.get(here).mget(here, crossing).execute()

        assert await _one_line(pipelined) == mget
    finally:
        await plain.aclose()


async def test_a_cluster_no_node_answers_is_one_line_without_the_password() -> None:
    from tests.cluster_server import free_cluster_ports

    url = f"redis://someone:s3cret@127.0.0.1:{free_cluster_ports(1)[0]}/0"
    client = open_client(url, cluster=True)
    try:
        message = await _one_line(client.ping, url)
    finally:
        await client.aclose()
    assert message.startswith("cannot reach Redis at redis://someone:***@127.0.0.1:")
    assert "s3cret" not in message
    with pytest.raises(RedisUnavailable) as caught:
        open_sync_client(url, cluster=True)
    assert str(caught.value).startswith("cannot reach Redis at redis://someone:***@") and "s3cret" not in str(
        caught.value)


async def test_a_cluster_url_with_a_database_is_refused(redis_cluster: RedisCluster) -> None:
    url = redis_cluster.url.removesuffix("/0") + "/2"
    with pytest.raises(RedisUnavailable, match=r"^bad Redis Cluster URL redis://127\.0\.0\.1:\d+/2: "
                                                  r"Argument 'db' must be 0 or None in cluster mode$"):
        open_client(url, cluster=True)


async def test_a_user_without_cluster_slots_is_told_which_rule_it_lacks(redis_cluster: RedisCluster) -> None:
    first = redis_cluster.nodes[0].client()
    user = f"nocluster{uuid.uuid4().hex[:6]}"
    first.acl_setuser(user, enabled=True, passwords=["+pw"], keys=["*"], commands=["+@read", "+@connection",
                                                                                   "+info"])
    url = f"redis://{user}:pw@127.0.0.1:{redis_cluster.nodes[0].port}/0"
    try:
        with pytest.raises(RedisUnavailable) as caught:
            async with connected(url):
                pass
    finally:
        first.acl_deluser(user)
    assert str(caught.value).startswith(
        f"the Redis user may not read the cluster's layout at redis://{user}:***@127.0.0.1:"
        f"{redis_cluster.nodes[0].port}/0 (CLUSTER SLOTS): give it +cluster|slots, as the rules "
        f"'hivebus acl' prints do: ")  # then the server's words (NOPERM …)
    assert "cluster|slots" in str(caught.value).rsplit(": ", 1)[1]


def test_the_liveness_thread_heartbeats_through_a_sync_cluster_client(
        redis_cluster: RedisCluster, settings: Settings) -> None:
    from hivebus.agents.liveness import LivenessThread
    from hivebus.domain.keys import Keys

    client = open_sync_client(redis_cluster.url)
    assert isinstance(client, sync_redis.RedisCluster)
    thread = LivenessThread(client, settings, "a1", "i1", working=lambda: [])
    thread.start()
    key = Keys(settings.namespace).heartbeat("a1", "i1")
    owner = next(n for n in redis_cluster.masters() if key_slot(key.encode()) in redis_cluster.slots_of(n))
    try:
        deadline = time.monotonic() + 10
        while owner.client().get(key) is None:
            assert time.monotonic() < deadline, "no heartbeat on the node of its slot"
            time.sleep(0.05)
    finally:
        thread.stop()
