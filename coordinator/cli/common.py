"""Pieces every CLI module shares: the one-line-error parser and the Redis session helper.
Light to import (no Redis, no pydantic at module level): ``hivebus --help`` loads only this."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from hivebus.bus.registry import Registry
    from hivebus.infra.redis_errors import Redis
    from hivebus.settings import Settings


def one_line(text: str) -> str:
    """``text`` with control characters (newlines included) escaped, so it prints as one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def fail(message: str, code: int) -> NoReturn:
    """Print ``hivebus: error: <message>`` as one line on stderr and exit with ``code``."""
    sys.stderr.write(f"hivebus: error: {one_line(message)}\n")
    raise SystemExit(code)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see '{self.prog} --help')", 2)


async def with_redis(settings: Settings, body: Callable[[Redis], Awaitable[int]]) -> int:
    """Run ``body(redis)`` on the configured or managed Redis; return its exit code."""
    from hivebus.infra.connection import connected, redis_endpoint

    with redis_endpoint(settings) as url:
        async with connected(url, client_name="hivebus-cli", settings=settings) as redis:
            return await body(redis)


def listing(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--json`` to a listing command."""
    parser.add_argument("--json", action="store_true", help="print JSON")
    return parser


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def name_skipped(registry: Registry) -> None:
    """One line on stderr naming registry members that are not agent ids (left out)."""
    if registry.skipped:
        from hivebus.domain.ids import printable

        names = ", ".join(repr(printable(a)[:80]) for a in registry.skipped[:5])
        more = f" and {len(registry.skipped) - 5} more" if len(registry.skipped) > 5 else ""
        print(f"skipped {len(registry.skipped)} registry member(s) of {registry.keys.agents()} that "
              f"are not agent ids (edited by hand?): {names}{more}; the coordinator sets them aside "
              f"(hivebus set-aside)", file=sys.stderr)
