"""The indexes of short-term memory, and recall through them without reading every item.

A *scope* is a set of items one reader searches: an agent's private items
(``hive:stm:{<agent>}``), or the shared items visible to one agent
(``hive:shared:{<agent>}``) or to everyone (``hive:shared:{*}``). A shared item is indexed
in the scope of each agent it is shared with (and its owner's), so a reader finds it
without looking at anyone else's. Each scope keeps its own copy of the item's hash
(``<p>:item:<id>``; a private item's is ``hive:stm:{<agent>}:<id>``), so every key of a scope is
in one Redis Cluster slot. Per scope, keyed under its prefix ``<p>``:

* ``<p>`` ZSET id -> timestamp; ``<p>:kt:<kind>``, ``<p>:st:<symbol>``,
  ``<p>:kst:<len>:<kind>:<symbol>`` the same per kind, symbol and both: ``recent``.
* ``<p>:rank`` ZSET id -> ``log2(score) + timestamp / half_life``, the *rank key*;
  ``<p>:k:<kind>``, ``<p>:s:<symbol>``, ``<p>:ks:<len>:<kind>:<symbol>`` and, per word of
  the content, ``<p>:w:<word>`` the same. At any moment ``2 ** (rank key - now /
  half_life)`` is the item's decayed score (``score * 0.5 ** (age / half_life)``), so every
  rank index lists its items by decayed score, best first, whatever the time.
* ``<p>:exp`` ZSET id -> expiry time, and ``<p>:terms`` HASH id -> ``kind \\x1f symbol \\x1f
  timestamp \\x1f expires \\x1f words``: what recall scores an item by without reading it, and
  what to remove from which index when the item expires (its hash has a TTL; its
  index entries are purged in bounded batches by ``remember``, by ``recall`` when it meets
  one and by the coordinator's retention pass).

Recall is a threshold search (Fagin's threshold algorithm): it reads the scope's rank index
(or its kind / symbol one) and the index of each query word, best first, a page at a time.
Each item it meets is scored from the indexes alone: its decayed score from its rank key,
its query words, kind, symbol and time from its terms (one ``HMGET`` per page). An item it
has not met can score at most ``min(next decayed score of the lists it would be in) + words
it could match``; it stops when that
bound is below the k-th best score found. Only then does it read items: best first, each
scored again from its fields exactly as the README's formula does, until no item left
could beat the k-th. The result is the same as ranking every item; the work is what it
takes to be sure of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from hivebus.domain.keys import Keys

TERMS_SEPARATOR = "\x1f"
FIRST_PAGE = 32
MAX_PAGE = 512
PURGE_BATCH = 256
MAX_QUERY_WORDS = 16  # words of a query looked up in indexes (the rest still count in scores)


def rank_key(score: float, timestamp: float, half_life_s: float) -> float:
    """``log2(score) + timestamp / half_life``: orders items by decayed score at any time."""
    return (math.log2(score) if score > 0 else -math.inf) + timestamp / half_life_s


def decayed_bound(key: float, now: float, half_life_s: float) -> float:
    """The most an item with rank key ``key`` can score by decay now (an upper bound: an item
    stamped in the future scores its plain score, less than this)."""
    if key == -math.inf:
        return 0.0
    exponent = key - now / half_life_s
    return math.inf if exponent > 1000 else float(2.0 ** exponent)


def _sized(text: str) -> str:
    return f"{len(text)}:{text}"


@dataclass(frozen=True)
class Scope:
    """The keys of one searchable set of items (see the module docstring)."""

    prefix: str  # "<ns>:stm:{agent}" or "<ns>:shared:{agent}" / "<ns>:shared:{*}"
    item_prefix: str  # prefix of the item hashes: "<ns>:stm:{agent}:" or "<prefix>:item:"

    @classmethod
    def private(cls, keys: Keys, agent_id: str) -> Scope:
        """An agent's own items."""
        return cls(keys.memory_index(agent_id), keys.memory_item_prefix(agent_id))

    @classmethod
    def shared(cls, keys: Keys, viewer: str) -> Scope:
        """Shared items visible to ``viewer`` (an agent id, or ``*``: shared with everyone). The
        scope keeps its own copy of each item's hash, so every key of it is in one slot."""
        return cls(keys.shared_scope(viewer), keys.shared_item_prefix(viewer))

    def item(self, item_id: str) -> str:
        return self.item_prefix + item_id

    @property
    def times(self) -> str:
        return self.prefix

    @property
    def ranks(self) -> str:
        return f"{self.prefix}:rank"

    @property
    def expiry(self) -> str:
        return f"{self.prefix}:exp"

    @property
    def terms(self) -> str:
        return f"{self.prefix}:terms"

    def word(self, word: str) -> str:
        return f"{self.prefix}:w:{word}"

    def ranked_by(self, kind: str | None, symbol: str | None) -> str:
        """The rank index of the items of ``kind`` about ``symbol`` (None: any)."""
        return self._filtered(("k", "s", "ks"), kind, symbol) or self.ranks

    def timed_by(self, kind: str | None, symbol: str | None) -> str:
        """The time index of the items of ``kind`` about ``symbol`` (None: any)."""
        return self._filtered(("kt", "st", "kst"), kind, symbol) or self.times

    def _filtered(self, tags: tuple[str, str, str], kind: str | None, symbol: str | None) -> str:
        """The index named ``tags`` (by kind, by symbol, by both) of a filter; '' for none."""
        if kind is not None and symbol is not None:
            return f"{self.prefix}:{tags[2]}:{_sized(kind)}:{symbol}"
        if kind is not None:
            return f"{self.prefix}:{tags[0]}:{kind}"
        if symbol is not None:
            return f"{self.prefix}:{tags[1]}:{symbol}"
        return ""

    def index_keys(self, kind: str, symbol: str | None,
                   item_words: Iterable[str]) -> tuple[list[str], list[str]]:
        """The rank-keyed and the time-keyed indexes an item of ``kind`` about ``symbol`` with
        ``item_words`` is in (besides the time, expiry and terms keys)."""
        ranked = [self.ranks, self.ranked_by(kind, None)] + [self.word(w) for w in sorted(item_words)]
        timed = [self.timed_by(kind, None)]
        if symbol:
            ranked += [self.ranked_by(None, symbol), self.ranked_by(kind, symbol)]
            timed += [self.timed_by(None, symbol), self.timed_by(kind, symbol)]
        return ranked, timed


@dataclass(frozen=True)
class Terms:
    """What the terms hash keeps of an item: enough to find every index it is in, and to score
    it for a query without reading the item."""

    kind: str
    symbol: str | None
    timestamp: float
    expires_at: float
    words: frozenset[str]

    def encode(self) -> str:
        return TERMS_SEPARATOR.join([self.kind, self.symbol or "", repr(self.timestamp),
                                     repr(self.expires_at), " ".join(sorted(self.words))])

    @classmethod
    def decode(cls, text: object) -> Terms | None:
        """None for a value that is missing or was edited by hand into nonsense."""
        if not isinstance(text, str):
            return None
        parts = text.split(TERMS_SEPARATOR)
        if len(parts) != 5 or not parts[0]:
            return None
        try:
            return cls(parts[0], parts[1] or None, float(parts[2]), float(parts[3]),
                       frozenset(parts[4].split()))
        except ValueError:
            return None


@dataclass
class Cursor:
    """Reading one rank index best first, a page at a time, by score (so an entry removed
    meanwhile makes it skip nothing)."""

    key: str
    is_word: bool
    below: float = math.inf  # read members with scores <= this next (ties: skip `ties` first)
    ties: int = 0
    page: int = FIRST_PAGE
    next_key: float | None = math.inf  # rank key of the next unread member; None: none left
    left: int = 0  # members not read yet (ZCARD at the start, less what was read)

    def request(self) -> tuple[str, float, int, int]:
        """ZREVRANGEBYSCORE arguments of the next page: key, max, offset, count (+1 to peek)."""
        return self.key, self.below, self.ties, self.page + 1

    def advance(self, members: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
        """Take a page read with :meth:`request`; return its members and their rank keys
        (without the peeked one)."""
        got = list(members[: self.page])
        self.left = max(0, self.left - len(got))
        if len(members) > self.page:
            self.next_key = float(members[self.page][1])
        else:
            self.next_key = None
        if got:
            last = float(got[-1][1])
            if last == self.below:
                self.ties += len(got)
            else:
                self.below = last
                self.ties = sum(1 for _, s in got if float(s) == last)
        self.page = min(MAX_PAGE, self.page * 2)
        return [(str(m), float(k)) for m, k in got]


@dataclass
class ScopeSearch:
    """The lists one scope is searched through: its universe (rank index, or the filter's)
    and the index of each query word."""

    scope: Scope
    universe: Cursor
    words: dict[str, Cursor] = field(default_factory=dict)

    @classmethod
    def start(cls, scope: Scope, kind: str | None, symbol: str | None,
              query_words: Iterable[str]) -> ScopeSearch:
        return cls(scope, Cursor(scope.ranked_by(kind, symbol), is_word=False),
                   {w: Cursor(scope.word(w), is_word=True) for w in sorted(query_words)})

    def cursors(self) -> list[Cursor]:
        return [self.universe, *self.words.values()]

    def bound(self, now: float, half_life_s: float) -> tuple[float, Cursor | None]:
        """The most an item of this scope not met yet can score, and the list to read next to
        lower that bound (None when nothing is left unmet).

        An unmet item matching m query words is unmet in the universe and in each of their
        lists, so it scores at most min(their next decayed scores) + m; the bound is the
        largest of those over m. To lower it, one of the lists in that minimum must be read
        further: the one with the fewest members left (once read to its end, none of its
        members is unmet), so a rare word's list is exhausted before a common one's."""
        if self.universe.next_key is None:
            return -math.inf, None  # every item of the universe has been met
        base = decayed_bound(self.universe.next_key, now, half_life_s)
        best, lists = base, [self.universe]
        open_words = sorted(
            ((decayed_bound(c.next_key, now, half_life_s), c) for c in self.words.values()
             if c.next_key is not None), key=lambda pair: -pair[0])
        for matched in range(1, len(open_words) + 1):
            value = min(base, open_words[matched - 1][0]) + matched
            if value > best:
                best, lists = value, [self.universe, *(c for _, c in open_words[:matched])]
        return best, min(lists, key=lambda c: c.left)
