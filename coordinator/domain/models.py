"""The Signal model, its severities and per-target processing statuses, and its stream encoding.

A signal travels as a flat map of readable string fields (``type``, ``source``,
``severity``, ``confidence``, ``data`` as JSON, …) so ``XRANGE`` reads like a log.
:func:`Signal.to_fields` and :func:`Signal.from_fields` are the only encoder and decoder.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hivebus.domain.clock import now_s, stamp_s
from hivebus.domain.errors import InvalidInput
from hivebus.domain.ids import new_id
from hivebus.domain.keys import check_agent_id, check_signal_id, check_signal_type

DEFAULT_TTL_S = 24 * 3600


class Severity(StrEnum):
    """How urgent a signal is."""

    CRITICAL = "CRITICAL"
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"
    INFO = "INFO"


class SignalStatus(StrEnum):
    """Processing status of one signal for one target agent.

    PENDING -> PROCESSING -> PROCESSED, or FAILED -> DEAD (dead-lettered), or EXPIRED.
    PROCESSING is not stored: it is PENDING plus "delivered to a consumer, not yet acked"
    (the entry is in the target group's pending-entries list).
    """

    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    PROCESSED = "PROCESSED"
    FAILED = "FAILED"
    DEAD = "DEAD"
    EXPIRED = "EXPIRED"


TERMINAL_STATUSES = frozenset({SignalStatus.PROCESSED, SignalStatus.DEAD, SignalStatus.EXPIRED})


class Signal(BaseModel):
    """One message on the bus, from ``source_agent`` to ``target_agents`` (empty = subscribers)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    signal_id: str = Field(default_factory=new_id)
    signal_type: str
    source_agent: str
    target_agents: tuple[str, ...] = ()
    severity: Severity = Severity.INFO
    confidence: float = Field(default=1.0, ge=0.0, le=1.0, allow_inf_nan=False)
    data: dict[str, Any] = Field(default_factory=dict)
    created_at: float = Field(default_factory=stamp_s)
    expires_at: float = 0.0
    correlation_id: str | None = None
    causation_id: str | None = None

    @field_validator("signal_id")
    @classmethod
    def _valid_signal_id(cls, value: str) -> str:
        return check_signal_id(value)

    @field_validator("signal_type")
    @classmethod
    def _valid_type(cls, value: str) -> str:
        return check_signal_type(value)

    @field_validator("source_agent")
    @classmethod
    def _valid_source(cls, value: str) -> str:
        return check_agent_id(value)

    @field_validator("target_agents")
    @classmethod
    def _valid_targets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for agent_id in value:
            seen[check_agent_id(agent_id)] = None
        return tuple(seen)

    @field_validator("correlation_id", "causation_id")
    @classmethod
    def _short_reference(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 128 or not value.isprintable()):
            raise ValueError("must be a printable string of at most 128 characters")
        return value

    def model_post_init(self, __context: Any) -> None:
        """Default ``expires_at`` to 24 h after ``created_at``."""
        if not self.expires_at:
            object.__setattr__(self, "expires_at", round(self.created_at + DEFAULT_TTL_S, 3))

    @classmethod
    def create(
        cls,
        signal_type: str,
        source_agent: str,
        *,
        targets: tuple[str, ...] | list[str] = (),
        ttl_s: float | None = None,
        **fields: Any,
    ) -> Signal:
        """Build a signal, turning validation failures into one-line InvalidInput errors."""
        try:
            created = fields.pop("created_at", None) or stamp_s()
            expires = round(created + (ttl_s if ttl_s is not None else DEFAULT_TTL_S), 3)
            return cls(
                signal_type=signal_type,
                source_agent=source_agent,
                target_agents=tuple(targets),
                created_at=created,
                expires_at=expires,
                **fields,
            )
        except ValidationError as exc:
            raise InvalidInput(describe_validation_error(exc)) from None

    def is_expired(self, at: float | None = None) -> bool:
        """Whether the signal's ``expires_at`` has passed."""
        return (at if at is not None else now_s()) >= self.expires_at

    def to_fields(self) -> dict[str, str]:
        """Encode as readable stream / hash fields."""
        fields = {
            "id": self.signal_id,
            "type": self.signal_type,
            "source": self.source_agent,
            "targets": ",".join(self.target_agents),
            "severity": self.severity.value,
            "confidence": repr(self.confidence),
            "data": json.dumps(self.data, separators=(",", ":"), sort_keys=True),
            "created_at": repr(self.created_at),
            "expires_at": repr(self.expires_at),
        }
        if self.correlation_id:
            fields["correlation_id"] = self.correlation_id
        if self.causation_id:
            fields["causation_id"] = self.causation_id
        return fields

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> Signal:
        """Decode stream / hash fields; raise InvalidInput naming the problem for a bad entry."""
        try:
            raw_data = fields.get("data", "{}")
            try:
                data = json.loads(raw_data)
            except (json.JSONDecodeError, TypeError):
                raise InvalidInput("field 'data' is not valid JSON") from None
            if not isinstance(data, dict):
                raise InvalidInput("field 'data' must be a JSON object")
            targets = fields.get("targets", "")
            return cls(
                signal_id=fields["id"],
                signal_type=fields["type"],
                source_agent=fields["source"],
                target_agents=tuple(t for t in targets.split(",") if t),
                severity=parse_severity(fields.get("severity", "INFO")),
                confidence=float(fields.get("confidence", "1.0")),
                data=data,
                created_at=float(fields["created_at"]),
                expires_at=float(fields["expires_at"]),
                correlation_id=fields.get("correlation_id"),
                causation_id=fields.get("causation_id"),
            )
        except KeyError as exc:
            raise InvalidInput(f"missing field {exc.args[0]!r}") from None
        except ValueError as exc:
            if isinstance(exc, ValidationError):
                raise InvalidInput(describe_validation_error(exc)) from None
            raise InvalidInput(f"bad field value: {exc}") from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each invalid field and why."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "value"
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def parse_severity(text: str) -> Severity:
    """Parse a severity name case-insensitively; raise InvalidInput naming the choices."""
    try:
        return Severity(text.upper())
    except ValueError:
        choices = ", ".join(s.value for s in Severity)
        raise InvalidInput(f"unknown severity {text!r}: choose one of {choices}") from None


def parse_json_object(text: str, option: str = "--data") -> dict[str, Any]:
    """Parse ``text`` (given as ``option``) as a JSON object; raise InvalidInput naming the
    option if it is not one."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{option} is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{option} must be a JSON object, e.g. '{{\"amount_btc\": 1500}}'")
    return value
