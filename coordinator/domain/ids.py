"""Sortable unique ids (ULID layout: 48-bit millisecond time + 80 random bits, Crockford base32)."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_last = [0, 0]  # the time and value of this process's last id (ULID's monotonic mode)
_last_lock = threading.Lock()


def new_id(now_ms: int | None = None) -> str:
    """Return a 26-character id that sorts by creation time; within one process, ids made in
    the same millisecond (or while the clock stepped back) sort in the order they were made."""
    if now_ms is None:
        with _last_lock:
            ms = int(time.time() * 1000)
            if ms <= _last[0] and _last[1] + 1 < (_last[0] + 1) << 80:
                ms, value = _last[0], _last[1] + 1
            else:
                value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
            _last[:] = [ms, value]
    else:
        value = (now_ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def id_time_ms(ulid: str) -> int:
    """Return the millisecond timestamp encoded in an id made by :func:`new_id`."""
    value = 0
    for ch in ulid[:10]:
        value = value * 32 + _ALPHABET.index(ch)
    return value


def derived_id(cause_id: str, *parts: str) -> str:
    """A deterministic id for something caused by ``cause_id``: the cause's time part plus a hash.

    A handler that runs again for the same signal (a redelivery) publishes follow-ups with
    the same ids, so the bus sees a republish and delivers nothing twice.
    """
    import hashlib

    digest = int.from_bytes(hashlib.sha256("|".join((cause_id, *parts)).encode()).digest()[:10], "big")
    chars = []
    for _ in range(16):
        chars.append(_ALPHABET[digest & 31])
        digest >>= 5
    return cause_id[:10] + "".join(reversed(chars))


def printable(value: object) -> str:
    """``value`` as text safe to store and log: bytes that are not UTF-8 shown as ``\\xNN``."""
    text = value if isinstance(value, str) else str(value)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def entry_order(entry_id: str) -> tuple[int, int]:
    """Sort key of a stream entry id ``<ms>-<seq>``."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
