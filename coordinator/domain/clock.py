"""The one place hivebus reads the wall clock (no third-party import: cheap for the CLI)."""

from __future__ import annotations

import time


def now_s() -> float:
    """Current wall-clock time in seconds."""
    return time.time()


def stamp_s() -> float:
    """Current time to the millisecond, as signals carry it: ``1795309716.997`` is 4 bytes
    shorter than a full float in every retained inbox entry, twice."""
    return round(time.time(), 3)
