"""Redis ACL rules that give each agent only what it needs, and the coordinator what it needs.

An agent user may:

* read, ack and claim entries of **its own** inbox (``hive:stream:<id>``), and write its own
  registry entry, heartbeats, state, memory, decision indexes, events, retries and dead letters;
* publish: write signal hashes and the signal log, and — through a Redis 7 *selector* that
  allows ``XADD`` (and the ``EVALSHA`` of the publish script that names the inboxes) and
  nothing else — append to other agents' inboxes, and see (``EXISTS`` only) whether a target
  already processed a signal id;
* read and write shared memory, decisions (keyed by decision id) and the learning queue.

It cannot read another agent's state or memory, nor read, ack or delete another agent's
signals: Redis itself refuses with NOPERM. Selectors need Redis 7.0+; on 6.2 the rules
cannot separate "append to" from "ack" on other inboxes.
"""

from __future__ import annotations

from collections.abc import Iterable

from coordinator.keys import Keys, check_agent_id

PASSWORD_PLACEHOLDER = "REPLACE_WITH_A_SECRET"
COMMANDS = ("+@read +@write +@stream +@hash +@set +@sortedset +@string +@list +@keyspace "
            "+@scripting +@connection +@transaction -@admin -@dangerous +ping +info")


def agent_user(agent_id: str) -> str:
    """The Redis user name of an agent."""
    return f"hivebus-agent-{check_agent_id(agent_id)}"


def agent_rule(keys: Keys, agent_id: str, password: str = PASSWORD_PLACEHOLDER) -> list[str]:
    """``ACL SETUSER`` arguments (after the user name) for one agent."""
    ns, me = keys.namespace, check_agent_id(agent_id)
    own = [f"{ns}:{kind}:{me}" for kind in ("stream", "agent", "state", "stm", "decisions",
                                            "events", "retry", "dlq")]
    patterns = [p for key in own for p in (key, f"{key}:*")]
    patterns += [f"{ns}:hb:{me}:*", f"{ns}:done:{me}:*", f"{ns}:agents", f"{ns}:subs:*",
                 f"{ns}:signal:*", f"{ns}:signals", f"{ns}:shared", f"{ns}:shared:*",
                 f"{ns}:decision:*", f"{ns}:decision-agents", f"{ns}:outcomes"]
    # the publish script names every target inbox among its keys: this selector lets EVALSHA name
    # them and lets XADD (and nothing else) touch them, and lets EXISTS read (only read) the
    # targets' processed-ledgers, which the script consults to leave out a target that already
    # processed the signal id; every other command inside a script is still checked against
    # the rules above
    selector = (f"(~{ns}:stream:* ~{ns}:signal:* ~{ns}:signals ~{ns}:subs:* ~{ns}:agents "
                f"~{ns}:agent:{me} %R~{ns}:done:* +evalsha +eval +xadd +exists)")
    return ["reset", "on", f">{password}", *(f"~{p}" for p in patterns), "resetchannels",
            *COMMANDS.split(), selector]


def coordinator_rule(keys: Keys, password: str = PASSWORD_PLACEHOLDER) -> list[str]:
    """``ACL SETUSER`` arguments for the coordinator: every key of the namespace."""
    return ["reset", "on", f">{password}", f"~{keys.namespace}:*", "resetchannels", *COMMANDS.split()]


def acl_script(keys: Keys, agent_ids: Iterable[str]) -> list[str]:
    """redis-cli commands that create the coordinator user and one user per agent."""
    def line(user: str, rule: list[str]) -> str:
        return " ".join(["ACL", "SETUSER", user, *(f'"{a}"' if " " in a else a for a in rule)])

    return [line("hivebus-coordinator", coordinator_rule(keys)),
            *(line(agent_user(a), agent_rule(keys, a)) for a in agent_ids)]
