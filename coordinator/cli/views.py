"""The JSON shape of each object the CLI prints: one function per object, used by every command
that prints it, so a listing's items and the matching ``show --json`` name things alike.

The rules every shape keeps:

* an object's id is ``<object>_id`` (``agent_id``, ``signal_id``, ``decision_id``,
  ``pattern_id``, ``snapshot_id``, ``procedure_id``, a set-aside ``record_id``); an inbox
  entry's id is ``entry_id``, a dead letter's ``dlq_entry``;
* a type is ``<object>_type`` (``agent_type``, ``signal_type``, ``decision_type``,
  ``state_type``, ``memory_type``);
* a time is Unix seconds, a JSON number (null when not known); a stored time edited by hand
  into something that is not a number is shown as its text rather than dropped;
* a listing's item has the keys of the matching ``show --json``; where it has fewer (``signals``,
  whose log keeps less than the signal) the subset is named in the function's docstring.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from hivebus.domain.errors import InvalidInput
from hivebus.domain.ids import entry_order, printable

if TYPE_CHECKING:  # the models load only for the views that build them: `hivebus agents` stays fast
    from collections.abc import Iterable, Mapping, Sequence

    from hivebus.bus.bus import TargetStatus
    from hivebus.bus.registry import AgentInfo
    from hivebus.domain.decision import DecisionOutcome, DecisionRecord
    from hivebus.domain.models import Signal
    from hivebus.memory.state import AgentState
    from hivebus.memory.stm import MemoryItem
    from hivebus.store.base import MemoryPattern


def seconds(value: object) -> float | str | None:
    """A stored time as Unix seconds; None when missing; text that is not a number as it is."""
    if value is None or value == "":
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return printable(value)
    return number if math.isfinite(number) else printable(value)


def entry_seconds(entry_id: str | None) -> float | None:
    """The time a stream entry was written, from its id ``<ms>-<seq>``; None for no entry."""
    if not entry_id:
        return None
    try:
        return entry_order(entry_id)[0] / 1000
    except ValueError:
        return None


def _whole(value: object) -> int | str | None:
    """A stored count as an int; None when missing; text that is not a whole number as it is."""
    if value is None or value == "":
        return None
    text = str(value)
    return int(text) if text.isdigit() else printable(text)


# --- agents -----------------------------------------------------------------------------------


def agent_json(info: AgentInfo) -> dict[str, Any]:
    """An agent: ``agents``, ``agent show``, ``agent remove``."""
    return {
        "agent_id": info.agent_id,
        "agent_type": info.agent_type,
        "subscriptions": list(info.subscriptions),
        "version": info.version,
        "status": info.status,
        "alive": info.alive,
        "registered_at": info.registered_at or None,
        "last_seen": info.last_seen,
        "counters": dict(info.counters),
        "instances": [{"instance_id": i.instance_id, "host": i.host, "pid": i.pid,
                       "started_at": i.started_at, "alive": i.alive} for i in info.instances],
    }


# --- signals ----------------------------------------------------------------------------------


def signal_json(signal: Signal, targets: Sequence[TargetStatus]) -> dict[str, Any]:
    """A signal with its status per target: ``signal show``, ``publish`` (each target as the
    publish left it: PENDING in its inbox) and the signals of ``decision show``.

    ``delivered_to`` lists the targets it reached; ``published_at`` is when the bus wrote it
    into their inboxes (the earliest inbox entry's time; null when it reached nobody)."""
    return {
        **signal.model_dump(mode="json"),
        "delivered_to": [t.agent_id for t in targets],
        "published_at": min((s for t in targets if (s := entry_seconds(t.entry_id)) is not None),
                            default=None),
        "status": {t.agent_id: {"status": t.status.value, "entry_id": t.entry_id, "error": t.error,
                                "deliveries": t.deliveries, "consumer": t.consumer,
                                "attempts": t.attempts}
                   for t in targets},
    }


SIGNAL_LOG_KEYS = ("signal_id", "signal_type", "source_agent", "delivered_to", "published_at")


def signal_log_json(row: Mapping[str, str]) -> dict[str, Any]:
    """A signal as the signal log keeps it (``signals``): the subset ``SIGNAL_LOG_KEYS`` of
    :func:`signal_json`, named and valued alike (``published_at`` is the log entry's time)."""
    return {"signal_id": row.get("id"), "signal_type": row.get("type"),
            "source_agent": row.get("source"),
            "delivered_to": [t for t in (row.get("to") or "").split(",") if t],
            "published_at": entry_seconds(row["entry"])}


# --- dead letters and set-aside records --------------------------------------------------------


def dead_letter_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A dead letter (``dlq list``, ``dlq show``) from its stream fields: the original inbox
    entry's fields under ``original`` (as written, not decoded: it may be what failed)."""
    original = row.get("original")
    if isinstance(original, str):
        try:
            original = json.loads(original)
        except ValueError:
            original = None
    return {
        "dlq_entry": row.get("dlq_entry"),
        "agent_id": row.get("agent"),
        "signal_id": row.get("signal") or None,
        "entry_id": row.get("entry"),
        "status": row.get("status"),
        "reason": row.get("reason", ""),
        "attempts": _whole(row.get("attempts")),
        "failed_at": seconds(row.get("failed_at")),
        "original": original if isinstance(original, dict) else {},
    }


def set_aside_json(row: Mapping[str, str]) -> dict[str, Any]:
    """A set-aside record (``set-aside list``): every record has every key, null where it does
    not apply (``moved_to`` for a key moved aside, ``value`` for a hash field, ``score`` for a
    sorted-set member)."""
    return {"record_id": row.get("id"), "key": row.get("key"), "member": row.get("member") or None,
            "reason": row.get("reason", ""), "at": seconds(row.get("at")),
            "moved_to": row.get("moved_to"), "value": row.get("value"),
            "score": seconds(row.get("score"))}


# --- state ------------------------------------------------------------------------------------


def state_json(state: AgentState) -> dict[str, Any]:
    """An agent's state: ``state show``, ``state rollback`` and each snapshot's ``state``."""
    return state.model_dump(mode="json")


def snapshot_json(item: Mapping[str, Any]) -> dict[str, Any]:
    """A kept snapshot (``state history``), its ``state`` shaped as ``state show`` prints it.

    A snapshot edited by hand into nonsense stays ``{"unreadable": text}``; one whose state
    cannot be read keeps its other fields, with ``{"unreadable": text}`` as its state."""
    if "unreadable" in item:
        return dict(item)
    from hivebus.memory.state import AgentState

    raw_state = item["state"]
    try:
        fields = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in raw_state.items()}
        state: dict[str, Any] = state_json(AgentState.from_fields(fields, str(item["state_type"])))
    except (InvalidInput, ValueError):
        state = {"unreadable": printable(json.dumps(raw_state, sort_keys=True))[:200]}
    return {"snapshot_id": item["snapshot_id"], "state_type": item["state_type"],
            "created_at": seconds(item["created_at"]), "label": item.get("label", ""),
            "rolled_back_to": item.get("rolled_back_to"), "state": state}


def config_change_json(item: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration change (``state history``): from, to, reason, at, version."""
    if "unreadable" in item:
        return dict(item)
    return {"version": item["version"], "at": seconds(item["at"]), "reason": item["reason"],
            "from": item["from"], "to": item["to"]}


# --- memory, decisions, patterns -----------------------------------------------------------------


def memory_item_json(item: MemoryItem, relevance: float | None = None) -> dict[str, Any]:
    """A short-term memory item; ``memory recall`` adds its ``relevance`` to the query."""
    shaped = item.model_dump(mode="json")
    return shaped if relevance is None else {"relevance": round(relevance, 6), **shaped}


def outcome_json(outcome: DecisionOutcome) -> dict[str, Any]:
    """A decision's outcome: ``decision outcome`` and each decision's ``outcome``."""
    return outcome.model_dump(mode="json")


def decision_json(decision: DecisionRecord) -> dict[str, Any]:
    """A decision: ``decisions``; ``decision show`` adds ``triggering_signals`` and
    ``caused_signals`` (see :func:`linked_signal_json`)."""
    return decision.model_dump(mode="json")


def linked_signal_json(signal_id: str, shaped: dict[str, Any] | None) -> dict[str, Any]:
    """A signal a decision links to: :func:`signal_json` with ``known: true``, or only
    ``{signal_id, known: false}`` once it is gone (expired after its TTL)."""
    return {**shaped, "known": True} if shaped is not None else {"signal_id": signal_id, "known": False}


def pattern_json(pattern: MemoryPattern) -> dict[str, Any]:
    """A promoted pattern: ``patterns``, ``pattern show``, ``pattern rollback``."""
    return pattern.model_dump(mode="json")


def pattern_version_json(item: Mapping[str, Any]) -> dict[str, Any]:
    """One kept version of a pattern (``pattern history``), its ``pattern`` shaped as
    ``pattern show`` prints it (kept as stored if it no longer reads as a pattern)."""
    from pydantic import ValidationError

    from hivebus.store.base import MemoryPattern

    try:
        pattern: dict[str, Any] = pattern_json(MemoryPattern.model_validate(item["pattern"]))
    except ValidationError:
        pattern = item["pattern"]
    return {"version": item["version"], "reason": item["reason"],
            "created_at": seconds(item["created_at"]), "pattern": pattern}


# --- the rest ----------------------------------------------------------------------------------


def acl_user_json(user: str, agent_id: str | None, rules: Iterable[str]) -> dict[str, Any]:
    """One Redis ACL user (``acl``): its name, the agent it is for (null: the coordinator) and
    the ``ACL SETUSER`` arguments that follow the name."""
    return {"user": user, "agent_id": agent_id, "rules": list(rules)}
