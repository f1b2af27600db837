"""Bad input against a real redis-server: hand-written entries, oversize data, hostile ids, fuzzing."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from hivebus.agents.runner import AgentRunner
from hivebus.bus.bus import Bus, decode_delivery
from hivebus.bus.dlq import DeadLetters
from hivebus.bus.registry import Registry
from hivebus.domain.errors import HivebusError
from hivebus.domain.ids import new_id
from hivebus.domain.models import Signal, SignalStatus
from hivebus.settings import Settings
from tests.agents_for_tests import Echo

NOW = 1_900_000_000.0


def valid(**changes: str) -> dict[str, str]:
    fields = {"id": new_id(), "type": "PING", "source": "tester", "targets": "echo-1",
              "severity": "INFO", "confidence": "0.5", "data": "{}", "created_at": "1800000000.0",
              "expires_at": repr(NOW + 10**9)}
    fields.update(changes)
    return {k: v for k, v in fields.items() if v != "<drop>"}


HAND_WRITTEN = [
    ({"type": "PING"}, "missing field"),
    (valid(data="{not json"), "not valid JSON"),
    (valid(data='"a string"'), "JSON object"),
    (valid(confidence="very"), "bad field value"),
    (valid(confidence="7"), "confidence"),
    (valid(severity="LOUD"), "unknown severity"),
    (valid(created_at="yesterday"), "bad field value"),
    (valid(type="lower case"), "invalid signal type"),
    (valid(type="UNKNOWN_KIND"), "no handler for UNKNOWN_KIND"),
    (valid(data=json.dumps({"x": "y" * 70_000})), "limit is 65536"),
    (valid(source="*"), "invalid agent id"),
    (valid(source="a:b"), "invalid agent id"),
    (valid(source="{x}"), "invalid agent id"),
    (valid(source="with space"), "invalid agent id"),
    (valid(source="x" * 10_000), "invalid agent id"),
    (valid(id="x" * 10_000), "invalid signal id"),
    (valid(id="<drop>"), "missing field 'id'"),
]


@pytest.mark.anyio
async def test_hand_written_entries_are_dead_lettered_with_reasons(
    real_redis: Any, settings: Settings
) -> None:
    """Each bad entry gets a dead letter naming its problem; good signals around them still work."""
    bus = Bus(real_redis, settings)
    runner = AgentRunner(Echo("echo-1"), bus, Registry(real_redis, settings))
    await runner.run(anyio.Event(), burst=True)
    good_before = Signal.create("PING", "tester", targets=["echo-1"])
    await bus.publish(good_before)
    for fields, _ in HAND_WRITTEN:
        await real_redis.xadd(bus.keys.inbox("echo-1"), fields)
    good_after = Signal.create("PING", "tester", targets=["echo-1"])
    await bus.publish(good_after)
    with anyio.fail_after(20):
        await AgentRunner(Echo("echo-1"), bus, Registry(real_redis, settings)).run(
            anyio.Event(), burst=True)
    letters = list(reversed(await DeadLetters(real_redis, settings).list("echo-1", 100)))
    assert len(letters) == len(HAND_WRITTEN)
    for letter, (_, expected) in zip(letters, HAND_WRITTEN, strict=True):
        assert expected in letter["reason"], (expected, letter["reason"])
        assert len(letter["reason"]) <= 500
    for good in (good_before, good_after):
        assert (await bus.report(good.signal_id)).targets[0].status is SignalStatus.PROCESSED
    assert (await real_redis.xinfo_groups(bus.keys.inbox("echo-1")))[0]["pending"] == 0


@given(st.dictionaries(st.sampled_from(["id", "type", "source", "targets", "severity", "confidence",
                                        "data", "created_at", "expires_at", "causation_id", "x"]),
                       st.text(max_size=60)))
@hsettings(max_examples=400, deadline=None)
def test_decoding_any_entry_never_crashes(fields: dict[str, str]) -> None:
    """Whatever the fields, decoding gives a signal or a one-line reason, never an exception."""
    delivery = decode_delivery("1-0", fields, 65_536)
    assert (delivery.signal is None) != (delivery.error is None)
    if delivery.error:
        assert "\n" not in delivery.error


SEVERITY_NAMES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO")


@given(st.one_of(st.from_regex(r"[A-Z][A-Z0-9_]{0,63}", fullmatch=True), st.text(max_size=80)),
       st.one_of(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True), st.text(max_size=80)),
       st.one_of(st.floats(0.0, 1.0), st.floats(allow_nan=True)),
       st.one_of(st.sampled_from(SEVERITY_NAMES).map(str.lower), st.sampled_from(SEVERITY_NAMES),
                 st.text(max_size=20)))
@hsettings(max_examples=300, deadline=None)
def test_building_a_signal_from_any_input_fails_cleanly(
    signal_type: str, target: str, confidence: float, severity: str
) -> None:
    """Signal.create (after parse_severity, as the CLI calls it) builds exactly the signal asked
    for when every part is valid; otherwise it refuses with a one-line HivebusError naming the
    first invalid part: an unknown severity, then the type, the target, the confidence (NaN and
    infinity are invalid)."""
    import math
    import re

    from hivebus.domain.models import parse_severity

    problems = [
        (severity.upper() not in SEVERITY_NAMES, f"unknown severity {severity!r}"),
        (not re.fullmatch(r"[A-Z][A-Z0-9_]{0,63}", signal_type), "invalid signal type"),
        (not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", target), "invalid agent id"),
        (not math.isfinite(confidence), "confidence: Input should be a finite number"),
        (confidence < 0.0, "confidence: Input should be greater than or equal to 0"),
        (confidence > 1.0, "confidence: Input should be less than or equal to 1"),
    ]
    expected = next((message for bad, message in problems if bad), None)
    try:
        signal = Signal.create(signal_type, "cli", targets=[target], confidence=confidence,
                               severity=parse_severity(severity))
    except HivebusError as exc:
        assert expected is not None, f"refused valid input: {exc}"
        if expected.startswith("confidence"):
            assert str(exc) == expected
        assert str(exc).startswith(expected) and "\n" not in str(exc), (expected, str(exc))
        return
    assert expected is None, f"accepted input it should refuse with {expected!r}"
    assert (signal.signal_type, signal.target_agents) == (signal_type, (target,))
    assert signal.confidence == confidence
    assert signal.severity.value == severity.upper()


@pytest.mark.e2e
@given(args=st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                                    blacklist_characters="\x00"), max_size=30),
                     max_size=6))
@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_cli_publish_with_any_arguments_exits_cleanly(
    args: list[str], real_server: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`hivebus publish …` with random arguments ends with an exit code and at most one error line."""
    from hivebus.cli.main import main

    monkeypatch.setenv("HIVEBUS_REDIS_URL", real_server.url)
    monkeypatch.setenv("HIVEBUS_NAMESPACE", "fuzz")
    monkeypatch.setenv("HIVEBUS_LOG_LEVEL", "error")
    with pytest.raises(SystemExit) as info:
        main(["publish", *args])
    err = capsys.readouterr().err
    assert info.value.code in (0, 1, 2)
    if info.value.code:
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
