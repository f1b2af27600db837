"""Issue 13, all Lua in one place: each script is a documented ``.lua`` file of
``hivebus.infra.lua``, sent to Redis without its comment header."""

from __future__ import annotations

from importlib.resources import files

from hivebus.infra import lua
from tests.conftest import REPO

WITH_HELPERS = {"PUBLISH", "SETTLE", "EXPIRE", "REPLAY"}


def lua_files() -> dict[str, str]:
    return {entry.name.removesuffix(".lua"): entry.read_text(encoding="utf-8")
            for entry in files(lua).iterdir() if entry.name.endswith(".lua")}


def header(text: str) -> str:
    """The comment lines a file starts with."""
    lines = text.splitlines(keepends=True)
    count = next((n for n, line in enumerate(lines) if not line.startswith("--")), len(lines))
    return "".join(lines[:count])


def test_each_script_is_a_lua_file_of_its_name_that_documents_its_keys_and_argv() -> None:
    """Every exported script has a ``<name>.lua`` (and no file is left unused), each starting
    with comment lines that give its KEYS and ARGV."""
    found = lua_files()
    assert sorted(found) == sorted(["helpers", *(name.lower() for name in lua.__all__)])
    assert header(found["helpers"])
    for name in lua.__all__:
        documented = header(found[name.lower()])
        assert "KEYS:" in documented and "ARGV:" in documented, name


def test_a_script_is_its_file_after_the_comment_lines_with_the_helpers_in_front_where_used() -> None:
    """What Redis receives is the file minus its leading ``--`` lines, helpers.lua's script first
    for the scripts that use its functions."""
    found = lua_files()
    helpers = found["helpers"].removeprefix(header(found["helpers"]))
    assert helpers.startswith("\nlocal function")
    for name in lua.__all__:
        script, text = getattr(lua, name), found[name.lower()]
        assert script.startswith(helpers) == (name in WITH_HELPERS), name
        own = script.removeprefix(helpers) if name in WITH_HELPERS else script
        assert text.endswith(own) and own.startswith("\n") and own.strip(), name
        assert all(line.startswith("--") for line in text[:-len(own)].splitlines()), name


def test_no_python_module_holds_lua() -> None:
    """Lua lives in .lua files only."""
    holding = {str(path.relative_to(REPO)) for folder in ("coordinator", "agents")
               for path in (REPO / folder).rglob("*.py") if "redis.call(" in path.read_text()}
    assert holding == set()
