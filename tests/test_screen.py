"""Replies in a real terminal (tmux): what the screen and the scrollback hold is the reply, exactly once.

yi-chat runs in a tmux pane as a person runs it. The reply comes from a scripted engine behind the test
OpenAI-compatible server on 127.0.0.1 (`--endpoint`), so the test knows the exact text the engine produced and
can pause it mid-reply; one test runs the real demo model. The scrollback is read with `capture-pane -J -S -`
(lines the terminal wrapped are joined back), so it compares with the reply's own lines at any width and after a
resize. Every wait is on screen content, an event or a process exit, with a deadline; none is a sleep.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from rich.cells import cell_len

from tests.openai_server import OpenAIServer
from yi_cli.engines.events import FINISH_INTERRUPTED, Finish, Stats, Text
from yi_cli.ui.render import visible

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="needs tmux (apt install tmux)")
DEADLINE = 120  # seconds any one wait may take on a loaded machine before the test fails
QUESTION = "tell me everything"
FOOTER = re.compile(r"^(stop|length|interrupted) · (\d+ prompt tok|\d+ new tok)")
# prompt_toolkit's bottom toolbar, at the bottom while a prompt waits (· escaped where the terminal's encoding lacks it)
TOOLBAR = re.compile(r"^ \S+ (·|\\xb7) ctx (\d+|\?)")


def markdown_reply(parts: int = 12) -> str:
    """A reply far taller than the screen: headings, long paragraphs that wrap, lists, code blocks."""
    out = ["# A long answer", ""]
    for i in range(parts):
        words = " ".join(f"w{i}.{j}" for j in range(70))
        out += [
            f"## Part {i}",
            "",
            f"Paragraph {i} starts here and runs on: {words} and ends.",
            "",
            f"- first point of part {i}",
            f"- second point, with `code {i}` inline",
            "  - a nested point",
            "",
            "```python",
            f"def part_{i}(x):",
            f"    return x * {i}  # a comment, not a heading",
            "```",
            "",
        ]
    out.append("The end.")
    return "\n".join(out)


class Scripted:
    """The engine behind the test server. It streams `reply` in chunks of 1-7 characters (split anywhere, even
    inside a code fence); after `pause_at` characters it sends only empty chunks (keep-alives, on which the client
    notices a cancel) until `go` is set, or until it is cancelled: then only Ctrl-C or a signal ends the reply."""

    name = "scripted"
    quant = None
    context_length = None
    template = None  # served: the messages go through as they are

    def describe(self):
        return ["a scripted engine"]

    def __init__(self, reply: str, pause_at: int | None = None):
        self.reply = reply
        self.pause_at = pause_at
        self.paused = threading.Event()  # the pause began: everything before it is on the wire
        self.go = threading.Event()
        self.sent = ""  # the text that went out
        self.prompts: list[str] = []  # the last user message of each request

    def stream(self, prompt, settings, cancel):
        messages = prompt.messages
        self.prompts.append(messages[-1]["content"])
        stats = Stats(prompt_tokens=len(messages), ttft_s=0.01)
        pos, size = 0, 0
        while pos < len(self.reply):
            if pos == self.pause_at:
                self.paused.set()
                while not (self.go.wait(0.02) or cancel.is_set()):
                    yield Text("")  # a keep-alive: the client checks its cancel on every chunk
            if cancel.is_set():
                stats.finish_reason = FINISH_INTERRUPTED
                break
            size = size % 7 + 1
            end = min(pos + size, len(self.reply), self.pause_at if self.pause_at and pos < self.pause_at else 1 << 30)
            piece = self.reply[pos:end]
            yield Text(piece)
            self.sent += piece
            stats.new_tokens += 1
            pos = end
        yield Finish(stats)


class Pane:
    """yi-chat alone in a tmux pane of its own tmux server (a private socket)."""

    def __init__(self, args, *, home: Path, width: int, height: int, argv=None):
        self.dir = tempfile.mkdtemp(prefix="yi-tmux-")  # short: a unix socket path has ~100 bytes
        self.sock = os.path.join(self.dir, "s")
        conf = os.path.join(self.dir, "conf")
        with open(conf, "w") as f:  # big scrollback; the pane stays after yi-chat exits, to read its status
            f.write(
                "set -g history-limit 100000\nset -g remain-on-exit on\nset -g status off\n"
                "set -g default-terminal xterm-256color\n"
            )
        env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "PROMPT_TOOLKIT_NO_CPR", "TMUX")}
        env["YI_CHAT_HOME"] = str(home)
        self.env = env
        # sh waits for yi-chat and writes its exit status (tmux's pane_dead_status can lag behind by seconds).
        self.status_file = os.path.join(self.dir, "status")
        self.tmux(
            "-f",
            conf,
            "new-session",
            "-d",
            "-x",
            str(width),
            "-y",
            str(height),
            "sh",
            "-c",
            f'"$@"; echo $? > {self.status_file}',
            "sh",
            *(argv or [sys.executable, "-m", "yi_cli", *map(str, args)]),  # argv: another program in the pane
        )

    def tmux(self, *args) -> str:
        return subprocess.run(
            [TMUX, "-S", self.sock, *args], env=self.env, capture_output=True, text=True, check=True, timeout=60
        ).stdout

    def scrollback(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-S", "-", "-E", "-", "-t", "0")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-t", "0")

    def wait(self, pred, what: str, deadline: float = DEADLINE, exits: bool = False) -> str:
        """The scrollback once pred(scrollback) holds; yi-chat exiting first fails, unless `exits`."""
        deadline += time.monotonic()
        while True:
            text = self.scrollback()
            if pred(text):
                return text
            if time.monotonic() > deadline or (self.dead() and not exits):
                raise AssertionError(f"waited for {what}; the terminal shows:\n{text[-3000:]}")
            time.sleep(0.02)  # the poll interval of a condition wait, not a guess at timing

    def prompt(self, deadline: float = DEADLINE) -> str:
        """Wait for an empty prompt, the last line above the toolbar."""
        return self.wait(lambda s: content(s)[-1:] == [">>>"], "the prompt", deadline)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "0", "-l", text)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "0", *keys)

    def resize(self, width: int, height: int) -> None:
        self.tmux("resize-window", "-t", "0", "-x", str(width), "-y", str(height))

    def pid(self) -> int:
        """yi-chat's process id: the one child of the pane's sh."""
        sh = int(self.tmux("display", "-p", "-t", "0", "#{pane_pid}"))
        with open(f"/proc/{sh}/task/{sh}/children") as f:
            (child,) = f.read().split()
        return int(child)

    def dead(self) -> bool:
        return self.tmux("display", "-p", "-t", "0", "#{pane_dead}").strip() == "1"

    def exit_status(self) -> int:
        def written(_):
            return os.path.exists(self.status_file) and open(self.status_file).read().endswith("\n")

        self.wait(written, "yi-chat to exit", exits=True)
        with open(self.status_file) as f:
            return int(f.read())

    def close(self) -> None:
        subprocess.run(
            [TMUX, "-S", self.sock, "kill-server"], env=self.env, capture_output=True, timeout=60, check=False
        )
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def term(home):
    """term(engine, width, height, *extra args) -> a Pane running yi-chat on `engine` behind the test server."""
    opened = []

    def start(engine, width, height, *args, model_args=None):
        if model_args is None:
            srv = OpenAIServer(engine, model="scripted").__enter__()
            opened.append(srv.__exit__)
            # the scripted replies come in chunks of a few characters, and the remote engine counts each as a token
            model_args = ["--endpoint", srv.url, "--model", "scripted", "--max-new-tokens", "100000"]
        pane = Pane([*model_args, *args], home=home, width=width, height=height)
        opened.append(lambda *a: pane.close())
        pane.prompt()
        return pane

    yield start
    for close in reversed(opened):
        close(None, None, None)


def reply_on_screen(scroll: str, question: str, end: re.Pattern | str) -> str:
    """The lines between the question's prompt line and the first line matching `end` after it."""
    lines = scroll.split("\n")
    start = max(i for i, ln in enumerate(lines) if ln.startswith(">>> " + question))
    for i in range(start + 1, len(lines)):
        if end.match(lines[i]) if isinstance(end, re.Pattern) else lines[i] == end:
            return "\n".join(lines[start + 1 : i])
    raise AssertionError(f"no {end!r} after the question in:\n{scroll[-3000:]}")


def content(scroll: str, blanks: bool = False) -> list[str]:
    """The lines without the toolbar and trailing blanks; blank lines only inside the text, and if `blanks`."""
    lines = [ln.rstrip() for ln in scroll.split("\n") if not TOOLBAR.match(ln) and (blanks or ln.strip())]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def lines_of(text: str) -> str:
    """The lines a terminal shows of a reply: control characters in caret notation (render.visible), tabs as
    spaces, no trailing blanks, without the newline ending the last line."""
    return "\n".join(ln.expandtabs().rstrip() for ln in visible(text).removesuffix("\n").split("\n"))


def saved(home: Path) -> list[dict]:
    """The turns of the newest session file in the store (one file per conversation)."""
    files = sorted((home / "data" / "sessions").glob("*.json"), key=lambda f: f.stat().st_mtime_ns)
    return json.loads(files[-1].read_text())["turns"]


def ask(pane: Pane, question: str = QUESTION) -> None:
    pane.type(question)
    pane.keys("Enter")


def footer_after(question: str):
    def done(scroll: str) -> bool:
        lines = scroll.split("\n")
        idx = [i for i, ln in enumerate(lines) if ln.startswith(">>> " + question)]
        return bool(idx) and any(FOOTER.match(ln) for ln in lines[idx[-1] :])

    return done


# 1. a reply taller than the screen, at several widths -----------------------------------------------------------------


@pytest.mark.parametrize("width,height", [(60, 12), (140, 40), (24, 10)])
def test_tall_markdown_reply_is_in_the_scrollback_once(term, home, width, height):
    reply = markdown_reply()
    engine = Scripted(reply)
    pane = term(engine, width, height)
    ask(pane)
    pane.wait(footer_after(QUESTION), "the footer")
    scroll = pane.prompt()
    assert engine.sent == reply
    shown = reply_on_screen(scroll, QUESTION, FOOTER)
    assert shown == lines_of(reply)  # every line once, in order: no copies of what scrolled off
    for i in range(12):
        assert scroll.count(f"Paragraph {i} starts") == 1
    # The visible screen is the end of the same text, then the footer and the prompt.
    # The visible screen is the end of that same text: the reply's last lines, the footer, the prompt.
    screen = "\n".join(content(pane.screen(), blanks=True))
    assert screen.endswith("tok/s\n>>>")
    assert "\n".join(content(scroll, blanks=True)).endswith(screen)


# 2. Ctrl-C mid-reply: a clean prefix, then [interrupted]; the session goes on -----------------------------------------


def test_ctrl_c_leaves_a_clean_prefix_then_interrupted(term, home):
    reply = markdown_reply()
    cut = reply.index("## Part 3")  # mid-reply, after a code block: the tint's state is mid-way too
    engine = Scripted(reply, pause_at=cut)
    pane = term(engine, 60, 12)
    ask(pane)
    pane.wait(lambda s: "return x * 2" in s and "```" in s.split("return x * 2")[-1], "the reply up to the pause")
    assert engine.paused.wait(DEADLINE)
    pane.keys("C-c")
    scroll = pane.wait(lambda s: "[interrupted]" in s, "[interrupted]")
    pane.prompt()
    shown = reply_on_screen(scroll, QUESTION, "[interrupted]")
    assert engine.sent == reply[:cut]
    assert shown == lines_of(reply[:cut])
    turns = saved(home)
    assert turns[-1]["finish_reason"] == "interrupted" and turns[-1]["content"] == reply[:cut]
    assert scroll.count("[interrupted]") == 1 and scroll.count("Paragraph 2 starts") == 1
    # The REPL goes on.
    engine.reply, engine.pause_at = "A short one.", None
    ask(pane, "and now?")
    scroll = pane.wait(footer_after("and now?"), "the second reply")
    assert reply_on_screen(scroll, "and now?", FOOTER) == "A short one."


def test_ctrl_c_sent_with_the_enter_stops_the_reply(home):
    """Enter and Ctrl-C in one write (a fast hand, tmux's send-keys): the prompt read both at once, kept the Ctrl-C
    in its typeahead for the next prompt, and the reply ran to its end (a run-through). The reply stops as at a
    Ctrl-C during it. Written at once into a pseudo-terminal (pexpect's send: one write), with SIGINT ignored from
    the start (it stays ignored, errors.catch): a Ctrl-C that came in a read of its own would be a signal that does
    nothing, or a key for the next prompt, and this reply never ends uncancelled. So the reply stops only where the
    Ctrl-C was read with the Enter, and taken from the typeahead (repl.signal_keys_typed_ahead, Chat.interrupt_next)."""
    pexpect = pytest.importorskip("pexpect")
    engine = Scripted(markdown_reply(), pause_at=0)  # nothing sent until it is cancelled
    with OpenAIServer(engine, model="scripted") as srv:
        chat = [sys.executable, "-m", "yi_cli", "--endpoint", srv.url, "--model", "scripted"]
        env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TMUX")}
        env.update(TERM="xterm-256color", PROMPT_TOOLKIT_NO_CPR="1", YI_CHAT_HOME=str(home))
        argv = ["-c", "trap '' INT; exec " + " ".join(map(shlex.quote, chat))]
        child = pexpect.spawn("/bin/sh", argv, env=env, encoding="utf-8", dimensions=(20, 80), timeout=DEADLINE)
        try:
            child.expect_exact(">>>")
            child.send(QUESTION)
            child.expect_exact(QUESTION)
            child.send("\r\x03")
            child.expect_exact("[interrupted]")
            child.expect_exact(">>>")
            assert engine.sent == ""
            assert saved(home)[-1]["finish_reason"] == "interrupted"
            # the next prompt starts empty, and takes a question as ever
            engine.reply, engine.pause_at = "A short one.", None
            child.send("and now?\r")
            child.expect_exact("A short one.")
            child.expect(FOOTER.pattern[1:])
            child.expect_exact(">>>")
            child.sendcontrol("d")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
    assert child.exitstatus == 0
    assert engine.prompts[-1] == "and now?"


def test_ctrl_c_queued_after_the_prompts_last_read_stops_the_reply():
    """Ctrl-C a few ms after Enter, each its own write: it came after the prompt's last read, while the terminal was
    still raw, so it stayed a byte in the terminal's queue (no signal), the reply ran to its end, and the next prompt
    dropped its line at it (`>>> ^C`; a tmux hunt, 3 of 3). signal_keys_typed_ahead reads the queue through the prompt's
    own input: the Ctrl-C is taken, the keys around it stay for the next prompt in the order typed, and an escape
    sequence cut at the queue's end is completed by the next read (the parser keeps its state)."""
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.input.typeahead import get_typeahead, store_typeahead
    from prompt_toolkit.keys import Keys

    from yi_cli.ui import repl
    from yi_cli.ui.repl import parsed, signal_keys_typed_ahead

    with create_pipe_input() as keys_in:
        store_typeahead(keys_in, parsed(b"ab"))  # read with the Enter
        keys_in.send_bytes("cé\x03d\x1b[".encode())  # queued: a character, Ctrl-C, a key, half an arrow
        assert signal_keys_typed_ahead(keys_in) == {Keys.ControlC}
        assert "".join(k.data for k in get_typeahead(keys_in)) == "abcéd"  # (taken: the next prompt's)
        keys_in.send_bytes(b"A")
        assert [k.key for k in keys_in.read_keys()] == [Keys.Up]  # the arrow, whole
        store_typeahead(keys_in, parsed(b"w\x1a"))  # Ctrl-Z read with the Enter, Ctrl-\ queued: each taken once
        keys_in.send_bytes(b"x\x1c\x1cy")
        assert signal_keys_typed_ahead(keys_in) == {Keys.ControlZ, Keys.ControlBackslash}
        assert "".join(k.data for k in get_typeahead(keys_in)) == "wx\x1cy"
        store_typeahead(keys_in, parsed(b"w"))
        keys_in.send_bytes(b"xy")
        assert not signal_keys_typed_ahead(keys_in)  # no signal key: the keys only move to the typeahead, in order
        assert "".join(k.data for k in get_typeahead(keys_in)) == "wxy"
        assert repl._queued(keys_in) == []


# 3. a resize mid-reply ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(45, 10), (130, 30)])
def test_resize_mid_reply_leaves_no_stale_copy(term, home, size):
    reply = markdown_reply(6)
    cut = reply.index("Paragraph 3 starts") + 200  # inside a long wrapped paragraph
    scroll = resized_mid_reply(term, reply, cut, "w3.20", size)
    assert reply_on_screen(scroll, QUESTION, FOOTER) == lines_of(reply)
    assert scroll.count("Paragraph 3 starts") == 1


def resized_mid_reply(term, reply: str, cut: int, seen: str, size) -> str:
    """The scrollback after `reply`, paused at `cut` once `seen` is on the screen, then resized to `size`, ran to
    its end."""
    engine = Scripted(reply, pause_at=cut)
    pane = term(engine, 80, 16)
    ask(pane)
    assert engine.paused.wait(DEADLINE)
    pane.wait(lambda s: seen in s, "the reply up to the pause")
    pane.resize(*size)
    pane.wait(lambda s: pane.tmux("display", "-p", "-t", "0", "#{pane_width}").strip() == str(size[0]), "resize")
    engine.go.set()
    scroll = pane.wait(footer_after(QUESTION), "the footer")
    pane.prompt()
    return scroll


def chinese_reply(parts: int = 6) -> str:
    """Chinese mixed with English, inline code, a table and a code block: lines of wide characters that wrap with
    a character landing on the right edge, or a column short of it, at any width."""
    para = "这是一段很长的中文文本，用来测试换行。Mixed English and `code` 混合：全角标点！" * 6
    out = ["# 标题：一个长回答", ""]
    for i in range(parts):
        out += [
            f"## 第{i}部分",
            "",
            f"段落{i}：{para}",
            "",
            "| 名称 | 说明 |",
            "|---|---|",
            "| 模型 | Yi-6B，中文 |",
            "",
        ]
        out += ["```python", f"print('你好，世界{i}')  # 注释", "```", ""]
    return "\n".join(out)


@pytest.mark.parametrize("size", [(45, 10), (33, 12), (131, 30)])
def test_resize_mid_chinese_reply_leaves_each_character_once(term, home, size):
    """A reply of wide characters (two columns each), resized mid-stream to an odd width: what the terminal
    rewrapped and what came after the resize are the reply's characters, each once, none cut in half."""
    reply = chinese_reply()
    scroll = resized_mid_reply(term, reply, reply.index("段落3") + 77, "段落3", size)
    assert reply_on_screen(scroll, QUESTION, FOOTER) == lines_of(reply)
    assert saved(home)[-1]["content"] == reply


# 3b. resizes at the idle prompt --------------------------------------------------------------------------------------

BANNER = "yi-chat · scripted · /help for commands, Ctrl-D to exit"
RESIZES = [(60, 30), (80, 30), (40, 30), (80, 30), (40, 20), (100, 40)]


def redrawn(pane: Pane, width: int, height: int):
    """The prompt drawn at width x height: the screen that size, its last row the toolbar, the empty prompt above.
    (Where the resize rewrapped the toolbar, its last row is the wrapped end until the redraw; elsewhere this can
    hold before the redraw, and drawn_once waits for the screen to settle.)"""

    def done(_) -> bool:
        rows = pane.tmux("capture-pane", "-p", "-t", "0").split("\n")  # the rows as they are, not -J's joined
        if pane.tmux("display", "-p", "-t", "0", "#{pane_width}x#{pane_height}").strip() != f"{width}x{height}":
            return False
        rows = [r.rstrip() for r in rows[:height]]
        return len(rows) == height and TOOLBAR.match(rows[-1]) is not None and ">>>" in rows

    return done


def resize_at_the_prompt(pane: Pane, sizes=RESIZES) -> None:
    """Each resize of `sizes`, each waited for until the prompt is drawn at the new size."""
    for width, height in sizes:
        pane.resize(width, height)
        pane.wait(redrawn(pane, width, height), f"the prompt redrawn at {width}x{height}")


def drawn_once(lines: list[str]):
    """The scrollback holds `lines` (the toolbar aside), then one toolbar line: nothing drawn twice."""

    def once(scroll: str) -> bool:
        return content(scroll) == lines and sum(bool(TOOLBAR.match(ln)) for ln in scroll.split("\n")) == 1

    return once


def test_resizes_at_the_first_prompt_leave_the_banner_once_and_no_toolbar_copies(term, home):
    """Right after start, the prompt under the banner: a narrowing resize rewraps the toolbar's full-width row,
    the banner scrolls off and the prompt (which reaches down to the toolbar on the last row) starts in the top row.
    prompt_toolkit's redraw erased from there with ED, which tmux takes for a cleared screen and keeps in its
    history: every resize after that added a stale prompt and toolbar to the scrollback, a screen apart."""
    pane = term(Scripted("unused"), 80, 30)
    resize_at_the_prompt(pane)
    pane.wait(drawn_once([BANNER, ">>>"]), "the banner, the prompt and its toolbar, each once")


def test_resizes_at_the_prompt_after_a_reply_leave_each_line_once(term, home):
    reply = "A short reply.\nOn two lines."
    pane = term(Scripted(reply), 80, 30)
    ask(pane)
    pane.wait(footer_after(QUESTION), "the footer")
    scroll = pane.prompt()
    footer = next(ln for ln in content(scroll) if FOOTER.match(ln))
    resize_at_the_prompt(pane, [(80, 10), (40, 10), (80, 30)])
    pane.wait(drawn_once([BANNER, ">>> " + QUESTION, *reply.split("\n"), footer, ">>>"]), "each line once")


def test_ctrl_c_at_the_prompt_marks_the_dropped_line_and_sends_nothing(term, home):
    """Ctrl-C at the prompt dropped the line but left it on the screen as typed: `>>> half a thought` read as a
    message sent whose reply never came (a walkthrough). It is marked ^C, as a shell marks it, and not recalled.
    The marked line ends where its text does (it was padded with blanks to the terminal's width)."""
    engine = Scripted("A reply.")
    pane = term(engine, 80, 20)
    pane.prompt()
    pane.type("half a thought")
    pane.wait(lambda s: ">>> half a thought" in s, "the typed line")
    pane.keys("C-c")
    pane.wait(lambda s: content(s)[-2:] == [">>> half a thought^C", ">>>"], "the line marked ^C, then a prompt")
    pane.keys("C-c")  # at an empty prompt too
    scroll = pane.wait(lambda s: content(s)[-3:] == [">>> half a thought^C", ">>> ^C", ">>>"], "an empty line marked")
    # as typed, no blanks after it: prompt_toolkit's grey "aborting" style painted the row to the terminal's last
    # column (copied with the line; rewrapped into an extra blank row by any narrowing)
    marked = [ln for ln in scroll.split("\n") if ln.startswith(">>> ") and ln.rstrip().endswith("^C")]
    assert marked == [">>> half a thought^C", ">>> ^C"], marked
    pane.keys("Up")  # the dropped line is not in the history
    ask(pane, "next")
    pane.wait(footer_after("next"), "the reply to the next message")
    assert engine.prompts == ["next"]


def test_ctrl_c_in_a_history_search_ends_the_search_and_the_chat_goes_on(term, home):
    """Ctrl-R, a few letters, Ctrl-C: the prompt ended with the search field focused, and every later prompt opened
    in that dead field (Enter, Ctrl-D and /exit did nothing: the chat was stuck until killed). Ctrl-C ends the search
    and drops the line, as bash does, and the chat goes on."""
    engine = Scripted("A reply.")
    pane = term(engine, 80, 20)
    ask(pane, "hello there")
    pane.wait(footer_after("hello there"), "the first reply")
    pane.prompt()
    pane.keys("C-r")
    pane.type("hel")
    pane.wait(lambda s: "reverse-i-search" in s and "hel" in content(s)[-1], "the history search")
    pane.keys("C-c")
    pane.prompt()
    ask(pane, "next")
    pane.wait(footer_after("next"), "the reply to the next message")
    assert engine.prompts == ["hello there", "next"]


def test_a_terminal_that_cannot_show_a_character_gets_its_escape_on_the_prompt_line_and_in_history(
    term, home, monkeypatch
):
    """PYTHONIOENCODING=ascii (a terminal in a non-UTF-8 locale gets escapes for what it cannot show): the prompt
    line wrote each such character as `?`, the line measured as the characters and drawn as escapes lost its last
    row under the reply, the input history's append of it was a traceback, and /history's rows ran past the
    screen (measured as CJK, written as escapes)."""
    monkeypatch.setenv("PYTHONIOENCODING", "ascii")
    engine = Scripted("A reply.")
    pane = term(engine, 30, 20)
    pane.type("你好吗")
    typed = ">>> " + "".join(f"\\x{b:02x}" for b in "你好吗".encode())  # its bytes: stdin's ascii did not decode it
    pane.wait(lambda s: typed in "".join(ln.rstrip() for ln in s.split("\n")), "the typed line, escaped")
    pane.keys("Enter")
    scroll = pane.wait(lambda s: "A reply." in s and content(s)[-1:] == [">>>"], "the reply, then a prompt")
    lines = content(scroll)
    assert lines[lines.index(typed) + 1] == "A reply.", lines  # the whole message, then the reply under it
    assert "?" not in scroll and "Traceback" not in scroll and engine.prompts == ["你好吗"]
    pane.type("/history")
    pane.keys("Enter")
    table = pane.wait(lambda s: content(s)[-1:] == [">>>"] and s.count("A reply.") == 2, "the history")
    table = table[table.rindex(">>> /history") :]
    flat = "".join(table.split())  # the text column folded at the screen's width, as rich folds it
    assert "1user\\u4f60\\u597d\\u5417" in flat, table  # as the session holds it: the characters' escapes
    assert all(len(ln) <= 30 for ln in table.split("\n")), table


@pytest.mark.parametrize("columns", ["8", "0"])
def test_history_in_a_terminal_too_narrow_for_its_columns_shows_whole_rows(term, home, monkeypatch, columns):
    """COLUMNS=8 (or a terminal that narrow): rich drew /history's rows blank, at 10 without its role column; whole
    rows come instead, for the terminal to wrap. COLUMNS=0 (no terminal's width) drew nothing at all, the banner
    and the footer neither: it reads as unset, the pane's 80 columns."""
    monkeypatch.setenv("COLUMNS", columns)
    pane = term(Scripted("A short reply."), 80, 20)
    ask(pane, "hello there")
    pane.wait(footer_after("hello there"), "the reply's footer")
    pane.type("/history")
    pane.keys("Enter")
    rows = pane.wait(lambda s: "A short reply." in s.partition(">>> /history")[2], "the history's rows")
    shown = content(rows.partition(">>> /history")[2])
    assert shown[0] == " #  role       tokens  text", shown
    assert re.fullmatch(r" 1  user +\d* +hello there", shown[1]), shown
    assert re.fullmatch(r" 2  assistant +\d+ +A short reply\.", shown[2]), shown


def test_a_table_narrowed_after_it_is_drawn_keeps_one_row_a_line(term, home):
    """/help's and /history's tables were written padded with blanks to the window's width: a narrower window (a
    terminal that rewraps its lines, as tmux does) wrapped the padding onto a blank row under each row."""
    pane = term(Scripted("A short reply."), 100, 40)
    ask(pane, "hello there")
    pane.wait(footer_after("hello there"), "the reply's footer")
    for command, last in [("/help", "/exit"), ("/history", "A short reply.")]:
        pane.type(command)
        pane.keys("Enter")
        pane.wait(lambda s, c=command, t=last: t in s.partition(f">>> {c}")[2] and content(s)[-1:] == [">>>"], command)
    drawn = pane.tmux("capture-pane", "-p", "-N", "-S", "-", "-t", "0").split("\n")
    assert not [ln for ln in drawn if ln.startswith(("  /", " 1  user")) and ln != ln.rstrip()], drawn
    pane.resize(70, 40)
    scroll = pane.wait(lambda s: tty_width(pane) == 70, "the narrower window")
    for command, end in [("/help", ">>> /history"), ("/history", ">>>")]:
        table = content(scroll.partition(f">>> {command}")[2].partition(end)[0], blanks=True)
        # each row's text wraps as it may; no row of padding after it
        assert table and "" not in table[1:], "\n".join(table)


def test_a_command_being_typed_is_completed_and_a_message_is_not(term, home):
    """The completion menu while a command is typed (the completer runs only for a line that starts with /: it ran
    on every key of a message, each run one more redraw of the prompt after the key's own)."""
    engine = Scripted("A reply.")
    pane = term(engine, 80, 30)
    pane.type("/his")
    pane.wait(lambda s: "/history" in s, "the completion menu offering /history")
    pane.keys("Tab")
    pane.wait(lambda s: ">>> /history" in s, "the command completed by Tab")
    pane.keys("Enter")
    pane.prompt()
    pane.type("his")
    pane.keys("Enter")
    pane.wait(footer_after("his"), "the reply to a message")
    assert engine.prompts == ["his"]  # a message that starts like a command is sent as it is


@pytest.mark.parametrize(
    "typed,offered,completed",
    [("／his", "／history", "／history"), ("  /HIS", "/history", "  /history")],
    ids=["full-width-slash", "blanks-and-capitals"],
)
def test_a_command_typed_as_the_chat_reads_it_is_completed(term, home, typed, offered, completed):
    """`／his` (an input method's full-width slash, which runs as /history) offered no completion: Tab did nothing,
    where `/his` completes. The menu offers the commands as typed, with the full-width slash. `  /HIS` too runs as
    /history, and Tab did nothing for it (prompt_toolkit's WordCompleter matched from the line's first character
    and by case; a REPL hunt): the completion keeps the blanks typed before it."""
    engine = Scripted("A reply.")
    pane = term(engine, 80, 30)
    pane.type(typed)
    pane.wait(lambda s: offered in s, f"the completion menu offering {offered}")
    pane.keys("Tab")
    pane.wait(lambda s: f">>> {completed}" in s, "the command completed by Tab")
    pane.keys("Enter")
    pane.wait(lambda s: "(no turns yet)" in s, "the command's output")
    pane.prompt()
    assert engine.prompts == []


TYPED = " ".join(f"word{i}" for i in range(40))  # about 270 characters: four rows at 80 columns, ten at 30
# Chinese, two columns a character and no spaces: at an odd width a row's last column stays blank (the next
# character does not fit), and the way back up counts each row's cells, not its characters
TYPED_CJK = "天地玄黄宇宙洪荒日月盈昃辰宿列张寒来暑往秋收冬藏闰余成岁律吕调阳云腾致雨露结为霜金生丽水玉出昆冈，" * 2


def typed_rows(rows: list[str], width: int) -> str:
    """The text of the prompt's rows drawn `width` wide: prompt_toolkit breaks a long line at the width, and leaves
    out a blank at the end of a row (where the capture has nothing), so each row is padded back to the width in
    columns, except one a column short whose next row starts with a wide character (that did not fit there)."""
    out = []
    for i, row in enumerate(rows):
        after = rows[i + 1][:1] if i + 1 < len(rows) else ""
        wide_next = cell_len(row) == width - 1 and cell_len(after) == 2
        out.append(row if wide_next else row + " " * (width - cell_len(row)))
    return "".join(out).rstrip()


def typed_once(lines: list[str], text: str, width: int):
    """The scrollback holds `lines`, then the prompt with `text` on its rows `width` wide, then one toolbar."""

    def once(scroll: str) -> bool:
        got = content(scroll)
        return (
            got[: len(lines)] == lines
            and typed_rows(got[len(lines) :], width) == ">>> " + text
            and sum(bool(TOOLBAR.match(ln)) for ln in scroll.split("\n")) == 1
        )

    return once


def typed_redrawn(pane: Pane, width: int, height: int, text: str):
    """The prompt with `text` drawn at width x height: the screen that size, its last row the toolbar, the rows
    from the last `>>> ` on holding the text. (As with redrawn, typed_once waits for the screen to settle.)"""

    def done(_) -> bool:
        rows = pane.tmux("capture-pane", "-p", "-t", "0").split("\n")  # the rows as they are, not -J's joined
        if pane.tmux("display", "-p", "-t", "0", "#{pane_width}x#{pane_height}").strip() != f"{width}x{height}":
            return False
        rows = [r.rstrip() for r in rows[:height]]
        starts = [i for i, r in enumerate(rows) if r.startswith(">>> ")]
        if len(rows) != height or not TOOLBAR.match(rows[-1]) or not starts:
            return False
        return typed_rows(rows[starts[-1] : -1], width) == ">>> " + text

    return done


@pytest.mark.parametrize("typed", [TYPED, TYPED_CJK], ids=["words", "chinese"])
@pytest.mark.parametrize("sizes", [[(40, 30), (30, 30), (80, 30)], [(60, 20), (31, 20), (101, 40), (25, 40)]])
def test_resizes_with_typed_input_that_wraps_redraw_it_once(term, home, sizes, typed):
    """Typed input over several rows: a narrowing rewraps each of its rows into more, and prompt_toolkit went back
    up by the rows it drew (not the rows the terminal now shows) to redraw it: the upper rows stayed, stale. (A
    reply tall enough that the prompt starts low on the screen: the rewrap moves it up without scrolling it off.)"""
    reply = "\n".join(f"Line {i} of the reply." for i in range(20))
    engine = Scripted(reply)
    pane = term(engine, 80, 30)
    ask(pane)
    pane.wait(footer_after(QUESTION), "the footer")
    scroll = pane.prompt()
    before = content(scroll)[:-1]  # the banner, the question, the reply and its footer
    pane.type(typed)
    pane.wait(lambda s: typed[-6:] in s.replace("\n", ""), "the typed text")
    for width, height in sizes:
        pane.resize(width, height)
        pane.wait(typed_redrawn(pane, width, height, typed), f"the prompt redrawn at {width}x{height}")
    pane.wait(typed_once(before, typed, sizes[-1][0]), "each line once, the typed text whole")
    pane.keys("Enter")
    pane.wait(footer_after(typed[:4]), "the reply to the typed text")
    assert engine.prompts == [QUESTION, typed]


def test_the_way_back_up_counts_the_rows_as_the_terminal_rewrapped_them():
    """rows_to_cursor: each row drawn above the cursor rewrapped at the new width, the cursor in its row's piece."""
    from prompt_toolkit.data_structures import Point
    from prompt_toolkit.layout.screen import Char, Screen

    from yi_cli.ui.repl import rewraps, rows_to_cursor

    screen = Screen()
    for i, ch in enumerate(">>> " + "x" * 196):  # rows of 80, 80 and 40 characters at 80 columns
        screen.data_buffer[i // 80][i % 80] = Char(ch, "")
    assert rows_to_cursor(screen, Point(x=40, y=2), 80, 80) == 2  # the width it was drawn at: as drawn
    assert rows_to_cursor(screen, Point(x=40, y=2), 80, 100) == 2  # wider: nothing joined
    assert rows_to_cursor(screen, Point(x=40, y=2), 80, 40) == 4  # two rows each above; the cursor past the text
    assert rows_to_cursor(screen, Point(x=40, y=2), 80, 30) == 7  # three each, the cursor in its row's second
    assert rows_to_cursor(screen, Point(x=10, y=2), 80, 30) == 6
    # terminals known to rewrap (inside tmux, tmux's rewrap counts); xterm, the Linux console, GNU screen and
    # terminals not recognised keep prompt_toolkit's count
    assert rewraps({"TMUX": "/tmp/t,1,0", "XTERM_VERSION": "XTerm(390)"}) and rewraps({"VTE_VERSION": "7600"})
    assert rewraps({"TERM_PROGRAM": "iTerm.app"}) and rewraps({"KITTY_WINDOW_ID": "1"})
    assert not rewraps({"XTERM_VERSION": "XTerm(390)"}) and not rewraps({"TERM": "linux"})
    assert not rewraps({"STY": "1.pts-0", "TERM": "screen"}) and not rewraps({"TERM": "xterm-256color"})
    # over ssh (or sudo, env -i) only TERM says it: inside tmux, or kitty, alacritty, foot with their terminfo
    assert all(rewraps({"TERM": t}) for t in ("tmux-256color", "tmux", "xterm-kitty", "alacritty", "foot-extra"))


# 4. keys typed during a reply -----------------------------------------------------------------------------------------


def paused_mid_reply(term) -> tuple[Pane, Scripted, str]:
    """A pane whose reply (three parts of markdown) has streamed its first part and pauses there."""
    reply = markdown_reply(3)
    engine = Scripted(reply, pause_at=reply.index("## Part 1"))
    pane = term(engine, 80, 20)
    ask(pane)
    assert engine.paused.wait(DEADLINE)
    pane.wait(lambda s: "## Part 0" in s, "the first part")
    return pane, engine, reply


def test_keys_typed_during_a_reply_start_the_next_input(term, home):
    pane, engine, reply = paused_mid_reply(term)
    pane.type("next question")  # while the reply streams: no echo into it
    engine.go.set()
    scroll = pane.wait(lambda s: content(s)[-1:] == [">>> next question"], "the typed keys at the next prompt")
    assert reply_on_screen(scroll, QUESTION, FOOTER) == lines_of(reply)
    assert scroll.count("next question") == 1
    engine.reply = "Answered."
    pane.keys("Enter")
    pane.wait(footer_after("next question"), "the second reply")
    assert engine.prompts == [QUESTION, "next question"]


def test_a_paste_of_several_lines_during_a_reply_stays_one_message(term, home):
    """A paste while a reply streams (tmux's paste-buffer -p brackets it where the application asked for pasting
    mode, as a terminal does): the next prompt gets it as one message of two lines, not sent. Before, prompt_toolkit
    had turned the terminal's pasting mode off when its prompt ended, so the paste came as typed keys and its line
    break as Enter: its first line went out as a message of its own."""
    pane, engine, reply = paused_mid_reply(term)
    pane.tmux("set-buffer", "-b", "p", "pasted first line\npasted second line")
    pane.tmux("paste-buffer", "-p", "-b", "p", "-t", "0")
    engine.go.set()
    want = [">>> pasted first line", "... pasted second line"]
    scroll = pane.wait(lambda s: content(s)[-2:] == want, "the paste at the next prompt, not sent")
    assert reply_on_screen(scroll, QUESTION, FOOTER) == lines_of(reply)
    engine.reply = "Answered."
    pane.keys("Enter")
    pane.wait(footer_after("pasted first line"), "the reply to the pasted message")
    assert engine.prompts == [QUESTION, "pasted first line\npasted second line"]


def test_a_paste_longer_than_the_terminals_queue_lets_a_ctrl_c_through_and_reaches_the_next_prompt(term, home):
    """The terminal's input queue holds 4 KiB: a longer paste during a reply filled it, the terminal stopped taking
    keys, and the Ctrl-C typed after the paste waited behind it until the reply ended (here: never, the reply waits)
    and then cleared the paste at the prompt. The keys are read out of the queue while a reply streams."""
    pane, engine, reply = paused_mid_reply(term)
    pasted = "\n".join(f"pasted line {i:03d} " + "x" * 50 for i in range(200))  # 13 KB
    pane.tmux("set-buffer", "-b", "p", pasted)
    pane.tmux("paste-buffer", "-p", "-b", "p", "-t", "0")
    pane.keys("C-c")
    pane.wait(lambda s: "[interrupted]" in s, "the reply stopped by the Ctrl-C typed after the paste")
    last = "... pasted line 199 " + "x" * 50
    pane.wait(lambda s: content(s)[-1:] == [last], "the whole paste at the next prompt, not sent")
    assert engine.prompts == [QUESTION]
    engine.reply, engine.pause_at = "Answered.", None
    pane.keys("Enter")
    pane.wait(footer_after("pasted line 000"), "the reply to the pasted message")
    assert engine.prompts == [QUESTION, pasted]


def test_a_chat_ended_mid_reply_leaves_the_terminal_out_of_pasting_mode(home):
    """Bracketed paste is held with the keys while a reply streams: a chat ended there (SIGTERM) turns it off on its
    way out, or the shell after it would get every paste wrapped in ESC [200~ ... ESC [201~ (`cat` here echoes
    them as ^[[200~)."""
    reply = markdown_reply(3)
    engine = Scripted(reply, pause_at=reply.index("## Part 1"))
    with OpenAIServer(engine, model="scripted") as srv:
        chat = f"{sys.executable} -m yi_cli --endpoint {srv.url} --model scripted --max-new-tokens 100000"
        pane = Pane([], home=home, width=80, height=20, argv=["sh", "-c", f"{chat}; echo after yi-chat; exec cat"])
        try:
            pane.prompt()
            ask(pane)
            assert engine.paused.wait(DEADLINE)
            pane.wait(lambda s: "## Part 0" in s, "the reply up to the pause")
            sh = pane.pid()  # the sh running the chat, then cat
            with open(f"/proc/{sh}/task/{sh}/children") as f:
                (chat_pid,) = f.read().split()
            os.kill(int(chat_pid), signal.SIGTERM)
            pane.wait(lambda s: "after yi-chat" in s, "the chat's end")
            pane.tmux("set-buffer", "-b", "p", "pasted after\n")
            pane.tmux("paste-buffer", "-p", "-b", "p", "-t", "0")
            scroll = pane.wait(lambda s: s.count("pasted after") == 2, "cat's echo of the paste and its copy of it")
            assert "[200~" not in scroll and "[201~" not in scroll
        finally:
            pane.close()


def test_a_long_question_comes_back_whole_from_the_scrollback(term, home):
    """A question longer than the width wraps on screen (prompt_toolkit breaks the lines itself); the wrapped
    parts had '... ' before them (the multi-line continuation), so a URL copied from the scrollback came back with
    those inserted. Now the lines hold the URL's characters alone; a real new line still gets the '... '."""
    url = "https://example.com/" + "/".join(f"segment{i}" for i in range(20)) + "?q=1"
    engine = Scripted("Seen.")
    pane = term(engine, 60, 20)
    ask(pane, url)
    scroll = pane.wait(lambda s: "Seen." in s and FOOTER.search(s.split("Seen.")[-1].strip()), "the reply")
    lines = content(scroll)
    start = next(i for i, ln in enumerate(lines) if ln.startswith(">>> https"))
    # one line as the terminal holds it (-J joins the rows it wrapped itself): prompt_toolkit's own row breaks left
    # it cut at the width, for a copy and for a terminal widened later
    assert lines[start] == ">>> " + url and lines[start + 1] == "Seen."
    assert engine.prompts == [url]
    pane.type("two")
    pane.keys("Escape", "Enter")  # a new line inside the message
    pane.type("lines")
    pane.keys("Enter")
    scroll = pane.wait(lambda s: "... lines" in s, "the second line after its continuation")
    pane.wait(lambda s: engine.prompts[-1:] == ["two\nlines"], "the two-line message sent")


def test_a_bidi_override_typed_or_edited_is_drawn_as_its_escape_and_sent_as_it_is(term, home):
    """prompt_toolkit drew U+202E as it is: the rest of the line was shown reversed (`edit>` of a message with an
    attached file holding one), so the line on screen was not the one sent. It is drawn as `\\u202e`, as every other
    line of the chat shows it, and the message keeps the character."""
    from prompt_toolkit.utils import get_cwidth

    from yi_cli.ui.repl import show_bidi_escaped

    show_bidi_escaped()  # and measured as wide as it is drawn: prompt_toolkit's row count sizes lines by it
    assert get_cwidth("ab\u202ecd") == 4 + len("\\u202e")
    engine = Scripted("Seen.")
    pane = term(engine, 60, 12)
    pane.type("abc\u202edef")
    pane.wait(lambda s: ">>> abc\\u202edef" in pane.screen(), "the override drawn as its escape")
    pane.keys("Enter")
    pane.wait(lambda s: "Seen." in s and content(s)[-1:] == [">>>"], "the reply and the next prompt")
    assert engine.prompts == ["abc\u202edef"]
    pane.type("/edit")
    pane.keys("Enter")
    pane.wait(lambda s: "edit> abc\\u202edef" in pane.screen(), "the message to edit, drawn the same way")


TALL_PASTE = "\n".join(f"pasted line {i} of a block taller than the screen" for i in range(30))
TALL_LINE = " ".join(f"word{i}" for i in range(300))  # one line of 2,000 characters: 34 rows 60 wide


@pytest.mark.parametrize(
    "message,last", [(TALL_PASTE, "pasted line 29"), (TALL_LINE, "word299")], ids=["paste", "line"]
)
def test_a_message_taller_than_the_screen_is_in_the_scrollback_whole(term, home, message, last):
    """prompt_toolkit draws at most a screen of the prompt, the rows around the cursor: a message pasted or typed
    taller than the screen went out whole, but the scrollback kept only its last screenful, without its first
    lines and its `>>>`. Now it is there whole, once, followed by the reply."""
    engine = Scripted("Seen.")
    pane = term(engine, 60, 12)
    if "\n" in message:
        pane.tmux("set-buffer", "-b", "p", message)
        pane.tmux("paste-buffer", "-p", "-b", "p", "-t", "0")
    else:
        pane.type(message)
    pane.wait(lambda s: last in pane.screen(), "the message typed")
    pane.keys("Enter")
    scroll = pane.wait(lambda s: content(s)[-1:] == [">>>"] and "Seen." in s, "the reply and the next prompt")
    first, *rest = message.split("\n")
    assert content(scroll) == [
        "yi-chat · scripted · /help for commands, Ctrl-D to exit",
        ">>> " + first,
        *("... " + line for line in rest),
        "Seen.",
        *[ln for ln in content(scroll) if FOOTER.match(ln)],
        ">>>",
    ]
    assert engine.prompts == [message]


def test_a_message_taller_than_the_screen_given_up_by_ctrl_c_stays_whole_marked_as_dropped(term, home):
    """Ctrl-C at a prompt taller than the screen sends nothing: the next message is the first the model gets. The
    draft stays on the screen as a line dropped at the prompt does (README: marked ^C, as in a shell), whole: only
    the rows prompt_toolkit last drew stayed, without its first lines and its `>>>` (a screen hunt)."""
    engine = Scripted("Seen.")
    pane = term(engine, 60, 12)
    pane.tmux("set-buffer", "-b", "p", TALL_PASTE)
    pane.tmux("paste-buffer", "-p", "-b", "p", "-t", "0")
    pane.wait(lambda s: "pasted line 29" in pane.screen(), "the message typed")
    pane.keys("C-c")
    pane.wait(lambda s: content(pane.screen())[-1:] == [">>>"], "an empty prompt")
    pane.type("hi")
    pane.keys("Enter")
    scroll = pane.wait(lambda s: "Seen." in s and content(s)[-1:] == [">>>"], "the reply and the next prompt")
    assert engine.prompts == ["hi"]
    first, *rest = TALL_PASTE.split("\n")
    at = content(scroll).index(">>> " + first)
    assert content(scroll)[at : at + 30] == [
        ">>> " + first,
        *("... " + line for line in rest[:-1]),
        f"... {rest[-1]}^C",
    ]
    assert content(scroll)[at + 30] == ">>> hi" and content(scroll).count(">>> " + first) == 1


def test_ctrl_c_while_file_waits_on_a_pipe_says_nothing_was_attached(term, home, tmp_path):
    """/file of a pipe nothing writes into says it waits and that Ctrl-C gives it up; Ctrl-C then said only
    "interrupted", not whether the file was attached. It says the file is not attached, and the next message goes
    without it."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    engine = Scripted("Seen.")
    pane = term(engine, 100, 12)
    pane.type(f"/file {fifo}")
    pane.keys("Enter")
    pane.wait(lambda s: "(Ctrl-C gives it up)" in s, "the line saying what /file waits for")
    pane.keys("C-c")
    scroll = pane.wait(lambda s: content(s)[-1:] == [">>>"], "the prompt after Ctrl-C")
    assert f"{fifo}: not attached (Ctrl-C stopped the wait for what writes into it)" in " ".join(content(scroll))
    assert "interrupted" not in content(scroll)
    ask(pane, "hi")
    pane.wait(footer_after("hi"), "the reply")
    assert engine.prompts == ["hi"]


def test_the_status_line_of_a_long_prompt_leaves_nothing_in_a_narrow_terminal(home):
    """The status line while a long prompt is read ("reading the prompt: N/M tokens (P%)", 42 columns and more),
    written as the chat writes it, in a terminal narrower than it (a split pane): each update and the erase leave
    no row behind. It wrapped, and the carriage return and EL that redraw it reach only the cursor's row: every
    update left a stale row on the screen and in the scrollback."""
    script = (
        "from rich.console import Console\n"
        "from yi_cli.ui.render import TerminalRenderer\n"
        "r = TerminalRenderer(Console(), Console(stderr=True))\n"
        "for done in range(0, 6356, 512):\n"
        "    r.progress(f'reading the prompt: {done}/6356 tokens ({100 * done // 6356}%)')\n"
        "r.progress(None)\n"
        "print('read')\n"
    )
    pane = Pane([], home=home, width=30, height=10, argv=[sys.executable, "-c", script])
    try:
        assert pane.exit_status() == 0
        shown = [ln for ln in content(pane.scrollback()) if not ln.startswith("Pane is dead")]  # remain-on-exit's
        assert shown == ["read"]
    finally:
        pane.close()


def tty_width(pane: Pane) -> int:
    """The width of the pane's terminal as a program in it reads it (tmux sets it some time after its own resize)."""
    fd = os.open(pane.tmux("display", "-p", "-t", "0", "#{pane_tty}").strip(), os.O_RDONLY | os.O_NOCTTY)
    try:
        return os.get_terminal_size(fd).columns
    finally:
        os.close(fd)


def test_the_status_line_of_a_long_prompt_leaves_nothing_when_the_terminal_narrows(home, tmp_path):
    """The status line drawn to fit, then the terminal narrowed under it (twice): the terminal rewraps it into two
    rows, and the carriage return and EL of the next update (and of the erase) reached only the cursor's row: each
    narrowing left a row of it on the screen and in the scrollback. The screen is full, as under a book's question:
    tmux puts the rows a rewrap adds at the top of the screen into its history, the question's (on a screen with
    the status in its top row, that row's first piece, out of reach of any erase)."""
    go = tmp_path / "go"  # a line written here: the script goes on to its next status
    os.mkfifo(go)
    script = (
        "from rich.console import Console\n"
        "from yi_cli.ui.render import TerminalRenderer\n"
        "r = TerminalRenderer(Console(), Console(stderr=True))\n"
        "print('>>> a long book', *(f'line {i} of it' for i in range(12)), sep='\\n', flush=True)\n"
        f"go = open({str(go)!r})\n"
        "for done in (512, 1024, 2048):\n"
        "    r.progress(f'reading the prompt: {done}/6356 tokens ({100 * done // 6356}%)')\n"
        "    go.readline()\n"
        "r.progress(None)\n"
        "print('read')\n"
    )
    pane = Pane([], home=home, width=80, height=10, argv=[sys.executable, "-c", script])
    fd = os.open(go, os.O_RDWR)  # never blocks, whether or not the script has opened it yet
    try:
        pane.wait(lambda s: "512/6356 tokens (8%)" in s, "the first status")
        for width, shown in [(35, "1024/6356"), (25, "prompt: 2048")]:
            pane.resize(width, 10)
            pane.wait(
                lambda s, width=width: tty_width(pane) == width,
                "the resize, as the terminal's size (tmux sets it late)",
            )
            os.write(fd, b"\n")
            pane.wait(lambda s, shown=shown: shown in s, f"the status at {width} columns")
        os.write(fd, b"\n")
        assert pane.exit_status() == 0
        shown = [ln for ln in content(pane.scrollback()) if not ln.startswith("Pane is dead")]  # remain-on-exit's
        assert shown == [">>> a long book", *(f"line {i} of it" for i in range(12)), "read"]
    finally:
        os.close(fd)
        pane.close()


# 5. SIGTERM / SIGHUP / SIGQUIT mid-reply: recorded, autosaved, one line, exit 130 / 129 / 131 -------------------------

LEAVING = [(signal.SIGTERM, 130, "terminated"), (signal.SIGHUP, 129, "hung up"), (signal.SIGQUIT, 131, "quit")]


@pytest.mark.parametrize("signum,code,what", LEAVING)
def test_signal_mid_reply_in_the_repl(term, home, signum, code, what):
    reply = markdown_reply(3)
    cut = reply.index("## Part 1")
    engine = Scripted(reply, pause_at=cut)
    pane = term(engine, 80, 20)
    ask(pane)
    assert engine.paused.wait(DEADLINE)
    pane.wait(lambda s: "## Part 0" in s and "return x * 0" in s, "the reply up to the pause")
    os.kill(pane.pid(), signum)
    assert pane.exit_status() == code
    turns = saved(home)
    assert [t["role"] for t in turns] == ["user", "assistant"]
    assert turns[1]["finish_reason"] == "interrupted" and turns[1]["content"] == reply[:cut]
    scroll = pane.scrollback()
    # kill -HUP with the terminal still there: its line too (a real hangup's goes nowhere: test_cli_conventions)
    assert reply_on_screen(scroll, QUESTION, "[interrupted]") == lines_of(reply[:cut])
    assert re.search(rf"yi-chat: {what}; the session is saved in \S+\.json", scroll.replace("\n", ""))
    assert "Traceback" not in scroll


PAUSED = "First line of the answer.\nSecond line, and then a pause"  # a piped reply's text up to its pause


def _signals_as_a_shell_gives_them() -> None:
    """In the child: the signals a command typed at a shell starts with, whatever this run inherited (a CI job
    started in the background of a non-interactive shell has SIGINT and SIGQUIT ignored, and an ignored signal stays
    ignored across exec: yi-chat leaves it so, as under nohup)."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)


def piped(srv, home: Path, mode: str, **popen) -> tuple[subprocess.Popen, bytes]:
    """yi-chat on the scripted server, asked QUESTION in a pipe (stdin stays open: mid-session, not at EOF) or with
    -p, its signals as a shell gives them unless `popen` sets them; returns the process once its reply has streamed
    up to the pause, and the bytes of it read."""
    popen.setdefault("preexec_fn", _signals_as_a_shell_gives_them)
    args = [sys.executable, "-m", "yi_cli", "--endpoint", srv.url, "--model", "scripted", "--max-new-tokens", "100000"]
    if mode == "one-shot":  # stdin is not a pipe here: a piped one would be read as context first (-p)
        args += ["-p", QUESTION]
    proc = subprocess.Popen(
        args,
        stdin=subprocess.PIPE if mode == "pipe" else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "YI_CHAT_HOME": str(home)},
        **popen,
    )
    if mode == "pipe":
        proc.stdin.write(QUESTION.encode() + b"\n")
        proc.stdin.flush()
    got = b""
    deadline = time.monotonic() + DEADLINE
    while not got.endswith(b"a pause") and time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 1)[0]:
            got += os.read(proc.stdout.fileno(), 4096)
    return proc, got


@pytest.mark.parametrize("signum,code,what", LEAVING)
@pytest.mark.parametrize("mode", ["pipe", "one-shot"])
def test_signal_mid_reply_when_piped(home, mode, signum, code, what):
    engine = Scripted(PAUSED + " that never ends.", pause_at=len(PAUSED))
    with OpenAIServer(engine, model="scripted") as srv:
        proc, got = piped(srv, home, mode)
        try:
            assert got == PAUSED.encode()
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=DEADLINE)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == code, err.decode()
    [line] = err.decode().splitlines()
    assert re.fullmatch(rf"yi-chat: {what}; the session is saved in \S+\.json", line), line
    assert (got + out).decode() == PAUSED + " [interrupted]\n\n"
    turns = saved(home)
    assert turns[-1]["finish_reason"] == "interrupted" and turns[-1]["content"] == PAUSED


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGQUIT], ids=["HUP", "QUIT"])
def test_a_signal_ignored_at_start_stays_ignored(home, signum):
    """Under nohup (or a script's `trap '' QUIT`) the signal arrives ignored, and yi-chat leaves it so: the reply
    goes on and the run ends as it would have."""
    engine = Scripted(PAUSED + " and the end.", pause_at=len(PAUSED))
    with OpenAIServer(engine, model="scripted") as srv:
        proc, got = piped(srv, home, "pipe", preexec_fn=lambda: signal.signal(signum, signal.SIG_IGN))
        try:
            assert got == PAUSED.encode()
            proc.send_signal(signum)  # an ignored signal is dropped as it is sent: the reply cannot see it after this
            engine.go.set()
            out, err = proc.communicate(b"", timeout=DEADLINE)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err.decode()
    assert err.decode() == ""
    assert (got + out).decode() == PAUSED + " and the end.\n\n"
    turns = saved(home)
    assert turns[-1]["finish_reason"] == "stop" and turns[-1]["content"] == PAUSED + " and the end."


def toolbar_used(pane: Pane) -> int:
    """The context used that the toolbar shows, the last row while a prompt waits."""
    used = re.compile(r"^ \S+ · ctx (\d+)")

    def last(scroll: str) -> str:
        return scroll.rstrip().rsplit("\n", 1)[-1]

    return int(used.match(last(pane.wait(lambda s: used.match(last(s)), "the toolbar"))).group(1))


# 6. the real demo model -----------------------------------------------------------------------------------------------


STAGES = """
import os, sys, time
sys.path.insert(0, {root!r})
from yi_cli.progress import Stages
print("$ yi-chat", file=sys.stderr)  # a row above, as the shell's command line is
with Stages("demo model, first run", 2) as s:
    s.stage("reading SmolLM2-135M-Instruct-Q8_0.gguf, a stage text long enough to fill the line")
    while not os.path.exists({go!r}):
        time.sleep(0.02)  # polls a file the test makes; the test waits on the screen, not on this
    s.stage("writing")
print("DONE", file=sys.stderr)
time.sleep(600)
"""


def test_a_progress_line_narrowed_under_it_leaves_no_stale_row(home, tmp_path):
    """The first run's progress line (and `yi-chat pull`'s bar, the same display), narrowed under it: the terminal
    rewrapped it onto two rows and rich redrew only the lower one, the upper staying on the screen and in the
    scrollback above the ready line (two walkthroughs). The display keeps its cursor at its start and erases the
    rows it takes at the width now."""
    go = tmp_path / "go"
    script = tmp_path / "stages.py"
    script.write_text(STAGES.format(root=str(Path(__file__).resolve().parent.parent), go=str(go)))
    pane = Pane([], home=home, width=100, height=20, argv=[sys.executable, str(script)])
    try:
        pane.wait(lambda s: "0/2" in s and "reading SmolLM2" in s, "the progress line at 100 columns")
        pane.resize(60, 20)

        def narrow(_) -> bool:  # the line drawn again at 60 columns: one row, cut with an ellipsis
            rows = [r for r in pane.tmux("capture-pane", "-p", "-t", "0").split("\n") if "0/2" in r]
            return len(rows) == 1 and "…" in rows[0] and len(rows[0].rstrip()) <= 60

        pane.wait(narrow, "the progress line redrawn at 60 columns")
        go.touch()
        scroll = pane.wait(lambda s: "DONE" in s, "the stages to end")
        assert "reading" not in scroll, scroll  # nothing of the (transient) line is left, above or below
        shown = content(scroll)
        assert shown[0] == "$ yi-chat" and shown[1].startswith("yi-chat: demo model, first run: ready in "), shown
    finally:
        pane.close()


LOAD_GATE = """
import os, sys, time
sys.path.insert(0, {root!r})
from yi_cli.checkpoint import loader
from yi_cli.errors import LoadError


def gated(path, **kw):  # the load, held until the test makes a file (it waits on the screen, not on this)
    while not os.path.exists({go!r}):
        time.sleep(0.02)
    raise LoadError("the load was let go")


loader.open_checkpoint = gated
loader.resolve = lambda model, allow_pickle=False: model
print("$ yi-chat", file=sys.stderr)  # a row above, as the shell's command line is (tmux pushes a top row's upper
# part into its history when it rewraps it, where no program reaches)
sys.argv = ["yi-chat", "-m", "a-model-whose-name-is-long-enough-to-wrap-at-sixty-columns"]
from yi_cli.launch import entry

entry()
"""


def test_the_load_spinner_narrowed_under_it_leaves_no_stale_row(home, tmp_path):
    """The spinner line of a model's load (rich's console.status), narrowed under it: the terminal rewrapped it onto
    two rows and rich redrew only the lower one, `⠙ loading de` left above the banner (a terminal review). It is
    drawn as the progress line is now (progress.spinner)."""
    go = tmp_path / "go"
    script = tmp_path / "load.py"
    script.write_text(LOAD_GATE.format(root=str(Path(__file__).resolve().parent.parent), go=str(go)))
    pane = Pane([], home=home, width=100, height=20, argv=[sys.executable, str(script)])
    try:
        pane.wait(lambda s: "loading a-model-whose-name" in s, "the spinner at 100 columns")
        pane.resize(60, 20)

        def narrow(_) -> bool:  # drawn again at 60 columns: rich wraps it at a word, the terminal mid-word
            rows = pane.tmux("capture-pane", "-p", "-t", "0").split("\n")
            return any(r.rstrip().endswith("loading") for r in rows)

        pane.wait(narrow, "the spinner redrawn at 60 columns")
        go.touch()
        scroll = pane.wait(lambda s: "the load was let go" in s, "the load's end")
        assert "loading" not in scroll, scroll  # nothing of the (transient) line is left, above or below
    finally:
        pane.close()


@pytest.mark.slow
def test_demo_model_tall_reply_once_in_a_small_terminal(demo_dir, home):
    (home / "cache").symlink_to(Path(demo_dir).parent.parent, target_is_directory=True)
    pane = Pane(["--model", "demo", "--temperature", "0", "--max-new-tokens", "300"], home=home, width=60, height=12)
    try:
        pane.prompt()
        question = "Write a long story about a dragon who learns to cook."
        ask(pane, question)
        scroll = pane.wait(footer_after(question), "the footer")
        pane.prompt()
        reply = saved(home)[-1]["content"]
        shown = reply_on_screen(scroll, question, FOOTER)
        assert len(shown) > 60 * 12, "taller than the 60x12 screen"
        assert shown == lines_of(reply)
        # the toolbar's context used is what /prompt counts for the same conversation
        used = toolbar_used(pane)
        ask(pane, "/prompt")
        count = re.compile(r"^\((\d+) tokens\)$", re.M)
        scroll = pane.wait(lambda s: count.search(s) and content(s)[-1:] == [">>>"], "/prompt's count")
        assert used == int(count.findall(scroll)[-1])
    finally:
        pane.close()


@pytest.mark.slow
def test_first_run_conversion_shows_one_progress_display_of_our_own(home):
    """A fresh YI_CHAT_HOME: the demo is converted from the GGUF (tens of seconds of CPU) under yi-chat's one
    progress line; transformers' tqdm bars never reach the terminal."""
    pane = Pane(["--model", "demo"], home=home, width=100, height=30)
    try:
        scroll = pane.prompt(deadline=900)  # the conversion, then the load
        lines = content(scroll)
        banner = lines.index("yi-chat · demo · /help for commands, Ctrl-D to exit")
        assert len(lines[:banner]) == 1, scroll  # the transient progress line and load spinner leave one line
        assert re.fullmatch(r"yi-chat: demo model, first run: ready in \d+ s", lines[0])
        for noise in ("Converting and de-quantizing", "Loading weights", "Writing model shards", "it/s", "%|"):
            assert noise not in scroll
        assert (home / "cache" / "demo" / "demo" / "config.json").is_file()
    finally:
        pane.close()
