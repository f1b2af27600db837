"""Chaos run: signals through three agents with two replicas each, while replicas are killed at
random and Redis is restarted once; at the end every (signal, target) pair is accounted for.

    python -m bench.chaos --signals 5000 --kill-every 100

It starts its own redis-server (AOF, appendfsync always) on a free loopback port, runs the
agents as real processes (``bench.agents:Counter``, whose effect is one HINCRBY per signal,
applied with the ack), and prints the counts. Exit code 0 when nothing was lost and nothing
applied twice.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
from redis import exceptions as redis_errors

from coordinator.bus import Bus
from coordinator.connection import open_client
from coordinator.errors import RedisUnavailable
from coordinator.keys import Keys
from coordinator.managed_redis import find_binaries, free_port
from coordinator.models import TERMINAL_STATUSES, Signal
from coordinator.settings import Settings

AGENTS = ("w1", "w2", "w3")
REPO = Path(__file__).resolve().parent.parent


@dataclass
class ChaosResult:
    """What a chaos run saw."""

    signals: int
    pairs: int
    kills: int
    redis_restarts: int
    processed: int
    dead: int
    lost: int
    applied_twice: int
    seconds: float

    def line(self) -> str:
        """The counts, for people."""
        return (f"chaos: {self.signals} signals x {len(AGENTS)} targets = {self.pairs} pairs, "
                f"{self.kills} replica kills, {self.redis_restarts} Redis restart: "
                f"{self.processed} processed, {self.dead} dead-lettered, {self.lost} lost, "
                f"{self.applied_twice} applied twice ({self.seconds:.1f} s)")


def _redis_argv(binary: str, port: int, workdir: Path) -> list[str]:
    return [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
            "--appendonly", "yes", "--appendfsync", "always"]


class _Processes:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.all: list[subprocess.Popen[bytes]] = []

    def agent(self, agent_id: str) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{agent_id}-{len(self.all)}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "coordinator", "agent", "run", "bench.agents:Counter",
                 "--id", agent_id],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.all.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.all:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.all:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def run_chaos(signals: int, kill_every: int, workdir: Path, seed: int = 11) -> ChaosResult:
    """Run the chaos scenario in ``workdir``; return the counts."""
    binaries = find_binaries()
    port = free_port()
    redis_dir = workdir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    server = await anyio.open_process(_redis_argv(binaries.server, port, redis_dir))
    url = f"redis://127.0.0.1:{port}/0"
    namespace = "chaos"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HIVEBUS_")},
           "PYTHONPATH": str(REPO), "HIVEBUS_REDIS_URL": url, "HIVEBUS_NAMESPACE": namespace,
           "HIVEBUS_CLAIM_IDLE_S": "1", "HIVEBUS_HEARTBEAT_TTL_S": "1.5", "HIVEBUS_RETRY_BASE_S": "0.05",
           "HIVEBUS_LOG_FORMAT": "json", "HIVEBUS_HOME": str(workdir / ".hivebus")}
    procs = _Processes(env, workdir)
    rng = random.Random(seed)
    keys = Keys(namespace)
    started = time.monotonic()
    replicas = {(a, n): procs.agent(a) for a in AGENTS for n in range(2)}
    client = open_client(url)
    bus = Bus(client, Settings(namespace=namespace, home=workdir))
    sent: list[Signal] = []
    kills = restarts = 0
    try:
        await _until(lambda: _registered(client, keys), 30)
        for n in range(signals):
            signal = Signal.create("WORK", "chaos", targets=list(AGENTS), data={"n": n})
            while True:  # a publisher retries with the same id: never a second signal
                try:
                    await bus.publish(signal)
                    break
                except RedisUnavailable:
                    await anyio.sleep(0.1)
            sent.append(signal)
            if n % kill_every == kill_every - 1:
                victim = rng.choice(sorted(replicas))
                replicas[victim].kill()
                replicas[victim].wait()
                kills += 1
                replicas[victim] = procs.agent(victim[0])
            if n == signals // 2:
                server.terminate()
                await server.wait()
                server = await anyio.open_process(_redis_argv(binaries.server, port, redis_dir))
                restarts += 1
        await _until(lambda: _all_settled(bus, sent), 180)
        statuses = await _statuses(bus, sent)
        applied = await client.hgetall(f"{keys.prefix}test:applied")
    finally:
        procs.stop()
        await client.aclose()
        server.terminate()
        await server.wait()
    processed = sum(row.count("PROCESSED") for row in statuses)
    dead = sum(row.count("DEAD") for row in statuses)
    counts = [int(applied.get(s.signal_id, 0)) for s in sent]
    return ChaosResult(
        signals=len(sent), pairs=len(sent) * len(AGENTS), kills=kills, redis_restarts=restarts,
        processed=processed, dead=dead, lost=len(sent) * len(AGENTS) - processed - dead,
        applied_twice=sum(max(0, c - len(AGENTS)) for c in counts),
        seconds=time.monotonic() - started)


async def _registered(client: object, keys: Keys) -> bool:
    return bool(await client.scard(keys.agents()) >= len(AGENTS))  # type: ignore[attr-defined]


async def _statuses(bus: Bus, sent: list[Signal]) -> list[list[str]]:
    """Each signal's status per target, as text."""
    found = iter(await bus.statuses([(s.signal_id, a) for s in sent for a in AGENTS]))
    return [[next(found).value for _ in AGENTS] for _ in sent]


async def _all_settled(bus: Bus, sent: list[Signal]) -> bool:
    final = {t.value for t in TERMINAL_STATUSES}
    return all(v in final for row in await _statuses(bus, sent) for v in row)


async def _until(predicate: object, limit_s: float) -> None:
    """Poll ``predicate`` (state in Redis and other processes) until true; raise after the limit."""
    with anyio.fail_after(limit_s):
        while True:
            try:
                if await predicate():  # type: ignore[operator]
                    return
            except (RedisUnavailable, redis_errors.ConnectionError):
                pass  # the server is still starting (or loading its AOF after the restart)
            await anyio.sleep(0.2)


def main() -> None:
    """``python -m bench.chaos``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=3000)
    parser.add_argument("--kill-every", type=int, default=100, help="kill a replica every N signals")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hivebus-chaos-") as tmp:
        result = anyio.run(run_chaos, args.signals, args.kill_every, Path(tmp), args.seed)
    print(result.line())
    raise SystemExit(0 if result.lost == 0 and result.applied_twice == 0 else 1)


if __name__ == "__main__":
    main()
