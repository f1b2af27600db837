"""The agent runtime (write an agent, run it as a process) and the built-in trading agents."""

from hivebus.agents.runtime import Agent, Context, handles

__all__ = ["Agent", "Context", "handles"]
