"""What an agent remembers, bound to one agent id: state, short-term memory, decisions, events.

The runner gives every agent an :class:`AgentMemory` as ``agent.memory`` and loads its
CURRENT state before the first signal, so a restarted agent resumes its cycle,
configuration and metrics. :meth:`AgentMemory.decide` logs a decision whose
confidence is adjusted by the agent's recent win rate (seed 003, capped at ±20 %
by default) and records that adjustment in the decision's reasoning.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hivebus.domain.errors import VersionConflict
from hivebus.domain.scoring import ConfidenceAdjustment, adjust_confidence
from hivebus.infra.redis_errors import Redis
from hivebus.memory.decisions import DecisionLog
from hivebus.memory.events import EpisodicLog
from hivebus.memory.state import AgentState, StateStore, StateType
from hivebus.memory.stm import MemoryItem, ShortTermMemory
from hivebus.settings import Settings
from hivebus.store import open_store
from hivebus.store.base import MemoryPattern, Store

OUTCOME_KIND = "outcome"
WIN_RATE_LOOKBACK = 20


class AgentMemory:
    """One agent's memory. Methods raise what the underlying stores raise."""

    def __init__(self, redis: Redis, settings: Settings, agent_id: str) -> None:
        self.agent_id = agent_id
        self.settings = settings
        self.states = StateStore(redis, settings)
        self.stm = ShortTermMemory(redis, settings, agent_id)
        self.decisions = DecisionLog(redis, settings)
        self.events = EpisodicLog(redis, settings)
        self.state = AgentState(agent_id=agent_id)
        self._store: Store | None = None

    async def close(self) -> None:
        """Close the durable store if it was opened."""
        if self._store is not None:
            await self._store.close()
            self._store = None

    # --- long-term patterns ---------------------------------------------------------------------
    async def patterns(
        self, *, memory_type: str | None = None, min_confidence: float = 0.0,
        shared: bool | None = None,
    ) -> list[MemoryPattern]:
        """Promoted patterns this agent may see: its own and those shared with it, best first."""
        if self._store is None:
            self._store = await open_store(self.settings)
        return await self._store.query_patterns(
            viewer=self.agent_id, memory_type=memory_type, min_confidence=min_confidence,
            shared=shared)

    # --- state ------------------------------------------------------------------------------
    async def load_state(self, agent_version: str = "0") -> AgentState:
        """Load the CURRENT state, creating a first one when the agent never saved any."""
        stored = await self.states.load(self.agent_id)
        if stored is None:
            try:
                stored = await self.states.save(
                    AgentState(agent_id=self.agent_id, agent_version=agent_version), reason="created"
                )
            except VersionConflict:  # another replica created it at the same moment: use theirs
                stored = await self.states.load(self.agent_id)
                if stored is None:
                    raise
        self.state = stored
        return stored

    async def save_state(self, *, reason: str = "", **changes: Any) -> AgentState:
        """Apply ``changes`` to the state and save it (VersionConflict if someone else wrote)."""
        self.state = await self.states.save(self.state.model_copy(update=changes), reason=reason)
        return self.state

    async def checkpoint(self, label: str = "", state_type: StateType = StateType.CHECKPOINT) -> str:
        """Keep a snapshot of the current state; return its id."""
        return await self.states.snapshot(self.agent_id, state_type, label)

    # --- short-term memory ---------------------------------------------------------------------
    async def remember(self, kind: str, content: str, **options: Any) -> str:
        """Store a memory item (see ShortTermMemory.remember)."""
        return await self.stm.remember(kind, content, **options)

    async def recall(self, query: str = "", **options: Any) -> list[tuple[float, MemoryItem]]:
        """The most relevant memory items (see ShortTermMemory.recall)."""
        return await self.stm.recall(query, **options)

    async def remember_outcome(
        self, *, symbol: str, trade_id: str, pnl: float, entry_price: float, exit_price: float,
    ) -> str:
        """Store a trade outcome (seed 003): big wins and losses count double."""
        result = "win" if pnl > 0 else "loss"
        return await self.stm.remember(
            OUTCOME_KIND, f"Trade {trade_id} {result}: PnL={pnl:.2f}",
            score=2.0 if abs(pnl) > 1.0 else 1.0, symbol=symbol,
            metadata={"trade_id": trade_id, "pnl": pnl, "entry": entry_price,
                      "exit": exit_price, "outcome": result},
        )

    async def adjusted_confidence(self, base: float, symbol: str | None = None) -> ConfidenceAdjustment:
        """``base`` adjusted by the win rate of the last outcomes remembered for ``symbol``."""
        outcomes = await self.stm.recent(OUTCOME_KIND, symbol, WIN_RATE_LOOKBACK)
        pnls = [float(i.metadata.get("pnl", 0.0)) for i in outcomes]
        return adjust_confidence(base, pnls, self.settings.confidence_cap)

    # --- decisions ---------------------------------------------------------------------------------
    async def decide(
        self, decision_type: str, *, confidence: float, reasoning: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None, symbol: str | None = None,
        triggered_by: Iterable[str] = (), parent_decision_id: str | None = None,
        decision_id: str | None = None,
    ) -> tuple[str, float]:
        """Log a decision with win-rate-adjusted confidence; return (decision id, confidence)."""
        adjustment = await self.adjusted_confidence(confidence, symbol)
        full_reasoning = {**(reasoning or {}), "confidence": adjustment.adjusted,
                          "confidence_adjustment": adjustment.as_dict()}
        decision_id = await self.decisions.log_decision(
            self.agent_id, decision_type, context=context, reasoning=full_reasoning,
            triggered_by=triggered_by, parent_decision_id=parent_decision_id, decision_id=decision_id,
        )
        return decision_id, adjustment.adjusted
