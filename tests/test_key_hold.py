"""The REPL's hold on the terminal's keys (keys.KeyHold on a real pty): from before each prompt until its line has
been handled, so keys typed right after Enter — before the reply's first token — are not echoed into the screen.
prompt_toolkit is replaced by a scripted session to isolate repl.run's handling of the terminal (the tmux tests in
test_screen.py run the real one)."""

from __future__ import annotations

import io
import os
import termios
from pathlib import Path

import pytest
from rich.console import Console

from tests.fixtures import ScriptedEngine
from yi_cli.conversation.chat import Chat
from yi_cli.ui import repl
from yi_cli.ui.keys import KeyHold
from yi_cli.ui.render import TerminalRenderer


def echo(fd: int) -> bool:
    return bool(termios.tcgetattr(fd)[3] & termios.ECHO)


def scripted_session(lines: list[str], on_prompt=lambda: None):
    """prompt_toolkit's PromptSession as repl.run uses it: each prompt gives the next of `lines`, then Ctrl-D."""

    class Session:
        def __init__(self, **kw):
            from prompt_toolkit.buffer import Buffer
            from prompt_toolkit.input import DummyInput

            self.input = DummyInput()  # its keys typed ahead (none here)
            self.default_buffer = Buffer()  # the line at the prompt (empty: Ctrl-D ends it)

        def prompt(self, text, **kw):
            on_prompt()
            if not lines:
                raise EOFError
            return lines.pop(0)

    return Session


def test_keys_stay_held_from_each_prompt_until_its_line_is_handled(tmp_path, monkeypatch):
    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    master, slave = os.openpty()
    try:
        states = []
        lines = ["a question", "/set temperature 0.5", "another question"]

        session = scripted_session(lines, lambda: states.append(("prompt", echo(slave))))
        monkeypatch.setattr(repl.dumb_prompt, "Session", session)
        engine = ScriptedEngine(["one reply", "two"])
        out = Console(file=io.StringIO(), width=80, color_system=None)
        chat = Chat(engine, TerminalRenderer(out, Console(file=io.StringIO()), keys=KeyHold(slave)))
        handle = chat.handle

        def handled(line):
            states.append(("line", echo(slave)))
            try:
                return handle(line)
            finally:
                states.append(("handled", echo(slave)))

        chat.handle = handled
        assert echo(slave)
        assert repl.run(chat) == 0
        assert len(engine.seen) == 2 and "one reply" in out.file.getvalue()
        assert [s for s, _ in states] == ["prompt", "line", "handled"] * 3 + ["prompt"]
        assert not any(on for _, on in states), states  # through every reply's end too
        assert echo(slave)  # and given back when the chat ends
    finally:
        os.close(master)
        os.close(slave)


def test_a_ctrl_c_between_a_reply_and_the_next_prompt_does_not_end_the_chat(tmp_path, monkeypatch):
    """Ctrl-C twice quickly: the first stops the reply; a second that came once the line was handled, before the
    next prompt took the keys, raised a KeyboardInterrupt outside the REPL's handlers and ended the chat (exit 130).
    There is nothing to stop then: the next prompt comes. Sent here as the REPL lets go of the keys after the line."""
    import signal

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    lines = ["a question", "another question"]

    monkeypatch.setattr(repl.dumb_prompt, "Session", scripted_session(lines))
    engine = ScriptedEngine(["one reply", "two"])
    out = Console(file=io.StringIO(), width=80, color_system=None)
    chat = Chat(engine, TerminalRenderer(out, Console(file=io.StringIO())))
    pin, done = chat.render.pin_keys, []

    def pinned(on: bool) -> None:
        pin(on)
        if not on and len(done) < len(engine.seen):  # the line's handling has ended: the REPL lets go of the keys
            done.append(True)
            os.kill(os.getpid(), signal.SIGINT)  # Python runs its handler (KeyboardInterrupt) in this call

    chat.render.pin_keys = pinned
    try:
        assert repl.run(chat) == 0
    except KeyboardInterrupt:
        pytest.fail("a Ctrl-C between a reply and the next prompt ended the chat")
    assert len(engine.seen) == 2 and "two" in out.file.getvalue()


def test_a_release_in_the_background_leaves_the_terminal_to_the_shell(monkeypatch):
    """Stopped by Ctrl-Z and ended in the background (`kill %1`), the chat does not write the terminal's modes
    back: the shell has it, and the write would stop the chat again (SIGTTOU)."""
    for background in (True, False):
        master, slave = os.openpty()
        try:
            keys = KeyHold(slave)
            keys.hold()
            assert not echo(slave)
            if background:  # another process group holds our controlling terminal
                monkeypatch.setattr(os, "tcgetpgrp", lambda fd: os.getpgrp() + 1)
            keys.release()  # (a pty that is not our controlling terminal: restored, as in the foreground)
            assert echo(slave) is not background and keys.saved is None
            monkeypatch.undo()
        finally:
            os.close(master)
            os.close(slave)


def test_ctrl_z_while_held_gives_the_shell_its_modes_and_fg_holds_again(tmp_path):
    """Ctrl-Z during a reply stopped the chat with the terminal held (dash was left without echo or line editing)
    and after `fg` the keys typed were echoed into the reply. A process holding its terminal, run as a job of an
    interactive dash (which leaves the terminal's modes as it finds them), stopped with Ctrl-Z and brought back
    with fg; the modes read from the pty's master side."""
    import shutil
    import sys
    import time

    pexpect = pytest.importorskip("pexpect")
    dash = shutil.which("dash")
    if dash is None:
        pytest.skip("needs dash")
    root = Path(__file__).resolve().parents[1]
    script = tmp_path / "hold.py"
    script.write_text(
        f"import sys; sys.path.insert(0, {str(root)!r})\n"
        "from yi_cli.ui.keys import KeyHold\n"
        "k = KeyHold(0); k.hold(); print('HELD', flush=True)\n"
        "sys.stdin.buffer.read(1); k.release(); print('RELEASED', flush=True)\n"
    )
    child = pexpect.spawn(dash, ["-i"], env={"PATH": os.environ["PATH"], "PS1": "$ "}, timeout=30)
    try:
        child.expect_exact("$ ")

        def echoing() -> bool:
            return bool(termios.tcgetattr(child.child_fd)[3] & termios.ECHO)

        def until(pred, what):
            deadline = time.monotonic() + 30
            while not pred():
                assert time.monotonic() < deadline, what
                time.sleep(0.01)  # polling a condition with a deadline

        child.sendline(f"{sys.executable} {script}")
        child.expect_exact("HELD")
        assert not echoing()
        child.sendcontrol("z")
        child.expect("Stopped")
        child.expect_exact("$ ")
        assert echoing()  # the shell has the terminal as it was before the hold
        child.sendline("fg")
        until(lambda: not echoing(), "the hold again after fg")
        child.send("q")
        child.expect_exact("RELEASED")
        child.expect_exact("$ ")
        assert echoing()
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


@pytest.mark.parametrize("waits", [True, False])
def test_only_a_chats_hold_takes_the_keys_typed_ahead(waits):
    """When a run ends with keys typed ahead, a chat's hold takes them (for the input history); a piped run's hold
    (`waits` False: `yi-chat -p q < file` drawn on a terminal) leaves them, as the shell's, and a Ctrl-C drops them
    (discard): taking them had said "1 message typed ahead was not sent: in the input history"."""
    master, slave = os.openpty()
    try:
        render = TerminalRenderer(Console(file=io.StringIO()), Console(file=io.StringIO()), keys=KeyHold(slave, waits))
        render.pin_keys(True)
        os.write(master, b"echo typed\r")
        assert render.take_keys() == (b"echo typed\r" if waits else b"")
        render.discard_keys()
        render.pin_keys(False)
        assert render.take_keys() == b"" and echo(slave)
    finally:
        os.close(master)
        os.close(slave)


def test_kill_of_a_job_stopped_while_the_signals_are_held_ends_it_without_fg(tmp_path):
    """Ctrl-Z in the first second of a chat (torch's import runs with the signals held), then `kill %1`: the stop
    handler waits in the background for `fg` (terminal.wait_foreground), and the SIGTERM, only recorded by the
    hold, never ended that wait: the job stayed "Stopped (tty output)" until `fg`. The held signal lets go of the
    terminal as the ending handler does, the wait ends, and the signal is delivered as the hold ends."""
    import shutil
    import sys
    import time

    pexpect = pytest.importorskip("pexpect")
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("needs bash")
    script = tmp_path / "held.py"
    script.write_text(
        "import os, signal, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})\n"
        "from yi_cli import terminal\n"
        "from yi_cli.held import signals_held\n"
        "signal.signal(signal.SIGTERM, lambda *a: os._exit(7))\n"
        "print('ready', flush=True)\n"
        "with signals_held():\n"
        "    os.kill(os.getpid(), signal.SIGTSTP)  # Ctrl-Z's default action: stopped here\n"
        "    terminal.wait_foreground(0)  # resumed in the background: waits for fg, as the stop handler does\n"
    )
    env = {**os.environ, "PS1": "$ ", "INPUTRC": "/dev/null", "TERM": "xterm"}
    child = pexpect.spawn(bash, ["--norc", "--noprofile", "-i"], env=env, encoding="utf-8", timeout=60, cwd=tmp_path)
    try:
        child.expect_exact("$ ")
        child.sendline(f"{sys.executable} {script}")
        child.expect_exact("ready")
        child.expect("Stopped")
        child.expect_exact("$ ")
        child.sendline("kill %1")
        child.expect_exact("$ ")
        deadline = time.monotonic() + 60
        while True:  # the job's state as bash reports it, until it has ended
            child.sendline("jobs -l; echo END")
            child.expect(r"\r\nEND\r\n")
            # "Running" a moment after `kill %1` (its SIGCONT) on a loaded machine: the job has not ended yet
            if "Stopped" not in child.before and "Running" not in child.before:
                assert "Exit 7" in child.before, child.before  # ended by the SIGTERM's handler, as the hold ended
                break
            assert time.monotonic() < deadline, f"still stopped after kill %1: {child.before!r}"
            time.sleep(0.1)  # polling bash for a state with a deadline
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


def test_a_ctrl_c_then_a_sigterm_while_held_ends_the_chat():
    """SIGINT then SIGTERM during a held write (an autosave on a slow disk): only the first caught was delivered, the
    Ctrl-C (which, after a reply, only counts), and the SIGTERM was dropped: the chat went on, never exiting."""
    import signal
    import threading

    from yi_cli.held import signals_held

    got = []
    before = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with signals_held():
            for s in (signal.SIGINT, signal.SIGTERM):  # to this thread: caught before pthread_kill returns
                signal.pthread_kill(threading.get_ident(), s)
            assert got == []  # held
        assert got == [signal.SIGTERM]
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def test_a_line_dropped_with_ctrl_c_is_not_kept_when_a_signal_follows(monkeypatch):
    """Ctrl-C at the prompt drops the line; a SIGTERM that came before the prompt's end was handled took the dropped
    line (with its ^C) for one typed ahead: "1 message typed ahead was not sent: in the input history"."""
    from types import SimpleNamespace

    from yi_cli.ui import repl

    render = SimpleNamespace(pin_keys=lambda on: None, take_keys=lambda: b"")
    chat = SimpleNamespace(render=render, terminated=False, running=True, interrupt_next=False)
    session = SimpleNamespace(default_buffer=SimpleNamespace(text="half a thought^C"), input=None)

    def read_line(*a, **k):
        chat.terminated = True  # the SIGTERM's handler, as the prompt ended
        raise repl.Dropped

    monkeypatch.setattr(repl, "read_line", read_line)
    monkeypatch.setattr(repl, "stashed_first", lambda inp: None)
    monkeypatch.setattr(repl, "_typeahead", lambda s: "")
    monkeypatch.setattr(repl, "AHEAD", [])
    assert repl._one_line(chat, session, ">>> ")
    assert repl.AHEAD == [""]  # nothing typed ahead to keep
    # a signal's own end of the prompt keeps its line (the draft goes to the input history)
    monkeypatch.setattr(repl, "AHEAD", [])
    monkeypatch.setattr(repl, "read_line", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    session.default_buffer.text = "half a thought"
    assert repl._one_line(chat, session, ">>> ")
    assert repl.AHEAD == [repl.typed_ahead.PASTE_START + "half a thought" + repl.typed_ahead.PASTE_END]
