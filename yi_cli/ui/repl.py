"""The interactive loop: prompt_toolkit line editing, history, completion, toolbar; dispatch to Chat (no torch)."""

from __future__ import annotations

import os
import signal
import sys

from prompt_toolkit import PromptSession
from prompt_toolkit.application import run_in_terminal
from prompt_toolkit.completion import WordCompleter
from prompt_toolkit.history import FileHistory, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings

from .. import terminal
from ..conversation import commands
from ..errors import YiError
from ..paths import data_dir, private_dir


def history(render):
    """A persistent history file (0600) in the data dir; in-memory with a warning when it cannot be written."""
    path = data_dir() / "history"
    try:
        private_dir(path.parent)
        fd = os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
        return FileHistory(str(path))
    except OSError as e:
        render.notice(f"history is off: cannot write {path} ({e.strerror})")
        return InMemoryHistory()


def bindings() -> KeyBindings:
    kb = KeyBindings()

    @kb.add("escape", "enter")
    def _(event):  # Esc-Enter (or Alt-Enter) inserts a newline; Enter sends
        event.current_buffer.insert_text("\n")

    if hasattr(signal, "SIGTSTP"):

        @kb.add("c-z")
        def _(event):
            """Ctrl-Z suspends to the shell, as prompt_toolkit's own suspend does, but awaits the suspend's task: a
            SIGTERM or SIGHUP that came while stopped (`kill %1`, then `fg`) raises its KeyboardInterrupt in that
            task, which asyncio lets out of the event loop (the prompt ends as at any other instant), and with the
            task awaited asyncio no longer also reports it as "Task exception was never retrieved" with a
            traceback."""

            async def stop():
                await run_in_terminal(suspend)

            def suspend():  # after `bg`, stopped until `fg` before prompt_toolkit sets the modes (terminal.py)
                os.kill(0, signal.SIGTSTP)
                terminal.wait_foreground()

            event.app.create_background_task(stop())

    return kb


def continuation(width: int, line_number: int, wrap_count: int) -> str:
    """'... ' before each new line of a multi-line message; nothing before the terminal's own wraps of a long
    line, so that a long line (a URL) copied from the scrollback comes back whole."""
    return "... " if wrap_count == 0 else ""


def toolbar(chat):
    def text():
        used = chat.context_used()
        ctx = chat.engine.context_length
        meter = f"ctx {used}/{ctx}" if ctx else f"ctx {used}"
        s = chat.settings
        return f" {chat.engine.name} · {meter} · temp {s.temperature} · top_p {s.top_p} · /help"

    return text


EDIT_PROMPT = "edit> "


def editor(session, render):
    """/edit: $VISUAL/$EDITOR on a temp file when set (the terminal as the chat found it meanwhile), else the
    message inline, ready to change. None: the edit was given up, and the notice says why."""

    def edit(old: str) -> str | None:
        cmd = os.environ.get("VISUAL") or os.environ.get("EDITOR")
        if not cmd:
            try:
                return session.prompt(EDIT_PROMPT, default=old)
            except (KeyboardInterrupt, EOFError):
                render.notice("edit cancelled: your last message stays as it was")
                return None
        new = _edit_file(cmd, old, render)
        if not new.strip():  # saved empty: the way to give up an edit in most editors (:%d, :wq)
            render.notice("edit cancelled: the file was left empty")
            return None
        if new != old:
            # The editor's screen is gone and the scrollback showed `>>> /edit` then the reply: the message sent is
            # shown as the inline edit> prompt leaves it, so the scrollback reads as the conversation.
            render.echo(EDIT_PROMPT, new)
        return new

    return edit


def _edit_file(cmd: str, old: str, render) -> str:
    """`old` in a temp file, $EDITOR run on it, the file's text read back (trailing newlines dropped)."""
    import shlex
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile("w+", suffix=".md", encoding="utf-8") as f:
        f.write(old)
        f.flush()
        render.pin_keys(False)  # a line editor (ed) echoes through the terminal
        modes = _modes()
        ended = False
        try:
            screen = render.side_screen()  # stdout a file: the editor draws on the terminal
            done = subprocess.run([*shlex.split(cmd), f.name], stdout=screen)
            ended = done.returncode >= 0  # not killed by a signal
            if done.returncode:
                raise subprocess.CalledProcessError(done.returncode, cmd)
        except (OSError, subprocess.CalledProcessError) as e:
            raise YiError(f"editor {cmd!r} failed ({e})") from None
        finally:
            if not ended:  # killed (SIGTERM to the chat kills it too): its screen and modes are still up
                _restore(modes, screen or sys.stdout)
            render.pin_keys(True)
        with open(f.name, encoding="utf-8") as g:
            return g.read().rstrip("\n")


def _modes():
    """The terminal's modes on stdin, or None where it is not a terminal."""
    import termios

    try:
        return termios.tcgetattr(sys.stdin.fileno())
    except (termios.error, OSError, ValueError):
        return None


def _restore(modes, screen) -> None:
    """After an editor that did not exit by itself: its alternate screen left, the terminal's modes put back."""
    import termios

    try:
        if screen.isatty():
            screen.write("\x1b[?1049l\x1b[?25h")  # the normal screen again, the cursor shown
            screen.flush()
        if modes is not None:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSANOW, modes)
    except (termios.error, OSError, ValueError):
        pass


def run(chat, prompt_text: str = ">>> ") -> int:
    words = ["/" + n for n in commands.TABLE] + ["/" + a for a in commands.ALIASES]
    output = None
    if chat.render.side_screen() is not None:  # stdout is a file or a pipe
        from prompt_toolkit.output import create_output

        output = create_output(stdout=chat.render.side_screen())
    session = PromptSession(
        output=output,
        history=history(chat.render),
        key_bindings=bindings(),
        completer=WordCompleter(words, sentence=True),
        complete_while_typing=True,
        bottom_toolbar=toolbar(chat),
        prompt_continuation=continuation,
    )
    chat.editor = editor(session, chat.render)
    chat.render.banner(f"yi-chat · {chat.engine.name} · /help for commands, Ctrl-D to exit")
    while chat.running:
        # Held from before the prompt (which puts back the mode it found) until the line is handled: keys typed
        # after Enter wait unechoed for the next prompt, however long the reply takes to start.
        chat.render.pin_keys(True)
        try:
            try:
                line = session.prompt(prompt_text)
            except KeyboardInterrupt:  # Ctrl-C at the prompt clears the line
                continue
            except EOFError:  # Ctrl-D
                break
            try:
                chat.handle(line)
            except KeyboardInterrupt:  # a third Ctrl-C during a reply, or one between replies: back to the prompt
                if not chat.terminated:
                    chat.render.notice("interrupted")
        finally:
            chat.render.pin_keys(False)
    return 0
