"""The terminal at the edges of a run, in tmux under an interactive bash (job control): a background yi-chat that
`kill %1` ends exits (it was stopped by SIGTTOU, setting the modes of a terminal the shell had); keys typed while
yi-chat starts are not echoed raw; SIGQUIT (Ctrl-\\ mid-reply, kill -QUIT at the prompt) gives the terminal back with
its echo, the turn saved; lines typed ahead of a prompt that never comes (a signal ends the chat mid-reply, at the
prompt or while it starts) go to the input history, not to the shell.

Every wait is on screen content or process state, with a deadline; none is a sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time

import pytest
from test_screen import DEADLINE, TMUX, TOOLBAR, Pane, Scripted, markdown_reply

from tests.openai_server import OpenAIServer

BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(TMUX is None or BASH is None, reason="needs tmux and bash")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUESTION = "Write a very long story about a dragon who learns to cook."  # the demo, greedy: 300 tokens and more


class Shell(Pane):
    """An interactive bash alone in a tmux pane of its own tmux server (test_screen's Pane, started with bash)."""

    def __init__(self, home):
        self.dir = tempfile.mkdtemp(prefix="yi-tty-")
        self.sock = os.path.join(self.dir, "s")
        env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "PROMPT_TOOLKIT_NO_CPR", "NO_COLOR")}
        env.update(YI_CHAT_HOME=str(home), PYTHONPATH=ROOT, PS1="$ ", TERM="xterm-256color")
        self.env = env
        self.tmux("-f", os.devnull, "new-session", "-d", "-x", "100", "-y", "30", BASH, "--norc", "--noprofile", "-i")
        self.wait(lambda s: s.rstrip().endswith("$"), "the shell's prompt")

    def line(self, text: str) -> None:
        self.tmux("send-keys", "-t", "0", "-l", text)
        self.tmux("send-keys", "-t", "0", "Enter")


def state(pid: int) -> str | None:
    """The process's state letter (T: stopped), None once bash has reaped it (and so recorded its status, which
    `wait PID` then gives; before that it still gives the stop's 128 + SIGTTOU)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def pending_term(pid: int) -> bool:
    """SIGTERM is still waiting to be delivered (the process stopped before it could run its handler)."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(ln.split(":", 1) for ln in f if ":" in ln)
    return any(int(fields[k], 16) & (1 << 14) for k in ("SigPnd", "ShdPnd"))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["&", "ctrl-z-bg"])
def test_kill_of_a_background_chat_ends_it(demo_dir, tmp_path, how):
    home = tmp_path / "home"
    home.mkdir()
    (home / "cache").symlink_to(os.path.dirname(os.path.dirname(demo_dir)), target_is_directory=True)
    sh = Shell(home)
    try:
        cmd = f"{sys.executable} -m yi_cli --model demo"
        if how == "&":
            sh.line(cmd + " &")
            scroll = sh.wait(lambda s: re.search(r"^\[1\] \d+$", s, re.M), "the job's pid")
        else:
            sh.line(cmd)
            sh.wait(lambda s: re.search(r"^>>>", s, re.M), "the prompt")
            sh.tmux("send-keys", "-t", "0", "C-z")
            sh.wait(lambda s: "Stopped" in s, "the stop")
            sh.line("bg")
            scroll = sh.wait(lambda s: re.search(r"^\[1\]\+ .*&$", s, re.M), "bg")
        sh.line("echo JOB=$(jobs -p %1)")
        scroll = sh.wait(lambda s: re.search(r"^JOB=\d+$", s, re.M), "the job's pid")
        pid = int(re.search(r"^JOB=(\d+)$", scroll, re.M)[1])
        # a background job that touches the terminal's modes is stopped (tty output): so it is, before the kill
        deadline = time.monotonic() + DEADLINE
        while state(pid) != "T":
            assert time.monotonic() < deadline, "the job never stopped"
            time.sleep(0.02)
        sh.line("kill %1; echo KILLED")
        sh.wait(lambda s: re.search(r"^KILLED$", s, re.M), "bash's kill (SIGTERM, then SIGCONT to a stopped job)")
        deadline = time.monotonic() + DEADLINE
        while (s := state(pid)) is not None:
            # stopped again with SIGTERM handled: stuck on the terminal (SIGTTOU), as before the fix
            assert not (s == "T" and not pending_term(pid)), f"stopped again after kill %1:\n{sh.scrollback()}"
            assert time.monotonic() < deadline, "yi-chat did not exit"
            time.sleep(0.02)
        sh.line(f"wait {pid}; echo STATUS=$?")
        scroll = sh.wait(lambda s: re.search(r"^STATUS=\d+$", s, re.M), "the exit status")
        assert re.search(r"^STATUS=130$", scroll, re.M), scroll
        after = scroll[scroll.index("$ kill %1") :]
        assert "yi-chat: terminated" in after
        assert ">>>" not in after and "Traceback" not in after  # nothing drawn on the shell's terminal
    finally:
        sh.close()


def fifo_writer(sh: Shell, fifo) -> int:
    """A descriptor writing into `fifo` once the chat has opened it to read it (an -f attachment): a writer may
    open it then, without waiting."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            assert time.monotonic() < deadline, f"yi-chat never opened the FIFO:\n{sh.scrollback()}"
            time.sleep(0.02)


def fifo_shell(demo_dir, tmp_path, name: str):
    """A shell whose yi-chat home has the demo model, and a FIFO `name` beside it to feed a run."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "cache").symlink_to(os.path.dirname(os.path.dirname(demo_dir)), target_is_directory=True)
    fifo = tmp_path / name
    os.mkfifo(fifo)
    return Shell(home), fifo


@pytest.mark.slow
def test_keys_typed_before_the_model_loads_are_not_echoed_raw(demo_dir, tmp_path):
    """From yi-chat's first instant (its imports, reading -f files, the model load) the terminal does not echo: keys
    typed then are kept for the first prompt, which shows them once, instead of echoed raw above the banner and
    again in the prompt. A FIFO given to -f holds the chat at its attachment read, inside that window."""
    sh, fifo = fifo_shell(demo_dir, tmp_path, "notes.txt")
    try:
        sh.line(f"{sys.executable} -m yi_cli --model demo -f {fifo}")
        writer = fifo_writer(sh, fifo)
        assert not pane_echoes(sh), "the terminal echoes while yi-chat starts"
        sh.tmux("send-keys", "-t", "0", "-l", "early words")
        queued(sh, "early words")
        assert "early words" not in sh.scrollback()  # not echoed where the cursor was
        os.write(writer, b"some notes\n")
        os.close(writer)
        scroll = sh.wait(lambda s: re.search(r"^>>> early words", s, re.M), "the prompt holding the early keys")
        assert scroll.count("early words") == 1, scroll
    finally:
        sh.close()


def pane_echoes(sh: Shell) -> bool:
    """Whether the pane's terminal echoes the keys typed on it (its ECHO mode, as whoever holds it has set it)."""
    import termios

    tty = sh.tmux("display-message", "-p", "-t", "0", "#{pane_tty}").strip()
    fd = os.open(tty, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        return bool(termios.tcgetattr(fd)[3] & termios.ECHO)
    finally:
        os.close(fd)


def piped_run(demo_dir, tmp_path, after: str, stdin: str = "file") -> tuple[Shell, int]:
    """A shell running the demo on a prompt file (`after`: the rest of its command line), past its first reply and
    waiting inside its second line, `/file` of a FIFO; returns the shell and the FIFO's writer (what is written is
    attached to the third line, `bye`). stdin "pipe": the prompts come through a FIFO, written and closed before
    yi-chat starts (a pipe whose writer is done, as `printf ... | yi-chat` or a here-doc)."""
    sh, fifo = fifo_shell(demo_dir, tmp_path, "notes.txt")
    prompts = tmp_path / "prompts.txt"
    script = f"hello\n/file {fifo}\nbye\n"
    if stdin == "pipe":
        os.mkfifo(prompts)
    else:
        prompts.write_text(script)
    try:
        sh.line(f"{sys.executable} -m yi_cli --model demo --max-new-tokens 4 < {prompts}{after}")
        if stdin == "pipe":  # the shell opens it for yi-chat, which starts once it has a writer
            w = fifo_writer(sh, prompts)
            os.write(w, script.encode())
            os.close(w)
        sh.wait(lambda s: "the reply stopped at the token limit" in s, "the first reply's end")
        writer = fifo_writer(sh, fifo)
    except BaseException:
        sh.close()
        raise
    return sh, writer


@pytest.mark.slow
@pytest.mark.parametrize("stdin", ["file", "pipe"])
def test_keys_typed_during_a_piped_run_are_not_echoed_into_its_replies(demo_dir, tmp_path, stdin):
    """`yi-chat < prompts.txt` drawn on a terminal: keys typed while it ran were echoed into the middle of its
    replies. The terminal is held for the run (stdin a pipe: once its writer is done with it); the keys stay
    queued, and the shell reads them after it (once). The run waits, inside the hold, for a FIFO it attaches while
    the keys are typed."""
    sh, writer = piped_run(demo_dir, tmp_path, "; echo STATUS=$?", stdin)
    try:
        typed_while_held(sh, writer, "typed words")
    finally:
        sh.close()


def typed_while_held(sh: Shell, writer: int, words: str) -> str:
    """With a piped run (`...; echo STATUS=$?`) waiting on the FIFO `writer` writes into: the terminal does not
    echo, `words` typed stay queued and unshown; then, the FIFO fed, the run ends and the shell reads them, once.
    The scrollback then."""
    assert not pane_echoes(sh), "the terminal echoes during the piped run"
    sh.tmux("send-keys", "-t", "0", "-l", words)
    queued(sh, words)
    assert words not in sh.scrollback()
    os.write(writer, b"some notes\n")
    os.close(writer)
    scroll = sh.wait(lambda s: re.search(rf"^STATUS=0\n\$ {words}", s, re.M), "the shell reading the keys")
    assert scroll.count(words) == 1, scroll
    return scroll


@pytest.mark.slow
def test_keys_typed_while_a_piped_run_starts_are_not_echoed(demo_dir, tmp_path):
    """`yi-chat -f notes < prompts.txt` on a terminal: keys typed while it started (its imports, reading -f, the
    model load) were echoed raw above its first reply, before its renderer held the terminal. The hold is taken in
    entry(), as a chat's is, and kept for the run; the shell reads the keys after it, once. A FIFO given to -f
    holds the run at its attachment read, inside that window."""
    sh, notes = fifo_shell(demo_dir, tmp_path, "notes.txt")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello\n")
    try:
        sh.line(f"{sys.executable} -m yi_cli --model demo --max-new-tokens 4 -f {notes} < {prompts}; echo STATUS=$?")
        writer = fifo_writer(sh, notes)  # open once yi-chat reads -f: past entry()
        scroll = typed_while_held(sh, writer, "early words")
        assert "the reply stopped at the token limit" in scroll
    finally:
        sh.close()


@pytest.mark.slow
@pytest.mark.parametrize("where", ["from", "into"])
def test_a_run_piped_from_or_into_a_process_leaves_the_terminal_to_it(demo_dir, tmp_path, where):
    """`cmd | yi-chat` and `yi-chat < f | cmd`: the process at the pipe's other end may be using the terminal
    (sudo's password, `cat` reading what is typed; a pager), so yi-chat does not hold its keys: a hold took their
    echo and line editing from it (its Enter never ended a line) and, having saved its modes, put them back after
    the run (a pager's raw modes, after it had quit: echo off at the shell). Here the terminal still echoes once
    yi-chat is past its start and its renderer, waiting inside a `/file` of a FIFO."""
    sh, fifo = fifo_shell(demo_dir, tmp_path, "prompts.txt")
    notes = tmp_path / "notes.txt"
    os.mkfifo(notes)
    run = f"{sys.executable} -m yi_cli --model demo --max-new-tokens 4"
    try:
        if where == "from":
            sh.line(f"cat {fifo} | {run}; echo STATUS=$?")
            writer = fifo_writer(sh, fifo)  # cat has it open
            os.write(writer, f"/file {notes}\n".encode())
        else:
            prompts = tmp_path / "script.txt"
            prompts.write_text(f"/file {notes}\nhello\n")
            sh.line(f"{run} < {prompts} | cat; echo STATUS=$?")
        notes_writer = fifo_writer(sh, notes)  # yi-chat reads it: its model loaded, its renderer made
        assert pane_echoes(sh), "yi-chat took the terminal's echo from the process it is piped with"
        os.write(notes_writer, b"some notes\n")
        os.close(notes_writer)
        if where == "from":
            os.write(writer, b"hello\n")
            os.close(writer)
        scroll = sh.wait(lambda s: "STATUS=0" in s, "the run's end")
        assert "the reply stopped at the token limit" in scroll
    finally:
        sh.close()


@pytest.mark.slow
def test_a_piped_run_put_in_the_background_goes_on_there(demo_dir, tmp_path):
    """Ctrl-Z then `bg` on `yi-chat < script > out.txt`: the hold of its keys (the test above) waited, stopped, for
    `fg`, as a chat must; a piped run goes on in the background, as it did before it held its keys."""
    out = tmp_path / "out.txt"
    sh, writer = piped_run(demo_dir, tmp_path, f" > {out}")
    try:
        sh.tmux("send-keys", "-t", "0", "C-z")
        sh.wait(lambda s: "Stopped" in s, "the stop")
        sh.line("bg")
        sh.wait(lambda s: re.search(r"^\[1\]\+ .*&$", s, re.M), "bg")
        os.write(writer, b"some notes\n")
        os.close(writer)
        sh.line("wait %1; echo STATUS=$?")
        sh.wait(lambda s: "STATUS=0" in s, "the run's end in the background")
        text = out.read_text()  # both replies, the second after /file's line
        first, _, rest = text.partition("\nattached ")
        assert first.strip() and rest.split("\n", 1)[1].strip(), text
    finally:
        sh.close()


@pytest.mark.slow
@pytest.mark.parametrize("when", ["reply", "prompt"])
def test_sigquit_gives_the_terminal_back_and_keeps_the_turn(demo_dir, tmp_path, when):
    """SIGQUIT ends a chat as SIGTERM does: the reply in flight recorded, the session saved, the terminal's modes
    put back, one line, exit 131. Mid-reply it is Ctrl-\\ (the hold keeps the terminal's signal keys); at the
    prompt, which reads Ctrl-\\ as a key, it is `kill -QUIT`. Left to Python's default the chat dumped core with
    the echo off and the reply in flight lost. The chat runs from a script (`sh`, which traps SIGQUIT for itself as
    a wrapper would): an interactive bash puts back its own modes after a job that a signal killed, and would hide
    what the chat left."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "cache").symlink_to(os.path.dirname(os.path.dirname(demo_dir)), target_is_directory=True)
    tokens = 4000 if when == "reply" else 8  # a reply that goes on past the Ctrl-\ (the demo loops at temp 0)
    script = tmp_path / "chat.sh"
    script.write_text(
        f"trap : QUIT\necho SH=$$\n{sys.executable} -m yi_cli --model demo --temperature 0 --max-new-tokens {tokens}\n"
        "echo STATUS=$?\nstty -a\n"
    )
    sh = Shell(home)
    try:
        sh.line(f"sh {script}")
        sh.wait(lambda s: re.search(r"^>>>", s, re.M), "the prompt")
        sh.line(QUESTION)
        if when == "reply":

            def streaming(s: str) -> bool:  # letters of the reply below the question (not the prompt's toolbar)
                below = s.partition(QUESTION)[2].split("\n")
                return len(re.sub(r"\s", "", "".join(ln for ln in below if not TOOLBAR.match(ln)))) >= 40

            sh.wait(streaming, "the reply")
            sh.tmux("send-keys", "-t", "0", "C-\\")
        else:
            sh.wait(
                lambda s: re.search(r"^length · .*\n>>>", s.partition(QUESTION)[2], re.M),
                "the next prompt",
            )
            shell = int(re.search(r"^SH=(\d+)$", sh.scrollback(), re.M)[1])
            with open(f"/proc/{shell}/task/{shell}/children") as f:
                (chat,) = f.read().split()
            os.kill(int(chat), signal.SIGQUIT)
        scroll = sh.wait(lambda s: re.search(r"^STATUS=\d+$", s, re.M) and s.rstrip().endswith("$"), "the exit")
        assert re.search(r"^STATUS=131$", scroll, re.M), scroll
        modes = scroll[scroll.index("STATUS=") :].split()
        assert "echo" in modes and "icanon" in modes and "isig" in modes, scroll  # as the shell had them
        assert re.search(r"yi-chat: quit; the session is saved in \S+\.json", scroll.replace("\n", "")), scroll
        assert "Traceback" not in scroll and "core dumped" not in scroll
        [path] = (home / "data" / "sessions").glob("*.json")
        turns = json.loads(path.read_text())["turns"]
        assert [t["role"] for t in turns] == ["user", "assistant"]
        assert turns[0]["content"] == QUESTION
        assert turns[1]["finish_reason"] == ("interrupted" if when == "reply" else "length"), turns[1]
        assert turns[1]["content"].strip()
    finally:
        sh.close()


@pytest.mark.slow
def test_a_reply_put_in_the_background_waits_stopped_for_fg(demo_dir, tmp_path):
    """README: a chat put in the background (`bg`) waits stopped for `fg`. Ctrl-Z mid-reply then `bg` went on
    streaming the reply over the shell's prompt and the keys typed there (run-through 4); it waits, and `fg` finishes
    the reply in place."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "cache").symlink_to(os.path.dirname(os.path.dirname(demo_dir)), target_is_directory=True)
    sh = Shell(home)
    try:
        sh.line(f"{sys.executable} -m yi_cli --model demo --temperature 0 --max-new-tokens 600")
        sh.wait(lambda s: re.search(r"^>>>", s, re.M), "the prompt")
        sh.line(QUESTION)

        def streaming(s: str) -> bool:  # letters of the reply below the question (not the prompt's toolbar)
            below = s.partition(QUESTION)[2].split("\n")
            return len(re.sub(r"\s", "", "".join(ln for ln in below if not TOOLBAR.match(ln)))) >= 40

        sh.wait(streaming, "the reply")
        sh.tmux("send-keys", "-t", "0", "C-z")
        sh.wait(lambda s: "Stopped" in s, "the stop")
        sh.line("echo JOB=$(jobs -p %1)")
        pid = int(re.search(r"^JOB=(\d+)$", sh.wait(lambda s: re.search(r"^JOB=\d+$", s, re.M), "the pid"), re.M)[1])
        sh.line("bg")
        sh.wait(lambda s: re.search(r"^\[1\]\+ .*&$", s, re.M), "bg")
        deadline = time.monotonic() + DEADLINE
        while state(pid) != "T":  # stopped again at once: the reply waits for the terminal
            assert time.monotonic() < deadline, f"the background reply never stopped:\n{sh.scrollback()}"
            time.sleep(0.02)
        sh.line("echo MARK")
        scroll = sh.wait(lambda s: re.search(r"^MARK$", s, re.M), "the shell's own line")
        after_bg = scroll[re.search(r"^\[1\]\+ .*&$", scroll, re.M).end() :]
        shown = [ln.strip() for ln in after_bg.splitlines() if ln.strip() and not re.match(r"\[1\]\+ +Stopped", ln)]
        assert shown == ["$ echo MARK", "MARK", "$"], scroll  # bash's own lines alone: no reply text
        sh.line("fg")
        sh.wait(lambda s: re.search(r"^length · ", s.rpartition("$ fg")[2], re.M), "the reply's end after fg")
    finally:
        sh.close()


# Keys typed ahead when no prompt comes for them -----------------------------------------------------------------------


def queued(sh: Shell, keys: str) -> None:
    """Wait until the pane's terminal holds `keys` (sent with send-keys) in its input queue, not read by anyone."""
    import fcntl
    import struct
    import termios

    tty = sh.tmux("display-message", "-p", "-t", "0", "#{pane_tty}").strip()
    fd = os.open(tty, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        deadline = time.monotonic() + DEADLINE
        while struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0] < len(keys.encode()):
            assert time.monotonic() < deadline, "the keys never reached the terminal's input"
            time.sleep(0.02)
    finally:
        os.close(fd)


def history_entries(home) -> list[str]:
    """The input history as the next prompt reads it (↑ gives the newest first)."""
    from yi_cli.ui.repl import TailHistory

    return list(TailHistory(str(home / "data" / "history")).load_history_strings())


def ended(sh: Shell) -> None:
    """Wait for the chat's ending line and the shell's prompt after it (keys typed before are the chat's)."""
    sh.wait(lambda s: re.search(r"^yi-chat: [^\n]*", s, re.M) and s.rstrip().endswith("$"), "the chat's end")


def chat_pid(sh: Shell) -> int:
    """yi-chat's pid: bash's one child while it runs in the foreground."""
    return sh.pid()


@contextlib.contextmanager
def scripted_chat(tmp_path, reply: str = "unused", env: str = "", then: str = ""):
    """A shell running yi-chat on a scripted server (`reply`), at its first prompt: (shell, server, home). `then`:
    the rest of the shell's line after yi-chat's arguments (more of them, `; echo EXIT=$?`)."""
    home = tmp_path / "home"
    home.mkdir()
    with OpenAIServer(Scripted(reply), model="scripted") as srv:
        sh = Shell(home)
        try:
            sh.line(f"{env} {sys.executable} -m yi_cli --endpoint {srv.url} --model scripted{then}".strip())
            sh.wait(lambda s: re.search(r"^>>>", s, re.M), "the prompt")
            yield sh, srv, home
        finally:
            sh.close()


def paused_reply(sh: Shell, engine: Scripted, at: int, shows: str) -> None:
    """Ask, and wait until the reply has streamed up to a pause at character `at` (`shows` on the screen)."""
    engine.pause_at = at
    sh.line("tell me")
    assert engine.paused.wait(DEADLINE)
    sh.wait(lambda s: shows in s, "the reply up to its pause")


def shell_after(sh: Shell) -> str:
    """The scrollback once the chat has ended and the shell runs a command again."""
    ended(sh)
    sh.line("echo AFTER")
    return sh.wait(lambda s: re.search(r"^AFTER$", s, re.M), "the shell after the chat")


def end_with_keys_ahead(sh: Shell, keys: str, signum: int, then=None) -> str:
    """Type `keys` ahead (waiting in the terminal's queue), send `signum` to the chat (then call `then`), and return
    the scrollback once the chat has ended and the shell runs a command again."""
    sh.tmux("send-keys", "-t", "0", "-l", keys)
    queued(sh, keys)
    os.kill(chat_pid(sh), signum)
    if then is not None:
        then()
    ended(sh)
    sh.line("echo AFTER")
    return sh.wait(lambda s: re.search(r"^AFTER$", s, re.M), "the shell after the chat")


@pytest.mark.parametrize("signum,word", [(signal.SIGTERM, "terminated"), (signal.SIGHUP, "hung up")])
def test_lines_typed_during_a_reply_go_to_the_history_not_the_shell(tmp_path, signum, word):
    """Lines typed while a reply streams wait, unechoed, in the terminal for the next prompt. A signal that ends the
    chat (SIGTERM; SIGHUP sent with the terminal still there) leaves no next prompt: the shell read them and ran
    each as a command (here a `touch`), and the messages were lost. They are kept in the input history instead, the
    ending line says so, and the shell runs nothing."""
    marker = tmp_path / "ran"
    reply = markdown_reply(3)
    with scripted_chat(tmp_path, reply, then=" --max-new-tokens 100000") as (sh, srv, home):
        paused_reply(sh, srv.engine, reply.index("## Part 1"), "return x * 0")
        ahead = f"touch {marker}\ra secod\x7fnd message\ra paste: \x1b[200~one\rtwo\x1b[201~\ra draft\x1b\rof 2"
        scroll = end_with_keys_ahead(sh, ahead, signum)
    assert not marker.exists(), scroll  # the shell ran none of it
    ending = re.search(rf"yi-chat: {word}; the session is saved in \S+\.json; (.*)", scroll.replace("\n", ""))
    assert ending, scroll
    assert ending[1].startswith("4 messages typed ahead were not sent: in the input history (↑ at the next prompt)")
    kept = [f"touch {marker}", "a second message", "a paste: one\ntwo", "a draft\nof 2"]  # Esc Enter: a new line
    assert history_entries(home)[:5] == [*reversed(kept), "tell me"]
    assert "Traceback" not in scroll


@pytest.mark.parametrize("end", ["/exit\r", "/quit\r", "\x04"])
def test_lines_typed_after_exit_during_a_reply_go_to_the_history(tmp_path, end):
    """During a reply: /exit (or /quit, or Ctrl-D), then another line. The chat ended at /exit as asked and the line
    after it went nowhere, without a word (a signal kept it). It goes to the input history and a line says so."""
    marker = tmp_path / "ran"
    with scripted_chat(tmp_path, "the first part. the second part.", then="; echo EXIT=$?") as (sh, srv, home):
        paused_reply(sh, srv.engine, len("the first part."), "the first part.")
        ahead = f"{end}please remember this question\rtouch {marker}\r"
        sh.tmux("send-keys", "-t", "0", "-l", ahead)
        queued(sh, ahead)
        srv.engine.go.set()
        scroll = sh.wait(lambda s: re.search(r"^EXIT=\d+", s, re.M), "the chat's end")
    assert not marker.exists(), scroll  # the shell ran none of it
    assert re.search(r"^EXIT=0$", scroll, re.M), scroll
    assert "2 messages typed ahead were not sent: in the input history (↑ at the next prompt)" in scroll, scroll
    assert history_entries(home)[:2] == [f"touch {marker}", "please remember this question"]
    assert "Traceback" not in scroll


def test_keys_that_read_as_a_mouse_report_are_ignored_not_a_traceback(tmp_path):
    """Esc [ 1 m typed at the prompt (by hand, or queued during a reply) reads as a mouse report: prompt_toolkit's
    handler took it apart as three numbers, printed a traceback and "Press ENTER to continue", which ate the keys
    after it. No mouse is asked for: the report is ignored and the line goes on as typed."""
    with scripted_chat(tmp_path, "an answer") as (sh, srv, _):
        sh.tmux("send-keys", "-t", "0", "-l", "hello ")
        sh.tmux("send-keys", "-t", "0", "-H", "1b", "5b", "31", "6d", "1b", "5b", "35", "4d")
        sh.tmux("send-keys", "-t", "0", "-l", "world")
        sh.wait(lambda s: re.search(r"^>>> hello world", s, re.M), "the line")
        sh.tmux("send-keys", "-t", "0", "Enter")
        scroll = sh.wait(lambda s: "an answer" in s and s.count(">>>") >= 2, "the reply")
        assert srv.engine.prompts == ["hello world"]
    assert "Traceback" not in scroll and "Unhandled exception" not in scroll, scroll


def test_a_dumb_terminal_shows_the_line_that_enter_sends(tmp_path):
    """TERM=dumb: prompt_toolkit's plain prompt echoed only the character before the cursor at each change. Two
    Backspaces after `helloo` left `helloool` on the screen (`hell` was sent), ↑ showed nothing of the line it
    recalled, a character put in mid-line showed at the end, Tab's completion one character. Each prompt's row now
    holds the line that was sent."""
    with scripted_chat(tmp_path, "an answer", "TERM=dumb") as (sh, srv, _):

        def last_prompt(s: str) -> str:
            return [line.rstrip() for line in s.splitlines() if line.startswith(">>>")][-1]

        def typed(*keys: str, literal: str = "", shows: str) -> str:
            """The line the keys leave on the screen, once it shows `shows`; then Enter."""
            if literal:
                sh.tmux("send-keys", "-t", "0", "-l", literal)
            if keys:
                sh.tmux("send-keys", "-t", "0", *keys)
            sh.wait(lambda s: last_prompt(s) == ">>> " + shows, f"the line {shows!r}")
            n = sh.scrollback().count(">>>") + 1
            sh.tmux("send-keys", "-t", "0", "Enter")
            sh.wait(lambda s: s.count(">>>") == n, "the next prompt")

        typed("BSpace", "BSpace", literal="helloo", shows="hell")
        typed("Up", shows="hell")
        typed("Left", "X", literal="abc", shows="abXc")
        assert srv.engine.prompts == ["hell", "hell", "abXc"]
        typed("Tab", literal="/his", shows="/history")
        sh.tmux("send-keys", "-t", "0", "-l", "delete everything")
        sh.wait(lambda s: last_prompt(s) == ">>> delete everything", "the line")
        sh.tmux("send-keys", "-t", "0", "C-c")  # dropped: marked ^C, as the full prompt marks it
        scroll = sh.wait(lambda s: re.search(r"^>>> delete everything\^C\n>>>", s, re.M), "the line marked ^C")
    assert "unknown command" not in scroll and "/history" not in srv.engine.prompts, scroll
    assert "delete everything" not in srv.engine.prompts


def test_a_dumb_terminals_message_of_several_lines_marks_each_line_after_its_first(tmp_path):
    """TERM=dumb, Esc Enter: a message's second line was written at the left margin, and in the scrollback it read
    as the reply's text. It is drawn after `... `, as the full prompt draws it, on each redraw of the draft too."""
    with scripted_chat(tmp_path, "an answer", "TERM=dumb") as (sh, srv, _):
        sh.tmux("send-keys", "-t", "0", "-l", "first line")
        sh.tmux("send-keys", "-t", "0", "Escape", "Enter")
        sh.tmux("send-keys", "-t", "0", "-l", "second line")
        sh.wait(lambda s: re.search(r"^>>> first line\n\.\.\. second line$", s, re.M), "the two lines")
        sh.tmux("send-keys", "-t", "0", "BSpace")  # a change that redraws the draft below
        sh.wait(lambda s: re.search(r"^>>> first line\n\.\.\. second lin$", s, re.M), "the draft drawn again")
        sh.tmux("send-keys", "-t", "0", "Enter")
        scroll = sh.wait(lambda s: "an answer" in s, "the reply")
    assert srv.engine.prompts == ["first line\nsecond lin"]
    assert not re.search(r"^second", scroll, re.M), scroll  # no line of the message at the margin


def test_a_line_being_typed_when_a_signal_ends_the_chat_is_kept(tmp_path):
    """At the prompt, the line typed so far (not sent) goes to the input history as the chat ends by SIGTERM: one
    message, a draft of several lines too (each of its lines was kept as a message of its own)."""
    with scripted_chat(tmp_path) as (sh, _, home):
        sh.tmux("send-keys", "-t", "0", "-l", "half a thought")
        sh.tmux("send-keys", "-t", "0", "Escape", "Enter")
        sh.tmux("send-keys", "-t", "0", "-l", "on two lines")
        sh.wait(lambda s: re.search(r"^>>> half a thought\n\.\.\. on two lines", s, re.M), "the draft")
        os.kill(chat_pid(sh), signal.SIGTERM)
        scroll = shell_after(sh)
    assert "1 message typed ahead was not sent: in the input history" in scroll.replace("\n", ""), scroll
    assert history_entries(home)[:1] == ["half a thought\non two lines"]


@pytest.mark.parametrize("where", ["inline", "editor"])
def test_a_message_being_rewritten_when_a_signal_ends_the_chat_is_kept(tmp_path, where):
    """/edit, then SIGTERM while the rewrite is at edit> (it was taken as a Ctrl-C: "edit cancelled", and the text
    went nowhere) or in $EDITOR, saved but not quit (the editor killed, its file deleted): the rewrite goes to the
    input history, as a line at >>> does."""
    saved = tmp_path / "saved"
    editor = tmp_path / "ed.sh"  # saves the file (`:w`) and stays open
    editor.write_text(f'#!/bin/sh\nprintf "the rewritten question\\n" > "$1"\ntouch {saved}\nexec sleep 60\n')
    editor.chmod(0o755)
    with scripted_chat(tmp_path, "an answer", f"VISUAL= EDITOR={editor if where == 'editor' else ''}") as chat:
        sh, _, home = chat
        sh.line("the first question")
        sh.wait(lambda s: "an answer" in s and s.count(">>>") >= 2, "the reply")
        sh.line("/edit")
        if where == "inline":
            sh.wait(lambda s: re.search(r"^edit> the first question", s, re.M), "the edit prompt")
            sh.tmux("send-keys", "-t", "0", "C-u")
            sh.tmux("send-keys", "-t", "0", "-l", "the rewritten question")
            sh.wait(lambda s: re.search(r"^edit> the rewritten question", s, re.M), "the rewrite")
        else:
            deadline = time.monotonic() + DEADLINE
            while not saved.exists():  # the editor's file written
                assert time.monotonic() < deadline, "the editor never saved"
                time.sleep(0.05)
        os.kill(chat_pid(sh), signal.SIGTERM)
        scroll = shell_after(sh)
    assert "1 message typed ahead was not sent: in the input history" in scroll.replace("\n", ""), scroll
    assert history_entries(home)[:2] == ["the rewritten question", "/edit"]
    assert "edit cancelled" not in scroll


def test_a_stop_signal_at_the_prompt_stops_as_ctrl_z_does(tmp_path):
    """`kill -TSTP` at the prompt stopped the chat as it does mid-reply: the toolbar stayed on the shell's screen,
    and after `fg` neither the prompt nor its draft was drawn again (the draft still there, unseen)."""
    with scripted_chat(tmp_path, "an answer") as (sh, srv, _):
        sh.tmux("send-keys", "-t", "0", "-l", "my draft")
        sh.wait(lambda s: re.search(r"^>>> my draft", s, re.M), "the draft")
        os.kill(chat_pid(sh), signal.SIGTSTP)
        stopped = sh.wait(lambda s: "Stopped" in s and s.rstrip().endswith("$"), "the stop")
        assert "/help" not in stopped[stopped.index("Stopped") :], stopped  # the toolbar erased first
        sh.line("fg")
        sh.wait(lambda s: re.search(r"^\$ fg\n(.*\n)*>>> my draft", s, re.M), "the prompt drawn again")
        sh.tmux("send-keys", "-t", "0", "-l", " and more")
        sh.tmux("send-keys", "-t", "0", "Enter")
        sh.wait(lambda s: "an answer" in s, "the reply")
    assert srv.requests[-1]["messages"][-1]["content"] == "my draft and more"


def test_lines_typed_while_the_chat_starts_go_to_the_history_when_a_signal_ends_it(tmp_path):
    """Keys typed while yi-chat starts wait for its first prompt (here the start waits on a FIFO given to -f); a
    SIGTERM there ended the chat and the shell ran the line typed."""
    home = tmp_path / "home"
    home.mkdir()
    marker = tmp_path / "ran"
    fifo = tmp_path / "notes.txt"
    os.mkfifo(fifo)
    with OpenAIServer(Scripted("unused"), model="scripted") as srv:
        sh = Shell(home)
        try:
            sh.line(f"{sys.executable} -m yi_cli --endpoint {srv.url} --model scripted -f {fifo}")
            writer = fifo_writer(sh, fifo)
            try:
                sh.tmux("send-keys", "-t", "0", "-l", f"touch {marker}\r")
                queued(sh, f"touch {marker}\r")
                os.kill(chat_pid(sh), signal.SIGTERM)
                ended(sh)
                sh.line("echo AFTER")
                scroll = sh.wait(lambda s: re.search(r"^AFTER$", s, re.M), "the shell after the chat")
            finally:
                os.close(writer)
        finally:
            sh.close()
    assert not marker.exists(), scroll
    assert "1 message typed ahead was not sent: in the input history" in scroll.replace("\n", ""), scroll
    assert history_entries(home)[:1] == [f"touch {marker}"]


GATE = """
import os, sys, time
class _Gate:
    def find_spec(self, name, path=None, target=None):
        if name == "prompt_toolkit" and "yi_cli.ui.repl" in sys.modules and not os.path.exists(GO):
            open(REACHED, "w").close()
            deadline = time.monotonic() + 60
            while not os.path.exists(GO) and time.monotonic() < deadline:
                time.sleep(0.01)
        return None
sys.meta_path.insert(0, _Gate())
"""


@pytest.mark.parametrize(
    "signum,word", [(signal.SIGTERM, "terminated"), (signal.SIGHUP, "hung up"), (signal.SIGINT, "interrupted")]
)
def test_a_signal_while_the_repl_is_imported_ends_the_chat_as_anywhere(tmp_path, signum, word):
    """SIGTERM (SIGHUP, SIGQUIT) after the model loaded and before the first prompt, while the REPL's module was
    being imported: the handler found it listed without `end_prompt` yet and the run ended in "internal error
    (AttributeError ...)", exit 1. Ctrl-C there ended it as it should, but dropped the line typed ahead. Here a
    sitecustomize holds that import (prompt_toolkit's, inside yi_cli.ui.repl's) until the test lets it go."""
    home = tmp_path / "home"
    home.mkdir()
    gate = tmp_path / "gate"
    gate.mkdir()
    reached, go, marker = tmp_path / "reached", tmp_path / "go", tmp_path / "ran"
    (gate / "sitecustomize.py").write_text(f"REACHED, GO = {str(reached)!r}, {str(go)!r}\n" + GATE)
    with OpenAIServer(Scripted("unused"), model="scripted") as srv:
        sh = Shell(home)
        try:
            sh.line(f"PYTHONPATH={gate}:{ROOT} {sys.executable} -m yi_cli --endpoint {srv.url} --model scripted")
            deadline = time.monotonic() + DEADLINE
            while not reached.exists():
                assert time.monotonic() < deadline, "the REPL's import never began"
                time.sleep(0.02)
            scroll = end_with_keys_ahead(sh, f"touch {marker}\r", signum, go.touch)
        finally:
            sh.close()
    assert not marker.exists(), scroll  # the shell ran none of it
    flat = scroll.replace("\n", "")
    assert f"yi-chat: {word}; 1 message typed ahead was not sent: in the input history" in flat, scroll
    assert "internal error" not in scroll and "Traceback" not in scroll, scroll
    assert history_entries(home)[:1] == [f"touch {marker}"]


@contextlib.contextmanager
def chat_on_a_held_model_list(home):
    """(shell, server, go): a chat started in a Shell with --endpoint on a stand-in server whose model list is held
    until `go` is set, then refused ("no models today"); yielded once the list has been asked for."""
    import threading

    from tests.compat_servers import Server

    go = threading.Event()

    def answer(h):
        go.wait(DEADLINE)
        h.json(500, {"error": {"message": "no models today"}})

    with Server(answer) as srv:
        sh = Shell(home)
        try:
            sh.line(f"{sys.executable} -m yi_cli --endpoint {srv.root}")
            model_list_asked(srv)
            yield sh, srv, go
        finally:
            go.set()
            sh.close()


def model_list_asked(srv) -> None:
    """Wait until the chat has asked the stand-in server for its model list (the load is under way)."""
    deadline = time.monotonic() + DEADLINE
    while not srv.requests:
        assert time.monotonic() < deadline, "the model list was never asked for"
        time.sleep(0.02)


def test_lines_typed_while_the_load_fails_go_to_the_history_not_the_shell(tmp_path):
    """A chat whose model failed to load (a tokenizer that cannot be read, a server's model list refused) after
    lines were typed during the load: they went back to the terminal, and the shell ran each as a command (as
    Ctrl-C there no longer let it). They are kept in the input history, and the ending line says so."""

    home = tmp_path / "home"
    home.mkdir()
    marker = tmp_path / "ran"
    with chat_on_a_held_model_list(home) as (sh, srv, go):  # held until the keys are typed, then refused
        keys = f"touch {marker}\r"
        sh.tmux("send-keys", "-t", "0", "-l", keys)
        queued(sh, keys)
        go.set()
        scroll = shell_after(sh)
    assert not marker.exists(), scroll  # the shell ran none of it
    flat = scroll.replace("\n", "")
    assert "no models today; 1 message typed ahead was not sent: in the input history" in flat, scroll
    assert history_entries(home)[:1] == [f"touch {marker}"]


def test_a_server_slow_to_list_its_models_is_said_on_the_screen(tmp_path):
    """--endpoint without --model, a server that took its time over the model list: the screen stayed blank until the
    idle timeout (60 s); a local model's load shows a spinner there. It says whom it asks."""
    home = tmp_path / "home"
    home.mkdir()
    with chat_on_a_held_model_list(home) as (sh, srv, go):
        where = srv.root.rstrip("/")
        sh.wait(lambda screen: f"asking {where}" in screen and "for its models ..." in screen, "the spinner")
        go.set()
        scroll = shell_after(sh)
    assert "no models today" in scroll.replace("\n", ""), scroll


@pytest.mark.parametrize("case", ["no session", "truncated", "config"])
def test_lines_typed_as_a_resume_or_the_config_is_refused_go_to_the_history_not_the_shell(tmp_path, case):
    """`yi-chat -c` with no session saved, a truncated --resume file, a config.toml refused: the chat failed before
    its renderer took the keys held since the start, and the line typed after the command went to the shell, which
    ran it. It is kept in the input history, as where the model fails to load."""
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    marker = tmp_path / "ran"
    args, said = {
        "no session": ("-c", "no interactive session saved yet"),
        "truncated": (f"--resume {tmp_path / 'cut.json'}", "cut.json"),
        "config": ("", "config.toml"),
    }[case]
    (tmp_path / "cut.json").write_text('{"turns": [{"role": "user", "content": "hi"')
    if case == "config":
        (home / "config" / "config.toml").write_text("model = 5\n")
    sh = Shell(home)
    try:  # the line after the command waits in the terminal's queue before yi-chat starts (bash reads one line)
        sh.tmux("send-keys", "-t", "0", "-l", f"{sys.executable} -m yi_cli {args}\rtouch {marker}\r")
        scroll = shell_after(sh)
    finally:
        sh.close()
    assert not marker.exists(), scroll  # the shell ran none of it
    flat = scroll.replace("\n", "")
    assert re.search(
        rf"yi-chat: [^$]*{re.escape(said)}[^$]*; 1 message typed ahead was not sent: in the input history", flat
    ), scroll
    assert history_entries(home)[:1] == [f"touch {marker}"]


def test_a_line_typed_after_a_one_shot_refused_at_once_is_the_shells(tmp_path):
    """A one-shot (`-p hi`) refused before its model loads: the line typed after it is the shell's to run, as after
    any one-shot (the keep of a chat's lines took it into the input history)."""
    home = tmp_path / "home"
    home.mkdir()
    marker = tmp_path / "ran"
    sh = Shell(home)
    try:
        sh.tmux("send-keys", "-t", "0", "-l", f"{sys.executable} -m yi_cli -p hi -c\rtouch {marker}\r")
        scroll = shell_after(sh)
    finally:
        sh.close()
    assert marker.exists(), scroll  # the shell ran it
    assert "typed ahead" not in scroll and "no interactive session saved yet" in scroll, scroll


def test_a_paste_longer_than_the_terminals_queue_while_the_model_loads_lets_ctrl_c_through(tmp_path):
    """A paste of 13 KB while the model loads filled the terminal's 4 KiB queue: the Ctrl-C typed after it waited
    until the load ended (here the server's model list never comes). The queue is read out while the model loads
    too: Ctrl-C ends the chat at once, and the paste is kept whole in the input history."""
    import threading

    from tests.compat_servers import Server

    home = tmp_path / "home"
    home.mkdir()
    go = threading.Event()

    def answer(h):  # the model list, held past the test's own wait: the load waits
        go.wait(5 * DEADLINE)
        h.json(500, {"error": {"message": "no models today"}})

    pasted = "\n".join(f"pasted line {i:03d} " + "x" * 50 for i in range(200))
    with Server(answer) as srv:
        sh = Shell(home)
        try:
            # (the model list's wait past the test's own: its timeout ending the load let the Ctrl-C through)
            sh.line(f"{sys.executable} -m yi_cli --endpoint {srv.root} --idle-timeout {4 * DEADLINE}")
            model_list_asked(srv)
            sh.tmux("set-buffer", "-b", "p", pasted)
            sh.tmux("paste-buffer", "-p", "-b", "p", "-t", "0")
            sh.tmux("send-keys", "-t", "0", "C-c")
            scroll = sh.wait(lambda s: "typed ahead was not sent" in s, "the chat ended by the Ctrl-C")
        finally:
            go.set()
            sh.close()
    assert re.search(r"yi-chat: interrupted[^\n]*; 1 message typed ahead was not sent: in the input history", scroll)
    assert "no models today" not in scroll and history_entries(home)[:1] == [pasted]


def test_a_signal_ends_a_chat_whose_output_is_paused_with_ctrl_s(tmp_path):
    """Ctrl-S (XOFF) to read a fast reply, then SIGTERM: the reply ended, and the chat waited in its last writes to
    the paused terminal until a Ctrl-Q (a logout's SIGTERM then SIGKILL lost the session's last turn). The signal
    starts the output again and the chat ends as anywhere."""
    reply = "word " * 40_000  # far more than the terminal's buffer holds
    home = tmp_path / "home"
    home.mkdir()
    engine = Scripted(reply, pause_at=100)
    with OpenAIServer(engine, model="scripted") as srv:
        sh = Shell(home)
        try:
            sh.line(f"{sys.executable} -m yi_cli --endpoint {srv.url} --model scripted")
            sh.wait(lambda s: re.search(r"^>>>", s, re.M), "the prompt")
            sh.line("tell me")
            assert engine.paused.wait(DEADLINE)
            sh.tmux("send-keys", "-t", "0", "C-s")  # the line discipline stops the output as it reads it
            pid = chat_pid(sh)
            engine.go.set()
            deadline = time.monotonic() + DEADLINE
            while open(f"/proc/{pid}/wchan").read() != "wait_woken":  # its write to the terminal waits
                assert time.monotonic() < deadline, "the chat's write never waited on the paused terminal"
                time.sleep(0.02)
            os.kill(pid, signal.SIGTERM)
            scroll = shell_after(sh)
        finally:
            sh.close()
    assert "yi-chat: terminated; the session is saved in" in scroll.replace("\n", ""), scroll[-500:]


def test_a_sigint_sent_at_the_prompt_drops_the_line_as_ctrl_c_does(tmp_path):
    """`kill -INT` at the prompt (prompt_toolkit's `<sigint>`) dropped the line typed with no `^C`: left as typed,
    it read as a message sent whose reply never came. It is a Ctrl-C: the line marked `^C`, a new prompt."""
    with scripted_chat(tmp_path, "an answer") as (sh, srv, _):
        sh.tmux("send-keys", "-t", "0", "-l", "my draft line")
        sh.wait(lambda s: re.search(r"^>>> my draft line *$", s, re.M), "the draft")
        os.kill(chat_pid(sh), signal.SIGINT)
        sh.wait(lambda s: re.search(r"^>>> my draft line\^C\n>>>", s, re.M), "the line marked ^C, a new prompt")
        sh.line("next")
        sh.wait(lambda s: "an answer" in s, "the reply to the next line")
    assert srv.engine.prompts == ["next"]


def test_ctrl_z_and_ctrl_backslash_sent_with_the_enter_act_on_the_reply(tmp_path):
    """Enter and Ctrl-Z (or Ctrl-\\) in one write (a fast hand, tmux's send-keys): the prompt read both at once, so
    they were keys, not signals: the reply ran to its end before Ctrl-Z suspended, and Ctrl-\\ was dropped. Each acts
    as during the reply now. The reply waits (nothing sent) until the test lets it go, so only a stop or a quit that
    came before the reply's end lets this test go on."""
    with scripted_chat(tmp_path, "A short one.", then=" --max-new-tokens 100000") as (sh, srv, home):
        engine = srv.engine
        engine.pause_at = 0
        sh.tmux("send-keys", "-t", "0", "-l", "first")
        sh.wait(lambda s: ">>> first" in s, "the line typed")
        sh.tmux("send-keys", "-t", "0", "Enter", "C-z")
        sh.wait(lambda s: re.search(r"^\[1\]\+ +Stopped", s, re.M) and s.rstrip().endswith("$"), "the stop")
        assert engine.sent == ""
        sh.line("fg")
        assert engine.paused.wait(DEADLINE)
        engine.go.set()
        sh.wait(lambda s: re.search(r"^A short one\.\nstop · .*\n>>>", s, re.M), "the reply after fg")
        engine.paused.clear()
        engine.go.clear()
        sh.tmux("send-keys", "-t", "0", "-l", "second")
        sh.wait(lambda s: ">>> second" in s, "the second line typed")
        sh.tmux("send-keys", "-t", "0", "Enter", "C-\\")
        ended(sh)
        sh.line("echo EXIT=$?")
        scroll = sh.wait(lambda s: re.search(r"^EXIT=\d+$", s, re.M), "the exit code")
    assert "EXIT=131" in scroll, scroll
    turns = json.loads(sorted((home / "data" / "sessions").glob("*.json"))[-1].read_text())["turns"]
    assert [t["content"] for t in turns] == ["first", "A short one.", "second", ""], turns


def test_a_dumb_terminal_draws_the_prompt_and_draft_again_after_fg(tmp_path):
    """TERM=dumb, Ctrl-Z at the prompt with a draft, then `fg`: nothing redrew the prompt or the draft (a bare row;
    Enter sent `draft more` where the screen showed ` more`). They are written again where the shell left the
    cursor."""
    with scripted_chat(tmp_path, "an answer", "TERM=dumb") as (sh, srv, _):
        sh.tmux("send-keys", "-t", "0", "-l", "draft")
        sh.wait(lambda s: ">>> draft" in s, "the draft")
        sh.tmux("send-keys", "-t", "0", "C-z")
        sh.wait(lambda s: re.search(r"^\[1\]\+ +Stopped", s, re.M) and s.rstrip().endswith("$"), "the stop")
        sh.line("fg")
        sh.wait(lambda s: re.search(r"^\$ fg\n.*yi_cli.*\n>>> draft$", s, re.M), "the prompt and draft after fg")
        sh.tmux("send-keys", "-t", "0", "-l", " more")
        sh.wait(lambda s: re.search(r"^>>> draft more$", s, re.M), "the line typed on")
        sh.tmux("send-keys", "-t", "0", "Enter")
        sh.wait(lambda s: "an answer" in s, "the reply")
        assert srv.engine.prompts == ["draft more"]


@pytest.mark.parametrize("at", [">>>", "edit>"])
def test_a_window_closed_with_a_line_typed_at_the_prompt_keeps_it_in_the_history(tmp_path, at):
    """The terminal window closed (tmux's session killed) with a line half typed at >>> (or an /edit's rewrite at
    edit>): the prompt put its modes back on a hung-up terminal (EIO) before the shell's SIGHUP came, and the line
    was lost, where a `kill -HUP` kept it in the input history (a signals review: 9 of 9). README: the line at the
    prompt is kept."""
    with scripted_chat(tmp_path, "an answer") as (sh, srv, home):
        if at == "edit>":
            sh.line("half line")
            sh.wait(lambda s: re.search(r"^an answer\nstop · .*\n>>>", s, re.M), "the reply")
            sh.line("/edit")
            sh.wait(lambda s: "edit> half line" in s, "the message to edit")
            sh.tmux("send-keys", "-t", "0", "-l", " at the prompt")
        else:
            sh.tmux("send-keys", "-t", "0", "-l", "half line at the prompt")
        sh.wait(lambda s: f"{at} half line at the prompt" in s, "the line typed")
        pid = chat_pid(sh)
        sh.tmux("kill-server")  # the window closes: the pane's terminal hangs up
        deadline = time.monotonic() + DEADLINE
        while state(pid) not in (None, "Z"):  # waits on the process, with a deadline
            assert time.monotonic() < deadline, "yi-chat did not end after the hangup"
            time.sleep(0.05)
    assert history_entries(home)[:1] == ["half line at the prompt"]


def test_sigterm_during_a_wrapper_editor_ends_the_editor_it_ran(tmp_path):
    """$VISUAL a wrapper (Debian's sensible-editor, a `#!/bin/sh` running `vim "$@"` as its child), the chat a job of
    an interactive shell: SIGTERM killed the wrapper only, and the editor ran on after the chat ended, on the
    shell's terminal (adopted by init; vim wrote "Error reading input" over the shell at the next key: a signals
    review). README: the editor killed."""
    pidfile = tmp_path / "editor.pid"
    wrapper = tmp_path / "wrapper.sh"
    wrapper.write_text(f"#!/bin/sh\nsh -c 'echo $$ > {pidfile}; echo EDITING; exec sleep 300'\necho wrapper-done\n")
    wrapper.chmod(0o755)
    with scripted_chat(tmp_path, "an answer", f"VISUAL={wrapper}") as (sh, srv, home):
        sh.line("first")
        sh.wait(lambda s: re.search(r"^an answer\nstop · .*\n>>>", s, re.M), "the reply")
        sh.line("/edit")
        sh.wait(lambda s: "EDITING" in s, "the editor")
        editor = int(pidfile.read_text())
        os.kill(chat_pid(sh), signal.SIGTERM)
        ended(sh)
        deadline = time.monotonic() + DEADLINE
        while state(editor) not in (None, "Z"):  # waits on the process, with a deadline
            if time.monotonic() > deadline:
                os.kill(editor, signal.SIGKILL)
                raise AssertionError("the editor the wrapper ran outlived the chat")
            time.sleep(0.05)


def test_ctrl_z_during_the_load_gives_the_shell_its_cursor(tmp_path):
    """Ctrl-Z while the load's spinner turns (rich's live display hides the cursor until it ends): the shell was left
    without a cursor, for good after `kill %1` (the show went to /dev/null with the terminal let go). The terminal's
    cursor is shown as the chat stops."""
    from test_screen import LOAD_GATE

    go = tmp_path / "go"
    script = tmp_path / "load.py"
    script.write_text(LOAD_GATE.format(root=ROOT, go=str(go)))
    sh = Shell(tmp_path)
    try:
        sh.line(f"{sys.executable} {script}")
        sh.wait(lambda s: "loading a-model-whose-name" in s, "the spinner")
        assert sh.tmux("display", "-p", "-t", "0", "#{cursor_flag}").strip() == "0"  # hidden while it turns
        sh.tmux("send-keys", "-t", "0", "C-z")
        sh.wait(lambda s: re.search(r"^\[1\]\+ +Stopped", s, re.M) and s.rstrip().endswith("$"), "the stop")
        assert sh.tmux("display", "-p", "-t", "0", "#{cursor_flag}").strip() == "1"
        sh.line("kill %1")
        sh.line("fg")
        sh.wait(lambda s: "yi-chat: terminated" in s and s.rstrip().endswith("$"), "the end")
        assert sh.tmux("display", "-p", "-t", "0", "#{cursor_flag}").strip() == "1"
    finally:
        go.touch()
        sh.close()
