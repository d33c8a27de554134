"""yi-chat's own progress display for long one-time work, such as the demo model's first-run conversion (no torch).

On a terminal: one rich progress line (spinner, stage, a bar over the stages, elapsed time) that leaves a single
line when done. Piped: one line per stage on stderr. Meanwhile other libraries' progress bars and chatter
(transformers' tqdm bars "Converting and de-quantizing GGUF tensors", "Loading weights", "Writing model shards")
are silenced: they would interleave with ours and stay above the first prompt.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time

from . import terminal


class Stages:
    """with Stages(title, n) as s: s.stage("reading ..."); ...; s.stage("writing ...") — n stages in order.

    `prepare` runs once the display shows, before the output is silenced (set up a library's own logging there:
    a log handler keeps the stream it is created with)."""

    def __init__(self, title: str, total: int, stream=None, prepare=None):
        self.title = title
        self.total = total
        self.prepare = prepare
        self.stream = stream or sys.stderr  # taken now: while silenced, sys.stderr is a sink
        self.done = 0
        self.progress = None
        self.quiet = contextlib.ExitStack()

    def __enter__(self) -> Stages:
        self.t0 = time.monotonic()
        if self.stream.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TimeElapsedColumn,
            )

            # transient: the line goes when done; no redirects: rich would print the silenced chatter above it.
            self.progress = Progress(
                SpinnerColumn(),
                stage_column(),
                BarColumn(bar_width=12),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=terminal.console(file=self.stream),
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            rewrap_safe(self.progress).start()
            self.task = self.progress.add_task(self.title, total=self.total)
        if self.prepare is not None:
            self.prepare()
        self.quiet.enter_context(silenced())
        return self

    def stage(self, what: str) -> None:
        """The next stage begins (the previous one is done)."""
        if self.progress is not None:
            self.progress.update(self.task, completed=self.done, description=f"{self.title}: {what}")
        else:
            self._line(f"{self.title}: {what} ({self.done + 1}/{self.total})")
        self.done += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        self.quiet.close()
        if self.progress is not None:
            self.progress.update(self.task, completed=self.done)
            self.progress.stop()
        if exc_type is None:
            self._line(f"{self.title}: ready in {time.monotonic() - self.t0:.0f} s")

    def _line(self, msg: str) -> None:
        print(f"yi-chat: {msg}", file=self.stream, flush=True)


def stage_column():
    """The stage's text as a progress column (made where rich is imported) that gives way to the others in a
    terminal narrower than the line: it is cut, with an ellipsis. A plain TextColumn kept its whole width and rich's
    table left the spinner, the bar, the count and the time out (at 60 columns the line was the text alone, still
    for the minute of a first run, as if hung)."""
    from rich.measure import Measurement
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Cut:
        def __init__(self, text: str):
            self.text = Text(text, no_wrap=True, overflow="ellipsis")

        def __rich_measure__(self, console, options):
            return Measurement(1, self.text.cell_len)

        def __rich_console__(self, console, options):
            text = self.text.copy()
            text.truncate(options.max_width, overflow="ellipsis")
            yield text

    class Column(ProgressColumn):
        def render(self, task):
            return Cut(task.description)

    return Column()


def rewrapped_rows(cells: int, width: int) -> int:
    """The rows a line of `cells` cells takes in a terminal `width` wide that rewraps it (at least one)."""
    return max(1, -(-cells // max(width, 1)))


def erase_rows(rows: int) -> str:
    """From the cursor's row, its first column: erase it and the `rows` - 1 below, the cursor back where it was
    (DECSC / DECRC around EL and cursor-down: never ED, which tmux takes for a screen cleared into its history)."""
    return "\r\x1b7\x1b[2K" + "\x1b[B\x1b[2K" * (rows - 1) + "\x1b8"


def spinner(console, text):
    """console.status(text)'s transient spinner line as a rich Live (a context manager), drawn as rewrap_safe draws:
    the status of a model's load left its upper row behind where the terminal narrowed under it."""
    from rich.live import Live
    from rich.spinner import Spinner

    live = Live(Spinner("dots", text=text, style="status.spinner"), console=console, refresh_per_second=12.5)
    live.transient = True
    return _rewrap_safe_live(live)


def rewrap_safe(progress):
    """`progress` (a rich Progress, not started) drawn so that a terminal narrowed under it leaves no stale row.

    rich leaves the cursor at the end of its last line and, to redraw, goes up a row for each line it drew: a
    terminal that rewraps the line on narrowing (tmux, VTE, kitty, iTerm2) has put its end on a lower row, and the
    rows above it stayed on the screen and in the scrollback (`model.safetensors ━━━━╺━━ 2` above the ready line).
    Here the cursor goes back to the display's first column after each draw, where a rewrap keeps it, and a redraw
    erases downward from there as many rows as the last draw takes at the width now (the render.py status line's
    way: DECSC and DECRC around EL and cursor-down; nothing is below a live display)."""
    _rewrap_safe_live(progress.live)
    return progress


def _rewrap_safe_live(live):
    """rewrap_safe's drawing for a rich Live (not started): returns it."""
    from rich.control import Control
    from rich.live_render import LiveRender
    from rich.segment import ControlType, Segment

    console = live.console

    def raw(text: str) -> Control:
        c = Control()
        c.segment = Segment(text, None, [(ControlType.CARRIAGE_RETURN,)])  # written as it is, zero cells
        return c

    class AtStart(LiveRender):
        def erase(self) -> str:
            width, height = self._shape
            return erase_rows(height * rewrapped_rows(width, console.size.width))

        def position_cursor(self):
            return raw(self.erase()) if self._shape is not None else Control()

        def restore_cursor(self):  # at stop: after its line feed, one row down from the start; erase, stay there
            return raw("\x1b[A" + self.erase()) if self._shape is not None else Control()

        def __rich_console__(self, console, options):
            yield from super().__rich_console__(console, options)
            if self._shape is not None:  # back to the first column of the first line
                yield raw("\r" + "\x1b[A" * (self._shape[1] - 1))

    mine = AtStart(live._live_render.renderable, live._live_render.style, live._live_render.vertical_overflow)
    live._live_render = mine
    return live


@contextlib.contextmanager
def silenced():
    """Python-level stdout/stderr into a sink, and tqdm off (TQDM_DISABLE is read when tqdm is first imported)."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield
