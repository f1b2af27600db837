"""Issue 13, do-item 4: the layering of the package holds, and nothing imports in a cycle.

Read from the source (module-level imports; those under ``if TYPE_CHECKING`` left out):
``domain`` imports nothing else of hivebus; ``store`` and ``infra`` only ``domain`` and the
settings; ``bus`` and ``memory`` sit on those; ``service`` on bus, memory and store; the CLI and
the desk at the top; nothing in the core imports the CLI or the desk."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from tests.conftest import REPO

ALLOWED = {
    "domain": {"domain"},
    "settings": {"domain"},
    "store": {"store", "domain", "settings"},
    "infra": {"infra", "domain", "settings"},
    "bus": {"bus", "infra", "domain", "settings"},
    "memory": {"memory", "store", "infra", "domain", "settings"},
    "service": {"service", "bus", "memory", "store", "infra", "domain", "settings"},
}
TOP = {"cli", "agents.desk"}  # nothing below them imports them


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    parts = ["hivebus", *parts[1:]] if parts[0] == "coordinator" else ["hivebus", "agents", *parts[1:]]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[1:2] == ["agents"]:
        return "agents.desk" if parts[2:3] == ["desk"] else "agents"
    return parts[1] if len(parts) > 1 else "top"


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for folder in ("coordinator", "agents")
               for p in (REPO / folder).rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, ast.ImportFrom) and sub.module and sub.module.startswith("hivebus"):
                    targets = [f"{sub.module}.{a.name}" for a in sub.names] + [sub.module]
                    graph[name].update(t for t in targets if t in modules and t != name)
                elif isinstance(sub, ast.Import):
                    graph[name].update(a.name for a in sub.names if a.name in modules)
    return graph


def test_each_layer_imports_only_the_layers_below_it() -> None:
    wrong = sorted(f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
                   if (layer(a) in ALLOWED and layer(b) not in ALLOWED[layer(a)] | {"top"})
                   or (layer(a) not in TOP and layer(b) in TOP and a != "hivebus.__main__"))
    assert wrong == []


def test_no_module_imports_in_a_cycle() -> None:
    graph, state, cycles = import_graph(), {}, []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def loaded_after(code: str) -> set[str]:
    """The modules a fresh Python has loaded after running ``code``."""
    import subprocess
    import sys

    shown = subprocess.run([sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
                           capture_output=True, text=True, check=True, cwd=REPO)
    return set(shown.stdout.split())


def test_importing_hivebus_loads_neither_redis_nor_pydantic() -> None:
    loaded = loaded_after("import hivebus")
    assert not {"redis", "pydantic", "structlog", "anyio"} & loaded


def test_the_agents_command_loads_no_model_machinery() -> None:
    """Start-up (issue 13): ``hivebus agents`` builds neither a pydantic model nor settings
    through pydantic-settings; those took it from 1.03x to 1.4-1.9x the baseline's start-up."""
    loaded = loaded_after("from hivebus.cli.main import build_parser\n"
                          "args = build_parser('agents').parse_args(['agents'])\n"
                          "from hivebus.settings import load_settings\n"
                          "from hivebus.infra.logs import configure_logging\n"
                          "configure_logging(load_settings())")
    assert "hivebus.cli.agents" in loaded
    assert not {"pydantic.main", "pydantic_settings", "hivebus.domain.models", "hivebus.bus.bus",
                "anyio._backends._asyncio"} & loaded
