"""HIVEBUS_PUBLISH_REPLICAS on one Redis: a publish returns once a replica has it, and says so
(NotReplicated, retryable) when none confirms in time — the signal is written all the same."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import redis as sync_redis

from hivebus.bus.bus import Bus
from hivebus.domain.errors import NotReplicated
from hivebus.domain.models import Signal
from hivebus.infra.connection import open_client
from hivebus.settings import Settings
from tests.conftest import RedisServer, start_server, stop_server, wait_until

pytestmark = pytest.mark.anyio


async def test_publish_waits_for_a_replica_and_says_when_none_confirms(
        real_server: RedisServer, namespace: str, tmp_path: Path) -> None:
    primary = start_server("primary", real_server.binary, real_server.cli)
    replica = start_server("replica", real_server.binary, real_server.cli,
                           ["--replicaof", "127.0.0.1", str(primary.port)])
    try:
        settings = Settings(namespace=namespace, home=tmp_path, publish_replicas=1, publish_wait_ms=300)
        client = open_client(primary.url, settings=settings, cluster=False)
        watcher = sync_redis.Redis(port=replica.port, decode_responses=True)
        wait_until(lambda: watcher.info("replication").get("master_link_status") == "up", 15,
                   "the replica to be in sync")
        watcher.close()
        bus = Bus(client, settings)
        sent = Signal.create("PING", "app", targets=["a1"])
        delivered = await bus.publish(sent, allow_unregistered=True)
        assert list(delivered) == ["a1"]
        stop_server(replica)
        late = Signal.create("PING", "app", targets=["a1"])
        with pytest.raises(NotReplicated, match="0 of the 1 replica"):
            await bus.publish(late, allow_unregistered=True)
        assert await client.hexists(bus.keys.pending("a1"), late.signal_id)  # written all the same
        plain = Bus(client, dataclasses.replace(settings, publish_replicas=0))
        assert await plain.publish(late, allow_unregistered=True) == {}  # again: nothing twice
        await client.aclose()
    finally:
        stop_server(replica)
        stop_server(primary)
