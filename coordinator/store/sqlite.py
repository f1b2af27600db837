"""The embedded durable store: one SQLite file.

:class:`SQLiteStore` is the default store: one file (``HIVEBUS_STORE``, default
``.hivebus/ltm.sqlite3``) in WAL mode, created 0600, with a schema version and forward
migrations applied on open. Every call runs in a worker thread, so the event loop never
blocks; ``BEGIN IMMEDIATE`` serializes writers, across processes too. The SQL itself, and the
fencing of the coordinator's writes, are :class:`~hivebus.store.sql.SQLStore`'s.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio

from hivebus.domain.errors import StoreError
from hivebus.store.sql import SCHEMA_VERSION, Connection, SQLStore, statements, upsert

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

T = TypeVar("T")


class SQLiteStore(SQLStore):
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
                for statement in statements(current, real="REAL", text="TEXT"):
                    conn.execute(statement.replace("CREATE TABLE meta", "CREATE TABLE IF NOT EXISTS meta"))
                conn.execute(upsert("meta", ("key", "value"), ("key",)), ("schema_version", str(current + 1)))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    @property
    def label(self) -> str:
        """The file's path."""
        return str(self.path)

    async def close(self) -> None:
        """Close the file."""
        await anyio.to_thread.run_sync(self._conn.close)

    # --- plumbing ----------------------------------------------------------------------------
    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)`` in the store's worker thread (for reads)."""
        def run() -> T:
            with self._lock:
                try:
                    return fn(self._conn)
                except sqlite3.DatabaseError as exc:
                    raise StoreError(f"store {self.path}: {exc}") from None
        return await anyio.to_thread.run_sync(run)

    async def write(self, fn: Callable[[Connection], T], epoch: int | None) -> T:
        """Run ``fn`` in one IMMEDIATE transaction, after checking the fencing epoch."""
        def run() -> T:
            with self._lock:
                conn = self._conn
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        if epoch is not None:
                            self.fence(conn, epoch)
                        result = fn(conn)
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                    conn.execute("COMMIT")
                    return result
                except sqlite3.DatabaseError as exc:
                    raise StoreError(f"store {self.path}: {exc}") from None
        return await anyio.to_thread.run_sync(run)
