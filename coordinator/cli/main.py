"""The ``hivebus`` command: a table of commands, each loaded only when it runs.

``hivebus --help`` imports no more than argparse; ``hivebus <command>`` imports the one module
of its group (``signals``, ``agents``, ``operations``, ``memory``, ``ltm`` here, and the groups
other packages add through the ``hivebus.commands`` entry point, like the desk's ``demo`` and
``feed``). User mistakes end with one line on stderr (``hivebus: error: …``) and exit code 1
(2 for bad usage); no traceback. Every listing and show takes ``--json``.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import unquote, urlsplit

from hivebus import __version__
from hivebus.cli.common import Parser, fail

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Coroutine, Sequence
    from typing import Any

    from hivebus.settings import Settings

    CommandFn = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]

# command -> (module of its group, one-line help), in the order --help lists them
COMMANDS: dict[str, tuple[str, str]] = {
    "coordinator": ("hivebus.cli.operations", "run the coordinator"),
    "agent": ("hivebus.cli.agents", "run, show or remove an agent"),
    "publish": ("hivebus.cli.signals", "publish a signal"),
    "agents": ("hivebus.cli.agents", "list agents with liveness"),
    "signals": ("hivebus.cli.signals", "recent signals, newest first"),
    "signal": ("hivebus.cli.signals", "one signal"),
    "dlq": ("hivebus.cli.signals", "dead letters"),
    "set-aside": ("hivebus.cli.operations", "records the coordinator could not process"),
    "state": ("hivebus.cli.memory", "agent state"),
    "memory": ("hivebus.cli.memory", "short-term memory"),
    "decisions": ("hivebus.cli.memory", "an agent's decisions, newest first"),
    "decision": ("hivebus.cli.memory", "one decision"),
    "patterns": ("hivebus.cli.ltm", "promoted patterns, best first"),
    "pattern": ("hivebus.cli.ltm", "one pattern"),
    "procedures": ("hivebus.cli.ltm", "procedural memory"),
    "concepts": ("hivebus.cli.ltm", "semantic memory"),
    "acl": ("hivebus.cli.operations", "print Redis ACL rules: one user per agent, one for the coordinator"),
    "reset": ("hivebus.cli.operations", "delete every key of the namespace (start fresh)"),
    "status": ("hivebus.cli.operations", "the Redis in use, the coordinator, the store"),
}
ENTRY_POINT_GROUP = "hivebus.commands"  # value: a module with COMMANDS {name: help} and add_commands


def command_table(command: str | None = None) -> dict[str, tuple[str, str]]:
    """The core commands and those other installed packages add (the desk's, for one). Running
    a core command, the others are named without looking for them (a scan of every installed
    package's metadata, ~25 ms): its own usage lists the core commands only."""
    if command in COMMANDS:
        return COMMANDS
    from importlib.metadata import entry_points

    table = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        module = point.module
        added = importlib.import_module(module).COMMANDS
        table.update({name: (module, text) for name, text in added.items()})
    return {**table, **COMMANDS}


def build_parser(command: str | None = None, *, complete: bool = False) -> argparse.ArgumentParser:
    """The parser of the ``hivebus`` command, complete for ``command`` (the one being run); the
    other commands are there by name and help only, their modules left unloaded. ``complete``:
    every command with all its options (for tests and documentation)."""
    parser = Parser(prog="hivebus", description="hivebus: a signal bus and memory for agents.")
    parser.add_argument("--version", action="version", version=f"hivebus {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    table = command_table(command)
    chosen = table.get(command or "", (None, ""))[0]
    for name, (module, text) in table.items():
        if name in sub.choices:
            continue
        if complete or module == chosen:
            importlib.import_module(module).add_commands(sub)
        else:
            sub.add_parser(name, help=text)
    sub.add_parser("redis-cli", help="open redis-cli on the Redis hivebus uses (arguments passed through)")
    return parser


def redis_cli(cli_args: Sequence[str], settings: Settings) -> int:
    """hivebus redis-cli [ARGS]: redis-cli on the configured or managed Redis, every argument
    passed through as given; user and password from the URL (the password through the
    environment, never on the command line); on a Redis Cluster (``HIVEBUS_REDIS_CLUSTER``, or
    the server's ``INFO cluster``) in cluster mode (``-c``: it follows MOVED and ASK), without
    ``-n``; its exit code returned."""
    import subprocess

    from hivebus.domain.errors import InvalidInput, RedisUnavailable
    from hivebus.infra.connection import cluster_setting, is_cluster_node, redis_endpoint
    from hivebus.infra.managed_redis import find_cli
    from hivebus.settings import redact_url

    cli = find_cli()
    if cli is None:
        raise InvalidInput("no redis-cli here (nor valkey-cli): install one (Debian: apt install "
                           "redis-tools), or use any Redis client on the URL 'hivebus status' shows")
    with redis_endpoint(settings) as url:
        cluster = cluster_setting(settings)
        if cluster is None:  # the managed Redis is never a cluster
            cluster = settings.redis_url is not None and is_cluster_node(url, settings=settings)
        parts = urlsplit(url)
        env = dict(os.environ)
        connect: list[str] = ["-c"] if cluster else []
        if parts.scheme == "unix":
            connect += ["-s", parts.path]
        else:
            try:
                port = parts.port
            except ValueError as exc:
                raise RedisUnavailable(f"bad Redis URL {redact_url(url)}: {exc}") from None
            connect += ["-h", parts.hostname or "localhost", "-p", str(port or 6379)]
            database = parts.path.strip("/")
            if database.isdigit() and not cluster:  # a cluster has database 0 only
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


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the ``hivebus`` console script."""
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["redis-cli"]:  # the rest is redis-cli's, unparsed
        from hivebus.domain.errors import HivebusError
        from hivebus.settings import load_settings

        try:
            raise SystemExit(redis_cli(given[1:], load_settings()))
        except HivebusError as exc:
            fail(str(exc), 1)
    command = next((arg for arg in given if not arg.startswith("-")), None)
    args = build_parser(command).parse_args(given)
    raise SystemExit(run(args))


def run(args: argparse.Namespace) -> int:
    """Run the parsed command; a HivebusError is one line on stderr and exit code 1.

    The loop is plain asyncio (anyio's task groups run on it): importing anyio's backend only
    for the commands that use it keeps a short command's start-up down."""
    import asyncio

    from hivebus.domain.errors import HivebusError, first_leaf
    from hivebus.infra.logs import configure_logging
    from hivebus.settings import load_settings

    try:
        settings = load_settings()
        configure_logging(settings)
        func: CommandFn = args.func
        return asyncio.run(func(args, settings))
    except HivebusError as exc:
        fail(str(exc), 1)
    except BaseExceptionGroup as group:  # raised inside a task group (agent run, coordinator)
        ours = group.subgroup(HivebusError)
        if ours is None:
            raise
        fail(str(first_leaf(ours)), 1)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `hivebus … | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
