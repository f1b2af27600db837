"""The PostgreSQL durable store on a real server: the dialect traps, migrations under the
advisory lock, fencing across hosts, a restart, and the settings that select it.

(The store's behaviour itself — idempotent counting, versions, rollback, visibility, procedures,
concepts — runs on both engines through the ``store`` fixture in tests/unit.)"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from hivebus.domain.decision import DecisionOutcome, DecisionRecord
from hivebus.domain.errors import NotLeader, StoreError
from hivebus.domain.learning import Thresholds, credits_for
from hivebus.settings import Settings
from hivebus.store import is_postgres, open_store, store_exists, store_label
from hivebus.store.postgres import PostgresStore
from hivebus.store.procedural import ProceduralMemory
from hivebus.store.sql import SCHEMA_VERSION

pytestmark = pytest.mark.anyio
PRECISE = 1763900000.123456  # a 4-byte REAL reads this back as 1763900032.0


def decision(agent: str, success: bool | None, timestamp: float = PRECISE) -> DecisionRecord:
    outcome = None if success is None else DecisionOutcome(success=success)
    return DecisionRecord(agent_id=agent, decision_type="TRADE_EXECUTION", timestamp=timestamp,
                          reasoning={"action": "buy"}, outcome=outcome)


async def test_times_keep_every_digit(postgres_url: str) -> None:
    """Timestamps are double precision: the archive and a pattern's time read back exactly."""
    store = await PostgresStore.open(postgres_url)
    try:
        record = decision("a1", True)
        await store.archive([(record, ["s1"])], epoch=None)
        [back] = await store.archived("a1")
        assert back.timestamp == PRECISE
        assert await store.archived("a1", since=PRECISE, until=PRECISE) == [back]
        assert await store.archived("a1", since=PRECISE + 1e-6) == []
        with psycopg.connect(postgres_url) as conn:
            types = dict(conn.execute(
                "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' AND data_type IN ('real', 'double precision')").fetchall())
        assert types["decisions.timestamp"] == "double precision"
        assert "real" not in types.values()
    finally:
        await store.close()


async def test_upserts_count_on_the_existing_row(postgres_url: str) -> None:
    """The counting upsert names the old row's columns (a bare one is ambiguous in PostgreSQL):
    three decisions on one pattern count three samples, two successes."""
    store = await PostgresStore.open(postgres_url)
    try:
        batch = [(d, credits_for(d)) for d in (decision("a1", True, 1.0 + n) for n in range(2))]
        batch.append((decision("a1", False, 5.0), credits_for(decision("a1", False, 5.0))))
        assert await store.credit(batch, epoch=None) == 3
        assert await store.credit(batch, epoch=None) == 0
        [stats] = await store.stats()
        assert (stats["samples"], stats["successes"]) == (3, 2)
        report = await store.promote(Thresholds(min_samples=1, min_confidence=0.0), [], epoch=None)
        assert report.promoted == [stats["pattern_id"]]
    finally:
        await store.close()


async def test_optional_filters_need_no_untyped_parameter(postgres_url: str) -> None:
    """Listing procedures and concepts with and without a category (``? IS NULL`` would be
    'could not determine data type of parameter' here)."""
    store = await PostgresStore.open(postgres_url)
    try:
        memory = ProceduralMemory(store)
        await memory.store_procedure("p1", [{"step": "set", "params": {"x": 1}}], category="risk")
        await memory.store_procedure("p2", [{"step": "set", "params": {"x": 2}}])
        assert [p["procedure_id"] for p in await memory.procedures()] == ["p1", "p2"]
        assert [p["procedure_id"] for p in await memory.procedures("risk")] == ["p1"]
        await memory.add_concept("whale", category="market", content="a big holder")
        await memory.add_concept("Funding", category="rates", content="paid between longs and shorts")
        assert [c["name"] for c in await memory.search_concepts()] == ["Funding", "whale"]  # byte order
        assert [c["name"] for c in await memory.search_concepts(category="market")] == ["whale"]
    finally:
        await store.close()


async def test_migrations_run_once_when_hosts_open_a_new_database_at_once(postgres_url: str) -> None:
    """Eight connections migrating one empty database at the same moment: the advisory lock
    lets one apply each migration; every open succeeds at the current version."""
    import anyio

    opened: list[PostgresStore] = []
    barrier = threading.Barrier(8)

    async def one() -> None:
        await anyio.to_thread.run_sync(barrier.wait)
        opened.append(await PostgresStore.open(postgres_url))

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(one)
    try:
        assert [await s.schema_version() for s in opened] == [SCHEMA_VERSION] * 8
    finally:
        for store in opened:
            await store.close()


async def test_an_older_schema_is_migrated_keeping_its_data(postgres_url: str) -> None:
    old = await PostgresStore.open(postgres_url, max_version=1)
    await old.archive([(decision("a1", None), [])], epoch=None)
    assert await old.schema_version() == 1
    await old.close()
    store = await PostgresStore.open(postgres_url)
    try:
        assert await store.schema_version() == SCHEMA_VERSION
        assert await store.count_archived() == 1
    finally:
        await store.close()


async def test_a_deposed_leader_on_another_host_cannot_write(postgres_url: str) -> None:
    """Two hosts' connections: once epoch 2 has written, epoch 1 is refused on the other host,
    and the refused write left nothing behind."""
    host_a, host_b = await PostgresStore.open(postgres_url), await PostgresStore.open(postgres_url)
    try:
        await host_a.archive([(decision("a1", True, 1.0), [])], epoch=1)
        await host_b.archive([(decision("a1", True, 2.0), [])], epoch=2)
        with pytest.raises(NotLeader, match="epoch 1 is older than 2"):
            await host_a.archive([(decision("a1", True, 3.0), [])], epoch=1)
        assert await host_a.count_archived() == 2
        assert await host_a.highest_epoch() == 2
    finally:
        await host_a.close()
        await host_b.close()


async def test_a_stale_leaders_open_write_cannot_commit_after_a_newer_one(postgres_url: str) -> None:
    """Epoch 1 leads; host A's write with epoch 1 has passed its fencing check and is still open
    when host B writes with epoch 2. B waits for A's transaction (the advisory lock), so the
    writes commit in epoch order. (Without the lock, nothing makes B wait — A's check wrote no
    row — so B commits first and the deposed leader's write lands after the new leader's.)"""
    import time

    import anyio

    host_a, host_b = await PostgresStore.open(postgres_url), await PostgresStore.open(postgres_url)
    a_inside, b_done = threading.Event(), threading.Event()
    b_committed_inside_a: list[bool] = []

    def hold_until_b_waits_or_is_done(conn: Any) -> None:
        a_inside.set()
        deadline = time.monotonic() + 30
        with psycopg.connect(postgres_url, autocommit=True) as watcher:
            while not b_done.is_set() and time.monotonic() < deadline:
                waiting = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hivebus' "
                    "AND wait_event_type = 'Lock'").fetchone()
                if waiting and waiting[0]:
                    break
                time.sleep(0.01)
        b_committed_inside_a.append(b_done.is_set())
        conn.execute("INSERT INTO meta (key, value) VALUES ('a-was-here', '1')")

    async def b() -> None:
        await anyio.to_thread.run_sync(a_inside.wait)
        await host_b.archive([(decision("b", None), [])], epoch=2)
        b_done.set()

    try:
        await host_a.archive([(decision("a", None), [])], epoch=1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(host_a.write, hold_until_b_waits_or_is_done, 1)
            tg.start_soon(b)
        assert b_committed_inside_a == [False]
        assert await host_a.highest_epoch() == 2
    finally:
        await host_a.close()
        await host_b.close()


async def test_a_server_restart_is_one_error_then_the_store_works_again(
        postgres_server: Any, postgres_url: str) -> None:
    store = await PostgresStore.open(postgres_url)
    try:
        await store.archive([(decision("a1", None), [])], epoch=None)
        postgres_server.pg_ctl("-m", "fast", "-w", "restart")
        try:
            assert await store.count_archived() == 1
        except StoreError:  # the call that found the connection gone
            assert await store.count_archived() == 1
    finally:
        await store.close()


async def test_an_unreachable_server_is_one_line_without_the_password() -> None:
    from hivebus.infra.managed_redis import free_port

    url = f"postgresql://hive:s3cret@127.0.0.1:{free_port()}/hive"
    with pytest.raises(StoreError) as caught:
        await PostgresStore.open(url)
    message = str(caught.value)
    assert "s3cret" not in message and "\n" not in message
    assert message.startswith(f"store postgresql://hive:***@127.0.0.1:{url.split(':')[3].split('/')[0]}/hive")


async def test_the_store_setting_selects_the_engine(postgres_url: str, tmp_path: Path) -> None:
    postgres = Settings(store=postgres_url, home=tmp_path)
    assert is_postgres(postgres) and store_exists(postgres)
    assert store_label(postgres) == postgres_url  # no password to hide in the test's URL
    store = await open_store(postgres)
    try:
        assert isinstance(store, PostgresStore)
    finally:
        await store.close()
    sqlite = Settings(home=tmp_path)
    assert not is_postgres(sqlite) and not store_exists(sqlite)
    assert store_label(sqlite) == str(tmp_path / "ltm.sqlite3")
