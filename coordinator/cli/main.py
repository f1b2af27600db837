"""The ``hivebus`` command: argument parsing and one small function per subcommand.

User mistakes end with one line on stderr (``hivebus: error: …``) and exit code 1
(2 for bad usage); no traceback. Every listing takes ``--json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

import anyio

from hivebus import __version__
from hivebus.bus.bus import Bus, TargetStatus
from hivebus.bus.registry import AgentInfo, Registry
from hivebus.cli.common import Parser, fail, listing, positive_int, with_redis
from hivebus.cli.ltm import add_knowledge_commands, add_ltm_commands
from hivebus.cli.memory import add_memory_commands
from hivebus.cli.output import ago, clock, clock_of, print_json, print_table
from hivebus.cli.views import (
    agent_json,
    dead_letter_json,
    set_aside_json,
    signal_json,
    signal_log_json,
)
from hivebus.domain.errors import HivebusError, InvalidInput, RedisUnavailable, first_leaf
from hivebus.domain.models import Signal, SignalStatus, parse_json_object, parse_severity
from hivebus.infra.connection import connected, open_sync_client, redis_endpoint
from hivebus.infra.logs import configure_logging
from hivebus.infra.managed_redis import find_cli
from hivebus.settings import Settings, load_settings, redact_url

CommandFn = Callable[[argparse.Namespace, Settings], Awaitable[int]]


# --- commands that talk to Redis ------------------------------------------------------------

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

    async def body(redis: Any) -> int:
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


async def cmd_agents(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus agents: registered agents with liveness and counters."""

    async def body(redis: Any) -> int:
        registry = Registry(redis, settings)
        agents = await registry.list_agents()
        _name_skipped(registry)
        if args.json:
            print_json([agent_json(a) for a in agents])
            return 0
        print_table(
            [
                {
                    "agent": a.agent_id, "type": a.agent_type, "status": a.status,
                    "replicas": sum(1 for i in a.instances if i.alive),
                    "last_seen": ago(a.last_seen), "processed": a.counters["processed"],
                    "published": a.counters["published"], "dead": a.counters["dead"],
                    "subscriptions": ",".join(a.subscriptions),
                }
                for a in agents
            ],
            ["agent", "type", "status", "replicas", "last_seen", "processed", "published",
             "dead", "subscriptions"],
        )
        return 0

    return await with_redis(settings, body)


async def cmd_signals(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus signals: recent signals, newest first."""

    async def body(redis: Any) -> int:
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

    async def body(redis: Any) -> int:
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

    async def body(redis: Any) -> int:
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


async def cmd_feed(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus feed: publish seeded MARKET_TICK signals."""
    from hivebus.agents.desk.feed import run_feed

    async def body(redis: Any) -> int:
        ids = await run_feed(
            Bus(redis, settings), count=args.count, interval_s=args.interval, seed=args.seed
        )
        print(f"published {len(ids)} MARKET_TICK signals")
        return 0

    return await with_redis(settings, body)


async def cmd_agent_show(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus agent show ID: one registered agent with its replicas and counters."""

    async def body(redis: Any) -> int:
        info = await Registry(redis, settings).get(args.agent_id)
        if args.json:
            print_json(agent_json(info))
            return 0
        _print_agent(info)
        return 0

    return await with_redis(settings, body)


def _print_agent(a: AgentInfo) -> None:
    print(f"agent          {a.agent_id}   type {a.agent_type}   version {a.version}")
    print(f"status         {a.status}   last seen {ago(a.last_seen)}   "
          f"registered {clock(a.registered_at) if a.registered_at else '-'}")
    print(f"subscriptions  {', '.join(a.subscriptions) or '-'}")
    print("counters       " + "   ".join(f"{name} {n}" for name, n in a.counters.items()))
    print()
    print_table([{"instance": i.instance_id, "host": i.host, "pid": i.pid,
                  "started": clock(i.started_at), "alive": "yes" if i.alive else "no"}
                 for i in a.instances], ["instance", "host", "pid", "started", "alive"])


async def cmd_agent_remove(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus agent remove ID: deregister an agent (registry and subscriptions)."""

    async def body(redis: Any) -> int:
        info = await Registry(redis, settings).remove(args.agent_id, force=args.force)
        if args.json:  # the agent as it was registered
            print_json(agent_json(info))
            return 0
        subscriptions = ", ".join(info.subscriptions) or "none"
        print(f"removed {info.agent_id} from the registry and its subscriptions ({subscriptions}); "
              f"its inbox, dead letters and memory stay")
        return 0

    return await with_redis(settings, body)


async def cmd_agent_run(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus agent run SPEC --id ID: run one agent in this process until SIGTERM/SIGINT."""
    from hivebus.agents.runner import AgentRunner, load_agent_class, stop_on_signals
    from hivebus.domain.keys import check_agent_id

    agent_cls = load_agent_class(args.spec)
    agent = agent_cls(check_agent_id(args.id))
    with redis_endpoint(settings) as url:
        async with connected(url, client_name=f"hivebus-agent-{args.id}", settings=settings) as redis:
            liveness = open_sync_client(url, client_name=f"hivebus-agent-{args.id}", settings=settings)
            runner = AgentRunner(agent, Bus(redis, settings), Registry(redis, settings),
                                 liveness_client=liveness)
            # a process of its own: start-up objects (modules, schemas) leave the collector's
            # view, which took the 20-30 ms GC pauses out of the latency tail
            gc.freeze()
            stop = anyio.Event()
            async with anyio.create_task_group() as tg:
                await tg.start(stop_on_signals, stop)
                await runner.run(stop, burst=args.burst)
                tg.cancel_scope.cancel()
    return 0


async def cmd_coordinator(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus coordinator: lead or stand by until SIGTERM/SIGINT (or one pass with --once)."""
    from hivebus.agents.runner import stop_on_signals
    from hivebus.service.coordinator import Coordinator
    from hivebus.store.sqlite import SQLiteStore

    store = await SQLiteStore.open(settings.store_path)
    try:
        with redis_endpoint(settings) as url:
            async with connected(url, client_name="hivebus-coordinator", settings=settings) as redis:
                coordinator = Coordinator(redis, settings, store)
                if args.once:
                    result = await coordinator.once(_progress_printer())
                    if args.json:
                        print_json(result.as_dict())
                    else:
                        print(f"one pass done: {result.summary()}")
                    return 0
                stop = anyio.Event()
                async with anyio.create_task_group() as tg:
                    await tg.start(stop_on_signals, stop)
                    await coordinator.run(stop)
                    tg.cancel_scope.cancel()
    finally:
        await store.close()
    return 0


def _progress_printer() -> Callable[[str, int, int], None]:
    """Progress lines on stderr: at most one per step per 5 %."""
    shown: dict[str, int] = {}

    def show(step: str, done: int, total: int) -> None:
        percent = 100 * done // max(total, 1)
        if percent // 5 != shown.get(step, -1) // 5 or done == total:
            shown[step] = percent
            print(f"{step}: {done}/{total} ({percent}%)", file=sys.stderr, flush=True)

    return show


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus demo: the three-agent desk as separate processes."""
    from hivebus.agents.desk.demo import run_demo

    return await run_demo(settings, cycles=args.cycles, seed=args.seed, speed=args.speed,
                          keep_running=args.keep_running, fresh=args.fresh, chaos=args.chaos)


async def cmd_set_aside(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus set-aside list|clear: records the coordinator set aside, with their reason."""
    from hivebus.domain.keys import Keys
    from hivebus.service.set_aside import SetAside

    async def body(redis: Any) -> int:
        aside = SetAside(redis, Keys(settings.namespace))
        if args.aside_command == "clear":
            if not args.ids and not args.all:
                raise InvalidInput("name the records to clear (ids from 'hivebus set-aside list'), or --all")
            print(f"cleared {await aside.clear(args.ids, everything=args.all)} record(s)")
            return 0
        rows = [set_aside_json(r) for r in await aside.list(args.limit)]
        if args.json:
            print_json(rows)
            return 0
        print_table([{"record_id": r["record_id"], "at": clock_of(r["at"]), "key": r["key"],
                      "member": r["member"] or r["moved_to"] or "", "reason": r["reason"]}
                     for r in rows], ["record_id", "at", "key", "member", "reason"])
        return 0

    return await with_redis(settings, body)


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus status: the Redis in use, the coordinator's leader and epoch, the store, the agents."""
    from hivebus.domain.keys import Keys
    from hivebus.store.sqlite import SQLiteStore

    with redis_endpoint(settings) as url:
        async with connected(url, client_name="hivebus-cli", settings=settings) as redis:
            keys = Keys(settings.namespace)
            server, memory = await redis.info("server"), await redis.info("memory")
            holder, epoch = await redis.get(keys.lease()), await redis.get(keys.epoch())
            registry = Registry(redis, settings)
            agents = await registry.list_agents()
    store: dict[str, Any] = {"path": str(settings.store_path), "exists": settings.store_path.exists()}
    if store["exists"]:
        opened = await SQLiteStore.open(settings.store_path)
        try:
            store["highest_epoch"] = await opened.highest_epoch()
            store["archived_decisions"] = await opened.count_archived()
        finally:
            await opened.close()
    status: dict[str, Any] = {
        "redis": {"url": redact_url(url), "managed": settings.redis_url is None,
                  "server": server.get("server_name", "redis"),
                  "version": server.get("valkey_version", server.get("redis_version")),
                  "maxmemory": int(memory.get("maxmemory", 0)),
                  "maxmemory_policy": memory.get("maxmemory_policy")},
        "namespace": settings.namespace,
        "coordinator": {"leader": holder, "epoch": int(epoch) if str(epoch or "").isdigit() else None},
        "store": store,
        "agents": {"registered": len(agents), "alive": sum(1 for a in agents if a.alive)},
    }
    if args.json:
        print_json(status)
        return 0
    r = status["redis"]
    print(f"redis        {r['url']} ({'managed by hivebus' if r['managed'] else 'configured'}): "
          f"{r['server']} {r['version']}, maxmemory {r['maxmemory']} ({r['maxmemory_policy']})")
    print(f"namespace    {settings.namespace}")
    print(f"coordinator  {holder or 'none leads'}; epoch {status['coordinator']['epoch'] or 0}")
    print(f"store        {store['path']}" + (
        f": highest epoch {store['highest_epoch']}, {store['archived_decisions']} archived decision(s)"
        if store["exists"] else " (not created yet: the coordinator creates it)"))
    print(f"agents       {status['agents']['registered']} registered, {status['agents']['alive']} alive")
    return 0


def _name_skipped(registry: Registry) -> None:
    """One line on stderr naming registry members that are not agent ids (left out)."""
    if registry.skipped:
        from hivebus.bus.bus import printable

        names = ", ".join(repr(printable(a)[:80]) for a in registry.skipped[:5])
        more = f" and {len(registry.skipped) - 5} more" if len(registry.skipped) > 5 else ""
        print(f"skipped {len(registry.skipped)} registry member(s) of {registry.keys.agents()} that "
              f"are not agent ids (edited by hand?): {names}{more}; the coordinator sets them aside "
              f"(hivebus set-aside)", file=sys.stderr)


async def cmd_acl(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus acl [AGENT …]: ACL rules for the coordinator and each agent (registered ones by default)."""
    from hivebus.cli.views import acl_user_json
    from hivebus.domain.keys import Keys, check_agent_id
    from hivebus.infra.acl import acl_script, acl_users

    agent_ids = [check_agent_id(a) for a in args.agent_ids]
    if not agent_ids:
        async def body(redis: Any) -> int:
            registry = Registry(redis, settings)
            agent_ids.extend(a.agent_id for a in await registry.list_agents())
            _name_skipped(registry)
            return 0

        await with_redis(settings, body)
    keys = Keys(settings.namespace)
    if args.json:
        print_json([acl_user_json(*user) for user in acl_users(keys, agent_ids)])
        return 0
    print("# Redis 7.0+ (the per-agent XADD selector needs it). Replace REPLACE_WITH_A_SECRET, then")
    print("# give each process its own URL: redis://hivebus-agent-<id>:<secret>@host:port/0")
    for line in acl_script(keys, agent_ids):
        print(line)
    return 0


async def cmd_reset(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus reset --yes: delete every key of the namespace (start fresh)."""
    from hivebus.infra.preflight import reset_namespace

    if not args.yes:
        raise InvalidInput(f"'hivebus reset' deletes every key of namespace {settings.namespace!r} "
                           f"(signals, state, memory, registry); run it again with --yes")
    with redis_endpoint(settings) as url:
        async with connected(url, client_name="hivebus-cli", settings=settings, check=False) as redis:
            removed = await reset_namespace(redis, settings)
    print(f"removed {removed} key(s) of namespace {settings.namespace!r}; the durable store is kept")
    return 0


def redis_cli(cli_args: Sequence[str], settings: Settings) -> int:
    """hivebus redis-cli [ARGS]: redis-cli on the configured or managed Redis, every argument
    passed through as given; user and password from the URL (the password through the
    environment, never on the command line); its exit code returned."""
    import subprocess

    cli = find_cli()
    if cli is None:
        raise InvalidInput("no redis-cli here (nor valkey-cli): install one (Debian: apt install "
                           "redis-tools), or use any Redis client on the URL 'hivebus status' shows")
    with redis_endpoint(settings) as url:
        parts = urlsplit(url)
        env = dict(os.environ)
        connect: list[str] = []
        if parts.scheme == "unix":
            connect = ["-s", parts.path]
        else:
            try:
                port = parts.port
            except ValueError as exc:
                raise RedisUnavailable(f"bad Redis URL {redact_url(url)}: {exc}") from None
            connect = ["-h", parts.hostname or "localhost", "-p", str(port or 6379)]
            database = parts.path.strip("/")
            if database.isdigit():
                connect += ["-n", database]
        if parts.username:
            connect += ["--user", unquote(parts.username)]
        if parts.password:
            env["REDISCLI_AUTH"] = unquote(parts.password)
        if parts.scheme == "rediss":
            connect.append("--tls")
            for flag, path in (("--cacert", settings.redis_tls_ca_file),
                               ("--cert", settings.redis_tls_cert_file),
                               ("--key", settings.redis_tls_key_file)):
                if path is not None:
                    connect += [flag, str(path)]
        return subprocess.call([cli, *connect, *cli_args], env=env)


# --- parsing ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``hivebus`` command."""
    parser = Parser(prog="hivebus", description="hivebus: a signal bus and memory for agents.")
    parser.add_argument("--version", action="version", version=f"hivebus {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    demo = sub.add_parser("demo", help="run the three-agent trading desk end to end")
    demo.add_argument("--cycles", type=positive_int, default=200, help="market ticks (default 200)")
    demo.add_argument("--seed", type=int, default=7, help="market seed (default 7)")
    demo.add_argument("--speed", type=float, default=0.0,
                      help="at most this many ticks per second (default: as fast as the desk goes)")
    demo.add_argument("--fresh", action="store_true", help="forget earlier runs: start blank")
    demo.add_argument("--chaos", action="store_true",
                      help="SIGKILL the executor halfway and restart it")
    demo.add_argument("--keep-running", action="store_true", help="stay up until Ctrl-C")
    demo.set_defaults(func=cmd_demo)

    coord = listing(sub.add_parser("coordinator", help="run the coordinator"))
    coord.add_argument("--once", action="store_true",
                       help="run one full pass (reap, learn, promote, archive) and exit")
    coord.set_defaults(func=cmd_coordinator)

    agent = sub.add_parser("agent", help="run an agent").add_subparsers(
        dest="agent_command", required=True, parser_class=Parser)
    run = agent.add_parser("run", help="run one agent process")
    run.add_argument("spec", help="built-in name (market-hunter, risk-manager, trade-executor), "
                                  "module:Class or path/to/file.py:Class")
    run.add_argument("--id", required=True, help="agent id; replicas share one id")
    run.add_argument("--burst", action="store_true", help="exit once the inbox is empty")
    run.set_defaults(func=cmd_agent_run)
    ashow = listing(agent.add_parser("show", help="one registered agent: replicas, counters"))
    ashow.add_argument("agent_id")
    ashow.set_defaults(func=cmd_agent_show)
    remove = listing(agent.add_parser("remove", help="deregister an agent for good (its inbox stays)"))
    remove.add_argument("agent_id")
    remove.add_argument("--force", action="store_true", help="even with live replicas")
    remove.set_defaults(func=cmd_agent_remove)

    pub = listing(sub.add_parser("publish", help="publish a signal"))
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

    listing(sub.add_parser("agents", help="list agents with liveness")).set_defaults(
        func=cmd_agents)
    sigs = listing(sub.add_parser("signals", help="recent signals, newest first"))
    sigs.add_argument("--limit", type=positive_int, default=20)
    sigs.set_defaults(func=cmd_signals)

    signal = sub.add_parser("signal", help="one signal").add_subparsers(
        dest="signal_command", required=True, parser_class=Parser)
    show = listing(signal.add_parser("show", help="a signal and its status per target"))
    show.add_argument("signal_id")
    show.set_defaults(func=cmd_signal_show)

    dlq = sub.add_parser("dlq", help="dead letters").add_subparsers(
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

    aside = sub.add_parser("set-aside", help="records the coordinator could not process").add_subparsers(
        dest="aside_command", required=True, parser_class=Parser)
    aside_list = listing(aside.add_parser("list", help="set-aside records with their reason, newest first"))
    aside_list.add_argument("--limit", type=positive_int, default=100)
    aside_clear = aside.add_parser("clear", help="remove records once looked at: ids, or --all")
    aside_clear.add_argument("ids", nargs="*")
    aside_clear.add_argument("--all", action="store_true")
    for p in aside.choices.values():
        p.set_defaults(func=cmd_set_aside)

    feed = sub.add_parser("feed", help="publish seeded MARKET_TICK signals")
    feed.add_argument("--count", type=positive_int, default=20)
    feed.add_argument("--interval", type=float, default=1.0)
    feed.add_argument("--seed", type=int, default=7)
    feed.set_defaults(func=cmd_feed)

    add_memory_commands(sub)
    add_ltm_commands(sub)
    add_knowledge_commands(sub)

    acl = listing(sub.add_parser("acl", help="print Redis ACL rules: one user per agent, one for the "
                                             "coordinator"))
    acl.add_argument("agent_ids", nargs="*", help="agent ids (default: every registered agent)")
    acl.set_defaults(func=cmd_acl)

    reset = sub.add_parser("reset", help="delete every key of the namespace (start fresh)")
    reset.add_argument("--yes", action="store_true", help="yes, delete them")
    reset.set_defaults(func=cmd_reset)
    status = listing(sub.add_parser("status", help="the Redis in use, the coordinator, the store"))
    status.set_defaults(func=cmd_status)

    rcli = sub.add_parser("redis-cli", help="open redis-cli on the Redis hivebus uses")
    rcli.add_argument("cli_args", nargs=argparse.REMAINDER, help="arguments for redis-cli")
    rcli.set_defaults(func=None)
    return parser


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the ``hivebus`` console script."""
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["redis-cli"]:  # everything after it is redis-cli's, unparsed
        try:
            raise SystemExit(redis_cli(given[1:], load_settings()))
        except HivebusError as exc:
            fail(str(exc), 1)
    args = build_parser().parse_args(given)
    try:
        settings = load_settings()
        configure_logging(settings)
        func: CommandFn = args.func
        code = anyio.run(func, args, settings)
    except HivebusError as exc:
        fail(str(exc), 1)
    except BaseExceptionGroup as group:  # raised inside a task group (agent run, coordinator)
        ours = group.subgroup(HivebusError)
        if ours is None:
            raise
        fail(str(first_leaf(ours)), 1)
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:  # `hivebus … | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    raise SystemExit(code)
