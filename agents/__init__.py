"""The agent side of hivebus: the runtime (write an agent, run it as a process) and the
trading desk (``hivebus.agents.desk``)."""

from hivebus.agents.runtime import Agent, Context, handles

__all__ = ["Agent", "Context", "handles"]
