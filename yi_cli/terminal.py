"""The controlling terminal at the two ends of a run (no torch, no prompt_toolkit).

From the first instant: a chat's terminal is held (ui/keys.hold_early: no echo, no line editing, the keys kept)
as soon as yi-chat runs, not only once the model starts loading. Until then the terminal echoed the keys typed
during the imports raw above the banner, and the prompt, which reads them as typed there, showed them a second time.

At the last: a chat that SIGTERM or SIGHUP ends while it is a background job (`yi-chat &`, or Ctrl-Z then `bg`,
then `kill %1`) must neither set the terminal's modes nor draw on it: the shell has it, and the kernel stops a
process of another group that sets them (SIGTTOU), so the chat never exited ("Stopped (tty output)").

And its size as every rich Console of yi-chat reads it (`console`): COLUMNS and LINES, unless no terminal has them.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import time

_KEPT: list[int] = []  # stderr's terminal, kept aside by let_go for the line that says how the chat ended
_KEEP_OPEN: list[int] = []  # the write end of the pipe let_go gives stdin


def background(fd: int) -> bool:
    """fd is our controlling terminal and another process group has it: we are a background job."""
    try:
        return os.isatty(fd) and os.tcgetpgrp(fd) != os.getpgrp()
    except OSError:  # not our controlling terminal (or gone): no job control between us and it
        return False


def let_go() -> None:
    """In the background, the standard descriptors on the terminal are pointed elsewhere: the exit path's mode
    restores (prompt_toolkit's, KeyHold's) then fail quietly instead of stopping us, and its redraws go nowhere.
    stderr's terminal is kept aside for say()."""
    fds = [fd for fd in (0, 1, 2) if background(fd)]
    if not fds:
        return
    if 2 in fds and not _KEPT:
        _KEPT.append(os.dup(2))
    null = os.open(os.devnull, os.O_WRONLY)
    for fd in fds:
        if fd == 0:  # a pipe that stays empty: an event loop can wait on it (not on /dev/null, which epoll refuses:
            quiet, keep = os.pipe()  # prompt_toolkit's cancelled prompt then spun forever)
            _KEEP_OPEN.append(keep)
            os.dup2(quiet, 0)
            os.close(quiet)
        else:
            os.dup2(null, fd)
    os.close(null)


def resume_output() -> None:
    """Output stopped with Ctrl-S (XOFF) started again on the terminals stdout and stderr are (in the foreground):
    a SIGTERM, SIGHUP or SIGQUIT ended the reply, and the chat then waited in its last writes for a Ctrl-Q. Linux
    starts a terminal stopped so when IXON is turned off (tcflow's TCOON undoes only a TCOOFF): off, then on again,
    as it was."""
    import termios

    for fd in (1, 2):
        try:
            if not os.isatty(fd) or background(fd):
                continue
            attrs = termios.tcgetattr(fd)
            if attrs[0] & termios.IXON:
                termios.tcsetattr(fd, termios.TCSANOW, [attrs[0] & ~termios.IXON, *attrs[1:]])
                termios.tcsetattr(fd, termios.TCSANOW, attrs)
        except (OSError, termios.error):
            pass


def say(line: str) -> bool:
    """Write `line` on the terminal let_go kept aside (False where there is none). SIGTTOU is blocked meanwhile:
    under `stty tostop` a background job's writes stop it too, and a line is not the shell's modes."""
    if not _KEPT:
        return False
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
    try:
        os.write(_KEPT[0], (line + "\n").encode("utf-8", "replace"))
    except OSError:
        pass
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return True


def wait_foreground(fd: int = 0) -> None:
    """Stopped here, as the kernel stops a background job that sets the terminal's modes (SIGTTOU), until the
    shell gives us the terminal (`fg`). Stopping in the kernel's place matters: stopped inside the ioctl, a
    `kill %1` (SIGTERM, then SIGCONT) could be taken by another thread (torch's, BLAS's), the ioctl be restarted and
    stop us again before the SIGTERM handler ran; stopped here, the handler runs as soon as we go on."""
    if signal.getsignal(signal.SIGTTOU) is not signal.SIG_DFL:  # ignored: the kernel lets us set the modes
        return
    while background(fd):
        os.kill(os.getpid(), signal.SIGTTOU)
        # Resumed (SIGCONT). `kill %1`'s SIGTERM, pending while we were stopped, may have been taken by another
        # thread, its handler not run here yet: stopped again at once, the chat stayed stopped with the SIGTERM
        # spent (seen once in CI, on a loaded machine). A moment's sleep lets the handler run (let_go ends the loop).
        time.sleep(0.05)


# COLUMNS / LINES that no terminal has: rich takes them as the size all the same (COLUMNS=0 printed every line
# empty, so every message after the banner vanished and a failed run exited 1 in silence; 99999999999 ended
# /help in a MemoryError, 10**9 took 13 s and 2.6 GB to print it). Outside these bounds they read as unset: the
# terminal's own size, 80 columns for a file or a pipe.
SIZE_BOUNDS = {"COLUMNS": (1, 4096), "LINES": (1, 4096)}


def _within(value: str, lo: int, hi: int) -> bool:
    """A count of ASCII digits within [lo, hi] (`²` is a digit to str.isdigit, and int() refuses it)."""
    return value.isascii() and value.isdigit() and lo <= int(value) <= hi


def console(**kw):
    """A rich Console (kw as rich's) for which COLUMNS and LINES out of SIZE_BOUNDS are unset."""
    env = os.environ
    odd = [k for k, (lo, hi) in SIZE_BOUNDS.items() if k in env and not _within(env[k], lo, hi)]
    if odd:
        kw.setdefault("_environ", {k: v for k, v in env.items() if k not in odd})
    if "force_terminal" not in kw:  # a terminal is a terminal: rich took FORCE_COLOR=1 or TTY_COMPATIBLE=1 (set in
        # many CI environments) as one, and a pipe got escape codes, padded table rows and a spinner's frames
        kw["force_terminal"] = isatty(kw.get("file") or (sys.stderr if kw.get("stderr") else sys.stdout))
    c = _sized_console_class()(**kw)
    c.on_broken_pipe = _reader_gone
    return c


_SIZED: list = []


def _sized_console_class():
    """rich's Console, sized on a dumb terminal as on any other: rich said 80 x 25 for every dumb one (TERM=dumb,
    Emacs' shell) whatever its COLUMNS and its real width, and a narrower one got a status line cut at 80 (a row
    of it left in the scrollback at each redraw) and tables laid out 80 wide."""
    if _SIZED:
        return _SIZED[0]
    from rich.console import Console, ConsoleDimensions

    class Sized(Console):
        @property
        def size(self) -> ConsoleDimensions:
            if not self.is_dumb_terminal or (self._width is not None and self._height is not None):
                return Console.size.fget(self)
            width = height = None
            for fd in (sys.__stdin__, sys.__stdout__, sys.__stderr__):
                try:
                    width, height = os.get_terminal_size(fd.fileno())
                    break
                except (AttributeError, ValueError, OSError):  # not a terminal, closed, or none
                    pass
            for key in ("COLUMNS", "LINES"):
                v = self._environ.get(key)
                if v is not None and v.isascii() and v.isdigit():
                    width, height = (int(v), height) if key == "COLUMNS" else (width, int(v))
            return ConsoleDimensions(self._width or width or 80, self._height or height or 25)

        @size.setter
        def size(self, new) -> None:
            Console.size.fset(self, new)

    _SIZED.append(Sized)
    return Sized


def _reader_gone() -> None:
    """rich's answer to a reader gone (`| head`) was SystemExit(1), past yi-chat's own handling of it (exit 0, as
    README says): a command's output the reader left during exited 1 with nothing said. The error goes on up."""
    raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


def isatty(stream) -> bool:
    """Whether `stream` is a terminal: False for None, a stream without the method, or one closed."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False
