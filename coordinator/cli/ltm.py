"""``hivebus patterns``, ``hivebus pattern …``: the long-term patterns in the durable store."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from hivebus.cli.common import Parser, listing
from hivebus.cli.main import COMMANDS
from hivebus.cli.output import clock, clock_of, print_json, print_table
from hivebus.cli.views import pattern_json, pattern_version_json
from hivebus.domain.keys import check_agent_id
from hivebus.store import open_store
from hivebus.store.base import MemoryPattern
from hivebus.store.sql import SQLStore

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable

    from hivebus.settings import Settings


async def with_store(settings: Settings, body: Callable[[SQLStore], Awaitable[int]]) -> int:
    """Open the durable store, run ``body``, close it."""
    store = await open_store(settings)
    try:
        return await body(store)
    finally:
        await store.close()


def _viewer(args: argparse.Namespace) -> str | None:
    return check_agent_id(args.as_agent) if args.as_agent else None


def _row(p: MemoryPattern) -> dict[str, Any]:
    return {"pattern_id": p.pattern_id, "agent": p.agent_id, "type": p.memory_type,
            "version": p.version, "active": "yes" if p.active else "no",
            "confidence": f"{p.confidence:.3f}", "success_rate": f"{p.success_rate:.3f}",
            "samples": p.sample_size, "shared": ",".join(p.shared_with) if p.is_shared else "-"}


async def cmd_patterns(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus patterns: promoted patterns, best first."""

    async def body(store: SQLStore) -> int:
        found = await store.query_patterns(
            viewer=_viewer(args), memory_type=args.type, min_confidence=args.min_confidence,
            agent=args.agent, shared=True if args.shared else None, include_inactive=args.all)
        if args.json:
            print_json([pattern_json(p) for p in found])
            return 0
        print_table([_row(p) for p in found], ["pattern_id", "agent", "type", "version", "active",
                                                "confidence", "success_rate", "samples", "shared"])
        return 0

    return await with_store(settings, body)


async def cmd_pattern_show(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus pattern show ID."""

    async def body(store: SQLStore) -> int:
        p = await store.get_pattern(args.pattern_id, viewer=_viewer(args))
        if args.json:
            print_json(pattern_json(p))
            return 0
        for name, value in _row(p).items():
            print(f"{name:<13}{value}")
        print(f"{'successes':<13}{p.successes}")
        print(f"{'updated':<13}{clock(p.updated_at)}")
        print(f"{'data':<13}{json.dumps(p.data, sort_keys=True)}")
        newest = p.evidence[-1] if p.evidence else "-"
        print(f"{'evidence':<13}{len(p.evidence)} decision(s), newest {newest}")
        return 0

    return await with_store(settings, body)


async def cmd_pattern_history(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus pattern history ID: every version, oldest first."""

    async def body(store: SQLStore) -> int:
        history = [pattern_version_json(h)
                   for h in await store.pattern_history(args.pattern_id, viewer=_viewer(args))]
        if args.json:
            print_json(history)
            return 0
        print_table([{"version": h["version"], "at": clock_of(h["created_at"]), "reason": h["reason"],
                      "active": "yes" if h["pattern"]["active"] else "no",
                      "confidence": f"{h['pattern']['confidence']:.3f}",
                      "samples": h["pattern"]["sample_size"]} for h in history],
                    ["version", "at", "reason", "active", "confidence", "samples"])
        return 0

    return await with_store(settings, body)


async def cmd_pattern_rollback(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus pattern rollback ID VERSION."""

    async def body(store: SQLStore) -> int:
        restored = await store.rollback_pattern(args.pattern_id, args.version)
        if args.json:
            print_json(pattern_json(restored))
        else:
            print(f"pattern {restored.pattern_id} is now version {restored.version} "
                  f"(a copy of version {args.version})")
        return 0

    return await with_store(settings, body)


def _add_pattern_commands(sub: Any) -> None:
    """Register the pattern commands on the ``hivebus`` subparsers."""
    def viewer(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--as", dest="as_agent", metavar="AGENT",
                       help="see only what this agent may see (its own and shared patterns)")
        return p

    patterns = viewer(listing(sub.add_parser("patterns", help=COMMANDS["patterns"][1])))
    patterns.add_argument("--type", help="memory type, e.g. PATTERN")
    patterns.add_argument("--min-confidence", type=float, default=0.0)
    patterns.add_argument("--agent", help="only patterns learned from this agent")
    patterns.add_argument("--shared", action="store_true", help="only shared patterns")
    patterns.add_argument("--all", action="store_true", help="include demoted (inactive) ones")
    patterns.set_defaults(func=cmd_patterns)

    pattern = sub.add_parser("pattern", help=COMMANDS["pattern"][1]).add_subparsers(
        dest="pattern_command", required=True, parser_class=Parser)
    show = viewer(listing(pattern.add_parser("show", help="a pattern")))
    show.add_argument("pattern_id")
    show.set_defaults(func=cmd_pattern_show)
    history = viewer(listing(pattern.add_parser("history", help="every version of a pattern")))
    history.add_argument("pattern_id")
    history.set_defaults(func=cmd_pattern_history)
    rollback = listing(pattern.add_parser("rollback", help="restore an earlier version"))
    rollback.add_argument("pattern_id")
    rollback.add_argument("version", type=int)
    rollback.set_defaults(func=cmd_pattern_rollback)


async def cmd_procedures(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus procedures …: list, add, show, run, history, rollback."""
    from hivebus.domain.models import parse_json_object
    from hivebus.store.procedural import ProceduralMemory

    async def body(store: SQLStore) -> int:
        memory = ProceduralMemory(store)
        action = args.procedures_command
        result: Any
        if action == "list":
            result = await memory.procedures(args.category)  # each as `procedures show` prints it
            if not args.json:
                print_table([{"procedure_id": p["procedure_id"], "category": p["category"],
                              "version": p["version"], "steps": len(p["steps"]),
                              "successes": p["stats"]["successes"], "failures": p["stats"]["failures"]}
                             for p in result],
                            ["procedure_id", "category", "version", "steps", "successes", "failures"])
                return 0
        elif action == "add":
            try:
                steps = json.loads(args.steps)
            except json.JSONDecodeError as exc:
                from hivebus.domain.errors import InvalidInput

                raise InvalidInput(f"--steps is not valid JSON: {exc.msg}") from None
            params = parse_json_object(args.params, "--params") if args.params else {}
            version = await memory.store_procedure(args.procedure_id, steps, parameters=params,
                                                   category=args.category)
            result = {"procedure_id": args.procedure_id, "version": version}
        elif action == "show":
            result = await memory.get(args.procedure_id)
        elif action == "run":
            params = parse_json_object(args.params, "--params") if args.params else {}
            result = await memory.execute(args.procedure_id, params)
        elif action == "history":
            result = await memory.history(args.procedure_id)
        else:
            result = {"procedure_id": args.procedure_id,
                      "version": await memory.rollback(args.procedure_id, args.version)}
        print_json(result)
        return 0 if not (action == "run" and not result["success"]) else 1

    return await with_store(settings, body)


async def cmd_concepts(args: argparse.Namespace, settings: Settings) -> int:
    """hivebus concepts …: add, search, related."""
    from hivebus.domain.errors import InvalidInput
    from hivebus.store.procedural import ProceduralMemory

    async def body(store: SQLStore) -> int:
        memory = ProceduralMemory(store)
        if args.concepts_command == "add":
            relations = []
            for text in args.relate or []:
                relation, sep, target = text.partition(":")
                if not sep or not relation or not target:
                    raise InvalidInput(f"--relate {text!r}: use RELATION:TARGET, e.g. causes:pump")
                relations.append((relation, target))
            await memory.add_concept(args.name, category=args.category, content=args.content,
                                     relations=relations)
            print(f"concept {args.name!r} saved")
            return 0
        rows = (await memory.search_concepts(args.word, args.category)
                if args.concepts_command == "search" else await memory.related(args.name))
        if args.json:
            print_json(rows)
        elif args.concepts_command == "search":
            print_table(rows, ["name", "category", "content"])
        else:
            print_table(rows, ["source", "relation", "target"])
        return 0

    return await with_store(settings, body)


def _add_knowledge_commands(sub: Any) -> None:
    """Register ``hivebus procedures …`` and ``hivebus concepts …``."""
    procedures = sub.add_parser("procedures", help=COMMANDS["procedures"][1]).add_subparsers(
        dest="procedures_command", required=True, parser_class=Parser)
    plist = procedures.add_parser("list", help="stored procedures")
    plist.add_argument("--category")
    add = procedures.add_parser("add", help="store a procedure (a new version if it exists)")
    add.add_argument("procedure_id")
    add.add_argument("--steps", required=True,
                     help='JSON list, e.g. \'[{"step": "set", "params": {"capital": 1000}}]\'')
    add.add_argument("--params", help="default parameters, a JSON object")
    add.add_argument("--category", default="general")
    for name in ("show", "history"):
        p = procedures.add_parser(name, help=f"{name} a procedure")
        p.add_argument("procedure_id")
    run = procedures.add_parser("run", help="execute a procedure and record its stats")
    run.add_argument("procedure_id")
    run.add_argument("--params", help="call parameters, a JSON object")
    back = procedures.add_parser("rollback", help="make a kept version current again")
    back.add_argument("procedure_id")
    back.add_argument("version", type=int)
    for parser in procedures.choices.values():  # all but list print JSON; --json is taken by all
        listing(parser).set_defaults(func=cmd_procedures)

    concepts = sub.add_parser("concepts", help=COMMANDS["concepts"][1]).add_subparsers(
        dest="concepts_command", required=True, parser_class=Parser)
    cadd = concepts.add_parser("add", help="create or update a concept")
    cadd.add_argument("name")
    cadd.add_argument("--category", required=True)
    cadd.add_argument("--content", default="")
    cadd.add_argument("--relate", action="append", metavar="RELATION:TARGET")
    search = listing(concepts.add_parser("search", help="concepts by word and/or category"))
    search.add_argument("word", nargs="?")
    search.add_argument("--category")
    related = listing(concepts.add_parser("related", help="relations of a concept"))
    related.add_argument("name")
    for parser in concepts.choices.values():
        parser.set_defaults(func=cmd_concepts)


def add_commands(sub: Any) -> None:
    """Add this group's commands to the ``hivebus`` parser."""
    _add_pattern_commands(sub)
    _add_knowledge_commands(sub)
