"""hivebus publish, signals, signal show, dlq: signals and dead letters."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from hivebus.bus.bus import Bus, TargetStatus
from hivebus.bus.registry import Registry
from hivebus.cli.common import Parser, listing, positive_int, with_redis
from hivebus.cli.main import COMMANDS
from hivebus.cli.output import clock, clock_of, print_json, print_table
from hivebus.cli.views import (
    dead_letter_json,
    signal_json,
    signal_log_json,
)
from hivebus.domain.errors import InvalidInput
from hivebus.domain.models import Signal, SignalStatus, parse_json_object, parse_severity

if TYPE_CHECKING:
    import argparse

    from hivebus.infra.redis_errors import Redis
    from hivebus.settings import Settings

CLI_SOURCE = "cli"


async def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus publish TYPE: publish one signal and print its id."""
    if not 0.0 <= args.confidence <= 1.0:
        raise InvalidInput(f"--confidence must be between 0 and 1, got {args.confidence}")
    if args.ttl is not None and not 0 < args.ttl <= settings.signal_ttl_s:
        raise InvalidInput(f"--ttl must be more than 0 and at most HIVEBUS_SIGNAL_TTL_S "
                           f"({settings.signal_ttl_s}) seconds, got {args.ttl:g}")
    targets = [t.strip() for t in (args.to or "").split(",") if t.strip()]
    signal = Signal.create(
        args.type,
        args.source,
        targets=targets,
        ttl_s=args.ttl if args.ttl is not None else settings.signal_ttl_s,
        severity=parse_severity(args.severity),
        confidence=args.confidence,
        data=parse_json_object(args.data),
        correlation_id=args.correlation_id,
    )

    async def body(redis: Redis) -> int:
        if args.source == CLI_SOURCE:  # replies to the CLI wait in its inbox, not dead letters
            await Registry(redis, settings).register_publisher(CLI_SOURCE)
        delivered = await Bus(redis, settings).publish(
            signal, allow_unregistered=args.allow_unregistered
        )
        if args.json:  # shaped as `signal show --json`: each target as the publish left it
            print_json(signal_json(signal, [TargetStatus(agent_id, SignalStatus.PENDING, entry)
                                            for agent_id, entry in sorted(delivered.items())]))
        else:
            print(signal.signal_id)
            if not delivered:
                print("note: no agent is subscribed to this type; nobody received it",
                      file=sys.stderr)
        return 0

    return await with_redis(settings, body)
async def cmd_signals(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus signals: recent signals, newest first."""

    async def body(redis: Redis) -> int:
        rows = await Bus(redis, settings).recent(args.limit)
        shaped = [signal_log_json(r) for r in rows]  # a subset of `signal show --json`
        if args.json:
            print_json(shaped)
            return 0
        print_table(
            [{"signal_id": r["signal_id"], "time": clock_of(r["published_at"]), "type": r["signal_type"],
              "source": r["source_agent"], "to": ",".join(r["delivered_to"]) or "(nobody)"}
             for r in shaped],
            ["signal_id", "time", "type", "source", "to"],
        )
        return 0

    return await with_redis(settings, body)
async def cmd_signal_show(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus signal show ID: one signal and its status per target."""

    async def body(redis: Redis) -> int:
        report = await Bus(redis, settings).report(args.signal_id)
        if args.json:
            print_json(signal_json(report.signal, report.targets))
            return 0
        s = report.signal
        print(f"signal    {s.signal_id}")
        print(f"type      {s.signal_type}   severity {s.severity.value}   "
              f"confidence {s.confidence:g}")
        print(f"source    {s.source_agent}")
        print(f"created   {clock(s.created_at)}   expires {clock(s.expires_at)}")
        if s.correlation_id or s.causation_id:
            print(f"caused by {s.causation_id or '-'}   correlation {s.correlation_id or '-'}")
        print(f"data      {json.dumps(s.data, sort_keys=True)}")
        print()
        print_table(
            [{"target": t.agent_id, "status": t.status.value, "entry": t.entry_id or "-",
              "deliveries": t.deliveries or "-", "attempts": t.attempts or "-", "error": t.error or ""}
             for t in report.targets],
            ["target", "status", "entry", "deliveries", "attempts", "error"],
        )
        return 0

    return await with_redis(settings, body)
async def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus dlq list|show|replay|purge AGENT …: an agent's dead letters."""
    from hivebus.bus.dlq import DeadLetters

    async def body(redis: Redis) -> int:
        letters = DeadLetters(redis, settings)
        action = args.dlq_command
        if action == "list":
            rows = [dead_letter_json(r) for r in await letters.list(args.agent_id, args.limit)]
            if args.json:
                print_json(rows)
            else:
                print_table([{"dlq_entry": r["dlq_entry"], "failed_at": clock_of(r["failed_at"]),
                              "attempts": r["attempts"], "reason": r["reason"]}
                             for r in rows], ["dlq_entry", "failed_at", "attempts", "reason"])
        elif action == "show":  # JSON with or without --json: the original entry is nested
            print_json(dead_letter_json(await letters.show(args.agent_id, args.dlq_entry)))
        elif action == "replay":
            targets = ([r["dlq_entry"] for r in await letters.list(args.agent_id, 100_000)]
                       if args.all else [args.dlq_entry])
            if not args.all and args.dlq_entry is None:
                raise InvalidInput("name a dead letter to replay, or pass --all")
            for entry in reversed(targets):  # oldest first
                new_entry = await letters.replay(args.agent_id, entry)
                print(f"replayed {entry} -> {args.agent_id} inbox entry {new_entry}")
        else:
            if not args.all and args.dlq_entry is None:
                raise InvalidInput("name a dead letter to purge, or pass --all")
            count = await letters.purge(args.agent_id, None if args.all else args.dlq_entry)
            print(f"purged {count} dead letter(s) of {args.agent_id}")
        return 0

    return await with_redis(settings, body)


def add_commands(sub: Any) -> None:
    """Add this group's commands to the ``hivebus`` parser."""
    pub = listing(sub.add_parser("publish", help=COMMANDS["publish"][1]))
    pub.add_argument("type", help="signal type, UPPER_SNAKE_CASE")
    pub.add_argument("--to", help="comma-separated target agent ids (default: subscribers)")
    pub.add_argument("--severity", default="INFO", help="CRITICAL, HIGH, MEDIUM, LOW or INFO")
    pub.add_argument("--confidence", type=float, default=1.0, help="0..1 (default 1)")
    pub.add_argument("--data", default="{}", help="JSON object")
    pub.add_argument("--source", default=CLI_SOURCE,
                     help="source agent id (default cli: registered as a publisher, so replies wait "
                          "in its inbox)")
    pub.add_argument("--ttl", type=float,
                     help="seconds until the signal expires (default and most: HIVEBUS_SIGNAL_TTL_S, 24 h)")
    pub.add_argument("--correlation-id", help="correlation id to carry")
    pub.add_argument("--allow-unregistered", action="store_true",
                     help="allow targets that have never registered")
    pub.set_defaults(func=cmd_publish)

    sigs = listing(sub.add_parser("signals", help=COMMANDS["signals"][1]))
    sigs.add_argument("--limit", type=positive_int, default=20)
    sigs.set_defaults(func=cmd_signals)

    signal = sub.add_parser("signal", help=COMMANDS["signal"][1]).add_subparsers(
        dest="signal_command", required=True, parser_class=Parser)
    show = listing(signal.add_parser("show", help="a signal and its status per target"))
    show.add_argument("signal_id")
    show.set_defaults(func=cmd_signal_show)

    dlq = sub.add_parser("dlq", help=COMMANDS["dlq"][1]).add_subparsers(
        dest="dlq_command", required=True, parser_class=Parser)
    dlq_list = listing(dlq.add_parser("list", help="an agent's dead letters, newest first"))
    dlq_list.add_argument("agent_id")
    dlq_list.add_argument("--limit", type=positive_int, default=50)
    dlq_show = listing(dlq.add_parser("show", help="one dead letter with its original entry (JSON)"))
    dlq_show.add_argument("agent_id")
    dlq_show.add_argument("dlq_entry")
    for name, verb in (("replay", "put back into the agent's inbox, status reset"),
                       ("purge", "delete for good")):
        p = dlq.add_parser(name, help=f"{verb}: one dead letter, or --all")
        p.add_argument("agent_id")
        p.add_argument("dlq_entry", nargs="?")
        p.add_argument("--all", action="store_true")
    for p in dlq.choices.values():
        p.set_defaults(func=cmd_dlq)

