"""Output: the reply streamed once, markdown tinted, on a terminal; plain text or JSON lines for pipes (no torch)."""

from __future__ import annotations

import io
import json
import re
import sys

from rich.cells import cell_len, set_cell_size
from rich.console import Console
from rich.measure import Measurement
from rich.segment import Segment, Segments
from rich.style import Style
from rich.text import Text as RichText

from .. import terminal
from ..engines.events import FINISH_ERROR, FINISH_LENGTH, Stats
from ..progress import erase_rows, rewrapped_rows
from ..safe_text import LineEnds, json_line, one_line, safe


def _unpadded(text: str) -> str:
    """Rich's output for a file or a pipe without the spaces a table pads each line with to the console's width."""
    return "\n".join(line.rstrip() for line in text.split("\n"))


# Terminal columns a table column needs to be folded legibly by rich: a cell, its padding and a separator.
FOLD_COLUMNS = 4


def make_console(**kw) -> Console:
    """A rich Console that writes text as it is: rich's `:name:` emoji codes off (a `/system` or a file name with
    `:x:` in it, `a[:x:2]` in a prompt, were shown as ❌ by /system, /prompt, /history, errors and a pipe's copy)."""
    return terminal.console(emoji=False, **kw)


def measure(renderable) -> Measurement:
    """The widths a renderable (a table) takes, as it is printed: markup off. Measured with it on (rich's default),
    a cell's `[length]` mark or a message's `[b]` was a tag of no width, and a table printed as wide as that had the
    row's end folded onto a continuation line."""
    ruler = make_console(width=1 << 20, color_system=None)
    return ruler.measure(renderable, options=ruler.options.update(markup=False, highlight=False))


def print_table(console: Console, renderable, whole: bool) -> None:
    """A table on `console`: as rich lays it out in a terminal of at least FOLD_COLUMNS a column of it. Narrower
    (COLUMNS=8: rich drew /history's rows blank, at 10 without its role column), whole rows, which the terminal
    wraps; a file or a pipe as wide as its rows if whole (rich folds cells at 80 columns there). Lines unpadded
    (`cat -A` showed the spaces, `grep 'x$'` missed)."""
    if console.is_terminal and console.width >= FOLD_COLUMNS * len(getattr(renderable, "columns", ())):
        console.print(Segments(_trimmed(console, renderable)), markup=False, highlight=False)
        return
    console.file.write(piped(renderable, console.width, whole or console.is_terminal))
    console.file.flush()


def _trimmed(console: Console, renderable) -> list[Segment]:
    """The renderable's lines as `console` lays them out, each without the blanks after its text: padded to the
    window's width, every row of /help or /history became two when the window narrowed (a terminal that rewraps
    its lines wraps the padding too), and a copy from the scrollback took the spaces along."""
    out: list[Segment] = []
    options = console.options.update(markup=False, highlight=False)  # a cell's `[length]` is text, not markup
    for line in console.render_lines(renderable, options, pad=False, new_lines=False):
        while line and not line[-1].control and not line[-1].text.strip():  # blank cells at the end
            line.pop()
        if line and not line[-1].control:
            line[-1] = Segment(line[-1].text.rstrip(), line[-1].style)
        out += [*line, Segment.line()]
    return out


def piped(renderable, width: int, whole: bool) -> str:
    """A renderable (a table) for a file or a pipe, as text at `width` columns without the padding at its lines'
    ends; whole: as wide as its widest row needs, if wider, so that no cell's text is folded onto continuation
    lines (`/history`'s turns stay one line each in a pipe)."""
    wide = measure(renderable).maximum if whole else 0
    buf = io.StringIO()
    make_console(file=buf, width=max(width, wide), color_system=None).print(renderable, markup=False, highlight=False)
    return _unpadded(buf.getvalue())


CUT_AT_LIMIT = "the reply stopped at the token limit (--max-new-tokens)"
CUT_AT_CONTEXT = "the reply stopped at the end of the context"  # the model's, or --context's


def footer(stats: Stats) -> str:
    parts = [stats.finish_reason + (" (end of the context)" if stats.at_context else "")]
    if stats.prompt_tokens is not None:  # a server that sent no usage (or a reply cut before it came): not known
        parts.append(f"{stats.prompt_tokens} prompt tok")
    parts.append(f"{stats.new_tokens} new tok")
    if stats.new_tokens:  # none: a prompt stopped while it was read has no first token ('ttft 0.00s' read as instant)
        parts.append(f"ttft {stats.ttft_s:.2f}s")
    if stats.decode_tok_s:
        parts.append(f"{stats.decode_tok_s:.1f} tok/s")
    if (stats.tokens_per_step or 0) > 1:  # speculative decoding kept drafts
        parts.append(f"{stats.tokens_per_step:.2f} tok/step")
    return " · ".join(parts)


class MarkdownTint:
    """Styles streamed markdown line by line without changing a character: headings bold, fenced code in colour.

    A line's kind shows in its first characters; until it does (a bare '#', '`' or '~' run), they are held back.
    """

    MARKS = frozenset(("", "#", "##", "###", "####", "#####", "######", "`", "``", "~", "~~"))

    def __init__(self):
        self.fence = False
        self.kind: str | None = None  # None: the line's kind is not known yet
        self.held = ""

    def feed(self, text: str) -> list[tuple[str, str | None]]:
        """(text, kind) pieces to show now; kind is None for plain text. A line at a time (a character at a time,
        each piece merged into a growing string, took minutes for a server's reply of 2 MB in one chunk)."""
        out: list[tuple[str, str | None]] = []
        at = 0
        while at < len(text):
            end = text.find("\n", at)
            line = text[at:] if end < 0 else text[at:end]
            at = len(text) if end < 0 else end + 1
            if self.kind is None:
                k = self._take_start(line)
                if self.kind is not None:
                    out.append((self.held, self.kind))
                    self.held = ""
                line = line[k:]
            if line:  # the kind is known: the rest of the line as it is
                out.append((line, self.kind))
            if end >= 0:
                if self.kind is None:
                    self._decide(final=True)
                out.append((self.held + "\n", self.kind))
                self.kind, self.held = None, ""
        return [(t, None if k == "text" else k) for t, k in _merge(out)]

    def _take_start(self, line: str) -> int:
        """Hold the start of `line` until its kind shows (at most a few characters past its indent); how many of
        its characters were taken."""
        k = len(line) - len(line.lstrip(" "))
        if self.held.strip(" ") == "":  # an indent alone decides nothing: taken whole
            self.held += line[:k]
        else:
            k = 0
        while k < len(line) and self.kind is None:
            self.held += line[k]
            k += 1
            self._decide()
        return k

    def after(self, text: str) -> None:
        """Take up the state that `text` (shown already: the cut reply a /continue extends) leaves: inside a code
        fence or not, and the kind of its unfinished last line. A start held back is decided as it stands (it is
        on the screen as plain text): held, it would be written again with the continuation."""
        self.feed(text)
        if self.held:
            self._decide(final=True)
            self.held = ""

    def flush(self) -> list[tuple[str, str | None]]:
        """The held-back start of an unfinished last line (the reply ended or was cut)."""
        if not self.held:
            return []
        self._decide(final=True)
        held, kind, self.held, self.kind = self.held, self.kind, "", None
        return [(held, None if kind == "text" else kind)]

    def _decide(self, final: bool = False) -> None:
        s = self.held.lstrip(" ")
        if s in self.MARKS and not final:
            return
        if s.startswith(("```", "~~~")):
            self.kind, self.fence = "code", not self.fence
        elif self.fence:
            self.kind = "code"
        elif re.match(r"#{1,6}( |$)", s):
            self.kind = "heading"
        else:
            self.kind = "text"


# Control characters in a reply would move the cursor or restyle the terminal (\r overwrites, ESC sequences clear
# or recolour): they are shown in caret notation, as `cat -v` does, so the screen is the reply's text. The bidi
# embedding, override and isolate marks reorder what a bidi terminal (VTE's) shows: as the pipes show them, `\u202e`.
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    def caret(m):
        o = ord(m.group())
        if o > 0xFF:
            return f"\\u{o:04x}"
        return ("M-" if o >= 0x80 else "") + "^" + chr((o & 0x7F) ^ 0x40)

    return CONTROL.sub(caret, text)


def _merge(pieces):
    """Neighbouring pieces of one kind as one (joined once: a string grown piece by piece copies itself each time)."""
    merged: list[tuple[list[str], str | None]] = []
    for text, kind in pieces:
        if merged and merged[-1][1] == kind:
            merged[-1][0].append(text)
        else:
            merged.append(([text], kind))
    return [("".join(parts), kind) for parts, kind in merged]


class Renderer:
    """Base: writes command output and notices; subclasses show the reply stream."""

    commands = False  # as a TerminalRenderer's transcript: takes the commands' output too (JSON lines)
    status_cells = 0  # the width of the status line shown last (what the next one has to overwrite or erase)

    screen = None  # the terminal stream a REPL draws its prompt on (cli.make_renderer), None: stdout
    keys = None  # a KeyHold on the terminal the run is drawn on (keys.py), or None

    def side_screen(self):
        """The terminal the REPL draws on where it is not stdout (stdout a file or a pipe), else None."""
        return self.screen if self.screen not in (None, sys.stdout) else None

    def __init__(self, console: Console, err: Console):
        self.console = console
        self.err = err

    def show(self, renderable, whole: bool = False) -> None:
        """Output of a command (text or a rich renderable). Text is written as it is (soft_wrap: rich would break it
        at the console's width, 80 columns in a pipe, and /prompt's template, /system's text would read as if they
        held those line breaks); a terminal wraps it on screen. whole: a table whose rows a file or a pipe gets
        unfolded, however wide (a terminal folds them to its width)."""
        if isinstance(renderable, str):
            self.console.print(safe(renderable), markup=False, highlight=False, soft_wrap=True)
            return
        print_table(self.console, renderable, whole)

    def banner(self, text: str) -> None:
        """The REPL's first line."""
        self.show(text)

    def echo(self, prompt: str, text: str) -> None:
        """A message sent that the screen does not show (an /edit made in $EDITOR), drawn as a prompt leaves a
        typed one: `prompt` before its first line, the REPL's `... ` before the others; the terminal wraps it."""
        first, *rest = safe(text).split("\n")
        shown = "\n".join([prompt + first, *("... " + line for line in rest)])
        self.console.print(shown, markup=False, highlight=False, soft_wrap=True)

    def notice(self, msg: str) -> None:
        self.err.print(safe(msg), markup=False, highlight=False, style="yellow", soft_wrap=True)

    def error(self, msg: str) -> None:
        # soft_wrap: one failure is one line on stderr, however narrow rich thinks a pipe is
        self.err.print(f"error: {one_line(msg)}", markup=False, highlight=False, style="bold red", soft_wrap=True)

    def progress(self, status: str | None) -> None:
        """A status line on a terminal's stderr while a long prompt is read (the engine's thread, before any reply
        text); None erases it. Pipes get nothing. The line is cut to fit the terminal's width (short of its last
        column): one that wrapped left its upper rows behind, on the screen and in the scrollback, at each update
        and when erased (the carriage return and EL reach only the cursor's row).

        A terminal narrowed under it rewraps it into more rows all the same (tmux, VTE, kitty, iTerm2): the cursor is
        left at the line's start, where a rewrap keeps it (on the line's first row; at its end it would be on the
        last), and each update erases down from there as many rows as the last status takes at the width now (DECSC
        and DECRC around EL and cursor-down: never ED, which tmux takes for a screen cleared into its history). Those
        rows are the status's own: nothing is written below it while the prompt is read."""
        if self.err.is_terminal:
            text = visible(status) if status else ""
            width = self.err.size.width
            room = max(width - 1, 0)
            if cell_len(text) > room:
                text = set_cell_size(text, room).rstrip()
            if self.err.is_dumb_terminal:  # no erase there: spaces over what the last status left past this one
                pad = max(self.status_cells - cell_len(text), 0)
                self.err.file.write("\r" + text + " " * pad + ("\r" + text if pad else ""))
            else:
                rows = rewrapped_rows(self.status_cells, width)  # the last status's rows, rewrapped at this width
                self.err.file.write(erase_rows(rows) + text + ("\r" if text else ""))
            self.status_cells = cell_len(text)
            self.err.file.flush()

    def reply_start(self, prompt: str, after: str = "") -> None:
        """A reply begins; after: the text it continues (/continue: the cut reply, already shown)."""

    def reply_text(self, delta: str) -> None: ...

    def reply_end(self, text: str, stats: Stats | None, error: str | None = None) -> None:
        """A reply ends; error: why it failed (its line follows, through error())."""

    def message_start(self, text: str) -> None:
        """A message is about to be sent (it may still be refused before its reply starts)."""

    def failure(self, msg: str) -> None:
        """A failure's line, for a renderer that records it beside the screen's (--json's objects)."""

    def line_done(self) -> None:
        """The line in hand was abandoned (a Ctrl-C out of it): no message or command is in hand any more."""

    def command_start(self, name: str) -> None: ...

    def command_done(self, name: str) -> None: ...

    def release_keys(self) -> None:
        """Give the terminal its echo back, unless pinned (a reply cut short by an exception never reached
        reply_end)."""
        if self.keys is not None:
            self.keys.release()

    def discard_keys(self) -> None:
        """Drop the keys typed ahead: the chat ends by Ctrl-C, and the shell would run them."""
        if self.keys is not None:
            self.keys.discard()

    def take_keys(self) -> bytes:
        """The keys typed ahead, taken out of the terminal's queue (the chat ends, and the shell would run them):
        a chat's own (TerminalRenderer); a piped run's are the shell's."""
        return b""

    def pin_keys(self, on: bool) -> None:
        """on: keys typed from now on are held (not echoed) until pin_keys(False), whatever replies start and
        end meanwhile; the REPL pins them around each prompt and the handling of its line, a piped run drawn on a
        terminal for the whole run."""
        if self.keys is not None:
            self.keys.pin() if on else self.keys.unpin()


class TerminalRenderer(Renderer):
    """A terminal: the reply streams as it comes, written once and never redrawn, so the scrollback holds each
    reply exactly once whatever its height, the width, a resize or Ctrl-C (a redrawn live panel repeats what
    scrolled off, rich#3263, and leaves stale copies when the terminal reflows it). Markdown keeps its characters;
    headings and code are tinted as they stream. Keys typed meanwhile are held for the next prompt (keys.py)."""

    def __init__(self, console: Console, err: Console, show_stats: bool = True, keys=None, transcript=None):
        super().__init__(console, err)
        self.show_stats = show_stats
        self.keys = keys  # a KeyHold on the terminal's stdin, or None
        # a PlainRenderer on stdout while the chat is drawn on stderr (stdout a file or a pipe): each reply once,
        # as a piped run writes it; dropped with a notice if stdout goes away
        self.transcript = transcript
        self.tint = MarkdownTint()
        self.ends = LineEnds()  # CRLF as LF, as a pipe writes it (a terminal showed ^M)
        self.line_open = False  # the reply's last line has no newline yet
        styles = {"heading": Style(bold=True), "code": Style(color="cyan"), "dim": Style(dim=True)}
        self.styles = {k: v.without_color for k, v in styles.items()} if console.no_color else styles
        self.streaming = False  # a reply is being written
        self.held: list[str] = []  # notices that came while a reply streamed (an engine's thread): shown after it

    def reply_start(self, prompt: str, after: str = "") -> None:
        self.tint, self.line_open, self.streaming = MarkdownTint(), False, True
        self.ends = LineEnds()
        self.tint.after(after)  # a /continue inside a code fence goes on tinted as code (and its end closes it)
        piece = cut_word(after)
        if piece:  # a reply cut mid-word: its piece again (dim, after an ellipsis), the continuation ends the word
            self._write([("…" + piece, "dim")])
        if self.keys is not None:
            self.keys.hold()
            self.keys.drain()  # a chat's: a paste longer than the terminal's queue does not hold up a Ctrl-C
        self._copy("reply_start", prompt)

    def reply_text(self, delta: str) -> None:
        self._write(self.tint.feed(self.ends.feed(delta)))
        self._copy("reply_text", delta)

    def banner(self, text: str) -> None:  # the screen's, never the transcript's
        super().show(text)

    def show(self, renderable, whole: bool = False) -> None:
        super().show(renderable, whole)
        self._copy("show", renderable, whole, command=True)

    def error(self, msg: str) -> None:
        super().error(msg)
        self._copy("failure", msg)

    def message_start(self, text: str) -> None:
        self._copy("message_start", text)

    def line_done(self) -> None:
        self._copy("line_done")

    def command_start(self, name: str) -> None:
        self._copy("command_start", name, command=True)

    def command_done(self, name: str) -> None:
        self._copy("command_done", name, command=True)

    def _copy(self, what: str, *args, command: bool = False) -> None:
        """The transcript's `what` too; a command's output only to a transcript that takes it (--json's)."""
        if self.transcript is None or (command and not self.transcript.commands):
            return
        try:
            getattr(self.transcript, what)(*args)
        except (OSError, ValueError) as e:  # a closed pipe, a full disk: the chat goes on, on the screen only
            self.transcript = None
            why = "is closed" if isinstance(e, BrokenPipeError | ValueError) else f"failed ({e.strerror or e})"
            self.held.append(f"stdout {why}: replies are shown here only from now on")

    def notice(self, msg: str) -> None:
        if self.streaming:  # a line printed into the reply's own would cut it in two
            self.held.append(msg)
        else:
            super().notice(msg)

    def reply_end(self, text: str, stats: Stats | None, error: str | None = None) -> None:
        self._write(self.tint.feed(self.ends.flush()) + self.tint.flush())
        self._copy("reply_end", text, stats, error)
        if self.line_open:
            self.console.file.write("\n")
            self.line_open = False
        if stats is not None and stats.finish_reason == "interrupted":
            self.console.print(RichText("[interrupted]", style="yellow"), soft_wrap=True)
        if stats is not None and self.show_stats and stats.finish_reason != FINISH_ERROR:  # the error line says it
            self.console.print(RichText(footer(stats), style="dim"), soft_wrap=True)  # the terminal wraps it
        self.streaming = False
        if self.keys is not None:
            self.keys.undrain()  # keys typed from now on wait in the terminal's queue for the prompt
        held, self.held = self.held, []
        for msg in held:
            super().notice(msg)
        self.release_keys()

    def take_keys(self) -> bytes:
        # a piped run's hold (`waits` False: `-p TEXT < file` drawn here) keeps keys that are the shell's
        return b"" if self.keys is None or not self.keys.waits else self.keys.take()

    def _write(self, pieces) -> None:
        if not pieces:
            return
        colors = self.console._color_system  # None: no terminal colours (TERM=dumb, a file)
        for text, kind in pieces:
            text, style = visible(text), self.styles.get(kind)
            if style and colors:  # styled line by line: a newline inside the codes would carry them to the next
                text = "\n".join(style.render(part, color_system=colors) if part else "" for part in text.split("\n"))
            self.console.file.write(text)
        self.line_open = not pieces[-1][0].endswith("\n")
        self.console.file.flush()


CUT_WORD = 40  # columns of a cut word that /continue shows again, at most
# Chinese and Japanese put no spaces between words: a clause ends at its punctuation (full-width comma, full stop,
# enumeration comma, closing brackets and quotes ...)
CLAUSE_END = re.compile(r"[\u3001\u3002\u300d\u300f\u3011\u300b\u3009\uff01\uff09\uff0c\uff1a\uff1b\uff1f\u2026]")


def cut_word(text: str) -> str:
    """The word a reply cut mid-word ends with (its last CUT_WORD columns; "" where it ends with a space or a
    line break): /continue shows it again before the continuation, which otherwise began on a line of its own with
    the rest of the word ("lo world" for a reply cut at "hel"). Chinese, with no spaces, is taken from its last
    clause's punctuation on: the whole run since the last space was shown again, 40 characters (80 columns)."""
    if not text or text[-1].isspace():
        return ""
    word = CLAUSE_END.split(text.split()[-1][-CUT_WORD:])[-1]
    while cell_len(word) > CUT_WORD:
        word = word[1:]
    return word


class PlainRenderer(Renderer):
    """Pipes: the reply's text as it streams, then a blank line separating it from the next one (a command's output
    too: /history's table ran into the next reply)."""

    def __init__(self, console: Console, err: Console, out=None, show_stats: bool = False, say_cuts: bool = True):
        super().__init__(console, err)
        self.out = out or sys.stdout
        self.show_stats = show_stats
        self.say_cuts = say_cuts  # False: a terminal's transcript, whose screen's stats line says it
        self.ends = LineEnds()  # a CRLF split across two pieces is LF too
        self.shown = self.replied = False  # the command in hand wrote output; a reply

    def show(self, renderable, whole: bool = False) -> None:
        super().show(renderable, whole)
        self.shown = True

    def command_start(self, name: str) -> None:
        self.shown = self.replied = False

    def command_done(self, name: str) -> None:
        if self.shown and not self.replied:  # /retry's reply ended with its own blank line
            self.console.file.write("\n")
            self.console.file.flush()

    def reply_text(self, delta: str) -> None:
        self.out.write(safe(self.ends.feed(delta)))
        self.out.flush()

    def reply_end(self, text: str, stats: Stats | None, error: str | None = None) -> None:
        self.out.write(safe(self.ends.flush()))
        if not text and stats is not None and stats.finish_reason == FINISH_ERROR:  # failed before any text: no
            return  # reply (an empty one was a phantom turn to a reader splitting on blank lines), the error says it
        if stats is not None and stats.finish_reason == "interrupted":
            self.out.write(" [interrupted]")
        self.out.write("\n\n")
        self.out.flush()
        self.replied = True
        if stats is not None and self.show_stats and stats.finish_reason != FINISH_ERROR:  # the error line says it
            self.notice(footer(stats))
        elif stats is not None and stats.finish_reason == FINISH_LENGTH and self.say_cuts:  # it was silent
            self.notice(CUT_AT_CONTEXT if stats.at_context else CUT_AT_LIMIT)


class JsonRenderer(Renderer):
    """--json: one JSON object per turn on stdout (and per command, with its output as text). A failure is in the
    JSON too, its line as `error`: a failed reply's object, a refused message's (finish_reason "error", nothing
    counted), a failed command's, or one of its own (`{"error": ...}`: a stdin line skipped)."""

    commands = True

    def __init__(self, console: Console, err: Console, out=None):
        super().__init__(console, err)
        self.out = out or sys.stdout
        self.prompt = ""
        self.pending = ""
        self.replied = False  # a reply was written since the command in hand started
        self.asked = False  # a message is in hand and no object says what became of it yet
        self.command: str | None = None  # the command in hand
        self.errors: list[str] = []  # its failures' lines
        self.said: str | None = None  # the failure a reply's object holds already (its line comes after it)

    def banner(self, text: str) -> None:  # not a command's output: on the terminal, not in the JSON lines
        self.err.print(safe(text), markup=False, highlight=False, soft_wrap=True)

    def show(self, renderable, whole: bool = False) -> None:
        if not isinstance(renderable, str):  # as Renderer.show writes it to a pipe, at 100 columns
            self.pending += piped(renderable, 100, whole)
            return
        buf = io.StringIO()  # text as it is, as Renderer.show writes it
        make_console(file=buf, width=100, color_system=None).print(
            renderable, markup=False, highlight=False, soft_wrap=True
        )
        self.pending += buf.getvalue()

    def error(self, msg: str) -> None:
        super().error(msg)
        self.failure(msg)

    def failure(self, msg: str) -> None:
        if msg is self.said:
            self.said = None
        elif self.asked:  # a refused message, also one a command sent again (/retry, /edit: it was the command's)
            refused = Stats(prompt_tokens=None, finish_reason=FINISH_ERROR)
            by = {"command": self.command} if self.command is not None else {}
            self._write({**by, "prompt": self.prompt, "reply": "", **refused.to_dict(), "error": msg})
            self.replied = self.command is not None  # its object is the command's
        elif self.command is not None:
            self.errors.append(msg)
        else:
            self._write({"error": msg})

    def message_start(self, text: str) -> None:
        self.prompt, self.asked = text, True

    def line_done(self) -> None:  # a command's object as it stands (its failures, its output so far)
        if self.command is not None:
            if not self.errors:  # stopped (a /file's wait given up): it said nothing failed, output ""
                self.errors.append("interrupted")
            self.command_done(self.command)
        self.asked = False

    def command_start(self, name: str) -> None:
        self.replied, self.asked, self.command, self.errors = False, False, name, []

    def command_done(self, name: str) -> None:
        failed = {"error": "; ".join(self.errors)} if self.errors else {}
        if self.pending or not self.replied or failed:  # /continue, /retry, /edit: their reply's object is the
            self._write({"command": name, "output": self.pending, **failed})  # command's
        self.pending, self.command, self.errors = "", None, []

    def reply_start(self, prompt: str, after: str = "") -> None:
        self.prompt = prompt

    def reply_end(self, text: str, stats: Stats | None, error: str | None = None) -> None:
        self.replied, self.said = True, error
        # a command's reply (/continue: the text it adds; /retry, /edit: the exchange's new reply) says which, where
        # it read as a new exchange (and /continue's as a message "/continue", sent with //continue)
        by = {"command": self.command} if self.command is not None else {}
        obj = {**by, "prompt": self.prompt, "reply": text, **(stats.to_dict() if stats else {}), **_failed(error)}
        self._write(obj)

    def _write(self, obj: dict) -> None:
        self.asked = False
        self.out.write(json_object(obj) + "\n")
        self.out.flush()


def json_object(obj: dict) -> str:
    """One --json line (no newline): the object as UTF-8 JSON, its terminal-unsafe characters escaped."""
    return json_line(json.dumps(obj, ensure_ascii=False))


def _failed(error: str | None) -> dict:
    return {"error": error} if error is not None else {}
