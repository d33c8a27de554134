"""A Rust panic inside `tokenizers` (a hostile tokenizer.json) prints Rust's own report on stderr, three lines or,
under RUST_BACKTRACE, a page, before pyo3 raises it as PanicException and yi-chat says what failed in its one line.
`reports_held()` points fd 2 at a private file for such a call and passes on what was written there as the call
ends, the panic's report left out."""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager

from .errors import panicked
from .held import signals_held

REPORT = re.compile(rb"(?m)(?:\n|^)thread '[^\n]*panicked at ")  # Rust's hook's first line: the rest is its report
PASSED_ON = 1 << 20  # bytes of other writers' output passed on from one call

_lock = threading.RLock()
_sink = None  # the private file, made at the first call
_saved: int | None = None  # a duplicate of the real fd 2 while a call holds it


@contextmanager
def reports_held():
    """Run the body with fd 2 held: what it (or another thread meanwhile) writes there reaches stderr as the body
    ends, except a Rust panic's report when the body raises the panic. Nested calls hold once. Where no file can
    be made (no temp folder, no file descriptor left), the body runs as is."""
    # The signals that end yi-chat wait for the whole of it: their handlers write lines to stderr and look at what
    # fd 2 is, and their exception, raised between the hold and its end, left fd 2 on the private file for the rest
    # of the run. The body is one call into Rust (Python runs no handler before it returns anyway) or the load.
    with signals_held(), _lock:
        if _saved is not None or not _hold():
            yield
            return
        failed = False
        try:
            yield
        except BaseException as e:
            failed = panicked(e)
            raise
        finally:
            _pass_on(failed)


def _flush() -> None:
    """What Python has buffered for stderr goes out now, in order with what fd 2 gets directly."""
    try:
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def _hold() -> bool:
    global _sink, _saved
    _flush()
    try:
        if _sink is None:
            _sink = tempfile.TemporaryFile()
        saved = os.dup(2)
    except OSError:
        return False
    try:
        os.dup2(_sink.fileno(), 2)
    except OSError:
        os.close(saved)
        return False
    _saved = saved
    return True


def _restore() -> None:
    """fd 2 back where it was, if a call holds it."""
    global _saved
    saved, _saved = _saved, None
    if saved is not None:
        os.dup2(saved, 2)
        os.close(saved)


def _pass_on(failed: bool) -> None:
    _flush()
    _restore()
    fd = _sink.fileno()
    try:
        size = os.fstat(fd).st_size
        if not size:
            return
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, min(size, PASSED_ON))
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        return
    if failed:
        m = REPORT.search(data)
        if m is not None:
            data = data[: m.start()]
    while data:
        try:
            data = data[os.write(2, data) :]
        except InterruptedError:
            continue
        except OSError:
            return
