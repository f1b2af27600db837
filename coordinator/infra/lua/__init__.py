"""The Lua scripts hivebus runs in Redis: one ``.lua`` file each in this package, read once at import.

Callers register a script once
(``redis.register_script(PUBLISH)``) and call it by its SHA1.

Each file starts with a block of ``--`` comment lines: what the script does, who calls it, its
KEYS, ARGV and reply. The script is the rest of the file, byte for byte (it starts with the
empty line under the block): the block is left out of what Redis receives, so the comments
change neither a script's SHA1 nor the line numbers its errors name. ``helpers.lua`` holds
functions several scripts share; PUBLISH, SETTLE, EXPIRE and REPLAY are that file's script put
in front of their own (a client in another language loads them the same way).

The delivery scripts (publish, settle, claim_due, renew, expire, replay): every script declares
every key it touches in KEYS (nothing is built from a prefix inside a script), and each
per-agent script touches only keys with that agent's hash tag, so it runs on one Redis Cluster
slot. Each script does all of its reads and checks first and writes only after them: a script
that fails (a key of the wrong type, an unknown target, a full inbox) fails before its first
write, so it leaves nothing behind. Once a script has written, nothing it calls can fail: the
commands that could (counters edited by hand into text) are called with ``redis.pcall`` and
repaired.

Per agent: ``pending`` (HASH signal id -> ``<entry> <attempts> [error]``) holds what it has
not settled, ``done`` (ZSET signal id -> remember-until ms) what it settled, ``status`` (HASH)
why an unprocessed signal ended (DEAD / EXPIRED). A signal id is in at most one of
``pending`` and ``done``; the delivery scripts move it from one to the other atomically.
"""

from __future__ import annotations

from importlib.resources import files

__all__ = [
    "ACQUIRE",
    "CLAIM_DUE",
    "DELETE_ARCHIVED",
    "EXPIRE",
    "LOG_OUTCOME",
    "PUBLISH",
    "RECORD",
    "RELEASE",
    "REMEMBER",
    "RENEW",
    "REPLAY",
    "ROLLBACK",
    "SAVE",
    "SETTLE",
    "SNAPSHOT",
]


def _script(name: str) -> str:
    """The script in ``<name>.lua``: the file without its leading ``--`` comment lines."""
    text = (files(__name__) / f"{name}.lua").read_text(encoding="utf-8")
    start = 0
    while text.startswith("--", start):
        start = text.index("\n", start) + 1
    return text[start:]


_HELPERS = _script("helpers")

# the delivery core (hivebus.bus, hivebus.service.retention, hivebus.agents.liveness)
PUBLISH = _HELPERS + _script("publish")
SETTLE = _HELPERS + _script("settle")
CLAIM_DUE = _script("claim_due")
RENEW = _script("renew")
EXPIRE = _HELPERS + _script("expire")
REPLAY = _HELPERS + _script("replay")

# leadership (hivebus.service.lease) and consolidation (hivebus.service.consolidation)
ACQUIRE = _script("acquire")
RELEASE = _script("release")
DELETE_ARCHIVED = _script("delete_archived")

# memory: agent state (hivebus.memory.state), episodic events, short-term memory
SAVE = _script("save")
SNAPSHOT = _script("snapshot")
ROLLBACK = _script("rollback")
RECORD = _script("record")
REMEMBER = _script("remember")
LOG_OUTCOME = _script("log_outcome")  # the decision log (hivebus.memory.decisions)
