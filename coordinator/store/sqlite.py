"""The durable (long-term) store: patterns with versions, learning counts, archived decisions.

:class:`SQLiteStore` is the embedded default: one SQLite file (``HIVEBUS_STORE``,
default ``.hivebus/ltm.sqlite3``) in WAL mode, created 0600, with a schema version
and forward migrations applied on open. Every call runs in a worker thread, so the
event loop never blocks. Writes made for the coordinator carry its fencing epoch:
a write with an epoch lower than the highest one seen is refused with NotLeader, so
a deposed leader cannot write late. A PostgreSQL store can implement the same
methods later.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio

from hivebus.domain.decision import DecisionRecord
from hivebus.domain.errors import InvalidInput, NotFound, NotLeader, StoreError
from hivebus.domain.learning import Credit, Thresholds, wilson_lower_bound
from hivebus.store.base import MemoryPattern, PassReport

T = TypeVar("T")
EVIDENCE_KEPT = 50

MIGRATIONS: list[str] = [
    # 1: learning, patterns, archive
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE credited (decision_id TEXT PRIMARY KEY, credited_at REAL NOT NULL);
    CREATE TABLE pattern_stats (
        pattern_id TEXT PRIMARY KEY, agent_id TEXT NOT NULL, decision_type TEXT NOT NULL,
        kind TEXT NOT NULL, samples INTEGER NOT NULL, successes INTEGER NOT NULL,
        evidence TEXT NOT NULL, data TEXT NOT NULL, dirty INTEGER NOT NULL DEFAULT 1);
    CREATE TABLE patterns (
        pattern_id TEXT PRIMARY KEY, agent_id TEXT NOT NULL, memory_type TEXT NOT NULL,
        version INTEGER NOT NULL, active INTEGER NOT NULL, confidence REAL NOT NULL,
        success_rate REAL NOT NULL, sample_size INTEGER NOT NULL, successes INTEGER NOT NULL,
        data TEXT NOT NULL, user_metadata TEXT NOT NULL, is_shared INTEGER NOT NULL,
        shared_with TEXT NOT NULL, evidence TEXT NOT NULL, updated_at REAL NOT NULL);
    CREATE TABLE pattern_versions (
        pattern_id TEXT NOT NULL, version INTEGER NOT NULL, snapshot TEXT NOT NULL,
        reason TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (pattern_id, version));
    CREATE TABLE decisions (
        decision_id TEXT PRIMARY KEY, agent_id TEXT NOT NULL, decision_type TEXT NOT NULL,
        timestamp REAL NOT NULL, success INTEGER, record TEXT NOT NULL, caused TEXT NOT NULL);
    CREATE INDEX decisions_by_agent ON decisions (agent_id, timestamp);
    """,
    # 2: procedural and semantic memory
    """
    CREATE TABLE procedures (
        procedure_id TEXT PRIMARY KEY, name TEXT NOT NULL, category TEXT NOT NULL,
        version INTEGER NOT NULL, steps TEXT NOT NULL, parameters TEXT NOT NULL,
        successes INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0,
        total_duration_s REAL NOT NULL DEFAULT 0, last_run REAL, updated_at REAL NOT NULL);
    CREATE TABLE procedure_versions (
        procedure_id TEXT NOT NULL, version INTEGER NOT NULL, steps TEXT NOT NULL,
        parameters TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (procedure_id, version));
    CREATE TABLE procedure_outcomes (
        procedure_id TEXT NOT NULL, at REAL NOT NULL, success INTEGER NOT NULL,
        duration_s REAL NOT NULL, detail TEXT NOT NULL);
    CREATE TABLE concepts (
        name TEXT PRIMARY KEY, category TEXT NOT NULL, content TEXT NOT NULL, updated_at REAL NOT NULL);
    CREATE TABLE concept_relations (
        source TEXT NOT NULL, relation TEXT NOT NULL, target TEXT NOT NULL,
        PRIMARY KEY (source, relation, target));
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def _pattern_from_row(row: sqlite3.Row) -> MemoryPattern:
    return MemoryPattern(
        pattern_id=row["pattern_id"], agent_id=row["agent_id"], memory_type=row["memory_type"],
        version=row["version"], active=bool(row["active"]), confidence=row["confidence"],
        success_rate=row["success_rate"], sample_size=row["sample_size"], successes=row["successes"],
        data=json.loads(row["data"]), user_metadata=json.loads(row["user_metadata"]),
        is_shared=bool(row["is_shared"]), shared_with=json.loads(row["shared_with"]),
        evidence=json.loads(row["evidence"]), updated_at=row["updated_at"])


class SQLiteStore:
    """The SQLite implementation of the durable store. Open with :meth:`open`."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._lock = threading.Lock()

    # --- opening -------------------------------------------------------------------------
    @classmethod
    async def open(cls, path: Path, *, max_version: int = SCHEMA_VERSION) -> SQLiteStore:
        """Open (creating 0600 if missing) and migrate. Raises StoreError for a corrupt file, or
        one that cannot be created or opened (a read-only file system, no permission)."""
        try:
            return await anyio.to_thread.run_sync(cls._open_sync, Path(path), max_version)
        except OSError as exc:
            raise StoreError(f"the store {path} cannot be opened: {exc.strerror or exc}; make its folder "
                             "writable or point HIVEBUS_STORE elsewhere") from None

    @classmethod
    def _open_sync(cls, path: Path, max_version: int) -> SQLiteStore:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(path, 0o600)
        deadline = time.monotonic() + 30
        while True:
            try:
                store = cls._connect(path, max_version)
                break
            except sqlite3.OperationalError as exc:
                # another process is creating or migrating the same file: wait for it
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise StoreError(f"{path} cannot be opened ({exc})") from None
                time.sleep(0.05)
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"{path} is not a usable hivebus store ({exc}); move it aside or "
                                 "point HIVEBUS_STORE elsewhere") from None
        for suffix in ("-wal", "-shm"):
            side = Path(f"{path}{suffix}")
            if side.exists():
                os.chmod(side, 0o600)
        return store

    @classmethod
    def _connect(cls, path: Path, max_version: int) -> SQLiteStore:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            store = cls(path, conn)
            store._migrate(max_version)
        except BaseException:
            conn.close()
            raise
        return store

    def _migrate(self, max_version: int) -> None:
        """Apply the missing migrations, one IMMEDIATE transaction each (safe when several
        processes open the same file at once: the version is re-read under the write lock)."""
        conn = self._conn
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        while True:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                current = int(row["value"]) if row else 0
                if current > SCHEMA_VERSION:
                    raise StoreError(f"{self.path} has schema version {current}, newer than this "
                                     f"hivebus ({SCHEMA_VERSION}); upgrade hivebus")
                if current >= max_version:
                    conn.execute("COMMIT")
                    return
                script = MIGRATIONS[current].replace("CREATE TABLE meta", "CREATE TABLE IF NOT EXISTS meta")
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(current + 1),))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    async def schema_version(self) -> int:
        """The schema version of the open file."""
        row = await self.read(lambda c: c.execute(
            "SELECT value FROM meta WHERE key='schema_version'").fetchone())
        return int(row["value"])

    async def close(self) -> None:
        """Close the file."""
        await anyio.to_thread.run_sync(self._conn.close)

    # --- plumbing ----------------------------------------------------------------------------
    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` in the store's worker thread (for reads)."""
        def run() -> T:
            with self._lock:
                try:
                    return fn(self._conn)
                except sqlite3.DatabaseError as exc:
                    raise StoreError(f"store {self.path}: {exc}") from None
        return await anyio.to_thread.run_sync(run)

    async def write(self, fn: Callable[[sqlite3.Connection], T], epoch: int | None) -> T:
        """Run ``fn`` in one IMMEDIATE transaction, after checking the fencing epoch."""
        def run() -> T:
            with self._lock:
                conn = self._conn
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        if epoch is not None:
                            self._fence(conn, epoch)
                        result = fn(conn)
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                    conn.execute("COMMIT")
                    return result
                except sqlite3.DatabaseError as exc:
                    raise StoreError(f"store {self.path}: {exc}") from None
        return await anyio.to_thread.run_sync(run)

    async def highest_epoch(self) -> int:
        """The highest fencing epoch a write has carried (0 before any): a new leader's epoch
        must be above it, even when Redis (and its epoch counter) started over."""
        def run(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT value FROM meta WHERE key='fence_epoch'").fetchone()
            return int(row["value"]) if row and str(row["value"]).isdigit() else 0
        return await self.read(run)

    @staticmethod
    def _fence(conn: sqlite3.Connection, epoch: int) -> None:
        row = conn.execute("SELECT value FROM meta WHERE key='fence_epoch'").fetchone()
        highest = int(row["value"]) if row else 0
        if epoch < highest:
            raise NotLeader(f"write refused: fencing epoch {epoch} is older than {highest} "
                            "(another coordinator leads now)")
        if epoch > highest:
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('fence_epoch', ?)", (str(epoch),))

    # --- learning ------------------------------------------------------------------------------
    async def credit(
        self, batch: Sequence[tuple[DecisionRecord, Sequence[Credit]]], epoch: int | None
    ) -> int:
        """Count each decision's outcome towards its credits, once; return how many were new.

        One transaction for the whole batch: a crash counts all of it or none of it, and a
        decision counted before (table ``credited``) is skipped, so a batch may be retried.
        """
        return await self.write(lambda conn: _credit(conn, batch), epoch)

    async def record_late_outcome(self, decision: DecisionRecord, credits: Sequence[Credit],
                                  epoch: int | None) -> bool:
        """Attach an outcome to an archived decision that has none and count it, in one
        transaction; False (nothing changed) when the decision is not archived or has one.
        Raises InvalidInput for a decision without an outcome."""
        if decision.outcome is None:
            raise InvalidInput(f"decision {decision.decision_id} has no outcome to record")
        success = int(decision.outcome.success)

        def run(conn: sqlite3.Connection) -> bool:
            changed = conn.execute(
                "UPDATE decisions SET record=?, success=? WHERE decision_id=? AND success IS NULL",
                (decision.model_dump_json(), success, decision.decision_id)).rowcount
            if changed:
                _credit(conn, [(decision, credits)])
            return bool(changed)

        return await self.write(run, epoch)

    async def stats(self) -> list[dict[str, Any]]:
        """Learning counts of every candidate pattern, promoted or not."""
        rows = await self.read(lambda c: c.execute(
            "SELECT pattern_id, agent_id, decision_type, kind, samples, successes FROM pattern_stats "
            "ORDER BY pattern_id").fetchall())
        return [dict(r) for r in rows]

    async def promote(self, thresholds: Thresholds, share_with: list[str], epoch: int | None) -> PassReport:
        """Promote, update (new version) or demote every pattern whose counts changed."""
        now = time.time()

        def run(conn: sqlite3.Connection) -> PassReport:
            report = PassReport()
            for stats in conn.execute("SELECT * FROM pattern_stats WHERE dirty=1").fetchall():
                pid = stats["pattern_id"]
                current = conn.execute("SELECT * FROM patterns WHERE pattern_id=?", (pid,)).fetchone()
                qualifies = thresholds.qualifies(stats["successes"], stats["samples"])
                if current is None and not qualifies:
                    conn.execute("UPDATE pattern_stats SET dirty=0 WHERE pattern_id=?", (pid,))
                    continue
                samples, successes = stats["samples"], stats["successes"]
                pattern = MemoryPattern(
                    pattern_id=pid, agent_id=stats["agent_id"],
                    version=(current["version"] + 1) if current else 1, active=qualifies,
                    confidence=wilson_lower_bound(successes, samples, thresholds.z),
                    success_rate=successes / samples, sample_size=samples, successes=successes,
                    data={**json.loads(stats["data"]), "decision_type": stats["decision_type"],
                          "kind": stats["kind"]},
                    user_metadata=json.loads(current["user_metadata"]) if current else {},
                    is_shared=bool(share_with), shared_with=list(share_with),
                    evidence=json.loads(stats["evidence"]), updated_at=now)
                if current is None:
                    reason = "promoted"
                    report.promoted.append(pid)
                elif not qualifies and current["active"]:
                    reason = "demoted"
                    report.demoted.append(pid)
                else:
                    reason = "updated" if qualifies else "updated while inactive"
                    if qualifies and not current["active"]:
                        reason = "promoted again"
                        report.promoted.append(pid)
                    else:
                        report.updated.append(pid)
                self._put_pattern(conn, pattern, reason)
                conn.execute("UPDATE pattern_stats SET dirty=0 WHERE pattern_id=?", (pid,))
            return report

        return await self.write(run, epoch)

    @staticmethod
    def _put_pattern(conn: sqlite3.Connection, p: MemoryPattern, reason: str) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO patterns VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (p.pattern_id, p.agent_id, p.memory_type, p.version, int(p.active), p.confidence,
             p.success_rate, p.sample_size, p.successes, json.dumps(p.data),
             json.dumps(p.user_metadata), int(p.is_shared), json.dumps(p.shared_with),
             json.dumps(p.evidence), p.updated_at))
        conn.execute("INSERT INTO pattern_versions VALUES (?,?,?,?,?)",
                     (p.pattern_id, p.version, p.model_dump_json(), reason, p.updated_at))

    # --- patterns: read API ----------------------------------------------------------------------
    async def query_patterns(
        self, *, viewer: str | None, memory_type: str | None = None, min_confidence: float = 0.0,
        agent: str | None = None, shared: bool | None = None, include_inactive: bool = False,
    ) -> list[MemoryPattern]:
        """Patterns ``viewer`` may see (its own and those shared with it), best first."""
        rows = await self.read(lambda c: c.execute(
            "SELECT * FROM patterns WHERE confidence >= ? ORDER BY confidence DESC, pattern_id",
            (min_confidence,)).fetchall())
        found = []
        for pattern in map(_pattern_from_row, rows):
            if not pattern.visible_to(viewer) or (not include_inactive and not pattern.active):
                continue
            if memory_type and pattern.memory_type != memory_type:
                continue
            if agent and pattern.agent_id != agent:
                continue
            if shared is not None and pattern.is_shared != shared:
                continue
            found.append(pattern)
        return found

    async def get_pattern(self, pattern_id: str, *, viewer: str | None) -> MemoryPattern:
        """One pattern. Raises NotFound when it does not exist or ``viewer`` may not see it."""
        row = await self.read(lambda c: c.execute(
            "SELECT * FROM patterns WHERE pattern_id=?", (pattern_id,)).fetchone())
        if row is None or not _pattern_from_row(row).visible_to(viewer):
            raise NotFound(f"no pattern {pattern_id!r}")
        return _pattern_from_row(row)

    async def pattern_history(self, pattern_id: str, *, viewer: str | None) -> list[dict[str, Any]]:
        """Every version of a pattern, oldest first: {version, reason, created_at, pattern}."""
        await self.get_pattern(pattern_id, viewer=viewer)
        rows = await self.read(lambda c: c.execute(
            "SELECT * FROM pattern_versions WHERE pattern_id=? ORDER BY version",
            (pattern_id,)).fetchall())
        return [{"version": r["version"], "reason": r["reason"], "created_at": r["created_at"],
                 "pattern": json.loads(r["snapshot"])} for r in rows]

    async def rollback_pattern(
        self, pattern_id: str, version: int, epoch: int | None = None
    ) -> MemoryPattern:
        """Restore version ``version`` as a new version, recording the rollback. Raises NotFound."""
        now = time.time()

        def run(conn: sqlite3.Connection) -> MemoryPattern:
            current = conn.execute("SELECT version FROM patterns WHERE pattern_id=?",
                                   (pattern_id,)).fetchone()
            old = conn.execute("SELECT snapshot FROM pattern_versions WHERE pattern_id=? AND version=?",
                               (pattern_id, version)).fetchone()
            if current is None or old is None:
                raise NotFound(f"pattern {pattern_id!r} has no version {version}")
            restored = MemoryPattern.model_validate_json(old["snapshot"]).model_copy(
                update={"version": current["version"] + 1, "updated_at": now})
            self._put_pattern(conn, restored, f"rollback to version {version}")
            return restored

        return await self.write(run, epoch)

    # --- archived decisions ----------------------------------------------------------------------
    async def archive(self, records: Sequence[tuple[DecisionRecord, list[str]]], epoch: int | None) -> int:
        """Keep decisions (with the signals they caused); a decision archived twice is kept once."""
        def run(conn: sqlite3.Connection) -> int:
            added = 0
            for record, caused in records:
                success = None if record.outcome is None else int(record.outcome.success)
                added += conn.execute(
                    "INSERT OR IGNORE INTO decisions VALUES (?,?,?,?,?,?,?)",
                    (record.decision_id, record.agent_id, record.decision_type, record.timestamp,
                     success, record.model_dump_json(), json.dumps(caused))).rowcount
            return added

        return await self.write(run, epoch)

    async def archived(
        self, agent_id: str, *, since: float | None = None, until: float | None = None,
        decision_type: str | None = None, success: bool | None = None, limit: int = 100,
    ) -> list[DecisionRecord]:
        """Archived decisions of an agent, newest first."""
        sql = "SELECT record FROM decisions WHERE agent_id=? AND timestamp BETWEEN ? AND ?"
        args: list[Any] = [agent_id, since if since is not None else float("-inf"),
                           until if until is not None else float("inf")]
        if decision_type:
            sql += " AND decision_type=?"
            args.append(decision_type)
        if success is not None:
            sql += " AND success=?"
            args.append(int(success))
        sql += " ORDER BY timestamp DESC LIMIT ?"
        args.append(limit)
        rows = await self.read(lambda c: c.execute(sql, args).fetchall())
        return [DecisionRecord.model_validate_json(r["record"]) for r in rows]

    async def archived_decision(self, decision_id: str) -> tuple[DecisionRecord, list[str]] | None:
        """One archived decision and the signals it caused, or None."""
        row = await self.read(lambda c: c.execute(
            "SELECT record, caused FROM decisions WHERE decision_id=?", (decision_id,)).fetchone())
        if row is None:
            return None
        return DecisionRecord.model_validate_json(row["record"]), json.loads(row["caused"])

    async def count_archived(self) -> int:
        """How many decisions the archive holds."""
        row = await self.read(lambda c: c.execute("SELECT COUNT(*) AS n FROM decisions").fetchone())
        return int(row["n"])


def _credit(conn: sqlite3.Connection, batch: Sequence[tuple[DecisionRecord, Sequence[Credit]]]) -> int:
    """Count each decision's outcome towards its credits unless counted before (``credited``)."""
    counted = 0
    now = time.time()
    for decision, credits in batch:
        if decision.outcome is None:
            continue  # nothing to count (the learning pass only sends decisions with one)
        success = 1 if decision.outcome.success else 0
        if not conn.execute("INSERT OR IGNORE INTO credited VALUES (?, ?)",
                            (decision.decision_id, now)).rowcount:
            continue
        counted += 1
        for credit in credits:
            row = conn.execute("SELECT evidence FROM pattern_stats WHERE pattern_id=?",
                               (credit.pattern_id,)).fetchone()
            evidence = (json.loads(row["evidence"]) if row else [])[-(EVIDENCE_KEPT - 1):]
            evidence.append(decision.decision_id)
            conn.execute(
                """INSERT INTO pattern_stats VALUES (?, ?, ?, ?, 1, ?, ?, ?, 1)
                   ON CONFLICT (pattern_id) DO UPDATE SET samples = samples + 1,
                   successes = successes + excluded.successes,
                   evidence = excluded.evidence, dirty = 1""",
                (credit.pattern_id, credit.agent_id, credit.decision_type, credit.kind,
                 success, json.dumps(evidence), json.dumps(credit.data)))
    return counted
