"""Settings, built once at the process edge from environment variables.

Library code never reads ``os.environ``; it takes a :class:`Settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from hivebus.domain.errors import ConfigError


class Settings(BaseSettings):
    """All tunables of a hivebus process. Frozen: build a new one to change it."""

    model_config = SettingsConfigDict(env_prefix="HIVEBUS_", frozen=True, extra="ignore")

    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("HIVEBUS_REDIS_URL", "REDIS_URL")
    )
    redis_tls_ca_file: Path | None = None
    redis_tls_cert_file: Path | None = None
    redis_tls_key_file: Path | None = None
    namespace: str = Field(default="hive", pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    home: Path = Path(".hivebus")
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    signal_ttl_s: int = Field(default=24 * 3600, ge=1, le=30 * 24 * 3600)
    signal_grace_s: int = Field(default=3600, ge=0)
    max_payload_bytes: int = Field(default=64 * 1024, ge=256)
    inbox_max: int = Field(default=100_000, ge=1)
    inbox_retain: int = Field(default=100_000, ge=100)
    allow_eviction: bool = False
    log_stream_maxlen: int = Field(default=100_000, ge=100)
    heartbeat_ttl_s: float = Field(default=6.0, gt=0.5)
    coordinator_tick_s: float = Field(default=1.0, gt=0.05)
    read_batch: int = Field(default=128, ge=1, le=10_000)
    read_block_ms: int = Field(default=2000, ge=10, le=10_000)
    max_deliveries: int = Field(default=5, ge=1, le=100)
    retry_base_s: float = Field(default=0.5, gt=0)
    retry_max_s: float = Field(default=60.0, gt=0)
    claim_idle_s: float = Field(default=15.0, gt=0.1)
    stall_limit_s: float = Field(default=300.0, gt=0)
    state_history: int = Field(default=20, ge=1, le=10_000)
    stm_window_s: int = Field(default=24 * 3600, ge=1)
    stm_ttl_s: int = Field(default=24 * 3600, ge=1)
    recall_half_life_s: float = Field(default=3600.0, gt=0)
    confidence_cap: float = Field(default=0.2, ge=0, le=1)
    events_maxlen: int = Field(default=10_000, ge=100)
    store: str | None = None
    promote_min_samples: int = Field(default=20, ge=1)
    promote_min_confidence: float = Field(default=0.55, ge=0, le=1)
    wilson_z: float = Field(default=1.96, gt=0)
    pattern_share_with: str = ""
    lease_ttl_s: float = Field(default=5.0, gt=0.5)
    consolidate_interval_s: float = Field(default=5.0, gt=0)
    dead_agent_grace_s: float = Field(default=24 * 3600, ge=0)
    stm_cleanup_min_score: float = Field(default=0.0, ge=0)

    @property
    def store_path(self) -> Path:
        """Where the SQLite store lives: HIVEBUS_STORE, else <home>/ltm.sqlite3."""
        return Path(self.store) if self.store else self.home / "ltm.sqlite3"

    @property
    def ledger_ttl_ms(self) -> int:
        """How long an agent remembers a settled signal id (``done``): longer than any redelivery."""
        return int((self.signal_ttl_s + self.signal_grace_s) * 1000) + 3_600_000

    @property
    def heartbeat_interval_s(self) -> float:
        """How often an agent refreshes its heartbeat: a third of the TTL."""
        return self.heartbeat_ttl_s / 3

    def tls_options(self) -> dict[str, str]:
        """redis-py keyword arguments for a ``rediss://`` URL: CA and client certificate files."""
        options = {"ssl_ca_certs": self.redis_tls_ca_file, "ssl_certfile": self.redis_tls_cert_file,
                   "ssl_keyfile": self.redis_tls_key_file}
        return {name: str(path) for name, path in options.items() if path is not None}


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment plus explicit overrides.

    Raises ConfigError with one line per bad variable.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"HIVEBUS_{'_'.join(str(p) for p in e['loc']).upper() or 'SETTINGS'}: {e['msg']}"
            for e in exc.errors()
        )
        raise ConfigError(f"bad configuration: {problems}") from None


def redact_url(url: str) -> str:
    """Return ``url`` with its password (if any) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{user}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
