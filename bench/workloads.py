"""The benchmark workloads. Each returns one repetition's figures; ``bench.__main__`` repeats them,
takes medians, and writes the results. Every process, server and payload is the same for hivebus
and its baselines within one run."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import redis.asyncio as aioredis

from hivebus.bus.bus import Bus
from hivebus.bus.registry import Instance, Registry
from hivebus.domain.keys import Keys
from hivebus.domain.models import Severity, Signal
from hivebus.infra.connection import open_client
from hivebus.memory.state import AgentState, StateStore
from hivebus.memory.stm import ShortTermMemory
from hivebus.settings import Settings

REPO = Path(__file__).resolve().parent.parent
PAYLOAD = {"amount_btc": 1500.0, "price": 45000.0, "direction": 1.0}
# The plain baselines' payload: a fixed dict a user would XADD by hand (no models, no JSON).
PLAIN = {"type": "WORK", "source": "bench", "amount_btc": "1500.0", "price": "45000.0",
         "direction": "1.0"}


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
    return subprocess.Popen([sys.executable, "-m", "hivebus", "agent", "run", spec, "--id", agent_id],
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


async def hivebus_throughput(env: Env, count: int, batch: int) -> tuple[float, dict[str, Any]]:
    """Signals/s from first publish until the agent processed all (per call when batch == 1),
    and Redis's cost per signal over the same span (see :func:`server_cost`)."""
    client, proc = await _hivebus_agent(env, "bench.agents:Sink", "sink")
    bus, keys = Bus(client, env.settings), Keys(env.namespace)
    try:
        before = await server_reset(client, proc.pid)
        started = time.perf_counter()
        if batch == 1:
            for n in range(count):
                await bus.publish(whale(n, ["sink"]))
        else:
            for start in range(0, count, batch):
                await bus.publish_many([whale(n, ["sink"]) for n in range(start, min(count, start + batch))])

        async def done() -> bool:  # HMGET: a command the workload itself never sends (see POLL)
            return int((await client.hmget(keys.agent("sink"), ["processed"]))[0] or 0) >= count

        await _wait(done)
        rate = count / (time.perf_counter() - started)
        return rate, await server_cost(client, before, count)
    finally:
        _stop(proc)
        await client.aclose()


async def baseline_throughput(env: Env, kind: str, count: int,
                              batch: int) -> tuple[float, dict[str, Any]]:
    """Messages/s and Redis's cost per message for a baseline, per call (``batch`` 1: one awaited
    XADD each) or pipelined (``batch`` XADDs per pipeline): ``plain`` (a constant dict), ``raw``
    (hivebus's JSON payload built per message) or FastStream (per call only)."""
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
        before = await server_reset(client, proc.pid)
        started = time.perf_counter()
        for start in range(0, count, batch):
            size = min(count, start + batch) - start
            if kind == "plain":  # the same dict every time: what a hand-written loop sends
                if batch == 1:
                    await client.xadd(stream, PLAIN)
                else:
                    pipe = client.pipeline(transaction=False)
                    for _ in range(size):
                        pipe.xadd(stream, PLAIN)
                    await pipe.execute()
                continue
            msgs = [whale(n, ["sink"]).model_dump(mode="json") for n in range(start, start + size)]
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
        rate = count / (time.perf_counter() - started)
        return rate, await server_cost(client, before, count)
    finally:
        if kind == "faststream":
            await broker.stop()
        _stop(proc)
        await client.aclose()


async def latency(env: Env, kind: str, rate: int, seconds: float) -> list[float]:
    """Publish-to-handler latencies (ms) at ``rate`` signals/s for ``seconds``: hivebus (a probe
    agent), ``plain`` (constant payload + sent_at, consumer reading up to 1,000 and acking each
    read), ``raw`` (hivebus's JSON payload, consumer reading and acking one at a time), FastStream."""
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
            elif kind == "plain":
                await client.xadd(stream, {**PLAIN, "sent_at": repr(time.time())})
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
    """Redis bytes per retained, unsettled signal per target (nothing trimmed), then how many of
    5,000 signals a second agent's inbox takes with HIVEBUS_INBOX_MAX=1000 and nobody settling
    (backpressure: a publish that would go past it raises InboxFull and writes nothing)."""
    from hivebus.domain.errors import InboxFull

    client = open_client(env.url)
    await client.flushall()
    roomy = dataclasses.replace(env.settings, inbox_max=count * 2, log_stream_maxlen=count * 2)
    capped = dataclasses.replace(env.settings, inbox_max=1000)
    for agent_id in ("m1", "m2"):
        await Registry(client, roomy).register(agent_id, Instance.here(agent_id), agent_type="bench",
                                               subscriptions=(), version="1")
    try:
        before = int((await client.info("memory"))["used_memory"])
        for start in range(0, count, 500):
            batch = [whale(n, ["m1"]) for n in range(start, min(count, start + 500))]
            await Bus(client, roomy).publish_many(batch)
        after = int((await client.info("memory"))["used_memory"])
        refused = 0
        for start in range(0, 5000, 100):
            try:
                await Bus(client, capped).publish_many([whale(n, ["m2"]) for n in range(start, start + 100)])
            except InboxFull:
                refused += 100
        inbox = int(await client.xlen(Keys(env.namespace).inbox("m2")))
        return {"bytes_per_signal": (after - before) / count, "inbox_len_after_5000": inbox,
                "refused_with_inbox_full": refused, "inbox_max": 1000}
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
    subprocess.run([sys.executable, "-m", "hivebus", "coordinator", "--once"], env=child_env,
                   check=True, capture_output=True)
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": seconds, "peak_rss_mib": peak_kib / 1024}


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "hivebus", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _all_alive(registry: Registry, agents: int) -> None:
    """Wait until ``agents`` registered agents have a live replica."""
    async def alive() -> bool:
        return sum(a.alive for a in await registry.list_agents()) == agents

    await _wait(alive, 120)


async def many_agents(env: Env, agents: int, watch_s: float) -> dict[str, float]:
    """Coordinator CPU share with ``agents`` agent processes heartbeating, and kill-to-dead time."""
    child = {**env.child_env(), "HIVEBUS_HEARTBEAT_TTL_S": "3", "HIVEBUS_COORDINATOR_TICK_S": "0.5",
             "HIVEBUS_STORE": str(env.workdir / f"{env.namespace}-many.sqlite3")}
    procs = [_spawn(["agent", "run", "bench.agents:Sink", "--id", f"a{n}"], child) for n in range(agents)]
    coordinator = _spawn(["coordinator"], child)
    client = open_client(env.url)
    registry = Registry(client, env.settings)
    try:
        await _all_alive(registry, agents)
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


# --- Redis's own cost: INFO commandstats ---------------------------------------------------
# Redis 7.0 counts every command in INFO commandstats where server.c call() runs it, and it runs
# the commands of a Lua script and of a MULTI/EXEC through call() too: cmdstat_eval / evalsha /
# exec count their inner commands' time in their own usec AND each inner command is counted
# again under its own name (checked on 7.0.15: a script of 1,000 SETs shows cmdstat_set 1,000
# calls / 726 µs and cmdstat_eval 1 call / 3,708 µs). So the server time of a workload is the
# sum of usec over the commands clients sent (EVAL, EVALSHA and EXEC whole, with everything run
# inside them) and NOT also their inner commands: summing every cmdstat line counts script
# bodies twice (``naive_us_per_signal`` below shows that sum for comparison).
BENCH_OWN = frozenset({"info", "config", "monitor", "client", "hmget", "llen"})
"""Commands the bench sends itself (resetting and reading stats, polling for the end: HMGET and
LLEN, which no workload process sends), left out of every figure."""
SCRIPT_CALLS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})
EFFECT_COMMANDS = frozenset({"hincrby", "rpush"})
"""Commands the bench agents ask for as effects (bench.agents): run inside the settle script."""
QUEUED_IN_MULTI: frozenset[str] = frozenset()
"""Commands the measured processes send inside MULTI/EXEC (their time is counted in EXEC's):
none in steady state (registration's transactions happen before the stats are reset)."""


def script_commands() -> frozenset[str]:
    """Every command the delivery scripts may call (read from hivebus.infra.lua: publish, settle,
    claim due, renew, expire, replay), plus effects."""
    from hivebus.infra import lua

    # every quoted upper-case word: commands called directly or through a helper (must('hash',
    # 'HGET', ...)); the words that are not commands (statuses, options) match no cmdstat line
    delivery = (lua.PUBLISH, lua.SETTLE, lua.CLAIM_DUE, lua.RENEW, lua.EXPIRE, lua.REPLAY)
    names = {m.lower() for value in delivery for m in re.findall(r"'([A-Z][A-Z_]+)'", value)}
    return frozenset(names | EFFECT_COMMANDS)


def _cpu(info: dict[str, Any]) -> float:
    return float(info.get("used_cpu_sys_main_thread", info["used_cpu_sys"])) + float(
        info.get("used_cpu_user_main_thread", info["used_cpu_user"]))


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Mark:
    """CPU counters when a workload's stats were reset."""

    redis_cpu_s: float
    publisher_cpu_s: float
    consumer_pid: int
    consumer_cpu_s: float


async def server_reset(client: Any, consumer_pid: int) -> Mark:
    """CONFIG RESETSTAT, and the CPU used so far by Redis's main thread (RESETSTAT leaves it),
    this (publishing) process and the consumer process."""
    await client.config_resetstat()
    return Mark(_cpu(await client.info("cpu")), time.process_time(), consumer_pid,
                process_cpu_s(consumer_pid))


async def server_cost(client: Any, mark: Mark, signals: int) -> dict[str, Any]:
    """Redis's cost per signal since :func:`server_reset`, from INFO commandstats.

    ``us_per_signal``: usec summed over the commands clients sent, a script call or EXEC counted
    whole (with the commands it ran) and those commands not again; ``naive_us_per_signal``: the
    sum over every cmdstat line (double counts script bodies); ``script_body_us_per_signal``:
    the script calls' time; ``in_script_us_per_signal``: the time of the commands run inside
    them or inside EXEC (the rest of a script's time is Lua itself: argument decoding, cjson,
    the interpreter);
    ``client_calls_per_signal`` / ``all_calls_per_signal``: commands sent, and every command
    run including those inside scripts; ``cpu_us_per_signal``: Redis's main-thread CPU (commands
    plus reading, parsing and writing the network traffic, which commandstats leaves out);
    ``publisher_cpu_us_per_signal`` / ``consumer_cpu_us_per_signal``: CPU of the publishing
    (bench) process and of the consumer (agent) process, per signal.
    ``by_command``: name -> [calls, usec] per signal, inner commands marked ``*``.

    A command name both sent by a client and called in a script (hivebus: the agent's heartbeat
    SET every 2 s and orphan check XPENDING every 5 s) is counted as inner: a few calls of
    ~1-5 µs per run, under 0.01 µs per signal at these sizes.
    """
    publisher_cpu = time.process_time() - mark.publisher_cpu_s
    consumer_cpu = process_cpu_s(mark.consumer_pid) - mark.consumer_cpu_s
    stats = await client.info("commandstats")
    cpu_after = _cpu(await client.info("cpu"))
    rows = {}
    for key, value in stats.items():
        name = str(key).removeprefix("cmdstat_")
        if name.split("|")[0] not in BENCH_OWN:
            rows[name] = (int(value["calls"]), int(value["usec"]))
    scripted = any(name in SCRIPT_CALLS for name in rows)
    inner = (script_commands() if scripted else frozenset()) | QUEUED_IN_MULTI
    nested = {name for name in rows if name in QUEUED_IN_MULTI  # (a script call inside EXEC, too)
              or (name.split("|")[0] in inner and name not in SCRIPT_CALLS)}
    per = float(signals)
    sent = [v for name, v in rows.items() if name not in nested]
    return {
        "us_per_signal": sum(u for _, u in sent) / per,
        "naive_us_per_signal": sum(u for _, u in rows.values()) / per,
        "script_body_us_per_signal": sum(u for name, (_, u) in rows.items() if name in SCRIPT_CALLS)
        / per,
        "in_script_us_per_signal": sum(rows[name][1] for name in nested) / per,
        "client_calls_per_signal": sum(c for c, _ in sent) / per,
        "all_calls_per_signal": sum(c for c, _ in rows.values()) / per,
        "cpu_us_per_signal": (cpu_after - mark.redis_cpu_s) * 1e6 / per,
        "publisher_cpu_us_per_signal": publisher_cpu * 1e6 / per,
        "consumer_cpu_us_per_signal": consumer_cpu * 1e6 / per,
        "by_command": {("*" if name in nested else "") + name: [round(c / per, 3), round(u / per, 3)]
                       for name, (c, u) in sorted(rows.items(), key=lambda kv: -kv[1][1])},
    }


# --- idle cost ---------------------------------------------------------------------------------
async def _client_groups(admin: Any) -> dict[str, str]:
    """Client port -> "agents" / "coordinator" from the connection names hivebus processes set."""
    ports = {}
    for client in await admin.client_list():
        name, port = str(client.get("name", "")), str(client.get("addr", "")).rpartition(":")[2]
        if name.startswith("hivebus-agent-"):
            ports[port] = "agents"
        elif name == "hivebus-coordinator":
            ports[port] = "coordinator"
    return ports


async def _watch(url: str, seconds: float) -> dict[str, Any]:
    """Reset the stats, watch ``seconds``, and count Redis commands: every call from INFO
    commandstats, and per process kind (from MONITOR, by connection name) the commands its
    clients sent and those its scripts ran (MONITOR shows a script's commands as 'lua' right
    after the EVAL/EVALSHA that runs them)."""
    admin = aioredis.Redis.from_url(url, decode_responses=True)
    by_port: dict[tuple[str, str], int] = {}  # (client port, command) -> calls; '*': in a script
    watching, ended = anyio.Event(), anyio.Event()
    try:
        async def monitor() -> None:
            caller, counting = "", False
            async with admin.monitor() as mon:
                watching.set()
                async for line in mon.listen():
                    command = str(line["command"])
                    if command.startswith("ECHO hivebus-bench-"):  # the window's marks
                        counting = command.endswith("start")
                        if not counting:
                            ended.set()
                        continue
                    name = command.split(" ", 1)[0].lower()
                    port = str(line.get("client_port"))
                    if line.get("client_type") == "lua":
                        port, name = caller, "*" + name
                    elif name in SCRIPT_CALLS:
                        caller = port
                    if counting:
                        by_port[port, name] = by_port.get((port, name), 0) + 1

        groups = await _client_groups(admin)
        async with anyio.create_task_group() as tg:
            tg.start_soon(monitor)
            await watching.wait()
            await anyio.sleep(0.2)
            await admin.echo("hivebus-bench-start")
            await admin.config_resetstat()
            started = time.perf_counter()
            await anyio.sleep(seconds)
            stats = await admin.info("commandstats")
            elapsed = time.perf_counter() - started
            await admin.echo("hivebus-bench-end")
            groups.update(await _client_groups(admin))  # (a connection opened while watching)
            with anyio.fail_after(10):
                await ended.wait()
            tg.cancel_scope.cancel()
    finally:
        await admin.aclose()
    counts: dict[str, dict[str, int]] = {}
    for (port, name), n in by_port.items():
        per = counts.setdefault(groups.get(port, "other"), {})
        per[name] = per.get(name, 0) + n
    calls = sum(int(v["calls"]) for k, v in stats.items()
                if str(k).removeprefix("cmdstat_").split("|")[0] not in BENCH_OWN)
    return {"seconds": elapsed, "all_calls": calls, "monitor": counts}


async def idle_cost(env: Env, agents: int, seconds: float) -> dict[str, Any]:
    """Redis commands per second per idle agent (``agents`` Sink processes with default settings,
    nothing to do), then again with a coordinator running, and the coordinator's share per agent.

    ``all_calls``: every command Redis ran (INFO commandstats, inner script commands included);
    ``client_cmds``: the commands the processes sent (MONITOR, script bodies left out).
    """
    child = {**env.child_env(), "HIVEBUS_STORE": str(env.workdir / f"{env.namespace}-idle.sqlite3")}
    procs = [_spawn(["agent", "run", "bench.agents:Sink", "--id", f"idle-{k}"], child)
             for k in range(agents)]
    coordinator: subprocess.Popen[bytes] | None = None
    client = open_client(env.url)
    registry = Registry(client, env.settings)
    try:
        await _all_alive(registry, agents)
        await anyio.sleep(2.5)  # past start-up: group created, first orphan check done
        alone = await _watch(env.url, seconds)
        coordinator = _spawn(["coordinator"], child)

        async def leading() -> bool:
            return bool(await client.exists(Keys(env.namespace).lease()))

        await _wait(leading, 60)
        await anyio.sleep(2.5)  # past its first reap and consolidation pass
        both = await _watch(env.url, seconds)
    finally:
        for proc in [*([coordinator] if coordinator else []), *procs]:
            _stop(proc)
        await client.aclose()

    def rate(counts: dict[str, int], watched: dict[str, Any], inner: bool) -> float:
        total = sum(n for name, n in counts.items() if inner or not name.startswith("*"))
        return total / agents / watched["seconds"]

    a, b = alone["monitor"], both["monitor"]
    return {
        "agents": agents, "seconds": round(alone["seconds"], 1),
        "agent_all_calls_per_s": alone["all_calls"] / agents / alone["seconds"],
        "agent_client_cmds_per_s": rate(a.get("agents", {}), alone, False),
        "agent_all_calls_monitor_per_s": rate(a.get("agents", {}), alone, True),
        "agent_commands": {k: round(v / agents / alone["seconds"], 3)
                           for k, v in sorted(a.get("agents", {}).items())},
        "with_coordinator_all_calls_per_agent_s": both["all_calls"] / agents / both["seconds"],
        "with_coordinator_agent_client_cmds_per_s": rate(b.get("agents", {}), both, False),
        "coordinator_client_cmds_per_agent_s": rate(b.get("coordinator", {}), both, False),
        "coordinator_all_calls_per_agent_s": rate(b.get("coordinator", {}), both, True),
        "coordinator_commands_per_s": {k: round(v / both["seconds"], 3)
                                       for k, v in sorted(b.get("coordinator", {}).items())},
        "other_per_s": {k: round(v / both["seconds"], 3) for k, v in sorted(b.get("other", {}).items())},
    }
