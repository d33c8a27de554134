"""Type-ahead while a reply streams: the terminal neither echoes nor line-edits the keys typed meanwhile (no torch).

The keys stay in the terminal's input queue, untouched; the next prompt (prompt_toolkit) reads them as if they
were typed there, so a question typed during a reply starts the next input and is never drawn into the reply.
The REPL pins the hold from before each prompt until its line has been handled: prompt_toolkit then returns the
terminal to the held mode it found, so keys typed right after Enter (before a reply starts) are not echoed either.
"""

from __future__ import annotations

import os
import termios


class KeyHold:
    def __init__(self, fd: int):
        self.fd = fd
        self.saved: list | None = None
        self.pinned = False  # held until unpin: a reply's end does not give the echo back

    def hold(self) -> None:
        """Echo and line editing off; Ctrl-C still raises SIGINT. TCSANOW: the queued keys are kept."""
        if self.saved is not None:
            return
        try:
            attrs = termios.tcgetattr(self.fd)
        except (termios.error, OSError):  # not a terminal: nothing is echoed anyway
            return
        self.saved = attrs
        held = [*attrs[:6], list(attrs[6])]
        # ICRNL off: Enter stays \r, the key the next prompt reads as Enter. NOFLSH: Ctrl-C flushes neither the
        # keys typed ahead nor the reply text the terminal has not read yet (the screen shows all that is recorded).
        held[0] &= ~termios.ICRNL
        held[3] = (held[3] & ~(termios.ECHO | termios.ICANON)) | termios.NOFLSH
        held[6][termios.VMIN], held[6][termios.VTIME] = 1, 0
        termios.tcsetattr(self.fd, termios.TCSANOW, held)

    def pin(self) -> None:
        self.hold()
        self.pinned = True

    def unpin(self) -> None:
        self.pinned = False
        self.release()

    def release(self) -> None:
        if self.saved is None or self.pinned:
            return
        attrs, self.saved = self.saved, None
        if not self._foreground():  # stopped (Ctrl-Z), then ended in the background: the shell has the terminal
            return  # and its own modes; a write would stop us again (SIGTTOU)
        try:
            termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
        except (termios.error, OSError):  # the terminal is gone (SIGHUP)
            pass

    def _foreground(self) -> bool:
        """False only where the terminal is our controlling one and another process group has it."""
        try:
            return os.tcgetpgrp(self.fd) == os.getpgrp()
        except OSError:  # not our controlling terminal (or gone): no job control between us and it
            return True
