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
    """The smoke run finishes and writes results.md and results.json with every workload, the
    Redis cost figures and every target row."""
    result = subprocess.run([sys.executable, "-m", "bench", "--quick", "--skip-faststream", "--out",
                             str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=400,
                            check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    data = json.loads((tmp_path / "results.json").read_text())
    results = data["results"]
    for name in ("hivebus_per_call", "plain_per_call", "raw_per_call", "hivebus_batch", "plain_pipelined",
                 "raw_pipelined", "latency_hivebus", "latency_plain", "idle", "memory", "memory_api",
                 "coordinator_pass", "many_agents", "memscale"):
        assert name in results
    memscale = results["memscale"]  # issue 11: every size measured, FTS5 answering like hivebus
    assert [int(n) for n in memscale["by_size"]] == memscale["sizes"]
    for size in memscale["by_size"].values():
        assert size["recall"]["p50_ms"] > 0 and size["recall"]["redis_us_per_call"] > 0
        assert size["fts5"]["mismatches"] == 0, size["fts5"]["mismatched"]
        assert set(size["decision_query"]) == {"limit5", "by_type", "success", "no_match"}
    assert set(memscale["growth"]) == {"recall_p50_ms", "redis_us_per_recall", "decide_p50_ms",
                                       "decision_query_limit5_p50_ms"}
    for name in ("hivebus_per_call", "hivebus_batch", "plain_per_call", "plain_pipelined"):
        assert results[name]["server"]["us_per_signal"] > 0  # Redis time per signal, from commandstats
    assert results["idle"]["agent_all_calls_per_s"] > 0
    for name in ("per_call_vs_plain", "batch_vs_plain_pipelined", "p99_vs_plain_p99_same_run",
                 "redis_us_per_signal_per_call", "redis_us_per_signal_batch", "idle_agent_redis_calls_per_s",
                 "per_call_vs_raw", "memscale_fts5_top5_mismatches", "memscale_recall_growth"):
        assert name in data["targets"]
    assert "| target |" in (tmp_path / "results.md").read_text()
