"""The durable store: promoted patterns, archived decisions, procedures and concepts; all of its
SQL lives here. SQLite by default (a file), PostgreSQL when ``HIVEBUS_STORE`` is a
``postgresql://`` URL (several hosts). :func:`open_store` picks the engine from the settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hivebus.settings import Settings
    from hivebus.store.sql import SQLStore


def is_postgres(settings: Settings) -> bool:
    """Whether the settings name a PostgreSQL store (``HIVEBUS_STORE=postgresql://…``)."""
    from hivebus.store.postgres import is_postgres_url

    return is_postgres_url(settings.store)


def store_label(settings: Settings) -> str:
    """Where the store is, as shown to people: a file's path, or a URL without its password."""
    from hivebus.settings import redact_url

    return redact_url(str(settings.store)) if is_postgres(settings) else str(settings.store_path)


def store_exists(settings: Settings) -> bool:
    """Whether there is a store to read: a PostgreSQL database always is (it is created on
    first open if empty); a SQLite file once the coordinator has created it."""
    return is_postgres(settings) or settings.store_path.exists()


async def open_store(settings: Settings) -> SQLStore:
    """Open (creating and migrating if needed) the store the settings name."""
    if is_postgres(settings):
        from hivebus.store.postgres import PostgresStore

        return await PostgresStore.open(str(settings.store))
    from hivebus.store.sqlite import SQLiteStore

    return await SQLiteStore.open(settings.store_path)
