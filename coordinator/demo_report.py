"""The demo's report: what this run did, in numbers a person can check with the CLI afterwards."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from coordinator.bus import Bus
from coordinator.decisions import DecisionLog
from coordinator.keys import Keys
from coordinator.models import TERMINAL_STATUSES
from coordinator.output import print_table
from coordinator.settings import Settings
from coordinator.state import StateStore
from coordinator.store import MemoryPattern, SQLiteStore

AGENTS = ("market-hunter", "risk-manager", "trade-executor")


@dataclass
class Report:
    """Numbers gathered before, during and after a demo run."""

    seed: int
    cycles: int
    started_at: float
    start_cycle: int = 0
    patterns_before: set[str] = field(default_factory=set)
    trades_before: int = 0
    wins_before: int = 0
    pnl_before: float = 0.0
    signal_ids: list[str] = field(default_factory=list)
    by_type: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, dict[str, int]] = field(default_factory=dict)
    decisions: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    trades: int = 0
    wins: int = 0
    pnl: float = 0.0
    pauses: int = 0
    end_cycle: int = 0
    patterns: list[MemoryPattern] = field(default_factory=list)
    learned: str = ""
    chaos: str = ""
    unsettled: int = 0

    @classmethod
    async def begin(cls, redis: Any, settings: Settings, seed: int, cycles: int) -> Report:
        """Note where the desk starts from."""
        report = cls(seed=seed, cycles=cycles, started_at=time.time())
        states = StateStore(redis, settings)
        hunter, executor = await states.load("market-hunter"), await states.load("trade-executor")
        report.start_cycle = hunter.current_cycle if hunter else 0
        perf = executor.context_performance if executor else {}
        report.trades_before = int(perf.get("trades_closed", 0))
        report.wins_before = int(perf.get("wins", 0))
        report.pnl_before = float(perf.get("pnl", 0.0))
        if settings.store_path.exists():
            store = await SQLiteStore.open(settings.store_path)
            try:
                report.patterns_before = {p.pattern_id for p in await store.query_patterns(viewer=None)}
            finally:
                await store.close()
        return report

    async def collect(self, redis: Any, settings: Settings) -> None:
        """Signal statuses and trades once every tick has settled."""
        bus = Bus(redis, settings)
        records = await bus.records(self.signal_ids)
        pairs = [(signal_id, target) for signal_id, record in zip(self.signal_ids, records, strict=True)
                 for target in sorted(record["to"] if record else {})]
        for record in records:
            kind = str(record.get("type", "?")) if record else "?"
            self.by_type[kind] = self.by_type.get(kind, 0) + 1
        for (_, target), status in zip(pairs, await bus.statuses(pairs), strict=True):
            counts = self.statuses.setdefault(target, {})
            counts[status.value] = counts.get(status.value, 0) + 1
            self.unsettled += status not in TERMINAL_STATUSES
        states = StateStore(redis, settings)
        executor = await states.load("trade-executor")
        perf = executor.context_performance if executor else {}
        self.trades = int(perf.get("trades_closed", 0)) - self.trades_before
        self.wins = int(perf.get("wins", 0)) - self.wins_before
        self.pnl = round(float(perf.get("pnl", 0.0)) - self.pnl_before, 2)
        risk = await states.load("risk-manager")
        self.pauses = int(risk.context_performance.get("pauses", 0)) if risk else 0
        hunter = await states.load("market-hunter")
        self.end_cycle = hunter.current_cycle if hunter else 0

    async def finish(self, redis: Any, settings: Settings, store: SQLiteStore) -> None:
        """Decisions (Redis and archive) and patterns after the final coordinator pass."""
        log = DecisionLog(redis, settings, archive=store)
        for agent_id in AGENTS:
            rows: dict[str, list[int]] = {}
            for decision in await log.query(agent_id, since=self.started_at, limit=1_000_000):
                row = rows.setdefault(decision.decision_type, [0, 0, 0])
                row[0] += 1
                if decision.outcome is not None:
                    row[1] += 1
                    row[2] += decision.outcome.success
            self.decisions[agent_id] = rows
        self.patterns = await store.query_patterns(viewer=None)


def print_report(report: Report, keys: Keys) -> None:
    """Print the report."""
    print(f"\n=== report: seed {report.seed}, {report.cycles} cycles "
          f"(desk cycle {report.start_cycle} -> {report.end_cycle}) ===")
    if report.start_cycle or report.patterns_before:
        print(f"continued from an earlier run: desk at cycle {report.start_cycle}, "
              f"{len(report.patterns_before)} pattern(s) already learned (use --fresh to start blank)")
    print("\nsignals this run: " + ", ".join(f"{n} {t}" for t, n in sorted(report.by_type.items())))
    print_table([{"agent": agent, **{s.lower(): counts.get(s, 0) for s in
                                     ("PROCESSED", "DEAD", "EXPIRED", "PENDING", "FAILED")}}
                 for agent, counts in sorted(report.statuses.items())],
                ["agent", "processed", "dead", "expired", "pending", "failed"])
    print("\ndecisions this run (outcomes are logged when positions close):")
    rows = []
    for agent, types in report.decisions.items():
        for decision_type, (count, with_outcome, wins) in sorted(types.items()):
            rate = f"{wins / with_outcome:.0%}" if with_outcome else "-"
            rows.append({"agent": agent, "type": decision_type, "decisions": count,
                         "with_outcome": with_outcome, "success_rate": rate})
    print_table(rows, ["agent", "type", "decisions", "with_outcome", "success_rate"])
    rate = f"{report.wins / report.trades:.0%}" if report.trades else "-"
    print(f"\ntrades closed: {report.trades}, won {report.wins} ({rate}), P&L {report.pnl:+.2f}; "
          f"risk manager paused the desk {report.pauses} time(s) in all")
    print("\npatterns promoted (durable store):")
    print_table([{"pattern_id": p.pattern_id, "confidence": f"{p.confidence:.3f}",
                  "success_rate": f"{p.success_rate:.3f}", "samples": p.sample_size,
                  "new": "yes" if p.pattern_id not in report.patterns_before else "no"}
                 for p in report.patterns],
                ["pattern_id", "confidence", "success_rate", "samples", "new"])
    if report.chaos:
        print(f"\nchaos: {report.chaos}.")
        verdict = "nothing lost" if not report.unsettled else f"{report.unsettled} pair(s) NOT settled"
        print(f"chaos: every (signal, target) pair ended PROCESSED or dead-lettered — {verdict}; the "
              f"executor resumed from its saved state (open positions included).")
    print(f"""
dig further:
  hivebus signals --limit 10              hivebus signal show <signal_id>
  hivebus decisions trade-executor --success   hivebus decision show <decision_id>
  hivebus patterns                        hivebus pattern history <pattern_id>
  hivebus state show risk-manager         hivebus memory recall market-hunter whale
  hivebus redis-cli XINFO GROUPS '{keys.inbox("trade-executor")}'
  hivebus redis-cli HLEN '{keys.pending("trade-executor")}'      (its backlog)
  hivebus redis-cli HGETALL '{keys.state("trade-executor")}'""")
