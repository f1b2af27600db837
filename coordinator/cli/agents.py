"""hivebus agents, agent run / show / remove: the registry and agent processes."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

import anyio

from hivebus.bus.registry import AgentInfo, Registry
from hivebus.cli.common import Parser, listing, name_skipped, with_redis
from hivebus.cli.main import COMMANDS
from hivebus.cli.output import ago, clock, print_json, print_table
from hivebus.cli.views import agent_json
from hivebus.infra.connection import connected, open_sync_client, redis_endpoint

if TYPE_CHECKING:
    import argparse

    from hivebus.infra.redis_errors import Redis
    from hivebus.settings import Settings


async def cmd_agents(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus agents: registered agents with liveness and counters."""

    async def body(redis: Redis) -> int:
        registry = Registry(redis, settings)
        agents = await registry.list_agents()
        name_skipped(registry)
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
async def cmd_agent_show(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus agent show ID: one registered agent with its replicas and counters."""

    async def body(redis: Redis) -> int:
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

    async def body(redis: Redis) -> int:
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
    from hivebus.bus.bus import Bus
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


def add_commands(sub: Any) -> None:
    """Add this group's commands to the ``hivebus`` parser."""
    agent = sub.add_parser("agent", help=COMMANDS["agent"][1]).add_subparsers(
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

    listing(sub.add_parser("agents", help=COMMANDS["agents"][1])).set_defaults(
        func=cmd_agents)
