"""`python -m bench --quick` still runs and writes its table, JSON and chart (figures are not judged)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def test_bench_quick_run_writes_results(tmp_path: Path) -> None:
    """The smoke run finishes and writes results.md and results.json with every workload."""
    result = subprocess.run([sys.executable, "-m", "bench", "--quick", "--skip-faststream", "--out",
                             str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=400,
                            check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    data = json.loads((tmp_path / "results.json").read_text())
    for name in ("hivebus_per_call", "raw_per_call", "hivebus_batch", "raw_pipelined", "latency_hivebus",
                 "memory", "memory_api", "coordinator_pass", "many_agents"):
        assert name in data["results"]
    assert "per_call_vs_raw" in data["targets"]
    assert "| target |" in (tmp_path / "results.md").read_text()
