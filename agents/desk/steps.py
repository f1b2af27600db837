"""The desk's procedure steps, registered through the ``hivebus.steps`` entry point."""

from __future__ import annotations

from typing import Any

from hivebus.store.procedural import step


@step("position_size")
def position_size(params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """size = capital * risk_fraction / stop_distance (all from the context)."""
    capital, risk = float(context["capital"]), float(context["risk_fraction"])
    stop = float(context.get("stop_distance", 1.0)) or 1.0
    return {"size": round(capital * risk / stop, 8)}
