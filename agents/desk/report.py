"""The demo's report: what this run did, in numbers a person can check with the CLI afterwards.

Tick latency is measured from records in Redis, not from the demo's own waiting: a tick's
``created_at`` (stamped by the demo as it publishes the tick) to the moment the last of the signals
it caused was settled by its last target. Settle times come from the targets' ``done`` ledgers,
where the settle script records every settled signal id with the time of the settle plus the
ledger's keep time (``Settings.ledger_ttl_ms``). The signals a tick caused are the ones whose
``correlation_id`` names it (a signal published while handling carries its cause's correlation
id, or its cause's id when the cause has none, as a tick has not), read from the signal's entry
in a target's inbox; a signal whose entry is gone is counted with the tick the lock-step demo was
waiting on when it was logged. ``hivebus demo`` prints p50/p95/max for the first and the last 200
ticks of the run (a fifth of a run shorter than 1000 ticks) and writes every tick's figures to
``<home>/logs/tick_latency.csv``.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hivebus.bus.bus import Bus
from hivebus.cli.output import print_table
from hivebus.domain.keys import Keys
from hivebus.domain.models import TERMINAL_STATUSES
from hivebus.infra.redis_errors import Redis
from hivebus.memory.decisions import DecisionLog
from hivebus.memory.state import StateStore
from hivebus.settings import Settings
from hivebus.store import open_store, store_exists
from hivebus.store.base import MemoryPattern, Store

AGENTS = ("market-hunter", "risk-manager", "trade-executor")
LATENCY_WINDOW = 200  # ticks compared at the start and at the end of a run (a fifth of a shorter one)
PIPELINE_CHUNK = 1000  # commands per pipeline, ids per ZMSCORE


@dataclass
class Tick:
    """One MARKET_TICK the demo published, and the slice of ``Report.signal_ids`` (the tick first)
    logged while the demo waited for it to settle."""

    signal_id: str
    published_ms: float
    first: int
    end: int


@dataclass
class TickLatency:
    """How long one tick took to settle with everything it caused, in ms after its publish:
    in all, and until each agent had settled its last part of it."""

    run_tick: int
    signal_id: str
    signals: int
    total_ms: float
    by_agent: dict[str, float]


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
    ticks: list[Tick] = field(default_factory=list)
    latencies: list[TickLatency] = field(default_factory=list)
    unmeasured_ticks: int = 0
    by_correlation: int = 0  # follow-ups matched to their tick by correlation id
    by_window: int = 0  # ... by the lock-step window they were logged in (their fields were gone)
    run_s: float = 0.0
    latency_file: Path | None = None

    @classmethod
    async def begin(cls, redis: Redis, settings: Settings, seed: int, cycles: int) -> Report:
        """Note where the desk starts from."""
        report = cls(seed=seed, cycles=cycles, started_at=time.time())
        states = StateStore(redis, settings)
        hunter, executor = await states.load("market-hunter"), await states.load("trade-executor")
        report.start_cycle = hunter.current_cycle if hunter else 0
        perf = executor.context_performance if executor else {}
        report.trades_before = int(perf.get("trades_closed", 0))
        report.wins_before = int(perf.get("wins", 0))
        report.pnl_before = float(perf.get("pnl", 0.0))
        if store_exists(settings):
            store = await open_store(settings)
            try:
                report.patterns_before = {p.pattern_id for p in await store.query_patterns(viewer=None)}
            finally:
                await store.close()
        return report

    async def collect(self, redis: Redis, settings: Settings) -> None:
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
            self.unsettled += status not in TERMINAL_STATUSES and target in AGENTS  # not foreign ones
        await self._measure_latencies(redis, settings, records)
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

    async def _measure_latencies(self, redis: Redis, settings: Settings,
                                 records: list[dict[str, Any] | None]) -> None:
        """Each tick's latency: its publish to the last settle of a signal it caused (itself included)."""
        keys = Keys(settings.namespace)
        tick_at = {tick.signal_id: n for n, tick in enumerate(self.ticks)}
        owner: list[int | None] = [None] * len(self.signal_ids)
        for n, tick in enumerate(self.ticks):
            for i in range(tick.first, tick.end):
                owner[i] = n  # the tick the demo was waiting on when the signal was logged
        correlations = await _correlation_ids(redis, keys, records)
        for i, (signal_id, correlation) in enumerate(zip(self.signal_ids, correlations, strict=True)):
            if signal_id in tick_at:
                owner[i] = tick_at[signal_id]
            elif correlation in tick_at:
                owner[i] = tick_at[correlation]
                self.by_correlation += 1
            elif owner[i] is not None:
                self.by_window += 1
        settled = await _settle_times(redis, keys, settings, self.signal_ids, records)
        members: list[list[int]] = [[] for _ in self.ticks]
        for i, owning in enumerate(owner):
            if owning is not None:
                members[owning].append(i)
        for n, tick in enumerate(self.ticks):
            by_agent: dict[str, float] = {}
            complete = True
            for i in members[n]:
                signal_id, record = self.signal_ids[i], records[i]
                for target in record["to"] if record else {}:
                    if target not in AGENTS:
                        continue  # an agent outside the desk: not waited for, not timed
                    at = settled.get((signal_id, target))
                    if at is None:
                        complete = False
                        continue
                    by_agent[target] = max(by_agent.get(target, 0.0), at - tick.published_ms)
            if not complete or not by_agent:
                self.unmeasured_ticks += 1
                continue
            self.latencies.append(TickLatency(n + 1, tick.signal_id, len(members[n]),
                                              max(by_agent.values()), by_agent))

    def latency_windows(self) -> tuple[int, list[TickLatency], list[TickLatency]]:
        """The window size and the first and last ``window`` ticks measured: 200 each, or a fifth
        of a run shorter than 1000 ticks (at least one)."""
        window = max(1, min(LATENCY_WINDOW, len(self.latencies) // 5))
        return window, self.latencies[:window], self.latencies[-window:]

    def write_latencies(self, path: Path) -> None:
        """Every measured tick's latency, as CSV, for a closer look."""
        with open(path, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["run_tick", "desk_cycle", "signal_id", "signals", "total_ms",
                             *(f"{agent}_ms" for agent in AGENTS)])
            for row in self.latencies:
                writer.writerow([row.run_tick, self.start_cycle + row.run_tick, row.signal_id, row.signals,
                                 f"{row.total_ms:.0f}", *(f"{row.by_agent[a]:.0f}" if a in row.by_agent
                                                          else "" for a in AGENTS)])
        self.latency_file = path

    async def finish(self, redis: Redis, settings: Settings, store: Store) -> None:
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


async def _correlation_ids(redis: Redis, keys: Keys,
                           records: list[dict[str, Any] | None]) -> list[str | None]:
    """Each signal's correlation id, read from its entry in a target's inbox (the signal key keeps
    the fields only of a signal that had no target); None when the entry is gone."""
    found: list[str | None] = [None] * len(records)
    asked = []
    for i, record in enumerate(records):
        if record is None:
            continue
        fields = record.get("fields")
        if isinstance(fields, dict):
            found[i] = fields.get("correlation_id")
        elif record["to"]:
            target, entry = min(record["to"].items())
            asked.append((i, keys.inbox(target), entry))
    for start in range(0, len(asked), PIPELINE_CHUNK):
        chunk = asked[start:start + PIPELINE_CHUNK]
        pipe = redis.pipeline(transaction=False)
        for _, inbox, entry in chunk:
            pipe.xrange(inbox, entry, entry, count=1)
        for (i, _, _), entries in zip(chunk, await pipe.execute(raise_on_error=False), strict=True):
            if isinstance(entries, list) and entries:
                found[i] = entries[0][1].get("correlation_id")
    return found


async def _settle_times(redis: Redis, keys: Keys, settings: Settings, signal_ids: list[str],
                        records: list[dict[str, Any] | None]) -> dict[tuple[str, str], float]:
    """When each (signal, target) pair was settled, in ms: a done ledger's score is the settle's
    time plus the ledger's keep time (see coordinator/infra/lua/settle.lua)."""
    by_target: dict[str, list[str]] = {}
    for signal_id, record in zip(signal_ids, records, strict=True):
        for target in record["to"] if record else {}:
            by_target.setdefault(target, []).append(signal_id)
    asked = [(target, ids[start:start + PIPELINE_CHUNK]) for target, ids in by_target.items()
             for start in range(0, len(ids), PIPELINE_CHUNK)]
    settled: dict[tuple[str, str], float] = {}
    for target, chunk in asked:
        scores = await redis.zmscore(keys.done(target), chunk)
        for signal_id, score in zip(chunk, scores, strict=True):
            if score is not None:
                settled[signal_id, target] = float(score) - settings.ledger_ttl_ms
    return settled


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def print_latency(report: Report) -> None:
    """Tick latency at the start and at the end of the run; every line starts with "latency"
    (its figures differ from run to run)."""
    print("\nlatency   per tick, in ms: MARKET_TICK published (its created_at) -> the last signal it caused "
          "settled by its last target\nlatency   (the targets' done ledgers); by agent: until that agent "
          "had settled its last part of the tick")
    if not report.latencies:
        print("latency   no tick measured")
        return
    window, first, last = report.latency_windows()

    def figures(rows: list[TickLatency]) -> list[float]:
        totals = [r.total_ms for r in rows]
        return [percentile(totals, 50), percentile(totals, 95), max(totals),
                *(percentile([r.by_agent.get(a, 0.0) for r in rows], 50) for a in AGENTS)]

    head, tail = figures(first), figures(last)
    label = f"ticks {{}}-{{}} of {len(report.latencies)}"
    rows = [(label.format(first[0].run_tick, first[-1].run_tick), [f"{v:.1f}" for v in head]),
            (label.format(last[0].run_tick, last[-1].run_tick), [f"{v:.1f}" for v in tail]),
            ("last / first", [f"{t / h:.2f}x" if h > 0 else "-" for h, t in zip(head, tail, strict=True)])]
    width = max(len(name) for name, _ in rows)
    print(f"latency   {'':<{width}}  {'p50':>7}  {'p95':>7}  {'max':>7}   p50 by agent: "
          f"{'hunter':>7}  {'risk':>7}  {'executor':>8}")
    for name, cells in rows:
        print(f"latency   {name:<{width}}  {cells[0]:>7}  {cells[1]:>7}  {cells[2]:>7}   {'':13} "
              f"{cells[3]:>7}  {cells[4]:>7}  {cells[5]:>8}")
    basis = "200 each" if window == LATENCY_WINDOW else f"a fifth of the run each ({window})"
    extra = (f"; {report.unmeasured_ticks} tick(s) not fully settled, left out"
             if report.unmeasured_ticks else "")
    matched = f"follow-ups matched by correlation id: {report.by_correlation}"
    if report.by_window:
        matched += f", by the lock-step window they were logged in: {report.by_window}"
    where = f"; every tick in {report.latency_file}" if report.latency_file else ""
    print(f"latency   first and last ticks: {basis}{extra}; {matched}")
    print(f"latency   {len(report.ticks)} ticks fed in {report.run_s:.1f} s{where}")


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
    print_latency(report)
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
