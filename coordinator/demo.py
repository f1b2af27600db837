"""``hivebus demo``: the coordinator and the three-agent desk as separate processes, end to end.

It starts (or joins) Redis, starts the coordinator and the market hunter, risk
manager and trade executor as their own OS processes, feeds seeded market ticks,
waits until every signal reached a final status for every target, prints a
summary and the commands to look deeper, and stops everything it started.
"""

from __future__ import annotations

import os
import signal as os_signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from coordinator.bus import Bus
from coordinator.connection import connected, redis_endpoint
from coordinator.errors import HivebusError
from coordinator.feed import run_feed
from coordinator.keys import Keys
from coordinator.models import TERMINAL_STATUSES
from coordinator.output import print_table
from coordinator.registry import Registry
from coordinator.settings import Settings, redact_url

DESK = (("market-hunter", "market-hunter"), ("risk-manager", "risk-manager"),
        ("trade-executor", "trade-executor"))
STARTUP_TIMEOUT_S = 30.0
SETTLE_TIMEOUT_S = 60.0


@dataclass
class Child:
    """A process the demo started, with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path


def _spawn(name: str, argv: list[str], env: dict[str, str], logs: Path) -> Child:
    log = logs / f"{name}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "coordinator", *argv],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    return Child(name, process, log)


def _stop_all(children: list[Child], timeout: float = 15.0) -> list[str]:
    """SIGTERM every child, wait, SIGKILL stragglers; return problems seen."""
    problems = []
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(os_signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            code = child.process.wait(max(0.1, deadline - time.monotonic()))
            if code != 0:
                problems.append(f"{child.name} exited with code {code}")
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
            problems.append(f"{child.name} did not stop within {timeout:.0f}s and was killed")
    return problems


async def _wait_for(predicate: Any, limit_s: float, what: str) -> None:
    """Poll ``predicate`` (state in other processes, so no event to wait on) until true."""
    with anyio.move_on_after(limit_s):
        while not await predicate():  # noqa: ASYNC110 - the state lives in Redis and child processes
            await anyio.sleep(0.05)
        return
    raise HivebusError(f"timed out after {limit_s:.0f}s waiting for {what}")


async def run_demo(
    settings: Settings, *, ticks: int, seed: int, interval_s: float, keep_running: bool
) -> int:
    """Run the demo; return the exit code."""
    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    logs = settings.home / "logs"
    logs.mkdir(exist_ok=True, mode=0o700)
    with redis_endpoint(settings) as url:
        print(f"redis     {redact_url(url)}" + ("" if settings.redis_url else " (managed, data in "
                                                 f"{settings.home}/)"))
        env = {**os.environ, "HIVEBUS_REDIS_URL": url, "HIVEBUS_NAMESPACE": settings.namespace}
        children: list[Child] = []
        try:
            children.append(_spawn("coordinator", ["coordinator"], env, logs))
            for spec, agent_id in DESK:
                children.append(_spawn(agent_id, ["agent", "run", spec, "--id", agent_id], env, logs))
            print(f"started   coordinator + {len(DESK)} agents as processes "
                  f"(pids {', '.join(str(c.process.pid) for c in children)}; logs in {logs}/)")
            async with connected(url, client_name="hivebus-demo", settings=settings) as redis:
                code = await _drive(redis, settings, ticks, seed, interval_s, children)
                if keep_running:
                    print("\nrunning; press Ctrl-C to stop everything")
                    await _wait_until_interrupted()
        finally:
            problems = _stop_all(children)
        for problem in problems:
            print(f"problem   {problem}", file=sys.stderr)
        print("stopped   every process the demo started")
        return 1 if problems else code


async def _wait_until_interrupted() -> None:
    with anyio.open_signal_receiver(os_signal.SIGINT, os_signal.SIGTERM) as received:
        async for _ in received:
            return


async def _drive(
    redis: Any, settings: Settings, ticks: int, seed: int, interval_s: float, children: list[Child]
) -> int:
    registry, bus, keys = Registry(redis, settings), Bus(redis, settings), Keys(settings.namespace)

    async def desk_alive() -> bool:
        for child in children:
            if child.process.poll() is not None:
                raise HivebusError(f"{child.name} exited early with code {child.process.returncode}"
                                   f" (see {settings.home}/logs/{child.name}.log)")
        agents = {a.agent_id: a for a in await registry.list_agents()}
        return all(agent_id in agents and agents[agent_id].alive for _, agent_id in DESK)

    await _wait_for(desk_alive, STARTUP_TIMEOUT_S, "the agents to register")
    before = {a.agent_id: dict(a.counters) for a in await registry.list_agents()}
    last = await redis.xrevrange(keys.signal_log(), count=1)
    start_entry = last[0][0] if last else "0-0"
    print(f"feeding   {ticks} market ticks (seed {seed})")
    await run_feed(bus, count=ticks, interval_s=interval_s, seed=seed)

    async def run_signals() -> list[str]:
        entries = await redis.xrange(keys.signal_log(), min=f"({start_entry}")
        return [fields["id"] for _, fields in entries]

    async def all_settled() -> bool:
        await desk_alive()
        for signal_id in await run_signals():
            report = await bus.report(signal_id)
            if any(t.status not in TERMINAL_STATUSES for t in report.targets):
                return False
        return True

    await _wait_for(all_settled, SETTLE_TIMEOUT_S, "every signal to be processed")
    statuses: dict[str, int] = {}
    by_type: dict[str, int] = {}
    for signal_id in await run_signals():
        report = await bus.report(signal_id)
        by_type[report.signal.signal_type] = by_type.get(report.signal.signal_type, 0) + 1
        for target in report.targets:
            statuses[target.status.value] = statuses.get(target.status.value, 0) + 1
    after = {a.agent_id: a.counters for a in await registry.list_agents()}
    _print_summary(before, after, by_type, statuses, keys)
    return 0 if set(statuses) <= {"PROCESSED"} else 1


def _print_summary(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]],
    by_type: dict[str, int], statuses: dict[str, int], keys: Keys,
) -> None:
    print("\nsignals this run: " + ", ".join(f"{n} {t}" for t, n in sorted(by_type.items())))
    print("deliveries:       " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())))
    print()
    rows = []
    for _, agent_id in DESK:
        old, new = before.get(agent_id, {}), after.get(agent_id, {})
        rows.append({"agent": agent_id, **{k: new.get(k, 0) - old.get(k, 0)
                                           for k in ("published", "processed", "dead")}})
    print_table(rows, ["agent", "published", "processed", "dead"])
    p = keys.prefix
    print(f"""
look deeper (the managed Redis starts again for each command):
  hivebus agents                                   # who ran, liveness, counters
  hivebus signals --limit 10                       # the last 10 signals
  hivebus signal show <signal_id>                  # status per target
  hivebus redis-cli XINFO GROUPS {p}stream:trade-executor     # pending + lag of one agent
  hivebus redis-cli XPENDING {p}stream:risk-manager risk-manager   # delivered, not yet acked
  hivebus redis-cli XREVRANGE {p}signals + - COUNT 10          # the signal log
  hivebus redis-cli HGETALL {p}agent:market-hunter             # one agent's registry entry""")
