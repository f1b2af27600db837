"""The durable store on PostgreSQL, for coordinators and operators on several hosts.

``HIVEBUS_STORE=postgresql://user:password@host:5432/db`` selects it (psycopg 3, ``pip install
'hivebus[postgres]'``). One connection per store, used from a worker thread like SQLite's, so the
event loop never blocks; it reconnects on the next call after the server restarts. The SQL is
:class:`~hivebus.store.sql.SQLStore`'s.

Every write transaction first takes one transaction-level advisory lock
(``pg_advisory_xact_lock``): writes are serialized across hosts as SQLite's ``BEGIN
IMMEDIATE`` serializes them across processes, so the fencing check (the coordinator's epoch
against the highest one written) and the write it guards are one step for every host.
Migrations run under the same lock, one transaction each, re-reading the schema version once
they hold it. Reads take no lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from hivebus.domain.errors import ConfigError, StoreError
from hivebus.settings import redact_url
from hivebus.store.sql import SCHEMA_VERSION, Connection, Cursor, SQLStore, statements, upsert

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")
WRITE_LOCK = 0x68697665  # "hive": the advisory lock every write transaction holds
CONNECT_TIMEOUT_S = 10


def is_postgres_url(value: str | None) -> bool:
    """Whether ``HIVEBUS_STORE`` names a PostgreSQL database rather than a file."""
    return bool(value) and str(value).startswith(("postgresql://", "postgres://"))


class _QmarkConnection:
    """A psycopg connection that takes the store's ``?`` placeholders (its SQL has no ``?``
    or ``%`` inside literals: values always travel as parameters)."""

    def __init__(self, conn: psycopg.Connection[dict[str, Any]]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Cursor:
        return self._conn.execute(sql.replace("%", "%%").replace("?", "%s"), tuple(params))


class PostgresStore(SQLStore):
    """The PostgreSQL implementation of the durable store. Open with :meth:`open`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[dict[str, Any]] | None = None
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        """The database's URL, without its password."""
        return redact_url(self.url)

    @classmethod
    async def open(cls, url: str, *, max_version: int = SCHEMA_VERSION) -> PostgresStore:
        """Connect and migrate. Raises StoreError when the server cannot be reached or the schema
        is newer than this hivebus, ConfigError when psycopg is not installed."""
        store = cls(url)
        await anyio.to_thread.run_sync(store._migrate, max_version)
        return store

    # --- plumbing ----------------------------------------------------------------------------
    def _connection(self) -> psycopg.Connection[dict[str, Any]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                import psycopg
                from psycopg.rows import dict_row
            except ImportError:
                raise ConfigError("HIVEBUS_STORE is a PostgreSQL URL but psycopg is not installed: "
                                  "pip install 'hivebus[postgres]'") from None
            self._conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row,
                                         connect_timeout=CONNECT_TIMEOUT_S,
                                         application_name="hivebus")
        return self._conn

    def _run(self, fn: Callable[[psycopg.Connection[dict[str, Any]]], T]) -> T:
        import psycopg

        with self._lock:
            try:
                return fn(self._connection())
            except psycopg.Error as exc:
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise StoreError(f"store {self.label}: {detail.replace(self.url, self.label)}") from None

    def _transaction(self, conn: psycopg.Connection[dict[str, Any]], epoch: int | None,
                     fn: Callable[[Connection], T]) -> T:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            wrapped = _QmarkConnection(conn)
            if epoch is not None:
                self.fence(wrapped, epoch)
            return fn(wrapped)

    def _migrate(self, max_version: int) -> None:
        def step(conn: Connection) -> bool:
            conn.execute('CREATE TABLE IF NOT EXISTS meta (key TEXT COLLATE "C" PRIMARY KEY, '
                         'value TEXT COLLATE "C" NOT NULL)')
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            current = int(row["value"]) if row else 0
            if current > SCHEMA_VERSION:
                raise StoreError(f"{self.label} has schema version {current}, newer than this "
                                 f"hivebus ({SCHEMA_VERSION}); upgrade hivebus")
            if current >= max_version:
                return False
            for statement in statements(current, real="DOUBLE PRECISION", text='TEXT COLLATE "C"'):
                if not statement.startswith("CREATE TABLE meta"):
                    conn.execute(statement)
            conn.execute(upsert("meta", ("key", "value"), ("key",)), ("schema_version", str(current + 1)))
            return True

        while self._run(lambda conn: self._transaction(conn, None, step)):
            pass

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)`` in the store's worker thread (for reads)."""
        return await anyio.to_thread.run_sync(self._run, lambda conn: fn(_QmarkConnection(conn)))

    async def write(self, fn: Callable[[Connection], T], epoch: int | None) -> T:
        """Run ``fn`` in one transaction holding the write lock, after checking the fencing epoch."""
        return await anyio.to_thread.run_sync(self._run, lambda conn: self._transaction(conn, epoch, fn))

    async def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            await anyio.to_thread.run_sync(self._conn.close)
