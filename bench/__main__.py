"""``python -m bench`` (``make bench``): hivebus beside raw redis-py and FastStream, in one run.

Starts its own redis-server on a free loopback port, runs every workload for hivebus and its
baselines with the same payload, repeats each, and writes ``results.md``, ``results.json`` and
``chart.png`` under ``bench/results/`` (or ``--out``). Figures are medians with min and max;
comparisons are ratios taken in the same run. ``--quick`` is the smoke run ``make test`` uses.
The ``memscale`` group (memory and decision reads at 1k, 10k and 100k items, beside an SQLite
FTS5 baseline) is in :mod:`bench.memscale`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from bench import memscale, startup
from bench import workloads as w
from hivebus.infra.managed_redis import find_binaries, free_port

OUT = Path(__file__).resolve().parent / "results"


GROUPS = ("throughput", "latency", "fanout", "memory", "idle", "other", "memscale", "startup")

BASELINES = """\
What each figure measures (all against the same redis-server, in the same run):

* hivebus_*: the real path. A validated `Signal` published through the publish script (per call:
  one awaited `Bus.publish`; batch: `publish_many` in batches of 100, one script call each) to a
  `Sink` agent process that reads (XREADGROUP, up to 128), handles and settles each batch in one
  fenced script call (ack, pending -> done ledger, counters).
* plain_*: the loop a user writes by hand with redis-py and a constant payload (a fixed dict of
  5 fields, no models, no JSON). Per call: an awaited XADD each; the consumer process does
  XREADGROUP COUNT 1 and XACK per message. Pipelined: pipelines of 200 XADD; the consumer does
  XREADGROUP COUNT 1000 and one multi-id XACK per read. Latency: an awaited XADD of the dict plus
  a sent_at field at the given rate; the consumer reads like the pipelined one.
* raw_*: the same redis-py loop but carrying hivebus's payload: a `Signal` built and JSON-encoded
  per message (one `data` field), decoded by the consumer; pipelined in batches of 100 with the
  consumer reading 100 at a time; per call and latency read and ack one at a time.
* faststream_*: FastStream's awaited `broker.publish` to a `StreamSub` consumer group with a
  pydantic model.
* server time: Redis's usec per signal from INFO commandstats (CONFIG RESETSTAT before each
  workload, read after), counting the commands the clients sent, a script call (EVAL/EVALSHA) or
  EXEC whole, and not again the commands run inside it (commandstats lists those too, and their
  time is already in the script's); "naive" sums every line and double counts script bodies.
  Redis CPU is the server's main-thread CPU over the same span: commands plus network I/O;
  publisher and consumer CPU are the bench process's and the consumer (agent) process's.
"""


def summary(values: list[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    return sorted_values[min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))]


def server_summary(costs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each server-cost figure over the repetitions; the per-command breakdown of the
    repetition whose server time per signal is the median."""
    ordered = sorted(costs, key=lambda c: c["us_per_signal"])
    out: dict[str, Any] = {k: statistics.median(c[k] for c in costs)
                           for k in costs[0] if k != "by_command"}
    out["us_per_signal_min"], out["us_per_signal_max"] = (ordered[0]["us_per_signal"],
                                                          ordered[-1]["us_per_signal"])
    out["by_command"] = ordered[(len(ordered) - 1) // 2]["by_command"]
    return out


async def run(args: argparse.Namespace, url: str, workdir: Path) -> dict[str, Any]:
    quick = args.quick
    reps = 1 if quick else args.reps
    n_call, n_batch = (300, 2000) if quick else (3000, 30000)
    rate, seconds = (500, 1.0) if quick else (1000, 10.0)
    extra = [] if args.skip_faststream else ["faststream"]
    counter = iter(range(10_000))

    def env() -> w.Env:
        return w.Env(url, f"b{next(counter)}", workdir)

    results: dict[str, Any] = {}

    async def repeat(name: str, fn: Any, *a: Any) -> None:
        values = [await fn(env(), *a) for _ in range(reps)]
        results[name] = summary(values)
        print(f"  {name:<32} {results[name]['median']:>12,.1f}", flush=True)

    if "throughput" in args.only:
        print(f"throughput (signals/s; Redis µs per signal; {reps} runs, workloads interleaved)")
        workloads: dict[str, tuple[Any, ...]] = {
            "hivebus_per_call": (w.hivebus_throughput, n_call, 1),
            "plain_per_call": (w.baseline_throughput, "plain", n_call, 1),
            "raw_per_call": (w.baseline_throughput, "raw", n_call, 1),
            **({"faststream_per_call": (w.baseline_throughput, "faststream", n_call, 1)}
               if extra else {}),
            "hivebus_batch": (w.hivebus_throughput, n_batch, 100),
            "plain_pipelined": (w.baseline_throughput, "plain", n_batch, 200),
            "raw_pipelined": (w.baseline_throughput, "raw", n_batch, 100),
        }
        measured: dict[str, list[tuple[float, dict[str, Any]]]] = {name: [] for name in workloads}
        for _ in range(reps):  # interleaved, so a noisy moment on a shared machine hits every kind
            for name, (fn, *a) in workloads.items():
                measured[name].append(await fn(env(), *a))
        for name, runs in measured.items():
            results[name] = {**summary([r for r, _ in runs]),
                             "server": server_summary([c for _, c in runs])}
            v = results[name]
            c = v["server"]
            print(f"  {name:<22} {v['median']:>10,.1f}/s  Redis {c['us_per_signal']:6.1f} µs/signal"
                  f" (naive Σ {c['naive_us_per_signal']:.1f}); CPU µs/signal: Redis"
                  f" {c['cpu_us_per_signal']:.1f}, publisher {c['publisher_cpu_us_per_signal']:.1f},"
                  f" consumer {c['consumer_cpu_us_per_signal']:.1f}", flush=True)

    if "latency" in args.only:
        print(f"latency at {rate}/s for {seconds:g}s (ms; medians of {reps} runs, kinds interleaved)")
        lat_runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in ["hivebus", "plain", "raw",
                                                                               *extra]}
        for _ in range(reps):
            for kind in lat_runs:
                lat = await w.latency(env(), kind, rate, seconds)
                lat_runs[kind].append({"p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99),
                                       "p999": percentile(lat, 0.999), "samples": len(lat)})
        for kind, runs in lat_runs.items():
            p99s = [m["p99"] for m in runs]
            results[f"latency_{kind}"] = {
                **{q: statistics.median(m[q] for m in runs) for q in ("p50", "p99", "p999")},
                "p99_min": min(p99s), "p99_max": max(p99s), "samples": runs[0]["samples"],
                "runs": len(runs), "p99s": p99s}
            v = results[f"latency_{kind}"]
            print(f"  {kind:<10} p50 {v['p50']:.2f}  p99 {v['p99']:.2f} ({v['p99_min']:.2f}-"
                  f"{v['p99_max']:.2f})  p99.9 {v['p999']:.2f}")

    if "idle" in args.only:
        agents, watch = (2, 2.0) if quick else (args.idle_agents, args.idle_seconds)
        print(f"idle agents ({agents} processes, {watch:g}s watched, alone then with a coordinator)")
        results["idle"] = await w.idle_cost(env(), agents, watch)
        v = results["idle"]
        print(f"  per agent: {v['agent_all_calls_per_s']:.2f} calls/s (client commands "
              f"{v['agent_client_cmds_per_s']:.2f}) {v['agent_commands']}")
        print(f"  coordinator per agent: {v['coordinator_all_calls_per_agent_s']:.2f} calls/s (client "
              f"commands {v['coordinator_client_cmds_per_agent_s']:.2f})")

    if "fanout" in args.only:
        print("fan-out (µs per publish)")
        fan_n = 200 if quick else 2000
        for targets in (1, 3, 10):
            await repeat(f"fanout_{targets}_targets", w.fanout, targets, 0, fan_n)
        await repeat("targeted_with_1_bystander", w.fanout, 1, 1, fan_n)
        await repeat("targeted_with_100_bystanders", w.fanout, 1, 100, fan_n)

    if "memory" in args.only:
        print("memory")
        results["memory"] = await w.memory_per_signal(env(), 5_000 if quick else 100_000)
        print(f"  {results['memory']}")
    if "other" in args.only:
        results["memory_api"] = await w.memory_api(env(), 1_000 if quick else 10_000)
        print(f"  {results['memory_api']}")
        results["coordinator_pass"] = await anyio.to_thread.run_sync(
            w.coordinator_pass, env(), 5_000 if quick else 100_000)
        print(f"  coordinator pass {results['coordinator_pass']}")
        results["many_agents"] = await w.many_agents(env(), 5 if quick else 50, 2.0 if quick else 10.0)
        print(f"  many agents {results['many_agents']}")
    if "memscale" in args.only:
        sizes = args.memscale_sizes or (memscale.QUICK_SIZES if quick else memscale.SIZES)
        print(f"memscale (items and decisions: {', '.join(f'{n:,}' for n in sizes)}; ms per call)")
        results["memscale"] = await memscale.run(env, sizes)
    if "startup" in args.only:
        print("startup (median of 10 fresh processes; ratio to importing what hivebus is built on)")
        results["startup"] = await anyio.to_thread.run_sync(startup.run, url)
    return results


def ratios(r: dict[str, Any]) -> dict[str, Any]:
    """The targets of issues 7, 10 and 11, each as a ratio (or figure) from this run, and whether met."""
    med = {k: v["median"] for k, v in r.items() if isinstance(v, dict) and "median" in v}
    table: dict[str, Any] = {}

    def row(name: str, value: float | None, target: str, met: bool | None, issue: str) -> None:
        table[name] = {"value": None if value is None else round(value, 3), "target": target,
                       "met": met, "issue": issue}

    def at_least(name: str, num: str, den: str, target: float, issue: str) -> None:
        if num in med and den in med:
            value = med[num] / med[den]
            row(name, value, f">= {target}", value >= target, issue)

    # issue 10, line 8
    at_least("per_call_vs_plain", "hivebus_per_call", "plain_per_call", 0.8, "10")
    at_least("batch_vs_plain_pipelined", "hivebus_batch", "plain_pipelined", 0.5, "10")
    if "latency_hivebus" in r and "latency_plain" in r:
        hb, plain = r["latency_hivebus"], r["latency_plain"]
        value = hb["p99"] / plain["p99"] if plain["p99"] else None
        row("p99_vs_plain_p99_same_run", value, "<= 2", value is not None and value <= 2.0, "10")
        paired = [h / q for h, q in zip(hb["p99s"], plain["p99s"], strict=True) if q]
        table["p99_vs_plain_each_run"] = {  # each run's hivebus p99 over the plain p99 measured next to it
            "value": ", ".join(f"{x:.2f}" for x in paired), "target": "context", "met": None, "issue": "10"}
    for name, limit in (("hivebus_per_call", 30.0), ("hivebus_batch", 15.0)):
        if name in r:
            us = r[name]["server"]["us_per_signal"]
            row(f"redis_us_per_signal_{name.removeprefix('hivebus_')}", us, f"<= {limit:g}", us <= limit,
                "10")
    if "idle" in r:
        idle = r["idle"]
        row("idle_agent_redis_calls_per_s", idle["agent_all_calls_per_s"], "<= 2",
            idle["agent_all_calls_per_s"] <= 2.0, "10")
        row("idle_agent_client_commands_per_s", idle["agent_client_cmds_per_s"], "<= 2",
            idle["agent_client_cmds_per_s"] <= 2.0, "10")
        row("coordinator_calls_per_s_per_idle_agent", idle["coordinator_all_calls_per_agent_s"],
            f"context ({idle['agents']} agents)", None, "10")
    # issue 7
    at_least("per_call_vs_raw", "hivebus_per_call", "raw_per_call", 0.8, "7")
    at_least("batch_vs_raw_pipelined", "hivebus_batch", "raw_pipelined", 0.5, "7")
    at_least("per_call_vs_faststream", "hivebus_per_call", "faststream_per_call", 3.0, "7")
    if "targeted_with_100_bystanders" in med:
        value = med["targeted_with_100_bystanders"] / med["targeted_with_1_bystander"]
        row("targeted_100_vs_1_bystanders", value, "<= 1.25", value <= 1.25, "7")
    if "latency_hivebus" in r:
        p99 = r["latency_hivebus"]["p99"]
        row("p99_latency_ms_at_rate", p99, "<= 2", p99 <= 2.0, "7")
        if "latency_raw" in r and r["latency_raw"]["p99"]:
            row("p99_latency_vs_raw_same_run", p99 / r["latency_raw"]["p99"], "context", None, "7")
    if "memory" in r:
        bytes_per = r["memory"]["bytes_per_signal"]
        row("redis_bytes_per_signal_per_target", bytes_per, "<= 500", bytes_per <= 500, "7")
    if "memscale" in r:  # issue 11, lines 5 and 6
        table.update(memscale.targets(r["memscale"]))
    if "startup" in r:  # issue 13, do-item 5
        table.update(startup.targets(r["startup"]))
    return table


def _commands(by_command: dict[str, list[float]], top: int = 8) -> str:
    shown = [f"{name} {calls:g}x/{usec:.1f}µs" for name, (calls, usec) in list(by_command.items())[:top]]
    return ", ".join(shown)


def write(results: dict[str, Any], targets: dict[str, Any], out: Path, meta: dict[str, str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": results, "targets": targets},
                                                 indent=2))
    lines = [f"# hivebus benchmarks — {meta['date']}", "", f"Machine: {meta['machine']}; "
             f"Redis {meta['redis']}; Python {meta['python']}; command: `{meta['command']}`; commit "
             f"{meta['commit']}; load average before {meta['load_before']}, after {meta['load_after']}", "",
             BASELINES, "| figure | median | min | max |", "|---|---:|---:|---:|"]
    for name, v in results.items():
        if isinstance(v, dict) and "median" in v:
            lines.append(f"| {name} | {v['median']:,.1f} | {v['min']:,.1f} | {v['max']:,.1f} |")
    served = {name: v["server"] for name, v in results.items() if isinstance(v, dict) and "server" in v}
    if served:
        lines += ["", "| Redis per signal (medians) | µs, commands sent | min-max | naive Σ µs "
                  "| script calls µs | inside scripts µs | Redis CPU µs | publisher CPU µs "
                  "| consumer CPU µs | commands sent | all calls | per command (calls x/µs; * inside "
                  "a script) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for name, s in served.items():
            lines.append(f"| {name} | {s['us_per_signal']:.1f} | {s['us_per_signal_min']:.1f}-"
                         f"{s['us_per_signal_max']:.1f} | {s['naive_us_per_signal']:.1f} | "
                         f"{s['script_body_us_per_signal']:.1f} | {s['in_script_us_per_signal']:.1f} | "
                         f"{s['cpu_us_per_signal']:.1f} | {s['publisher_cpu_us_per_signal']:.1f} | "
                         f"{s['consumer_cpu_us_per_signal']:.1f} | {s['client_calls_per_signal']:.2f} | "
                         f"{s['all_calls_per_signal']:.2f} | {_commands(s['by_command'])} |")
    lat = {name: v for name, v in results.items() if name.startswith("latency_")}
    if lat:
        lines += ["", "| latency (ms, median of runs) | p50 | p99 | p99 min-max | p99.9 | samples per run "
                  "| runs |", "|---|---:|---:|---:|---:|---:|---:|"]
        for name, v in lat.items():
            lines.append(f"| {name[8:]} | {v['p50']:.2f} | {v['p99']:.2f} | {v['p99_min']:.2f}-"
                         f"{v['p99_max']:.2f} | {v['p999']:.2f} | {v['samples']} | {v['runs']} |")
    if "idle" in results:
        v = results["idle"]
        lines += ["", f"| idle ({v['agents']} agents, {v['seconds']:g} s watched) | per agent per s |",
                  "|---|---:|",
                  f"| agent: all calls (INFO commandstats) | {v['agent_all_calls_per_s']:.2f} |",
                  f"| agent: commands sent (MONITOR) | {v['agent_client_cmds_per_s']:.2f} |",
                  f"| agent: which | {', '.join(f'{k} {n:g}' for k, n in v['agent_commands'].items())} |",
                  f"| with a coordinator: all calls (agents + coordinator) | "
                  f"{v['with_coordinator_all_calls_per_agent_s']:.2f} |",
                  f"| coordinator's share: all calls | {v['coordinator_all_calls_per_agent_s']:.2f} |",
                  f"| coordinator's share: commands sent | {v['coordinator_client_cmds_per_agent_s']:.2f} |",
                  f"| coordinator: which (per s, not per agent) | "
                  f"{', '.join(f'{k} {n:g}' for k, n in v['coordinator_commands_per_s'].items())} |"]
    other = [name for name in ("memory", "memory_api", "coordinator_pass", "many_agents") if name in results]
    if other:
        lines += ["", "| other | value |", "|---|---|"]
        for name in other:
            lines.append(f"| {name} | " + ", ".join(f"{k} {v:,.2f}" if isinstance(v, float) else f"{k} {v}"
                                                   for k, v in results[name].items()) + " |")
    if "memscale" in results:
        lines += memscale.markdown(results["memscale"])
    if "startup" in results:
        lines += startup.markdown(results["startup"])
    lines += ["", "| target | issue | value | target | met |", "|---|---|---:|---|---|"]
    for name, t in targets.items():
        met = "-" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {name} | {t['issue']} | {t['value']} | {t['target']} | {met} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    names = [n for n in ("hivebus_per_call", "plain_per_call", "raw_per_call", "faststream_per_call",
                         "hivebus_batch", "plain_pipelined", "raw_pipelined") if n in results]
    if names and importlib.util.find_spec("matplotlib") is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 4))
        ax.bar(names, [results[n]["median"] for n in names],
               yerr=[[results[n]["median"] - results[n]["min"] for n in names],
                     [results[n]["max"] - results[n]["median"] for n in names]], capsize=4)
        ax.set_ylabel("signals / s (median, min-max)")
        ax.set_title("publish-to-handled throughput, same run, same redis-server")
        plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
        fig.tight_layout()
        fig.savefig(out / "chart.png", dpi=110)
    print(f"wrote {out}/results.md, results.json" + (", chart.png" if (out / "chart.png").exists() else ""))


def _commit() -> str:
    """The checkout's commit, marked when coordinator/ or agents/ have uncommitted changes."""
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "coordinator", "agents")
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes in coordinator/agents"
                                                  if dirty else "")


def _sizes(text: str) -> tuple[int, ...]:
    """``--memscale-sizes``: comma-separated positive counts (1_000 and 1000 both read)."""
    sizes = tuple(int(part) for part in text.split(",") if part.strip())
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError("expected comma-separated positive counts")
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--skip-faststream", action="store_true")
    parser.add_argument("--only", default=",".join(GROUPS),
                        help=f"comma-separated workload groups to run (default all: {','.join(GROUPS)})")
    parser.add_argument("--idle-agents", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--memscale-sizes", type=_sizes, default=None,
                        help="comma-separated item counts for memscale (default 1000,10000,100000; "
                             "--quick: 100,300)")
    args = parser.parse_args()
    args.only = {g.strip() for g in args.only.split(",") if g.strip()}
    if args.only - set(GROUPS):
        parser.error(f"unknown group(s) {', '.join(sorted(args.only - set(GROUPS)))}")
    if not args.skip_faststream and importlib.util.find_spec("faststream") is None:
        print("faststream is not installed here: skipping its baselines (make bench installs it)")
        args.skip_faststream = True
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    binaries = find_binaries()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="hivebus-bench-") as tmp:
        server = subprocess.Popen([binaries.server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.5)  # a benchmark script, not a test: the server is up well within this
            url = f"redis://127.0.0.1:{port}/0"
            results = anyio.run(run, args, url, Path(tmp))
        finally:
            server.terminate()
            server.wait()
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "load_before": load_before,
            "load_after": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
            "commit": _commit(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
            "python": platform.python_version(), "redis": ".".join(map(str, binaries.version)),
            "command": " ".join(["python -m bench", *sys.argv[1:]])}
    write(results, ratios(results), args.out, meta)


if __name__ == "__main__":
    main()
