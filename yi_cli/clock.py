"""The clock a reply's stats are timed with: perf_counter less the time the process spent stopped (no torch).

Ctrl-Z mid-reply stops the whole process until `fg`; perf_counter runs on meanwhile, so the stopped minutes were
counted as decode time and the footer's tok/s (and /stats) fell to a fraction. The SIGTSTP handlers that stop the
process (ui/keys.py while the terminal is held, the chat's own during a reply elsewhere) stop it through
`suspend`, which measures the stop; `now()` leaves it out. A stop by SIGSTOP, which no handler sees, still counts.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager

# (seconds stopped so far, perf_counter when the stop under way began or None), read and replaced whole: `now` is
# called from engine threads while the main thread's handler changes it, and a tuple swap is atomic.
_state: tuple[float, float | None] = (0.0, None)


def now() -> float:
    """perf_counter() without the time the process was stopped; during a stop (and until its handler has counted
    it, just after SIGCONT) it stands where the stop began."""
    stopped, since = _state
    return (time.perf_counter() if since is None else since) - stopped


@contextmanager
def paused():
    """The time spent inside is left out of now()."""
    global _state
    stopped, _ = _state
    t0 = time.perf_counter()
    _state = (stopped, t0)
    try:
        yield
    finally:
        _state = (stopped + time.perf_counter() - t0, None)


def suspend(handler) -> None:
    """From the SIGTSTP handler `handler`: stop as the signal's default action does, until SIGCONT (fg, bg), the
    stop left out of now(); then `handler` takes SIGTSTP again."""
    signal.signal(signal.SIGTSTP, signal.SIG_DFL)
    try:
        with paused():
            os.kill(os.getpid(), signal.SIGTSTP)  # stopped here until SIGCONT
    finally:
        signal.signal(signal.SIGTSTP, handler)
