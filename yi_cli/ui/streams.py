"""The standard streams made safe before anything runs: closed ones (`<&-`, `>&-`, `2>&-`) and a locale
that cannot encode the replies.

A closed descriptor 0, 1 or 2 is pointed at /dev/null: otherwise the next file opened (a session being saved)
takes its number and print() writes into it; Python leaves sys.stdin/stdout/stderr None then, which is fixed too.
A stderr that is not a terminal goes quiet the same way at its first failed write (QuietStderr).
A stream whose encoding cannot write every character (LANG=C without UTF-8 mode, latin-1, PYTHONIOENCODING=ascii)
writes UTF-8 into a pipe, and escapes what it cannot show on a terminal, instead of failing mid-reply.
"""

from __future__ import annotations

import fcntl
import io
import os
import sys

from ..errors import StdoutFailed
from ..safe_text import shows_unicode

NAMES = ("stdin", "stdout", "stderr")


def repair() -> list[str]:
    """Reopen closed standard descriptors on /dev/null; returns the names of those that were closed. A stdin open
    for writing only (`0>/dev/null`, a typo of `</dev/null`) is one that cannot be read: closed too (its first read
    was an internal error, EBADF). A non-blocking stdout or stderr is made blocking."""
    closed = []
    for fd, name in enumerate(NAMES):
        try:
            os.fstat(fd)
            is_open = fd != 0 or fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_WRONLY
        except OSError:
            is_open = False
        if not is_open:
            null = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            closed.append(name)
        elif fd and not os.get_blocking(fd):
            # left non-blocking by the program that made it (a Node.js parent's pipe): Python's buffered writer drops
            # what the full pipe refuses (EAGAIN) without an error, and a piped run lost half its replies, exit 0
            os.set_blocking(fd, True)
        if getattr(sys, name) is None:
            mode = "r" if fd == 0 else "w"
            setattr(
                sys,
                name,
                io.TextIOWrapper(
                    io.FileIO(fd, mode, closefd=False),
                    encoding="utf-8",
                    errors="surrogateescape" if fd == 0 else "backslashreplace",
                    line_buffering=fd != 0,
                ),
            )
    for s in (sys.stdout, sys.stderr):
        if not shows_unicode(getattr(s, "encoding", None) or "unknown") and hasattr(s, "reconfigure"):
            # A pipe or file gets UTF-8 (lossless; --json stays valid JSON); a terminal in that locale, escapes.
            s.reconfigure(errors="backslashreplace") if s.isatty() else s.reconfigure(encoding="utf-8")
    if not sys.stderr.isatty():
        sys.stderr = QuietStderr(sys.stderr)
    return closed


class QuietStderr:
    """stderr that, from its first write that fails (its reader gone: `2>&1 | head -1`, `2> >(cmd)` that exited;
    a full disk), goes to /dev/null, as a closed one (`2>&-`) does: the run goes on silently, its exit code its own.
    rich exits 1 at a BrokenPipeError (Console.on_broken_pipe) and an OSError from a notice escaped the turn: a
    piped run stopped at its first line on stderr (a token-limit cut, --stats), the lines after it never sent."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError:
            self._quiet()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError:
            self._quiet()

    def _quiet(self) -> None:
        to_null(self._stream.fileno())
        try:
            self._stream.flush()  # what is still buffered goes nowhere (a failing last flush made the exit 120)
        except OSError:
            pass

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class GuardedStdout:
    """stdout for a subcommand's listing or a piped run's replies: a write or flush that fails (`> /dev/full`) raises
    StdoutFailed, which cli reports as one line, where an OSError from print() was a traceback (and in a piped run
    every later turn was generated and reported failed). A reader gone (| head) stays a BrokenPipeError, the quiet
    exit 0."""

    def __init__(self, stream):
        self._stream = stream
        self.failed: StdoutFailed | None = None  # the first failure, for a caller that swallowed it (argparse)

    def write(self, text: str) -> int:
        return self._guarded(self._stream.write, text)

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    def _guarded(self, call, *args):
        """call(*args), an OSError from it but a BrokenPipeError raised as StdoutFailed (the first one kept)."""
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as e:
            failed = StdoutFailed(e.errno, e.strerror or str(e))
            self.failed = self.failed or failed
            raise failed from None

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def to_null(fd: int) -> None:
    """fd pointed at /dev/null: what is still buffered for it (the interpreter's last flush) goes nowhere."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    os.close(null)


def say_error(msg: str) -> None:
    """One line on stderr, `yi-chat: ` first, escape sequences and line breaks made visible (messages quote files,
    paths and servers); a background job's last line goes to the terminal it let go of."""
    from .. import terminal
    from ..safe_text import one_line

    line = f"yi-chat: {one_line(msg)}"
    if terminal.say(line):  # a background job's last line, on the terminal it let go of
        return
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass
