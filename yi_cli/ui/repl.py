"""The interactive loop: prompt_toolkit line editing, history, completion, toolbar; dispatch to Chat (no torch)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import stat
import sys
import threading
from pathlib import Path

from prompt_toolkit.application import create_app_session, get_app, run_in_terminal
from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.filters import Condition, is_searching
from prompt_toolkit.history import FileHistory, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings
from prompt_toolkit.keys import Keys
from prompt_toolkit.output import create_output
from prompt_toolkit.renderer import Renderer
from prompt_toolkit.search import stop_search
from prompt_toolkit.styles import Style
from prompt_toolkit.utils import get_cwidth, is_dumb_terminal

from .. import inputs, terminal
from ..conversation import attach, commands
from ..errors import YiError, shown
from ..held import signals_held
from ..safe_text import encodable, shows_unicode, visible
from . import dumb_prompt, keys, typed_ahead
from .typed_ahead import HISTORY_ENTRY_CHARS


def history(render):
    """A persistent history file (0600) in the data dir (typed_ahead.open_history); in-memory with a warning when it
    cannot be written: not ours, or not a regular file (a FIFO there hung the chat before its first prompt)."""
    path = typed_ahead.history_path()
    try:
        os.close(typed_ahead.open_history())
    except OSError as e:
        render.notice(history_off(str(path), path, e))
        return InMemoryHistory()
    return TailHistory(str(path), render.notice)


def history_off(name: str, path, e: OSError) -> str:
    """The notice that the input history file (`name` as said, at `path`) cannot be written, and why: as the chat
    starts (history) or at a message's append (TailHistory)."""
    why = e.strerror or e
    if isinstance(e, typed_ahead.NotRegularFile):
        try:
            why = f"not a regular file: a {inputs.kind_of(path)}"
        except OSError:  # what is there cannot be looked at now either: said as it was refused
            pass
    return f"history is off: cannot write {name} ({why})"


HISTORY_TAIL = 4 << 20  # bytes of the history file read at start: thousands of lines, more than arrows reach
HISTORY_ENTRIES = 10_000  # of those, the newest entries ↑ and Ctrl-R go through (each of HISTORY_ENTRY_CHARS at most)


class TailHistory(FileHistory):
    """FileHistory that reads only the last HISTORY_TAIL bytes of its file: the whole of a multi-GB file was read
    before the first prompt took a key (prompt_toolkit loads it in its event loop). The file keeps every line, and
    each new one is appended as before; Up and Ctrl-R reach the newest entries only, an entry cut by the tail's
    start left out, not shown in part. Opened non-blocking and checked to be a regular file again: it may have
    been replaced since history() looked. A line that cannot be appended (a full disk, the file made read-only
    since) turns the file's part off, said once after the prompt: prompt_toolkit's event loop printed a traceback
    at every message (the lines stay in the session's memory, for Up)."""

    def __init__(self, filename: str, notice=None):
        super().__init__(filename)
        self.notice = notice
        self.failed: str | None = None  # why appending failed, until said
        self.off = False

    def store_string(self, string: str) -> None:
        if self.off:
            return
        try:  # not FileHistory's: its open() of a FIFO put there since the start waited for a reader, the chat hung
            typed_ahead.append([string], Path(self.filename))
        except OSError as e:
            self.off = True
            self.failed = history_off(shown(self.filename, 200), Path(self.filename), e)

    def say_failure(self) -> None:
        """The notice of a failed append, once, where the prompt has ended (read_line)."""
        if self.failed and self.notice is not None:
            self.notice(self.failed)
        self.failed = None

    def load_history_strings(self):
        try:
            fd = os.open(self.filename, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            return []
        with open(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return []
            start = max(0, st.st_size - HISTORY_TAIL)
            f.seek(start)
            data = f.read(HISTORY_TAIL)
        lines = data.split(b"\n")
        if start:  # from the first entry that begins inside the tail: a partial line, and "+" lines before it, go
            first = next((i for i in range(1, len(lines)) if not lines[i].startswith(b"+")), len(lines))
            lines = lines[first:]  # (popped one at a time from the front: 10 s for an entry of 220K lines)
        strings: list[str] = []
        entry: list[str] = []
        for raw in lines:  # as FileHistory parses it: "+" lines are an entry's, any other line ends one
            line = raw.decode("utf-8", errors="replace")
            if line.startswith("+"):
                entry.append(line[1:])
            elif entry:
                strings.append("\n".join(entry))
                entry = []
        if entry:
            strings.append("\n".join(entry))
        # the newest HISTORY_ENTRIES, each of HISTORY_ENTRY_CHARS at most (left in the file, out of ↑'s reach): an
        # entry of 3 MB made ↑ and then each key take 11 s, and Ctrl-R over 400,000 entries 8 s a key
        return reversed([t for t in strings if len(t) <= HISTORY_ENTRY_CHARS][-HISTORY_ENTRIES:])


class Dropped(KeyboardInterrupt):
    """Ctrl-C at the prompt: the line dropped. A signal that ends the prompt (end_prompt) raises KeyboardInterrupt
    itself, and its line is kept: the two were one, and a line dropped as a SIGTERM came was kept as typed ahead."""


def bindings() -> KeyBindings:
    kb = KeyBindings()

    @kb.add("escape", "enter")
    def _(event):  # Esc-Enter (or Alt-Enter) inserts a newline; Enter sends
        event.current_buffer.insert_text("\n")

    @kb.add(Keys.Vt100MouseEvent)
    def _(event):
        """A mouse report, or keys that read as one (Esc [ 1 m typed by hand, during a reply too): no mouse is
        asked for, so nothing to do. prompt_toolkit's own handler took `\x1b[1m` apart as three numbers and printed
        a traceback, then "Press ENTER to continue", which ate the next keys."""

    @kb.add("c-c")
    @kb.add(Keys.SIGINT)
    def _(event):
        """Ctrl-C at the prompt drops the line, marked `^C` as a shell marks it: left as it was typed, the line on
        the screen read as a message sent whose reply never came. In a history search (Ctrl-R, Ctrl-S) it ends the
        search first, as bash does: the prompt ended with the search field focused, and every later prompt opened
        in that dead field (Enter, Ctrl-D, /exit: nothing worked). A SIGINT sent with kill (prompt_toolkit's
        `<sigint>`) is a Ctrl-C: its own handler dropped the line unmarked, as if a signal had ended the chat."""
        if is_searching():
            stop_search()
        b = event.app.current_buffer
        b.cursor_position = len(b.text)
        b.insert_text("^C")
        event.app.exit(exception=Dropped, style="class:aborting")

    if hasattr(signal, "SIGTSTP"):

        @kb.add("c-z")
        def _(event):
            stop_prompt(event.app)

    return kb


def stop_prompt(app) -> None:
    """Ctrl-Z (or a SIGTSTP sent with `kill`: read_line) suspends to the shell, as prompt_toolkit's own suspend does,
    but awaits the suspend's task: a SIGTERM, SIGHUP or SIGQUIT that came while stopped (`kill %1`, then `fg`) ends
    the prompt (end_prompt) as at any other instant, and an exception out of the task is not reported as "Task
    exception was never retrieved" with a traceback."""

    async def stop():
        await run_in_terminal(_suspend)
        dumb_prompt.resumed()  # (the full prompt redraws itself)
        stashed = parsed_into(app.input, keys.stashed())  # what was queued behind the Ctrl-Z: this prompt's
        if stashed:
            app.key_processor.feed_multiple(stashed)
            app.key_processor.process_keys()

    if app.is_running and not app.is_done:
        app.create_background_task(stop())


def _suspend() -> None:
    """Stopped until `fg` (after `bg`, until then, before prompt_toolkit sets the modes: terminal.py), by SIGTSTP's
    default action: the prompt's own handler (read_line) would take it again."""
    old = signal.signal(signal.SIGTSTP, signal.SIG_DFL)
    try:
        os.kill(0, signal.SIGTSTP)
        terminal.wait_foreground()
    finally:
        signal.signal(signal.SIGTSTP, old)


def continuation(width: int, line_number: int, wrap_count: int) -> str:
    """'... ' before each new line of a multi-line message; nothing before the terminal's own wraps of a long
    line, so that a long line (a URL) copied from the scrollback comes back whole."""
    return "... " if wrap_count == 0 else ""


def toolbar(chat, columns=None):
    """The bottom toolbar's text: the model, the context used, temperature, top_p, /help; as many of these whole as
    the window's width holds (`columns`: its width, else the prompt's output's), the first always (cut at 40
    columns, `top_p 0.` read as a setting of 0)."""

    def text():
        used = chat.context_used()  # /prompt's count: the conversation so far, each turn closed (meter.py)
        used = "?" if used is None else used  # a server that has not reported it yet
        ctx = chat.engine.context_length
        meter = f"ctx {used}/{ctx}" if ctx else f"ctx {used}"
        s = chat.settings
        fields = [f" {chat.engine.name}", meter, f"temp {s.temperature}", f"top_p {s.top_p}", "/help"]
        width = columns() if columns is not None else _columns()
        while len(fields) > 1 and get_cwidth(" · ".join(fields)) >= width:  # (the last column left free)
            fields.pop()
        return " · ".join(fields)

    return text


def _columns() -> int:
    return get_app().output.get_size().columns


def screen_output(stdout=None):
    """prompt_toolkit's output on `stdout` (None: sys.stdout), erasing its prompt line by line (erase_lines).

    The prompt with its bottom toolbar spans from the prompt line to the screen's last row (prompt_toolkit asks the
    terminal where the cursor is and pins the toolbar there). A narrowing resize rewraps the toolbar's full-width
    row into two, the screen overflows by a row and everything moves up one: at a prompt right under the banner
    the banner scrolls into the history and the prompt lands in the top row, and from then on the prompt fills the
    screen from its top row. prompt_toolkit redraws after a resize by erasing to the end of the screen (ED,
    `ESC [ J`) from the prompt line, and tmux (scroll-on-clear, on by default) takes an ED from the top-left corner
    for a cleared screen and scrolls what it held into the history first: each resize (two redraws each: the
    SIGWINCH and the size poll) left a copy of the stale prompt and toolbar in the scrollback, a screen apart."""
    from prompt_toolkit.output.vt100 import Vt100_Output

    output = create_output(stdout=stdout)
    if isinstance(output, Vt100_Output):
        output.erase_down = erase_lines(output)
    return output


def erase_lines(output):
    """Erase to the end of the screen as ED does, but a row at a time (EL on the cursor's row, then down a row and
    EL, for every row of the screen; the cursor saved and put back): the same cells cleared, and never a screen
    clear that a terminal could keep in its history. A cursor move down stops at the last row, so the count needs
    no knowledge of where the cursor is."""

    def erase_down() -> None:
        rows = max(output.get_size().rows, 1)
        output.write_raw("\x1b7\x1b[K" + "\x1b[B\x1b[2K" * (rows - 1) + "\x1b8")

    return erase_down


class ReflowRenderer(Renderer):
    """prompt_toolkit's renderer, erasing the prompt from where a terminal that rewraps its lines on resize (tmux,
    VTE, kitty, iTerm2, Windows Terminal) left its top row.

    prompt_toolkit redraws after a resize by going up from the cursor as many rows as it drew above it, and erasing
    from there. Its rows end with its own line breaks, so a narrowing rewraps each one longer than the new width
    into several rows (a widening joins none back): typed input over several rows then has more rows above the
    cursor than prompt_toolkit drew, it went up too few, and the redraw left the upper rows of the old prompt on
    the screen (and from there in the scrollback), or drew over them. After a change of width the way up is counted
    as the terminal now holds those rows: each rewrapped at the width it has now (two resizes before a redraw
    rewrap the rows as drawn once), and the cursor in the piece of its row where the rewrap put it (the last one
    when past the row's text). Installed only in a terminal known to rewrap (rewraps): in one that cuts its rows
    prompt_toolkit's count is right, and a larger one would erase lines above the prompt."""

    def erase(self, leave_alternate_screen: bool = True) -> None:
        screen, drawn = self._last_screen, self._last_size
        width = self.output.get_size().columns
        if screen is not None and drawn is not None and width != drawn.columns and width > 0:
            y = rows_to_cursor(screen, self._cursor_pos, drawn.columns, width, self._style_string_has_style)
            self._cursor_pos = self._cursor_pos._replace(y=y)
        super().erase(leave_alternate_screen=leave_alternate_screen)


# Terminals known to rewrap their rows on resize, by what they set in the environment. Elsewhere prompt_toolkit's
# count stays: a count too large erases lines above the prompt (a reply's), one too small leaves stale prompt rows.
REWRAPPING = ("TMUX", "VTE_VERSION", "KITTY_WINDOW_ID", "WT_SESSION", "ALACRITTY_WINDOW_ID", "WEZTERM_PANE")
REWRAPPING_PROGRAMS = ("iTerm.app", "Apple_Terminal", "vscode", "WezTerm", "ghostty")


def rewraps(env=os.environ) -> bool:
    """Whether the terminal rewraps its rows on resize: tmux (inside it, whatever holds it), VTE's (GNOME Terminal
    and others), kitty, Windows Terminal, Alacritty, WezTerm, iTerm2, Terminal.app, VS Code's, Ghostty, foot; by
    their variables, else by TERM. Not xterm, the Linux console or GNU screen (they cut rows), nor a terminal not
    recognised."""
    if any(env.get(name) for name in REWRAPPING):
        return True
    # over ssh, sudo or `env -i` only TERM comes along: tmux's own (tmux-256color, screen is GNU screen's) and
    # those of the terminals above that have their own terminfo entry
    return env.get("TERM_PROGRAM") in REWRAPPING_PROGRAMS or env.get("TERM", "").startswith(REWRAPPING_TERMS)


REWRAPPING_TERMS = ("tmux", "xterm-kitty", "alacritty", "wezterm", "foot", "xterm-ghostty", "vte")


def reflow_on_resize(app) -> None:
    """The application's renderer a ReflowRenderer where the terminal rewraps (once; a new one, as the application
    was just reset: run as its prompt's pre_run)."""
    old = app.renderer
    if not isinstance(old, ReflowRenderer) and rewraps():
        app.renderer = ReflowRenderer(
            old.style,
            old.output,
            full_screen=old.full_screen,
            mouse_support=old.mouse_support,
            cpr_not_supported_callback=old.cpr_not_supported_callback,
        )


def rows_to_cursor(screen, cursor, drawn: int, width: int, has_style=None) -> int:
    """The rows from the top row of `screen` (drawn `drawn` columns wide) down to the cursor's row, once a terminal
    has rewrapped each row at `width` columns. A row's text ends at its last character or styled cell (where
    prompt_toolkit stops writing it), `has_style[style]` telling the styled ones (the renderer's cache; None: no
    cell counts for its style)."""

    def pieces(y: int, upto: int | None = None) -> int:
        row = screen.data_buffer.get(y, {})
        cells = [(x, c) for x, c in row.items() if x < drawn]
        end = max(
            (x + max(c.width, 1) for x, c in cells if c.char != " " or (has_style and has_style[c.style])), default=0
        )
        if upto is not None and upto >= end:
            upto = None  # past the text: the rewrap leaves the cursor at the end of the row's last piece
        n, col, x = 1, 0, 0
        while x < end:
            c = row.get(x)
            w = max(c.width, 1) if c is not None else 1
            if col + w > width:
                n, col = n + 1, 0
            if upto is not None and x >= upto:
                return n
            col, x = col + w, x + w
        return n

    return sum(pieces(y) for y in range(cursor.y)) + pieces(cursor.y, cursor.x) - 1


# The toolbar's text in reverse video and the rest of its row plain: prompt_toolkit then writes the row only as far
# as the text (it leaves out unstyled trailing blanks), where the default style painted every cell of the row. A
# painted row is as wide as the terminal was, so any narrowing resize rewrapped it into two rows below the prompt,
# pushing the screen up a row (the prompt into the top row, then off it into the history: a stale `>>>`); the
# text alone rewraps only where the terminal gets narrower than it.
#
# A line given up with Ctrl-C (or left with Ctrl-D) is drawn a last time in prompt_toolkit's "aborting" ("exiting")
# style, grey: a coloured blank is written, so its row was painted to the last column the same way (blanks that a
# copy of the line took along, and that a narrowing rewrapped into a blank row). Drawn plain, it ends at its text.
TOOLBAR_STYLE = Style.from_dict(
    {"bottom-toolbar": "noreverse", "bottom-toolbar.text": "reverse", "aborting": "noinherit", "exiting": "noinherit"}
)

EDIT_PROMPT = "edit> "


EDITED: list[str] = []  # a message being rewritten (/edit) as a signal ended the chat: kept as a draft (_one_line)


def _keep_edit(text: str, old: str) -> None:
    if text.strip() and text != old:
        EDITED.append(text)


def editor(session, render, dumb: bool = False, ended=lambda: False):
    """/edit: $VISUAL/$EDITOR on a temp file when set (the terminal as the chat found it meanwhile), else the
    message inline, ready to change. None: the edit was given up, and the notice says why. dumb (TERM=dumb):
    prompt_toolkit's plain prompt shows only the keys typed, never a default text (it went out unseen, with what
    was typed after it): the message is shown above an empty edit> line, whose text replaces it. ended: whether a
    signal is ending the chat; the rewrite then goes where a draft at >>> goes, the input history (EDITED), where
    it was lost (inline, "edit cancelled"; an editor's saved file deleted with the editor killed)."""

    def edit(old: str, head: str = "") -> str | None:
        """head: old's start that holds its attached files' text (attach.leading), kept where a dumb terminal's
        line replaces what was typed (the files went without a word)."""
        # a blank value is none (EDITOR=' ' split to no words, and the temp file itself was run as the editor)
        cmd = os.environ.get("VISUAL", "").strip() or os.environ.get("EDITOR", "").strip()
        if not cmd:
            try:
                if not dumb:
                    return read_line(session, EDIT_PROMPT, render=render, default=old)
                files = " (its attached files stay)" if head else ""
                render.show(f"editing: {old[len(head) :]}\n(type the new message{files}; an empty line keeps this one)")
                new = read_line(session, EDIT_PROMPT)
                if new.strip():
                    return head + new
                render.notice("edit cancelled: your last message stays as it was")
                return None
            except (KeyboardInterrupt, EOFError, OSError) as e:
                if isinstance(e, OSError) and e.errno != errno.EIO:
                    raise
                # EOF with text in the line is no Ctrl-D (that ends an empty one only), and EIO a hangup: the
                # input closed, the window with it, the SIGHUP still to come (the shell's, after the kernel's hangup)
                closed = isinstance(e, OSError) or (isinstance(e, EOFError) and bool(session.default_buffer.text))
                if ended() or closed:
                    _keep_edit(session.default_buffer.text, old[len(head) :] if dumb else old)
                    return None
                render.notice("edit cancelled: your last message stays as it was")
                return None
        new = _edit_file(cmd, old, render, ended)
        if not new.strip():  # saved empty: the way to give up an edit in most editors (:%d, :wq)
            render.notice("edit cancelled: the file was left empty")
            return None
        if new != old:
            # The editor's screen is gone and the scrollback showed `>>> /edit` then the reply: the message sent is
            # shown as the inline edit> prompt leaves it, so the scrollback reads as the conversation.
            render.echo(EDIT_PROMPT, new)
            # and kept where Up finds it, as the inline edit> line is: a rewrite whose send failed (the server
            # down) was lost, a second /edit opening the message before it
            with contextlib.suppress(OSError):
                session.history.append_string(new)
        return new

    return edit


def _edit_file(cmd: str, old: str, render, ended=lambda: False) -> str:
    """`old` in a temp file, $EDITOR run on it, the file's text read back (trailing newlines dropped); what the
    editor had saved kept (EDITED) where a signal ends the chat meanwhile."""
    import shlex
    import subprocess
    import tempfile

    try:
        argv = shlex.split(cmd)
    except ValueError as e:  # `EDITOR='vim "'`: it was "'/edit' failed (ValueError: No closing quotation)"
        var = "VISUAL" if os.environ.get("VISUAL") else "EDITOR"
        raise YiError(
            f"{var}={shown(cmd, 200)} cannot be split into a command ({e}); the message stays as it was"
        ) from None
    fd, name = tempfile.mkstemp(suffix=".md")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(old)
        render.pin_keys(False)  # a line editor (ed) echoes through the terminal
        modes = _modes()
        exited = False
        try:
            screen = render.side_screen()  # stdout a file: the editor draws on the terminal
            try:
                code = _editor_ran([*argv, name], screen)
            except KeyboardInterrupt:
                if ended():  # (the editor killed): what it had saved (`:w`) went with its file
                    with contextlib.suppress(YiError, UnicodeDecodeError):
                        saved = inputs.read_bytes(name, inputs.SESSION_LIMIT, YiError, "message file")
                        _keep_edit(_read_back(saved, old), old)
                raise
            exited = code >= 0  # not killed by a signal
            if code == -signal.SIGINT:  # an editor that does not catch Ctrl-C (a wrapper: `code --wait`) ended by it
                raise KeyboardInterrupt
            if code:
                raise subprocess.CalledProcessError(code, cmd)
        except FileNotFoundError:  # EDITOR names no program: "([Errno 2] No such file or directory: 'nanox')"
            raise YiError(
                f"editor {cmd!r} not found (set EDITOR or VISUAL to one; /edit NEW TEXT needs no editor)"
            ) from None
        except (OSError, subprocess.CalledProcessError) as e:
            raise YiError(f"editor {cmd!r} failed ({e})") from None
        finally:
            if not exited:  # killed (SIGTERM to the chat kills it too): its screen and modes are still up
                _restore(modes, screen or sys.stdout)
            render.pin_keys(True)
        if not os.path.lexists(name):  # it was "'/edit' failed (FileNotFoundError: [Errno 2] ...)"
            raise YiError("the editor removed the file it was given; the message stays as it was")
        data = inputs.read_bytes(name, inputs.SESSION_LIMIT, YiError, "message file")  # a folder, a FIFO: said
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)
    try:
        return _read_back(data, old)
    except UnicodeDecodeError as e:  # a Latin-1 editor: it was "'/edit' failed (UnicodeDecodeError: ...)"
        raise YiError(
            f"the editor saved text that is not UTF-8 (byte {e.start}); the message stays as it was"
        ) from None


def _editor_ran(argv: list[str], screen) -> int:
    """The editor's exit status, once it exits. A Ctrl-C meanwhile is the editor's (ed's "stop this command"): the
    terminal sends it to the whole foreground group, and yi-chat took it too, killed the editor and dropped what it
    had saved (`w`); it is ignored here while the editor runs, as git does. The ending signals still end the chat
    (the editor killed, what it saved kept)."""
    import subprocess
    import time

    main = threading.current_thread() is threading.main_thread()
    # before the editor starts (one that printed at once met a Ctrl-C still ours); a handler is not inherited across
    # exec, so the editor gets its Ctrl-C as ever
    got: list[int] = []
    before = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum)) if main else None
    try:
        proc = subprocess.Popen(argv, stdout=screen)
        try:
            code = proc.wait()
        except BaseException:
            _kill_tree(proc)
            proc.wait()
            raise
        # Ended by the terminal's Ctrl-C, which reached this process too, maybe not yet its handler (another thread
        # took it): taken here, or the handler put back below raised it later, at any point of what follows (a
        # chat that hung after "interrupted" should have been said). Bounded: a SIGINT sent to the editor alone.
        deadline = time.monotonic() + 1.0
        while main and code == -signal.SIGINT and not got and time.monotonic() < deadline:
            time.sleep(0.01)  # a wait for the signal's handler to have run, with a deadline
        return code
    finally:
        if main:
            signal.signal(signal.SIGINT, before)


def _kill_tree(proc) -> None:
    """The editor killed with what it started: a wrapper (Debian's sensible-editor, a `#!/bin/sh` running `vim "$@"`)
    runs the editor as its child, and killing the wrapper alone left the editor running on the terminal after the
    chat ended (adopted by init; at the next key it wrote "Vim: Error reading input" over the shell). Its children
    are found through /proc before the kill (after it they are init's); elsewhere the editor alone."""
    pids, i = [proc.pid], 0
    while i < len(pids):
        try:
            for task in os.listdir(f"/proc/{pids[i]}/task"):
                with open(f"/proc/{pids[i]}/task/{task}/children") as f:
                    pids += [int(p) for p in f.read().split() if int(p) not in pids]
        except (OSError, ValueError):  # gone meanwhile, or no /proc
            pass
        i += 1
    proc.kill()
    for pid in pids[1:]:
        with contextlib.suppress(OSError):  # (a pid reused in the instant since: a process of this user's only)
            os.kill(pid, signal.SIGKILL)


def _read_back(data: bytes, old: str) -> str:
    """The text of the editor's file, `old` the message it was given."""
    # utf-8-sig: an editor that saves a BOM (Windows ones, vim's 'bomb') put U+FEFF before the message
    text = inputs.bom_text(data)
    # An editor's own line ends are read as text mode does. Where the message had CRs (a CRLF file attached) they
    # are its own: read so, its block changed, the file went into the message as text (a later /edit TEXT dropped it).
    if "\r" not in old:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.rstrip("\n")


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
            # the normal screen again, the cursor shown; the mouse reports, cursor keys and keypad an editor asked for
            # (vim's `mouse=a`) off: left on, every click in the terminal typed escapes into the shell
            screen.write("\x1b[?1049l\x1b[?25h\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?1l\x1b>")
            screen.flush()
        if modes is not None:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSANOW, modes)
    except (termios.error, OSError, ValueError):
        pass


@Condition
def command_typed() -> bool:
    """Whether the line so far is a command (starts with / or ／): only commands complete, so the completer runs while
    those are typed, not on every key of a message (each run redrew the prompt once more, after the key's own
    redraw: an extra redraw that a resize arriving meanwhile could meet half done)."""
    return get_app().current_buffer.text.lstrip().startswith(("/", "／"))


class CommandCompleter(Completer):
    """The slash commands that begin with what is typed, as the chat reads a command: after any leading blanks and
    in any case (`  /hi` and `/HI` complete to /history; WordCompleter matched from the line's first character and
    by case, so neither completed, while both run)."""

    def __init__(self, words: list[str]):
        self.words = words

    def get_completions(self, document, complete_event):
        typed = document.text_before_cursor.lstrip()
        if not typed.startswith(("/", "／")) or any(c.isspace() for c in typed):
            return
        for w in self.words:
            if w.lower().startswith(typed.lower()):
                yield Completion(w, start_position=-len(typed))


def parsed(raw: bytes) -> list:
    """Keys as the terminal sent them, as prompt_toolkit's key presses (a paste between its brackets one)."""
    from prompt_toolkit.input.vt100_parser import Vt100Parser

    got: list = []
    parser = Vt100Parser(got.append)
    parser.feed(raw.decode("utf-8", "replace"))
    parser.flush()
    return got


def parsed_into(keys_in, raw: bytes) -> list:
    """Keys read out of the terminal's queue (keys.stashed) as the prompt's input `keys_in` reads the terminal: its
    own decoder and parser, so that a character, an escape sequence or a paste cut where the queue was read goes on
    with what the terminal sends next (a reply's drain reads wherever the queue stands: a paste cut there, parsed
    alone, was dropped, and the rest of it sent as messages). The complete key presses are returned."""
    parser = getattr(keys_in, "vt100_parser", None)
    if parser is None:  # not a terminal's input
        return parsed(raw)
    decoder = getattr(getattr(keys_in, "stdin_reader", None), "_stdin_decoder", None)  # prompt_toolkit's, private
    text = decoder.decode(raw) if decoder is not None else raw.decode("utf-8", "replace")
    got: list = []
    callback, parser.feed_key_callback = parser.feed_key_callback, got.append
    try:
        parser.feed(text)
    finally:
        parser.feed_key_callback = callback
    return got


def stashed_first(keys_in) -> None:
    """The keys a Ctrl-Z took out of the terminal's queue during a reply or the load (keys.stashed) go into the
    prompt's typeahead, after what it read past the last line's Enter and before what is still queued: the order
    they were typed in."""
    from prompt_toolkit.input.typeahead import get_typeahead, store_typeahead

    stashed = parsed_into(keys_in, keys.stashed())
    if stashed:
        store_typeahead(keys_in, get_typeahead(keys_in) + stashed)


# Keys that raise a signal while a reply streams (the terminal keeps its signal keys then), read as keys when typed
# right after Enter: the signal each stands for.
SIGNAL_KEYS = {Keys.ControlC: "SIGINT", Keys.ControlZ: "SIGTSTP", Keys.ControlBackslash: "SIGQUIT"}


def signal_keys_typed_ahead(keys_in) -> set:
    """The signal keys (SIGNAL_KEYS) that came right after the Enter that sent the line: in the same read (the
    prompt kept them in its typeahead for the next prompt) or after the prompt's last read, while the terminal was
    still raw (bytes in its queue, not signals: a key a few ms after Enter, each its own write). Either way the reply
    they meant to stop ran to its end: the next prompt dropped its line at a Ctrl-C, suspended only then at a Ctrl-Z
    and dropped a Ctrl-\\. The first of each is taken out (the keys around it stay for the next prompt), for the
    caller to act as at its signal during the reply."""
    from prompt_toolkit.input.typeahead import get_typeahead, store_typeahead

    found: set = set()
    kept = []
    for k in get_typeahead(keys_in) + _queued(keys_in):
        if k.key in SIGNAL_KEYS and k.key not in found:
            found.add(k.key)
        else:
            kept.append(k)
    store_typeahead(keys_in, kept)
    return found


def raise_typed_signals(found: set) -> None:
    """A Ctrl-Z or Ctrl-\\ typed right after Enter (signal_keys_typed_ahead), as its signal: to this process's
    group, as the terminal sends it during the reply (the hold's handlers take ours: a stop until `fg`, the chat's
    end). To this process alone, a wrapper script or a `| tee` in the job ran on, and the shell never got the
    terminal back."""
    for key in (Keys.ControlZ, Keys.ControlBackslash):
        name = SIGNAL_KEYS[key]
        if key in found and hasattr(signal, name):
            os.kill(0, getattr(signal, name))


def _queued(keys_in) -> list:
    """The keys in the terminal's queue, read by the prompt's own input (its decoder and escape-sequence parser keep
    a character or a sequence cut at the end for its next read)."""
    import select

    got: list = []
    try:
        fd = keys_in.fileno()
        for _ in range(1024):  # a MiB at most
            if not select.select([fd], [], [], 0)[0]:
                break
            keys = keys_in.read_keys()
            if not keys and keys_in.closed:
                break
            got += keys
    except (OSError, ValueError, NotImplementedError):  # no descriptor (a DummyInput), or one closed
        pass
    return got


_READING: list = []  # (application, event loop) of the prompt reading a line, while its loop runs


def read_line(session, message: str, pre_run=None, render=None, **kwargs) -> str:
    """session.prompt(message), its application and event loop known meanwhile to end_prompt. With `render`, a line
    taller than the screen is shown whole once it is sent (too_tall)."""
    tall: list[str] = []
    hooked: list = []  # the application `done` watches, from its start (pre_run) to the prompt's end
    hooked_tstp: list = []  # SIGTSTP's handler before this prompt's (put back at its end)

    def started():
        loop = asyncio.get_running_loop()
        _READING.append((session.app, loop))
        # `kill -TSTP` at the prompt stopped the chat as during a reply (keys.py's hold, the screen left as it
        # was): after `fg` the prompt and its draft were not drawn again (the draft still there, unseen), and the
        # toolbar stayed on the shell's screen meanwhile. It stops as Ctrl-Z does.
        if hasattr(signal, "SIGTSTP") and threading.current_thread() is threading.main_thread():
            current = signal.getsignal(signal.SIGTSTP)
            if current != signal.SIG_IGN:  # a shell without job control: left ignored
                signal.signal(signal.SIGTSTP, lambda *_: loop.call_soon_threadsafe(stop_prompt, session.app))
                hooked_tstp.append(current)
        if render is not None:
            session.app.before_render += done
            hooked.append(session.app)
        if pre_run is not None:
            pre_run()

    def done(app) -> None:
        """The last draw, as the line is sent, or dropped by Ctrl-C (marked ^C: a draft taller than the screen was
        left without its first rows, its `>>>` included); not as Ctrl-D or a signal ends the prompt."""
        if not app.is_done or app.future.cancelled():
            return
        text = session.default_buffer.text
        failed = app.future.exception()
        if failed is not None and not isinstance(failed, Dropped):
            return
        if too_tall(app) or wrapped(app, text):
            app.erase_when_done = True
            tall.append(text)

    try:
        return session.prompt(message, pre_run=started, **kwargs)
    finally:
        _READING.clear()
        if hooked_tstp:
            signal.signal(signal.SIGTSTP, hooked_tstp[0])
        history = getattr(session, "history", None)
        if isinstance(history, TailHistory):
            history.say_failure()
        for app in hooked:
            app.before_render -= done
            app.erase_when_done = False
        if tall:
            render.echo(message, tall[0])


def too_tall(app) -> bool:
    """Whether the prompt as it is drawn when sent (no toolbar) is taller than the screen. prompt_toolkit draws at
    most a screen of it, the rows around the cursor: the rows above were never written, and a message typed or
    pasted longer than the screen was in the scrollback without its start (its `>>>` included). Such a prompt is
    erased when sent and the message written whole in its place, as the terminal wraps it (render.echo)."""
    size = app.output.get_size()
    return app.layout.container.preferred_height(size.columns, 1 << 20).preferred > size.rows


def wrapped(app, text: str) -> bool:
    """Whether prompt_toolkit broke a line of the message into rows itself (a line wider than the screen). Those
    breaks are its own line ends: a long URL stayed cut at the width in the scrollback (copied, or joined again
    where the terminal widens). Such a prompt is erased when sent and the message written in its place, as the
    terminal wraps it (render.echo), as a message taller than the screen is."""
    columns = app.output.get_size().columns
    return app.layout.container.preferred_height(columns, 1 << 20).preferred > text.count("\n") + 1


def end_prompt() -> bool:
    """For a signal handler (SIGTERM, SIGHUP, SIGQUIT): end the prompt reading a line through its own event loop,
    as Ctrl-C ends it (it raises KeyboardInterrupt); False where no prompt's loop runs. Raised from the handler
    instead, the KeyboardInterrupt came out of whatever the loop was running at that instant: one of prompt_toolkit's
    tasks (a traceback on stderr), or the loop itself, whose shutdown could then wait forever on a task left
    broken, the process holding its session's lock. A prompt already returning its line is left to return it (the
    caller sees chat.running turned off)."""
    if not _READING:
        return False
    app, loop = _READING[-1]

    def stop():
        if app.is_running and not app.future.done():
            app.exit(exception=KeyboardInterrupt, style="class:aborting")

    with contextlib.suppress(RuntimeError):  # the loop has closed: the prompt is returning
        loop.call_soon_threadsafe(stop)
    return True


# Characters prompt_toolkit would draw as they are, shown as their escapes (as safe_text shows them everywhere else):
# a bidi override in a message being edited (`edit>` of one with an attached file that holds U+202E) reordered the
# line on screen, so what was shown was not what would be sent. The buffer keeps them: only their drawing changes.
SHOWN_ESCAPED = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


class _Unencodable(dict):
    """prompt_toolkit's display mappings, and every character the terminal's encoding cannot encode drawn as its
    escape (safe_text.encodable) and measured as wide as that: prompt_toolkit wrote each as `?` (a CJK message
    became `??????` on its prompt line and in the scrollback)."""

    def __init__(self, base: dict, encoding: str):
        super().__init__(base)
        self.encoding = encoding

    def __contains__(self, ch) -> bool:
        return dict.__contains__(self, ch) or self[ch] != ch

    def __missing__(self, ch: str) -> str:
        shown = encodable(ch, self.encoding)
        self[ch] = shown  # cached; a character the terminal shows maps to itself
        return shown


def show_unencodable(stream) -> None:
    """Characters `stream`'s encoding cannot write drawn as escapes by prompt_toolkit (a terminal in a non-UTF-8
    locale, PYTHONIOENCODING=ascii); nothing changes for a UTF-8 one."""
    from prompt_toolkit import utils
    from prompt_toolkit.layout.screen import Char

    encoding = getattr(stream, "encoding", None) or "utf-8"
    if not shows_unicode(encoding) and not isinstance(Char.display_mappings, _Unencodable):
        mappings = Char.display_mappings = _Unencodable(Char.display_mappings, encoding)

        class Sizes(type(utils._CHAR_SIZES_CACHE)):
            """Each such character as wide as its escape, for the layout's wrapping too (get_cwidth): measured as
            the character, a line wrapped at other columns than it was drawn, and its last row was written over."""

            def __missing__(self, string: str) -> int:
                if len(string) == 1 and string in mappings:
                    self[string] = len(mappings[string])
                    return self[string]
                return super().__missing__(string)

        sizes = Sizes()
        sizes.update(utils._CHAR_SIZES_CACHE)
        utils._CHAR_SIZES_CACHE = sizes


def show_bidi_escaped() -> None:
    """Each mark drawn as its escape, and measured as wide as that (prompt_toolkit sizes a line by get_cwidth, 0
    for a mark: a message that wrapped only through its escapes was counted a row short)."""
    from prompt_toolkit.layout.screen import Char
    from prompt_toolkit.utils import _CHAR_SIZES_CACHE

    Char.display_mappings.update({c: visible(c) for c in SHOWN_ESCAPED})
    for c in SHOWN_ESCAPED:
        _CHAR_SIZES_CACHE[c] = len(visible(c))


def plain_output(side):
    """prompt_toolkit's output for a dumb terminal, on side (None: stdout): the prompt's text and nothing else. Its
    show-cursor escape, written as the prompt's application was made, was printed raw before the banner."""
    out = create_output(stdout=side)
    out.show_cursor = out.hide_cursor = lambda: None  # no cursor to show or hide there
    return out


def run(chat, prompt_text: str = ">>> ") -> int:
    AHEAD.clear()
    EDITED.clear()
    show_bidi_escaped()
    names = [*commands.TABLE, *commands.ALIASES]
    # and with an input method's full-width slash, as typed: `／his` completes to `／history`, which runs as /history
    words = [slash + n for slash in ("/", "／") for n in names]
    side = chat.render.side_screen()  # None: stdout, else the terminal where stdout is a file
    show_unencodable(side or sys.stdout)
    # TERM=dumb (Emacs' shell): prompt_toolkit's own plain prompt, no cursor moves, no toolbar. It takes it only
    # where it was given no output, and writes it on its session's: with stdout a file, the session's is the
    # terminal on stderr (the session is made here: its output is fixed then).
    dumb = is_dumb_terminal()
    with create_app_session(output=plain_output(side)) if dumb else contextlib.nullcontext():
        session = dumb_prompt.Session(
            output=None if dumb else screen_output(side),
            history=history(chat.render),
            key_bindings=bindings(),
            completer=CommandCompleter(words),
            complete_while_typing=False if dumb else command_typed,
            bottom_toolbar=None if dumb else toolbar(chat),
            style=TOOLBAR_STYLE,
            prompt_continuation=continuation,
        )
    chat.editor = editor(session, chat.render, dumb, ended=lambda: chat.terminated)
    chat.render.banner(f"yi-chat · {chat.engine.name} · /help for commands, Ctrl-D to exit")
    while chat.running:
        try:
            if not _one_line(chat, session, prompt_text):
                break
        except KeyboardInterrupt:  # Ctrl-C between a reply's end and the next prompt (twice quickly): it ended the
            continue  # chat (exit 130); there is nothing to stop then. A signal's has stopped the chat (running)
    return 0


AHEAD: list[str] = []  # the keys typed ahead as a signal ended the chat (_one_line), for cli to keep


def _typeahead(session) -> str:
    """The keys the prompt read past the Enter that sent its line (prompt_toolkit's typeahead, for the next
    prompt), a paste among them between the terminal's paste brackets, as the terminal sent it."""
    from prompt_toolkit.input.typeahead import get_typeahead

    return "".join(
        typed_ahead.PASTE_START + k.data + typed_ahead.PASTE_END if k.key == Keys.BracketedPaste else k.data
        for k in get_typeahead(session.input)
    )


def _one_line(chat, session, prompt_text: str) -> bool:
    """Prompt for one line and handle it; False at Ctrl-D (or where the input closed: a window closed)."""
    # Held from before the prompt (which puts back the mode it found) until the line is handled: keys typed
    # after Enter wait unechoed for the next prompt, however long the reply takes to start.
    chat.render.pin_keys(True)
    draft = ""  # the line at a prompt that a signal ended
    eof = False  # Ctrl-D: the chat ends, as at /exit
    try:
        stashed_first(session.input)
        try:
            line = read_line(session, prompt_text, pre_run=lambda: reflow_on_resize(session.app), render=chat.render)
        except Dropped:  # Ctrl-C at the prompt clears the line
            return True
        except KeyboardInterrupt:  # a signal that ends the chat: the line goes to the input history
            draft = session.default_buffer.text
            return True
        except EOFError:  # Ctrl-D, or the input closed (a window closed: the kernel's hangup comes before the
            eof = True  # shell's SIGHUP): Ctrl-D ends an empty line only, so a line there was typed and is kept
            draft = session.default_buffer.text
            _unsent(chat)
            return False
        except OSError as e:  # the terminal hung up under the prompt (a window closed): EIO as the prompt put its
            if e.errno != errno.EIO:  # modes back, out of the prompt, and the line typed there was lost
                raise
            eof = True
            draft = session.default_buffer.text
            return False
        chat.render.pin_keys(True)  # the prompt turned bracketed paste off: a paste during the reply stays one
        last = chat.session.turns[-1:]
        try:
            if chat.running:  # else a SIGTERM, SIGHUP or SIGQUIT came as the prompt returned the line (end_prompt)
                typed = signal_keys_typed_ahead(session.input)
                chat.interrupt_next = Keys.ControlC in typed
                raise_typed_signals(typed)
                if chat.running:  # (a Ctrl-\\ ends the chat as SIGQUIT does: the line is kept below)
                    chat.handle(line)
        except KeyboardInterrupt:  # a third Ctrl-C during a reply, or one between replies: back to the prompt
            if not chat.terminated:
                chat.render.notice("interrupted")
        if chat.terminated and chat.session.turns[-1:] == last and commands.is_message(line):
            _keep_sent(chat, line)
        elif not chat.running and not chat.terminated:  # /exit
            _unsent(chat)
    finally:
        chat.interrupt_next = False  # a command's line with no reply does not pass it on to a later one
        # no prompt comes (a signal, /exit, Ctrl-D): the keys typed ahead, taken while still held (after /exit or
        # Ctrl-D they were dropped without a word: a line typed during the reply that ended with /exit was lost)
        if (chat.terminated or eof or not chat.running) and not AHEAD:
            with signals_held():  # (a second signal: once they are taken)
                draft = draft or (EDITED.pop() if EDITED else "")  # /edit's rewrite, at edit> or in an editor
                # the draft between paste brackets: its line breaks are one message's, not Enters (were split)
                draft = typed_ahead.PASTE_START + draft + typed_ahead.PASTE_END if draft else ""
                AHEAD.append(draft + _typeahead(session) + chat.render.take_keys().decode("utf-8", "replace"))
        chat.render.pin_keys(False)
    return True


def _unsent(chat) -> None:
    """`-f notes.txt` or /file, then Ctrl-D or /exit: the file went unsent without a word."""
    if chat.attachments:
        names = attach.names(chat.attachments)
        chat.render.notice(f"{names}: attached, but the chat ended before a message took it; not sent")


def _keep_sent(chat, line: str) -> None:
    """A message the prompt returned, ended by a signal before its reply began (as the prompt returned it, or
    while it was prepared): recorded as a reply stopped as it starts, as a Ctrl-C typed with its Enter records it.
    It was dropped: on the screen as sent, in the input history, not in the session (-c never saw it)."""
    chat.interrupt_next = True
    with contextlib.suppress(KeyboardInterrupt):  # a second signal: nothing more can be kept
        chat.handle(line)
