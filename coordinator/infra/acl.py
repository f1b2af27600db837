"""Redis ACL rules that give each agent only what it needs, and the coordinator what it needs.

An agent user may:

* read, ack and claim entries of **its own** inbox (``hive:inbox:{<id>}``), and write its own
  registry entry, heartbeats, pending records, ledger, state, memory, decision indexes,
  events, retries and dead letters (every key with its hash tag ``{<id>}``);
* publish: write signal records, the signal log's shards and their published counters, and —
  through Redis 7 *selectors* that pair each command with the keys it may touch — append
  (``XADD`` only) to other agents' inboxes, add their pending records, read (``ZSCORE`` only)
  their ledgers and see whether they are registered (``EXISTS``/``HLEN`` of their agent hash);
* read and write shared memory, decisions (in their agent's slot, found by id through
  ``hive:decision-at:<id>``) and the learning queues (``hive:outcomes:{<agent>}``).

It cannot read another agent's state or memory, nor read, ack or delete another agent's
signals: Redis itself refuses with NOPERM. Selectors need Redis 7.0+; on 6.2 the rules
cannot separate "append to" from "ack" on other inboxes.

On a Redis Cluster (``cluster=True``) the users may also read the cluster's layout, which a
cluster client asks for as it connects and after a failover, and the script sets every user on
every node, replicas included: ACL users are per node, and a replica promoted by a failover
must know them.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence

from hivebus.domain.keys import Keys, check_agent_id, tag

PASSWORD_PLACEHOLDER = "REPLACE_WITH_A_SECRET"
COMMANDS = ("+@read +@write +@stream +@hash +@set +@sortedset +@string +@list +@keyspace "
            "+@scripting +@connection +@transaction -@admin -@dangerous +ping +info")
# A cluster client reads the slot map as it connects and after a redirect: redis-py with CLUSTER
# SLOTS, newer clients of Redis 7 with CLUSTER SHARDS. COMMAND (redis-py's key routing),
# ASKING and READONLY are in @connection already.
CLUSTER_COMMANDS = "+cluster|slots +cluster|shards"


def agent_user(agent_id: str) -> str:
    """The Redis user name of an agent."""
    return f"hivebus-agent-{check_agent_id(agent_id)}"


OWN_KINDS = ("inbox", "pending", "done", "status", "retry", "dlq", "agent", "state", "stm", "decisions",
             "events", "fx", "hb")


def _commands(cluster: bool) -> list[str]:
    return [*COMMANDS.split(), *(CLUSTER_COMMANDS.split() if cluster else ())]


def agent_rule(keys: Keys, agent_id: str, password: str = PASSWORD_PLACEHOLDER, *,
               cluster: bool = False) -> list[str]:
    """``ACL SETUSER`` arguments (after the user name) for one agent."""
    ns, me = keys.namespace, tag(agent_id)
    own = [f"{ns}:{kind}:{me}" for kind in OWN_KINDS]
    patterns = [p for key in own for p in (key, f"{key}:*")]
    # the signal log's shards (signals:{~sNN}), their published counters and signal records
    patterns += [keys.agents(), f"{ns}:subs:*", f"{ns}:signal:*", f"{ns}:signals:*", f"{ns}:published:*",
                 f"{ns}:shared", f"{ns}:shared:*", f"{ns}:decision:*", f"{ns}:decision-at:*",
                 keys.decision_agents(), f"{ns}:outcomes:*", f"{ns}:late-outcomes", f"{ns}:layout"]
    # Publishing: the publish script declares each target's inbox, pending record, ledger and
    # agent hash among its keys. One selector lets EVAL/EVALSHA name them; inside the script
    # every command is checked again, and these selectors pair each command with the keys it may
    # touch: XADD to inboxes, HSET/HEXISTS/HLEN of pending records, ZSCORE (read only) of
    # ledgers, EXISTS/HLEN (read only) of agent hashes (is the target registered).
    publish_keys = [f"{ns}:inbox:*", f"{ns}:pending:*", f"{ns}:done:*", f"{ns}:agent:*", f"{ns}:signal:*",
                    f"{ns}:signals:*", f"{ns}:published:*", f"{ns}:subs:*", keys.agents()]
    selectors = [
        "(" + " ".join([*(f"~{k}" for k in publish_keys), "+evalsha", "+eval"]) + ")",
        f"(~{ns}:inbox:* +xadd +xlen +type)",
        f"(~{ns}:pending:* +hset +hexists +hlen +type)",
        f"(%R~{ns}:done:* +zscore +type)",
        f"(%R~{ns}:agent:* +exists +hlen +type)",
    ]
    return ["reset", "on", f">{password}", *(f"~{p}" for p in patterns), "resetchannels",
            *_commands(cluster), *selectors]


def coordinator_rule(keys: Keys, password: str = PASSWORD_PLACEHOLDER, *, cluster: bool = False) -> list[str]:
    """``ACL SETUSER`` arguments for the coordinator: every key of the namespace."""
    return ["reset", "on", f">{password}", f"~{keys.namespace}:*", "resetchannels", *_commands(cluster)]


COORDINATOR_USER = "hivebus-coordinator"


def acl_users(keys: Keys, agent_ids: Iterable[str], *,
              cluster: bool = False) -> list[tuple[str, str | None, list[str]]]:
    """(user, agent id or None for the coordinator, ``ACL SETUSER`` arguments after the name):
    the coordinator first, then one user per agent."""
    return [(COORDINATOR_USER, None, coordinator_rule(keys, cluster=cluster)),
            *((agent_user(a), a, agent_rule(keys, a, cluster=cluster)) for a in agent_ids)]


def acl_script(keys: Keys, agent_ids: Iterable[str], nodes: Sequence[str] = ()) -> list[str]:
    """Commands that create the coordinator user and one user per agent: lines for redis-cli's
    prompt, or with ``nodes`` (a cluster's ``host:port``, replicas included) shell lines, one
    ``redis-cli -h HOST -p PORT ACL SETUSER …`` per node and user, with the cluster's rules."""
    users = acl_users(keys, agent_ids, cluster=bool(nodes))
    if not nodes:
        return [" ".join(["ACL", "SETUSER", user, *(f'"{a}"' if " " in a else a for a in rule)])
                for user, _, rule in users]
    lines = []
    for node in nodes:
        host, _, port = node.rpartition(":")
        lines += [shlex.join(["redis-cli", "-h", host, "-p", port, "ACL", "SETUSER", user, *rule])
                  for user, _, rule in users]
    return lines
