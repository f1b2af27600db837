"""End-to-end: the trading desk of `hivebus demo` — its report checked against the stores."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from coordinator.market import HORIZON, MarketSimulator, funding_bucket
from tests.conftest import hivebus_argv, hivebus_env

pytestmark = pytest.mark.e2e
PLANTED = "market-hunter/SIGNAL_GENERATION/WHALE_ACTIVITY/funding=high,whale=accumulation"
NOISE = "market-hunter/SIGNAL_GENERATION/WHALE_ACTIVITY/funding=normal,whale=distribution"


def demo(tmp_path: Path, env: dict[str, str], *args: str) -> str:
    result = subprocess.run(hivebus_argv("demo", *args), env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def cli_json(tmp_path: Path, env: dict[str, str], *args: str) -> object:
    out = subprocess.run(hivebus_argv(*args, "--json"), env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return json.loads(out)


def without_run_specifics(report: str) -> list[str]:
    """The report minus lines that name ports, pids or folders."""
    return [line for line in report.splitlines() if not line.startswith(("redis ", "started ", "fresh "))]


def test_desk_learns_the_planted_regularity_and_reports_true_numbers(tmp_path: Path, namespace: str) -> None:
    """Acceptance 1-4, 6: true report, same seed same report, planted pattern promoted, continuation."""
    env = hivebus_env(None, namespace)
    first = demo(tmp_path, env, "--cycles", "200", "--fresh")
    again = demo(tmp_path, env, "--cycles", "200", "--fresh")
    assert without_run_specifics(first) == without_run_specifics(again)

    # the numbers in the report are the ones the CLI returns afterwards
    signals = re.search(r"signals this run: (.*)", again)
    assert signals is not None
    counted = {kind: int(n) for n, kind in (part.split(" ") for part in signals.group(1).split(", "))}
    listed = cli_json(tmp_path, env, "signals", "--limit", "5000")
    assert isinstance(listed, list) and all(len(row["signal_id"]) == 26 for row in listed)
    by_type: dict[str, int] = {}
    for row in listed:
        by_type[row["type"]] = by_type.get(row["type"], 0) + 1
    assert by_type == counted
    for agent, kind in (("trade-executor", "TRADE_EXECUTION"), ("risk-manager", "RISK_ASSESSMENT")):
        row = re.search(rf"{agent}\s+{kind}\s+(\d+)\s+(\d+)", again)
        assert row is not None
        decisions = cli_json(tmp_path, env, "decisions", agent, "--type", kind, "--limit", "5000")
        assert isinstance(decisions, list) and len(decisions) == int(row.group(1))
        assert sum(1 for d in decisions if d["outcome"]) == int(row.group(2))
    patterns = cli_json(tmp_path, env, "patterns")
    assert isinstance(patterns, list)
    ids = {p["pattern_id"] for p in patterns}
    for pattern in patterns:
        assert pattern["pattern_id"] in again
    # the planted regularity is learned; the planted noise is not
    assert PLANTED in ids and NOISE not in ids
    trades = re.search(r"trades closed: (\d+), won (\d+)", again)
    state = cli_json(tmp_path, env, "state", "show", "trade-executor")
    assert isinstance(state, dict) and trades is not None
    assert state["context_performance"]["trades_closed"] == int(trades.group(1))
    assert state["context_performance"]["wins"] == int(trades.group(2))

    # a second run continues from what the first learned
    second = demo(tmp_path, env, "--cycles", "30")
    assert "continued from an earlier run: desk at cycle 200" in second
    assert f"{len(ids)} pattern(s) already learned" in second


def test_chaos_run_loses_nothing(tmp_path: Path, namespace: str) -> None:
    """Acceptance 5: --chaos kills the executor halfway; the run still settles every pair."""
    env = hivebus_env(None, namespace)
    report = demo(tmp_path, env, "--cycles", "60", "--fresh", "--chaos")
    assert "SIGKILLed trade-executor" in report
    assert "nothing lost" in report
    assert re.search(r"trade-executor\s+\d+\s+0\s+0\s+0\s+0", report)  # nothing dead/expired/pending


def test_planted_rules_hold_in_the_simulator() -> None:
    """The README's claim about the simulator: the planted setup rises well above half the time."""
    market = MarketSimulator(7)
    ticks = [market.tick() for _ in range(2000)]
    wins = total = 0
    for i, tick in enumerate(ticks[:-HORIZON]):
        if tick["whale_net_flow_btc"] >= 500 and funding_bucket(tick["funding_rate"]) == "high":
            total += 1
            wins += ticks[i + HORIZON]["price"] > tick["price"]
    assert total > 300 and wins / total > 0.7
    one, two = MarketSimulator(3), MarketSimulator(3)
    assert [one.tick() for _ in range(50)] == [two.tick() for _ in range(50)]
