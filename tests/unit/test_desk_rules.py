"""The trading desk's rules: whale severity, funding buckets, risk levels, the pause after a
losing streak, position sizing, and what each built-in agent does with one signal.

The pure functions are tested on tables; the rules that live in handlers are run with small
fakes of the agent's memory and the handler context (no Redis), which record what the handler
decided, published, remembered and saved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from hivebus.agents.desk.market import HORIZON, funding_bucket, market_cycle
from hivebus.agents.desk.market_hunter import DEFAULT_CONFIGURATION as HUNTER_DEFAULTS
from hivebus.agents.desk.market_hunter import MarketHunter, whale_severity
from hivebus.agents.desk.risk_manager import POSITION_LIMIT_BTC, RiskManager, assess, next_status
from hivebus.agents.desk.steps import position_size
from hivebus.agents.desk.trade_executor import TradeExecutor
from hivebus.agents.runner import Permanent
from hivebus.domain.errors import AlreadyRecorded, NotFound
from hivebus.domain.models import Severity, Signal
from hivebus.memory.state import AgentState, AgentStatus

pytestmark = pytest.mark.anyio

# --- pure rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(("flow", "severity"), [
    (0, Severity.MEDIUM), (999.99, Severity.MEDIUM), (1000, Severity.HIGH), (-1000, Severity.HIGH),
    (1999.99, Severity.HIGH), (2000, Severity.CRITICAL), (-2500, Severity.CRITICAL),
])
def test_whale_severity(flow: float, severity: Severity) -> None:
    """A flow of 1000 BTC either way is HIGH, 2000 CRITICAL, anything less MEDIUM."""
    assert whale_severity(flow) is severity


@pytest.mark.parametrize(("rate", "bucket"), [(0.001, "high"), (0.003, "high"), (0.000999, "normal"),
                                               (0.0, "normal"), (-0.0001, "negative")])
def test_funding_bucket(rate: float, bucket: str) -> None:
    """Funding of 0.1 % or more is high, below zero negative, otherwise normal."""
    assert funding_bucket(rate) == bucket


@pytest.mark.parametrize(("data", "cycle"), [({"cycle": 5}, 5), ({"cycle": 0}, 0), ({"cycle": True}, 9),
                                              ({"cycle": "5"}, 9), ({"cycle": 5.0}, 9), ({}, 9)])
def test_market_cycle(data: dict[str, Any], cycle: int) -> None:
    """The cycle is the data's integer ``cycle`` (not a bool, string or float), else the default."""
    assert market_cycle(data, default=9) == cycle


def market_signal(severity: Severity, **data: Any) -> Signal:
    return Signal.create("WHALE_ACTIVITY", "mh-1", severity=severity, data={"symbol": "BTC", **data})


@pytest.mark.parametrize(("severity", "streak", "paused", "level"), [
    (Severity.MEDIUM, 0, False, "LOW"), (Severity.MEDIUM, 1, False, "LOW"),
    (Severity.MEDIUM, 2, False, "MEDIUM"), (Severity.HIGH, 0, False, "MEDIUM"),
    (Severity.CRITICAL, 0, False, "HIGH"), (Severity.LOW, 0, True, "HIGH"),
    (Severity.INFO, 9, False, "MEDIUM"),
])
def test_assess(severity: Severity, streak: int, paused: bool, level: str) -> None:
    """A paused desk or a CRITICAL signal is HIGH risk; a HIGH signal or two losses MEDIUM; else LOW."""
    assert assess(market_signal(severity), streak, paused) == level


def test_position_limits() -> None:
    """One BTC at low risk, half at medium, nothing at high."""
    assert POSITION_LIMIT_BTC == {"LOW": 1.0, "MEDIUM": 0.5, "HIGH": 0.0}


@pytest.mark.parametrize(("status", "performance", "cycle", "streak", "config", "after", "recorded"), [
    (AgentStatus.ACTIVE, {}, 10, 3, {}, AgentStatus.ACTIVE, {}),
    (AgentStatus.ACTIVE, {}, 10, 4, {}, AgentStatus.PAUSED, {"paused_at": 10, "pauses": 1}),
    (AgentStatus.ACTIVE, {"pauses": 2}, 11, 6, {}, AgentStatus.PAUSED, {"paused_at": 11, "pauses": 3}),
    (AgentStatus.ACTIVE, {}, 10, 2, {"losing_streak": 2}, AgentStatus.PAUSED, {"paused_at": 10, "pauses": 1}),
    (AgentStatus.PAUSED, {"paused_at": 10}, 17, 9, {}, AgentStatus.PAUSED, {"paused_at": 10}),
    (AgentStatus.PAUSED, {"paused_at": 10}, 18, 9, {}, AgentStatus.ACTIVE, {"paused_at": 10}),
    (AgentStatus.PAUSED, {"paused_at": 10}, 12, 0, {"cooldown_cycles": 2}, AgentStatus.ACTIVE,
     {"paused_at": 10}),
    (AgentStatus.PAUSED, {}, 30, 0, {}, AgentStatus.PAUSED, {}),  # no pause recorded: just paused
    (AgentStatus.ERROR, {}, 10, 9, {}, AgentStatus.ERROR, {}),
])
def test_next_status(status: AgentStatus, performance: dict[str, Any], cycle: int, streak: int,
                     config: dict[str, Any], after: AgentStatus, recorded: dict[str, Any]) -> None:
    """Four losses in a row pause an active desk (recorded), eight cycles of cool-down resume it."""
    assert next_status(status, performance, cycle, streak, config) is after
    assert performance == recorded


@pytest.mark.parametrize(("context", "size"), [
    ({"capital": 10_000, "risk_fraction": 0.02, "stop_distance": 0.05}, 4000.0),
    ({"capital": 10_000, "risk_fraction": 0.02}, 200.0),
    ({"capital": 10_000, "risk_fraction": 0.02, "stop_distance": 0}, 200.0),
    ({"capital": 1, "risk_fraction": 1, "stop_distance": 3}, 0.33333333),
])
def test_position_size(context: dict[str, Any], size: float) -> None:
    """size = capital * risk / stop distance (1 when absent or zero), to 8 decimals."""
    assert position_size({}, context) == {"size": size}


# --- fakes --------------------------------------------------------------------------------------

@dataclass
class FakeMemory:
    """The parts of AgentMemory the desk's agents use, recording every call."""

    state: AgentState
    known_patterns: list[Any] = field(default_factory=list)
    outcomes: list[Any] = field(default_factory=list)  # what stm.recent("outcome") returns
    saves: list[dict[str, Any]] = field(default_factory=list)
    remembered: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    logged: list[tuple[str, bool, dict[str, Any]]] = field(default_factory=list)
    already_recorded: set[str] = field(default_factory=set)
    asked: list[int] = field(default_factory=list)  # how many outcomes each stm.recent asked for

    def __post_init__(self) -> None:
        self.stm = SimpleNamespace(recent=self._recent, remember=self._stm_remember)
        self.decisions = SimpleNamespace(log_outcome=self._log_outcome)

    async def save_state(self, *, reason: str = "", **changes: Any) -> AgentState:
        self.saves.append(changes)
        self.state = self.state.model_copy(update=changes)
        return self.state

    async def remember(self, kind: str, content: str, **options: Any) -> str:
        self.remembered.append((kind, content, options))
        return "m"

    async def patterns(self, min_confidence: float = 0.0) -> list[Any]:
        return [p for p in self.known_patterns if p.confidence >= min_confidence]

    async def _recent(self, kind: str, symbol: str | None, count: int) -> list[Any]:
        assert (kind, symbol) == ("outcome", None)
        self.asked.append(count)
        return self.outcomes[:count]

    async def _stm_remember(self, kind: str, content: str, **options: Any) -> str:
        return await self.remember(kind, content, **options)

    async def _log_outcome(self, decision_id: str, *, success: bool, metrics: dict[str, Any]) -> None:
        if decision_id in self.already_recorded:
            raise AlreadyRecorded(decision_id)
        self.logged.append((decision_id, success, metrics))


class FakeContext:
    """A handler context that records decisions and publications; ``reports`` answers bus.report."""

    def __init__(self, reports: dict[str, Signal] | None = None) -> None:
        self.decisions: list[tuple[str, float, dict[str, Any]]] = []
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.bus = SimpleNamespace(report=self._report)
        self._reports = reports or {}

    async def decide(self, decision_type: str, *, confidence: float, **options: Any) -> tuple[str, float]:
        self.decisions.append((decision_type, confidence, options))
        return f"d{len(self.decisions)}", confidence

    async def publish(self, signal_type: str, **options: Any) -> str:
        self.published.append((signal_type, options))
        return f"s{len(self.published)}"

    async def _report(self, signal_id: str) -> Any:
        if signal_id not in self._reports:
            raise NotFound(signal_id)
        return SimpleNamespace(signal=self._reports[signal_id])


def agent_with(cls: Any, agent_id: str, **state: Any) -> tuple[Any, FakeMemory]:
    agent = cls(agent_id)
    memory = FakeMemory(AgentState(agent_id=agent_id, **state))
    agent.memory = memory
    return agent, memory


def tick(**data: Any) -> Signal:
    return Signal.create("MARKET_TICK", "feed", data={"symbol": "BTC", "price": 100.0, "funding_rate": 0.0,
                                                     "whale_net_flow_btc": 0.0, "cycle": 1, **data})


@pytest.mark.parametrize(("cls", "agent_type", "subscriptions"), [
    (MarketHunter, "market-hunter", ("MARKET_TICK",)),
    (RiskManager, "risk-manager", ("EXTREME_FUNDING", "MARKET_TICK", "WHALE_ACTIVITY")),
    (TradeExecutor, "trade-executor",
     ("EXTREME_FUNDING", "MARKET_TICK", "RISK_ASSESSMENT", "WHALE_ACTIVITY")),
])
def test_desk_agents(cls: Any, agent_type: str, subscriptions: tuple[str, ...]) -> None:
    """Each desk agent's type, the signal types it handles, and its id."""
    assert (cls.agent_type, cls.subscriptions()) == (agent_type, subscriptions)
    assert cls("x-1").agent_id == "x-1"


# --- market hunter --------------------------------------------------------------------------

async def test_hunter_setup_saves_defaults_only_once() -> None:
    """The hunter starts from its default thresholds unless its state has some."""
    hunter, memory = agent_with(MarketHunter, "mh-1")
    await hunter.setup()
    assert HUNTER_DEFAULTS == {"whale_flow_btc": 500.0, "extreme_funding": 0.0025}
    assert memory.state.configuration == HUNTER_DEFAULTS
    await hunter.setup()
    assert len(memory.saves) == 1


async def test_hunter_refuses_a_tick_without_numbers() -> None:
    """A tick lacking numeric fields is a permanent failure naming them."""
    hunter, _ = agent_with(MarketHunter, "mh-1", configuration=HUNTER_DEFAULTS)
    with pytest.raises(Permanent, match=r"^MARKET_TICK data lacks numeric price, cycle$"):
        await hunter.on_tick(tick(price="high", cycle=None), FakeContext())


async def test_hunter_quiet_tick_selects_sources_and_publishes_nothing() -> None:
    """Without stored quality the sources score 0.9, 0.85, 0.8 and the best two are used; a
    flow and funding under the thresholds publish nothing; the cycle and metrics are counted."""
    hunter, memory = agent_with(MarketHunter, "mh-1", configuration=HUNTER_DEFAULTS, current_cycle=4)
    ctx = FakeContext()
    await hunter.on_tick(tick(whale_net_flow_btc=499.99, funding_rate=0.00249), ctx)
    [(kind, confidence, options)] = ctx.decisions
    assert (kind, confidence) == ("SOURCE_SELECTION", 0.9)
    assert options["reasoning"]["scores"] == {"coinglass": 0.9, "cryptoquant": pytest.approx(0.85),
                                              "glassnode": pytest.approx(0.8)}
    assert options["reasoning"]["selected"] == ["coinglass", "cryptoquant"]
    assert ctx.published == [] and memory.remembered == []
    assert memory.state.current_cycle == 5
    assert memory.state.source_metrics == {"ticks_seen": 1, "signals_emitted": 0}


async def test_hunter_source_quality_decides_the_selection() -> None:
    """Stored source quality replaces the default scores."""
    metrics = {"glassnode": {"quality": 0.97}, "coinglass": {"quality": 0.1}, "ticks_seen": 3,
               "signals_emitted": 2}
    hunter, memory = agent_with(MarketHunter, "mh-1", configuration=HUNTER_DEFAULTS, source_metrics=metrics)
    ctx = FakeContext()
    await hunter.on_tick(tick(), ctx)
    assert ctx.decisions[0][1] == 0.97
    assert ctx.decisions[0][2]["reasoning"]["selected"] == ["glassnode", "cryptoquant"]
    assert memory.state.source_metrics["ticks_seen"] == 4


async def test_hunter_selection_confidence_is_rounded() -> None:
    """The source-selection confidence is the best score to 4 decimals."""
    hunter, _ = agent_with(MarketHunter, "mh-1", configuration=HUNTER_DEFAULTS,
                           source_metrics={"glassnode": {"quality": 0.97123456}})
    ctx = FakeContext()
    await hunter.on_tick(tick(), ctx)
    assert ctx.decisions[0][1] == 0.9712


@pytest.mark.parametrize(("flow", "whale"), [(0.0, "distribution"), (0.5, "accumulation"),
                                              (-0.5, "distribution")])
async def test_hunter_whale_direction(flow: float, whale: str) -> None:
    """A positive net flow is accumulation, zero or negative distribution."""
    hunter, _ = agent_with(MarketHunter, "mh-1", configuration=HUNTER_DEFAULTS)
    ctx = FakeContext()
    await hunter.on_tick(tick(whale_net_flow_btc=flow, funding_rate=0.003), ctx)
    [(signal_type, options)] = ctx.published
    assert (signal_type, options["data"]["features"]) == ("EXTREME_FUNDING", {"whale": whale,
                                                                              "funding": "high"})


async def test_hunter_default_thresholds_apply_when_not_configured() -> None:
    """A configuration without a threshold uses the default (500 BTC, 0.25 % funding)."""
    hunter, _ = agent_with(MarketHunter, "mh-1", configuration={"other": 1})
    ctx = FakeContext()
    await hunter.on_tick(tick(whale_net_flow_btc=500.0, funding_rate=-0.0025), ctx)
    assert [p[0] for p in ctx.published] == ["WHALE_ACTIVITY", "EXTREME_FUNDING"]
    await hunter.on_tick(tick(whale_net_flow_btc=499.9, funding_rate=0.00249), ctx)
    assert len(ctx.published) == 2


async def test_hunter_publishes_whale_activity_and_extreme_funding() -> None:
    """Flow at the threshold is whale activity (confidence 0.5 + flow/5000, at most 0.95);
    funding at its threshold is extreme (HIGH, 0.6); both are decided, published, remembered."""
    hunter, memory = agent_with(MarketHunter, "mh-1", configuration=HUNTER_DEFAULTS)
    ctx = FakeContext()
    await hunter.on_tick(tick(whale_net_flow_btc=-1500.004, funding_rate=0.0025, price=101.5, cycle=7), ctx)
    assert [p[0] for p in ctx.published] == ["WHALE_ACTIVITY", "EXTREME_FUNDING"]
    whale, funding = (p[1] for p in ctx.published)
    features = {"whale": "distribution", "funding": "high"}
    assert whale == {"data": {"symbol": "BTC", "price": 101.5, "cycle": 7, "features": features,
                              "amount_btc": 1500.0, "direction": "distribution"},
                     "severity": Severity.HIGH, "confidence": pytest.approx(0.8000008), "decision_id": "d2"}
    assert (funding["severity"], funding["confidence"], funding["decision_id"]) == (Severity.HIGH, 0.6, "d3")
    assert funding["data"]["funding_rate"] == 0.0025
    assert [d[2]["reasoning"] for d in ctx.decisions[1:]] == [
        {"signal_type": "WHALE_ACTIVITY", "patterns_applied": []},
        {"signal_type": "EXTREME_FUNDING", "patterns_applied": []}]
    assert [r[1] for r in memory.remembered] == [
        "WHALE_ACTIVITY distribution whales, funding high at 101.5",
        "EXTREME_FUNDING distribution whales, funding high at 101.5"]
    assert memory.state.source_metrics["signals_emitted"] == 2
    await hunter.on_tick(tick(whale_net_flow_btc=500.0), ctx)
    assert ctx.published[-1][0] == "WHALE_ACTIVITY"
    await hunter.on_tick(tick(whale_net_flow_btc=5000.0), ctx)
    assert ctx.published[-1][1]["confidence"] == 0.95


async def test_hunter_boosts_a_signal_that_matches_a_known_pattern() -> None:
    """A promoted pattern of the same signal type and features adds 0.1 (at most 0.99)."""
    features = {"whale": "accumulation", "funding": "normal"}
    pattern = SimpleNamespace(pattern_id="mh-1/SIGNAL_GENERATION/WHALE_ACTIVITY/x",
                              data={"features": features}, confidence=0.7)
    other = SimpleNamespace(pattern_id="mh-1/SIGNAL_GENERATION/EXTREME_FUNDING/x",
                            data={"features": features}, confidence=0.7)
    hunter, memory = agent_with(MarketHunter, "mh-1", configuration=HUNTER_DEFAULTS)
    memory.known_patterns = [pattern, other]
    ctx = FakeContext()
    await hunter.on_tick(tick(whale_net_flow_btc=1000.0, funding_rate=0.0005), ctx)
    [(_, options)] = ctx.published
    assert options["confidence"] == pytest.approx(0.8)
    assert ctx.decisions[1][2]["reasoning"]["patterns_applied"] == [pattern.pattern_id]
    await hunter.on_tick(tick(whale_net_flow_btc=4990.0, funding_rate=0.0005), ctx)
    assert ctx.published[-1][1]["confidence"] == 0.99


# --- risk manager ---------------------------------------------------------------------------

def outcome(closed_cycle: int, pnl: float) -> Any:
    return SimpleNamespace(metadata={"closed_cycle": closed_cycle, "pnl": pnl})


async def test_risk_manager_setup_saves_defaults_only_once() -> None:
    """The risk manager starts from four losses to pause and eight cycles of cool-down."""
    manager, memory = agent_with(RiskManager, "rm-1")
    await manager.setup()
    assert memory.state.configuration == {"losing_streak": 4, "cooldown_cycles": 8}
    await manager.setup()
    assert len(memory.saves) == 1


async def test_losing_streak_reads_the_last_100_outcomes_and_tolerates_missing_fields() -> None:
    """The streak looks at the 100 newest shared outcomes; one without a cycle counts as cycle 0
    and one without a P&L as a loss of 0."""
    manager, memory = agent_with(RiskManager, "rm-1")
    memory.outcomes = [SimpleNamespace(metadata={})]
    assert await manager.losing_streak(1) == (1, 0.0)
    assert memory.asked == [100]
    memory.outcomes = [SimpleNamespace(metadata={}), outcome(0, 0.5)]  # same cycle: the win first
    assert await manager.losing_streak(1) == (0, pytest.approx(0.5))
    memory.outcomes = [SimpleNamespace(metadata={"pnl": -2.0}), outcome(0, -1.0)]
    assert await manager.losing_streak(1) == (2, pytest.approx(-3.0))


async def test_losing_streak_counts_the_newest_losses_before_the_cycle() -> None:
    """Losses are counted from the newest earlier cycle back to the first win; within a cycle
    wins come first; outcomes of this cycle or later are left out; the P&L is their sum."""
    manager, memory = agent_with(RiskManager, "rm-1")
    memory.outcomes = [outcome(9, -1.0), outcome(8, -2.0), outcome(8, 3.0), outcome(7, -4.0),
                       outcome(10, -50.0), outcome(6, 0.0)]
    assert await manager.losing_streak(10) == (1, pytest.approx(-4.0))
    memory.outcomes = [outcome(9, -1.0), outcome(8, -2.0), outcome(7, 0.0), outcome(6, 5.0)]
    assert await manager.losing_streak(10) == (3, pytest.approx(2.0))
    memory.outcomes = [outcome(n, -1.0) for n in range(30)]
    assert await manager.losing_streak(100) == (20, pytest.approx(-20.0))  # the newest 20 only


async def test_risk_manager_tick_pauses_after_the_streak() -> None:
    """Each tick counts a cycle; the fourth loss in a row pauses the desk."""
    manager, memory = agent_with(RiskManager, "rm-1", configuration={"losing_streak": 4,
                                                                      "cooldown_cycles": 8})
    memory.outcomes = [outcome(n, -1.0) for n in range(1, 4)]
    await manager.on_tick(tick(), FakeContext())
    assert (memory.state.current_cycle, memory.state.status) == (1, AgentStatus.ACTIVE)
    memory.outcomes = [outcome(n, -1.0) for n in range(1, 5)]
    memory.state = memory.state.model_copy(update={"current_cycle": 4})
    await manager.on_tick(tick(), FakeContext())
    assert (memory.state.current_cycle, memory.state.status) == (5, AgentStatus.PAUSED)
    assert memory.state.context_performance == {"paused_at": 5, "pauses": 1}


@pytest.mark.parametrize(("severity", "losses", "level", "limit", "published_severity"), [
    (Severity.MEDIUM, 0, "LOW", 1.0, Severity.INFO),
    (Severity.HIGH, 0, "MEDIUM", 0.5, Severity.INFO),
    (Severity.MEDIUM, 2, "MEDIUM", 0.5, Severity.INFO),
    (Severity.CRITICAL, 0, "HIGH", 0.0, Severity.HIGH),
    (Severity.MEDIUM, 4, "HIGH", 0.0, Severity.HIGH),  # four losses: paused, looking ahead
])
async def test_risk_assessment_published(severity: Severity, losses: int, level: str, limit: float,
                                         published_severity: Severity) -> None:
    """Each market signal gets a RISK_ASSESSMENT with its level and position limit."""
    manager, memory = agent_with(RiskManager, "rm-1", configuration={"losing_streak": 4})
    memory.outcomes = [outcome(5 - n, -1.0) for n in range(losses)]
    signal = market_signal(severity, cycle=6)
    ctx = FakeContext()
    await manager.on_market_signal(signal, ctx)
    [(kind, confidence, options)] = ctx.decisions
    assert (kind, confidence) == ("RISK_ASSESSMENT", signal.confidence)
    paused = losses == 4
    assert options["reasoning"] == {"risk_level": level, "position_limit": limit, "losing_streak": losses,
                                    "recent_pnl": -float(losses), "desk_paused": paused}
    [(signal_type, published)] = ctx.published
    assert signal_type == "RISK_ASSESSMENT"
    assert published["data"] == {"risk_level": level, "position_limit_btc": limit,
                                 "assessed_signal": signal.signal_id, "assessed_type": "WHALE_ACTIVITY",
                                 "desk_paused": paused}
    assert (published["severity"], published["decision_id"]) == (published_severity, "d1")


async def test_risk_manager_looks_ahead_only_to_a_cycle_it_has_not_counted() -> None:
    """Assessing a signal of the cycle the manager has counted uses its stored status; a later
    cycle's is computed ahead (four losses pause it); the recent P&L is rounded to cents."""
    manager, memory = agent_with(RiskManager, "rm-1", current_cycle=6, configuration={"losing_streak": 4})
    memory.outcomes = [outcome(5, -1.234), outcome(4, -1.0), outcome(3, -1.0), outcome(2, -1.0)]
    ctx = FakeContext()
    await manager.on_market_signal(market_signal(Severity.MEDIUM, cycle=6), ctx)
    assert ctx.decisions[0][2]["reasoning"]["risk_level"] == "MEDIUM"
    assert ctx.decisions[0][2]["reasoning"]["recent_pnl"] == -4.23
    await manager.on_market_signal(market_signal(Severity.MEDIUM, cycle=7), ctx)
    assert ctx.decisions[1][2]["reasoning"]["risk_level"] == "HIGH"
    assert memory.saves == []  # assessing never changes the state


# --- trade executor ---------------------------------------------------------------------------

def assessment(assessed: str, limit: float) -> Signal:
    return Signal.create("RISK_ASSESSMENT", "rm-1", confidence=0.7, causation_id="rm-decision",
                         data={"position_limit_btc": limit, "assessed_signal": assessed})


async def test_executor_opens_a_position_per_allowed_assessment() -> None:
    """A positive limit opens one position on the assessed signal (sell on distribution), with
    every decision that led to it; a zero limit, a repeat, a gone or priceless signal open none."""
    whale = Signal.create("WHALE_ACTIVITY", "mh-1", causation_id="mh-decision",
                          data={"symbol": "ETH", "price": 2000, "direction": "distribution", "cycle": 3,
                                "features": {"whale": "distribution"}})
    priceless = Signal.create("WHALE_ACTIVITY", "mh-1", data={"price": "n/a"})
    executor, memory = agent_with(TradeExecutor, "te-1", current_cycle=2)
    ctx = FakeContext({whale.signal_id: whale, priceless.signal_id: priceless})
    for signal in (assessment(whale.signal_id, 0.0), assessment("gone", 1.0),
                   assessment(priceless.signal_id, 1.0)):
        await executor.on_assessment(signal, ctx)
    assert ctx.decisions == [] and memory.saves == []
    await executor.on_assessment(assessment(whale.signal_id, 0.5), ctx)
    await executor.on_assessment(assessment(whale.signal_id, 0.5), ctx)  # redelivered: nothing twice
    [(kind, confidence, options)] = ctx.decisions
    assert (kind, confidence) == ("TRADE_EXECUTION", 0.7)
    assert options["reasoning"] == {"action": "sell", "size": 0.5}
    assert memory.state.context_performance["positions"] == [
        {"id": whale.signal_id, "side": "sell", "size": 0.5, "symbol": "ETH", "entry": 2000.0, "cycle": 3,
         "decisions": ["d1", "rm-decision", "mh-decision"]}]


async def test_executor_remembers_market_signals_and_needs_a_limit() -> None:
    """A market signal is remembered for later; an assessment without a limit trades nothing."""
    whale = Signal.create("WHALE_ACTIVITY", "mh-1", confidence=0.8,
                          data={"symbol": "ETH", "price": 2000, "direction": "accumulation"})
    executor, memory = agent_with(TradeExecutor, "te-1")
    ctx = FakeContext({whale.signal_id: whale})
    await executor.on_market_signal(whale, ctx)
    assert memory.remembered == [("signal", "WHALE_ACTIVITY accumulation", {
        "score": 0.8, "symbol": "ETH", "metadata": {"signal_id": whale.signal_id}})]
    no_limit = Signal.create("RISK_ASSESSMENT", "rm-1", data={"assessed_signal": whale.signal_id})
    await executor.on_assessment(no_limit, ctx)
    assert ctx.decisions == [] and memory.saves == []


def position(cycle: int, side: str = "buy", entry: float = 100.0, size: float = 0.5) -> dict[str, Any]:
    return {"id": f"p{cycle}{side}", "side": side, "size": size, "symbol": "BTC", "entry": entry,
            "cycle": cycle, "decisions": [f"d-{cycle}-{side}"]}


async def test_executor_closes_positions_after_the_horizon() -> None:
    """Positions held HORIZON ticks close at the tick's price: P&L = size * move * direction,
    an outcome per decision, counters kept (the total P&L in cents); younger positions stay open."""
    assert HORIZON == 3
    open_positions = [position(7, "buy"), position(7, "sell", entry=104.0), position(8, "buy")]
    executor, memory = agent_with(TradeExecutor, "te-1", current_cycle=9,
                                  context_performance={"positions": open_positions, "pnl": 1.004,
                                                       "wins": 2, "trades_closed": 3})
    memory.already_recorded = {"d-7-sell"}  # a redelivered tick: logged before, not again
    await executor.on_tick(tick(price=110.0), FakeContext())
    assert memory.logged == [("d-7-buy", True, {"pnl": 5.0, "exit": 110.0})]
    assert [r[1] for r in memory.remembered] == ["Trade p7buy win: PnL=5.00", "Trade p7sell loss: PnL=-3.00"]
    kind, _, options = memory.remembered[0]
    assert (kind, options["score"], options["shared_with"]) == ("outcome", 2.0, ["*"])
    assert options["metadata"] == {"trade_id": "p7buy", "pnl": 5.0, "entry": 100.0, "exit": 110.0,
                                   "closed_cycle": 10}
    assert memory.state.current_cycle == 10
    assert memory.state.context_performance == {"positions": [position(8, "buy")], "pnl": 3.0, "wins": 3,
                                                "trades_closed": 5}


@pytest.mark.parametrize(("size", "exit_price", "pnl", "text", "score"), [
    (1.0, 100.0, 0.0, "loss", 1.0),       # no move: a loss
    (1.0, 100.5, 0.5, "win", 1.0),        # a small win scores 1
    (1.0, 101.0, 1.0, "win", 1.0),        # 1 is not more than 1
    (1.0, 101.01, 1.01, "win", 2.0),
    (0.3333, 110.0, 3.33, "win", 2.0),    # rounded to cents
])
async def test_executor_outcome_of_one_trade(size: float, exit_price: float, pnl: float, text: str,
                                             score: float) -> None:
    """Each closed trade: success when P&L > 0, remembered with score 2 beyond ±1, counted from
    nothing when no counters were kept yet."""
    executor, memory = agent_with(TradeExecutor, "te-1", current_cycle=2,
                                  context_performance={"positions": [position(0, size=size)]})
    await executor.on_tick(tick(price=exit_price), FakeContext())
    assert memory.logged == [("d-0-buy", pnl > 0, {"pnl": pnl, "exit": exit_price})]
    [(_, content, options)] = memory.remembered
    assert (content, options["score"]) == (f"Trade p0buy {text}: PnL={pnl:.2f}", score)
    assert memory.state.context_performance == {"positions": [], "trades_closed": 1, "wins": int(pnl > 0),
                                                "pnl": pnl}


async def test_executor_refuses_a_tick_without_price() -> None:
    """A tick without a numeric price is a permanent failure."""
    executor, _ = agent_with(TradeExecutor, "te-1")
    with pytest.raises(Permanent, match=r"^MARKET_TICK needs a numeric price$"):
        await executor.on_tick(tick(price=None), FakeContext())
