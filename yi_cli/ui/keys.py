"""Type-ahead while a reply streams: the terminal neither echoes nor line-edits the keys typed meanwhile (no torch).

The keys stay in the terminal's input queue, untouched; the next prompt (prompt_toolkit) reads them as if they
were typed there, so a question typed during a reply starts the next input and is never drawn into the reply.
The REPL pins the hold from before each prompt until its line has been handled: prompt_toolkit then returns the
terminal to the held mode it found, so keys typed right after Enter (before a reply starts) are not echoed either.
The terminal's bracketed-paste mode is held with the keys: a paste during a reply then reaches the next prompt as a
paste (its line breaks new lines of one message), where as typed keys its first line break was Enter.
While a chat's reply streams, a queue past 1 KiB is read out (KeyHold.drain) and kept for the next prompt, in order:
the queue holds 4 KiB (Linux's), and a longer paste filled it; the terminal then stopped taking keys, so a Ctrl-C
typed after the paste waited behind it until the reply ended, and then cleared the paste.
"""

from __future__ import annotations

import os
import signal
import stat
import termios
import threading

from .. import clock, terminal

PASTE_ON, PASTE_OFF = b"\x1b[?2004h", b"\x1b[?2004l"  # the terminal's bracketed-paste mode (xterm's, all of them)

# The keys typed ahead that a Ctrl-Z took out of the terminal's queue while a chat's keys were held, for the prompt
# that comes next (repl.py): left queued, the shell that took the terminal read them and ran each line as a command.
_STASH: list[bytes] = []
# Reading the queue into _STASH: a reply's drain thread, the chat's end (take) and Ctrl-Z's handler (on the main
# thread, maybe inside take: reentrant) one at a time, so that the keys stay in the order they were typed
_READING = threading.RLock()
# A reply's drain reads the queue out once it holds DRAIN_AT bytes, looking every DRAIN_EVERY_S: a paste fills the
# 4 KiB in an instant, and the terminal waits (it loses nothing) until the queue has room again
DRAIN_AT, DRAIN_EVERY_S = 1024, 0.02


def _waiting(fd: int) -> int:
    """The bytes in a terminal's input queue (FIONREAD)."""
    import fcntl
    import struct

    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def stashed() -> bytes:
    """The keys a Ctrl-Z took out of the terminal's queue (KeyHold._on_stop), once: taken, they are gone."""
    got = b"".join(_STASH)
    _STASH.clear()
    return got


class KeyHold:
    def __init__(self, fd: int, waits: bool = True):
        self.fd = fd
        # Put in the background (Ctrl-Z, then `bg`): wait stopped for `fg` (a chat, whose prompt needs the terminal);
        # False: go on in the background (a piped run's hold, which only keeps its keys from its replies)
        self.waits = waits
        self.saved: list | None = None
        self.held: list | None = None  # the held modes, put back after a Ctrl-Z and fg
        self.pinned = False  # held until unpin: a reply's end does not give the echo back
        self._old_tstp = None  # SIGTSTP's handler before the hold took it
        self.pid = os.getpid()
        # a terminal prompt_toolkit (and rich) takes as dumb: TERM=dumb, `unknown` or `DUMB` (it got ^[[?2004h
        # written as text): no escape codes are written to it
        self.dumb = os.environ.get("TERM", "").lower() in ("dumb", "unknown")
        self.paste = not self.dumb  # bracketed paste held too (as prompt_toolkit asks it)
        # A chat's prompt reads the keys held: a Ctrl-Z takes them out of the queue for it (_on_stop). Not so a
        # one-shot's (`-p` at a terminal): its keys are the shell's, left queued for it.
        self.prompt_follows = False
        self._drainer: tuple[threading.Thread, int] | None = None  # drain's thread and the pipe end that stops it

    def hold(self) -> None:
        """Echo and line editing off, bracketed paste on; Ctrl-C still raises SIGINT. TCSANOW: the queued keys
        are kept. Held already: bracketed paste on again (a prompt that ended has turned it off)."""
        if self.saved is not None:
            self._paste(True)
            return
        if not self._foreground():  # a background job (`yi-chat -p hi &`): setting the modes stopped it (SIGTTOU)
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
        self.held = held
        self._paste(True)
        self._catch_stop(True)

    def _paste(self, on: bool) -> None:
        """The terminal's bracketed-paste mode, written to it through the held descriptor (a terminal's is open for
        both ways; where it is not, pasting stays as the terminal has it). Not from the background (Ctrl-Z, `bg`):
        the shell has the terminal, and under `stty tostop` the write would stop us."""
        if self.paste and self._foreground():
            try:
                os.write(self.fd, PASTE_ON if on else PASTE_OFF)
            except OSError:
                pass

    def _show_cursor(self) -> None:
        """The cursor shown for the shell: a load's spinner (rich's live display) hides it until it ends, and a
        Ctrl-Z during the load left the shell without one (for good after `kill %1`: its show went to /dev/null)."""
        if not self.dumb:
            try:
                os.write(self.fd, b"\x1b[?25h")
            except OSError:
                pass

    def _catch_stop(self, on: bool) -> None:
        """While held, Ctrl-Z (SIGTSTP) gives the shell the terminal as it was before stopping, and `fg` holds it
        again: left held, the shell got no echo and no line editing (dash), and after `fg` the keys typed during
        the reply were echoed into it. Python-level handlers only, on the main thread."""
        if not hasattr(signal, "SIGTSTP") or threading.current_thread() is not threading.main_thread():
            return
        if on and self._old_tstp is None:
            current = signal.getsignal(signal.SIGTSTP)
            if current in (signal.SIG_DFL, None):  # a shell that ignores it (no job control): leave it so
                self._old_tstp = current
                signal.signal(signal.SIGTSTP, self._on_stop)
        elif not on and self._old_tstp is not None:
            signal.signal(signal.SIGTSTP, self._old_tstp)
            self._old_tstp = None

    def _on_stop(self, signum, frame) -> None:
        mine = os.getpid() == self.pid  # a forked child (a compile worker) inherits the handler: it only stops
        if mine and self.saved is not None and self._foreground():
            if self.prompt_follows:  # out of the queue before the shell takes the terminal, for the next prompt
                _STASH.append(self._queued())
            self._set(self.saved)
            self._paste(False)
            self._show_cursor()
        clock.suspend(self._on_stop)  # stopped here until SIGCONT (fg / bg); the reply's timing leaves it out
        if mine and self.saved is not None and self.waits and not self._foreground():  # `bg`: it waits for `fg`
            from .. import terminal  # (it streamed on over the shell's prompt and the keys typed there)

            with clock.paused():
                terminal.wait_foreground(self.fd)
        if mine and self.saved is not None and self._foreground():  # back in the foreground: held again
            self._set(self.held)
            self._paste(True)

    def drain(self) -> None:
        """A chat's reply streams: until undrain, the terminal's queue is read out into the stash the next prompt
        starts from (stashed) whenever it holds DRAIN_AT bytes. Held only, and only for a chat's prompt."""
        if self._drainer is not None or self.saved is None or not self.prompt_follows:
            return
        wake_r, wake_w = os.pipe()
        thread = threading.Thread(target=self._drain, args=(wake_r,), name="yi-chat keys", daemon=True)
        self._drainer = (thread, wake_w)
        thread.start()

    def undrain(self) -> None:
        """The reply has ended (or a prompt comes): keys typed from now on stay in the terminal's queue."""
        if self._drainer is None:
            return
        thread, wake_w = self._drainer
        self._drainer = None
        os.close(wake_w)  # the thread's select sees the end of its pipe
        thread.join()

    def _drain(self, wake: int) -> None:
        import select

        try:
            # a look at the queue's size every DRAIN_EVERY_S (a key does not wake this: what is typed stays in the
            # queue, where a signal's ending takes it and the prompt reads it, until a paste fills it)
            while not select.select([wake], [], [], DRAIN_EVERY_S)[0]:
                # _queued: nothing in the background (Ctrl-Z, `bg`: the queue is the shell's)
                with _READING:  # (not taken meanwhile by take or a Ctrl-Z)
                    if _waiting(self.fd) >= DRAIN_AT and (got := self._queued()):
                        _STASH.append(got)
        except (OSError, ValueError):  # the terminal is gone
            return
        finally:
            os.close(wake)

    def discard(self) -> None:
        """Drop the keys typed ahead (the chat ends by Ctrl-C: there is no next prompt for them, and the shell
        would run them), as a terminal does on Ctrl-C without the hold's NOFLSH."""
        self.undrain()
        stashed()
        if self._foreground():
            try:
                termios.tcflush(self.fd, termios.TCIFLUSH)
            except (termios.error, OSError):
                pass

    def take(self) -> bytes:
        """The keys typed ahead, those a Ctrl-Z took first, then those read out of the terminal's queue (the chat
        ends: the shell would run them)."""
        self.undrain()
        with _READING:
            return stashed() + self._queued()

    def _queued(self) -> bytes:
        """The keys in the terminal's queue, read out. Held, the terminal gives whatever it has queued without waiting
        for a line. Not held, nothing is taken: keys typed then were echoed where the shell has the terminal (or it
        is the shell's: the background), and are its."""
        if self.saved is None or not self._foreground():
            return b""
        import select

        got = b""
        try:
            with _READING:
                while len(got) < 1 << 20 and select.select([self.fd], [], [], 0)[0]:
                    chunk = os.read(self.fd, 4096)
                    if not chunk:
                        break
                    got += chunk
        except OSError:  # hung up: nothing is queued any more
            pass
        return got

    def pin(self) -> None:
        self.undrain()  # a prompt comes: the keys are its own to read
        self.hold()
        self.pinned = True

    def unpin(self) -> None:
        self.pinned = False
        self.release()

    def release(self) -> None:
        self.undrain()
        if self.saved is None or self.pinned:
            return
        attrs, self.saved = self.saved, None
        self._catch_stop(False)
        if not self._foreground():  # stopped (Ctrl-Z), then ended in the background: the shell has the terminal
            return  # and its own modes; a write would stop us again (SIGTTOU)
        self._set(attrs)
        self._paste(False)

    def _set(self, attrs) -> None:
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


def _pipe(fd: int) -> bool:
    """fd is a pipe, FIFO or socket (closed: as good as one, nothing to hold for)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return True
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def from_a_file() -> bool:
    """stdin is a file or a device (`< prompts.txt`, `< /dev/null`), not a pipe, FIFO or socket. Only then may a
    piped run hold the terminal's keys: at a pipe's other end a process may be using the terminal (`sudo cat log |
    yi-chat`, `cat | yi-chat -p -`, a password prompt), and a hold took its keys' echo and line editing from it
    (its Enter never ended a line) and, saving its modes, left them so when yi-chat ended."""
    return not _pipe(0)


def to_a_pipe() -> bool:
    """stdout is a pipe, FIFO or socket: its reader may be using the terminal too (`yi-chat < f | less`), whose
    modes a hold saved and put back after it had quit (echo off at the shell), or which saved the held ones. A
    piped run then holds nothing (`| tee` included): its keys echo, as they did."""
    return _pipe(1)


def hold_early():
    """A pinned KeyHold on the terminal yi-chat starts on, in our foreground (a background job would be stopped by
    setting its modes), else None. Stdin's, for the chat's first prompt; with stdin a file and stdout no pipe (a
    piped run: from_a_file, to_a_pipe), the one its replies are drawn on (stdout's, else stderr's) as
    cli.make_renderer holds it for the run: through a descriptor of its own, going on in the background (`waits`
    False), no bracketed paste."""
    piped = not os.isatty(0)
    if piped and (not from_a_file() or to_a_pipe()):
        return None
    screen = next((fd for fd in (1, 2) if os.isatty(fd)), None) if piped else 0
    if screen is None or terminal.background(screen):
        return None
    keys = piped_hold(screen) if piped else KeyHold(0)
    keys.pin()
    if keys.saved is None:
        if piped:
            os.close(keys.fd)
        return None
    return keys


def piped_hold(screen: int) -> KeyHold:
    """A piped run's hold on the terminal `screen` its replies are drawn on: through a descriptor of its own (fd 2
    is a file while a tokenizer runs: rust_panic), going on in the background (`waits` False), no bracketed paste
    (its markers would reach the shell after the run, as typed text)."""
    keys = KeyHold(os.dup(screen), waits=False)
    keys.paste = False
    return keys
