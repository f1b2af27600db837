"""hivebus coordinator, status, set-aside, acl, reset: running and operating hivebus."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import anyio

from hivebus.bus.registry import Registry
from hivebus.cli.common import Parser, listing, name_skipped, positive_int, with_redis
from hivebus.cli.main import COMMANDS
from hivebus.cli.output import clock_of, print_json, print_table
from hivebus.cli.views import (
    set_aside_json,
)
from hivebus.domain.errors import InvalidInput
from hivebus.infra.connection import connected, redis_endpoint
from hivebus.settings import Settings, redact_url

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from hivebus.infra.redis_errors import Redis


async def cmd_coordinator(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus coordinator: lead or stand by until SIGTERM/SIGINT (or one pass with --once)."""
    from hivebus.agents.runner import stop_on_signals
    from hivebus.service.coordinator import Coordinator
    from hivebus.store import open_store

    store = await open_store(settings)
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
async def cmd_set_aside(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus set-aside list|clear: records the coordinator set aside, with their reason."""
    from hivebus.domain.keys import Keys
    from hivebus.service.set_aside import SetAside

    async def body(redis: Redis) -> int:
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
    """hivebus status: the Redis in use (on a cluster: its state, nodes, each primary), the
    coordinator's leader and epoch, the store, the agents."""
    from hivebus.domain.keys import Keys
    from hivebus.infra.connection import cluster_layout
    from hivebus.infra.preflight import primary_infos
    from hivebus.infra.redis_errors import text_or_none, translate_redis_errors
    from hivebus.store import is_postgres, open_store, store_exists, store_label

    with redis_endpoint(settings) as url:
        async with connected(url, client_name="hivebus-cli", settings=settings) as redis:
            keys = Keys(settings.namespace)
            async with translate_redis_errors(url):
                servers, memories = await primary_infos(redis, "server"), await primary_infos(redis, "memory")
                layout = await cluster_layout(redis)
                holder = text_or_none(await redis.get(keys.lease()))
                epoch = text_or_none(await redis.get(keys.epoch()))
            registry = Registry(redis, settings)
            agents = await registry.list_agents()
    store: dict[str, Any] = {"engine": "postgresql" if is_postgres(settings) else "sqlite",
                             "path": store_label(settings), "exists": store_exists(settings)}
    if store["exists"]:
        opened = await open_store(settings)
        try:
            store["highest_epoch"] = await opened.highest_epoch()
            store["archived_decisions"] = await opened.count_archived()
        finally:
            await opened.close()

    def server_of(node: str) -> dict[str, Any]:
        server, memory = servers.get(node, {}), memories.get(node, {})
        return {"server": server.get("server_name", "redis"),
                "version": server.get("valkey_version", server.get("redis_version")),
                "maxmemory": int(memory.get("maxmemory", 0)),
                "maxmemory_policy": memory.get("maxmemory_policy")}

    cluster: dict[str, Any] | None = None
    if layout is not None:
        nodes = layout["nodes"]
        primaries = [{"node": n["node"], "slots": n["slots"], "failing": n["failing"],
                      "replicas": [r["node"] for r in nodes if r["primary"] == n["node"]],
                      **server_of(n["node"])}
                     for n in nodes if n["role"] == "primary" and n["slots"]]
        cluster = {"state": layout["state"], "nodes": len(nodes), "masters": len(primaries),
                   "failing": [n["node"] for n in nodes if n["failing"]], "primaries": primaries}
    status: dict[str, Any] = {
        # a cluster: server, version and memory of its first primary (all of them under cluster)
        "redis": {"url": redact_url(url), "managed": settings.redis_url is None,
                  **server_of(next(iter(servers))), "cluster": cluster},
        "namespace": settings.namespace,
        "coordinator": {"leader": holder, "epoch": int(epoch) if epoch and epoch.isdigit() else None},
        "store": store,
        "agents": {"registered": len(agents), "alive": sum(1 for a in agents if a.alive)},
    }
    if args.json:
        print_json(status)
        return 0
    r = status["redis"]
    where = f"redis        {r['url']} ({'managed by hivebus' if r['managed'] else 'configured'})"
    if cluster is None:
        print(f"{where}: {r['server']} {r['version']}, maxmemory {r['maxmemory']} ({r['maxmemory_policy']})")
    else:
        failing = f", failing: {', '.join(cluster['failing'])}" if cluster["failing"] else ""
        print(f"{where}: Redis Cluster, cluster_state {cluster['state']}, {cluster['nodes']} nodes, "
              f"{cluster['masters']} masters{failing}")
        for p in cluster["primaries"]:
            print(f"  primary    {p['node']}: {p['server']} {p['version']}, maxmemory {p['maxmemory']} "
                  f"({p['maxmemory_policy']}), {p['slots']} slots, "
                  f"replicas {', '.join(p['replicas']) or 'none'}")
    print(f"namespace    {settings.namespace}")
    print(f"coordinator  {holder or 'none leads'}; epoch {status['coordinator']['epoch'] or 0}")
    print(f"store        {store['path']}" + (
        f": highest epoch {store['highest_epoch']}, {store['archived_decisions']} archived decision(s)"
        if store["exists"] else " (not created yet: the coordinator creates it)"))
    print(f"agents       {status['agents']['registered']} registered, {status['agents']['alive']} alive")
    return 0
async def cmd_acl(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus acl [AGENT …]: ACL rules for the coordinator and each agent (registered ones by
    default); on a Redis Cluster, for every node."""
    from hivebus.cli.views import acl_user_json
    from hivebus.domain.keys import Keys, check_agent_id
    from hivebus.infra.acl import acl_script, acl_users
    from hivebus.infra.connection import cluster_layout, cluster_setting
    from hivebus.infra.redis_errors import translate_redis_errors

    agent_ids = [check_agent_id(a) for a in args.agent_ids]
    nodes: list[str] = []

    async def body(redis: Redis) -> int:
        if not args.agent_ids:
            registry = Registry(redis, settings)
            agent_ids.extend(a.agent_id for a in await registry.list_agents())
            name_skipped(registry)
        async with translate_redis_errors():
            layout = await cluster_layout(redis)
        if layout is not None:
            nodes.extend(node["node"] for node in layout["nodes"])
        return 0

    if not agent_ids:
        await with_redis(settings, body)
    elif settings.redis_url is not None and cluster_setting(settings) is not False:
        # only to learn whether the server is a cluster and its nodes: no check, nothing written
        with redis_endpoint(settings) as url:
            async with connected(url, client_name="hivebus-cli", settings=settings, check=False) as redis:
                await body(redis)
    keys = Keys(settings.namespace)
    if args.json:
        print_json([acl_user_json(*user) for user in acl_users(keys, agent_ids, cluster=bool(nodes))])
        return 0
    print("# Redis 7.0+ (the per-agent XADD selector needs it). Replace REPLACE_WITH_A_SECRET, then")
    print("# give each process its own URL: redis://hivebus-agent-<id>:<secret>@host:port/0")
    if nodes:
        print(f"# Redis Cluster of {len(nodes)} nodes: ACL users are per node, so each user is set on")
        print("# every node, replicas included (a replica a failover promotes must know them). Add the")
        print("# admin's --user and REDISCLI_AUTH (and --tls …) as your connection needs. Users set so")
        print("# last until the node restarts: with an aclfile, run 'ACL SAVE' on every node afterwards,")
        print("# or put them in every node's aclfile.")
    for line in acl_script(keys, agent_ids, nodes):
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


def add_commands(sub: Any) -> None:
    """Add this group's commands to the ``hivebus`` parser."""
    coord = listing(sub.add_parser("coordinator", help=COMMANDS["coordinator"][1]))
    coord.add_argument("--once", action="store_true",
                       help="run one full pass (reap, learn, promote, archive) and exit")
    coord.set_defaults(func=cmd_coordinator)

    aside = sub.add_parser("set-aside", help=COMMANDS["set-aside"][1]).add_subparsers(
        dest="aside_command", required=True, parser_class=Parser)
    aside_list = listing(aside.add_parser("list", help="set-aside records with their reason, newest first"))
    aside_list.add_argument("--limit", type=positive_int, default=100)
    aside_clear = aside.add_parser("clear", help="remove records once looked at: ids, or --all")
    aside_clear.add_argument("ids", nargs="*")
    aside_clear.add_argument("--all", action="store_true")
    for p in aside.choices.values():
        p.set_defaults(func=cmd_set_aside)

    acl = listing(sub.add_parser("acl", help=COMMANDS["acl"][1]))
    acl.add_argument("agent_ids", nargs="*", help="agent ids (default: every registered agent)")
    acl.set_defaults(func=cmd_acl)

    reset = sub.add_parser("reset", help=COMMANDS["reset"][1])
    reset.add_argument("--yes", action="store_true", help="yes, delete them")
    reset.set_defaults(func=cmd_reset)
    status = listing(sub.add_parser("status", help=COMMANDS["status"][1]))
    status.set_defaults(func=cmd_status)

