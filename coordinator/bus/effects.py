"""Handler effects as data: Redis commands the settle script applies once, with the ack.

A handler asks for an effect with ``ctx.effect("HINCRBY", key, field, 1)``. Effects are not
run while the handler runs; they are sent with the batch's settle, and the settle script
applies them only if this replica still owns the signal's entry and the signal is not settled
yet, in the same atomic step as the ack. So whatever pauses, stalls or redeliveries happen,
each signal's effects apply exactly once (a handler may run more than once).

The commands allowed are the single-key writes below. Before applying a signal's effects the
script checks each key's type (and that a counter holds a number): an effect that Redis would
reject ends the signal as DEAD with the reason, and none of its effects is applied.
"""

from __future__ import annotations

import math
from typing import TypeAlias

from hivebus.domain.errors import InvalidInput
from hivebus.domain.keys import Keys

Effect: TypeAlias = tuple[str, ...]
"""One effect: the command name, the key, then the arguments, all as text."""

# command -> (least, most) number of arguments after the key (None: no upper bound)
ARITY: dict[str, tuple[int, int | None]] = {
    "SET": (1, 1), "DEL": (0, 0), "EXPIRE": (1, 1), "PEXPIRE": (1, 1),
    "INCRBY": (1, 1), "INCRBYFLOAT": (1, 1),
    "HSET": (2, None), "HDEL": (1, None), "HINCRBY": (2, 2), "HINCRBYFLOAT": (2, 2),
    "SADD": (1, None), "SREM": (1, None),
    "ZADD": (2, None), "ZINCRBY": (2, 2), "ZREM": (1, None),
    "LPUSH": (1, None), "RPUSH": (1, None), "LTRIM": (2, 2),
    "XADD": (3, None),
}
_INTEGER_AT = {"EXPIRE": (0,), "PEXPIRE": (0,), "INCRBY": (0,), "HINCRBY": (1,), "LTRIM": (0, 1)}
_NUMBER_AT = {"INCRBYFLOAT": (0,), "HINCRBYFLOAT": (1,), "ZINCRBY": (0,)}


def make_effect(keys: Keys, command: str, key: str, *args: str | int | float) -> Effect:
    """Check one effect and return it as data. Raises InvalidInput naming what is wrong."""
    name = command.upper() if isinstance(command, str) else ""
    if name not in ARITY:
        raise InvalidInput(f"effect {command!r} is not allowed; use one of {', '.join(sorted(ARITY))}")
    if not isinstance(key, str) or not key:
        raise InvalidInput(f"effect {name}: the key must be a non-empty string")
    if keys.is_internal(key):
        raise InvalidInput(f"effect {name}: {key!r} is one of hivebus's own keys; use ctx.key(name)")
    least, most = ARITY[name]
    if len(args) < least or (most is not None and len(args) > most):
        raise InvalidInput(f"effect {name} takes {least}{'' if most == least else '+'} argument(s) "
                           f"after the key, got {len(args)}")
    text = [_text(name, a) for a in args]
    for i in _INTEGER_AT.get(name, ()):
        if not _is_integer(text[i]):
            raise InvalidInput(f"effect {name}: argument {i + 1} must be an integer, got {text[i]!r}")
    for i in _NUMBER_AT.get(name, ()):
        if not _is_number(text[i]):
            raise InvalidInput(f"effect {name}: argument {i + 1} must be a number, got {text[i]!r}")
    if name in ("HSET",) and len(text) % 2:
        raise InvalidInput("effect HSET takes field/value pairs")
    if name == "ZADD" and (len(text) % 2 or not all(_is_number(s) for s in text[0::2])):
        raise InvalidInput("effect ZADD takes score/member pairs (no options)")
    if name == "XADD" and (text[0] != "*" or len(text) % 2 == 0):
        raise InvalidInput("effect XADD takes '*' then field/value pairs")
    return (name, key, *text)


def _text(name: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidInput(f"effect {name}: arguments must be str, int or float, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"effect {name}: {value} is not a finite number")
    text = value if isinstance(value, str) else repr(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"effect {name}: arguments must be valid UTF-8 text") from None
    return text


def _is_integer(text: str) -> bool:
    return text.lstrip("-").isdigit() and len(text) <= 18


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False
