"""The benchmark workloads. Each returns one repetition's figures; ``bench.__main__`` repeats them,
takes medians, and writes the results. Every process, server and payload is the same for hivebus
and its baselines within one run."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import redis.asyncio as aioredis

from coordinator.bus import Bus
from coordinator.connection import open_client
from coordinator.keys import Keys
from coordinator.memory import ShortTermMemory
from coordinator.models import Severity, Signal
from coordinator.registry import Instance, Registry
from coordinator.settings import Settings
from coordinator.state import AgentState, StateStore

REPO = Path(__file__).resolve().parent.parent
PAYLOAD = {"amount_btc": 1500.0, "price": 45000.0, "direction": 1.0}


@dataclass
class Env:
    """Where a workload runs: a Redis URL and a fresh namespace per repetition."""

    url: str
    namespace: str
    workdir: Path

    @property
    def settings(self) -> Settings:
        return Settings(namespace=self.namespace, home=self.workdir, read_block_ms=100)

    def child_env(self) -> dict[str, str]:
        return {**{k: v for k, v in os.environ.items() if not k.startswith("HIVEBUS_")},
                "PYTHONPATH": str(REPO), "HIVEBUS_REDIS_URL": self.url,
                "HIVEBUS_NAMESPACE": self.namespace, "HIVEBUS_LOG_LEVEL": "warning",
                "HIVEBUS_HOME": str(self.workdir / ".hivebus")}


def whale(n: int, targets: list[str]) -> Signal:
    """The benchmark payload: a WHALE_ACTIVITY-like WORK signal with a small data object."""
    return Signal.create("WORK", "bench", targets=targets, severity=Severity.HIGH, confidence=0.8,
                         data={**PAYLOAD, "n": float(n), "sent_at": time.time()})


def _agent(env: Env, spec: str, agent_id: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "coordinator", "agent", "run", spec, "--id", agent_id],
                            env=env.child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _baseline(env: Env, kind: str, stream: str, count: int, mode: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "bench.consumers", kind, env.url, stream, str(count), mode]
    return subprocess.Popen(argv, env=env.child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _wait(predicate: Any, limit_s: float = 120) -> None:
    with anyio.fail_after(limit_s):
        while not await predicate():  # noqa: ASYNC110 - the state is in another process
            await anyio.sleep(0.002)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _hivebus_agent(env: Env, spec: str, agent_id: str) -> tuple[Any, subprocess.Popen[bytes]]:
    client = open_client(env.url)
    proc = _agent(env, spec, agent_id)

    async def alive() -> bool:
        return bool(await client.sismember(Keys(env.namespace).agents(), agent_id)) and bool(
            await client.exists(Keys(env.namespace).inbox(agent_id)))

    await _wait(alive, 30)
    return client, proc


async def hivebus_throughput(env: Env, count: int, batch: int) -> float:
    """Signals/s from first publish until the agent processed all (per call when batch == 1)."""
    client, proc = await _hivebus_agent(env, "bench.agents:Sink", "sink")
    bus, keys = Bus(client, env.settings), Keys(env.namespace)
    try:
        started = time.perf_counter()
        if batch == 1:
            for n in range(count):
                await bus.publish(whale(n, ["sink"]))
        else:
            for start in range(0, count, batch):
                await bus.publish_many([whale(n, ["sink"]) for n in range(start, min(count, start + batch))])

        async def done() -> bool:
            return int(await client.hget(keys.agent("sink"), "processed") or 0) >= count

        await _wait(done)
        return count / (time.perf_counter() - started)
    finally:
        _stop(proc)
        await client.aclose()


async def baseline_throughput(env: Env, kind: str, count: int, batch: int) -> float:
    """Messages/s for raw redis-py (per call or pipelined) or FastStream, same payload."""
    stream = f"{env.namespace}:baseline"
    client = aioredis.Redis.from_url(env.url)
    await client.xgroup_create(stream, "bench", id="$", mkstream=True)
    proc = _baseline(env, kind, stream, count, "batch" if batch > 1 else "percall")
    try:
        if kind == "faststream":
            from faststream.redis import RedisBroker

            broker = RedisBroker(env.url, logger=None)
            await broker.connect()
        await anyio.sleep(1.0 if kind == "faststream" else 0.3)  # the consumer subscribes
        started = time.perf_counter()
        for start in range(0, count, batch):
            msgs = [whale(n, ["sink"]).model_dump(mode="json")
                    for n in range(start, min(count, start + batch))]
            if kind == "faststream":
                for msg in msgs:
                    await broker.publish(msg, stream=stream)
            elif batch == 1:
                await client.xadd(stream, {"data": json.dumps(msgs[0])})
            else:
                pipe = client.pipeline(transaction=False)
                for msg in msgs:
                    pipe.xadd(stream, {"data": json.dumps(msg)})
                await pipe.execute()

        async def done() -> bool:
            return bool(await client.llen(f"{stream}:done"))

        await _wait(done)
        return count / (time.perf_counter() - started)
    finally:
        if kind == "faststream":
            await broker.stop()
        _stop(proc)
        await client.aclose()


async def latency(env: Env, kind: str, rate: int, seconds: float) -> list[float]:
    """Publish-to-handler latencies (ms) at ``rate`` signals/s for ``seconds``."""
    count = int(rate * seconds)
    if kind == "hivebus":
        client, proc = await _hivebus_agent(env, "bench.agents:LatencyProbe", "probe")
        bus = Bus(client, env.settings)
        result_key = f"{Keys(env.namespace).prefix}bench:latency"
    else:
        stream = f"{env.namespace}:latency"
        client = aioredis.Redis.from_url(env.url, decode_responses=True)
        await client.xgroup_create(stream, "bench", id="$", mkstream=True)
        proc = _baseline(env, kind, stream, count, "latency")
        result_key = f"{stream}:latency"
        if kind == "faststream":
            from faststream.redis import RedisBroker

            broker = RedisBroker(env.url, logger=None)
            await broker.connect()
        await anyio.sleep(1.0 if kind == "faststream" else 0.3)
    try:
        started = time.perf_counter()
        for n in range(count):
            await anyio.sleep(max(0.0, started + n / rate - time.perf_counter()))
            if kind == "hivebus":
                await bus.publish(whale(n, ["probe"]))
            elif kind == "faststream":
                await broker.publish(whale(n, []).model_dump(mode="json"), stream=stream)
            else:
                await client.xadd(stream, {"data": json.dumps(whale(n, []).model_dump(mode="json"))})

        async def done() -> bool:
            return int(await client.llen(result_key)) >= count

        await _wait(done)
        return sorted(float(x) for x in await client.lrange(result_key, 0, -1))
    finally:
        if kind == "faststream":
            await broker.stop()
        _stop(proc)
        await client.aclose()


async def fanout(env: Env, targets: int, bystanders: int, count: int) -> float:
    """Microseconds per publish of a signal to ``targets`` agents with ``bystanders`` others registered."""
    client = open_client(env.url)
    registry, bus = Registry(client, env.settings), Bus(client, env.settings)
    names = [f"t{n}" for n in range(targets)]
    for agent_id in names + [f"b{n}" for n in range(bystanders)]:
        await registry.register(agent_id, Instance.here(agent_id), agent_type="bench",
                                subscriptions=("WORK",), version="1")
    try:
        started = time.perf_counter()
        for n in range(count):
            await bus.publish(whale(n, names))
        return (time.perf_counter() - started) / count * 1e6
    finally:
        await client.aclose()


async def memory_per_signal(env: Env, count: int) -> dict[str, float]:
    """Redis bytes per retained signal per target (nothing trimmed), then the inbox length of a
    second agent under a cap of 1,000 entries after 5,000 signals (retention keeps it bounded)."""
    client = open_client(env.url)
    await client.flushall()
    roomy = env.settings.model_copy(update={"stream_maxlen": count * 2, "log_stream_maxlen": count * 2})
    capped = env.settings.model_copy(update={"stream_maxlen": 1000})
    for agent_id in ("m1", "m2"):
        await Registry(client, roomy).register(agent_id, Instance.here(agent_id), agent_type="bench",
                                               subscriptions=(), version="1")
    try:
        before = int((await client.info("memory"))["used_memory"])
        for start in range(0, count, 500):
            batch = [whale(n, ["m1"]) for n in range(start, min(count, start + 500))]
            await Bus(client, roomy).publish_many(batch)
        after = int((await client.info("memory"))["used_memory"])
        for start in range(0, 5000, 500):
            await Bus(client, capped).publish_many([whale(n, ["m2"]) for n in range(start, start + 500)])
        inbox = int(await client.xlen(Keys(env.namespace).inbox("m2")))
        return {"bytes_per_signal": (after - before) / count, "capped_inbox_len_after_5000": inbox,
                "inbox_cap": 1000}
    finally:
        await client.flushall()
        await client.aclose()


async def memory_api(env: Env, items: int) -> dict[str, float]:
    """remember/s, recall/s over ``items`` STM items, state save/s and load/s."""
    client = open_client(env.url)
    memory = ShortTermMemory(client, env.settings, "mem-1")
    states = StateStore(client, env.settings)
    try:
        started = time.perf_counter()
        for n in range(items):
            await memory.remember("note", f"whale {n % 97} accumulation btc", score=(n % 10) / 10)
        remember_rate = items / (time.perf_counter() - started)
        recalls = 20
        started = time.perf_counter()
        for _ in range(recalls):
            await memory.recall("whale accumulation", topk=10)
        recall_rate = recalls / (time.perf_counter() - started)
        state = await states.save(AgentState(agent_id="mem-1"))
        saves = 2000
        started = time.perf_counter()
        for n in range(saves):
            state = await states.save(state.model_copy(update={"current_cycle": n}))
        save_rate = saves / (time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(saves):
            await states.load("mem-1")
        load_rate = saves / (time.perf_counter() - started)
        return {"remember_per_s": remember_rate, "recall_per_s": recall_rate,
                "state_save_per_s": save_rate, "state_load_per_s": load_rate}
    finally:
        await client.aclose()


def coordinator_pass(env: Env, decisions: int) -> dict[str, float]:
    """Seconds and peak RSS of `hivebus coordinator --once` over ``decisions`` decisions."""
    sys.path.insert(0, str(REPO))
    from tests.decision_factory import write_decisions

    write_decisions(env.url, env.namespace, decisions, seed=1)
    child_env = {**env.child_env(), "HIVEBUS_STORE": str(env.workdir / f"{env.namespace}.sqlite3")}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "coordinator", "coordinator", "--once"], env=child_env,
                   check=True, capture_output=True)
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": seconds, "peak_rss_mib": peak_kib / 1024}


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "coordinator", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def many_agents(env: Env, agents: int, watch_s: float) -> dict[str, float]:
    """Coordinator CPU share with ``agents`` agent processes heartbeating, and kill-to-dead time."""
    child = {**env.child_env(), "HIVEBUS_HEARTBEAT_TTL_S": "3", "HIVEBUS_COORDINATOR_TICK_S": "0.5",
             "HIVEBUS_STORE": str(env.workdir / f"{env.namespace}-many.sqlite3")}
    procs = [_spawn(["agent", "run", "bench.agents:Sink", "--id", f"a{n}"], child) for n in range(agents)]
    coordinator = _spawn(["coordinator"], child)
    client = open_client(env.url)
    registry = Registry(client, env.settings)
    try:
        async def all_alive() -> bool:
            return sum(a.alive for a in await registry.list_agents()) == agents

        await _wait(all_alive, 120)
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu() -> float:
            fields = Path(f"/proc/{coordinator.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks

        cpu_before, wall_before = cpu(), time.perf_counter()
        await anyio.sleep(watch_s)
        share = (cpu() - cpu_before) / (time.perf_counter() - wall_before)
        procs[0].kill()
        procs[0].wait()
        killed = time.perf_counter()

        async def reported_dead() -> bool:
            return any(a.agent_id == "a0" and a.status == "dead" for a in await registry.list_agents())

        await _wait(reported_dead, 30)
        return {"coordinator_cpu_share": share, "kill_to_dead_s": time.perf_counter() - killed,
                "heartbeat_ttl_s": 3.0}
    finally:
        for proc in [coordinator, *procs]:
            _stop(proc)
        await client.aclose()
