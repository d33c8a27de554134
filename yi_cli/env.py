"""Numbers from environment variables: one that is no number of its kind (`abc`, empty, `²`, `nan`) or out of its
range reads as unset, as COLUMNS does (terminal.py), where it had ended every start in a traceback at import."""

from __future__ import annotations

import math
import os


def number(name: str, default, kind=int, lo=None, hi=None):
    """`kind`(os.environ[name]) when it is a finite number within [lo, hi], else `default`."""
    raw = os.environ.get(name, "").strip()
    if not raw.isascii():
        return default
    try:
        value = kind(raw)
    except ValueError:
        return default
    if isinstance(value, float) and not math.isfinite(value):
        return default
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return default
    return value
