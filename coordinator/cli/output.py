"""Printing for the CLI: aligned plain-text tables, JSON, and human times."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout."""
    json.dump(value, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Print ``rows`` as a left-aligned table with ``columns`` as headers."""
    if not rows:
        print("(none)")
        return
    cells = [[str(row.get(col, "")) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    print("  ".join(col.upper().ljust(w) for col, w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def ago(timestamp: float | None, now: float | None = None) -> str:
    """``timestamp`` as a short "12s ago" string."""
    if not timestamp:
        return "-"
    delta = max(0.0, (now or time.time()) - timestamp)
    if delta < 120:
        return f"{delta:.0f}s ago"
    if delta < 7200:
        return f"{delta / 60:.0f}m ago"
    if delta < 172800:
        return f"{delta / 3600:.0f}h ago"
    return f"{delta / 86400:.0f}d ago"


def clock(timestamp: float) -> str:
    """``timestamp`` as local ``YYYY-MM-DD HH:MM:SS``."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def clock_of(value: object) -> str:
    """A stored time (text or number) as :func:`clock` shows it; text that is not a number
    (edited by hand) shown as it is."""
    try:
        return clock(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, OSError):
        return str(value)
