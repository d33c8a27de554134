"""The REPL in a real pseudo-terminal, as a person uses it: question, /history, /clear, Ctrl-C mid-reply, Ctrl-D."""

import os
import sys

import pytest

pexpect = pytest.importorskip("pexpect")
pytestmark = pytest.mark.slow
PROMPT = ">>>"  # prompt_toolkit draws the trailing space with cursor moves


def spawn(*args, home=None):
    env = {**os.environ, "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1", "COLUMNS": "100", "LINES": "40"}
    if home:
        env["YI_CHAT_HOME"] = home
    child = pexpect.spawn(
        sys.executable, ["-m", "yi_cli", *args], env=env, encoding="utf-8", dimensions=(40, 100), timeout=90
    )
    child.expect_exact(PROMPT)
    return child


def test_chat_history_clear_interrupt_and_exit(demo_dir):
    child = spawn("--model", "demo", "--temperature", "0", "--max-new-tokens", "300")
    child.sendline("What is the capital of France?")
    child.expect("Paris")
    child.expect("stop · ")  # the footer: finish reason and stats
    child.expect_exact(PROMPT)

    child.sendline("/history")
    child.expect("assistant")
    child.expect_exact(PROMPT)

    child.sendline("Write a very long story about a dragon who learns to cook.")
    # Ctrl-C is a signal only once the prompt has left raw mode. prompt_toolkit redraws the accepted line, so
    # letters after its echo may still be the prompt's; letters after it turns bracketed paste off are the reply's,
    # written while yi-chat holds the terminal with Ctrl-C as SIGINT (300 tokens: the reply is far from done).
    child.expect_exact("\x1b[?2004l")
    child.expect("[A-Za-z]{4}")
    child.sendcontrol("c")
    child.expect_exact("[interrupted]")
    child.expect_exact(PROMPT)

    child.sendline("/history")
    child.expect("dragon")
    child.expect_exact("[interrupted]")
    child.expect_exact(PROMPT)

    child.sendline("/clear")
    child.expect("cleared 2 exchange")
    child.expect_exact(PROMPT)

    child.send("half a line")
    child.sendcontrol("c")  # clears the line, stays in the REPL
    child.expect_exact(PROMPT)
    child.sendline("/stats")
    child.expect("replies since the chat started: 2")
    child.expect_exact(PROMPT)
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_history_file_is_private_and_persistent(demo_dir, tmp_path):
    home = str(tmp_path / "home")
    child = spawn("--model", "demo", home=home)
    child.sendline("/help")
    child.expect("/retry")
    child.expect_exact(PROMPT)
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    hist = tmp_path / "home" / "data" / "history"
    assert "/help" in hist.read_text()
    assert oct(hist.stat().st_mode & 0o777) == "0o600"
