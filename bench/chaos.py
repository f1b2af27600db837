"""Chaos run: signals through three agents with two replicas each, while replicas are killed,
paused and stalled at random and Redis is paused and restarted; at the end every
(signal, target) pair is accounted for.

    python -m bench.chaos --signals 3000 --kill-every 100 --pause-every 400

It starts its own redis-server (AOF, appendfsync always) on a free loopback port and runs the
agents as real processes, publishing at a steady rate while it

* SIGKILLs a random replica every ``--kill-every`` signals and starts a new one in its place;
* SIGSTOPs a random replica every ``--pause-every`` signals for ``--pause-s`` (longer than
  HIVEBUS_CLAIM_IDLE_S + HIVEBUS_HEARTBEAT_TTL_S, so its sibling reclaims the batch it holds),
  then SIGCONTs it: its settle must come back superseded and apply nothing;
* SIGSTOPs the redis-server ``--redis-pauses`` times for ``--redis-pause-s`` (2.5 s), then
  SIGCONTs it, and restarts it once, half way. The pause stays well under the clients' 10 s
  ``socket_timeout`` (coordinator/connection.py): every command sent meanwhile just waits (new
  connections complete in the kernel's backlog, their 5 s connect timeout does not apply), so
  no client sees an error, only latency; past 10 s in-flight commands would fail with
  TimeoutError while Redis may still apply them on SIGCONT. It is longer than the heartbeat
  TTL, so when Redis resumes every heartbeat has expired and all entries are idle: replicas
  may take over each other's batches, and the fence must sort it out;
* runs one replica of w3 as :class:`BlockingCounter`, whose handler now and then blocks its
  event loop (no heartbeat, no claim renewal) for ``--block-s``.

The agents are :class:`ChaosCounter`: per WORK signal, ``bench.agents:Counter``'s HINCRBY on a
key all targets share, plus one HINCRBY on a key of the target's own, both applied with the ack.
The per-target count makes "applied twice" exact (per pair); the shared one must equal their
sum (effects of one signal apply together or not at all). The counts are read after every
replica was stopped, so a paused replica's late settle is in them.

Exit code 0 when nothing was lost, nothing applied twice, no effect applied apart from its ack,
and no replica crashed. Every wait has a deadline; every process started is stopped (SIGCONT
first) whatever happens; on failure the work directory with the agents' logs is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal as os_signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from redis import exceptions as redis_errors

from bench.agents import Counter
from hivebus.agents.runtime import Context, handles
from hivebus.bus.bus import Bus
from hivebus.domain.errors import NotReplicated, RedisUnavailable
from hivebus.domain.keys import Keys
from hivebus.domain.models import TERMINAL_STATUSES, Signal, SignalStatus
from hivebus.infra.connection import open_client
from hivebus.infra.logs import get_logger
from hivebus.infra.managed_redis import find_binaries, free_port
from hivebus.settings import Settings

AGENTS = ("w1", "w2", "w3")
REPLICAS = 2
COUNTER = "bench.chaos:ChaosCounter"
BLOCKING = "bench.chaos:BlockingCounter"
BLOCKING_SLOT = ("w3", 0)  # this replica (and every one started in its place) blocks now and then
REPO = Path(__file__).resolve().parent.parent

CLAIM_IDLE_S = 1.0
HEARTBEAT_TTL_S = 1.5
SUPERSEDED = "settle superseded"
BLOCKED = "chaos: blocking the event loop"


class ChaosCounter(Counter):
    """Counter, plus one HINCRBY per signal on a key of the target's own (exact per pair)."""

    @handles("WORK")
    async def on_work(self, signal: Signal, ctx: Context) -> None:
        """Count the signal twice over: for all targets together, and for this target."""
        if not os.environ.get("CHAOS_CLUSTER"):  # on a cluster, effects stay in the agent's slot
            await super().on_work(signal, ctx)
        ctx.effect("HINCRBY", ctx.key("applied"), signal.signal_id, 1)


class BlockingCounter(ChaosCounter):
    """A ChaosCounter whose handler blocks its event loop (time.sleep) for CHAOS_BLOCK_S on every
    CHAOS_BLOCK_EVERY-th signal: no heartbeat, no claim renewal meanwhile, so its sibling takes
    the batch over. Only a signal younger than the claim idle time blocks: a redelivery comes
    later than that, so each signal blocks at most once and the run stays bounded."""

    @handles("WORK")
    async def on_work(self, signal: Signal, ctx: Context) -> None:
        """Block now and then, then count."""
        every = int(os.environ.get("CHAOS_BLOCK_EVERY", "0"))
        seconds = float(os.environ.get("CHAOS_BLOCK_S", "0"))
        n = signal.data.get("n")
        if (every > 0 and seconds > 0 and isinstance(n, int) and n % every == every - 1
                and time.time() - signal.created_at < ctx.bus.settings.claim_idle_s):
            get_logger(agent_id=ctx.agent_id).warning(BLOCKED, seconds=seconds, n=n)
            time.sleep(seconds)  # noqa: ASYNC251 - blocks the event loop on purpose
        await super().on_work(signal, ctx)


@dataclass
class Pause:
    """One SIGSTOP/SIGCONT of a replica."""

    agent: str
    pid: int
    log: Path
    held_at_stop: int = -1  # entries its consumer owned when stopped (-1: consumer not found)
    held_at_cont: int = -1  # ... still owned when continued (0: all reclaimed by its sibling)
    log_offset: int = 0  # size of its log at SIGCONT: what it logged after resuming starts here
    superseded_after: int = 0  # entries of its settles superseded after it resumed


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
    pauses: int = 0
    pauses_superseded: int = 0  # replica pauses after which the replica's settle was superseded
    redis_pauses: int = 0
    blocks: int = 0
    superseded: int = 0  # entries superseded, over all settles of all replicas
    mismatched: int = 0  # effects apart from their status: applied on an unprocessed pair, or the
    #                      shared count differs from the per-target ones (not atomic)
    crashed: list[str] = field(default_factory=list)  # logs of replicas that exited by themselves
    errors: list[str] = field(default_factory=list)  # error lines / tracebacks in the logs
    workdir: str = ""

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing applied twice, no effect apart from its ack, no crash."""
        return not (self.lost or self.applied_twice or self.mismatched or self.crashed or self.errors)

    def line(self) -> str:
        """The counts, for people."""
        text = (f"chaos: {self.signals} signals x {len(AGENTS)} targets = {self.pairs} pairs, "
                f"{self.kills} replica kills, {self.pauses} replica pauses "
                f"({self.pauses_superseded} superseded after SIGCONT), {self.blocks} blocked loops, "
                f"{self.redis_pauses} Redis pauses, {self.redis_restarts} Redis restart: "
                f"{self.processed} processed, {self.dead} dead-lettered, {self.lost} lost, "
                f"{self.applied_twice} applied twice, {self.superseded} superseded, "
                f"{self.mismatched} mismatched ({self.seconds:.1f} s)")
        if self.crashed:
            text += f"; CRASHED: {', '.join(self.crashed)}"
        if self.errors:
            text += f"; {len(self.errors)} ERROR LINES, first: {self.errors[0][:300]}"
        return text


def _redis_argv(binary: str, port: int, workdir: Path) -> list[str]:
    return [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
            "--appendonly", "yes", "--appendfsync", "always"]


def _die_with_parent() -> None:
    """In a child before exec: SIGKILL it when the chaos process dies, even of SIGKILL (a
    stopped child is killed too, where a SIGTERM would wait for a SIGCONT)."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(os_signal.SIGKILL))  # PR_SET_PDEATHSIG


def _cont(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(os_signal.SIGCONT)


def _end(proc: subprocess.Popen[bytes], grace_s: float) -> int:
    """SIGCONT, SIGTERM, wait ``grace_s``, then SIGKILL; return the exit code."""
    _cont(proc)  # a stopped process would not act on SIGTERM (and SIGKILL of it is delayed)
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


class _RedisServer:
    """The run's redis-server: started, paused, restarted and stopped; logs to redis.log."""

    def __init__(self, binary: str, port: int, workdir: Path) -> None:
        self.argv = _redis_argv(binary, port, workdir / "redis")
        (workdir / "redis").mkdir(parents=True, exist_ok=True)
        self.log = workdir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(os_signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            _cont(self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            code = _end(self.proc, 15)
            self.proc = None
            if code not in (0, -os_signal.SIGTERM):
                raise RuntimeError(f"redis-server exited with {code} (see {self.log})")


class _ClusterServer:
    """``--cluster``: a local 3-master, 3-replica Redis Cluster (tests/cluster_server.py). Its
    "restart" is a failover: the master serving w1 is SIGKILLed and its replica takes over; a
    "pause" SIGSTOPs another master for at most 1 s (under the node timeout: no failover)."""

    def __init__(self) -> None:
        self.cluster: Any = None
        self.victim: Any = None
        self.paused: Any = None

    def start(self) -> None:
        sys.path.insert(0, str(REPO))
        from redis.crc import key_slot

        from tests.cluster_server import start_cluster

        self.cluster = start_cluster()
        slot = key_slot(Keys("chaos").inbox(AGENTS[0]).encode())
        masters = self.cluster.masters()
        self.victim = next(m for m in masters if slot in self.cluster.slots_of(m))
        self.paused = next(m for m in masters if m is not self.victim)

    @property
    def url(self) -> str:
        """A node that stays up all run (the paused master: clients start from it)."""
        return f"redis://127.0.0.1:{self.paused.port}/0"

    def pause(self) -> None:
        self.paused.process.send_signal(os_signal.SIGSTOP)

    def resume(self) -> None:
        if self.paused is not None:
            _cont(self.paused.process)

    def fail_over(self) -> None:
        """SIGKILL the victim master; return once its replica serves its slots."""
        self.victim.process.send_signal(os_signal.SIGKILL)
        self.victim.process.wait(10)
        deadline = time.monotonic() + 60
        while self.cluster.state_ok() and time.monotonic() < deadline:  # until the loss is seen
            time.sleep(0.05)
        self.cluster.wait_ok(60)
        # as an operator would: the node comes back (its nodes.conf kept) as the new master's
        # replica, so publishes that wait for a replica can be confirmed again
        self.victim.process = subprocess.Popen(self.victim.process.args, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL)
        while time.monotonic() < deadline:
            try:
                if self.victim.client().info("replication").get("master_link_status") == "up":
                    break
            except redis_errors.RedisError:
                pass
            time.sleep(0.05)
        self.cluster.wait_ok(60)

    def stop(self) -> None:
        if self.cluster is not None:
            self.resume()
            self.cluster.stop()
            self.cluster = None


class _Processes:
    """Every agent process the run started; each logs to a file of its own in the work dir."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.all: list[subprocess.Popen[bytes]] = []
        self.log_of: dict[int, Path] = {}
        self.killed: set[int] = set()  # pids this run killed or stopped on purpose
        self.dead_before_kill: list[str] = []  # processes that had exited when about to be killed

    def agent(self, agent_id: str, spec: str) -> subprocess.Popen[bytes]:
        path = self.logs / f"{agent_id}-{len(self.all)}.log"
        with open(path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hivebus", "agent", "run", spec, "--id", agent_id],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent)
        self.all.append(proc)
        self.log_of[proc.pid] = path
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None and proc.pid not in self.killed:
            self.dead_before_kill.append(f"{self.log_of[proc.pid].name} (exit {proc.returncode})")
        self.killed.add(proc.pid)
        _cont(proc)
        proc.kill()
        proc.wait(10)

    def crashed(self) -> list[str]:
        """Logs of processes that exited without being told to."""
        exited = [p for p in self.all if p.poll() is not None and p.pid not in self.killed]
        return self.dead_before_kill + [f"{self.log_of[p.pid].name} (exit {p.returncode})" for p in exited]

    def stop(self, grace_s: float = 15) -> list[str]:
        """Stop every process still running (SIGCONT, SIGTERM; SIGKILL after ``grace_s``);
        return the logs of those that did not exit cleanly."""
        running = [p for p in self.all if p.poll() is None]
        for proc in running:
            self.killed.add(proc.pid)
            _cont(proc)
            proc.terminate()
        unclean = []
        deadline = time.monotonic() + grace_s
        for proc in running:
            try:
                code = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait(10)
            if code != 0:
                unclean.append(f"{self.log_of[proc.pid].name} (exit {code} after SIGTERM)")
        return unclean


async def run_chaos(
    signals: int,
    kill_every: int,
    workdir: Path,
    seed: int = 11,
    *,
    rate: float = 60.0,
    pause_every: int = 0,
    pause_s: float = 4.0,
    redis_pauses: int = 1,
    redis_pause_s: float = 2.5,
    block_every: int = 0,
    block_s: float = 3.0,
    settle_limit_s: float = 120.0,
    cluster: bool = False,
) -> ChaosResult:
    """Run the chaos scenario in ``workdir``; return the counts.

    ``rate``: signals published per second (0: as fast as possible); ``pause_every``: SIGSTOP a
    replica every N signals (0: never) for ``pause_s``; ``redis_pauses`` SIGSTOPs of Redis for
    ``redis_pause_s`` each; ``block_every``: the blocking replica blocks its loop for ``block_s``
    on every Nth signal it handles fresh (0: never). Raises TimeoutError when a deadline passes
    (``settle_limit_s`` for every pair to settle after the last publish); every process started
    is stopped whatever happens. ``cluster``: on a 3-master Redis Cluster instead (see
    :class:`_ClusterServer`): Redis pauses last at most 1 s, the restart is a master's failover,
    publishes wait for a replica (HIVEBUS_PUBLISH_REPLICAS=1) and effects stay in each agent's
    slot (no shared counter to compare).
    """
    if pause_every and pause_s <= CLAIM_IDLE_S + HEARTBEAT_TTL_S:
        raise ValueError(f"pause_s must exceed claim idle + heartbeat TTL "
                         f"({CLAIM_IDLE_S + HEARTBEAT_TTL_S} s)")
    if redis_pause_s >= 10:
        raise ValueError("redis_pause_s must stay under the clients' 10 s socket timeout")
    binaries = find_binaries()
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    namespace = "chaos"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("HIVEBUS_", "CHAOS_"))},
           "PYTHONPATH": str(REPO), "HIVEBUS_REDIS_URL": url, "HIVEBUS_NAMESPACE": namespace,
           "HIVEBUS_CLAIM_IDLE_S": str(CLAIM_IDLE_S), "HIVEBUS_HEARTBEAT_TTL_S": str(HEARTBEAT_TTL_S),
           "HIVEBUS_RETRY_BASE_S": "0.05", "HIVEBUS_LOG_FORMAT": "json",
           "HIVEBUS_HOME": str(workdir / ".hivebus"),
           "CHAOS_BLOCK_EVERY": str(block_every), "CHAOS_BLOCK_S": str(block_s)}
    rng = random.Random(seed)
    keys = Keys(namespace)
    server: Any = _ClusterServer() if cluster else _RedisServer(binaries.server, port, workdir)
    if cluster:
        env["CHAOS_CLUSTER"] = "1"
        redis_pause_s = min(redis_pause_s, 1.0)
    procs = _Processes(env, workdir)
    client: Any = None
    started = time.monotonic()
    sent: list[Signal] = []
    pauses: list[Pause] = []
    kills = restarts = paused_redis = 0
    redis_lock = anyio.Lock()
    paused_agents: set[str] = set()
    restart_at = signals // 2
    redis_pause_at = sorted(_spread(signals, redis_pauses, avoid=restart_at))
    unclean: list[str] = []
    timeline: list[tuple[float, str]] = []  # (seconds since start, what happened): chaos.json

    def note(what: str) -> None:
        timeline.append((round(time.monotonic() - started, 3), what))

    try:
        server.start()
        if cluster:
            url = env["HIVEBUS_REDIS_URL"] = server.url
        # One replica of each agent first, the others once those have started: two replicas of
        # an agent that never ran, starting at the same moment, race to create its state and the
        # loser exits with VersionConflict (agents/memory.py load_state; see the commit message).
        replicas = {(a, 0): procs.agent(a, _spec((a, 0))) for a in AGENTS}
        client = open_client(url)
        bus = Bus(client, Settings(namespace=namespace, home=workdir, publish_replicas=1 if cluster else 0))
        await _until(lambda: _started(procs, replicas.values()), 30)
        replicas.update({(a, n): procs.agent(a, _spec((a, n))) for a in AGENTS for n in range(1, REPLICAS)})
        await _until(lambda: _started(procs, replicas.values()), 30)

        async def pause_replica(slot: tuple[str, int], proc: subprocess.Popen[bytes]) -> None:
            pause = Pause(slot[0], proc.pid, procs.log_of[proc.pid])
            pauses.append(pause)
            paused_agents.add(slot[0])
            try:
                proc.send_signal(os_signal.SIGSTOP)
                note(f"SIGSTOP {procs.log_of[proc.pid].name}")
                until = time.monotonic() + pause_s  # however long Redis takes to answer meanwhile
                pause.held_at_stop = await _held(client, keys, slot[0], proc.pid, until)
                await anyio.sleep(until - time.monotonic())
                pause.held_at_cont = await _held(client, keys, slot[0], proc.pid, time.monotonic() + 1)
            finally:
                pause.log_offset = pause.log.stat().st_size
                _cont(proc)
                note(f"SIGCONT {procs.log_of[proc.pid].name}")
                paused_agents.discard(slot[0])

        async def pause_redis() -> None:
            nonlocal paused_redis
            async with redis_lock:
                server.pause()
                note("SIGSTOP redis-server")
                paused_redis += 1
                try:
                    await anyio.sleep(redis_pause_s)
                finally:
                    server.resume()
                    note("SIGCONT redis-server")

        async with anyio.create_task_group() as tg:
            published_from = time.monotonic()
            for n in range(signals):
                if rate > 0:
                    await anyio.sleep(max(0.0, published_from + n / rate - time.monotonic()))
                signal = Signal.create("WORK", "chaos", targets=list(AGENTS), data={"n": n})
                await _publish(bus, signal, 60)
                sent.append(signal)
                running = [s for s in sorted(replicas) if s[0] not in paused_agents]
                if n % kill_every == kill_every - 1 and running:  # (none: every agent is paused)
                    victim = rng.choice(running)
                    note(f"SIGKILL {procs.log_of[replicas[victim].pid].name}")
                    procs.kill(replicas[victim])
                    kills += 1
                    replicas[victim] = procs.agent(victim[0], _spec(victim))
                    note(f"started {procs.log_of[replicas[victim].pid].name}")
                if pause_every and n % pause_every == pause_every // 2:
                    slot = await _pause_victim(client, keys, rng, replicas, paused_agents)
                    if slot is not None:
                        paused_agents.add(slot[0])  # at once: a kill must not pick it meanwhile
                        tg.start_soon(pause_replica, slot, replicas[slot])
                if n in redis_pause_at:
                    tg.start_soon(pause_redis)
                if n == restart_at:
                    # 'hivebus agent run' gives up when Redis does not answer at start (it does not
                    # wait for it): let every replica started so far connect before the restart
                    await _until(lambda: _started(procs, replicas.values()), 30)
                    async with redis_lock:  # never while it is paused
                        if cluster:
                            note("SIGKILL a master: failover")
                            await anyio.to_thread.run_sync(server.fail_over)
                        else:
                            note("restarting redis-server")
                            server.stop()
                            server.start()
                        restarts += 1
                    await _until(lambda: client.ping(), 30)
        note("published the last signal")
        await _until(lambda: _all_settled(bus, sent), settle_limit_s)
        note("every pair settled")
        # a replica started for the last kill may still be starting: SIGTERM before its handler
        # is installed would end it with -15, which is no fault of its
        await _until(lambda: _started(procs, replicas.values()), 30)
        crashed = procs.crashed()
        unclean = procs.stop()  # each settles what it holds first: a resumed replica's late settle
        note("every replica stopped")
        statuses = await _statuses(bus, sent)
        per_target = {a: await client.hgetall(keys.effect_key(a, "applied")) for a in AGENTS}
        shared = None if cluster else await client.hgetall(f"{keys.prefix}test:applied")
    except BaseException as exc:
        exc.add_note(f"chaos work directory (agent and Redis logs): {workdir}")
        note(f"failed: {exc!r}")
        _write_details(workdir, None, pauses, timeline)
        raise
    finally:
        with anyio.CancelScope(shield=True):
            unclean += procs.stop()
            if client is not None:
                await client.aclose()
            server.stop()
    processed = dead = lost = twice = mismatched = 0
    for signal, row in zip(sent, statuses, strict=True):
        total = 0
        for agent, status in zip(AGENTS, row, strict=True):
            count = int(per_target[agent].get(signal.signal_id, 0))
            total += count
            twice += max(0, count - 1)
            if status == SignalStatus.PROCESSED.value:
                processed += 1
                lost += count == 0  # settled as processed, effect never applied
            elif status in {t.value for t in TERMINAL_STATUSES}:
                dead += 1
                mismatched += count > 0  # effect applied, yet the pair ended unprocessed
            else:
                lost += 1
        if shared is not None:
            mismatched += int(shared.get(signal.signal_id, 0)) != total
    logs = [procs.log_of[p.pid] for p in procs.all]
    for pause in pauses:
        pause.superseded_after = sum(_superseded(line) for line in _lines(pause.log, pause.log_offset))
    result = ChaosResult(
        signals=len(sent), pairs=len(sent) * len(AGENTS), kills=kills, redis_restarts=restarts,
        processed=processed, dead=dead, lost=lost, applied_twice=twice,
        seconds=time.monotonic() - started, pauses=len(pauses),
        pauses_superseded=sum(1 for p in pauses if p.superseded_after), redis_pauses=paused_redis,
        blocks=sum(BLOCKED in line for log in logs for line in _lines(log)),
        superseded=sum(_superseded(line) for log in logs for line in _lines(log)),
        mismatched=mismatched, crashed=crashed + unclean,
        errors=[f"{log.name}: {line}" for log in logs for line in _lines(log) if _is_error(line)],
        workdir=str(workdir))
    _write_details(workdir, result, pauses, timeline)
    return result


def _spec(slot: tuple[str, int]) -> str:
    return BLOCKING if slot == BLOCKING_SLOT else COUNTER


async def _started(procs: _Processes, replicas: Any) -> bool:
    """Whether every replica in ``replicas`` logged that it started (it is past its connect), or
    exited (a crash, reported as such)."""
    return all(p.poll() is not None or b'"agent started"' in procs.log_of[p.pid].read_bytes()
               for p in replicas)


def _spread(signals: int, count: int, *, avoid: int) -> list[int]:
    """``count`` publish indexes spread over the run, none within a tenth of the run of ``avoid``."""
    spots = []
    for k in range(count):
        at = int(signals * (k + 0.5) / count)
        if abs(at - avoid) < signals // 10:
            at = min(signals - 1, avoid + signals // 8)
        spots.append(at)
    return spots


async def _publish(bus: Bus, signal: Signal, limit_s: float) -> None:
    """Publish, retrying with the same id (never a second signal) until ``limit_s`` passes."""
    with anyio.fail_after(limit_s):
        while True:
            try:
                await bus.publish(signal)
                return
            except (RedisUnavailable, NotReplicated):  # a failover under way: the same id again
                await anyio.sleep(0.1)


async def _consumers(client: Any, keys: Keys, agent: str) -> dict[int, int]:
    """pid -> entries pending for that replica's consumer (its name is <host>-<pid>-<hex>)."""
    found: dict[int, int] = {}
    for consumer in await client.xinfo_consumers(keys.inbox(agent), agent):
        parts = str(consumer["name"]).rsplit("-", 2)
        if len(parts) == 3 and parts[1].isdigit():
            found[int(parts[1])] = int(consumer["pending"])
    return found


async def _held(client: Any, keys: Keys, agent: str, pid: int, deadline: float) -> int:
    """Entries the replica ``pid`` owns now; -1 if unknown (no consumer yet, or Redis did not
    answer by ``deadline``, a time.monotonic() value)."""
    try:
        with anyio.fail_after(max(0.0, deadline - time.monotonic())):
            return (await _consumers(client, keys, agent)).get(pid, -1)
    except (TimeoutError, RedisUnavailable, redis_errors.RedisError):
        return -1


async def _pause_victim(client: Any, keys: Keys, rng: random.Random,
                        replicas: dict[tuple[str, int], subprocess.Popen[bytes]],
                        paused_agents: set[str]) -> tuple[str, int] | None:
    """A replica to pause: of an agent with no replica paused (so its sibling can reclaim), and
    one that is reading already (its consumer exists) when that can be told."""
    slots = [s for s in sorted(replicas) if s[0] not in paused_agents]
    if not slots:
        return None
    reading = []
    for slot in slots:
        with anyio.move_on_after(12):
            try:
                if replicas[slot].pid in await _consumers(client, keys, slot[0]):
                    reading.append(slot)
            except (RedisUnavailable, redis_errors.RedisError):
                pass
    return rng.choice(reading or slots)


async def _statuses(bus: Bus, sent: list[Signal]) -> list[list[str]]:
    """Each signal's status per target, as text."""
    found = iter(await bus.statuses([(s.signal_id, a) for s in sent for a in AGENTS]))
    return [[next(found).value for _ in AGENTS] for _ in sent]


async def _all_settled(bus: Bus, sent: list[Signal]) -> bool:
    final = {t.value for t in TERMINAL_STATUSES}
    return all(v in final for row in await _statuses(bus, sent) for v in row)


async def _until(predicate: Any, limit_s: float) -> None:
    """Poll ``predicate`` (state in Redis and other processes) until true; raise after the limit."""
    with anyio.fail_after(limit_s):
        while True:
            try:
                if await predicate():
                    return
            except (RedisUnavailable, redis_errors.ConnectionError, redis_errors.BusyLoadingError):
                pass  # the server is still starting (or loading its AOF after the restart)
            await anyio.sleep(0.2)


def _lines(path: Path, offset: int = 0) -> list[str]:
    with open(path, "rb") as log:
        log.seek(offset)
        return log.read().decode("utf-8", "replace").splitlines()


def _superseded(line: str) -> int:
    if SUPERSEDED not in line:
        return 0
    try:
        return int(json.loads(line).get("count", 1))
    except (ValueError, AttributeError):
        return 1


def _is_error(line: str) -> bool:
    if "Traceback (most recent call last)" in line:  # also "+ Exception Group Traceback ..."
        return True
    try:
        event = json.loads(line)
    except ValueError:
        return False
    return isinstance(event, dict) and (event.get("level") in ("error", "critical") or "exception" in event)


def _write_details(workdir: Path, result: ChaosResult | None, pauses: list[Pause],
                   timeline: list[tuple[float, str]]) -> None:
    """chaos.json in the work directory: the result, each pause and the timeline of what was
    done (seconds since the start; agent logs carry UTC timestamps), for a look after a failure."""
    details = {"result": vars(result) if result else None,
               "pauses": [{**vars(p), "log": p.log.name} for p in pauses], "timeline": timeline}
    (workdir / "chaos.json").write_text(json.dumps(details, indent=1, default=str))


def main() -> None:
    """``python -m bench.chaos``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=3000)
    parser.add_argument("--kill-every", type=int, default=100, help="kill a replica every N signals")
    parser.add_argument("--pause-every", type=int, default=400, help="pause a replica every N signals")
    parser.add_argument("--pause-s", type=float, default=4.0, help="how long a replica stays paused")
    parser.add_argument("--redis-pauses", type=int, default=2, help="how many times Redis is paused")
    parser.add_argument("--redis-pause-s", type=float, default=2.5, help="how long Redis stays paused")
    parser.add_argument("--block-every", type=int, default=250,
                        help="the blocking replica blocks its loop on every Nth signal (0: never)")
    parser.add_argument("--block-s", type=float, default=3.0, help="how long it blocks")
    parser.add_argument("--rate", type=float, default=50.0, help="signals published per second")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) on success too")
    parser.add_argument("--cluster", action="store_true",
                        help="on a local 3-master, 3-replica Redis Cluster, with a master failover")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="hivebus-chaos-"))
    try:
        result = anyio.run(_until_interrupted, lambda: run_chaos(
            args.signals, args.kill_every, workdir, args.seed, rate=args.rate,
            pause_every=args.pause_every, pause_s=args.pause_s, redis_pauses=args.redis_pauses,
            redis_pause_s=args.redis_pause_s, block_every=args.block_every, block_s=args.block_s,
            cluster=args.cluster))
    except BaseException:
        print(f"chaos: FAILED, work directory kept: {workdir}", file=sys.stderr)
        raise
    if result is None:
        print(f"chaos: interrupted (every process it started is stopped); work directory kept: {workdir}",
              file=sys.stderr)
        raise SystemExit(130)
    print(result.line())
    if result.ok and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"chaos: work directory kept: {workdir}", file=sys.stderr)
    raise SystemExit(0 if result.ok else 1)


async def _until_interrupted(run: Any) -> ChaosResult | None:
    """Await ``run()``; on SIGINT or SIGTERM cancel it (its clean-up stops what it started) and
    return None."""
    result: ChaosResult | None = None

    async def on_signal(scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(os_signal.SIGINT, os_signal.SIGTERM) as received:
            async for _ in received:
                scope.cancel()
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(on_signal, tg.cancel_scope)
        result = await run()
        tg.cancel_scope.cancel()
    return result


if __name__ == "__main__":
    main()
