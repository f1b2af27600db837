"""The durable store's SQL, written once for SQLite and PostgreSQL.

:class:`SQLStore` implements the :class:`~hivebus.store.base.Store` protocol on a DB-API
connection; :mod:`hivebus.store.sqlite` and :mod:`hivebus.store.postgres` supply ``read``,
``write`` (one serialized transaction, fenced) and the connection. The SQL stays in the subset
both engines read the same way:

- ``?`` placeholders (the PostgreSQL connection turns them into ``%s``);
- upserts as ``INSERT … ON CONFLICT (key) DO NOTHING | DO UPDATE SET col = excluded.col``
  (not SQLite's ``INSERT OR IGNORE/REPLACE``), the old row's columns qualified by the table's
  name (PostgreSQL finds a bare column ambiguous there);
- no parameter whose type only its value tells (``? IS NULL``): optional filters are added to
  the statement only when given;
- times as ``DOUBLE PRECISION`` (PostgreSQL's ``REAL`` is 4 bytes: 1763900000.123456 would
  read back as 1763900032.0) and text compared byte-wise (``COLLATE "C"``), as SQLite does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from hivebus.domain.decision import DecisionRecord
from hivebus.domain.errors import InvalidInput, NotFound, NotLeader
from hivebus.domain.learning import Credit, Thresholds, wilson_lower_bound
from hivebus.store.base import MemoryPattern, PassReport

T = TypeVar("T")
EVIDENCE_KEPT = 50

# Each migration's DDL, with {real} and {text} filled per engine (see module docstring).
MIGRATIONS: list[str] = [
    # 1: learning, patterns, archive
    """
    CREATE TABLE meta (key {text} PRIMARY KEY, value {text} NOT NULL);
    CREATE TABLE credited (decision_id {text} PRIMARY KEY, credited_at {real} NOT NULL);
    CREATE TABLE pattern_stats (
        pattern_id {text} PRIMARY KEY, agent_id {text} NOT NULL, decision_type {text} NOT NULL,
        kind {text} NOT NULL, samples INTEGER NOT NULL, successes INTEGER NOT NULL,
        evidence {text} NOT NULL, data {text} NOT NULL, dirty INTEGER NOT NULL DEFAULT 1);
    CREATE TABLE patterns (
        pattern_id {text} PRIMARY KEY, agent_id {text} NOT NULL, memory_type {text} NOT NULL,
        version INTEGER NOT NULL, active INTEGER NOT NULL, confidence {real} NOT NULL,
        success_rate {real} NOT NULL, sample_size INTEGER NOT NULL, successes INTEGER NOT NULL,
        data {text} NOT NULL, user_metadata {text} NOT NULL, is_shared INTEGER NOT NULL,
        shared_with {text} NOT NULL, evidence {text} NOT NULL, updated_at {real} NOT NULL);
    CREATE TABLE pattern_versions (
        pattern_id {text} NOT NULL, version INTEGER NOT NULL, snapshot {text} NOT NULL,
        reason {text} NOT NULL, created_at {real} NOT NULL, PRIMARY KEY (pattern_id, version));
    CREATE TABLE decisions (
        decision_id {text} PRIMARY KEY, agent_id {text} NOT NULL, decision_type {text} NOT NULL,
        timestamp {real} NOT NULL, success INTEGER, record {text} NOT NULL, caused {text} NOT NULL);
    CREATE INDEX decisions_by_agent ON decisions (agent_id, timestamp);
    """,
    # 2: procedural and semantic memory
    """
    CREATE TABLE procedures (
        procedure_id {text} PRIMARY KEY, name {text} NOT NULL, category {text} NOT NULL,
        version INTEGER NOT NULL, steps {text} NOT NULL, parameters {text} NOT NULL,
        successes INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0,
        total_duration_s {real} NOT NULL DEFAULT 0, last_run {real}, updated_at {real} NOT NULL);
    CREATE TABLE procedure_versions (
        procedure_id {text} NOT NULL, version INTEGER NOT NULL, steps {text} NOT NULL,
        parameters {text} NOT NULL, created_at {real} NOT NULL, PRIMARY KEY (procedure_id, version));
    CREATE TABLE procedure_outcomes (
        procedure_id {text} NOT NULL, at {real} NOT NULL, success INTEGER NOT NULL,
        duration_s {real} NOT NULL, detail {text} NOT NULL);
    CREATE TABLE concepts (
        name {text} PRIMARY KEY, category {text} NOT NULL, content {text} NOT NULL,
        updated_at {real} NOT NULL);
    CREATE TABLE concept_relations (
        source {text} NOT NULL, relation {text} NOT NULL, target {text} NOT NULL,
        PRIMARY KEY (source, relation, target));
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
PATTERN_COLUMNS = ("pattern_id", "agent_id", "memory_type", "version", "active", "confidence",
                   "success_rate", "sample_size", "successes", "data", "user_metadata", "is_shared",
                   "shared_with", "evidence", "updated_at")


def statements(migration: int, *, real: str, text: str) -> Iterator[str]:
    """The statements of migration ``migration`` (0-based) for an engine's type names."""
    script = MIGRATIONS[migration].format(real=real, text=text)
    return (s.strip() for s in script.split(";") if s.strip())


def upsert(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """``INSERT`` of every column that replaces the row with the same ``key``."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}")


class Cursor(Protocol):
    """What the store reads of a cursor (sqlite3's and psycopg's both have it)."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """A connection whose ``execute`` takes ``?`` placeholders and yields rows readable by
    column name (``sqlite3.Row``, or psycopg's ``dict_row``)."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Cursor: ...


def pattern_from_row(row: Mapping[str, Any]) -> MemoryPattern:
    """A pattern from its row in ``patterns``."""
    return MemoryPattern(
        pattern_id=row["pattern_id"], agent_id=row["agent_id"], memory_type=row["memory_type"],
        version=row["version"], active=bool(row["active"]), confidence=row["confidence"],
        success_rate=row["success_rate"], sample_size=row["sample_size"], successes=row["successes"],
        data=json.loads(row["data"]), user_metadata=json.loads(row["user_metadata"]),
        is_shared=bool(row["is_shared"]), shared_with=json.loads(row["shared_with"]),
        evidence=json.loads(row["evidence"]), updated_at=row["updated_at"])


class SQLStore:
    """The durable store's domain methods over SQL; an engine subclass supplies the rest."""

    @property
    def label(self) -> str:
        """Where the store is, as shown to people (a path, or a URL without its password)."""
        raise NotImplementedError

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)`` in the store's worker thread (for reads)."""
        raise NotImplementedError

    async def write(self, fn: Callable[[Connection], T], epoch: int | None) -> T:
        """Run ``fn`` in one transaction, serialized with every other write to the store, after
        checking the fencing epoch (None: a write not made for the coordinator)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close the connection."""
        raise NotImplementedError

    async def schema_version(self) -> int:
        """The schema version of the store."""
        row = await self.read(lambda c: c.execute(
            "SELECT value FROM meta WHERE key='schema_version'").fetchone())
        return int(row["value"])

    async def highest_epoch(self) -> int:
        """The highest fencing epoch a write has carried (0 before any): a new leader's epoch
        must be above it, even when Redis (and its epoch counter) started over."""
        def run(conn: Connection) -> int:
            row = conn.execute("SELECT value FROM meta WHERE key='fence_epoch'").fetchone()
            return int(row["value"]) if row and str(row["value"]).isdigit() else 0
        return await self.read(run)

    @staticmethod
    def fence(conn: Connection, epoch: int) -> None:
        """Refuse (NotLeader) a write whose epoch is older than the highest seen; record a newer
        one. Runs inside the write's serialized transaction."""
        row = conn.execute("SELECT value FROM meta WHERE key='fence_epoch'").fetchone()
        highest = int(row["value"]) if row else 0
        if epoch < highest:
            raise NotLeader(f"write refused: fencing epoch {epoch} is older than {highest} "
                            "(another coordinator leads now)")
        if epoch > highest:
            conn.execute(upsert("meta", ("key", "value"), ("key",)), ("fence_epoch", str(epoch)))

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

        def run(conn: Connection) -> bool:
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

        def run(conn: Connection) -> PassReport:
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
    def _put_pattern(conn: Connection, p: MemoryPattern, reason: str) -> None:
        conn.execute(
            upsert("patterns", PATTERN_COLUMNS, ("pattern_id",)),
            (p.pattern_id, p.agent_id, p.memory_type, p.version, int(p.active), p.confidence,
             p.success_rate, p.sample_size, p.successes, json.dumps(p.data),
             json.dumps(p.user_metadata), int(p.is_shared), json.dumps(p.shared_with),
             json.dumps(p.evidence), p.updated_at))
        conn.execute("INSERT INTO pattern_versions (pattern_id, version, snapshot, reason, created_at) "
                     "VALUES (?,?,?,?,?)",
                     (p.pattern_id, p.version, p.model_dump_json(), reason, p.updated_at))

    # --- patterns: read API ----------------------------------------------------------------------
    async def query_patterns(
        self, *, viewer: str | None, memory_type: str | None = None, min_confidence: float = 0.0,
        agent: str | None = None, shared: bool | None = None, include_inactive: bool = False,
    ) -> list[MemoryPattern]:
        """Patterns ``viewer`` may see (its own and those shared with it), best first."""
        rows = await self.read(lambda c: c.execute(
            "SELECT * FROM patterns WHERE confidence >= ? ORDER BY confidence DESC, pattern_id",
            (float(min_confidence),)).fetchall())
        found = []
        for pattern in map(pattern_from_row, rows):
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
        if row is None or not pattern_from_row(row).visible_to(viewer):
            raise NotFound(f"no pattern {pattern_id!r}")
        return pattern_from_row(row)

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

        def run(conn: Connection) -> MemoryPattern:
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
        def run(conn: Connection) -> int:
            added = 0
            for record, caused in records:
                success = None if record.outcome is None else int(record.outcome.success)
                added += conn.execute(
                    "INSERT INTO decisions (decision_id, agent_id, decision_type, timestamp, success, "
                    "record, caused) VALUES (?,?,?,?,?,?,?) ON CONFLICT (decision_id) DO NOTHING",
                    (record.decision_id, record.agent_id, record.decision_type, record.timestamp,
                     success, record.model_dump_json(), json.dumps(caused))).rowcount
            return added

        return await self.write(run, epoch)

    async def archived(
        self, agent_id: str, *, since: float | None = None, until: float | None = None,
        decision_type: str | None = None, success: bool | None = None, limit: int = 100,
    ) -> list[DecisionRecord]:
        """Archived decisions of an agent, newest first."""
        sql = "SELECT record FROM decisions WHERE agent_id=?"
        args: list[Any] = [agent_id]
        for condition, value in (("timestamp >= ?", since), ("timestamp <= ?", until),
                                 ("decision_type=?", decision_type or None),
                                 ("success=?", None if success is None else int(success))):
            if value is not None:
                sql += f" AND {condition}"
                args.append(value)
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


def _credit(conn: Connection, batch: Sequence[tuple[DecisionRecord, Sequence[Credit]]]) -> int:
    """Count each decision's outcome towards its credits unless counted before (``credited``)."""
    counted = 0
    now = time.time()
    for decision, credits in batch:
        if decision.outcome is None:
            continue  # nothing to count (the learning pass only sends decisions with one)
        success = 1 if decision.outcome.success else 0
        if not conn.execute("INSERT INTO credited (decision_id, credited_at) VALUES (?, ?) "
                            "ON CONFLICT (decision_id) DO NOTHING", (decision.decision_id, now)).rowcount:
            continue
        counted += 1
        for credit in credits:
            row = conn.execute("SELECT evidence FROM pattern_stats WHERE pattern_id=?",
                               (credit.pattern_id,)).fetchone()
            evidence = (json.loads(row["evidence"]) if row else [])[-(EVIDENCE_KEPT - 1):]
            evidence.append(decision.decision_id)
            conn.execute(
                """INSERT INTO pattern_stats (pattern_id, agent_id, decision_type, kind, samples,
                       successes, evidence, data, dirty) VALUES (?, ?, ?, ?, 1, ?, ?, ?, 1)
                   ON CONFLICT (pattern_id) DO UPDATE SET samples = pattern_stats.samples + 1,
                   successes = pattern_stats.successes + excluded.successes,
                   evidence = excluded.evidence, dirty = 1""",
                (credit.pattern_id, credit.agent_id, credit.decision_type, credit.kind,
                 success, json.dumps(evidence), json.dumps(credit.data)))
    return counted
