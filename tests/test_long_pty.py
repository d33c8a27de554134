"""A long prompt in the real REPL (a pty, the demo model): the progress line while it is read, and Ctrl-C during
the prefill stopping it between chunks with the session intact."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("pexpect")
from test_features_pty import PROMPT, Term, last_session, make_home  # noqa: E402

pytestmark = pytest.mark.slow
STATUS = re.compile(r"reading the prompt: (\d+)/(\d+) tokens")


def through_prefill(t: Term) -> None:
    """Wait for the next prompt while the prefill's progress line advances: each update restarts the wait, so a loaded
    machine that reads the 6.5K tokens slowly passes (a flat 90 s timed out at 94% under CI load) and a stall still
    fails (a line drawn again at the same count restarts nothing)."""
    last = -1
    while t.child.expect([re.escape(PROMPT), STATUS.pattern]):
        done = int(t.child.match.group(1))
        assert done > last, f"the prefill's progress went from {last} to {done} tokens"
        last = done


def test_ctrl_c_during_a_long_prefill(demo_dir, tmp_path):
    home = make_home(tmp_path, demo_dir)
    book = tmp_path / "book.txt"
    book.write_text("the cat sat on the mat and the dog ran to the park. " * 500)  # ~6.5K tokens of 8192
    # the reply is capped: at 6.5K tokens of context the demo decodes slowly on a loaded CPU, and the test is about
    # the prefill, not about how long the model goes on listing what the dog did
    t = Term("--model", "demo", "--max-new-tokens", "16", "-f", book.name, home=home)
    t.child.sendline("What did the dog do?")
    done, total = (int(x) for x in STATUS.search(t.expect(STATUS.pattern, regex=True)).groups())
    assert done < total > 6000  # chunks of the prompt still to read: the Ctrl-C below lands in the prefill
    t.child.sendcontrol("c")
    t.expect("[interrupted]")
    t.expect(PROMPT)
    reply = last_session(home)["turns"][-1]
    assert reply["role"] == "assistant" and reply["content"] == "" and reply["finish_reason"] == "interrupted"
    # /continue reads on from where the Ctrl-C stopped it (README): the chunks read are not read again
    t.child.sendline("/continue")
    again = int(STATUS.search(t.expect(STATUS.pattern, regex=True)).group(2))
    assert again <= total - done, (done, total, again)
    through_prefill(t)
    turns = last_session(home)["turns"]
    assert [x["role"] for x in turns] == ["user", "assistant"] and turns[-1]["content"]  # one exchange, answered
    assert t.exit() == 0
