"""typed_ahead: the messages in raw keys typed ahead of a prompt that never came, and their place in the input
history (the file the next prompt's ↑ reads)."""

from __future__ import annotations

import os
import threading

import pytest

from yi_cli.ui import typed_ahead
from yi_cli.ui.repl import TailHistory


@pytest.mark.parametrize(
    "keys,messages",
    [
        ("one\rtwo\r", ["one", "two"]),
        ("one\ntwo", ["one", "two"]),  # the last one not sent yet (no Enter): kept too
        ("\r  \r\t\r", []),  # blank lines are not messages
        ("ab\x7fc\x08d", ["ad"]),  # Backspace (DEL or ^H)
        ("gone\x15kept\r", ["kept"]),  # Ctrl-U: the line so far
        ("one two  \x17three", ["one three"]),  # Ctrl-W: the word before the cursor, and the blanks after it
        ("a\x1b[Ab\x1b[1;5Cc\x1bOAd\x1bxe\x1b[3~f\r", ["abcdef"]),  # cursor / function keys and Alt-x dropped
        ("x\x1b[200~first\rsecond\r\nthird\x1b[201~ y\r", ["xfirst\nsecond\nthird y"]),  # a paste: one message
        ("\x1b[200~cut short", ["cut short"]),  # a paste whose end never came
        ("alpha\x1b\rbeta\x1b\nc\r", ["alpha\nbeta\nc"]),  # Esc then Enter: a new line (was dropped as Alt-Enter)
        ("\x00\x01bell\x07\x04\r", ["bell"]),  # other control keys dropped
        ("中文\r😀 ok", ["中文", "😀 ok"]),
    ],
)
def test_lines(keys, messages):
    assert typed_ahead.lines(keys) == messages


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_kept_messages_are_what_the_next_prompt_reads_newest_first(home):
    typed_ahead.history_path().parent.mkdir(parents=True)
    TailHistory(str(typed_ahead.history_path())).store_string("sent before")
    assert typed_ahead.keep(["first", "a paste\nof two lines", "中文"])
    assert list(TailHistory(str(typed_ahead.history_path())).load_history_strings()) == [
        "中文",
        "a paste\nof two lines",
        "first",
        "sent before",
    ]
    assert typed_ahead.history_path().stat().st_mode & 0o777 == 0o600


def test_keep_makes_the_folders_it_needs(home):
    assert typed_ahead.keep(["one"])
    assert list(TailHistory(str(typed_ahead.history_path())).load_history_strings()) == ["one"]


def test_a_fifo_in_the_historys_place_is_refused_without_waiting(home):
    path = typed_ahead.history_path()
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    result = []
    t = threading.Thread(target=lambda: result.append(typed_ahead.keep(["one"])), daemon=True)
    t.start()
    t.join(60)  # an open for writing that waited for a reader would block here until the deadline
    assert result == [False]


def test_a_history_that_cannot_be_written_is_refused(home):
    path = typed_ahead.history_path()
    path.mkdir(parents=True)  # a folder where the file goes
    assert typed_ahead.keep(["one"]) is False


def test_said():
    assert (
        typed_ahead.said(["a"], True)
        == "1 message typed ahead was not sent: in the input history (↑ at the next prompt)"
    )
    # never echoed and not kept, the messages were nowhere (the line said only that): the line holds them, each a
    # JSON string, a line break and an escape sequence as escapes
    assert typed_ahead.said(["my question", "two\nlines \x1b[2J\u202e"], False) == (
        "2 messages typed ahead were not sent, and the input history could not be written; they were: "
        '"my question", "two\\nlines \\u001b[2J\\u202e"'
    )
    assert typed_ahead.said(["a"], False).endswith('; it was: "a"')


def test_keys_read_out_where_a_paste_or_a_character_is_cut_go_on_with_what_the_terminal_sends_next():
    """A reply's drain reads the terminal's queue wherever it stands: a paste cut there, parsed alone, was dropped
    (the parser never ends a paste without its end marker), and the rest of it reached the prompt as typed keys, its
    line breaks Enters that sent its lines as messages. The keys go through the prompt's own decoder and parser,
    whose state goes on with the terminal's next bytes (a character cut in two too)."""
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.keys import Keys

    from yi_cli.ui.repl import parsed_into

    with create_pipe_input() as keys_in:
        got = parsed_into(keys_in, b"ab\x1b[200~first part " + "\u00e9".encode()[:1])
        assert [k.data for k in got] == ["a", "b"]
        keys_in.send_bytes("\u00e9".encode()[1:] + b"rest\rsecond line\x1b[201~x")
        got = [(k.key, k.data) for k in keys_in.read_keys()]
    assert got == [(Keys.BracketedPaste, "first part \u00e9rest\rsecond line"), ("x", "x")]


def test_said_of_a_message_too_long_for_recall_names_the_file_not_the_arrow(home):
    """A paste of 200 KB typed ahead was said to be "in the input history (↑ at the next prompt)", where ↑ recalls
    entries of HISTORY_ENTRY_CHARS at most: the line names the file instead."""
    line = typed_ahead.said(["x" * (typed_ahead.HISTORY_ENTRY_CHARS + 1)], True)
    assert line.startswith("1 message typed ahead was not sent: in the input history file ")
    assert line.endswith("history (too long for ↑ to recall)") and "↑ at the next prompt" not in line
