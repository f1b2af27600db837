"""A decision and its outcome, as stored and archived (PRODUCT.md §2): plain models, no I/O."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hivebus.domain.clock import now_s
from hivebus.domain.ids import new_id


class DecisionOutcome(BaseModel):
    """How a decision turned out."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    success: bool
    quality_score: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    latency_ms: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    error: str | None = Field(default=None, max_length=2000)
    metrics: dict[str, Any] = Field(default_factory=dict)
    recorded_at: float = Field(default_factory=now_s)


class DecisionRecord(BaseModel):
    """One decision (PRODUCT.md §2)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    decision_id: str = Field(default_factory=new_id)
    agent_id: str
    decision_type: str
    timestamp: float = Field(default_factory=now_s)
    context: dict[str, Any] = Field(default_factory=dict)
    reasoning: dict[str, Any] = Field(default_factory=dict)
    outcome: DecisionOutcome | None = None
    is_stm: bool = True
    parent_decision_id: str | None = None
    triggered_by: tuple[str, ...] = ()

    def to_fields(self) -> dict[str, str]:
        """Readable hash fields (JSON for context, reasoning and outcome)."""
        fields = {
            "decision_id": self.decision_id, "agent_id": self.agent_id,
            "decision_type": self.decision_type, "timestamp": repr(self.timestamp),
            "context": json.dumps(self.context, sort_keys=True, separators=(",", ":")),
            "reasoning": json.dumps(self.reasoning, sort_keys=True, separators=(",", ":")),
            "is_stm": "1" if self.is_stm else "0",
            "triggered_by": ",".join(self.triggered_by),
        }
        if self.parent_decision_id:
            fields["parent_decision_id"] = self.parent_decision_id
        return fields

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> DecisionRecord:
        """Decode a stored decision."""
        outcome = fields.get("outcome")
        return cls(
            decision_id=fields["decision_id"], agent_id=fields["agent_id"],
            decision_type=fields["decision_type"], timestamp=float(fields["timestamp"]),
            context=json.loads(fields.get("context") or "{}"),
            reasoning=json.loads(fields.get("reasoning") or "{}"),
            outcome=DecisionOutcome.model_validate_json(outcome) if outcome else None,
            is_stm=fields.get("is_stm", "1") == "1",
            parent_decision_id=fields.get("parent_decision_id") or None,
            triggered_by=tuple(filter(None, fields.get("triggered_by", "").split(","))),
        )
