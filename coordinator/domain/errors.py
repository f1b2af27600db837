"""Every exception hivebus raises, under one root.

::

    HivebusError                      root: catch this to catch anything of ours
    ├── ConfigError                   settings or environment are unusable
    ├── InvalidInput                  a caller passed something malformed
    │   └── InvalidId                 an agent id / signal type fails validation
    ├── NotFound                      a named thing (signal, agent) does not exist
    ├── UnknownAgent                  publishing to an agent that never registered
    ├── InboxFull                     publishing to an agent whose backlog is at HIVEBUS_INBOX_MAX
    ├── VersionConflict               a state write was based on a stale version
    ├── AlreadyRecorded               a decision's outcome was already logged
    ├── RedisUnavailable              Redis cannot be reached or answered with an error
    │   └── BadKey                    a hivebus key holds the wrong type (edited by hand)
    ├── UnsafeRedis                   the server evicts keys, or holds data of an older layout
    ├── StoreError                    the durable store cannot be opened or used (corrupt, unreadable)
    ├── NotLeader                     a write from a coordinator that no longer holds the lease
    └── ManagedRedisError             the managed local redis-server failed to start

redis-py errors are translated into ``RedisUnavailable`` at one boundary
(:func:`hivebus.infra.connection.translate_redis_errors`).
"""

from __future__ import annotations


class HivebusError(Exception):
    """Root of every hivebus exception; its message is one line fit for a user."""


class ConfigError(HivebusError):
    """Raised when settings or the environment cannot be used."""


class InvalidInput(HivebusError):
    """Raised when a caller passes malformed input (bad JSON, out-of-range values)."""


class InvalidId(InvalidInput):
    """Raised when an agent id or a signal type fails validation."""


class NotFound(HivebusError):
    """Raised when a named signal or agent does not exist."""


class UnknownAgent(HivebusError):
    """Raised when publishing to an agent id that has never registered."""


class InboxFull(HivebusError):
    """Raised when a target has ``HIVEBUS_INBOX_MAX`` unsettled signals: nothing was written.

    Retryable: a handler that raises it (from ``ctx.publish``) gets its signal retried later."""


class PublishIncomplete(HivebusError):
    """Raised on a Redis Cluster when a publish's writes succeeded in some slots and failed in
    others (a failover, a race after the checks): the message names the targets that lack the
    signals. Retryable: publishing the same signals again completes it, delivering nothing twice."""


class NotReplicated(HivebusError):
    """Raised when ``HIVEBUS_PUBLISH_REPLICAS`` replicas did not confirm a publish within
    ``HIVEBUS_PUBLISH_WAIT_MS``: it is written on the primary but a failover now could lose it.
    Retryable: publishing the same signals again delivers nothing twice and waits again."""


class VersionConflict(HivebusError):
    """Raised when a state write is based on a version that is no longer current."""


class AlreadyRecorded(HivebusError):
    """Raised when an outcome is logged for a decision that already has one."""


class RedisUnavailable(HivebusError):
    """Raised when Redis cannot be reached, or rejects a command."""


class BadKey(RedisUnavailable):
    """Raised when one of hivebus's keys holds the wrong type of value (edited by hand)."""

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key or message.split(" ", 1)[0]


class UnsafeRedis(HivebusError):
    """Raised at start when the server could lose data silently (an eviction policy) or holds
    hivebus data in a key layout this version does not read."""


class StoreError(HivebusError):
    """Raised when the durable store cannot be opened or used (corrupt file, wrong format)."""


class NotLeader(HivebusError):
    """Raised when a coordinator that lost the lease tries to write (its fencing token is stale)."""


class ManagedRedisError(HivebusError):
    """Raised when the managed local redis-server cannot be found or started."""


def first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception of an exception group (anyio's task groups wrap what they raise)."""
    first = group.exceptions[0]
    return first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
