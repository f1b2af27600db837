"""Tests of procedural and semantic memory in the SQLite store."""

from __future__ import annotations

from typing import Any

import pytest

from hivebus.domain.errors import InvalidInput, NotFound
from hivebus.store.procedural import STEPS, ProceduralMemory, StepFailed, step
from hivebus.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

RAN: list[str] = []


@step("test_record")
def _record(params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    RAN.append(str(params.get("tag")))
    return {"last": params.get("tag")}


@step("test_fail")
async def _fail(params: dict[str, Any], context: dict[str, Any]) -> None:
    raise StepFailed("market closed")


async def test_unknown_step_is_refused_before_anything_runs(store: SQLiteStore) -> None:
    """Acceptance 6: a procedure naming an unknown step fails before its first step runs."""
    memory = ProceduralMemory(store)
    with pytest.raises(InvalidInput, match="unknown step function 'nope'"):
        await memory.store_procedure("p", [{"step": "test_record"}, {"step": "nope"}])
    STEPS["test_gone"] = _record
    await memory.store_procedure("p", [{"step": "test_record", "params": {"tag": "a"}},
                                       {"step": "test_gone"}])
    del STEPS["test_gone"]  # the code that registered it is gone
    RAN.clear()
    with pytest.raises(InvalidInput, match="test_gone"):
        await memory.execute("p")
    assert RAN == []
    assert (await memory.get("p"))["stats"]["successes"] == 0


async def test_execute_merges_parameters_and_updates_stats(store: SQLiteStore) -> None:
    """Defaults merge with call parameters; successes, failures, duration and last run are kept."""
    memory = ProceduralMemory(store)
    await memory.store_procedure(
        "size", [{"step": "position_size"}], parameters={"capital": 1000, "risk_fraction": 0.01})
    result = await memory.execute("size", {"risk_fraction": 0.02, "stop_distance": 2})
    assert result["success"] and result["context"]["size"] == 10.0
    await memory.store_procedure("bad", [{"step": "test_fail"}])
    failed = await memory.execute("bad")
    assert not failed["success"] and "market closed" in failed["error"]
    stats = (await memory.get("size"))["stats"]
    assert stats["successes"] == 1 and stats["failures"] == 0 and stats["last_run"] is not None
    assert (await memory.get("bad"))["stats"]["failures"] == 1


async def test_versions_are_bounded_and_rollback_restores_steps(store: SQLiteStore) -> None:
    """Seven stores keep the last five earlier versions; rollback brings old steps back."""
    memory = ProceduralMemory(store)
    for n in range(1, 8):
        await memory.store_procedure("p", [{"step": "test_record", "params": {"tag": f"v{n}"}}])
    history = await memory.history("p")
    assert [h["version"] for h in history] == [6, 5, 4, 3, 2]
    assert await memory.rollback("p", 3) == 8
    assert (await memory.get("p"))["steps"] == [{"step": "test_record", "params": {"tag": "v3"}}]
    RAN.clear()
    await memory.execute("p")
    assert RAN == ["v3"]
    with pytest.raises(NotFound):
        await memory.rollback("p", 1)


async def test_concepts_search_and_relations(store: SQLiteStore) -> None:
    """Concepts are found by word and category; relations are listed both ways."""
    memory = ProceduralMemory(store)
    await memory.add_concept("whale", category="market", content="A large holder moving coins",
                             relations=[("causes", "volatility")])
    await memory.add_concept("volatility", category="risk", content="How much prices swing")
    await memory.add_concept("funding", category="market", content="Perpetual swap funding rate")
    assert [c["name"] for c in await memory.search_concepts("COINS")] == ["whale"]
    assert [c["name"] for c in await memory.search_concepts(category="market")] == ["funding", "whale"]
    assert await memory.related("volatility") == [
        {"source": "whale", "relation": "causes", "target": "volatility"}]
    with pytest.raises(NotFound):
        await memory.related("nothing")
