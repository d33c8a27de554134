"""Holding the signals that end yi-chat over a few milliseconds that must not be cut (a file's write and link, the
parse of the command line, taking the terminal's echo): their handlers run as the hold ends."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from . import terminal
from .errors import ENDING

HELD = tuple(ENDING)


@contextmanager
def signals_held():
    """Ctrl-C, SIGTERM, SIGHUP and SIGQUIT wait until the write is done: their handlers raise, and an exception
    between writing the temp file and linking it would leave the finished exchange off the disk. A write takes ms.

    The Python-level handlers are swapped, not the signal mask: a process-directed signal reaches whichever
    thread does not block it (torch's, the tokenizer's), and Python runs its handler in the main thread anyway."""
    if threading.current_thread() is not threading.main_thread():  # handlers can only be set from there
        yield
        return
    caught: list = []

    def hold(signum, frame):
        caught.append((signum, frame))
        # Stopped in the background meanwhile (Ctrl-Z as torch imports, then `kill %1`), the stop handler waits for
        # `fg` (terminal.wait_foreground) and the hold never ended: the chat stayed stopped until `fg`. Let go of
        # the terminal, as the ending handler does, and the wait ends (in the foreground this does nothing).
        terminal.let_go()

    old = {s: signal.signal(s, hold) for s in set(HELD)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        # now delivered to the handler it was meant for: one (a handler may raise), the first that ends the chat
        # where one came (a Ctrl-C then a SIGTERM: the Ctrl-C's, which only counts at some instants, was delivered,
        # the SIGTERM dropped, and the chat went on)
        ending = [c for c in caught if c[0] != signal.SIGINT]
        for signum, frame in (ending or caught)[:1]:
            handler = old[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)
