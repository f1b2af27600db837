"""hivebus: a signal bus on Redis Streams, hot memory in Redis, and a coordinator.

The public face, for programs that embed hivebus::

    from hivebus import Agent, Context, Hivebus, Signal, handles

Names are imported on first use (PEP 562), so ``import hivebus`` and the ``hivebus``
command start fast. The package's folders: ``domain`` (pure rules and models), ``store``
(the durable store), ``infra`` (Redis clients, Lua, the managed Redis), ``bus``, ``memory``,
``service`` (the coordinator), ``cli``, and ``agents`` (the runtime and the trading desk).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Hivebus": "hivebus.facade",
    "RunningAgent": "hivebus.facade",
    "Agent": "hivebus.agents.runtime",
    "Context": "hivebus.agents.runtime",
    "handles": "hivebus.agents.runtime",
    "Signal": "hivebus.domain.models",
    "Severity": "hivebus.domain.models",
    "SignalStatus": "hivebus.domain.models",
    "Settings": "hivebus.settings",
    "HivebusError": "hivebus.domain.errors",
    "ConfigError": "hivebus.domain.errors",
    "InvalidInput": "hivebus.domain.errors",
    "InvalidId": "hivebus.domain.errors",
    "NotFound": "hivebus.domain.errors",
    "UnknownAgent": "hivebus.domain.errors",
    "InboxFull": "hivebus.domain.errors",
    "VersionConflict": "hivebus.domain.errors",
    "AlreadyRecorded": "hivebus.domain.errors",
    "RedisUnavailable": "hivebus.domain.errors",
    "UnsafeRedis": "hivebus.domain.errors",
}

__all__ = [
    "Agent",
    "AlreadyRecorded",
    "ConfigError",
    "Context",
    "Hivebus",
    "HivebusError",
    "InboxFull",
    "InvalidId",
    "InvalidInput",
    "NotFound",
    "RedisUnavailable",
    "RunningAgent",
    "Settings",
    "Severity",
    "Signal",
    "SignalStatus",
    "UnknownAgent",
    "UnsafeRedis",
    "VersionConflict",
    "__version__",
    "handles",
]

if TYPE_CHECKING:
    from hivebus.agents.runtime import Agent, Context, handles
    from hivebus.domain.errors import (
        AlreadyRecorded,
        ConfigError,
        HivebusError,
        InboxFull,
        InvalidId,
        InvalidInput,
        NotFound,
        RedisUnavailable,
        UnknownAgent,
        UnsafeRedis,
        VersionConflict,
    )
    from hivebus.domain.models import Severity, Signal, SignalStatus
    from hivebus.facade import Hivebus, RunningAgent
    from hivebus.settings import Settings


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hivebus' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
