"""Output: a rich Live markdown panel on a terminal; plain text or JSON lines for pipes (no torch)."""

from __future__ import annotations

import io
import json
import sys

from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown
from rich.text import Text as RichText

from ..engines.events import FINISH_ERROR, Stats
from ..safe_text import safe


def footer(stats: Stats) -> str:
    parts = [
        stats.finish_reason,
        f"{stats.prompt_tokens} prompt tok",
        f"{stats.new_tokens} new tok",
        f"ttft {stats.ttft_s:.2f}s",
    ]
    if stats.decode_tok_s:
        parts.append(f"{stats.decode_tok_s:.1f} tok/s")
    return " · ".join(parts)


def split_blocks(text: str) -> tuple[str, str]:
    """Split markdown into (finished blocks, live tail) at the last blank line outside a code fence."""
    fence = False
    cut = 0
    pos = 0
    for line in text.splitlines(keepends=True):
        pos += len(line)
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
        elif not fence and line.strip() == "" and pos < len(text):
            cut = pos
    return text[:cut], text[cut:]


class Renderer:
    """Base: writes command output and notices; subclasses show the reply stream."""

    def __init__(self, console: Console, err: Console):
        self.console = console
        self.err = err

    def show(self, renderable) -> None:
        """Output of a command (text or a rich renderable)."""
        self.console.print(
            safe(renderable) if isinstance(renderable, str) else renderable, markup=False, highlight=False
        )

    def notice(self, msg: str) -> None:
        self.err.print(safe(msg), markup=False, highlight=False, style="yellow", soft_wrap=True)

    def error(self, msg: str) -> None:
        # soft_wrap: one failure is one line on stderr, however narrow rich thinks a pipe is
        self.err.print(f"error: {safe(msg)}", markup=False, highlight=False, style="bold red", soft_wrap=True)

    def reply_start(self, prompt: str) -> None: ...

    def reply_text(self, delta: str) -> None: ...

    def reply_end(self, text: str, stats: Stats | None) -> None: ...

    def command_done(self, name: str) -> None: ...


class LiveRenderer(Renderer):
    """A terminal: the reply renders as markdown; finished blocks are printed once, only the tail stays live
    (rich Live repeats output taller than the screen, rich#3263)."""

    def __init__(self, console: Console, err: Console, show_stats: bool = True):
        super().__init__(console, err)
        self.show_stats = show_stats
        self.live: Live | None = None
        self.text = ""
        self.printed = 0
        self.held: list[str] = []  # notices that came while a reply was live (an engine's thread): shown after it

    def reply_start(self, prompt: str) -> None:
        self.text, self.printed = "", 0
        self.live = Live(Markdown(""), console=self.console, refresh_per_second=12, vertical_overflow="visible")
        self.live.start()

    def reply_text(self, delta: str) -> None:
        self.text += safe(delta)
        done, tail = split_blocks(self.text[self.printed :])
        if done.strip():
            self.console.print(Markdown(done))
        self.printed += len(done)
        self.live.update(Markdown(tail))

    def notice(self, msg: str) -> None:
        if self.live is not None:  # printing into the live region's place would leave half a reply behind
            self.held.append(msg)
        else:
            super().notice(msg)

    def reply_end(self, text: str, stats: Stats | None) -> None:
        if self.live is not None:
            self.live.update(Markdown(self.text[self.printed :]))
            self.live.stop()
            self.live = None
        if stats is not None and stats.finish_reason == "interrupted":
            self.console.print(RichText("[interrupted]", style="yellow"))
        if stats is not None and self.show_stats and stats.finish_reason != FINISH_ERROR:  # the error line says it
            self.console.print(RichText(footer(stats), style="dim"))
        held, self.held = self.held, []
        for msg in held:
            super().notice(msg)


class PlainRenderer(Renderer):
    """Pipes: the reply's text as it streams, then a blank line separating it from the next one."""

    def __init__(self, console: Console, err: Console, out=None, show_stats: bool = False):
        super().__init__(console, err)
        self.out = out or sys.stdout
        self.show_stats = show_stats

    def reply_text(self, delta: str) -> None:
        self.out.write(safe(delta))
        self.out.flush()

    def reply_end(self, text: str, stats: Stats | None) -> None:
        if stats is not None and stats.finish_reason == "interrupted":
            self.out.write(" [interrupted]")
        self.out.write("\n\n")
        self.out.flush()
        if stats is not None and self.show_stats and stats.finish_reason != FINISH_ERROR:  # the error line says it
            self.notice(footer(stats))


class JsonRenderer(Renderer):
    """--json: one JSON object per turn on stdout (and per command, with its output as text)."""

    def __init__(self, console: Console, err: Console, out=None):
        super().__init__(console, err)
        self.out = out or sys.stdout
        self.prompt = ""
        self.pending = ""

    def show(self, renderable) -> None:
        buf = io.StringIO()
        Console(file=buf, width=100, color_system=None).print(renderable, markup=False, highlight=False)
        self.pending += buf.getvalue()

    def command_done(self, name: str) -> None:
        self._write({"command": name, "output": self.pending})
        self.pending = ""

    def reply_start(self, prompt: str) -> None:
        self.prompt = prompt

    def reply_end(self, text: str, stats: Stats | None) -> None:
        self._write({"prompt": self.prompt, "reply": text, **(stats.to_dict() if stats else {})})

    def _write(self, obj: dict) -> None:
        self.out.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.out.flush()
