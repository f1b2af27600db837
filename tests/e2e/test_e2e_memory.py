"""End-to-end checks of agent memory through real agent processes and the CLI."""

from __future__ import annotations

import pytest

from hivebus.domain.ids import new_id
from tests.conftest import Processes, wait_until

pytestmark = pytest.mark.e2e


def hunter_cycle(procs: Processes, agent_id: str) -> int:
    result = procs.cli("state", "show", agent_id, "--json", check=False)
    return int(__import__("json").loads(result.stdout)["current_cycle"]) if result.returncode == 0 else -1


def test_killed_agent_resumes_its_saved_state(procs: Processes) -> None:
    """Acceptance 1: SIGKILL and restart: cycle, configuration and metrics carry on."""
    hunter = procs.start("agent", "run", "market-hunter", "--id", "mh-1")
    wait_until(lambda: hunter_cycle(procs, "mh-1") == 0, 30, "mh-1 to start")
    procs.cli("feed", "--count", "6", "--interval", "0")
    wait_until(lambda: hunter_cycle(procs, "mh-1") == 6, 30, "six ticks handled")
    before = procs.cli_json("state", "show", "mh-1")
    hunter.kill()
    hunter.wait()
    procs.start("agent", "run", "market-hunter", "--id", "mh-1")
    wait_until(lambda: [a["alive"] for a in procs.cli_json("agents") if a["agent_id"] == "mh-1"]
               == [True], 30, "mh-1 to come back")
    after = procs.cli_json("state", "show", "mh-1")
    assert after["current_cycle"] == 6
    assert after["configuration"] == before["configuration"] != {}
    assert after["source_metrics"] == before["source_metrics"]
    assert after["source_metrics"]["ticks_seen"] == 6
    procs.cli("feed", "--count", "2", "--interval", "0")
    wait_until(lambda: hunter_cycle(procs, "mh-1") == 8, 30, "the cycle to carry on from 6")


def test_checkpoint_rollback_through_the_cli(procs: Processes) -> None:
    """Acceptance 3 (CLI): checkpoint, change, rollback; history shows the ROLLBACK."""
    hunter = procs.start("agent", "run", "market-hunter", "--id", "mh-1", "--burst")
    assert hunter.wait(30) == 0
    snapshot = procs.cli_json("state", "checkpoint", "mh-1", "--label", "fresh")["snapshot_id"]
    procs.start("agent", "run", "market-hunter", "--id", "mh-1")
    procs.cli("feed", "--count", "3", "--interval", "0")
    wait_until(lambda: hunter_cycle(procs, "mh-1") == 3, 30, "three ticks handled")
    procs.stop_all()
    restored = procs.cli_json("state", "rollback", "mh-1", snapshot)
    assert restored["current_cycle"] == 0
    history = procs.cli_json("state", "history", "mh-1")["snapshots"]
    assert history[0]["state_type"] == "ROLLBACK" and history[0]["rolled_back_to"] == snapshot


def test_decision_chain_both_ways(procs: Processes) -> None:
    """Acceptance 6: a decision, its later outcome and the signal it caused are linked both ways."""
    procs.start("agent", "run", "risk-manager", "--id", "rm-1")
    procs.start("agent", "run", "trade-executor", "--id", "te-1")
    wait_until(lambda: len([a for a in procs.cli_json("agents") if a["alive"]]) == 2, 30, "agents")
    signal_id = procs.cli_json("publish", "WHALE_ACTIVITY", "--to", "rm-1", "--severity", "HIGH",
                               "--confidence", "0.8", "--data", '{"symbol": "BTC"}')["signal_id"]
    decisions = wait_until(lambda: procs.cli_json("decisions", "rm-1"), 10, "rm-1's decision")
    decision_id = decisions[0]["decision_id"]
    procs.cli("decision", "outcome", decision_id, "--success", "--quality", "0.9",
              "--metrics", '{"pnl": 12.5}')
    shown = procs.cli_json("decision", "show", decision_id)
    assert [s["signal_id"] for s in shown["triggering_signals"]] == [signal_id]
    assert shown["outcome"]["success"] is True and shown["outcome"]["metrics"] == {"pnl": 12.5}
    [caused] = shown["caused_signals"]
    assert caused["signal_type"] == "RISK_ASSESSMENT" and caused["causation_id"] == decision_id
    # and from the signal back to the decision
    assert procs.cli_json("signal", "show", caused["signal_id"])["causation_id"] == decision_id
    text = procs.cli("decision", "show", decision_id).stdout
    assert signal_id in text and caused["signal_id"] in text and '"pnl": 12.5' in text
    assert procs.cli_json("decisions", "rm-1", "--success")[0]["decision_id"] == decision_id


BAD_INPUT = [
    (["decision", "outcome", "DECISION", "--success", "--quality", "1.5"], "quality_score"),
    (["decision", "outcome", new_id(), "--success"], "no decision"),
    (["decision", "outcome", "DECISION", "--failure"], "already has an outcome"),
    (["state", "rollback", "mh-1", new_id()], "no kept snapshot"),
    (["state", "show", "mh-1:*"], "invalid agent id"),
    (["memory", "recall", "a{b}", "x"], "invalid agent id"),
    (["decisions", "mh-1", "--since", "yesterday"], "--since"),
    (["decision", "show", "nope"], "invalid id"),
]


def test_bad_memory_input_is_one_line_and_changes_nothing(procs: Processes) -> None:
    """Acceptance 7: each mistake is one clear line; the decision and state are unchanged."""
    procs.start("agent", "run", "market-hunter", "--id", "mh-1", "--burst").wait(30)
    procs.cli("feed", "--count", "40", "--interval", "0")
    procs.start("agent", "run", "market-hunter", "--id", "mh-1", "--burst").wait(30)
    decisions = procs.cli_json("decisions", "mh-1")
    assert decisions, "the feed should make the hunter decide something"
    decision_id = decisions[0]["decision_id"]
    procs.cli("decision", "outcome", decision_id, "--success")
    before = (procs.cli_json("state", "show", "mh-1"), procs.cli_json("decision", "show", decision_id))
    for args, expected in BAD_INPUT:
        args = [decision_id if a == "DECISION" else a for a in args]
        result = procs.cli(*args, check=False)
        assert result.returncode != 0, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (args, result.stderr)
    after = (procs.cli_json("state", "show", "mh-1"), procs.cli_json("decision", "show", decision_id))
    assert after == before
