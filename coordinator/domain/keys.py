"""Every Redis key hivebus writes is named here, and every id that goes into one is checked here.

The README's key table mirrors this module. All keys live under one namespace
prefix (``hive`` by default) so several deployments can share a Redis.
Validation of agent ids and signal types happens before a key is built, so no
input can forge a key (``*``, ``:``, ``{``, spaces and the like are refused).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from hivebus.domain.errors import InvalidId

AGENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SIGNAL_TYPE_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
SIGNAL_ID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
INSTANCE_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def _shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "…")


def check_agent_id(agent_id: str) -> str:
    """Return ``agent_id`` if valid; raise InvalidId otherwise.

    Valid: 1-64 characters of letters, digits, ``_ . -``, starting with a letter or digit.
    """
    if not isinstance(agent_id, str) or not AGENT_ID_RE.fullmatch(agent_id):
        raise InvalidId(
            f"invalid agent id {_shown(str(agent_id))}: use 1-64 letters, digits, '_', '.', '-'"
        )
    return agent_id


def check_signal_type(signal_type: str) -> str:
    """Return ``signal_type`` if it is UPPER_SNAKE_CASE (≤ 64 chars); raise InvalidId otherwise."""
    if not isinstance(signal_type, str) or not SIGNAL_TYPE_RE.fullmatch(signal_type):
        raise InvalidId(
            f"invalid signal type {_shown(str(signal_type))}: use UPPER_SNAKE_CASE, e.g. WHALE_ACTIVITY"
        )
    return signal_type


def check_signal_id(signal_id: str) -> str:
    """Return ``signal_id`` if it has the shape of a hivebus signal id; raise InvalidId otherwise."""
    if not isinstance(signal_id, str) or not SIGNAL_ID_RE.fullmatch(signal_id):
        raise InvalidId(f"invalid signal id {_shown(str(signal_id))}: expected 26 characters")
    return signal_id


def check_item_id(item_id: str) -> str:
    """Return ``item_id`` (a memory item, decision or snapshot id) if valid; raise InvalidId."""
    if not isinstance(item_id, str) or not SIGNAL_ID_RE.fullmatch(item_id):
        raise InvalidId(f"invalid id {_shown(str(item_id))}: expected 26 characters")
    return item_id


def check_instance_id(instance_id: str) -> str:
    """Return ``instance_id`` if valid; raise InvalidId otherwise."""
    if not INSTANCE_ID_RE.fullmatch(instance_id):
        raise InvalidId(f"invalid instance id {_shown(instance_id)}")
    return instance_id


LAYOUT_VERSION = "3"

# Kinds of key hivebus writes: an effect (``ctx.effect``) may not write any of them.
INTERNAL_KINDS = frozenset({
    "agents", "agent", "hb", "subs", "inbox", "pending", "done", "status", "retry", "dlq", "signal",
    "signals", "published", "state", "stm", "shared", "decision", "decisions", "decision-at",
    "outcomes", "decision-agents", "coordinator", "fence", "events", "layout", "stream",
    "late-outcomes", "set-aside",
})

# Slot groups of a Redis Cluster (see the README's key table). A tag that starts with ``~`` can
# never be an agent's (agent ids start with a letter or digit), so none shares an agent's name.
REGISTRY_TAG = "{~registry}"  # the agents set, subscriber sets, the agents that logged decisions
LEASE_TAG = "{~lease}"  # the coordinator's lease and fencing epoch, changed together
SIGNAL_SHARDS = 16  # the signal log, signal records and published counters, spread by signal id


def tag(agent_id: str) -> str:
    """The hash tag of an agent: every key of its own carries it, so they share one cluster slot."""
    return "{" + check_agent_id(agent_id) + "}"


def signal_shard(signal_id: str) -> int:
    """The shard of a signal's record and log entry: CRC-32 of its id modulo 16 (clients in other
    languages compute the same: zlib's crc32 of the id's ASCII bytes)."""
    return zlib.crc32(check_signal_id(signal_id).encode()) % SIGNAL_SHARDS


def shard_tag(shard: int) -> str:
    """The hash tag of one signal shard: ``{~s00}`` … ``{~s15}``."""
    if not 0 <= shard < SIGNAL_SHARDS:
        raise ValueError(f"no signal shard {shard}")
    return f"{{~s{shard:02d}}}"


@dataclass(frozen=True, slots=True)
class Keys:
    """Builds key names for one namespace. Every method validates the ids it is given.

    Keys that belong to one agent carry its hash tag ``{<agent>}``, so every per-agent operation
    (read, settle, retry, dead letter, state, memory) touches keys of one Redis Cluster slot.
    """

    namespace: str = "hive"

    @property
    def prefix(self) -> str:
        """The prefix every key starts with, e.g. ``hive:``."""
        return f"{self.namespace}:"

    def layout(self) -> str:
        """STRING: the version of the key layout this namespace's data is written in."""
        return f"{self.namespace}:layout"

    def is_internal(self, key: str) -> bool:
        """Whether ``key`` is one of hivebus's own keys (``<ns>:<kind>…`` with a known kind)."""
        if not key.startswith(self.prefix):
            return False
        kind = key[len(self.prefix):].split(":", 1)[0]
        return kind in INTERNAL_KINDS

    # --- registry -------------------------------------------------------------
    def agents(self) -> str:
        """SET of every agent id that has ever registered (the registry's slot)."""
        return f"{self.namespace}:agents:{REGISTRY_TAG}"

    def agent(self, agent_id: str) -> str:
        """HASH describing one agent: type, subscriptions, status, counters."""
        return f"{self.namespace}:agent:{tag(agent_id)}"

    def instances(self, agent_id: str) -> str:
        """HASH instance id -> JSON (host, pid, started_at) of an agent's running replicas."""
        return f"{self.namespace}:agent:{tag(agent_id)}:instances"

    def heartbeat(self, agent_id: str, instance_id: str) -> str:
        """STRING with a TTL, refreshed by one running replica while it is alive."""
        return f"{self.namespace}:hb:{tag(agent_id)}:{check_instance_id(instance_id)}"

    def subscribers(self, signal_type: str) -> str:
        """SET of agent ids subscribed to a signal type (receivers of untargeted signals; the
        registry's slot)."""
        return f"{self.namespace}:subs:{REGISTRY_TAG}:{check_signal_type(signal_type)}"

    # --- bus --------------------------------------------------------------------
    def inbox(self, agent_id: str) -> str:
        """STREAM of signals delivered to one agent; its consumer group is named after the agent."""
        return f"{self.namespace}:inbox:{tag(agent_id)}"

    def pending(self, agent_id: str) -> str:
        """HASH signal id -> ``<entry> <attempts> [last error]``: the agent's unsettled signals.

        Its length is the agent's backlog (publishing refuses past ``HIVEBUS_INBOX_MAX``)."""
        return f"{self.namespace}:pending:{tag(agent_id)}"

    def done(self, agent_id: str) -> str:
        """ZSET signal id -> until when (ms) it is remembered: the processed-ledger of settled signals."""
        return f"{self.namespace}:done:{tag(agent_id)}"

    def status(self, agent_id: str) -> str:
        """HASH signal id -> ``<DEAD|EXPIRED> <entry> <attempts> <reason>``: how unprocessed ones ended."""
        return f"{self.namespace}:status:{tag(agent_id)}"

    def retries(self, agent_id: str) -> str:
        """ZSET inbox entry id -> time its failed signal is due for another attempt."""
        return f"{self.namespace}:retry:{tag(agent_id)}"

    def dead_letters(self, agent_id: str) -> str:
        """STREAM of signals an agent could not process, with the reason."""
        return f"{self.namespace}:dlq:{tag(agent_id)}"

    def signal(self, signal_id: str) -> str:
        """STRING (JSON) of one signal: type, source, target -> inbox entry; expires. In its
        shard's slot (:func:`signal_shard`)."""
        return f"{self.namespace}:signal:{shard_tag(signal_shard(signal_id))}:{signal_id}"

    def signal_log(self, shard: int) -> str:
        """STREAM of the published signals of one shard, newest last (``hivebus signals`` merges
        the shards by signal id)."""
        return f"{self.namespace}:signals:{shard_tag(shard)}"

    def signal_logs(self) -> list[str]:
        """Every stream of the signal log, shard by shard (what trimming and checking walk)."""
        return [self.signal_log(shard) for shard in range(SIGNAL_SHARDS)]

    def published(self, shard: int) -> str:
        """HASH source -> how many signals it published (of one shard; an agent's ``published``
        counter is the sum over the shards)."""
        return f"{self.namespace}:published:{shard_tag(shard)}"

    def effect_key(self, agent_id: str, name: str) -> str:
        """A key of the agent's own for handler effects (``ctx.key``): in the agent's slot."""
        if not name or len(name) > 200 or not name.isprintable():
            raise InvalidId(f"invalid effect key name {_shown(name)}: 1-200 printable characters")
        return f"{self.namespace}:fx:{tag(agent_id)}:{name}"

    # --- agent state ------------------------------------------------------------------
    def state(self, agent_id: str) -> str:
        """HASH of an agent's CURRENT state, with a monotonic ``version``."""
        return f"{self.namespace}:state:{tag(agent_id)}"

    def snapshots(self, agent_id: str) -> str:
        """LIST of JSON snapshots (CHECKPOINT / BACKUP / ROLLBACK), newest first, bounded."""
        return f"{self.namespace}:state:{tag(agent_id)}:snapshots"

    def config_history(self, agent_id: str) -> str:
        """LIST of JSON configuration changes (from / to / reason), newest first, bounded."""
        return f"{self.namespace}:state:{tag(agent_id)}:config"

    # --- short-term memory ----------------------------------------------------------------
    def memory_item(self, agent_id: str, item_id: str) -> str:
        """HASH of one private memory item; expires with its TTL."""
        return f"{self.memory_item_prefix(agent_id)}{check_item_id(item_id)}"

    def memory_item_prefix(self, agent_id: str) -> str:
        """Prefix of one agent's private memory item keys."""
        return f"{self.namespace}:stm:{tag(agent_id)}:"

    def memory_index(self, agent_id: str) -> str:
        """ZSET item id -> timestamp of an agent's private memory items."""
        return f"{self.namespace}:stm:{tag(agent_id)}"

    def shared_scope(self, viewer: str) -> str:
        """Prefix of the indexes of the items shared with ``viewer`` (an agent id), or with
        everyone (``*``): ``hive:shared:{<agent>}`` / ``hive:shared:{*}``, in that tag's slot."""
        label = "{*}" if viewer == "*" else tag(viewer)
        return f"{self.namespace}:shared:{label}"

    def shared_item_prefix(self, viewer: str) -> str:
        """Prefix of the item hashes of one shared scope: each scope keeps its own copy of an
        item, in its slot, so storing and purging it touch one slot."""
        return f"{self.shared_scope(viewer)}:item:"

    def shared_item(self, viewer: str, item_id: str) -> str:
        """HASH of one shared memory item, the copy of the scope of ``viewer`` (agent id or ``*``)."""
        return f"{self.shared_item_prefix(viewer)}{check_item_id(item_id)}"

    # --- decisions and events ------------------------------------------------------------------
    def decision(self, agent_id: str, decision_id: str) -> str:
        """HASH of one decision record with its outcome once logged (in its agent's slot)."""
        return f"{self.namespace}:decision:{tag(agent_id)}:{check_item_id(decision_id)}"

    def decision_signals(self, agent_id: str, decision_id: str) -> str:
        """SET of ids of the signals a decision caused (in its agent's slot)."""
        return f"{self.decision(agent_id, decision_id)}:signals"

    def decision_at(self, decision_id: str) -> str:
        """STRING: the id of the agent whose slot holds a decision, so that it is found from its
        id alone; written before the decision, deleted once the decision is archived (before
        the decision leaves Redis)."""
        return f"{self.namespace}:decision-at:{check_item_id(decision_id)}"

    def decisions(self, agent_id: str) -> str:
        """ZSET decision id -> timestamp of an agent's decisions."""
        return f"{self.namespace}:decisions:{tag(agent_id)}"

    def decision_index(self, agent_id: str, decision_type: str | None = None,
                       result: str | None = None) -> str:
        """ZSET decision id -> timestamp of an agent's decisions of ``decision_type`` (None: any)
        whose ``result`` is ``pending``, ``ok`` or ``failed`` (None: any)."""
        if result not in (None, "pending", "ok", "failed"):
            raise ValueError(f"unknown decision result {result!r}")
        key = f"{self.namespace}:decisions:{tag(agent_id)}"
        if decision_type is not None:
            key += f":type:{check_signal_type(decision_type)}"
        return f"{key}:{result}" if result else key

    def outcomes(self, agent_id: str) -> str:
        """ZSET decision id -> outcome time: an agent's outcomes the coordinator has not learned
        from yet (it walks the agents that logged decisions)."""
        return f"{self.namespace}:outcomes:{tag(agent_id)}"

    def late_outcomes(self) -> str:
        """HASH decision id -> outcome JSON: outcomes of decisions no longer in Redis (archived),
        for the coordinator to record in the archive and learn from."""
        return f"{self.namespace}:late-outcomes"

    def decision_agents(self) -> str:
        """SET of agent ids that have logged decisions (the coordinator's archival walks it; the
        registry's slot)."""
        return f"{self.namespace}:decision-agents:{REGISTRY_TAG}"

    def fence(self, agent_id: str) -> str:
        """STRING: the highest coordinator epoch that deleted archived decisions in this agent's
        slot (an older one is refused there)."""
        return f"{self.namespace}:fence:{tag(agent_id)}"

    def lease(self) -> str:
        """STRING ``<instance>|<epoch>`` with a TTL: the coordinator that leads now (one slot with
        the epoch)."""
        return f"{self.namespace}:coordinator:{LEASE_TAG}:lease"

    def epoch(self) -> str:
        """STRING counter: the fencing epoch, bumped each time leadership changes hands."""
        return f"{self.namespace}:coordinator:{LEASE_TAG}:epoch"

    def events(self, agent_id: str, event_type: str | None = None) -> str:
        """STREAM of an agent's episodic events (type, payload); of one type when given (the
        same entries, with the same ids, in a stream of their own)."""
        key = f"{self.namespace}:events:{tag(agent_id)}"
        return f"{key}:type:{check_signal_type(event_type)}" if event_type is not None else key
