"""hivebus: a signal bus on Redis Streams, hot memory in Redis, and a coordinator.

The library lives here; the agent runtime and the built-in agents live in the
sibling package ``agents``.
"""

__version__ = "0.1.0"
