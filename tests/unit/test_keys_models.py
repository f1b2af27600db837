"""Unit tests of ids, key names, the Signal model and its stream encoding."""

from __future__ import annotations

import pytest

from hivebus.domain.errors import InvalidId, InvalidInput
from hivebus.domain.ids import id_time_ms, new_id
from hivebus.domain.keys import Keys, check_agent_id, check_signal_type
from hivebus.domain.models import Severity, Signal, parse_json_object, parse_severity
from hivebus.infra.logs import redact_secrets
from hivebus.settings import redact_url

HOSTILE_IDS = ["*", "a:b", "{x}", "a b", "x" * 10_000, "", "../etc", "a\nb", "hive:agents", "-a"]


@pytest.mark.parametrize("agent_id", ["rm-1", "te-1", "market-hunter", "A.b_c-9", "x" * 64])
def test_valid_agent_ids_pass(agent_id: str) -> None:
    """Ordinary agent ids are accepted unchanged."""
    assert check_agent_id(agent_id) == agent_id


@pytest.mark.parametrize("agent_id", HOSTILE_IDS)
def test_hostile_agent_ids_are_refused(agent_id: str) -> None:
    """Ids that could forge or break a key are refused with a one-line error."""
    with pytest.raises(InvalidId) as info:
        Keys("hive").inbox(agent_id)
    assert "\n" not in str(info.value)
    assert len(str(info.value)) < 200


@pytest.mark.parametrize("signal_type", ["whale", "WHALE ACTIVITY", "W*", "", "A:B", "1ABC"])
def test_bad_signal_types_are_refused(signal_type: str) -> None:
    """Signal types must be UPPER_SNAKE_CASE."""
    with pytest.raises(InvalidId):
        check_signal_type(signal_type)


def test_ids_sort_by_time_and_encode_it() -> None:
    """Ids made later sort later, and carry their millisecond timestamp."""
    first, second = new_id(1_000), new_id(2_000)
    assert first < second
    assert id_time_ms(first) == 1_000
    assert len(new_id()) == 26


def test_signal_round_trips_through_stream_fields() -> None:
    """Encoding to readable fields and decoding gives the same signal."""
    signal = Signal.create(
        "WHALE_ACTIVITY", "mh-1", targets=["rm-1", "te-1"], severity=Severity.HIGH,
        confidence=0.85, data={"amount_btc": 1500.0, "nested": {"a": [1, 2]}},
        correlation_id="c-1", causation_id="d-1",
    )
    fields = signal.to_fields()
    assert fields["type"] == "WHALE_ACTIVITY"
    assert fields["severity"] == "HIGH"
    assert fields["data"] == '{"amount_btc":1500.0,"nested":{"a":[1,2]}}'
    assert Signal.from_fields(fields) == signal


def test_default_expiry_is_a_day() -> None:
    """A signal expires 24 h after creation unless told otherwise."""
    signal = Signal.create("PING", "a")
    assert signal.expires_at - signal.created_at == pytest.approx(86_400)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({}, "missing field"),
        ({"id": "x", "type": "A", "source": "a", "created_at": "1", "expires_at": "2"},
         "invalid signal id"),
        ({"id": new_id(), "type": "A", "source": "a", "created_at": "1", "expires_at": "2",
          "data": "{nope"}, "not valid JSON"),
        ({"id": new_id(), "type": "A", "source": "a", "created_at": "1", "expires_at": "2",
          "data": "[1]"}, "JSON object"),
        ({"id": new_id(), "type": "A", "source": "a", "created_at": "soon", "expires_at": "2"},
         "bad field value"),
        ({"id": new_id(), "type": "A", "source": "a", "created_at": "1", "expires_at": "2",
          "confidence": "1.5"}, "confidence"),
        ({"id": new_id(), "type": "A", "source": "a", "created_at": "1", "expires_at": "2",
          "severity": "LOUD"}, "severity"),
        ({"id": new_id(), "type": "a b", "source": "a", "created_at": "1", "expires_at": "2"},
         "invalid signal type"),
    ],
)
def test_malformed_fields_name_the_problem(fields: dict[str, str], problem: str) -> None:
    """Each kind of malformed stream entry is refused with an error naming the problem."""
    with pytest.raises(InvalidInput, match=problem):
        Signal.from_fields(fields)


def test_confidence_outside_range_is_refused() -> None:
    """Confidence must lie in 0..1."""
    with pytest.raises(InvalidInput, match="confidence"):
        Signal.create("PING", "a", confidence=1.5)


def test_severity_and_data_parsing() -> None:
    """CLI-style parsing accepts any case for severity and only JSON objects for data."""
    assert parse_severity("high") is Severity.HIGH
    with pytest.raises(InvalidInput, match="unknown severity"):
        parse_severity("LOUD")
    assert parse_json_object('{"a": 1}') == {"a": 1}
    with pytest.raises(InvalidInput, match="not valid JSON"):
        parse_json_object("{a: 1}")
    with pytest.raises(InvalidInput, match="JSON object"):
        parse_json_object("[1]")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("rediss://user:s3cret@host/1", "rediss://user:***@host/1"),
        ("redis://host:6379", "redis://host:6379"),
    ],
)
def test_passwords_are_redacted_from_urls(url: str, shown: str) -> None:
    """A password in a Redis URL never survives redaction."""
    assert redact_url(url) == shown
    event = redact_secrets(None, "info", {"event": f"connecting to {url}"})
    assert "s3cret" not in event["event"]


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad environment variable is reported by its name, in one line."""
    from hivebus.domain.errors import ConfigError
    from hivebus.settings import load_settings

    monkeypatch.setenv("HIVEBUS_NAMESPACE", "BAD NS")
    with pytest.raises(ConfigError, match="HIVEBUS_NAMESPACE"):
        load_settings()


def test_every_key_hivebus_builds_is_internal_except_effect_keys() -> None:
    """Effects (``ctx.effect``) may write only keys that are not hivebus's own: every key a
    ``Keys`` method builds must count as internal, the effect namespace alone excepted."""
    import inspect

    from hivebus.domain.keys import Keys

    keys = Keys("hive")
    samples = {"agent_id": "a-1", "signal_id": "01J0000000000000000000000A",
               "item_id": "01J0000000000000000000000B", "decision_id": "01J0000000000000000000000C",
               "name": "x", "event_type": "E", "decision_type": "T", "result": "ok",
               "signal_type": "PING", "word": "w", "scope": "stm"}
    built = 0
    for name, method in inspect.getmembers(keys, inspect.ismethod):
        if name.startswith("_") or name in {"is_internal", "effect_key"}:
            continue
        params = [p for p in inspect.signature(method).parameters.values()
                  if p.default is inspect.Parameter.empty]
        if any(p.name not in samples for p in params):
            continue
        key = method(**{p.name: samples[p.name] for p in params})
        if isinstance(key, str) and key.startswith("hive:"):
            built += 1
            assert keys.is_internal(key), f"Keys.{name}() builds {key}, which effects could write"
    assert built >= 25
    assert not keys.is_internal(keys.effect_key("a-1", "x"))
