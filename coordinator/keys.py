"""Every Redis key hivebus writes is named here, and every id that goes into one is checked here.

The README's key table mirrors this module. All keys live under one namespace
prefix (``hive`` by default) so several deployments can share a Redis.
Validation of agent ids and signal types happens before a key is built, so no
input can forge a key (``*``, ``:``, ``{``, spaces and the like are refused).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from coordinator.errors import InvalidId

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
    if not isinstance(agent_id, str) or not AGENT_ID_RE.match(agent_id):
        raise InvalidId(
            f"invalid agent id {_shown(str(agent_id))}: use 1-64 letters, digits, '_', '.', '-'"
        )
    return agent_id


def check_signal_type(signal_type: str) -> str:
    """Return ``signal_type`` if it is UPPER_SNAKE_CASE (≤ 64 chars); raise InvalidId otherwise."""
    if not isinstance(signal_type, str) or not SIGNAL_TYPE_RE.match(signal_type):
        raise InvalidId(
            f"invalid signal type {_shown(str(signal_type))}: use UPPER_SNAKE_CASE, e.g. WHALE_ACTIVITY"
        )
    return signal_type


def check_signal_id(signal_id: str) -> str:
    """Return ``signal_id`` if it has the shape of a hivebus signal id; raise InvalidId otherwise."""
    if not isinstance(signal_id, str) or not SIGNAL_ID_RE.match(signal_id):
        raise InvalidId(f"invalid signal id {_shown(str(signal_id))}: expected 26 characters")
    return signal_id


def check_item_id(item_id: str) -> str:
    """Return ``item_id`` (a memory item, decision or snapshot id) if valid; raise InvalidId."""
    if not isinstance(item_id, str) or not SIGNAL_ID_RE.match(item_id):
        raise InvalidId(f"invalid id {_shown(str(item_id))}: expected 26 characters")
    return item_id


def check_instance_id(instance_id: str) -> str:
    """Return ``instance_id`` if valid; raise InvalidId otherwise."""
    if not INSTANCE_ID_RE.match(instance_id):
        raise InvalidId(f"invalid instance id {_shown(instance_id)}")
    return instance_id


@dataclass(frozen=True, slots=True)
class Keys:
    """Builds key names for one namespace. Every method validates the ids it is given."""

    namespace: str = "hive"

    @property
    def prefix(self) -> str:
        """The prefix every key starts with, e.g. ``hive:``."""
        return f"{self.namespace}:"

    # --- registry -------------------------------------------------------------
    def agents(self) -> str:
        """SET of every agent id that has ever registered."""
        return f"{self.namespace}:agents"

    def agent(self, agent_id: str) -> str:
        """HASH describing one agent: type, subscriptions, status, counters."""
        return f"{self.agent_prefix()}{check_agent_id(agent_id)}"

    def agent_prefix(self) -> str:
        """Prefix of agent hash keys, for the publish script (which counts what an agent published)."""
        return f"{self.namespace}:agent:"

    def instances(self, agent_id: str) -> str:
        """HASH instance id -> JSON (host, pid, started_at) of an agent's running replicas."""
        return f"{self.namespace}:agent:{check_agent_id(agent_id)}:instances"

    def heartbeat(self, agent_id: str, instance_id: str) -> str:
        """STRING with a TTL, refreshed by one running replica while it is alive."""
        return f"{self.namespace}:hb:{check_agent_id(agent_id)}:{check_instance_id(instance_id)}"

    def subscribers(self, signal_type: str) -> str:
        """SET of agent ids subscribed to a signal type (receivers of untargeted signals)."""
        return f"{self.subscribers_prefix()}{check_signal_type(signal_type)}"

    def subscribers_prefix(self) -> str:
        """Prefix of subscriber set keys, for the publish script (untargeted signals)."""
        return f"{self.namespace}:subs:"

    # --- bus --------------------------------------------------------------------
    def inbox(self, agent_id: str) -> str:
        """STREAM of signals delivered to one agent; its consumer group is named after the agent."""
        return f"{self.inbox_prefix()}{check_agent_id(agent_id)}"

    def signal(self, signal_id: str) -> str:
        """HASH of one signal: its fields plus status / entry / error per target; expires."""
        return f"{self.signal_prefix()}{check_signal_id(signal_id)}"

    def retries(self, agent_id: str) -> str:
        """ZSET inbox entry id -> time its failed signal is due for another attempt."""
        return f"{self.namespace}:retry:{check_agent_id(agent_id)}"

    def ledger(self, agent_id: str, signal_id: str) -> str:
        """STRING with a TTL: ``signal_id`` was processed by ``agent_id`` (its effects applied)."""
        return f"{self.agent_ledger_prefix(agent_id)}{check_signal_id(signal_id)}"

    def agent_ledger_prefix(self, agent_id: str) -> str:
        """Prefix of one agent's processed-ledger keys, for the settle script."""
        return f"{self.ledger_prefix()}{check_agent_id(agent_id)}:"

    def signal_log(self) -> str:
        """STREAM of every published signal, newest last (``hivebus signals`` reads it)."""
        return f"{self.namespace}:signals"

    def dead_letters(self, agent_id: str) -> str:
        """STREAM of signals an agent could not process, with the reason."""
        return f"{self.namespace}:dlq:{check_agent_id(agent_id)}"

    # --- agent state ------------------------------------------------------------------
    def state(self, agent_id: str) -> str:
        """HASH of an agent's CURRENT state, with a monotonic ``version``."""
        return f"{self.namespace}:state:{check_agent_id(agent_id)}"

    def snapshots(self, agent_id: str) -> str:
        """LIST of JSON snapshots (CHECKPOINT / BACKUP / ROLLBACK), newest first, bounded."""
        return f"{self.namespace}:state:{check_agent_id(agent_id)}:snapshots"

    def config_history(self, agent_id: str) -> str:
        """LIST of JSON configuration changes (from / to / reason), newest first, bounded."""
        return f"{self.namespace}:state:{check_agent_id(agent_id)}:config"

    # --- short-term memory ----------------------------------------------------------------
    def memory_item(self, agent_id: str, item_id: str) -> str:
        """HASH of one private memory item; expires with its TTL."""
        return f"{self.memory_item_prefix(agent_id)}{check_item_id(item_id)}"

    def memory_item_prefix(self, agent_id: str) -> str:
        """Prefix of one agent's private memory item keys, for the script that reads them."""
        return f"{self.namespace}:stm:{check_agent_id(agent_id)}:"

    def memory_index(self, agent_id: str) -> str:
        """ZSET item id -> timestamp of an agent's private memory items."""
        return f"{self.namespace}:stm:{check_agent_id(agent_id)}"

    def shared_item(self, item_id: str) -> str:
        """HASH of one shared memory item (``visible_to`` says who may read it); expires."""
        return f"{self.shared_item_prefix()}{check_item_id(item_id)}"

    def shared_item_prefix(self) -> str:
        """Prefix of shared memory item keys, for the script that reads them."""
        return f"{self.namespace}:shared:"

    def shared_index(self) -> str:
        """ZSET item id -> timestamp of shared memory items."""
        return f"{self.namespace}:shared"

    # --- decisions and events ------------------------------------------------------------------
    def decision(self, decision_id: str) -> str:
        """HASH of one decision record with its outcome once logged."""
        return f"{self.namespace}:decision:{check_item_id(decision_id)}"

    def decision_signals(self, decision_id: str) -> str:
        """SET of ids of the signals a decision caused."""
        return f"{self.namespace}:decision:{check_item_id(decision_id)}:signals"

    def decisions(self, agent_id: str) -> str:
        """ZSET decision id -> timestamp of an agent's decisions."""
        return f"{self.namespace}:decisions:{check_agent_id(agent_id)}"

    def pending_decisions(self, agent_id: str) -> str:
        """ZSET decision id -> timestamp of an agent's decisions still awaiting an outcome."""
        return f"{self.namespace}:decisions:{check_agent_id(agent_id)}:pending"

    def outcomes(self) -> str:
        """ZSET decision id -> outcome time: outcomes the coordinator has not learned from yet."""
        return f"{self.namespace}:outcomes"

    def decision_agents(self) -> str:
        """SET of agent ids that have logged decisions (the coordinator's archival walks it)."""
        return f"{self.namespace}:decision-agents"

    def lease(self) -> str:
        """STRING ``<instance>|<epoch>`` with a TTL: the coordinator that leads now."""
        return f"{self.namespace}:coordinator:lease"

    def epoch(self) -> str:
        """STRING counter: the fencing epoch, bumped each time leadership changes hands."""
        return f"{self.namespace}:coordinator:epoch"

    def events(self, agent_id: str) -> str:
        """STREAM of an agent's episodic events (type, payload)."""
        return f"{self.namespace}:events:{check_agent_id(agent_id)}"

    def signal_prefix(self) -> str:
        """Prefix of signal hash keys (``<prefix><signal id>``), for the publish and settle scripts."""
        return f"{self.namespace}:signal:"

    def ledger_prefix(self) -> str:
        """Prefix of processed-ledger keys (``<prefix><agent>:<signal id>``), for the publish script."""
        return f"{self.namespace}:done:"

    def inbox_prefix(self) -> str:
        """Prefix of inbox stream keys, for the publish script."""
        return f"{self.namespace}:stream:"
