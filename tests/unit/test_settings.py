"""Settings from the environment: names, types, bounds, aliases, and one-line errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hivebus.domain.errors import ConfigError
from hivebus.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("HIVEBUS_") or name == "REDIS_URL":
            monkeypatch.delenv(name)


def test_defaults_without_any_variable() -> None:
    settings = load_settings()
    assert settings == Settings()
    assert (settings.namespace, settings.redis_url, settings.home) == ("hive", None, Path(".hivebus"))
    assert (settings.inbox_max, settings.heartbeat_ttl_s, settings.allow_eviction) == (100_000, 6.0, False)


def test_variables_are_parsed_to_each_fields_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIVEBUS_INBOX_MAX", "250")
    monkeypatch.setenv("HIVEBUS_CLAIM_IDLE_S", "2.5")
    monkeypatch.setenv("HIVEBUS_HOME", "/tmp/hb-home")
    monkeypatch.setenv("HIVEBUS_LOG_FORMAT", "json")
    monkeypatch.setenv("HIVEBUS_REDIS_TLS_CA_FILE", "/etc/ca.pem")
    settings = load_settings()
    assert settings.inbox_max == 250 and isinstance(settings.inbox_max, int)
    assert settings.claim_idle_s == 2.5
    assert settings.home == Path("/tmp/hb-home")
    assert settings.log_format == "json"
    assert settings.tls_options() == {"ssl_ca_certs": "/etc/ca.pem"}


@pytest.mark.parametrize(("text", "value"), [("1", True), ("true", True), ("YES", True), ("on", True),
                                             ("0", False), ("False", False), ("no", False), ("off", False)])
def test_booleans_read_the_usual_words(monkeypatch: pytest.MonkeyPatch, text: str, value: bool) -> None:
    monkeypatch.setenv("HIVEBUS_ALLOW_EVICTION", text)
    assert load_settings().allow_eviction is value


def test_redis_url_also_comes_from_redis_url_and_hivebus_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://a:1/0")
    assert load_settings().redis_url == "redis://a:1/0"
    monkeypatch.setenv("HIVEBUS_REDIS_URL", "redis://b:2/0")
    assert load_settings().redis_url == "redis://b:2/0"


def test_empty_optional_variable_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIVEBUS_STORE", "")
    monkeypatch.setenv("HIVEBUS_HOME", "/h")
    settings = load_settings()
    assert settings.store is None
    assert settings.store_path == Path("/h/ltm.sqlite3")


def test_overrides_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIVEBUS_NAMESPACE", "fromenv")
    assert load_settings(namespace="given").namespace == "given"
    assert load_settings().namespace == "fromenv"


@pytest.mark.parametrize(("variable", "text", "says"), [
    ("HIVEBUS_NAMESPACE", "BAD NS", "must match"),
    ("HIVEBUS_SIGNAL_TTL_S", "0", "must be ≥ 1"),
    ("HIVEBUS_SIGNAL_TTL_S", "2592001", "must be ≤ 2592000"),
    ("HIVEBUS_HEARTBEAT_TTL_S", "0.5", "must be > 0.5"),
    ("HIVEBUS_INBOX_MAX", "12.5", "must be an integer"),
    ("HIVEBUS_INBOX_MAX", "lots", "must be an integer"),
    ("HIVEBUS_RETRY_BASE_S", "nan", "must be finite"),
    ("HIVEBUS_CONFIDENCE_CAP", "inf", "must be finite"),
    ("HIVEBUS_ALLOW_EVICTION", "maybe", "must be true or false"),
    ("HIVEBUS_LOG_LEVEL", "loud", "must be one of debug, info, warning, error"),
])
def test_a_bad_variable_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch, variable: str, text: str,
                                              says: str) -> None:
    monkeypatch.setenv(variable, text)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert f"{variable}: {says}" in message
    assert "\n" not in message


def test_every_bad_variable_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIVEBUS_READ_BATCH", "0")
    monkeypatch.setenv("HIVEBUS_MAX_DELIVERIES", "101")
    with pytest.raises(ConfigError, match=r"HIVEBUS_READ_BATCH: .*; HIVEBUS_MAX_DELIVERIES: "):
        load_settings()


def test_values_given_in_code_are_checked_too() -> None:
    with pytest.raises(ConfigError, match="HIVEBUS_READ_BATCH: must be a number"):
        Settings(read_batch=True)
    with pytest.raises(ConfigError, match="HIVEBUS_NAMESPACE: must be text"):
        Settings(namespace=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown setting namspace"):
        load_settings(namspace="x")
    assert Settings(home="/tmp/x").home == Path("/tmp/x")  # type: ignore[arg-type]


def test_a_changed_copy_is_checked_again_and_the_original_is_frozen() -> None:
    settings = Settings()
    assert dataclasses.replace(settings, claim_idle_s=0.2).claim_idle_s == 0.2
    with pytest.raises(ConfigError, match=r"HIVEBUS_CLAIM_IDLE_S: must be > 0\.1"):
        dataclasses.replace(settings, claim_idle_s=0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.namespace = "other"  # type: ignore[misc]
