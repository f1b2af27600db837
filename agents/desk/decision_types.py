"""The decision types of the trading desk (the seeds' five); the core takes any
UPPER_SNAKE_CASE name."""

from __future__ import annotations

from enum import StrEnum


class DecisionType(StrEnum):
    """The five decision types of the seeds."""

    SOURCE_SELECTION = "SOURCE_SELECTION"
    QUERY_EXECUTION = "QUERY_EXECUTION"
    SIGNAL_GENERATION = "SIGNAL_GENERATION"
    RISK_ASSESSMENT = "RISK_ASSESSMENT"
    TRADE_EXECUTION = "TRADE_EXECUTION"
