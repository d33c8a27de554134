"""Run untrusted Python-level work (a checkpoint's Jinja chat template) with a time and a memory bound.

A chat template is code from the checkpoint: the sandbox transformers renders it in stops attribute tricks, not
loops (`{% for i in range(99999) %}{% for j in range(99999) %}` runs for hours). The work runs in a worker thread
whose trace function raises once the deadline passes: the compiled template is Python, so it stops at its next
line and the thread ends. A stall inside one C call cannot be interrupted; the caller is still let go at the
deadline and the daemon thread is abandoned. The same trace function reads the process's resident memory every
few milliseconds and stops the work once it has grown past its bound: steps each within the sandbox's limits (a
loop writing 16 MB a pass) reached 10 GB inside the 10 s.
"""

from __future__ import annotations

import os
import sys
import threading
import time


class TimedOut(Exception):
    pass


class OverMemory(Exception):
    pass


PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
CHECK_EVERY = 0.002  # seconds between two reads of the resident memory


def resident() -> int | None:
    """This process's resident memory in bytes (Linux's /proc), or None where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return None


def run(fn, seconds: float, max_growth: int | None = None):
    """fn() in a worker thread, its result or its exception; TimedOut when it runs past `seconds`, OverMemory when
    the process's resident memory grows more than `max_growth` bytes while it runs (where that can be read)."""
    deadline = time.monotonic() + seconds
    out: dict = {}
    base = resident() if max_growth is not None else None
    next_check = [0.0]

    def trace(frame, event, arg):
        now = time.monotonic()
        if now > deadline:
            raise TimedOut
        if base is not None and now >= next_check[0]:
            next_check[0] = now + CHECK_EVERY
            rss = resident()
            if rss is not None and rss - base > max_growth:
                raise OverMemory
        return trace

    def work():
        sys.settrace(trace)
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller below
            out["error"] = e
        finally:
            sys.settrace(None)

    t = threading.Thread(target=work, name="timebox", daemon=True)
    t.start()
    t.join(seconds + 1.0)
    if t.is_alive() or isinstance(out.get("error"), TimedOut):
        raise TimedOut
    if "error" in out:
        raise out["error"]
    return out["value"]
