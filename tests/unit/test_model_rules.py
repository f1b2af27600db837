"""Exact values and boundaries of the Signal model, its encoding, and the key and id checks.

Written to fail on a one-token change of the rule (``python -m bench.mutation`` checks that
they do): exact messages, the last valid and first invalid length of each id, every key name.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from hivebus.domain.clock import now_s, stamp_s
from hivebus.domain.errors import InvalidId, InvalidInput
from hivebus.domain.keys import (
    INTERNAL_KINDS,
    LAYOUT_VERSION,
    Keys,
    check_agent_id,
    check_instance_id,
    check_item_id,
    check_signal_id,
    check_signal_type,
    tag,
)
from hivebus.domain.models import (
    DEFAULT_TTL_S,
    TERMINAL_STATUSES,
    Severity,
    Signal,
    SignalStatus,
    describe_validation_error,
    parse_json_object,
    parse_severity,
)

SID = "01J0000000000000000000000A"
SID2 = "01J0000000000000000000000B"

# --- the Signal model -----------------------------------------------------------------------


def test_statuses_and_severities() -> None:
    """Five severities, six statuses, of which PROCESSED, DEAD and EXPIRED are terminal."""
    assert [s.value for s in Severity] == ["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO"]
    assert [s.value for s in SignalStatus] == ["PENDING", "PROCESSING", "PROCESSED", "FAILED", "DEAD",
                                               "EXPIRED"]
    assert {SignalStatus.PROCESSED, SignalStatus.DEAD, SignalStatus.EXPIRED} == TERMINAL_STATUSES


def test_clock_readings(monkeypatch: pytest.MonkeyPatch) -> None:
    """now_s is the wall clock; stamp_s is the same rounded to the millisecond."""
    monkeypatch.setattr(time, "time", lambda: 1_795_309_716.99749)
    assert now_s() == 1_795_309_716.99749
    assert stamp_s() == 1_795_309_716.997


def test_signal_defaults() -> None:
    """A bare signal: new id, no targets, INFO, confidence 1, no data, expires a day later."""
    signal = Signal(signal_type="PING", source_agent="a", created_at=1000.0)
    assert DEFAULT_TTL_S == 86_400
    assert (signal.target_agents, signal.severity, signal.confidence, signal.data) == ((), Severity.INFO,
                                                                                        1.0, {})
    assert signal.expires_at == 87_400.0
    assert (signal.correlation_id, signal.causation_id) == (None, None)
    assert len(signal.signal_id) == 26
    assert Signal(signal_type="PING", source_agent="a", created_at=1000.0, expires_at=5.0).expires_at == 5.0
    assert Signal(signal_type="PING", source_agent="a", created_at=1000.0004).expires_at == 87_400.0


def test_signal_is_frozen_and_closed() -> None:
    """A signal cannot be changed, nor given fields it does not have."""
    signal = Signal.create("PING", "a")
    with pytest.raises(ValidationError):
        signal.confidence = 0.5  # type: ignore[misc]
    with pytest.raises(InvalidInput, match=r"^colour: Extra inputs are not permitted$"):
        Signal.create("PING", "a", colour="red")


def test_create_times() -> None:
    """create stamps the time unless given one; ttl_s (0 included) sets expires_at, rounded to ms."""
    signal = Signal.create("PING", "a", created_at=1000.0004, ttl_s=10)
    assert (signal.created_at, signal.expires_at) == (1000.0004, 1010.0)
    assert Signal.create("PING", "a", created_at=1000.0, ttl_s=0).expires_at == 1000.0
    assert Signal.create("PING", "a", created_at=1000.0).expires_at == 87_400.0
    before = round(time.time(), 3)
    stamped = Signal.create("PING", "a")
    assert before <= stamped.created_at <= round(time.time(), 3)
    assert stamped.expires_at - stamped.created_at == pytest.approx(86_400)


def test_targets_are_checked_and_deduplicated_in_order() -> None:
    """Targets keep their first-seen order, once each; a bad one is refused."""
    assert Signal.create("PING", "a", targets=["b", "c", "b", "a"]).target_agents == ("b", "c", "a")
    with pytest.raises(InvalidId, match="invalid agent id 'x y'"):
        Signal.create("PING", "a", targets=["b", "x y"])


@pytest.mark.parametrize("field", ["correlation_id", "causation_id"])
def test_references_are_short_printable_strings(field: str) -> None:
    """Correlation and causation ids: up to 128 printable characters, or none."""
    assert getattr(Signal.create("PING", "a", **{field: "r" * 128}), field) == "r" * 128
    assert getattr(Signal.create("PING", "a", **{field: None}), field) is None
    for bad in ("r" * 129, "a\nb"):
        with pytest.raises(InvalidInput) as info:
            Signal.create("PING", "a", **{field: bad})
        assert str(info.value) == f"{field}: must be a printable string of at most 128 characters"


def test_create_names_every_invalid_field() -> None:
    """Validation errors become one InvalidInput line naming each field."""
    with pytest.raises(InvalidInput) as info:
        Signal.create("PING", "a", confidence=2, data="x")
    assert str(info.value) == ("confidence: Input should be less than or equal to 1; "
                               "data: Input should be a valid dictionary")
    assert isinstance(info.value.__context__, ValidationError) and info.value.__suppress_context__


def test_describe_validation_error_without_location() -> None:
    """An error with no field location is named 'value'."""
    with pytest.raises(ValidationError) as info:
        TypeAdapter(int).validate_python("x")
    assert describe_validation_error(info.value) == (
        "value: Input should be a valid integer, unable to parse string as an integer")


@pytest.mark.parametrize(("offset", "expired"), [(-0.001, False), (0.0, True), (0.001, True)])
def test_is_expired_at_the_boundary(offset: float, expired: bool) -> None:
    """A signal is expired from its expires_at on (inclusive)."""
    signal = Signal.create("PING", "a", created_at=1000.0, ttl_s=10)
    assert signal.is_expired(1010.0 + offset) is expired


def test_is_expired_reads_the_clock() -> None:
    """Without a time, expiry is judged against now."""
    assert Signal.create("PING", "a", created_at=1000.0, ttl_s=10).is_expired()
    assert not Signal.create("PING", "a").is_expired()


def test_to_fields_exactly() -> None:
    """The stream fields of a full signal, and a bare one without the optional references."""
    signal = Signal.create("WHALE", "mh-1", targets=["rm-1", "te-1"], severity=Severity.HIGH,
                           confidence=0.25, data={"b": 1, "a": [1, 2]}, created_at=1000.5, ttl_s=10,
                           signal_id=SID, correlation_id="c-1", causation_id="d-1")
    assert signal.to_fields() == {
        "id": SID, "type": "WHALE", "source": "mh-1", "targets": "rm-1,te-1", "severity": "HIGH",
        "confidence": "0.25", "data": '{"a":[1,2],"b":1}', "created_at": "1000.5", "expires_at": "1010.5",
        "correlation_id": "c-1", "causation_id": "d-1"}
    bare = Signal.create("PING", "a", created_at=1000.0, ttl_s=1, signal_id=SID).to_fields()
    assert bare == {"id": SID, "type": "PING", "source": "a", "targets": "", "severity": "INFO",
                    "confidence": "1.0", "data": "{}", "created_at": "1000.0", "expires_at": "1001.0"}


def test_from_fields_defaults() -> None:
    """Only id, type, source and times are required: no targets, INFO, confidence 1, no data."""
    signal = Signal.from_fields({"id": SID, "type": "PING", "source": "a", "created_at": "1",
                                 "expires_at": "2", "severity": "high"})
    assert (signal.signal_id, signal.signal_type, signal.source_agent) == (SID, "PING", "a")
    assert (signal.target_agents, signal.severity, signal.confidence, signal.data) == ((), Severity.HIGH,
                                                                                        1.0, {})
    assert (signal.created_at, signal.expires_at) == (1.0, 2.0)
    assert (signal.correlation_id, signal.causation_id) == (None, None)
    assert Signal.from_fields({"id": SID, "type": "PING", "source": "a", "created_at": "1",
                               "expires_at": "2", "targets": "b,,c"}).target_agents == ("b", "c")


@pytest.mark.parametrize(("changes", "message"), [
    ({"expires_at": None}, "missing field 'expires_at'"),
    ({"type": None}, "missing field 'type'"),
    ({"data": "{nope"}, "field 'data' is not valid JSON"),
    ({"data": 5}, "field 'data' is not valid JSON"),
    ({"data": "[1]"}, "field 'data' must be a JSON object"),
    ({"created_at": "x"}, "bad field value: could not convert string to float: 'x'"),
    ({"confidence": "nan"}, "confidence: Input should be a finite number"),
    ({"severity": "loud"}, "unknown severity 'loud': choose one of CRITICAL, HIGH, MEDIUM, LOW, INFO"),
    ({"type": "ping"}, "invalid signal type 'ping': use UPPER_SNAKE_CASE, e.g. WHALE_ACTIVITY"),
])
def test_from_fields_errors_exactly(changes: dict[str, Any], message: str) -> None:
    """Each malformed entry is refused with one exact InvalidInput message."""
    fields = {"id": SID, "type": "PING", "source": "a", "created_at": "1", "expires_at": "2"}
    fields.update(changes)
    with pytest.raises(InvalidInput) as info:
        Signal.from_fields({k: v for k, v in fields.items() if v is not None})
    assert str(info.value) == message


def test_parse_helpers_exactly() -> None:
    """Severity in any case; JSON objects only, with errors naming the option."""
    assert parse_severity("mEdIuM") is Severity.MEDIUM
    assert parse_json_object('{"a": {"b": 1}}', "--params") == {"a": {"b": 1}}
    with pytest.raises(InvalidInput) as info:
        parse_json_object("{a", "--metrics")
    assert str(info.value) == ("--metrics is not valid JSON: Expecting property name enclosed in double "
                               "quotes at position 1")
    with pytest.raises(InvalidInput) as info:
        parse_json_object("[1]")
    assert str(info.value) == "--data must be a JSON object, e.g. '{\"amount_btc\": 1500}'"


# --- ids in keys ------------------------------------------------------------------------------

@pytest.mark.parametrize(("check", "good", "bad"), [
    (check_agent_id, ["a", "9", "a" * 64, "A.b_c-9"], ["", "a" * 65, "_a", ".a", "-a", "a b", "a:b"]),
    (check_signal_type, ["A", "A" * 64, "A1_B"], ["", "A" * 65, "1A", "_A", "Ab", "A B"]),
    (check_signal_id, [SID, "0123456789ABCDEFGHJKMNPQRS"],
     [SID[:25], SID + "A", SID.lower(), SID[:25] + "I", SID[:25] + "L", SID[:25] + "O", SID[:25] + "U"]),
    (check_item_id, [SID], [SID[:25], SID[:25] + "U"]),
    (check_instance_id, ["a", "_", "h-1.2_x", "i" * 128], ["", "i" * 129, "a b", "a:b", "{a}"]),
])
def test_id_checks_at_their_edges(check: Any, good: list[str], bad: list[str]) -> None:
    """Each check returns a valid id unchanged and refuses the first invalid ones with InvalidId."""
    for value in good:
        assert check(value) == value
    for value in bad:
        with pytest.raises(InvalidId):
            check(value)


@pytest.mark.parametrize(("check", "value", "message"), [
    (check_agent_id, None, "invalid agent id 'None': use 1-64 letters, digits, '_', '.', '-'"),
    (check_agent_id, "*" * 41, f"invalid agent id '{'*' * 40}…': use 1-64 letters, digits, '_', '.', '-'"),
    (check_agent_id, "*" * 40, f"invalid agent id '{'*' * 40}': use 1-64 letters, digits, '_', '.', '-'"),
    (check_signal_type, 5, "invalid signal type '5': use UPPER_SNAKE_CASE, e.g. WHALE_ACTIVITY"),
    (check_signal_id, b"x", "invalid signal id \"b'x'\": expected 26 characters"),
    (check_item_id, 7, "invalid id '7': expected 26 characters"),
    (check_instance_id, "", "invalid instance id ''"),
])
def test_id_check_messages(check: Any, value: Any, message: str) -> None:
    """Refusals say what was wrong, showing at most 40 characters of the value; a non-string is
    refused like a bad string (never a TypeError)."""
    with pytest.raises(InvalidId) as info:
        check(value)
    assert str(info.value) == message


# --- key names --------------------------------------------------------------------------------

KEY_NAMES: list[tuple[str, tuple[Any, ...], str]] = [
    ("layout", (), "ns:layout"),
    ("agents", (), "ns:agents:{~registry}"),
    ("agent", ("a-1",), "ns:agent:{a-1}"),
    ("instances", ("a-1",), "ns:agent:{a-1}:instances"),
    ("heartbeat", ("a-1", "h-7"), "ns:hb:{a-1}:h-7"),
    ("subscribers", ("PING",), "ns:subs:{~registry}:PING"),
    ("inbox", ("a-1",), "ns:inbox:{a-1}"),
    ("pending", ("a-1",), "ns:pending:{a-1}"),
    ("done", ("a-1",), "ns:done:{a-1}"),
    ("status", ("a-1",), "ns:status:{a-1}"),
    ("retries", ("a-1",), "ns:retry:{a-1}"),
    ("dead_letters", ("a-1",), "ns:dlq:{a-1}"),
    ("signal", (SID,), f"ns:signal:{{~s05}}:{SID}"),  # crc32(SID) % 16 == 5
    ("signal_log", (5,), "ns:signals:{~s05}"),
    ("published", (15,), "ns:published:{~s15}"),
    ("effect_key", ("a-1", "n x"), "ns:fx:{a-1}:n x"),
    ("state", ("a-1",), "ns:state:{a-1}"),
    ("snapshots", ("a-1",), "ns:state:{a-1}:snapshots"),
    ("config_history", ("a-1",), "ns:state:{a-1}:config"),
    ("memory_item", ("a-1", SID), f"ns:stm:{{a-1}}:{SID}"),
    ("memory_item_prefix", ("a-1",), "ns:stm:{a-1}:"),
    ("memory_index", ("a-1",), "ns:stm:{a-1}"),
    ("shared_scope", ("a-1",), "ns:shared:{a-1}"),
    ("shared_scope", ("*",), "ns:shared:{*}"),
    ("shared_item_prefix", ("a-1",), "ns:shared:{a-1}:item:"),
    ("shared_item_prefix", ("*",), "ns:shared:{*}:item:"),
    ("shared_item", ("a-1", SID), f"ns:shared:{{a-1}}:item:{SID}"),
    ("decision", ("a-1", SID), f"ns:decision:{{a-1}}:{SID}"),
    ("decision_signals", ("a-1", SID), f"ns:decision:{{a-1}}:{SID}:signals"),
    ("decision_at", (SID,), f"ns:decision-at:{SID}"),
    ("decisions", ("a-1",), "ns:decisions:{a-1}"),
    ("decision_index", ("a-1",), "ns:decisions:{a-1}"),
    ("decision_index", ("a-1", "TRADE"), "ns:decisions:{a-1}:type:TRADE"),
    ("decision_index", ("a-1", None, "ok"), "ns:decisions:{a-1}:ok"),
    ("decision_index", ("a-1", "TRADE", "failed"), "ns:decisions:{a-1}:type:TRADE:failed"),
    ("decision_index", ("a-1", None, "pending"), "ns:decisions:{a-1}:pending"),
    ("outcomes", ("a-1",), "ns:outcomes:{a-1}"),
    ("late_outcomes", (), "ns:late-outcomes"),
    ("decision_agents", (), "ns:decision-agents:{~registry}"),
    ("fence", ("a-1",), "ns:fence:{a-1}"),
    ("lease", (), "ns:coordinator:{~lease}:lease"),
    ("epoch", (), "ns:coordinator:{~lease}:epoch"),
    ("events", ("a-1",), "ns:events:{a-1}"),
    ("events", ("a-1", "FILL"), "ns:events:{a-1}:type:FILL"),
]


@pytest.mark.parametrize(("method", "args", "key"), KEY_NAMES)
def test_key_names(method: str, args: tuple[Any, ...], key: str) -> None:
    """Every key name, exactly as the README's key table gives it."""
    assert getattr(Keys("ns"), method)(*args) == key


@pytest.mark.parametrize(("method", "args"), [
    ("agent", ("a:b",)), ("heartbeat", ("a-1", "h 7")), ("heartbeat", ("a b", "h-7")),
    ("subscribers", ("ping",)), ("signal", ("x",)), ("memory_item", ("a-1", "x")),
    ("decision", ("a-1", "x")), ("decision", ("a b", SID)), ("decision_signals", ("a-1", "x")),
    ("decision_at", ("x",)), ("outcomes", ("a:b",)), ("fence", ("{x}",)),
    ("shared_scope", ("a b",)), ("shared_item", ("*", "x")),
    ("decision_index", ("a-1", "bad type")), ("events", ("a-1", "bad type")), ("inbox", ("*",)),
])
def test_keys_check_their_ids(method: str, args: tuple[Any, ...]) -> None:
    """A key is never built from an invalid id."""
    with pytest.raises(InvalidId):
        getattr(Keys("ns"), method)(*args)


def test_signal_shards_spread_ids_and_carry_their_tag() -> None:
    """A signal's record and log entry are in the shard CRC-32 of its id picks; 16 shards."""
    import zlib

    from hivebus.domain.ids import new_id
    from hivebus.domain.keys import SIGNAL_SHARDS, shard_tag, signal_shard

    ids = [new_id() for _ in range(1600)]
    assert {signal_shard(i) for i in ids} == set(range(SIGNAL_SHARDS))
    assert all(signal_shard(i) == zlib.crc32(i.encode()) % 16 for i in ids)
    assert [shard_tag(0), shard_tag(15)] == ["{~s00}", "{~s15}"]
    assert len(Keys("ns").signal_logs()) == 16 and Keys("ns").signal_logs()[3] == "ns:signals:{~s03}"
    with pytest.raises(ValueError, match="no signal shard 16"):
        shard_tag(16)


def test_keys_defaults_and_values() -> None:
    """The default namespace is 'hive'; Keys is an immutable value; the layout is version 3."""
    keys = Keys()
    assert (keys.namespace, keys.prefix, keys.agents()) == ("hive", "hive:", "hive:agents:{~registry}")
    assert Keys("ns") == Keys("ns") and hash(Keys("ns")) == hash(Keys("ns"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        keys.namespace = "other"  # type: ignore[misc]
    assert LAYOUT_VERSION == "3"
    assert tag("a-1") == "{a-1}"


@pytest.mark.parametrize("name", ["x", "n" * 200, "a:b {c}", "é"])
def test_effect_key_names_allowed(name: str) -> None:
    """An effect key name is 1 to 200 printable characters."""
    assert Keys("ns").effect_key("a-1", name) == f"ns:fx:{{a-1}}:{name}"


@pytest.mark.parametrize("name", ["", "n" * 201, "a\nb", "\x00"])
def test_effect_key_names_refused(name: str) -> None:
    """An empty, longer or unprintable effect key name is refused, with a one-line message."""
    with pytest.raises(InvalidId) as info:
        Keys("ns").effect_key("a-1", name)
    assert str(info.value).startswith("invalid effect key name ")
    assert str(info.value).endswith(": 1-200 printable characters")


def test_decision_index_refuses_an_unknown_result() -> None:
    """Only pending, ok and failed are decision results."""
    with pytest.raises(ValueError, match="unknown decision result 'done'"):
        Keys("ns").decision_index("a-1", result="done")


@pytest.mark.parametrize(("key", "internal"), [
    ("ns:agents", True), ("ns:agent:{a}:instances", True), ("ns:late-outcomes", True),
    ("ns:fx:{a}:x", False), ("ns:unknown", False), ("ns", False), ("nsx:agents", False),
    ("other:agents", False), ("agents", False), ("ns:", False), ("ns:inbox", True),
])
def test_is_internal(key: str, internal: bool) -> None:
    """A key is internal when it is ``<namespace>:<kind>…`` with one of hivebus's kinds."""
    assert Keys("ns").is_internal(key) is internal


def test_every_internal_kind_is_recognised() -> None:
    """Each internal kind, with or without a rest, is internal in any namespace."""
    for kind in INTERNAL_KINDS:
        assert Keys("n2").is_internal(f"n2:{kind}")
        assert Keys("n2").is_internal(f"n2:{kind}:{{a}}:x")
        assert not Keys("n2").is_internal(f"n3:{kind}")
