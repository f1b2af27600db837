"""``hivebus state …``, ``hivebus memory …``, ``hivebus decisions`` and ``hivebus decision show``."""

from __future__ import annotations

import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

from hivebus.bus.bus import Bus
from hivebus.cli.common import Parser, listing, positive_int, with_redis
from hivebus.cli.main import COMMANDS
from hivebus.cli.output import clock, clock_of, print_json, print_table
from hivebus.cli.views import (
    config_change_json,
    decision_json,
    linked_signal_json,
    memory_item_json,
    outcome_json,
    signal_json,
    snapshot_json,
    state_json,
)
from hivebus.domain.errors import HivebusError, InvalidInput, NotFound
from hivebus.domain.keys import check_agent_id
from hivebus.memory.decisions import DecisionLog
from hivebus.memory.state import StateStore, StateType
from hivebus.memory.stm import ShortTermMemory

if TYPE_CHECKING:
    import argparse
    from collections.abc import AsyncIterator

    from hivebus.domain.decision import DecisionRecord
    from hivebus.infra.redis_errors import Redis
    from hivebus.settings import Settings


def _compact(value: Any, width: int = 60) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


async def cmd_state_show(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus state show AGENT: the CURRENT state."""

    async def body(redis: Redis) -> int:
        state = await StateStore(redis, settings).load(check_agent_id(args.agent_id))
        if state is None:
            raise NotFound(f"agent {args.agent_id!r} has no saved state")
        if args.json:
            print_json(state_json(state))
            return 0
        print(f"agent          {state.agent_id}   (agent version {state.agent_version})")
        print(f"status         {state.status.value}   cycle {state.current_cycle}   "
              f"state version {state.version}   updated {clock(state.updated_at)}")
        print(f"configuration  {json.dumps(state.configuration, sort_keys=True)}")
        print(f"source metrics {json.dumps(state.source_metrics, sort_keys=True)}")
        print(f"performance    {json.dumps(state.context_performance, sort_keys=True)}")
        return 0

    return await with_redis(settings, body)


async def cmd_state_history(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus state history AGENT: kept snapshots and configuration changes, newest first."""

    async def body(redis: Redis) -> int:
        store = StateStore(redis, settings)
        snapshots = [snapshot_json(s) for s in await store.history(check_agent_id(args.agent_id))]
        changes = [config_change_json(c) for c in await store.config_history(args.agent_id)]
        if args.json:
            print_json({"snapshots": snapshots, "configuration_changes": changes})
            return 0
        print("snapshots (newest first):")
        print_table([{"snapshot_id": s["snapshot_id"], "type": s["state_type"],
                      "created": clock_of(s["created_at"]), "cycle": s["state"].get("current_cycle", "?"),
                      "version": s["state"].get("version", "?"), "label": s.get("label", "")}
                     for s in snapshots if "unreadable" not in s],
                    ["snapshot_id", "type", "created", "cycle", "version", "label"])
        print("\nconfiguration changes (newest first):")
        print_table([{"at": clock_of(c["at"]), "version": c["version"], "from": _compact(c["from"], 40),
                      "to": _compact(c["to"], 40), "reason": c["reason"]}
                     for c in changes if "unreadable" not in c],
                    ["at", "version", "from", "to", "reason"])
        unreadable = sum(1 for item in [*snapshots, *changes] if "unreadable" in item)
        if unreadable:
            print(f"\n{unreadable} entr(y/ies) edited by hand into nonsense left out (--json shows them)")
        return 0

    return await with_redis(settings, body)


async def cmd_state_checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus state checkpoint AGENT: keep a snapshot of the CURRENT state."""

    async def body(redis: Redis) -> int:
        kind = StateType.BACKUP if args.backup else StateType.CHECKPOINT
        snapshot_id = await StateStore(redis, settings).snapshot(
            check_agent_id(args.agent_id), kind, args.label)
        print_json({"snapshot_id": snapshot_id}) if args.json else print(snapshot_id)
        return 0

    return await with_redis(settings, body)


async def cmd_state_rollback(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus state rollback AGENT SNAPSHOT: restore a kept snapshot."""

    async def body(redis: Redis) -> int:
        state = await StateStore(redis, settings).rollback(check_agent_id(args.agent_id), args.snapshot_id)
        if args.json:
            print_json(state_json(state))
        else:
            print(f"rolled {state.agent_id} back to {args.snapshot_id}: cycle {state.current_cycle}, "
                  f"state version {state.version}")
        return 0

    return await with_redis(settings, body)


async def cmd_memory_recall(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus memory recall AGENT QUERY: the most relevant memory items."""

    async def body(redis: Redis) -> int:
        memory = ShortTermMemory(redis, settings, check_agent_id(args.agent_id))
        ranked = await memory.recall(args.query, kind=args.kind, symbol=args.symbol, topk=args.top)
        if args.json:
            print_json([memory_item_json(i, relevance=r) for r, i in ranked])
            return 0
        now = time.time()
        print_table([{"relevance": f"{r:.3f}", "kind": i.kind, "symbol": i.symbol or "-",
                      "score": f"{i.score:g}", "age": f"{now - i.timestamp:.0f}s",
                      "content": i.content[:70]} for r, i in ranked],
                    ["relevance", "kind", "symbol", "score", "age", "content"])
        return 0

    return await with_redis(settings, body)


async def cmd_memory_summarize(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus memory summarize AGENT: counts by kind and mean score."""

    async def body(redis: Redis) -> int:
        memory = ShortTermMemory(redis, settings, check_agent_id(args.agent_id))
        summary = await memory.summarize(args.symbol, args.lookback)
        if args.json:
            print_json(summary)
            return 0
        print(f"{summary['count']} items in the last {args.lookback:g}s"
              f"{' for ' + args.symbol if args.symbol else ''}, mean score {summary['avg_score']:.3f}")
        print_table([{"kind": k, "count": n} for k, n in sorted(summary["by_kind"].items())],
                    ["kind", "count"])
        return 0

    return await with_redis(settings, body)


def _parse_since(text: str | None) -> float | None:
    """'90s', '15m', '6h', '3d' ago, or a Unix time."""
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units:
            return time.time() - float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise InvalidInput(f"--since {text!r}: use 90s, 15m, 6h, 3d or a Unix time") from None


@contextlib.asynccontextmanager
async def _archive(settings: Settings) -> AsyncIterator[Any]:
    """The durable store when its file exists (decision queries then span it), else None."""
    from hivebus.store import open_store, store_exists

    if not store_exists(settings):
        yield None
        return
    store = await open_store(settings)
    try:
        yield store
    finally:
        await store.close()


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else ("-" if value is None else value)


def _decision_row(d: DecisionRecord) -> dict[str, Any]:
    outcome = "pending" if d.outcome is None else ("success" if d.outcome.success else "failure")
    return {"decision_id": d.decision_id, "time": clock(d.timestamp), "type": d.decision_type,
            "confidence": _round(d.reasoning.get("confidence")), "outcome": outcome,
            "reasoning": _compact({k: v for k, v in d.reasoning.items()
                                   if k not in ("confidence", "confidence_adjustment")}, 50)}


async def cmd_decisions(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus decisions AGENT: an agent's decisions, newest first."""

    async def body(redis: Redis) -> int:
        success = True if args.success else False if args.failure else None
        async with _archive(settings) as archive:
            found = await DecisionLog(redis, settings, archive=archive).query(
                check_agent_id(args.agent_id), decision_type=args.type, success=success,
                since=_parse_since(args.since), pending=args.pending, limit=args.limit)
        if args.json:
            print_json([decision_json(d) for d in found])
            return 0
        print_table([_decision_row(d) for d in found],
                    ["decision_id", "time", "type", "confidence", "outcome", "reasoning"])
        return 0

    return await with_redis(settings, body)


async def cmd_decision_show(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus decision show ID: a decision, its outcome, what triggered it and what it caused."""

    async def body(redis: Redis) -> int:
        bus = Bus(redis, settings)

        async def signal_view(signal_id: str) -> dict[str, Any]:
            try:
                report = await bus.report(signal_id)
            except HivebusError:
                return linked_signal_json(signal_id, None)
            return linked_signal_json(signal_id, signal_json(report.signal, report.targets))

        async with _archive(settings) as archive:
            log = DecisionLog(redis, settings, archive=archive)
            decision = await log.get(args.decision_id)
            caused_ids = await log.caused_signals(decision.decision_id)
        triggers = [await signal_view(s) for s in decision.triggered_by]
        caused = [await signal_view(s) for s in caused_ids]
        if args.json:
            print_json({**decision_json(decision), "triggering_signals": triggers, "caused_signals": caused})
            return 0
        print(f"decision   {decision.decision_id}   {decision.decision_type} by {decision.agent_id}"
              f"   at {clock(decision.timestamp)}")
        if decision.parent_decision_id:
            print(f"parent     {decision.parent_decision_id}")
        print(f"context    {json.dumps(decision.context, sort_keys=True)}")
        print(f"reasoning  {json.dumps(decision.reasoning, sort_keys=True)}")
        outcome = decision.outcome
        print("outcome    " + ("pending" if outcome is None else json.dumps(outcome_json(outcome),
                                                                        sort_keys=True)))
        for title, views in (("triggered by", triggers), ("caused", caused)):
            print(f"\n{title}:")
            print_table([{"signal_id": v["signal_id"], "type": v.get("signal_type", "(expired)"),
                          "source": v.get("source_agent", "-"), "caused_by": v.get("causation_id") or "-",
                          "status": ", ".join(f"{a}={t['status']}" for a, t in v.get("status", {}).items())}
                         for v in views], ["signal_id", "type", "source", "caused_by", "status"])
        return 0

    return await with_redis(settings, body)


async def cmd_decision_outcome(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus decision outcome ID --success|--failure: attach a decision's outcome (once)."""
    from hivebus.domain.models import parse_json_object

    metrics = parse_json_object(args.metrics, "--metrics") if args.metrics else {}

    async def body(redis: Redis) -> int:
        async with _archive(settings) as archive:  # an archived decision's outcome is queued
            outcome = await DecisionLog(redis, settings, archive=archive).log_outcome(
                args.decision_id, success=args.success, quality_score=args.quality,
                latency_ms=args.latency_ms, error=args.error, metrics=metrics, queue_unknown=False)
        if args.json:
            print_json(outcome_json(outcome))
        else:
            print(f"outcome recorded for {args.decision_id}: "
                  f"{'success' if outcome.success else 'failure'}")
        return 0

    return await with_redis(settings, body)


def add_commands(sub: Any) -> None:
    """Register the state, memory and decision commands on the ``hivebus`` subparsers."""
    state = sub.add_parser("state", help=COMMANDS["state"][1]).add_subparsers(
        dest="state_command", required=True, parser_class=Parser)
    show = listing(state.add_parser("show", help="an agent's CURRENT state"))
    show.add_argument("agent_id")
    show.set_defaults(func=cmd_state_show)
    history = listing(state.add_parser("history", help="snapshots and configuration changes"))
    history.add_argument("agent_id")
    history.set_defaults(func=cmd_state_history)
    checkpoint = listing(state.add_parser("checkpoint", help="keep a snapshot of the CURRENT state"))
    checkpoint.add_argument("agent_id")
    checkpoint.add_argument("--label", default="", help="a note kept with the snapshot")
    checkpoint.add_argument("--backup", action="store_true", help="record it as a BACKUP")
    checkpoint.set_defaults(func=cmd_state_checkpoint)
    rollback = listing(state.add_parser("rollback", help="restore a kept snapshot"))
    rollback.add_argument("agent_id")
    rollback.add_argument("snapshot_id")
    rollback.set_defaults(func=cmd_state_rollback)

    memory = sub.add_parser("memory", help=COMMANDS["memory"][1]).add_subparsers(
        dest="memory_command", required=True, parser_class=Parser)
    recall = listing(memory.add_parser("recall", help="most relevant items for a query"))
    recall.add_argument("agent_id")
    recall.add_argument("query", nargs="?", default="")
    recall.add_argument("--kind")
    recall.add_argument("--symbol")
    recall.add_argument("--top", type=positive_int, default=10)
    recall.set_defaults(func=cmd_memory_recall)
    summarize = listing(memory.add_parser("summarize", help="counts by kind and mean score"))
    summarize.add_argument("agent_id")
    summarize.add_argument("--symbol")
    summarize.add_argument("--lookback", type=float, default=86_400, help="seconds (default 1 day)")
    summarize.set_defaults(func=cmd_memory_summarize)

    decisions = listing(sub.add_parser("decisions", help=COMMANDS["decisions"][1]))
    decisions.add_argument("agent_id")
    decisions.add_argument("--type", help="decision type, e.g. TRADE_EXECUTION")
    outcome = decisions.add_mutually_exclusive_group()
    outcome.add_argument("--success", action="store_true", help="only successful ones")
    outcome.add_argument("--failure", action="store_true", help="only failed ones")
    outcome.add_argument("--pending", action="store_true", help="only those awaiting an outcome")
    decisions.add_argument("--since", help="90s, 15m, 6h, 3d, or a Unix time")
    decisions.add_argument("--limit", type=positive_int, default=50)
    decisions.set_defaults(func=cmd_decisions)

    decision = sub.add_parser("decision", help=COMMANDS["decision"][1]).add_subparsers(
        dest="decision_command", required=True, parser_class=Parser)
    dshow = listing(decision.add_parser("show", help="a decision with its outcome and signal chain"))
    dshow.add_argument("decision_id")
    dshow.set_defaults(func=cmd_decision_show)
    dout = listing(decision.add_parser("outcome", help="attach the outcome of a decision (once)"))
    dout.add_argument("decision_id")
    result = dout.add_mutually_exclusive_group(required=True)
    result.add_argument("--success", action="store_true", dest="success")
    result.add_argument("--failure", action="store_false", dest="success")
    dout.add_argument("--quality", type=float, help="quality score 0..1")
    dout.add_argument("--latency-ms", type=float)
    dout.add_argument("--error", help="what went wrong")
    dout.add_argument("--metrics", help='JSON object, e.g. \'{"pnl": 12.5}\'')
    dout.set_defaults(func=cmd_decision_outcome)
