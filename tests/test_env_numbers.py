"""What yi-chat reads from its environment as numbers, and what happens where that goes wrong: a value that is no
number of its kind reads as unset (YI_CHAT_GEMV_ROWS, YI_CHAT_STREAM_TIMEOUT, COLUMNS, LINES), a history file that
stops taking lines turns itself off with one notice, a background job's key hold sets no modes, and a bug that
reaches the top is one line with the terminal given back, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from yi_cli import env, terminal


@pytest.mark.parametrize("raw", ["abc", "", " ", "²", "①", "1.5", "-1", "9", "nan"])
def test_an_integer_from_the_environment_that_is_none_reads_as_unset(monkeypatch, raw):
    monkeypatch.setenv("YI_CHAT_TEST_NUMBER", raw)
    assert env.number("YI_CHAT_TEST_NUMBER", 0, int, 0, 8) == 0


@pytest.mark.parametrize("raw, value", [("3", 3), (" 8 ", 8), ("0", 0)])
def test_an_integer_from_the_environment_in_range_is_taken(monkeypatch, raw, value):
    monkeypatch.setenv("YI_CHAT_TEST_NUMBER", raw)
    assert env.number("YI_CHAT_TEST_NUMBER", 5, int, 0, 8) == value


@pytest.mark.parametrize("raw", ["abc", "inf", "nan", "1e400", "0"])
def test_a_float_from_the_environment_that_is_none_reads_as_unset(monkeypatch, raw):
    monkeypatch.setenv("YI_CHAT_TEST_NUMBER", raw)
    assert env.number("YI_CHAT_TEST_NUMBER", 300.0, float, 1e-3, 1e9) == 300.0


def test_the_kernel_and_engine_settings_start_with_a_bad_value():
    """YI_CHAT_GEMV_ROWS= or YI_CHAT_STREAM_TIMEOUT=abc ended every start in a traceback at import, on CPU too."""
    code = "import yi_cli.kernels.gemv as g, yi_cli.engines.local as l; print(g.MAX_X, l.STREAM_TIMEOUT_S)"
    bad = {**os.environ, "YI_CHAT_GEMV_ROWS": "", "YI_CHAT_STREAM_TIMEOUT": "abc"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=bad, timeout=300)
    assert p.returncode == 0 and p.stdout.split() == ["0", "300.0"], p.stderr


@pytest.mark.parametrize("raw", ["²", "①", "٣٠"])
def test_a_terminal_size_in_digits_that_are_not_ascii_is_unset(monkeypatch, raw):
    """`'²'.isdigit()` is True and int('²') a ValueError: COLUMNS=² was a traceback at every start."""
    monkeypatch.setenv("COLUMNS", raw)
    monkeypatch.setenv("LINES", raw)
    assert terminal.console().size.width > 0


def test_a_history_file_that_stops_taking_lines_turns_itself_off_with_one_notice():
    """A full disk under the history file: prompt_toolkit's event loop printed a traceback at every message."""
    from yi_cli.ui.repl import TailHistory

    said: list[str] = []
    history = TailHistory("/dev/full", said.append)
    history.append_string("first")
    history.append_string("second")
    history.say_failure()
    history.say_failure()
    assert said == ["history is off: cannot write /dev/full (not a regular file: a character device)"]
    assert list(history.get_strings()) == ["first", "second"]  # kept for Up in this chat


def test_a_history_file_replaced_by_a_fifo_mid_chat_turns_itself_off_without_waiting(tmp_path):
    """The history file made a FIFO while the chat ran: the next message's append opened it and waited for a reader
    (prompt_toolkit's FileHistory opens it blocking), the chat hung with Ctrl-C a plain byte of the prompt."""
    import threading

    from yi_cli.ui.repl import TailHistory

    path = tmp_path / "history"
    said: list[str] = []
    history = TailHistory(str(path), said.append)
    history.append_string("first")
    path.unlink()
    os.mkfifo(path)
    done = threading.Event()

    def second():
        history.append_string("second")
        done.set()

    threading.Thread(target=second, daemon=True).start()
    if not done.wait(30):  # hung on the FIFO: a reader lets it go, and the test fails
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        pytest.fail("the append waited for a reader of the FIFO")
    history.say_failure()
    assert said == [f"history is off: cannot write {path} (not a regular file: a FIFO)"]
    assert list(history.get_strings()) == ["first", "second"]


def test_a_key_hold_in_a_background_job_sets_no_modes(monkeypatch):
    """`yi-chat -p hi &` on a terminal stopped "(tty output)": the one-shot's key hold set the terminal's modes
    from the background, which the kernel answers with SIGTTOU."""
    import termios

    from yi_cli.ui.keys import KeyHold

    set_modes: list = []
    monkeypatch.setattr(termios, "tcsetattr", lambda *a: set_modes.append(a))
    monkeypatch.setattr(termios, "tcgetattr", lambda fd: [0, 0, 0, 0, 0, 0, [b"\0"] * 32])  # a terminal's, to hold
    hold = KeyHold(0)
    monkeypatch.setattr(hold, "_foreground", lambda: False)
    hold.hold()
    assert set_modes == [] and hold.saved is None


def test_a_bug_that_reaches_the_top_is_one_line_not_a_traceback():
    """An exception no handler expected ended the run in a traceback, and an interactive chat's terminal stayed
    without echo (the early key hold was given back only on the ways out it knew)."""
    code = "import yi_cli.ui.cli as c\ndef main(): raise ValueError('a bug\\nwith two lines')\nc.main = main\nc.entry()"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 1
    assert p.stderr == "yi-chat: internal error (ValueError: a bug); please report it with the command that gave it\n"


def test_a_typed_byte_the_terminal_did_not_decode_is_kept_in_the_history_as_typed(tmp_path):
    """A key's byte that stdin's encoding did not decode (0xE9 typed at a UTF-8 prompt, or UTF-8 under
    PYTHONIOENCODING=ascii) reaches the prompt as a surrogate: its append was a UnicodeEncodeError, which
    prompt_toolkit showed as a traceback ("Press ENTER to continue...") at every such message."""
    from yi_cli.ui.repl import TailHistory

    path = tmp_path / "history"
    history = TailHistory(str(path))
    history.append_string("caf\udce9 \udce4\udcbd\udca0")
    assert path.read_bytes().endswith(b"\n+caf\xe9 \xe4\xbd\xa0\n")
    assert list(TailHistory(str(path)).load_history_strings()) == ["caf\ufffd 你"]


@pytest.mark.parametrize("term", ["dumb", "unknown", "xterm"])
def test_a_dumb_terminal_is_as_wide_as_its_columns(monkeypatch, term):
    """rich's Console said 80 x 25 for every dumb terminal (TERM=dumb, Emacs' shell), whatever COLUMNS and the real
    width: a 30-column one got the prompt's status line cut at 80 (a row of it left at each redraw) and tables laid
    out 80 wide (a terminals review)."""
    import io

    monkeypatch.setenv("TERM", term)
    monkeypatch.setenv("COLUMNS", "30")  # (rich took both COLUMNS and LINES as they are: only one is set here)
    monkeypatch.delenv("LINES", raising=False)
    c = terminal.console(file=io.StringIO(), force_terminal=True)
    assert c.is_dumb_terminal == (term != "xterm")
    assert c.size.width == 30 and c.width == 30
    c.size = (50, 9)  # set as rich sets it
    assert tuple(c.size) == (50, 9)
