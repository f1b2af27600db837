"""The desk's commands, ``hivebus demo`` and ``hivebus feed``, added to the CLI through the
``hivebus.commands`` entry point (see pyproject.toml): the core CLI does not know the desk."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hivebus.cli.common import positive_int, with_redis

if TYPE_CHECKING:
    import argparse

    from hivebus.infra.redis_errors import Redis
    from hivebus.settings import Settings

COMMANDS = {
    "demo": "run the three-agent trading desk end to end",
    "feed": "publish seeded MARKET_TICK signals",
}


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus demo: the three-agent desk as separate processes."""
    from hivebus.agents.desk.demo import run_demo

    return await run_demo(settings, cycles=args.cycles, seed=args.seed, speed=args.speed,
                          keep_running=args.keep_running, fresh=args.fresh, chaos=args.chaos)


async def cmd_feed(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus feed: publish seeded MARKET_TICK signals."""
    from hivebus.agents.desk.feed import run_feed
    from hivebus.bus.bus import Bus

    async def body(redis: Redis) -> int:
        ids = await run_feed(
            Bus(redis, settings), count=args.count, interval_s=args.interval, seed=args.seed
        )
        print(f"published {len(ids)} MARKET_TICK signals")
        return 0

    return await with_redis(settings, body)


def add_commands(sub: Any) -> None:
    """Add the desk's commands to the ``hivebus`` parser."""
    demo = sub.add_parser("demo", help=COMMANDS["demo"])
    demo.add_argument("--cycles", type=positive_int, default=200, help="market ticks (default 200)")
    demo.add_argument("--seed", type=int, default=7, help="market seed (default 7)")
    demo.add_argument("--speed", type=float, default=0.0,
                      help="at most this many ticks per second (default: as fast as the desk goes)")
    demo.add_argument("--fresh", action="store_true", help="forget earlier runs: start blank")
    demo.add_argument("--chaos", action="store_true",
                      help="SIGKILL the executor halfway and restart it")
    demo.add_argument("--keep-running", action="store_true", help="stay up until Ctrl-C")
    demo.set_defaults(func=cmd_demo)

    feed = sub.add_parser("feed", help=COMMANDS["feed"])
    feed.add_argument("--count", type=positive_int, default=20)
    feed.add_argument("--interval", type=float, default=1.0)
    feed.add_argument("--seed", type=int, default=7)
    feed.set_defaults(func=cmd_feed)

