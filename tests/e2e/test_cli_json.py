"""Issue 12, item 7: one JSON shape per object across commands, and every listing takes
``--json`` (the CLI as a subprocess against a real redis-server, on data its own commands and an
agent process wrote)."""

from __future__ import annotations

import argparse
import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis

from hivebus.cli.main import build_parser
from hivebus.cli.views import SIGNAL_LOG_KEYS
from hivebus.domain.keys import Keys
from tests.conftest import RedisServer, hivebus_argv, hivebus_env
from tests.decision_factory import write_decisions

pytestmark = pytest.mark.e2e

KEEPER = '''
from hivebus.agents.runtime import Agent, Context, handles


class Keeper(Agent):
    """On PING: remembers, decides, answers PONG as caused by its decision, saves its state."""

    agent_type = "keeper"

    @handles("PING")
    async def on_ping(self, signal, ctx: Context) -> None:
        await ctx.memory.remember("note", "a whale moved BTC", symbol="BTC")
        decision_id, _ = await ctx.decide("TRADE_EXECUTION", confidence=0.7, reasoning={"action": "buy"})
        await ctx.publish("PONG", to=[signal.source_agent], decision_id=decision_id)
        await ctx.memory.save_state(reason="sized", configuration={"size": 2})
'''

# commands that change something and print a sentence, not an object: no --json
ACTIONS = {"demo", "agent run", "dlq replay", "dlq purge", "set-aside clear", "feed", "concepts add",
           "reset", "redis-cli"}

# every command that lists things, and every show, with {placeholders} from the seeded world
LISTINGS = ["agents", "signals", "dlq list {agent}", "set-aside list", "state history {agent}",
            "memory recall {agent} whale", "memory summarize {agent}", "decisions {agent}", "patterns",
            "pattern history {pattern}", "procedures list", "procedures history sizing",
            "concepts search", "concepts related whale", "acl", "status"]
SHOWS = ["agent show {agent}", "signal show {ping}", "dlq show {agent} {dlq}", "state show {agent}",
         "decision show {decision}", "pattern show {pattern}", "procedures show sizing"]

# values that are data (the user's or Redis's), not shapes of ours: not looked into
OPAQUE = {"data", "context", "reasoning", "metrics", "configuration", "source_metrics",
          "context_performance", "metadata", "user_metadata", "original", "parameters", "steps",
          "from", "to", "rules", "by_kind"}
OLD_ID_NAMES = {"id", "agent", "signal", "entry", "type", "log_entry"}


@dataclass
class World:
    """A namespace seeded with one of each object, and a way to ask the CLI about it."""

    env: dict[str, str]
    cwd: Path
    ids: dict[str, str] = field(default_factory=dict)
    printed: dict[str, Any] = field(default_factory=dict)  # what seeding commands printed

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(hivebus_argv(*args), env=self.env, cwd=self.cwd, capture_output=True,
                              text=True, timeout=60, check=False)

    def json(self, command: str) -> Any:
        """``hivebus <command> --json`` (placeholders filled), which must exit 0 and print JSON."""
        args = command.format(**self.ids).split()
        result = self.run(*args, "--json")
        assert result.returncode == 0, (command, result.stderr)
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def world(real_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """An agent that handled a PING (memory, decision, caused PONG, state) and dead-lettered a
    signal it has no handler for, a checkpoint, an outcome, a promoted pattern, two kinds of
    set-aside record, a procedure with a kept version, two related concepts."""
    namespace = "t" + uuid.uuid4().hex[:12]
    cwd = tmp_path_factory.mktemp("cli-json")
    (cwd / "keeper.py").write_text(KEEPER)
    env = hivebus_env(real_server.url, namespace, HIVEBUS_HOME=str(cwd / ".hivebus"),
                      HIVEBUS_STORE=str(cwd / "ltm.sqlite3"), HIVEBUS_PROMOTE_MIN_SAMPLES="50")
    w = World(env, cwd, {"agent": "keeper-1"})

    def ok(*args: str) -> str:
        result = w.run(*args)
        assert result.returncode == 0, (args, result.stderr)
        return result.stdout

    for agent_id in ("keeper-1", "keeper-2"):
        ok("agent", "run", "keeper.py:Keeper", "--id", agent_id, "--burst")
    w.printed["publish"] = json.loads(ok("publish", "PING", "--to", "keeper-1", "--json"))
    w.ids["ping"] = w.printed["publish"]["signal_id"]
    ok("publish", "NOPE", "--to", "keeper-1")  # no handler: dead-lettered
    ok("agent", "run", "keeper.py:Keeper", "--id", "keeper-1", "--burst")
    w.ids["snapshot"] = ok("state", "checkpoint", "keeper-1", "--label", "seeded").strip()
    [decision] = w.json("decisions keeper-1")
    w.ids["decision"] = decision["decision_id"]
    w.printed["outcome"] = json.loads(ok("decision", "outcome", w.ids["decision"], "--success",
                                         "--quality", "0.9", "--json"))
    [letter] = w.json("dlq list keeper-1")
    w.ids["dlq"] = letter["dlq_entry"]

    write_decisions(real_server.url, namespace, 300, old_share=0)
    keys = Keys(namespace)
    client = sync_redis.Redis.from_url(real_server.url, decode_responses=True)
    client.sadd(keys.agents(), "bad id!")  # set aside as a member
    client.set(keys.late_outcomes(), "edited by hand")  # set aside as a key moved away
    client.close()
    ok("coordinator", "--once")
    [pattern] = w.json("patterns")
    w.ids["pattern"] = pattern["pattern_id"]

    steps = '[{"step": "set", "params": {"capital": 1000}}]'
    ok("procedures", "add", "sizing", "--steps", steps)
    ok("procedures", "add", "sizing", "--steps", steps, "--params", '{"risk_fraction": 0.01}')
    ok("procedures", "run", "sizing")
    ok("concepts", "add", "whale", "--category", "market", "--content", "a big holder",
       "--relate", "moves:price")
    ok("concepts", "add", "price", "--category", "market")
    yield w


def _commands(parser: argparse.ArgumentParser,
              prefix: str = "") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every leaf command of ``parser`` with its own parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{prefix} {name}".strip())
            return
    yield prefix, parser


def test_every_command_that_prints_an_object_or_a_list_takes_json() -> None:
    """Every command but those that only act and say so in a sentence takes --json."""
    found = {name: any("--json" in a.option_strings for a in p._actions)
             for name, p in _commands(build_parser(complete=True))}
    assert {name for name, has in found.items() if not has} == ACTIONS
    for command in LISTINGS + SHOWS:  # the commands the other tests run are real ones
        assert any(command == name or command.startswith(f"{name} ") for name in found), command


@pytest.mark.parametrize("command", LISTINGS)
def test_every_listing_prints_json_with_what_was_seeded(world: World, command: str) -> None:
    """Each listing with --json exits 0 and prints JSON holding the seeded objects."""
    printed = world.json(command)
    if command.startswith("state history"):
        assert printed["snapshots"] and printed["configuration_changes"]
    elif command.startswith("memory summarize"):
        assert printed["count"] >= 1
    elif command == "status":
        assert printed["agents"]["registered"] >= 2
    else:
        assert isinstance(printed, list) and printed, printed


def test_an_agent_listed_is_the_agent_shown(world: World) -> None:
    """`agents --json` lists an agent exactly as `agent show --json` prints it."""
    listed = {a["agent_id"]: a for a in world.json("agents")}
    shown = world.json("agent show keeper-1")
    assert listed["keeper-1"] == shown
    assert shown["agent_type"] == "keeper" and shown["subscriptions"] == ["PING"]


def test_a_signal_is_one_shape_in_publish_show_signals_and_decision_show(world: World) -> None:
    """`publish --json` and `signal show --json` print the same keys (the status per target as
    the publish left it, then as it is); `signals --json` prints the documented subset with the
    same values; a decision's linked signals are `signal show` plus `known`."""
    shown = world.json("signal show {ping}")
    published = world.printed["publish"]
    assert set(published) == set(shown)
    assert {k: v for k, v in published.items() if k != "status"} == {
        k: v for k, v in shown.items() if k != "status"}
    assert published["status"]["keeper-1"]["status"] == "PENDING"
    assert shown["status"]["keeper-1"]["status"] == "PROCESSED"
    assert set(published["status"]["keeper-1"]) == set(shown["status"]["keeper-1"])
    [listed] = [s for s in world.json("signals") if s["signal_id"] == world.ids["ping"]]
    assert set(listed) == set(SIGNAL_LOG_KEYS) < set(shown)
    assert {k: listed[k] for k in SIGNAL_LOG_KEYS if k != "published_at"} == {
        k: shown[k] for k in SIGNAL_LOG_KEYS if k != "published_at"}
    assert listed["delivered_to"] == ["keeper-1"]
    assert abs(listed["published_at"] - shown["published_at"]) < 1.0  # log entry vs inbox entry
    decision = world.json("decision show {decision}")
    [trigger] = decision["triggering_signals"]
    assert trigger == {**shown, "known": True}
    [caused] = decision["caused_signals"]
    assert set(caused) == set(shown) | {"known"} and caused["causation_id"] == world.ids["decision"]
    assert caused == {**world.json(f"signal show {caused['signal_id']}"), "known": True}


def test_a_dead_letter_listed_is_the_dead_letter_shown(world: World) -> None:
    """`dlq list --json` items and `dlq show` (with or without --json) are the same object,
    counts and times as numbers, the original entry as an object."""
    [listed] = world.json("dlq list {agent}")
    shown = world.json("dlq show {agent} {dlq}")
    assert listed == shown
    without = world.run("dlq", "show", "keeper-1", world.ids["dlq"])
    assert json.loads(without.stdout) == shown
    assert shown["agent_id"] == "keeper-1" and shown["status"] == "DEAD" and shown["attempts"] == 1
    assert isinstance(shown["failed_at"], float) and shown["original"]["type"] == "NOPE"
    assert shown["signal_id"] == shown["original"]["id"]


def test_every_set_aside_record_has_every_key(world: World) -> None:
    """A member set aside and a key moved aside print the same keys, null where not theirs."""
    records = world.json("set-aside list")
    moved = [r for r in records if r["moved_to"] is not None]
    members = [r for r in records if r["member"] is not None]
    assert moved and members
    assert all(set(r) == set(records[0]) for r in records)
    assert all(isinstance(r["at"], float) for r in records)


def test_a_state_is_one_shape_in_show_and_in_each_snapshot(world: World) -> None:
    """`state show --json` and the state of each snapshot in `state history --json` have the
    same keys and types; the seeded checkpoint holds the state it was taken from."""
    shown = world.json("state show {agent}")
    history = world.json("state history {agent}")
    [seeded] = [s for s in history["snapshots"] if s["snapshot_id"] == world.ids["snapshot"]]
    assert seeded["state_type"] == "CHECKPOINT" and seeded["label"] == "seeded"
    for snapshot in history["snapshots"]:
        assert set(snapshot["state"]) == set(shown)
        assert {k: type(v) for k, v in snapshot["state"].items()} == {k: type(v) for k, v in shown.items()}
    assert {k: v for k, v in seeded["state"].items() if k != "state_type"} == {
        k: v for k, v in shown.items() if k != "state_type"}
    assert seeded["state"]["configuration"] == {"size": 2}
    assert any(c["to"] == {"size": 2} for c in history["configuration_changes"])


def test_a_decision_listed_is_the_decision_shown_without_its_signals(world: World) -> None:
    """`decisions --json` items are `decision show --json` without the two signal lists; the
    outcome is shaped as `decision outcome --json` printed it."""
    [listed] = world.json("decisions {agent}")
    shown = world.json("decision show {decision}")
    assert set(shown) - set(listed) == {"triggering_signals", "caused_signals"}
    assert {k: v for k, v in shown.items() if k in listed} == listed
    assert shown["outcome"] == world.printed["outcome"]


def test_a_pattern_listed_is_the_pattern_shown_and_its_newest_version(world: World) -> None:
    """`patterns --json` items, `pattern show --json` and the newest `pattern history` entry's
    pattern are the same object."""
    [listed] = [p for p in world.json("patterns") if p["pattern_id"] == world.ids["pattern"]]
    shown = world.json("pattern show {pattern}")
    history = world.json("pattern history {pattern}")
    assert listed == shown == history[-1]["pattern"]


def test_a_procedure_listed_is_the_procedure_shown(world: World) -> None:
    """`procedures list --json` items are `procedures show --json`."""
    [listed] = [p for p in world.json("procedures list") if p["procedure_id"] == "sizing"]
    assert listed == world.json("procedures show sizing")
    assert listed["version"] == 2 and listed["stats"]["successes"] == 1
    [kept] = world.json("procedures history sizing")
    assert kept["version"] == 1


def _fields(value: Any, where: str) -> Iterator[tuple[str, str, Any]]:
    """(where, key, value) of every key of our shapes in ``value``, data values not looked into."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield where, key, item
            if key not in OPAQUE:
                yield from _fields(item, f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            yield from _fields(item, f"{where}[]")


def test_times_are_unix_seconds_and_ids_are_named_for_their_object(world: World) -> None:
    """In every listing and show, a time is a number (or null) and no key keeps an old bare
    name (``id``, ``agent``, ``signal``, ``entry``, ``type``) for an id or a type."""
    times: dict[str, set[str]] = {}
    wrong: list[str] = []
    for command in LISTINGS + SHOWS:
        for where, key, value in _fields(world.json(command), command):
            if key.endswith("_at") or key in ("at", "timestamp", "last_seen", "last_run"):
                times.setdefault(command, set()).add(key)
                if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                    wrong.append(f"{where}.{key} = {value!r}")
            if key in OLD_ID_NAMES:
                wrong.append(f"{where}: key {key!r}")
    assert not wrong, wrong
    assert "failed_at" in times["dlq list {agent}"] and "at" in times["set-aside list"]
    assert {"registered_at", "last_seen"} <= times["agents"]
    assert {"created_at", "expires_at", "published_at"} <= times["signal show {ping}"]


def test_commands_that_change_an_object_print_it_in_its_shape(world: World) -> None:
    """`state rollback`, `pattern rollback` and `agent remove` with --json print the object as
    its show prints it (run last: they change the seeded objects)."""
    state_keys = set(world.json("state show {agent}"))
    assert set(world.json("state rollback {agent} {snapshot}")) == state_keys
    pattern_keys = set(world.json("pattern show {pattern}"))
    rolled = world.json("pattern rollback {pattern} 1")
    assert set(rolled) == pattern_keys and rolled["version"] == 2
    before = world.json("agent show keeper-2")
    assert world.json("agent remove keeper-2") == before
    gone = world.run("agent", "show", "keeper-2")
    assert gone.returncode == 1 and "no registered agent" in gone.stderr
