"""Settings, built once at the process edge from environment variables.

Library code never reads ``os.environ``; it takes a :class:`Settings`. Each field is read from
``HIVEBUS_<FIELD>`` (``redis_url`` also from ``REDIS_URL``); :func:`load_settings` reads the
environment, :class:`Settings` itself only checks what it is given. A plain frozen dataclass
with its rules in the fields' metadata, rather than a pydantic-settings model: every CLI command
builds one, and pydantic-settings alone cost ~100 ms of start-up (issue 13).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit, urlunsplit

from hivebus.domain.errors import ConfigError

ENV_PREFIX = "HIVEBUS_"
ALIASES = {"redis_url": ("HIVEBUS_REDIS_URL", "REDIS_URL")}  # the first one set wins
TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


def setting(default: Any, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, pattern: str | None = None) -> Any:
    """A field with bounds (``ge``/``gt``/``le``) or a ``pattern`` its value must match."""
    rules = {name: value for name, value in (("ge", ge), ("gt", gt), ("le", le), ("pattern", pattern))
             if value is not None}
    return field(default=default, metadata=rules)


LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]
RedisClusterMode = Literal["auto", "yes", "no"]  # auto: ask the server (INFO cluster)
CHOICES: dict[str, Any] = {"LogFormat": LogFormat, "LogLevel": LogLevel, "RedisClusterMode": RedisClusterMode}


@dataclass(frozen=True)
class Settings:
    """All tunables of a hivebus process. Frozen: ``dataclasses.replace`` builds a changed copy
    (and checks it again). A bad value raises :class:`ConfigError` naming its variable."""

    redis_url: str | None = None
    redis_tls_ca_file: Path | None = None
    redis_tls_cert_file: Path | None = None
    redis_tls_key_file: Path | None = None
    redis_cluster: RedisClusterMode = "auto"
    namespace: str = setting("hive", pattern=r"[a-z][a-z0-9_-]{0,31}")
    home: Path = Path(".hivebus")
    log_format: LogFormat = "auto"
    log_level: LogLevel = "info"
    signal_ttl_s: int = setting(24 * 3600, ge=1, le=30 * 24 * 3600)
    signal_grace_s: int = setting(3600, ge=0)
    max_payload_bytes: int = setting(64 * 1024, ge=256)
    inbox_max: int = setting(100_000, ge=1)
    publish_replicas: int = setting(0, ge=0, le=16)
    publish_wait_ms: int = setting(1000, ge=1, le=60_000)
    inbox_retain: int = setting(100_000, ge=100)
    allow_eviction: bool = False
    log_stream_maxlen: int = setting(100_000, ge=100)
    heartbeat_ttl_s: float = setting(6.0, gt=0.5)
    coordinator_tick_s: float = setting(1.0, gt=0.05)
    read_batch: int = setting(128, ge=1, le=10_000)
    read_block_ms: int = setting(2000, ge=10, le=10_000)
    max_deliveries: int = setting(5, ge=1, le=100)
    retry_base_s: float = setting(0.5, gt=0)
    retry_max_s: float = setting(60.0, gt=0)
    claim_idle_s: float = setting(15.0, gt=0.1)
    stall_limit_s: float = setting(300.0, gt=0)
    state_history: int = setting(20, ge=1, le=10_000)
    stm_window_s: int = setting(24 * 3600, ge=1)
    stm_ttl_s: int = setting(24 * 3600, ge=1)
    recall_half_life_s: float = setting(3600.0, gt=0)
    confidence_cap: float = setting(0.2, ge=0, le=1)
    events_maxlen: int = setting(10_000, ge=100)
    store: str | None = None
    promote_min_samples: int = setting(20, ge=1)
    promote_min_confidence: float = setting(0.55, ge=0, le=1)
    wilson_z: float = setting(1.96, gt=0)
    pattern_share_with: str = ""
    lease_ttl_s: float = setting(5.0, gt=0.5)
    consolidate_interval_s: float = setting(5.0, gt=0)
    dead_agent_grace_s: float = setting(24 * 3600, ge=0)
    stm_cleanup_min_score: float = setting(0.0, ge=0)

    def __post_init__(self) -> None:
        problems = []
        for spec in dataclasses.fields(self):
            try:
                value = _checked(spec, getattr(self, spec.name))
            except ValueError as exc:
                problems.append(f"{ENV_PREFIX}{spec.name.upper()}: {exc}")
                continue
            object.__setattr__(self, spec.name, value)
        if problems:
            raise ConfigError(f"bad configuration: {'; '.join(problems)}")

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


def _checked(spec: dataclasses.Field[Any], value: Any) -> Any:
    """``value`` as the field's type (a string from the environment is parsed), within its
    rules; ValueError says what is wrong in a few words."""
    kind = str(spec.type)
    optional = kind.endswith(" | None")
    kind = kind.removesuffix(" | None")
    if value is None or (optional and value == ""):
        if optional:
            return None
        raise ValueError("must be set")
    if kind in CHOICES:
        choices = get_args(CHOICES[kind])
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)} (got {value!r})")
        return value
    parsed = _parse(kind, value)
    rules = spec.metadata
    if "pattern" in rules and not re.fullmatch(rules["pattern"], parsed):
        raise ValueError(f"must match {rules['pattern']} (got {parsed!r})")
    for rule, holds, word in (("ge", float.__ge__, "≥"), ("gt", float.__gt__, ">"),
                              ("le", float.__le__, "≤")):
        if rule in rules and not holds(float(parsed), float(rules[rule])):
            raise ValueError(f"must be {word} {rules[rule]} (got {parsed})")
    return parsed


def _parse(kind: str, value: Any) -> Any:
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError(f"must be text (got {type(value).__name__})")
        return value
    if kind == "Path":
        if not isinstance(value, (str, os.PathLike)):
            raise ValueError(f"must be a path (got {type(value).__name__})")
        return Path(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in TRUE | FALSE:
            return value.strip().lower() in TRUE
        raise ValueError(f"must be true or false (got {value!r})")
    if isinstance(value, bool):
        raise ValueError(f"must be a number (got {value})")
    try:
        number = int(value) if kind == "int" and not isinstance(value, float) else float(value)
    except (TypeError, ValueError):
        raise ValueError(f"must be {'an integer' if kind == 'int' else 'a number'} (got {value!r})") from None
    if kind == "int" and isinstance(value, float):
        raise ValueError(f"must be an integer (got {value!r})")
    if not math.isfinite(number):
        raise ValueError(f"must be finite (got {value!r})")
    return number


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment (``HIVEBUS_*``) plus explicit overrides.

    Raises ConfigError with one line naming every bad variable, or an unknown override."""
    names = {spec.name for spec in dataclasses.fields(Settings)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"bad configuration: unknown setting {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name in names:
        for variable in ALIASES.get(name, (f"{ENV_PREFIX}{name.upper()}",)):
            if variable in os.environ:
                values[name] = os.environ[variable]
                break
    return Settings(**{**values, **overrides})


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
