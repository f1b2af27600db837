"""Procedural and semantic memory (seed 002), kept in the durable store.

A **procedure** is a list of steps, each naming a step function registered in code
with :func:`step` (never evaluated text), plus default parameters merged with the
parameters of each call. Storing a procedure again keeps the previous steps in a
bounded version history (5 by default) from which it can be rolled back. ``execute``
checks every step name before running any, then runs them in order, and records
successes, failures, duration and the last run. A **concept** has a category and
content and relations (``source -relation-> target``) to other concepts.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from hivebus.domain.errors import InvalidInput, NotFound
from hivebus.domain.scoring import words
from hivebus.store.sql import Connection, SQLStore, upsert

StepFn = Callable[[dict[str, Any], dict[str, Any]], Awaitable[dict[str, Any] | None] | dict[str, Any] | None]
STEPS: dict[str, StepFn] = {}
MAX_VERSIONS = 5


def step(name: str) -> Callable[[StepFn], StepFn]:
    """Register ``fn(params, context)`` as the step ``name``; it may return updates to the context."""
    def register(fn: StepFn) -> StepFn:
        STEPS[name] = fn
        return fn
    return register


class StepFailed(Exception):
    """Raised by a step to say the procedure failed (recorded as a failure, not a crash)."""


@step("set")
def _set(params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Copy the step's parameters into the context."""
    return dict(params)


@step("require")
def _require(params: dict[str, Any], context: dict[str, Any]) -> None:
    """Fail unless every key in ``params['keys']`` is set and truthy in the context."""
    missing = [k for k in params.get("keys", []) if not context.get(k)]
    if missing:
        raise StepFailed(f"missing {', '.join(missing)}")


STEP_ENTRY_POINTS = "hivebus.steps"  # modules of other packages that register steps (the desk's)
_plugins_loaded = False


def load_step_plugins() -> None:
    """Import the step modules other installed packages name (once): their ``@step``s register."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    import importlib
    from importlib.metadata import entry_points

    for point in entry_points(group=STEP_ENTRY_POINTS):
        importlib.import_module(point.module)
    _plugins_loaded = True


def _check_steps(steps: Any) -> list[dict[str, Any]]:
    load_step_plugins()
    if not isinstance(steps, list) or not steps:
        raise InvalidInput("steps must be a non-empty list of {\"step\": NAME, \"params\": {...}}")
    checked = []
    for n, item in enumerate(steps, 1):
        if not isinstance(item, dict) or not isinstance(item.get("step"), str):
            raise InvalidInput(f"step {n} must be an object with a 'step' name")
        if item["step"] not in STEPS:
            known = ", ".join(sorted(STEPS))
            raise InvalidInput(f"step {n} names unknown step function {item['step']!r} (known: {known})")
        params = item.get("params", {})
        if not isinstance(params, dict):
            raise InvalidInput(f"step {n}: params must be an object")
        checked.append({"step": item["step"], "params": params})
    return checked


class ProceduralMemory:
    """Procedures and concepts in a durable store."""

    def __init__(self, store: SQLStore, max_versions: int = MAX_VERSIONS) -> None:
        self.store = store
        self.max_versions = max_versions

    # --- procedures ---------------------------------------------------------------------------
    async def store_procedure(
        self, procedure_id: str, steps: Any, *, parameters: dict[str, Any] | None = None,
        category: str = "general", name: str | None = None,
    ) -> int:
        """Create or replace a procedure (keeping the old steps as a version); return its version."""
        checked = _check_steps(steps)
        params = dict(parameters or {})
        now = time.time()

        def run(conn: Connection) -> int:
            row = conn.execute("SELECT * FROM procedures WHERE procedure_id=?", (procedure_id,)).fetchone()
            if row is None:
                conn.execute("INSERT INTO procedures (procedure_id, name, category, version, steps, "
                             "parameters, updated_at) VALUES (?,?,?,1,?,?,?)",
                             (procedure_id, name or procedure_id, category, json.dumps(checked),
                              json.dumps(params), now))
                return 1
            conn.execute(upsert("procedure_versions",
                                ("procedure_id", "version", "steps", "parameters", "created_at"),
                                ("procedure_id", "version")),
                         (procedure_id, row["version"], row["steps"], row["parameters"], now))
            conn.execute("DELETE FROM procedure_versions WHERE procedure_id=? AND version <= ?",
                         (procedure_id, row["version"] - self.max_versions))
            version = int(row["version"]) + 1
            conn.execute("UPDATE procedures SET version=?, steps=?, parameters=?, category=?, "
                         "name=?, updated_at=? WHERE procedure_id=?",
                         (version, json.dumps(checked), json.dumps(params), category,
                          name or row["name"], now, procedure_id))
            return version

        return await self.store.write(run, None)

    async def get(self, procedure_id: str) -> dict[str, Any]:
        """A procedure with its statistics. Raises NotFound."""
        row = await self.store.read(lambda c: c.execute(
            "SELECT * FROM procedures WHERE procedure_id=?", (procedure_id,)).fetchone())
        if row is None:
            raise NotFound(f"no procedure {procedure_id!r}")
        runs = row["successes"] + row["failures"]
        return {"procedure_id": row["procedure_id"], "name": row["name"], "category": row["category"],
                "version": row["version"], "steps": json.loads(row["steps"]),
                "parameters": json.loads(row["parameters"]),
                "stats": {"successes": row["successes"], "failures": row["failures"],
                          "mean_duration_s": row["total_duration_s"] / runs if runs else None,
                          "last_run": row["last_run"]}}

    async def procedures(self, category: str | None = None) -> list[dict[str, Any]]:
        """Every procedure (optionally of one category), by id."""
        rows = await self.store.read(lambda c: c.execute(
            "SELECT procedure_id FROM procedures WHERE category=? ORDER BY procedure_id", (category,))
            .fetchall() if category is not None else
            c.execute("SELECT procedure_id FROM procedures ORDER BY procedure_id").fetchall())
        return [await self.get(r["procedure_id"]) for r in rows]

    async def history(self, procedure_id: str) -> list[dict[str, Any]]:
        """Kept earlier versions, newest first."""
        await self.get(procedure_id)
        rows = await self.store.read(lambda c: c.execute(
            "SELECT * FROM procedure_versions WHERE procedure_id=? ORDER BY version DESC",
            (procedure_id,)).fetchall())
        return [{"version": r["version"], "steps": json.loads(r["steps"]),
                 "parameters": json.loads(r["parameters"]), "replaced_at": r["created_at"]} for r in rows]

    async def rollback(self, procedure_id: str, version: int) -> int:
        """Make a kept version current again (as a new version). Raises NotFound."""
        kept = {h["version"]: h for h in await self.history(procedure_id)}
        if version not in kept:
            raise NotFound(f"procedure {procedure_id!r} has no kept version {version}")
        current = await self.get(procedure_id)
        return await self.store_procedure(procedure_id, kept[version]["steps"],
                                          parameters=kept[version]["parameters"],
                                          category=current["category"], name=current["name"])

    async def execute(self, procedure_id: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run a procedure: check every step, run them in order, record the result and stats.

        Returns ``{success, context, error, duration_s}``. An unknown step is InvalidInput,
        raised before any step runs.
        """
        procedure = await self.get(procedure_id)
        steps = _check_steps(procedure["steps"])
        context: dict[str, Any] = {**procedure["parameters"], **(parameters or {})}
        started = time.monotonic()
        error = None
        for n, item in enumerate(steps, 1):
            try:
                result = STEPS[item["step"]](item["params"], context)
                if inspect.isawaitable(result):
                    result = await result
                if result:
                    context.update(result)
            except Exception as exc:
                error = f"step {n} ({item['step']}): {type(exc).__name__}: {exc}"
                break
        duration = time.monotonic() - started
        await self.record_outcome(procedure_id, success=error is None, duration_s=duration,
                                  detail={"error": error} if error else {})
        return {"success": error is None, "context": context, "error": error, "duration_s": duration}

    async def record_outcome(self, procedure_id: str, *, success: bool, duration_s: float = 0.0,
                             detail: dict[str, Any] | None = None) -> None:
        """Record one outcome of a procedure and update its statistics."""
        now = time.time()

        def run(conn: Connection) -> None:
            column = "successes" if success else "failures"
            changed = conn.execute(
                f"UPDATE procedures SET {column} = {column} + 1, total_duration_s = total_duration_s + ?, "
                "last_run = ? WHERE procedure_id=?", (duration_s, now, procedure_id)).rowcount
            if not changed:
                raise NotFound(f"no procedure {procedure_id!r}")
            conn.execute("INSERT INTO procedure_outcomes (procedure_id, at, success, duration_s, detail) "
                         "VALUES (?,?,?,?,?)",
                         (procedure_id, now, int(success), duration_s, json.dumps(detail or {})))

        await self.store.write(run, None)

    # --- concepts -----------------------------------------------------------------------------
    async def add_concept(self, name: str, *, category: str, content: str,
                          relations: list[tuple[str, str]] | None = None) -> None:
        """Create or update a concept, adding ``(relation, target)`` relations."""
        if not name.strip() or len(name) > 200:
            raise InvalidInput("a concept name must be 1-200 characters")

        def run(conn: Connection) -> None:
            conn.execute(upsert("concepts", ("name", "category", "content", "updated_at"), ("name",)),
                         (name, category, content, time.time()))
            for relation, target in relations or []:
                conn.execute("INSERT INTO concept_relations (source, relation, target) VALUES (?,?,?) "
                             "ON CONFLICT (source, relation, target) DO NOTHING", (name, relation, target))

        await self.store.write(run, None)

    async def search_concepts(
        self, word: str | None = None, category: str | None = None
    ) -> list[dict[str, Any]]:
        """Concepts whose name or content has ``word`` (any case), and/or of ``category``."""
        rows = await self.store.read(lambda c: c.execute(
            "SELECT * FROM concepts WHERE category=? ORDER BY name", (category,)).fetchall()
            if category is not None else c.execute("SELECT * FROM concepts ORDER BY name").fetchall())
        wanted = words(word) if word else set()
        return [dict(r) for r in rows if wanted <= words(f"{r['name']} {r['content']}")]

    async def related(self, name: str) -> list[dict[str, Any]]:
        """Relations from and to a concept. Raises NotFound for an unknown concept."""
        exists = await self.store.read(lambda c: c.execute(
            "SELECT 1 FROM concepts WHERE name=?", (name,)).fetchone())
        if exists is None:
            raise NotFound(f"no concept {name!r}")
        rows = await self.store.read(lambda c: c.execute(
            "SELECT source, relation, target FROM concept_relations WHERE source=? OR target=? "
            "ORDER BY relation, source, target", (name, name)).fetchall())
        return [dict(r) for r in rows]
