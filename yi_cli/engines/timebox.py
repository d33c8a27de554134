"""Run untrusted Python-level work (a checkpoint's Jinja chat template) with a time bound.

A chat template is code from the checkpoint: the sandbox transformers renders it in stops attribute tricks, not
loops (`{% for i in range(99999) %}{% for j in range(99999) %}` runs for hours). The work runs in a worker thread
whose trace function raises once the deadline passes: the compiled template is Python, so it stops at its next
line and the thread ends. A stall inside one C call cannot be interrupted; the caller is still let go at the
deadline and the daemon thread is abandoned.
"""

from __future__ import annotations

import sys
import threading
import time


class TimedOut(Exception):
    pass


def run(fn, seconds: float):
    """fn() in a worker thread, its result or its exception; TimedOut when it runs past `seconds`."""
    deadline = time.monotonic() + seconds
    out: dict = {}

    def trace(frame, event, arg):
        if time.monotonic() > deadline:
            raise TimedOut
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
