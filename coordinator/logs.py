"""Logging set-up: structlog, JSON lines when stderr is not a TTY, readable console otherwise.

Context such as ``agent_id`` is bound with ``structlog.contextvars.bound_contextvars`` so
every line inside carries it; the signal being handled is set with :func:`handling` (one
ContextVar, read only when a line is logged: it is set for every signal).
Any ``redis[s]://user:password@`` in a logged value is redacted before rendering.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import structlog

from coordinator.settings import Settings

_PASSWORD_IN_URL = re.compile(r"(rediss?://[^:/@\s]*:)[^@\s]+@")


def redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: hide passwords embedded in Redis URLs anywhere in the event."""
    for key, value in event.items():
        if isinstance(value, str) and "://" in value:
            event[key] = _PASSWORD_IN_URL.sub(r"\1***@", value)
    return event


_HANDLING: ContextVar[tuple[str, str] | None] = ContextVar("hivebus_handling", default=None)


@contextmanager
def handling(signal_id: str, signal_type: str) -> Iterator[None]:
    """Every line logged inside carries ``signal_id`` and ``signal_type``. Cheaper than
    ``bound_contextvars`` (~1 µs against ~8), which matters once per signal."""
    token = _HANDLING.set((signal_id, signal_type))
    try:
        yield
    finally:
        _HANDLING.reset(token)


def add_handling(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the signal set by :func:`handling`, if any."""
    current = _HANDLING.get()
    if current is not None:
        event.setdefault("signal_id", current[0])
        event.setdefault("signal_type", current[1])
    return event


def configure_logging(settings: Settings) -> None:
    """Configure structlog for this process from ``settings``."""
    level = getattr(logging, settings.log_level.upper())
    use_json = settings.log_format == "json" or (
        settings.log_format == "auto" and not sys.stderr.isatty()
    )
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_handling,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(**context: Any) -> Any:
    """A bound logger carrying ``context``."""
    return structlog.get_logger("hivebus").bind(**context)
