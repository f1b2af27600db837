"""Tests of the SQLite durable store: permissions, migrations, corruption, fencing, versions."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from hivebus.domain.decision import DecisionOutcome, DecisionRecord
from hivebus.domain.errors import NotFound, NotLeader, StoreError
from hivebus.domain.learning import Thresholds, credits_for
from hivebus.store.sqlite import SCHEMA_VERSION, SQLiteStore


def decision(agent: str, success: bool, action: str = "buy", **reasoning: Any) -> DecisionRecord:
    """A TRADE_EXECUTION decision with an outcome."""
    return DecisionRecord(agent_id=agent, decision_type="TRADE_EXECUTION",
                          reasoning={"action": action, **reasoning},
                          outcome=DecisionOutcome(success=success))


@pytest.mark.anyio
async def test_file_is_private_and_current(tmp_path: Path) -> None:
    """The store file is created 0600 at the current schema version."""
    store = await SQLiteStore.open(tmp_path / "ltm.sqlite3")
    try:
        assert stat.S_IMODE((tmp_path / "ltm.sqlite3").stat().st_mode) == 0o600
        assert await store.schema_version() == SCHEMA_VERSION
    finally:
        await store.close()


@pytest.mark.anyio
async def test_older_schema_is_migrated_on_open(tmp_path: Path) -> None:
    """A file written at schema version 1 is migrated forward, keeping its data."""
    path = tmp_path / "old.sqlite3"
    old = await SQLiteStore.open(path, max_version=1)
    await old.archive([(decision("a1", True), [])], epoch=None)
    assert await old.schema_version() == 1
    await old.close()
    with sqlite3.connect(path) as conn:
        assert "procedures" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    store = await SQLiteStore.open(path)
    try:
        assert await store.schema_version() == SCHEMA_VERSION
        assert await store.count_archived() == 1
    finally:
        await store.close()


@pytest.mark.anyio
async def test_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    """A file that is not SQLite gives one clear StoreError, and is left as it was."""
    path = tmp_path / "ltm.sqlite3"
    path.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(StoreError, match="not a usable hivebus store"):
        await SQLiteStore.open(path)
    assert path.read_bytes().startswith(b"this is not a database")


@pytest.mark.anyio
async def test_stale_epoch_is_refused(store: SQLiteStore) -> None:
    """Once epoch 2 has written, a write carrying epoch 1 is refused and changes nothing."""
    await store.archive([(decision("a1", True), [])], epoch=1)
    await store.archive([(decision("a1", True), [])], epoch=2)
    with pytest.raises(NotLeader):
        await store.archive([(decision("a1", True), [])], epoch=1)
    assert await store.count_archived() == 2


@pytest.mark.anyio
async def test_counting_is_idempotent(store: SQLiteStore) -> None:
    """Crediting the same decisions twice counts them once."""
    batch = [(d, credits_for(d)) for d in [decision("a1", True), decision("a1", False)]]
    assert await store.credit(batch, epoch=None) == 2
    assert await store.credit(batch, epoch=None) == 0
    [stats] = await store.stats()
    assert (stats["samples"], stats["successes"]) == (2, 1)


@pytest.mark.anyio
async def test_versions_rollback_and_visibility(store: SQLiteStore) -> None:
    """Three updates make four versions; rollback restores one; private patterns stay private."""
    rule = Thresholds(min_samples=2, min_confidence=0.0)
    pid = "a1/TRADE_EXECUTION/buy"
    for n in range(4):
        batch = [(d, credits_for(d)) for d in [decision("a1", True), decision("a1", n % 2 == 0)]]
        await store.credit(batch, epoch=None)
        await store.promote(rule, [], epoch=None)
    history = await store.pattern_history(pid, viewer="a1")
    assert [h["version"] for h in history] == [1, 2, 3, 4]
    assert [h["reason"] for h in history] == ["promoted", "updated", "updated", "updated"]
    restored = await store.rollback_pattern(pid, 2)
    assert restored.version == 5 and restored.sample_size == history[1]["pattern"]["sample_size"]
    assert (await store.pattern_history(pid, viewer=None))[-1]["reason"] == "rollback to version 2"
    assert [p.pattern_id for p in await store.query_patterns(viewer="a1")] == [pid]
    assert await store.query_patterns(viewer="b1") == []
    with pytest.raises(NotFound):
        await store.get_pattern(pid, viewer="b1")
    with pytest.raises(NotFound):
        await store.pattern_history(pid, viewer="b1")
    with pytest.raises(NotFound):
        await store.rollback_pattern(pid, 99)


@pytest.mark.anyio
async def test_shared_patterns_reach_named_agents(store: SQLiteStore) -> None:
    """A pattern shared with b1 is visible to b1 but not to c1."""
    batch = [(d, credits_for(d)) for d in [decision("a1", True), decision("a1", True)]]
    await store.credit(batch, epoch=None)
    await store.promote(Thresholds(min_samples=1, min_confidence=0.0), ["b1"], epoch=None)
    assert len(await store.query_patterns(viewer="b1", shared=True)) == 1
    assert await store.query_patterns(viewer="c1") == []


def _open_and_report(path: str, results: Any) -> None:
    import anyio

    async def go() -> int:
        store = await SQLiteStore.open(Path(path))
        try:
            return await store.schema_version()
        finally:
            await store.close()

    results.put(anyio.run(go))


def test_processes_opening_a_new_store_at_once_all_succeed(tmp_path: Path) -> None:
    """Several processes creating and migrating the same new file at once all end at the current schema."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_open_and_report, args=(str(tmp_path / "new.sqlite3"), results))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert sorted(results.get(timeout=5) for _ in workers) == [SCHEMA_VERSION] * 4
