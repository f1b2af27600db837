"""Agent state in Redis: the CURRENT state hash, bounded snapshots, rollback, configuration history.

Every write names the version it was based on; a Lua script compares it with the
stored version and refuses a stale write with :class:`VersionConflict`, so two
writers never silently overwrite each other. A configuration change is recorded
(from / to / reason) by the same script, atomically with the write.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis import exceptions as redis_errors

from hivebus.domain.clock import now_s
from hivebus.domain.errors import InvalidInput, NotFound, VersionConflict
from hivebus.domain.ids import new_id
from hivebus.domain.keys import Keys, check_agent_id
from hivebus.domain.models import describe_validation_error
from hivebus.infra.lua import ROLLBACK, SAVE, SNAPSHOT
from hivebus.infra.redis_errors import Redis, text_map, texts, translate_redis_errors
from hivebus.settings import Settings

CONFIG_HISTORY_LIMIT = 1000


class StateType(StrEnum):
    """Kinds of state record (seed 000)."""

    CURRENT = "CURRENT"
    CHECKPOINT = "CHECKPOINT"
    BACKUP = "BACKUP"
    ROLLBACK = "ROLLBACK"


class AgentStatus(StrEnum):
    """What an agent is doing, as recorded in its state."""

    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    ERROR = "ERROR"
    STOPPED = "STOPPED"


_JSON_FIELDS = ("source_metrics", "context_performance", "configuration")


class AgentState(BaseModel):
    """An agent's state; ``version`` grows by one with every write."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent_id: str
    agent_version: str = "0"
    state_type: StateType = StateType.CURRENT
    status: AgentStatus = AgentStatus.ACTIVE
    current_cycle: int = Field(default=0, ge=0)
    source_metrics: dict[str, Any] = Field(default_factory=dict)
    context_performance: dict[str, Any] = Field(default_factory=dict)
    configuration: dict[str, Any] = Field(default_factory=dict)
    version: int = 0
    updated_at: float = 0.0

    def to_fields(self) -> dict[str, str]:
        """Readable hash fields (JSON for the nested ones); ``version`` is kept by Redis."""
        fields = {
            "agent_id": self.agent_id,
            "agent_version": self.agent_version,
            "state_type": StateType.CURRENT.value,
            "status": self.status.value,
            "current_cycle": str(self.current_cycle),
        }
        for name in _JSON_FIELDS:
            fields[name] = json.dumps(getattr(self, name), sort_keys=True, separators=(",", ":"))
        return fields

    @classmethod
    def from_fields(cls, fields: dict[str, str], state_type: str | None = None) -> AgentState:
        """Decode a state hash (or a snapshot's state). Raises InvalidInput for a corrupt one."""
        try:
            return cls(
                agent_id=fields["agent_id"],
                agent_version=fields.get("agent_version", "0"),
                state_type=StateType(state_type or fields.get("state_type", "CURRENT")),
                status=AgentStatus(fields.get("status", "ACTIVE")),
                current_cycle=int(fields.get("current_cycle", 0)),
                version=int(fields.get("version", 0)),
                updated_at=float(fields.get("updated_at", 0) or 0),
                **{name: json.loads(fields.get(name) or "{}") for name in _JSON_FIELDS},
            )
        except ValidationError as exc:
            raise InvalidInput(f"stored state is invalid: {describe_validation_error(exc)}") from None
        except (KeyError, ValueError) as exc:
            raise InvalidInput(f"stored state is invalid: {exc}") from None


class StateStore:
    """Reads and writes agent state. All methods raise RedisUnavailable when Redis fails."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self._save = redis.register_script(SAVE)
        self._snapshot = redis.register_script(SNAPSHOT)
        self._rollback = redis.register_script(ROLLBACK)

    async def load(self, agent_id: str) -> AgentState | None:
        """The CURRENT state of ``agent_id``, or None if it never saved one."""
        async with translate_redis_errors():
            fields = text_map(await self.redis.hgetall(self.keys.state(agent_id)))
        if not fields:
            return None
        try:
            return AgentState.from_fields(fields)
        except InvalidInput as exc:
            key = self.keys.state(agent_id)
            raise InvalidInput(
                f"the state of {agent_id} ({key}) is unreadable, edited by hand? ({exc}); roll it "
                f"back to a snapshot ('hivebus state history {agent_id}', then 'hivebus state "
                f"rollback {agent_id} <snapshot_id>') or delete the key to start afresh") from None

    async def save(self, state: AgentState, *, reason: str = "") -> AgentState:
        """Write ``state`` if ``state.version`` is still the stored one; return the new state.

        Raises VersionConflict when another writer got there first (nothing is written).
        """
        agent_id = check_agent_id(state.agent_id)
        flat: list[str] = []
        for name, value in state.to_fields().items():
            flat += (name, value)
        now = round(now_s(), 6)
        async with translate_redis_errors():
            try:
                version = await self._save(
                    keys=[self.keys.state(agent_id), self.keys.config_history(agent_id)],
                    args=[state.version, now, reason, CONFIG_HISTORY_LIMIT, *flat],
                )
            except redis_errors.ResponseError as exc:
                if "CONFLICT" in str(exc):
                    stored = str(exc).split("CONFLICT", 1)[1].strip()
                    raise VersionConflict(
                        f"state of {agent_id!r} changed meanwhile: write based on version "
                        f"{state.version}, stored version is {stored}; reload and retry"
                    ) from None
                raise
        return state.model_copy(update={"version": int(version), "updated_at": now})

    async def snapshot(
        self, agent_id: str, state_type: StateType = StateType.CHECKPOINT, label: str = ""
    ) -> str:
        """Keep a copy of the CURRENT state in the bounded history; return the snapshot id."""
        if state_type not in (StateType.CHECKPOINT, StateType.BACKUP):
            raise InvalidInput("a snapshot is a CHECKPOINT or a BACKUP")
        snapshot_id = new_id()
        async with translate_redis_errors():
            try:
                await self._snapshot(
                    keys=[self.keys.state(agent_id), self.keys.snapshots(agent_id)],
                    args=[snapshot_id, state_type.value, round(now_s(), 6), label,
                          self.settings.state_history],
                )
            except redis_errors.ResponseError as exc:
                if "NO_STATE" in str(exc):
                    raise NotFound(f"agent {agent_id!r} has no saved state to snapshot") from None
                raise
        return snapshot_id

    async def history(self, agent_id: str) -> list[dict[str, Any]]:
        """The kept snapshots, newest first, each with its decoded state."""
        async with translate_redis_errors():
            raw = texts(await self.redis.lrange(self.keys.snapshots(agent_id), 0, -1))
        return _readable(raw, ("snapshot_id", "state_type", "created_at", "state"))

    async def rollback(self, agent_id: str, snapshot_id: str) -> AgentState:
        """Make snapshot ``snapshot_id`` the CURRENT state (new version) and record a ROLLBACK.

        Raises NotFound when no kept snapshot has that id (nothing changes).
        """
        keys = [self.keys.state(agent_id), self.keys.snapshots(agent_id),
                self.keys.config_history(agent_id)]
        async with translate_redis_errors():
            try:
                await self._rollback(
                    keys=keys,
                    args=[snapshot_id, new_id(), round(now_s(), 6), self.settings.state_history,
                          CONFIG_HISTORY_LIMIT],
                )
            except redis_errors.ResponseError as exc:
                if "UNKNOWN_SNAPSHOT" in str(exc):
                    raise NotFound(
                        f"agent {agent_id!r} has no kept snapshot {snapshot_id!r} "
                        f"(see 'hivebus state history {agent_id}')"
                    ) from None
                raise
        state = await self.load(agent_id)
        if state is None:  # deleted between the rollback and this read
            raise NotFound(f"agent {agent_id!r} has no state any more")
        return state

    async def config_history(self, agent_id: str) -> list[dict[str, Any]]:
        """Configuration changes, newest first: from, to, reason, at, version."""
        async with translate_redis_errors():
            raw = texts(await self.redis.lrange(self.keys.config_history(agent_id), 0, -1))
        return _readable(raw, ("from", "to", "reason", "at", "version"))


def _readable(raw: list[str], needed: tuple[str, ...]) -> list[dict[str, Any]]:
    """Decode JSON list items; one edited by hand into nonsense becomes ``{"unreadable": …}``
    (its text, escaped and cut short) instead of failing the whole read."""
    from hivebus.domain.ids import printable

    items: list[dict[str, Any]] = []
    for text in raw:
        try:
            item = json.loads(text)
        except ValueError:
            item = None
        if isinstance(item, dict) and all(name in item for name in needed) and (
                "state" not in needed or isinstance(item["state"], dict)):
            items.append(item)
        else:
            items.append({"unreadable": printable(text)[:200]})
    return items
