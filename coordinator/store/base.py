"""The durable store's contract: the ``Store`` protocol (domain methods only; no connection is
handed out) and the records it returns. :mod:`hivebus.store.sqlite` implements it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from hivebus.domain.decision import DecisionRecord
from hivebus.domain.learning import Credit, Thresholds

EVERYONE = "*"


class MemoryPattern(BaseModel):
    """A promoted pattern (PRODUCT.md §2), as kept in the durable store."""

    model_config = ConfigDict(frozen=True)

    pattern_id: str
    agent_id: str
    memory_type: str = "PATTERN"
    version: int
    active: bool
    confidence: float
    success_rate: float
    sample_size: int
    successes: int
    data: dict[str, Any] = Field(default_factory=dict)
    user_metadata: dict[str, Any] = Field(default_factory=dict)
    is_shared: bool = False
    shared_with: list[str] = Field(default_factory=list)
    evidence: list[str] = Field(default_factory=list)
    updated_at: float = 0.0

    def visible_to(self, viewer: str | None) -> bool:
        """Whether agent ``viewer`` may read it (None = an operator, who sees everything)."""
        return (viewer is None or viewer == self.agent_id
                or (self.is_shared and (EVERYONE in self.shared_with or viewer in self.shared_with)))


class PassReport(BaseModel):
    """What one promotion pass changed."""

    promoted: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    demoted: list[str] = Field(default_factory=list)


class Store(Protocol):
    """What the coordinator, the decision log, the CLI and the facade need of the durable store."""

    async def close(self) -> None: ...
    async def highest_epoch(self) -> int: ...
    async def credit(self, batch: Sequence[tuple[DecisionRecord, Sequence[Credit]]],
                     epoch: int | None) -> int: ...
    async def record_late_outcome(self, decision: DecisionRecord, credits: Sequence[Credit],
                                  epoch: int | None) -> bool: ...
    async def stats(self) -> list[dict[str, Any]]: ...
    async def promote(self, thresholds: Thresholds, share_with: list[str],
                      epoch: int | None) -> PassReport: ...
    async def query_patterns(
        self, *, viewer: str | None, memory_type: str | None = None, min_confidence: float = 0.0,
        agent: str | None = None, shared: bool | None = None, include_inactive: bool = False,
    ) -> list[MemoryPattern]: ...
    async def get_pattern(self, pattern_id: str, *, viewer: str | None) -> MemoryPattern: ...
    async def pattern_history(self, pattern_id: str, *, viewer: str | None) -> list[dict[str, Any]]: ...
    async def rollback_pattern(self, pattern_id: str, version: int,
                               epoch: int | None = None) -> MemoryPattern: ...
    async def archive(self, records: Sequence[tuple[DecisionRecord, list[str]]],
                      epoch: int | None) -> int: ...
    async def archived(
        self, agent_id: str, *, since: float | None = None, until: float | None = None,
        decision_type: str | None = None, success: bool | None = None, limit: int = 100,
    ) -> list[DecisionRecord]: ...
    async def archived_decision(self, decision_id: str) -> tuple[DecisionRecord, list[str]] | None: ...
    async def count_archived(self) -> int: ...
