"""The ``startup`` group of ``make bench``: how long a ``hivebus`` command takes to start.

Each command runs as a fresh process, 10 times in a row, against the benchmark's Redis; the
median wall time is compared with the baseline a user would measure in the same run: a Python
that only imports what hivebus is built on (``import redis, pydantic, structlog, anyio``).
hivebus's own modules are byte-compiled first, as installing its wheel does and as the
baseline's packages already are (``PYTHONDONTWRITEBYTECODE`` would otherwise make every run
compile them from source).
Targets (issue 13): ``hivebus --help`` ≤ 0.5x and ``hivebus agents`` ≤ 1.3x the baseline.
"""

from __future__ import annotations

import compileall
import os
import statistics
import subprocess
import sys
import time
from typing import Any

RUNS = 10
BASELINE = [sys.executable, "-c", "import redis, pydantic, structlog, anyio"]
COMMANDS = {
    "python -c 'import redis, pydantic, structlog, anyio'": BASELINE,
    "hivebus --help": [sys.executable, "-m", "hivebus", "--help"],
    "hivebus agents": [sys.executable, "-m", "hivebus", "agents"],
}
TARGETS = {"hivebus --help": 0.5, "hivebus agents": 1.3}


def _wall_s(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def run(url: str, runs: int = RUNS) -> dict[str, Any]:
    """Median start-up of each command (seconds) and its ratio to the baseline."""
    env = {**os.environ, "HIVEBUS_REDIS_URL": url, "HIVEBUS_NAMESPACE": "bench-startup"}
    import hivebus
    import hivebus.agents

    for package in (hivebus, hivebus.agents):
        compileall.compile_dir(os.path.dirname(package.__file__ or ""), quiet=1)
    medians = {}
    for name, argv in COMMANDS.items():
        _wall_s(argv, env)  # warm the file cache
        medians[name] = statistics.median(_wall_s(argv, env) for _ in range(runs))
    base = medians[next(iter(COMMANDS))]
    for name, seconds in medians.items():
        print(f"  {name:55} {seconds * 1000:7.1f} ms  {seconds / base:5.2f}x")
    return {"median_s": medians, "ratio": {n: s / base for n, s in medians.items()}, "runs": runs}


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """Rows of the targets table: measured ratio, target, met."""
    return {f"start-up {name} ÷ baseline": {"value": round(result["ratio"][name], 2),
                                             "target": f"≤ {limit}", "met": result["ratio"][name] <= limit,
                                             "issue": 13}
            for name, limit in TARGETS.items()}


def markdown(result: dict[str, Any]) -> list[str]:
    lines = ["", "## Start-up (issue 13)", "",
             f"Median of {result['runs']} fresh processes each, in the same run.", "",
             "| command | median ms | ÷ baseline |", "|---|---:|---:|"]
    for name, seconds in result["median_s"].items():
        lines.append(f"| `{name}` | {seconds * 1000:.1f} | {result['ratio'][name]:.2f} |")
    return lines


if __name__ == "__main__":
    print(run(sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/0"))
