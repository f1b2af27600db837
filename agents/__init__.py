"""The agent side of hivebus: the runtime (write an agent, run it as a process) and the
trading desk (``hivebus.agents.desk``). ``Agent``, ``Context`` and ``handles`` load on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hivebus.agents.runtime import Agent, Context, handles

__all__ = ["Agent", "Context", "handles"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'hivebus.agents' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module("hivebus.agents.runtime"), name)
