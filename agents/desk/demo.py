"""``hivebus demo``: the trading desk end to end — managed Redis, the coordinator and three agents
as separate processes, a seeded market, live progress, a report every number of which can be
checked with ``hivebus signals``, ``decisions`` and ``patterns``, and a clean stop.

The demo drives the market in lock-step: it publishes one MARKET_TICK and waits until that tick
and every signal it caused have settled for every target before the next, so the same seed gives
the same run. A second demo in the same directory continues from the saved state and learned
patterns; ``--fresh`` starts blank; ``--chaos`` SIGKILLs the executor halfway and restarts it.
"""

from __future__ import annotations

import dataclasses
import os
import signal as os_signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from hivebus.agents.desk.feed import FEED_AGENT_ID
from hivebus.agents.desk.market import MarketSimulator
from hivebus.agents.desk.report import AGENTS, Report, Tick, print_report
from hivebus.bus.bus import Bus
from hivebus.bus.registry import Registry
from hivebus.domain.errors import HivebusError
from hivebus.domain.keys import Keys
from hivebus.domain.models import TERMINAL_STATUSES, Signal
from hivebus.infra.connection import connected, redis_endpoint
from hivebus.infra.preflight import check_server, reset_namespace
from hivebus.infra.redis_errors import Redis
from hivebus.memory.state import StateStore
from hivebus.settings import Settings, redact_url
from hivebus.store import is_postgres, open_store

STARTUP_TIMEOUT_S = 30.0
TICK_TIMEOUT_S = 60.0
CHILD_SETTINGS = {"HIVEBUS_CLAIM_IDLE_S": "2", "HIVEBUS_HEARTBEAT_TTL_S": "2",
                  "HIVEBUS_CONSOLIDATE_INTERVAL_S": "2", "HIVEBUS_RETRY_BASE_S": "0.1"}


@dataclass
class Child:
    """A process the demo started."""

    name: str
    argv: list[str]
    process: subprocess.Popen[bytes]


class Desk:
    """Starts, kills and stops the demo's processes."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.children: dict[str, Child] = {}

    def start(self, name: str, argv: list[str]) -> Child:
        with open(self.logs / f"{name}.log", "ab") as out:
            process = subprocess.Popen([sys.executable, "-m", "hivebus", *argv], env=self.env,
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self.children[name] = Child(name, argv, process)
        return self.children[name]

    def check(self) -> None:
        for child in self.children.values():
            if child.process.poll() is not None:
                raise HivebusError(f"{child.name} exited early with code {child.process.returncode} "
                                   f"(see {self.logs}/{child.name}.log)")

    def stop(self, timeout: float = 15.0) -> list[str]:
        """SIGTERM every child, wait, SIGKILL stragglers; return problems seen."""
        problems = []
        for child in self.children.values():
            if child.process.poll() is None:
                child.process.send_signal(os_signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children.values():
            try:
                code = child.process.wait(max(0.1, deadline - time.monotonic()))
                if code != 0:
                    problems.append(f"{child.name} exited with code {code}")
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
                problems.append(f"{child.name} did not stop within {timeout:.0f}s and was killed")
        return problems


async def run_demo(settings: Settings, *, cycles: int, seed: int, speed: float, keep_running: bool,
                   fresh: bool, chaos: bool) -> int:
    """Run the demo; return the exit code."""
    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    logs = settings.home / "logs"
    logs.mkdir(exist_ok=True, mode=0o700)
    with redis_endpoint(settings) as url:
        where = "" if settings.redis_url else f" (managed, data in {settings.home}/)"
        print(f"redis     {redact_url(url)}{where}")
        async with connected(url, client_name="hivebus-demo", settings=settings, check=not fresh) as redis:
            if fresh:
                await _forget_everything(redis, settings)
                await check_server(redis, settings)
            env = {**os.environ, **CHILD_SETTINGS, "HIVEBUS_REDIS_URL": url,
                   "HIVEBUS_NAMESPACE": settings.namespace,
                   "HIVEBUS_STORE": str(settings.store or settings.store_path)}
            desk = Desk(env, logs)
            try:
                desk.start("coordinator", ["coordinator"])
                for agent_id in AGENTS:  # built-in agents, each under its own name
                    desk.start(agent_id, ["agent", "run", agent_id, "--id", agent_id])
                pids = ", ".join(str(c.process.pid) for c in desk.children.values())
                print(f"started   coordinator + {len(AGENTS)} agents as processes (pids {pids}; "
                      f"logs in {logs}/)")
                report = await _drive(redis, settings, desk, cycles, seed, speed, chaos)
                if keep_running:
                    print("\nrunning; press Ctrl-C to stop everything")
                    await _wait_until_interrupted()
            except BaseException:
                print("\nstopping  every process the demo started", file=sys.stderr)
                raise
            finally:
                problems = desk.stop()
            await _final_pass(redis, settings, report)
            print_report(report, Keys(settings.namespace))
        for problem in problems:
            print(f"problem   {problem}", file=sys.stderr)
        print("stopped   every process the demo started")
        return 1 if problems or report.unsettled else 0


async def _forget_everything(redis: Redis, settings: Settings) -> None:
    """--fresh: delete this namespace's keys and the durable store."""
    removed = await reset_namespace(redis, settings)
    if is_postgres(settings):  # a database may hold more than this demo's: never wiped
        print(f"fresh     removed {removed} key(s); the PostgreSQL store is kept")
        return
    for suffix in ("", "-wal", "-shm"):
        await anyio.Path(f"{settings.store_path}{suffix}").unlink(missing_ok=True)
    print(f"fresh     removed {removed} key(s) and the durable store")


async def _wait_until_interrupted() -> None:
    with anyio.open_signal_receiver(os_signal.SIGINT, os_signal.SIGTERM) as received:
        async for _ in received:
            return


async def _poll(predicate: Any, limit_s: float, what: str, desk: Desk) -> None:
    """Poll state that lives in Redis and other processes until ``predicate`` holds."""
    with anyio.move_on_after(limit_s):
        while True:
            desk.check()
            if await predicate():
                return
            await anyio.sleep(0.005)
    raise HivebusError(f"timed out after {limit_s:.0f}s waiting for {what}")


async def _name_foreign_subscribers(registry: Registry) -> None:
    """Say which agents outside the desk subscribe to its signal types (they receive its
    signals; the demo does not wait for them)."""
    agents = await registry.list_agents()
    desk_types = {t for a in agents if a.agent_id in AGENTS for t in a.subscriptions}
    foreign = sorted(a.agent_id for a in agents
                     if a.agent_id not in AGENTS and set(a.subscriptions) & desk_types)
    if foreign:
        print(f"note      {', '.join(foreign)} also subscribe(s) to the desk's signal types and "
              f"receive(s) its signals; the demo does not wait for them (remove one with "
              f"'hivebus agent remove ID', or run the demo under another HIVEBUS_NAMESPACE)", flush=True)


class Settler:
    """Follows the signal log and says when every signal so far has settled for every target."""

    def __init__(self, bus: Bus, heads: list[str]) -> None:
        self.bus = bus
        self.heads = heads  # where each shard of the signal log was last read
        self.open: dict[str, list[str]] = {}
        self.seen: list[str] = []

    async def _follow(self) -> bool:
        """Take in the signals logged since the last look; whether there were any."""
        entries, self.heads = await self.bus.logged_after(self.heads)
        for _entry_id, fields in entries:
            self.seen.append(fields["id"])
            # the desk's own agents only: an agent someone else started is not waited for
            self.open[fields["id"]] = [t for t in fields.get("to", "").split(",") if t in AGENTS]
        return bool(entries)

    async def settled(self) -> bool:
        await self._follow()
        if self.open:
            await self._settle_open()
        # a handler publishes before its cause settles, so a signal logged between the first
        # look and the status check would be missed: look again, and only an empty look counts
        return not self.open and not await self._follow()

    async def _settle_open(self) -> None:
        pairs = [(signal_id, target) for signal_id, targets in self.open.items() for target in targets]
        unsettled = {signal_id for (signal_id, _), status in zip(pairs, await self.bus.statuses(pairs),
                                                                  strict=True)
                     if status not in TERMINAL_STATUSES}
        for signal_id in list(self.open):
            if signal_id not in unsettled:
                del self.open[signal_id]


async def _drive(redis: Redis, settings: Settings, desk: Desk, cycles: int, seed: int, speed: float,
                 chaos: bool) -> Report:
    registry, bus = Registry(redis, settings), Bus(redis, settings)

    async def desk_alive() -> bool:
        agents = {a.agent_id: a for a in await registry.list_agents()}
        return all(agent_id in agents and agents[agent_id].alive for agent_id in AGENTS)

    await _poll(desk_alive, STARTUP_TIMEOUT_S, "the agents to register", desk)
    await _name_foreign_subscribers(registry)
    report = await Report.begin(redis, settings, seed, cycles)
    settler = Settler(bus, await bus.log_heads())
    market = MarketSimulator(seed)
    for _ in range(report.start_cycle):  # a continued desk continues the same market
        market.tick()
    print(f"feeding   {cycles} market ticks (seed {seed}); desk starts at cycle {report.start_cycle}, "
          f"{len(report.patterns_before)} pattern(s) already learned")
    started = time.monotonic()
    for n in range(1, cycles + 1):
        tick = Signal.create("MARKET_TICK", FEED_AGENT_ID, data=market.tick(), ttl_s=settings.signal_ttl_s)
        first = len(settler.seen)
        await bus.publish(tick)
        if chaos and n == cycles // 2:
            await _chaos(redis, settings, desk, report, n)
        await _poll(settler.settled, TICK_TIMEOUT_S, f"tick {n} to settle", desk)
        report.ticks.append(Tick(tick.signal_id, round(tick.created_at * 1000), first, len(settler.seen)))
        if n % max(1, cycles // 10) == 0 or n == cycles:
            executor = await StateStore(redis, settings).load("trade-executor")
            perf = executor.context_performance if executor else {}
            print(f"cycle     {n:>4}/{cycles}  signals {len(settler.seen):>5}  trades "
                  f"{int(perf.get('trades_closed', 0)) - report.trades_before:>4}  P&L "
                  f"{float(perf.get('pnl', 0.0)) - report.pnl_before:+10.2f}", flush=True)
        if speed > 0:
            await anyio.sleep(max(0.0, n / speed - (time.monotonic() - started)))
    report.run_s = time.monotonic() - started
    report.signal_ids = list(settler.seen)
    await report.collect(redis, settings)
    report.write_latencies(settings.home / "logs" / "tick_latency.csv")
    return report


async def _chaos(redis: Redis, settings: Settings, desk: Desk, report: Report, cycle: int) -> None:
    """SIGKILL the executor in the middle of its work and start it again."""
    keys = Keys(settings.namespace)
    victim = desk.children["trade-executor"]
    victim.process.kill()
    victim.process.wait()
    pending = await redis.xpending(keys.inbox("trade-executor"), "trade-executor")
    in_flight = int(pending["pending"]) if pending else 0
    restarted = desk.start("trade-executor", victim.argv)
    report.chaos = (f"SIGKILLed trade-executor (pid {victim.process.pid}) at cycle {cycle} with "
                    f"{in_flight} signal(s) delivered but not acked; restarted it as pid "
                    f"{restarted.process.pid}; its signals were reclaimed once the dead replica's "
                    f"heartbeat expired ({CHILD_SETTINGS['HIVEBUS_CLAIM_IDLE_S']} s idle)")
    print(f"chaos     {report.chaos}")


async def _final_pass(redis: Redis, settings: Settings, report: Report) -> None:
    """Learn from the last outcomes once the coordinator process has stopped."""
    from hivebus.service.coordinator import Coordinator

    child_settings = dataclasses.replace(settings, lease_ttl_s=2.0)
    store = await open_store(settings)
    try:
        with anyio.fail_after(30):
            while True:
                try:
                    await Coordinator(redis, child_settings, store).once()
                    break
                except HivebusError:
                    await anyio.sleep(0.2)  # the stopped coordinator's lease is still running out
        await report.finish(redis, settings, store)
    finally:
        await store.close()

