import dataclasses
import errno
import json
import os
import random
import re
import signal
import stat
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest

from tests.fixtures import ScriptedEngine, plain_chat
from yi_cli.engines.settings import GenSettings
from yi_cli.errors import YiError


def test_two_turn_transcript():
    engine = ScriptedEngine(["Paris is the capital.", "About two million people."])
    chat, out, err = plain_chat(engine)
    chat.handle("What is the capital of France?")
    chat.handle("How many people live there?")
    assert out.getvalue() == "Paris is the capital.\n\nAbout two million people.\n\n"
    assert err.getvalue() == ""
    # The second request carries the whole conversation.
    assert [m["content"] for m in engine.seen[1]] == [
        "What is the capital of France?",
        "Paris is the capital.",
        "How many people live there?",
    ]
    assert [t.finish_reason for t in chat.session.turns if t.role == "assistant"] == ["stop", "stop"]
    assert chat.session.turns[1].tokens == 4


def test_stdout_gone_mid_reply_keeps_the_turn_and_saves_it():
    """`yi-chat ... | head -c 20`: the renderer's write fails mid-reply. The exchange so far is committed (marked
    interrupted) and autosaved before the BrokenPipeError leaves the chat: nothing said is lost."""
    engine = ScriptedEngine(["one two three four five six"], hold_after=3)  # no word past the cut: the same text
    saved = []
    chat, out, err = plain_chat(engine, on_turn=lambda c: saved.append(c.session.to_dict()))
    pieces = []

    def closing(delta):
        pieces.append(delta)
        if len(pieces) == 3:
            raise BrokenPipeError

    chat.render.reply_text = closing
    with pytest.raises(BrokenPipeError):
        chat.turn("count")
    last = chat.session.last_assistant()
    assert last.interrupted and last.content == "".join(pieces)  # what the model said, shown or not
    assert [t["content"] for t in saved[-1]["turns"]] == ["count", last.content]


def test_a_reply_cut_by_a_closed_stdout_records_the_tokens_it_keeps():
    """`printf 'a long story\\nhi\\n' | yi-chat | head -c 100`: the reply cut by the closed pipe was saved with its
    text but `"tokens": 0` and new_tokens 0 (an interactive Ctrl-C records the real count). The engine's count of
    what it generated is kept, with the text it generated after the cut (not shown, as after a Ctrl-C)."""
    engine = ScriptedEngine(["one two three four five six"], hold_after=4)
    saved = []
    chat, out, err = plain_chat(engine, on_turn=lambda c: saved.append(c.session.to_dict()))
    pieces = []

    def closing(delta):
        pieces.append(delta)
        if len(pieces) == 2:
            assert engine.holding.wait(60)  # four words made, the engine waits for the cancel the cut sets
            raise BrokenPipeError

    chat.render.reply_text = closing
    with pytest.raises(BrokenPipeError):
        chat.turn("tell a long story")
    last = chat.session.last_assistant()
    assert last.interrupted and last.content == "one two three four" and "".join(pieces) == "one two"
    assert last.tokens == 4 and last.stats["new_tokens"] == 4 and last.stats["prompt_tokens"] == 8
    assert saved[-1]["turns"][1]["tokens"] == 4  # the session file
    assert [s.new_tokens for s in chat.history] == [4]  # /stats


def test_ctrl_c_mid_reply_keeps_partial_reply_and_session():
    # The reply waits for cancel after three words and the SIGINT is sent only then: it lands mid-reply however
    # late it is delivered (it used to race a 0.5 s reply on a loaded machine).
    engine = ScriptedEngine(["one two three four five six seven eight nine ten"] + ["next answer"], hold_after=3)
    chat, out, err = plain_chat(engine)

    def interrupt():
        assert engine.holding.wait(60)
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C delivers to the REPL's main thread

    t = threading.Thread(target=interrupt)
    t.start()
    stats = chat.turn("count to ten")
    t.join()
    assert stats.finish_reason == "interrupted"
    last = chat.session.last_assistant()
    assert last.interrupted and last.content == "one two three"
    assert out.getvalue().startswith("one") and "[interrupted]" in out.getvalue()
    # The session goes on, roles still alternate.
    chat.handle("and now?")
    assert chat.session.turns[-1].content == "next answer"
    assert [t.role for t in chat.session.turns] == ["user", "assistant"] * 2


def ctrl_cs(chat, times: int) -> None:
    """`times` Ctrl-Cs as the REPL's main thread gets them (SIGINT), one at a time, each once `chat` has counted it
    (signals sent together are handled as one)."""
    for k in range(1, times + 1):
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 60
        while chat.interrupts < k and time.monotonic() < deadline:
            time.sleep(0.01)  # polling a condition with a deadline


def test_a_retry_stopped_before_its_first_word_keeps_the_reply_it_was_retrying():
    """/retry, then Ctrl-C before the new reply's first word (a long prompt is read again first): a cut reply was
    replaced by an empty one (its text gone, /continue then had nothing to go on from), and a retry given up on by
    a third Ctrl-C (a prefill does not answer cancel) replaced even a whole reply that way. Both stay."""
    release = threading.Event()

    class Slow(ScriptedEngine):  # its retries do not answer cancel (a long prefill) while `deaf`
        deaf = False

        def stream(self, prompt, settings, cancel):
            if self.deaf:
                self.holding.set()
                release.wait(60)  # bounded; set once the third Ctrl-C is in
                self.seen.append(prompt.messages)
                return
            yield from super().stream(prompt, settings, cancel)

    engine = Slow(["one two three four", "five six seven", "a whole reply"], hold_after=2)
    chat, out, err = plain_chat(engine)

    def stopped(line: str, times: int = 1) -> None:
        def interrupt():
            assert engine.holding.wait(60)
            engine.holding.clear()
            ctrl_cs(chat, times)
            if times == 3:
                release.set()  # given up on: the engine's thread may end now

        t = threading.Thread(target=interrupt)
        t.start()
        try:
            chat.handle(line)
        finally:
            t.join()

    stopped("tell me")  # cut after two words
    engine.hold_after = 0  # the retry is stopped before its first word
    stopped("/retry")
    assert [x.content for x in chat.session.turns] == ["tell me", "one two"] and chat.session.turns[1].interrupted
    assert err.getvalue().count("retry stopped: the previous reply is kept") == 1
    engine.replies, engine.hold_after = ["a whole reply"], None
    chat.handle("more")
    engine.deaf = True
    with pytest.raises(KeyboardInterrupt):  # the third gives up on it (the REPL says "interrupted")
        stopped("/retry", times=3)
    assert [x.content for x in chat.session.turns[2:]] == ["more", "a whole reply"]
    assert not chat.session.turns[-1].interrupted
    assert err.getvalue().count("retry stopped: the previous reply is kept") == 2


def test_a_second_ctrl_c_as_the_stopped_reply_is_saved_and_shown_cuts_neither():
    """Ctrl-C twice quickly: the first stops the reply; the second landed after the stream had ended, while the
    reply was saved and its end drawn, where Ctrl-C raised a KeyboardInterrupt again. The autosave was cut (the
    exchange not on disk), the screen got no `[interrupted]` nor footer, and the REPL's "interrupted" notice was
    held for after the next reply. The reply has stopped already: a Ctrl-C then stops nothing more. Here the second
    one is sent from the autosave itself, the instant it would land in."""
    import io

    from rich.console import Console

    from yi_cli.conversation.chat import Chat
    from yi_cli.ui.render import TerminalRenderer

    engine = ScriptedEngine(["one two three four five six"], hold_after=3)
    saved = []

    def autosave(chat):
        if not saved:
            os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C; Python runs its handler within this call
        saved.append(chat.session.to_dict())

    out, err = io.StringIO(), io.StringIO()
    render = TerminalRenderer(Console(file=out, width=100), Console(file=err, width=100))
    chat = Chat(engine, render, on_turn=autosave)

    def interrupt():
        assert engine.holding.wait(60)
        os.kill(os.getpid(), signal.SIGINT)  # the first

    t = threading.Thread(target=interrupt)
    t.start()
    try:
        chat.handle("count")
    except KeyboardInterrupt:
        pytest.fail("the second Ctrl-C cut the stopped reply's autosave and its end on screen")
    finally:
        t.join()
    assert [t["content"] for t in saved[-1]["turns"]] == ["count", "one two three"]
    assert "one two three\n[interrupted]\ninterrupted · " in out.getvalue()
    assert not render.streaming and err.getvalue() == ""


def test_a_ctrl_c_as_a_piped_reply_is_saved_stops_the_run_after_it():
    """A Ctrl-C landing as a reply that ended by itself is saved: it is not raised there (the autosave would be cut)
    and a piped run still stops at it (Chat.ctrl_c), as at a Ctrl-C anywhere in it."""
    saved = []

    def autosave(chat):
        if not saved:
            os.kill(os.getpid(), signal.SIGINT)  # Python runs its handler within this call
        saved.append(chat.session.to_dict())

    chat, out, err = plain_chat(ScriptedEngine(["a whole reply"]), on_turn=autosave)
    chat.handle("tell me")
    assert chat.ctrl_c == 1 and [t["content"] for t in saved[-1]["turns"]] == ["tell me", "a whole reply"]
    assert chat.session.turns[-1].finish_reason == "stop"


def test_a_retry_stopped_by_ctrl_c_keeps_the_whole_reply_it_was_to_replace():
    """A whole reply, /retry, Ctrl-C a second in: only the cut retry was left, the whole reply gone for good (and
    /undo took the exchange). A stopped retry of a reply that ended by itself leaves that reply in place and says so;
    a retry of a cut reply takes its place as before (the screen and the session agree that it was cut)."""
    replies = ["a whole reply", "one two three four", "five six seven eight", "nine ten eleven twelve"]
    engine = ScriptedEngine(replies, hold_after=3)
    chat, out, err = plain_chat(engine)

    def stopped(line: str) -> None:
        def interrupt():
            assert engine.holding.wait(60)
            engine.holding.clear()
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C delivers to the REPL's main thread

        t = threading.Thread(target=interrupt)
        t.start()
        chat.handle(line)
        t.join()

    chat.handle("tell me")
    stopped("/retry")
    assert [x.content for x in chat.session.turns] == ["tell me", "a whole reply"]
    assert err.getvalue() == "retry stopped: the previous reply is kept (/retry again for another)\n"
    stopped("more")  # a cut reply
    stopped("/retry")  # its retry, cut too, takes its place
    assert [x.content for x in chat.session.turns[2:]] == ["more", "nine ten eleven"]
    assert chat.session.turns[-1].interrupted and err.getvalue().count("retry stopped") == 1


def test_engine_error_is_one_line_and_the_turn_is_not_recorded():
    engine = ScriptedEngine(["ok"])
    chat, out, err = plain_chat(engine)
    chat.handle("first")
    engine.fail_with = RuntimeError("CUDA exploded\nsecond line of noise")
    chat.handle("second")
    assert "error: generation failed (RuntimeError: CUDA exploded" in err.getvalue()
    assert "Traceback" not in err.getvalue()
    assert [t.content for t in chat.session.turns] == ["first", "ok"]
    engine.fail_with = YiError("out of memory while generating; the session is kept")
    chat.handle("third")
    assert err.getvalue().count("error:") == 2 and chat.failures == 2
    engine.fail_with = None
    chat.handle("fourth")
    assert chat.session.turns[-2].content == "fourth"


def test_overflow_drops_oldest_and_says_so():
    engine = ScriptedEngine()
    engine.context_length = 64
    chat, out, err = plain_chat(engine, settings=GenSettings(max_new_tokens=16), session=None)
    chat.session.system = "keep me"
    for i in range(6):
        chat.handle(f"message number {i} with quite a few words in it")
    assert re.search(r"dropped the oldest (1 exchange|[2-9] exchanges) to fit", err.getvalue()), err.getvalue()
    assert chat.session.system == "keep me"
    assert chat.session.turns[-2].content.startswith("message number 5")
    assert engine.count(engine.seen[-1]) <= 64 - 16
    assert engine.seen[-1][0] == {"role": "system", "content": "keep me"}


def test_exchanges_dropped_to_fit_the_context_stay_in_the_saved_session(tmp_path, monkeypatch):
    """The oldest exchanges dropped to fit the context were deleted from the session, and the autosave rewrote its
    file without them: one `-c` of a 50000-exchange session (or one with a smaller --context) left a few hundred
    on disk. They stay in the file, out of the context; a resume goes on with the same context, /undo and /retry
    work on the last exchange."""
    from yi_cli.conversation import commands, store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    engine = ScriptedEngine()
    engine.context_length = 64
    chat, out, err = plain_chat(engine, settings=GenSettings(max_new_tokens=16), on_turn=store.Autosave("interactive"))
    for i in range(6):
        chat.handle(f"message number {i} with quite a few words in it")
    assert "dropped the oldest" in err.getvalue()
    assert engine.count(engine.seen[-1]) <= 64 - 16  # the prompt still fits
    session, _, _ = store.read("last")
    assert [t.content for t in session.turns[::2]] == [
        f"message number {i} with quite a few words in it" for i in range(6)
    ]
    assert session.messages() == chat.session.messages() and 0 < session.start < len(session.turns)
    chat.session = session  # as a resume: the next prompt is the context's, not the whole file
    chat.handle("one more")
    assert engine.count(engine.seen[-1]) <= 64 - 16 and engine.seen[-1][-1]["content"] == "one more"
    commands.do_undo(chat, "")
    assert chat.session.messages()[-1]["role"] == "assistant" and len(chat.session.turns) == 12
    chat.handle("again")
    assert store.read("last")[0].turns[-2].content == "again" and len(store.read("last")[0].turns) == 14


def test_a_session_file_keeps_within_its_size_limit_by_its_oldest_dropped_exchanges(tmp_path, monkeypatch):
    """Exchanges dropped from the context stay in the file: a long chat's file would grow past the size a session
    file is read back at (64 MiB), and `-c` then refused the whole session. Over it, the oldest dropped exchanges
    are left out of the file (the context is written whole), so it always reads back."""
    from yi_cli import inputs
    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    monkeypatch.setattr(inputs, "SESSION_LIMIT", 3000)
    engine = ScriptedEngine()
    engine.context_length = 64
    chat, out, err = plain_chat(engine, settings=GenSettings(max_new_tokens=16), on_turn=store.Autosave("interactive"))
    for i in range(40):
        chat.handle(f"message number {i} with quite a few words in it")
    assert len(chat.session.turns) == 80
    for path in (store.resolve("last"), store.save(chat, None)):  # the autosave's and a /save snapshot
        assert path.stat().st_size <= 3000
        session, _, _ = store.read(str(path))
        assert session.messages() == chat.session.messages() and session.start > 0  # some dropped ones kept
        assert session.turns == chat.session.turns[-len(session.turns) :]


class _Served(ScriptedEngine):
    template = None  # a remote model's (--endpoint): the server fits the context, the chat drops nothing

    def stream(self, prompt, settings, cancel):
        import dataclasses

        return super().stream(dataclasses.replace(prompt, ids=[]), settings, cancel)


def test_a_remote_chats_file_keeps_within_its_size_limit_by_its_oldest_exchanges(tmp_path, monkeypatch):
    """A remote model's chat drops no exchange from its context (no context_start), and only dropped ones were left
    out of the file: it grew past the 64 MiB a session file is read back at, and could never be resumed or listed
    again. Over the limit the oldest exchanges are left out of the file, never the newest (the chat keeps them all);
    a newest exchange over the limit alone is not written (said once, the file keeps the session as it was) and
    /save refuses it in one line; the next exchange is written again."""
    from yi_cli import inputs
    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    monkeypatch.setattr(inputs, "SESSION_LIMIT", 3000)
    chat, out, err = plain_chat(_Served(), on_turn=store.Autosave("interactive"))
    for i in range(40):
        chat.handle(f"message number {i} with quite a few words in it")
    assert len(chat.session.turns) == 80 and chat.session.start == 0 and "dropped" not in err.getvalue()
    for path in (store.resolve("last"), store.save(chat, None)):  # the autosave's and a /save snapshot
        assert path.stat().st_size <= 3000
        session, _, _ = store.read(str(path))
        assert 2 < len(session.turns) < 80 and session.turns == chat.session.turns[-len(session.turns) :]
    last = store.resolve("last")
    assert [e["name"] for e in store.entries() if e["mode"] == "interactive"] == [last.name]
    kept = last.read_bytes()
    chat.handle("big " * 1000)  # its echo too: 8 kB, over the limit alone
    assert err.getvalue().count("failed (the newest exchange alone is over the 2 KiB a session file holds)") == 1
    assert last.read_bytes() == kept and len(chat.session.turns) == 82
    with pytest.raises(YiError, match=r"cannot save the session \(the newest exchange alone is over the 2 KiB"):
        store.save(chat, None)
    chat.handle("small")
    session, _, _ = store.read("last")
    assert session.turns[-1].content == "echo: small" and all("big" not in t.content for t in session.turns)
    assert "autosave works again" in err.getvalue()


def test_overflow_refuse_policy():
    from yi_cli.conversation.chat import Options

    engine = ScriptedEngine()
    engine.context_length = 32
    chat, out, err = plain_chat(engine, settings=GenSettings(max_new_tokens=8), options=Options(overflow="refuse"))
    chat.handle("short")
    chat.handle(" ".join(["long"] * 40))
    assert "only 24 fit in the context" in err.getvalue()
    assert [t.content for t in chat.session.turns] == ["short", "echo: short"]


def test_a_refusal_suggests_clear_only_where_it_would_make_room():
    """--overflow refuse suggested /clear when the system prompt and the message alone did not fit, where /clear
    (which keeps the system prompt) cannot help (a run-through)."""
    from yi_cli.conversation import context

    rebuild = {0: 120, 2: 40}.get  # the whole prompt 120 tokens; without the one earlier exchange, 40
    with pytest.raises(YiError, match="; shorten it, /clear, or lower max_new_tokens$"):
        context.fit(rebuild, 120, [30, 50], 100, "refuse")
    rebuild = {0: 120, 2: 110}.get  # without it still 110 > 100: clearing cannot make room
    for policy in ("refuse", "drop"):  # the system prompt is named only where one is set (it was said of none)
        with pytest.raises(YiError, match=r"; shorten it, or lower max_new_tokens$"):
            context.fit(rebuild, 120, [4, 6], 100, policy)
        with pytest.raises(YiError, match=r"; shorten it, or lower max_new_tokens \(the system prompt counts too\)$"):
            context.fit(rebuild, 120, [4, 6], 100, policy, system=True)
    with pytest.raises(YiError, match="give more --context"):  # a one-shot run's remedy names flags
        context.fit(rebuild, 120, [4, 6], 100, "refuse", one_shot=True)


def test_retry_and_continue():
    engine = ScriptedEngine(["first try", "a b c d e f", "second try", "third"])
    chat, out, err = plain_chat(engine, settings=GenSettings(max_new_tokens=3))
    chat.handle("q")
    chat.handle("/retry 7")
    assert engine.seeds == [None, 7] and chat.session.turns[-1].content == "a b c"
    assert chat.settings.seed is None and "seed" not in chat.options.setting_sources  # 7 was that retry's alone
    assert chat.session.turns[-1].finish_reason == "length"
    chat.handle("/continue")
    # The cut reply is sent back open (continue_final), and the new text extends it in place.
    assert engine.prompts[-1].continue_final and engine.seen[-1][-1] == {"role": "assistant", "content": "a b c"}
    assert chat.session.turns[-1].content == "a b csecond try"
    assert len(chat.session.turns) == 2
    chat.handle("/continue")
    assert "was complete" in err.getvalue()
    assert engine.seeds == [None, 7, None]


def test_retry_seed_is_for_that_retry_only(tmp_path, monkeypatch):
    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    engine = ScriptedEngine(["r1", "r1", "r3", "r4", "r5"])
    autosave = store.Autosave("interactive")
    chat, out, err = plain_chat(engine, settings=GenSettings(seed=3), on_turn=autosave)
    chat.handle("q")
    chat.handle("/retry 5")  # the same reply again: the session looks unchanged, its autosave must still be right
    assert store.read("last")[1].seed == 3
    chat.handle("/retry")
    chat.handle("next")
    chat.handle("/retry bad")  # refused: nothing changes
    assert engine.seeds == [3, 5, 3, 3]
    assert chat.settings.seed == 3 and err.getvalue() == "error: seed must be an integer, got 'bad'\n"


def test_a_turn_builds_its_prompt_once_and_a_failure_leaves_the_session_as_it_was():
    from tests.fixtures import WordTemplate

    engine = ScriptedEngine(["a1", "a2"])
    chat, out, err = plain_chat(engine)
    chat.handle("q1")
    before, builds = chat.session.to_dict(), WordTemplate.builds
    chat.handle("q2")
    assert WordTemplate.builds == builds + 1
    assert chat.context_used() == len(engine.prompts[-1].ids) + 4 + 1  # from the turn itself: no rebuild
    assert WordTemplate.builds == builds + 1
    engine.fail_with = RuntimeError("boom")
    saved = chat.session.to_dict()
    chat.handle("q3")
    chat.handle("/retry")
    chat.handle("/edit q2 again")
    assert chat.session.to_dict() == saved and saved != before


def test_overflow_rebuilds_the_prompt_about_once_however_many_exchanges_go():
    from tests.fixtures import WordTemplate

    engine = ScriptedEngine()
    chat, out, err = plain_chat(engine, settings=GenSettings(max_new_tokens=16))
    for i in range(40):
        chat.handle(f"message {i}")
    engine.context_length = 40
    builds = WordTemplate.builds
    chat.handle("the last one")
    assert "dropped the" in err.getvalue()
    # the full prompt, the base, the estimate, one exchange fewer (that it does not fit), the final build
    assert WordTemplate.builds - builds <= 5
    assert len(engine.prompts[-1].ids) <= 40 - 10


def test_overflow_with_token_counts_far_off_rebuilds_the_prompt_a_few_times_not_once_an_exchange():
    """A session file's token counts can be anything (`"tokens": 10**30` on every other turn, 0 on the rest): the
    estimate then moved one exchange a rebuild, each rebuild as long as the conversation, and a resumed file of
    50000 exchanges took hours before its first reply. Past two corrections the count is halved."""
    from yi_cli.conversation import context

    true = [5] * 4000  # each message's real tokens
    hostile = [10**30 if i % 4 == 0 else 0 for i in range(4000)]
    calls = []

    def rebuild(n):
        calls.append(n)
        return 10 + sum(true[n:])

    n = context.fit(rebuild, rebuild(0), hostile, 2000)
    assert rebuild(n) <= 2000 < rebuild(n - 2) and n % 2 == 0  # as few dropped as fit
    assert len(calls) <= 3 + 3 + 14, len(calls)  # whole, base, three estimates, one fewer, halving 2000 exchanges


def test_save_and_load_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path / "home"))
    chat, out, err = plain_chat(ScriptedEngine(["a1", "a2"]), settings=GenSettings(temperature=0.3, seed=5))
    chat.session.system = "sys"
    chat.handle("q1")
    chat.handle("q2")
    path = tmp_path / "s.json"
    chat.handle(f"/save {path}")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    data = json.loads(path.read_text())
    assert data["format"] == "yi-chat-session" and data["settings"]["seed"] == 5
    other, out2, err2 = plain_chat(ScriptedEngine())
    other.handle(f"/load {path}")
    assert other.session == chat.session and other.settings == chat.settings
    # A foreign or malformed file leaves the session untouched.
    (tmp_path / "bad.json").write_text('{"format": "something-else"}')
    other.handle(f"/load {tmp_path / 'bad.json'}")
    (tmp_path / "worse.json").write_text(
        '{"format": "yi-chat-session", "version": 1, "turns": [{"role": "assistant", "content": "x"}]}'
    )
    other.handle(f"/load {tmp_path / 'worse.json'}")
    assert "not a yi-chat session file" in err2.getvalue() and "malformed session file" in err2.getvalue()
    assert other.session == chat.session


def test_save_and_load_of_a_name_with_a_line_break_say_it_on_one_line(tmp_path, monkeypatch):
    """`/save nl<newline>name.json` (a paste): "saved to nl", then "name.json" on a line of its own; /load's line
    the same. An error about such a path was one line already."""
    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    chat, out, err = plain_chat(ScriptedEngine(["a1"]))
    chat.handle("q1")
    chat.handle("/save nl\nname.json")
    chat.handle("/load nl\nname.json")
    assert [ln for ln in out.getvalue().splitlines() if ln][-2:] == [
        "saved to nl\\nname.json",
        "loaded 1 exchange from nl\\nname.json",
    ], out.getvalue()
    assert (tmp_path / "nl\nname.json").is_file() and err.getvalue() == ""


def test_save_goes_through_a_symlink_and_never_replaces_a_fifo_or_a_device(tmp_path, monkeypatch):
    """/save PATH turned a FIFO, a device node or a symlink into a regular file (a run-through; /load refused
    them all the while)."""
    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path / "home"))
    chat, out, err = plain_chat(ScriptedEngine(["a1"]))
    chat.handle("q1")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    chat.handle(f"/save {fifo}")
    chat.handle(f"/save {tmp_path}")
    assert "fifo: not a regular file (a FIFO)" in err.getvalue()
    assert "not a regular file (a directory)" in err.getvalue()
    assert stat.S_ISFIFO(fifo.lstat().st_mode)  # still the FIFO
    target, link = tmp_path / "target.json", tmp_path / "link.json"
    target.write_text("old")
    link.symlink_to(target)
    chat.handle(f"/save! {link}")  # "old" is no session of this chat: replaced only with the !
    assert link.is_symlink() and json.loads(target.read_text())["turns"][0]["content"] == "q1"
    assert f"saved to {link}" in " ".join(out.getvalue().split())  # as it was given


def test_save_into_a_missing_folder_is_refused_and_the_chat_goes_on(tmp_path, monkeypatch):
    """/save PATH created every missing folder on the way (a typo in a path made folders; a run-through). It is
    refused with one line naming the folder, as an editor's write is; nothing is created, nothing said is lost, and
    a save into a folder that exists is as before."""
    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.json").write_text("keep")
    chat, out, err = plain_chat(ScriptedEngine(["a1", "a2"]))
    chat.handle("q1")
    before = chat.session.to_dict()
    for line in (f"/save {tmp_path}/typo/s.json", "/save typo/deeper/s.json", "/save notes/", "/save a.json/s.json"):
        chat.handle(line)
    assert err.getvalue().splitlines() == [
        f"error: {tmp_path}/typo/s.json: cannot save the session (the folder {tmp_path}/typo does not exist)",
        "error: typo/deeper/s.json: cannot save the session (the folder typo/deeper does not exist)",
        "error: notes/: cannot save the session (the folder notes does not exist)",  # a slash names a folder
        "error: a.json/s.json: cannot save the session (a.json is a regular file, not a folder)",
    ]
    assert sorted(os.listdir(tmp_path)) == ["a.json"] and chat.failures == 4
    assert chat.session.to_dict() == before
    chat.handle("/save s.json")
    chat.handle("q2")
    assert "saved to s.json" in out.getvalue()
    assert json.loads((tmp_path / "s.json").read_text())["turns"] == before["turns"]
    assert [t.content for t in chat.session.turns] == ["q1", "a1", "q2", "a2"] and chat.failures == 4


def test_save_replaces_a_file_of_this_session_only_and_save_bang_any(tmp_path, monkeypatch):
    """/save PATH replaced whatever was there: a mistyped name destroyed another snapshot (a run-through: an empty
    new chat saved over a one-exchange snapshot left "turns": []). Like an editor's :w, it replaces a file that
    holds this same conversation (its id: saved or loaded before) and refuses any other with one line saying how
    (/save! PATH); nothing is lost, and saving the same chat again to the same path stays one command."""
    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("keep")
    first, first_out, first_err = plain_chat(ScriptedEngine(["a1", "a2"]))
    first.handle("q1")
    first.handle("/save snap.json")
    first.handle("q2")
    first.handle("/save snap.json")  # the same conversation again: replaced
    snap = (tmp_path / "snap.json").read_text()
    assert [t["content"] for t in json.loads(snap)["turns"]] == ["q1", "a1", "q2", "a2"]
    assert first_out.getvalue().count("saved to snap.json") == 2

    new, out, err = plain_chat(ScriptedEngine(["b1"]))
    for line in ("/save snap.json", "/save notes.txt", "/save!", "/exit! now"):
        new.handle(line)
    assert err.getvalue().splitlines() == [
        "error: snap.json: the file exists and holds another session; /save! snap.json replaces it",
        "error: notes.txt: the file exists and is not a yi-chat session; /save! notes.txt replaces it",
        "error: usage: /save! PATH (/save alone writes a new file in the session store)",
        "error: /exit has no ! form (usage: /exit)",
    ]
    first.handle("/clear")  # a new conversation: no longer the one the snapshot holds
    first.handle("/save snap.json")
    assert first_err.getvalue().splitlines() == [
        "error: snap.json: the file exists and holds another session; /save! snap.json replaces it"
    ]
    assert (tmp_path / "snap.json").read_text() == snap and (tmp_path / "notes.txt").read_text() == "keep"
    assert new.failures == 4 and new.running and first.failures == 1

    new.handle("b")
    new.handle("/save! snap.json")
    assert [t["content"] for t in json.loads((tmp_path / "snap.json").read_text())["turns"]] == ["b", "b1"]
    first.handle("/load snap.json")  # loaded from it: its own file now
    first.handle("/save snap.json")
    assert first_out.getvalue().count("saved to snap.json") == 3 and first.failures == 1

    # A file from before sessions kept an id (0.1.0) is known by its path: a chat loaded from it saves over it.
    old = json.loads((tmp_path / "snap.json").read_text())
    del old["id"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    first.handle("/load old.json")
    first.handle("/save old.json")
    new.handle("/clear")
    new.handle("/save old.json")
    assert json.loads((tmp_path / "old.json").read_text())["id"] == first.session.id
    assert "saved to old.json" in first_out.getvalue() and first.failures == 1
    assert err.getvalue().splitlines()[-1].startswith("error: old.json: the file exists and holds another session")


def test_two_chats_going_on_from_one_snapshot_never_save_over_each_other(tmp_path, monkeypatch):
    """Two yi-chats that /load one snapshot share its conversation's id: once they went different ways, either
    one's /save PATH replaced the other's continuation without a word (a lost conversation). A chat goes on
    saving over the file while it holds what this chat read or wrote there, or an earlier state of it (its turns
    begin this chat's); another continuation saved there is refused with one line, and /save! replaces it."""
    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    start, _, _ = plain_chat(ScriptedEngine(["a0"]))
    start.handle("q0")
    start.handle("/save snap.json")
    a, a_out, a_err = plain_chat(ScriptedEngine(["a1", "a2"]))
    b, b_out, b_err = plain_chat(ScriptedEngine(["b1", "b2"]))
    for chat in (a, b):
        chat.handle("/load snap.json")
    a.handle("qa")
    a.handle("/save snap.json")  # as a read it: its own continuation goes back in
    b.handle("qb")
    b.handle("/save snap.json")  # A's continuation is there now, not the state B read
    refused = "error: {0}: the file exists and holds another continuation of this conversation; /save! {0} replaces it"
    assert b_err.getvalue().splitlines() == [refused.format("snap.json")] and b.failures == 1

    def asked(name="snap.json"):
        return [t["content"] for t in json.loads((tmp_path / name).read_text())["turns"]][::2]

    assert asked() == ["q0", "qa"]
    b.handle("/save b.json")  # B's turns are kept elsewhere; the chat goes on
    a.handle("/retry")  # A's own save, rewritten after it: still A's to replace
    a.handle("/save snap.json")
    assert asked() == ["q0", "qa"] and a_out.getvalue().count("saved to snap.json") == 2 and a.failures == 0
    b.handle("/save! snap.json")
    assert asked() == ["q0", "qb"]

    # An earlier state saved by another chat (the turns this one begins with) is replaced without !
    c, c_out, c_err = plain_chat(ScriptedEngine(["c1"]))
    c.handle("/load snap.json")
    b.handle("/save snap.json")  # B saves the same turns again: not the bytes C read
    c.handle("qc")
    c.handle("/save snap.json")
    assert asked() == ["q0", "qb", "qc"] and c_err.getvalue() == "" and "saved to snap.json" in c_out.getvalue()
    a.handle("/save snap.json")  # A has not got C's turns (nor B's): refused, as B was
    assert a_err.getvalue().splitlines() == [refused.format("snap.json")]
    assert asked() == ["q0", "qb", "qc"]

    # A file from 0.1.0 (no id, known by its path) is guarded the same way
    old = json.loads((tmp_path / "snap.json").read_text())
    del old["id"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    for chat in (a, b):
        chat.handle("/load old.json")
    a.handle("qa2")
    a.handle("/save old.json")
    b.handle("qb2")
    b.handle("/save old.json")
    assert b_err.getvalue().splitlines()[-1] == refused.format("old.json")
    assert asked("old.json")[-1] == "qa2"


@pytest.mark.parametrize("there", [True, False], ids=["over-a-snapshot", "a-new-file"])
def test_two_saves_at_once_to_one_path_keep_one_and_refuse_the_other(tmp_path, monkeypatch, there):
    """Two /save PATH at the same instant (two yi-chats on one snapshot): each judged the file before either wrote
    it, both said "saved to", and the file held one conversation; the other was lost. Both chats here reach the
    point where they have looked at PATH before either writes (a barrier); then one is saved and the other refused.
    (Threads stand for the processes: each /save opens the file itself, so its flock is its own.)"""
    import threading

    from yi_cli import inputs
    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    start, _, _ = plain_chat(ScriptedEngine(["a0"]))
    start.handle("q0")
    start.handle("/save snap.json")
    a, a_out, a_err = plain_chat(ScriptedEngine(["a1"]))
    b, b_out, b_err = plain_chat(ScriptedEngine(["b1"]))
    for chat, q in ((a, "qa"), (b, "qb")):
        chat.handle("/load snap.json")
        chat.handle(q)
    if not there:
        (tmp_path / "snap.json").unlink()
    both = threading.Barrier(2)

    def met() -> None:  # both have looked at PATH; where one waits for the other's write, it goes on alone
        try:
            both.wait(timeout=3)
        except threading.BrokenBarrierError:
            pass

    kind_of, refusal = inputs.kind_of, store._refusal

    def looked(path):
        kind = kind_of(path)
        if Path(path).name == "snap.json":
            met()
        return kind

    def judged(path, session):
        why = refusal(path, session)
        met()
        return why

    monkeypatch.setattr(inputs, "kind_of", looked)
    monkeypatch.setattr(store, "_refusal", judged)
    threads = [threading.Thread(target=chat.handle, args=("/save snap.json",)) for chat in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    saved = [out.getvalue().count("saved to snap.json") for out in (a_out, b_out)]
    refused = ["holds another continuation of this conversation" in err.getvalue() for err in (a_err, b_err)]
    assert sorted(saved) == [0, 1] and sorted(refused) == [False, True], (a_err.getvalue(), b_err.getvalue())
    winner = "qa" if saved[0] else "qb"
    assert [t["content"] for t in json.loads((tmp_path / "snap.json").read_text())["turns"]][::2] == ["q0", winner]


def test_a_save_goes_on_where_hard_links_are_not_had_or_another_program_holds_a_lock(tmp_path, monkeypatch):
    """/save PATH of a new file links it into place: a FUSE mount without hard links (ENOSYS) made it fail where a
    rename had worked. Over a file another program keeps flocked, /save waited for good (signals held): it waits
    LOCK_WAIT (shortened here), then writes as before there was a lock."""
    import errno
    import fcntl

    from yi_cli.conversation import writes

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    chat, out, err = plain_chat(ScriptedEngine(["a0", "a1"]))
    chat.handle("q0")

    def no_links(src, dst):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(writes.os, "link", no_links)
    chat.handle("/save new.json")
    assert err.getvalue() == "" and "saved to new.json" in out.getvalue()
    monkeypatch.setattr(writes, "LOCK_WAIT", 0.2)
    chat.handle("q1")
    with open(tmp_path / "new.json") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another program's lock, kept through the save
        chat.handle("/save new.json")
    assert err.getvalue() == "", err.getvalue()
    assert [t["content"] for t in json.loads((tmp_path / "new.json").read_text())["turns"]][::2] == ["q0", "q1"]


def test_two_chats_continuing_one_stored_session_keep_every_turn(tmp_path, monkeypatch):
    """-c in two terminals on one home: the second goes on in a file of its own (the store's lock), with the same
    conversation id; each one's /save to one snapshot path no longer replaces the other's continuation."""
    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    first = store.Autosave("interactive")
    chat, _, _ = plain_chat(ScriptedEngine(["a0"]), on_turn=first)
    chat.handle("q0")
    chat.handle("/save snap.json")
    first.close()
    chats = []
    for name in "ab":  # as the CLI resumes `last`: read, then the autosave that holds the file or forks
        session, settings, data = store.read("last")
        saver = store.autosave_for("last", data, "interactive")
        chats.append((plain_chat(ScriptedEngine([f"{name}1"]), session=session, on_turn=saver), saver))
    ((a, _, a_err), a_saver), ((b, _, b_err), b_saver) = chats
    assert a_saver.path == first.path and b_saver.forked and a.session.id == b.session.id
    a.handle("qa")
    b.handle("qb")
    a.handle("/save snap.json")  # an earlier state of A's conversation: replaced
    b.handle("/save snap.json")  # A's continuation now: refused
    assert a_err.getvalue() == "" and "holds another continuation of this conversation" in b_err.getvalue()
    for saver in (a_saver, b_saver):
        saver.close()
    files = [json.loads(f.read_text()) for f in (tmp_path / "home" / "data" / "sessions").glob("*.json")]
    kept = sorted(
        [t["content"] for t in f["turns"]][::2] for f in files + [json.loads((tmp_path / "snap.json").read_text())]
    )
    assert kept == [["q0", "qa"], ["q0", "qa"], ["q0", "qb"]]


def test_a_save_onto_the_session_file_another_chat_is_writing_is_refused(tmp_path, monkeypatch):
    """-c in two terminals, the second's /save onto the first's store file: written as a `saved` snapshot, -c passed
    the live chat by (and opened an older one), and the first's next turn replaced the snapshot the second was told
    it had saved, both without a word (a two-processes-one-home review)."""
    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    first = store.Autosave("interactive")
    chat, _, _ = plain_chat(ScriptedEngine(["a0"]), on_turn=first)
    chat.handle("q0")
    first.close()
    chats = []
    for name in "ab":
        session, settings, data = store.read("last")
        saver = store.autosave_for("last", data, "interactive")
        chats.append((plain_chat(ScriptedEngine([f"{name}1", f"{name}2"]), session=session, on_turn=saver), saver))
    ((a, _, a_err), a_saver), ((b, b_out, b_err), b_saver) = chats
    held = a_saver.path
    a.handle("qa")
    b.handle("qb")
    before = held.read_bytes()
    for command in (f"/save {held}", f"/save! {held}"):
        b.handle(command)
        assert "another yi-chat is writing this session file" in b_err.getvalue(), b_err.getvalue()
        assert held.read_bytes() == before and "saved to" not in b_out.getvalue()
    assert json.loads(held.read_text())["mode"] == "interactive"
    a_saver.close()  # A has ended: B may replace its continuation, with !
    b.handle(f"/save! {held}")
    assert f"saved to {held}" in b_out.getvalue()
    assert [t["content"] for t in json.loads(held.read_text())["turns"]][::2] == ["q0", "qb"]
    b_saver.close()


SAVE_AS_A_USER = """
import sys
from tests.fixtures import ScriptedEngine, plain_chat
chat, out, err = plain_chat(ScriptedEngine(["a1"]))
chat.handle("q1")
for path in sys.argv[1:]:
    chat.handle("/save " + path)
sys.stdout.write(err.getvalue())
"""


def test_save_to_a_file_or_folder_this_user_may_not_write(tmp_path):
    """A read-only file was replaced all the same (the save renames a new file over it) and left writable; a folder
    the user may not write says so. Real permission bits: root's override dropped, as test_unreadable does."""
    import subprocess
    import sys

    from tests.test_unreadable import _unprivileged

    prefix = _unprivileged()
    locked, ro = tmp_path / "locked.json", tmp_path / "ro"
    locked.write_text("keep")
    locked.chmod(0o400)
    ro.mkdir(mode=0o500)
    if subprocess.run([*prefix, "touch", str(ro / "probe")], capture_output=True).returncode == 0:
        pytest.skip("permission bits do not stop this user here")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this checkout: tests.fixtures, yi_cli
    p = subprocess.run(
        [*prefix, sys.executable, "-c", SAVE_AS_A_USER, str(locked), str(ro / "s.json"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "YI_CHAT_HOME": str(tmp_path / "home"), "PYTHONPATH": root},
        cwd=root,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [
        f"error: {locked}: cannot save the session (the file is not writable)",
        f"error: {ro / 's.json'}: cannot save the session (the folder {ro} is not writable)",
        f"error: {tmp_path}: not a regular file (a directory); a session is saved to a regular file",
    ]
    assert locked.read_text() == "keep" and stat.S_IMODE(locked.stat().st_mode) == 0o400
    assert os.listdir(ro) == []


def test_save_where_no_file_can_be_made_says_what_failed(tmp_path, monkeypatch):
    """/save /proc/version said "cannot save the session (No such file or directory)" of a file that exists: the
    temp file the save writes first cannot be made in /proc. The line says what failed: the folder."""
    from yi_cli.conversation import writes

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    chat, out, err = plain_chat(ScriptedEngine(["a1"]))
    chat.handle("q1")
    chat.handle("/save /proc/yi-chat-save-test.json")
    chat.handle("/save! /proc/version")  # root may write it (access says so), others may not
    chat.handle("/save /proc/version")  # not a session: refused, but not with "/save! replaces it", which cannot

    def read_only(*args, **kw):  # a folder on a read-only mount, named as the current folder
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(writes.tempfile, "mkstemp", read_only)
    chat.handle("/save s.json")
    proc = "cannot save the session (no file can be created in the folder /proc)"
    lines = err.getvalue().splitlines()
    assert lines[0] == f"error: /proc/yi-chat-save-test.json: {proc}"
    assert lines[1] in (
        f"error: /proc/version: {proc}",
        "error: /proc/version: cannot save the session (the file is not writable)",
    )
    assert lines[2] == lines[1]
    assert lines[3] == (
        f"error: s.json: cannot save the session (the folder {os.path.realpath(tmp_path)} is on a read-only file "
        "system)"
    )
    assert len(lines) == 4 and chat.failures == 4 and os.listdir(tmp_path) == []
    assert [t.content for t in chat.session.turns] == ["q1", "a1"]


@pytest.mark.parametrize("where", ["store", "named", "probe"])
def test_a_signal_as_save_makes_its_temp_file_leaves_none_behind(tmp_path, monkeypatch, where):
    """SIGTERM or SIGHUP while /save wrote (7 of 24 runs of a piped chat) left an empty .tmp-* in the store: the
    handler raised between the temp file's creation and the code that removes it. Every temp file holds the
    signals while it exists (as the autosave does around its writes): the file is saved whole, or the probe /save
    makes beside another session's file is removed, then the signal ends the chat."""
    from yi_cli.conversation import store, writes

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path / "home"))
    chat, _, _ = plain_chat(ScriptedEngine(["a1"]))
    chat.handle("q1")
    other = tmp_path / "s.json"
    if where == "probe":  # another session's file: /save without ! makes a probe temp file, then refuses
        other.write_text(json.dumps({"format": store.FORMAT, "id": "another", "turns": []}))
    real = writes.tempfile.mkstemp

    def then_signal(*args, **kw):
        made = real(*args, **kw)
        os.kill(os.getpid(), signal.SIGTERM)  # delivered at the next bytecode, with the file made
        return made

    def leave(signum, frame):
        raise KeyboardInterrupt

    monkeypatch.setattr(writes.tempfile, "mkstemp", then_signal)
    old = signal.signal(signal.SIGTERM, leave)
    try:
        with pytest.raises(KeyboardInterrupt):
            store.save(chat, None if where == "store" else str(other))
    finally:
        signal.signal(signal.SIGTERM, old)
    folder = store.sessions_dir() if where == "store" else tmp_path
    assert [p.name for p in folder.iterdir() if p.name.startswith(writes.TMP)] == []
    (saved,) = [p for p in folder.iterdir() if p.suffix == ".json"]
    turns = [t["content"] for t in json.loads(saved.read_text())["turns"]]
    assert turns == ([] if where == "probe" else ["q1", "a1"])


def test_autosave_after_every_turn(tmp_path, monkeypatch):
    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    saver = store.Autosave("interactive")
    chat, out, err = plain_chat(ScriptedEngine(["r1", "r2"]), on_turn=saver)
    chat.handle("one")
    assert store.read("last")[0].turns[-1].content == "r1"
    chat.handle("two")
    session, settings, _ = store.read("last")
    assert [t.content for t in session.turns] == ["one", "r1", "two", "r2"]
    assert oct(saver.path.stat().st_mode & 0o777) == "0o600"
    assert oct(saver.path.parent.stat().st_mode & 0o777) == "0o700"


KILLED_MID_AUTOSAVE = """
import os, sys
from tests.fixtures import ScriptedEngine, plain_chat
from yi_cli.conversation import store

def link(tmp, path):  # the moment the store names the new file: say which files it holds, and wait to be killed
    print(tmp, path, flush=True)
    sys.stdin.read()

os.link = link
plain_chat(ScriptedEngine(["r"]), on_turn=store.Autosave("interactive"))[0].handle("q")
"""


def test_an_autosave_in_place_sweeps_too(tmp_path, monkeypatch):
    """Only an autosave that made a new file swept what killed writers left: a user who only ever resumes (-c) kept
    them for good, where README says the next autosave removes them (a shared-home hunt)."""
    from yi_cli.conversation import store, writes

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    first = store.Autosave("interactive")
    plain_chat(ScriptedEngine(["r0"]), on_turn=first)[0].handle("q0")
    first.close()
    folder = store.sessions_dir()
    stale = [folder / ".tmp-stale", folder / ".20990101-000000-abcdef.json.lock"]
    old = time.time() - 24 * 3600
    for f in stale:
        f.write_text("")
        os.utime(f, (old, old))
    monkeypatch.setattr(writes, "_swept", set())  # as a new process starts
    resumed = store.Autosave("interactive", first.path, first.created, first.conv)
    plain_chat(ScriptedEngine(["r1"]), on_turn=resumed)[0].handle("q1")
    resumed.close()
    assert resumed.path == first.path and [f.exists() for f in stale] == [False, False]
    assert [f.name for f in folder.glob("*.json")] == [first.path.name]


@pytest.mark.parametrize("ended", [False, True])
def test_a_session_whose_lock_file_was_removed_is_not_written_by_two(tmp_path, monkeypatch, ended):
    """A `.NAME.lock` removed by hand while its chat ran: a second yi-chat resumed the file in place, and each write
    of one replaced the other's turns. The first sees the lock is no longer its own at its next write and goes on in
    a new file; neither loses a turn, the second's kept where it has ended (and removed its lock) too."""
    import copy
    import json

    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    first = store.Autosave("interactive")
    chat_a, _, err_a = plain_chat(ScriptedEngine(["ra1", "ra2"]), on_turn=first)
    chat_a.handle("A one")
    (first.path.parent / f".{first.path.name}.lock").unlink()
    second = store.Autosave("interactive", first.path, first.created, first.conv)
    assert not second.forked
    chat_b, _, _ = plain_chat(ScriptedEngine(["rb"]), on_turn=second)
    chat_b.session = copy.deepcopy(chat_a.session)  # as -c read it
    chat_b.handle("B two")
    if ended:
        second.close()  # its lock removed with it: the first could claim the file again, and wrote over B's turn
    chat_a.handle("A two")
    first.close(), second.close()
    users = lambda p: [t["content"] for t in json.loads(p.read_text())["turns"] if t["role"] == "user"]  # noqa: E731
    assert users(second.path) == ["A one", "B two"]
    assert first.path != second.path and users(first.path) == ["A one", "A two"]
    assert "lost its lock file (removed), so another yi-chat may have gone on from it" in err_a.getvalue()


@pytest.mark.parametrize("other", [False, True])
def test_a_session_resumed_where_no_lock_could_be_made_is_claimed_before_it_is_written(tmp_path, monkeypatch, other):
    """A session resumed while its store was read-only (no lock file could be made; the claim went on without one),
    then the store writable again: a second yi-chat resumed the file in place, and the first's next write replaced
    the second's turn. The first claims the file at its next write: written by another since, it goes on in a new
    file; untouched, it writes in place and holds it from then on."""
    import copy
    import json

    from yi_cli.conversation import store, writes

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    made = store.Autosave("interactive")
    chat_a, _, err_a = plain_chat(ScriptedEngine(["r0", "ra"]), on_turn=made)
    chat_a.handle("first")
    made.close()
    real = writes.lock_path
    monkeypatch.setattr(writes, "lock_path", lambda p: tmp_path / "nowhere" / "x.lock")  # open fails: as EROFS does
    first = store.Autosave("interactive", made.path, made.created, made.conv)
    assert not first.forked and first.owner.fd is None
    monkeypatch.setattr(writes, "lock_path", real)  # the store is writable again
    chat_a.on_turn = first
    users = lambda p: [t["content"] for t in json.loads(p.read_text())["turns"] if t["role"] == "user"]  # noqa: E731
    if other:
        second = store.Autosave("interactive", made.path, made.created, made.conv)
        assert not second.forked
        chat_b, _, _ = plain_chat(ScriptedEngine(["rb"]), on_turn=second)
        chat_b.session = copy.deepcopy(chat_a.session)  # as -c read it
        chat_b.handle("B two")
        second.close()
    chat_a.handle("A two")
    if other:
        assert users(made.path) == ["first", "B two"]
        assert first.path != made.path and users(first.path) == ["first", "A two"]
        assert "could not be locked while the store was read-only, and another yi-chat has taken it" in err_a.getvalue()
    else:
        assert first.path == made.path and users(made.path) == ["first", "A two"] and "yi-chat" not in err_a.getvalue()
        assert store.Autosave("interactive", made.path, made.created, made.conv).forked  # held by the first now
    first.close()


def test_a_session_file_named_too_long_for_its_lock_file_is_still_held_by_one_chat(tmp_path, monkeypatch):
    """A session file renamed to 250 bytes: its `.NAME.lock` (256) could not be opened (ENAMETOOLONG), the claim
    went on without a lock, and two yi-chats resuming it overwrote each other's turns. Its lock is named by a digest."""
    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    first = store.Autosave("interactive")
    plain_chat(ScriptedEngine(["r0"]), on_turn=first)[0].handle("question")
    first.close()
    long = first.path.with_name("x" * 245 + ".json")
    first.path.rename(long)
    held = store.Autosave("interactive", long, first.created, first.conv)
    assert not held.forked and held.owner.fd is not None
    second = store.Autosave("interactive", long, first.created, first.conv)
    assert second.forked and second.path is None  # its turns go to a new file
    held.close()
    third = store.Autosave("interactive", long, first.created, first.conv)
    assert not third.forked  # let go: the next may take it
    third.close()


def test_autosave_and_save_work_where_the_file_system_has_no_hard_links(tmp_path, monkeypatch):
    """exFAT (a USB stick), some SMB shares: link(2) fails with EPERM. A new session file was written with link(2)
    alone, so autosave failed at every turn and nothing of the chat was saved; /save PATH renamed into place."""
    import errno
    import json

    from yi_cli.conversation import store, writes

    def no_links(src, dst, *a, **kw):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    monkeypatch.setattr(writes.os, "link", no_links)
    auto = store.Autosave("interactive")
    chat, _, err = plain_chat(ScriptedEngine(["r0", "r1"]), on_turn=auto)
    chat.handle("question")
    chat.handle("/save")
    chat.handle("another")
    auto.close()
    assert "failed" not in err.getvalue(), err.getvalue()
    files = {f: json.loads(f.read_text()) for f in auto.path.parent.glob("*.json")}
    assert sorted(f["mode"] for f in files.values()) == ["interactive", "saved"]
    assert [t["content"] for t in files[auto.path]["turns"]] == ["question", "r0", "another", "r1"]


def test_a_file_put_in_place_without_hard_links_never_replaces_one_made_meanwhile(tmp_path, monkeypatch):
    """Without link(2) the temp file was renamed over whatever was at the name: a file another writer made there
    between the check and the rename was lost. The name is taken by an exclusive create first."""
    import errno

    from yi_cli.conversation import writes

    def no_links(src, dst, *a, **kw):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(writes.os, "link", no_links)
    theirs = tmp_path / "s.json"
    theirs.write_text("theirs")
    with writes.tmp_file(tmp_path, "mine") as tmp:
        assert not writes._linked(tmp, theirs)
        assert writes._linked(tmp, tmp_path / "new.json")
    assert theirs.read_text() == "theirs" and (tmp_path / "new.json").read_text() == "mine"


def test_save_onto_the_chats_own_session_file_keeps_it_the_chat_c_reopens(tmp_path, monkeypatch):
    """/save PATH naming the chat's own autosaved file wrote it as a snapshot (`saved`): -c passed it by and opened
    an older chat, or none. It is written by autosave, as what it is, and stays the newest interactive session."""
    import json

    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    older = store.Autosave("interactive")
    plain_chat(ScriptedEngine(["r"]), on_turn=older)[0].handle("an older chat")
    older.close()
    auto = store.Autosave("interactive")
    chat, out, _ = plain_chat(ScriptedEngine(["r0"]), on_turn=auto)
    chat.handle("remember 42")
    chat.handle(f"/save {auto.path}")
    auto.close()
    assert f"saved to {auto.path}" in out.getvalue()
    assert json.loads(auto.path.read_text())["mode"] == "interactive"
    assert store.resolve("last") == auto.path


def test_save_onto_the_chats_own_session_file_with_no_turns_keeps_it(tmp_path, monkeypatch):
    """A resumed session file with no turns (a system prompt kept as a template), /save onto it: autosave, which
    removes a file whose turns are all undone, deleted it, and the line said "saved to" it. A snapshot is written."""
    import json

    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    chat, out, _ = plain_chat(ScriptedEngine(["r0"]))
    chat.handle("/system You are a pirate.")
    folder = tmp_path / "data" / "sessions"
    folder.mkdir(parents=True)
    path = folder / "20261207-050000-pirate.json"
    path.write_text(json.dumps(store.to_dict(chat, "interactive")))
    chat.on_turn = auto = store.Autosave("interactive", path, None, chat.session.id)  # as --resume makes it
    chat.handle(f"/save {path}")
    auto.close()
    assert f"saved to {path}" in out.getvalue()
    assert json.loads(path.read_text())["system"] == "You are a pirate."


def test_a_conversation_a_piped_run_starts_after_clear_in_a_resumed_session_is_the_runs(tmp_path, monkeypatch):
    """A piped run resumed an interactive session (-c), then /clear: its new conversation was written as
    interactive, the resumed file's mode, so the next -c opened it in the chat's place (a shared-home hunt)."""
    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    first = store.Autosave("interactive")
    plain_chat(ScriptedEngine(["r0"]), on_turn=first)[0].handle("chat's question")
    first.close()
    resumed = store.Autosave("interactive", first.path, first.created, first.conv, run_mode="pipe")
    chat = plain_chat(ScriptedEngine(["r1", "r2"]), on_turn=resumed)[0]
    chat.handle("piped turn")
    chat.handle("/clear")
    chat.handle("piped new conversation")
    resumed.close()
    modes = {e["first_line"]: e["mode"] for e in store.entries()}
    assert modes == {"piped turn": "interactive", "piped new conversation": "pipe"}
    assert store.resolve("last") == first.path


def test_files_killed_writers_left_in_the_store_are_removed_and_a_live_writers_are_kept(tmp_path, monkeypatch):
    """A SIGKILL during an autosave left its `.tmp-*` file (and its session's `.NAME.lock`) in the store for good:
    they piled up. The next autosave of any yi-chat removes each one old and locked by no live process; a second
    yi-chat's (a real process holding them) and a fresh one stay."""
    import subprocess
    import sys

    from yi_cli.conversation import store, writes

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    folder = store.sessions_dir()
    first = store.Autosave("interactive")
    plain_chat(ScriptedEngine(["r0"]), on_turn=first)[0].handle("q0")
    first.close()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_MID_AUTOSAVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    try:
        live_tmp, held = map(Path, child.stdout.readline().decode().split())
        live_lock = held.with_name(f".{held.name}.lock")
        fresh_tmp = folder / ".tmp-fresh"
        fresh_tmp.write_text("")
        old = time.time() - 24 * 3600
        for f in (live_tmp, live_lock):
            os.utime(f, (old, old))

        def autosave_in_a_new_process(reply):
            monkeypatch.setattr(writes, "_swept", set())  # as each process starts
            saver = store.Autosave("interactive")
            plain_chat(ScriptedEngine([reply]), on_turn=saver)[0].handle("q")
            saver.close()

        autosave_in_a_new_process("r1")
        assert live_tmp.exists() and live_lock.exists() and fresh_tmp.exists()
        child.kill()  # SIGKILL: its files stay where they are, locked by no one now
        child.wait()
        autosave_in_a_new_process("r2")
        assert not live_tmp.exists() and not live_lock.exists() and fresh_tmp.exists()
    finally:
        child.kill()
        child.wait()
    kept = sorted(f.name for f in folder.iterdir())
    assert kept == [".tmp-fresh", *sorted(f.name for f in folder.glob("*.json"))]
    assert sorted(e["first_line"] for e in store.entries()) == ["q", "q", "q0"]


def _long_sessions(tmp_path, monkeypatch) -> tuple[Path, Path, Path]:
    """A store of seven sessions of mixed modes, a day apart, and a hand-edited copy of the newest with its turns
    first: (the folder, the newest, the copy)."""
    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    folder = store.sessions_dir()
    for i, mode in enumerate(["interactive", "pipe", "interactive", "one-shot", "interactive", "pipe", "interactive"]):
        saver = store.Autosave(mode)
        plain_chat(ScriptedEngine([f"r{i}"]), on_turn=saver)[0].handle(f"q{i} " + "long " * 2000)
        saver.close()
        data = json.loads(saver.path.read_text())
        data["updated"] = f"2026-01-0{i + 1}T00:00:00.000000Z"
        saver.path.write_text(json.dumps(data))
    newest = max(folder.glob("*.json"), key=lambda f: json.loads(f.read_text())["updated"])
    hand_edited = folder / "turns-first.json"  # its turns first: its head says nothing, it is read whole
    data = json.loads(newest.read_text())
    hand_edited.write_text(json.dumps({"turns": data.pop("turns"), **{**data, "updated": "2025-01-01T00:00:00Z"}}))
    return folder, newest, hand_edited


def _counting_reads(monkeypatch) -> list[str]:
    from yi_cli import inputs

    reads: list[str] = []
    real = inputs.read_bytes  # read_json's too: it reads through this one

    def counted(f, *a, **k):
        if Path(f).name != ".listing-cache":  # the sessions' files only
            reads.append(Path(f).name)
        return real(f, *a, **k)

    monkeypatch.setattr(inputs, "read_bytes", counted)
    return reads


def test_continue_reads_whole_only_the_session_it_opens(tmp_path, monkeypatch):
    """-c parsed every file of the store whole (megabytes each for long chats) to open one. The keys before a file's
    turns order the files and pass by other modes; only the newest interactive one is read whole, or the next
    where that is malformed, as `yi-chat sessions` leaves it out. -c opens what the listing's order says."""
    from yi_cli.conversation import store

    folder, newest, hand_edited = _long_sessions(tmp_path, monkeypatch)
    reads = _counting_reads(monkeypatch)

    def last():
        (folder / ".listing-cache").unlink(missing_ok=True)  # the heads' order alone (test_the_listing_remembers)
        reads.clear()
        found = store.resolve("last")
        read = list(reads)
        (folder / ".listing-cache").unlink()
        listed = next(e["name"] for e in store.entries() if e["mode"] in store.RESUMABLE)
        assert found.name == listed
        return found, read

    found, read = last()
    assert found == newest and read == [hand_edited.name, newest.name]
    newest.write_text(newest.read_text().replace('"turns": [', '"turns": [7, '))  # malformed past its head
    found, read = last()
    assert read[-2] == newest.name and found.name == read[-1] and json.loads(found.read_text())["mode"] == "interactive"


def test_sessions_n_reads_whole_only_the_sessions_it_lists(tmp_path, monkeypatch, capsys):
    """`yi-chat sessions -n 2` parsed every file of the store whole, then showed two."""
    from yi_cli.conversation import store
    from yi_cli.ui import sessions_cmd

    folder, newest, hand_edited = _long_sessions(tmp_path, monkeypatch)
    listed = store.entries()
    (folder / ".listing-cache").unlink()  # the heads' order alone (test_the_listing_remembers... has the cache)
    reads = _counting_reads(monkeypatch)
    assert sessions_cmd.main(["-n", "2", "--json"]) == 0
    shown = [e["name"] for e in json.loads(capsys.readouterr().out)]
    assert shown == [e["name"] for e in listed[:2]] and len(reads) == 3  # the two, and the one without a head
    assert hand_edited.name in reads and newest.name in shown


def test_the_listing_remembers_each_file_it_read_until_the_file_changes(tmp_path, monkeypatch):
    """`yi-chat sessions` parsed every file of the store whole at every listing: 6.5 s for 50 sessions of 10,000
    exchanges. What it read of a file is kept in `.listing-cache` under the file's identity (inode, size, time): a
    second listing reads no file; a file rewritten (a turn saved), edited in place, replaced, removed or broken is
    read again (or left out); a cache that is garbage, of other types, or a FIFO is ignored and written again. The
    listing is the same as without the cache every time."""
    import os

    from yi_cli.conversation import store

    folder, newest, hand_edited = _long_sessions(tmp_path, monkeypatch)
    cache = folder / ".listing-cache"

    def listing():
        if cache.exists() and not cache.is_fifo():
            saved = cache.read_bytes()
            cache.unlink()
            plain = store.entries()  # read without it
            cache.write_bytes(saved)
        else:
            plain = None
        reads.clear()
        got = store.entries()
        assert plain is None or got == plain
        return got, sorted(reads)

    reads = _counting_reads(monkeypatch)
    first, read = listing()
    assert len(first) == 8 and read == sorted(f.name for f in folder.glob("*.json"))
    assert cache.stat().st_mode & 0o777 == 0o600
    again, read = listing()
    assert again == first and read == []
    data = json.loads(newest.read_text())  # a turn saved: the file is rewritten (a new inode)
    data["turns"] += [{"role": "user", "content": "more"}, {"role": "assistant", "content": "yes"}]
    store.write_atomic(newest, json.dumps(data))
    got, read = listing()
    assert read == [newest.name] and next(e for e in got if e["name"] == newest.name)["exchanges"] == 2
    with open(hand_edited, "r+") as f:  # edited in place, the same size: its time tells
        text = f.read()
        f.seek(0)
        f.write(text.replace('"q', '"Q', 1))
    os.utime(hand_edited, ns=(time.time_ns(), time.time_ns() + 5_000_000))
    got, read = listing()
    assert read == [hand_edited.name] and next(e for e in got if e["name"] == hand_edited.name)["first_line"][0] == "Q"
    newest.write_text("{broken")  # left out, and remembered as not a session
    got, read = listing()
    assert read == [newest.name] and newest.name not in {e["name"] for e in got}
    assert listing()[1] == []
    hand_edited.unlink()
    got, read = listing()
    assert read == [] and len(got) == 6 and hand_edited.name not in json.loads(cache.read_text())["files"]
    from yi_cli.conversation.listing import VERSION

    for garbage in [
        "[1, 2]",
        json.dumps({"version": VERSION, "files": {"x": 3}}),
        "\xff\xfe",
        json.dumps({"version": VERSION, "files": {e["name"]: {"id": [0, 0, 0], "entry": None} for e in got}}),
    ]:
        cache.write_text(garbage, errors="surrogateescape")
        assert listing()[0] == got
    name = got[0]["name"]  # the right identity with an entry of other types: read again
    files = json.loads(cache.read_text())["files"]
    files[name]["entry"]["exchanges"] = "many"
    cache.write_text(json.dumps({"version": VERSION, "files": files}))
    assert listing() == (got, [name])
    heads = []  # -n / -c (a limit, modes) take what the cache knows without reading the file's head either
    real_head = store._head
    monkeypatch.setattr(store, "_head", lambda f: (heads.append(f.name), real_head(f))[1])
    reads.clear()
    resumable = [e for e in got if e["mode"] in store.RESUMABLE]
    assert store.entries(limit=2) == got[:2] and store.entries(limit=1, modes=store.RESUMABLE) == resumable[:1]
    assert len(resumable) < len(got)  # the modes' filter was tried
    assert heads == [] and reads == []
    cache.unlink()
    os.mkfifo(cache)  # never waited on
    assert store.entries() == got


def test_the_listing_keeps_a_bounded_first_line_so_its_cache_stays_within_its_limit(tmp_path, monkeypatch):
    """The listing cache kept each session's whole first line: one session whose first message was a 17 MB line took
    `.listing-cache` past its own 16 MiB read limit, and every listing after it read every file again. A first line
    is kept (and listed, with the cache or without) to its first listing.FIRST_LINE characters, "..." at the end;
    here with a 64 KiB cache limit and a 100,000-character line, the second listing reads no file."""
    from yi_cli.conversation import listing, store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    monkeypatch.setattr(listing, "LIMIT", 64 << 10)
    saver = store.Autosave("interactive")
    plain_chat(ScriptedEngine(["r"]), on_turn=saver)[0].handle("y" * 100_000 + "\nsecond line")
    saver.close()
    reads = _counting_reads(monkeypatch)
    first = store.entries()
    assert first[0]["first_line"] == "y" * (listing.FIRST_LINE - 3) + "..." and reads == [saver.path.name]
    assert (store.sessions_dir() / listing.NAME).stat().st_size < listing.LIMIT
    reads.clear()
    assert store.entries() == first and reads == []
    # a model name or mode of 100,000 characters too (a hand-made file): kept as short
    data = json.loads(saver.path.read_text())
    data["model"], data["mode"] = "M" * 100_000, "x" * 100_000
    saver.path.write_text(json.dumps(data))
    (entry,) = store.entries()
    cut = listing.FIRST_LINE - 3
    assert entry["model"] == "M" * cut + "..." and entry["mode"] == "x" * cut + "..."
    assert (store.sessions_dir() / listing.NAME).stat().st_size < listing.LIMIT
    reads.clear()
    assert store.entries() == [entry] and reads == []


def test_an_autosave_that_fails_says_so_once_and_when_it_works_again(tmp_path, monkeypatch):
    """`autosave failed (Read-only file system); the chat goes on` came after every turn (a run-through)."""
    import errno

    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    write_new = store.write_new

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(store, "write_new", read_only)
    saver = store.Autosave("interactive")
    chat, out, err = plain_chat(ScriptedEngine(["r1", "r2", "r3", "r4"]), on_turn=saver)
    for q in ("one", "two", "three"):
        chat.handle(q)
    assert err.getvalue().count("failed (Read-only file system)") == 1, err.getvalue()
    monkeypatch.setattr(store, "write_new", write_new)
    chat.handle("four")
    assert f"autosave works again: the session is saved in {saver.path}" in err.getvalue()
    assert [t.content for t in store.read(str(saver.path))[0].turns][::2] == ["one", "two", "three", "four"]


def test_an_autosave_that_fails_names_the_folder_it_could_not_write(tmp_path, monkeypatch):
    """`autosave failed (Not a directory)` did not say where: the line names the sessions folder (here a file
    stands where it belongs, which fails for root too), once, and the chat goes on."""
    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sessions").write_text("not a folder")
    chat, out, err = plain_chat(ScriptedEngine(["r1", "r2"]), on_turn=store.Autosave("interactive"))
    chat.handle("one")
    chat.handle("two")
    line = f"autosave to {tmp_path / 'data' / 'sessions'} failed (Not a directory); the chat goes on"
    assert err.getvalue().count(line) == 1 and "r2" in out.getvalue(), err.getvalue()


def test_json_renderer_writes_one_object_per_turn():
    import io

    from rich.console import Console

    from yi_cli.conversation.chat import Chat
    from yi_cli.ui.render import JsonRenderer

    out = io.StringIO()
    chat = Chat(
        ScriptedEngine(["hello there"]), JsonRenderer(Console(file=io.StringIO()), Console(file=io.StringIO()), out=out)
    )
    chat.handle("hi")
    chat.handle("/history")
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert lines[0]["prompt"] == "hi" and lines[0]["reply"] == "hello there"
    assert lines[0]["finish_reason"] == "stop" and lines[0]["new_tokens"] == 2
    assert lines[1]["command"] == "history" and "hello there" in lines[1]["output"]
    assert all(row == row.rstrip() for row in lines[1]["output"].splitlines())  # not a table's padding to 100


def test_json_lines_write_c1_del_and_bidi_marks_as_escapes():
    """--json wrote a reply's C1 CSI (U+009B), DEL and right-to-left override (U+202E) raw: `cat out.jsonl` in a
    terminal that honours them ran them, where the plain pipe and /history show them escaped. JSON escapes now:
    the same reply to a JSON reader."""
    import io

    from rich.console import Console

    from yi_cli.conversation.chat import Chat
    from yi_cli.safe_text import _UNSAFE
    from yi_cli.ui.render import JsonRenderer

    reply = "c1\x9b2J \u202eRTL del\x7f \u2066iso\u2069 esc\x1b[31m line\u2028para\u2029end"
    out = io.StringIO()
    chat = Chat(
        ScriptedEngine([reply]), JsonRenderer(Console(file=io.StringIO()), Console(file=io.StringIO()), out=out)
    )
    chat.handle("hi")
    (line,) = out.getvalue().splitlines()
    assert not _UNSAFE.search(line), repr(line)
    assert "\\u009b" in line and "\\u202e" in line and "\\u007f" in line
    assert "\\u2028" in line and "\\u2029" in line  # raw, they ended the line for str.splitlines()
    assert json.loads(line)["reply"] == reply


def test_a_reply_that_failed_before_any_token_has_null_counts_and_time_in_json():
    """--json wrote "prompt_tokens": 0 and "ttft_s": 0.0 for a reply that failed before the engine counted or timed
    anything, where README says null for what is not known."""
    import io

    from rich.console import Console

    from yi_cli.conversation.chat import Chat
    from yi_cli.ui.render import JsonRenderer

    class Failing(ScriptedEngine):
        def stream(self, prompt, settings, cancel):
            raise YiError("the server is gone")
            yield

    out = io.StringIO()
    chat = Chat(Failing(["x"]), JsonRenderer(Console(file=io.StringIO()), Console(file=io.StringIO()), out=out))
    chat.handle("hi")
    (line,) = out.getvalue().splitlines()
    got = json.loads(line)
    assert got["finish_reason"] == "error" and got["prompt_tokens"] is None and got["ttft_s"] is None, got


def test_a_command_stopped_by_ctrl_c_says_so_in_json():
    """A `/file` whose wait for a FIFO's writer Ctrl-C (or a signal) gave up wrote {"command": "file", "output": ""}
    under --json: a success with no output, for a file not attached. Its object says it was interrupted."""
    import io

    from rich.console import Console

    from yi_cli.conversation import commands
    from yi_cli.conversation.chat import Chat
    from yi_cli.ui.render import JsonRenderer

    def waits(chat, arg):
        chat.render.show("waiting")
        raise KeyboardInterrupt

    out = io.StringIO()
    chat = Chat(ScriptedEngine(), JsonRenderer(Console(file=io.StringIO()), Console(file=io.StringIO()), out=out))
    with mock.patch.dict(commands.TABLE, {"history": dataclasses.replace(commands.TABLE["history"], handler=waits)}):
        with pytest.raises(KeyboardInterrupt):
            chat.handle("/history")
    assert [json.loads(x) for x in out.getvalue().splitlines()] == [
        {"command": "history", "output": "waiting\n", "error": "interrupted"}
    ]


def test_a_speed_not_measured_is_null_in_json_as_the_footer_leaves_it_out():
    """A reply of one chunk (no time between its tokens): --json said "decode_tok_s": 0.0 where the footer says no
    tok/s at all; README: each object carries the footer's numbers."""
    from yi_cli.engines.events import Stats
    from yi_cli.ui.render import footer

    one_chunk = Stats(prompt_tokens=5, new_tokens=3, ttft_s=0.01, decode_s=0.0, finish_reason="stop")
    assert one_chunk.to_dict()["decode_tok_s"] is None and "tok/s" not in footer(one_chunk)
    timed = Stats(prompt_tokens=5, new_tokens=3, ttft_s=0.01, decode_s=0.5, finish_reason="stop")
    assert timed.to_dict()["decode_tok_s"] == 4.0 and "4.0 tok/s" in footer(timed)


def test_json_lines_give_a_commands_reply_one_object():
    """--json gave /continue (and /retry) two objects: the reply's, then {"command": ..., "output": ""} (a
    run-through). The reply's object stands for the command, and says so with `command` (a /continue's read as a
    message "/continue", as //continue sends one, and a /retry's as a new exchange); a command with output keeps its
    own."""
    import io

    from rich.console import Console

    from yi_cli.conversation.chat import Chat
    from yi_cli.engines.settings import GenSettings
    from yi_cli.ui.render import JsonRenderer

    out = io.StringIO()
    engine = ScriptedEngine(["one two three four", "five six", "again", "a message"])
    chat = Chat(engine, JsonRenderer(Console(file=io.StringIO()), Console(file=io.StringIO()), out=out))
    chat.settings = GenSettings(max_new_tokens=2)
    chat.handle("hi")
    chat.handle("/set max_new_tokens 50")
    chat.handle("/continue")
    chat.handle("/retry")
    chat.handle("/undo")
    chat.handle("//continue")
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    got = [(ln.get("command"), ln.get("prompt")) for ln in lines]
    assert got == [
        (None, "hi"),
        ("set", None),
        ("continue", "/continue"),
        ("retry", "hi"),
        ("undo", None),
        (None, "/continue"),  # a message
    ], lines
    assert lines[2]["reply"] and lines[3]["reply"] == "again" and lines[5]["reply"] == "a message"
    assert lines[1]["output"] and lines[4]["output"]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000])
def test_markdown_tint_keeps_every_character_and_tints_by_line(chunk):
    from yi_cli.ui.render import MarkdownTint

    text = "# Title\n\nSome #text\n```py\nx = 1\n# a comment\n```\n## Two\n- item\n#not a heading\n###"
    tint, pieces = MarkdownTint(), []
    for i in range(0, len(text), chunk):
        pieces += tint.feed(text[i : i + chunk])
    pieces += tint.flush()
    assert "".join(t for t, _ in pieces) == text
    kinds = {}
    for t, k in pieces:
        for line in t.split("\n"):
            if line:
                kinds.setdefault(k, "")
                kinds[k] += line + "|"
    assert kinds["heading"].replace("|", "") == "# Title## Two###"
    assert kinds["code"].replace("|", "") == "```pyx = 1# a comment```"


def test_markdown_tint_takes_a_long_reply_a_line_at_a_time(monkeypatch):
    """A server's reply of 2 MB in one chunk held a terminal at 100% CPU for minutes, Ctrl-C unheard (a review):
    the tint made a piece of each character and grew one string piece by piece, a copy of it each time. It makes a
    few pieces of each line now (its held start, its rest, its end), and joins them once."""
    from yi_cli.ui import render

    sizes = []
    merge = render._merge
    monkeypatch.setattr(render, "_merge", lambda pieces: sizes.append(len(pieces)) or merge(pieces))
    line = "lorem ipsum dolor sit amet " * 12
    text = "    indented " + line + "\n" + (line + "\n") * 2000 + "```\ncode " + line + "\n```\n# end"
    tint = render.MarkdownTint()
    pieces = tint.feed(text) + tint.flush()
    assert "".join(t for t, _ in pieces) == text
    assert [k for _, k in pieces] == [None, "code", "heading"]
    assert sizes[0] <= 3 * text.count("\n") + 3  # not len(text): 650,000 pieces


def test_terminal_renderer_streams_the_reply_once_then_the_footer():
    import io

    from rich.console import Console

    from yi_cli.conversation.chat import Chat
    from yi_cli.ui.render import TerminalRenderer

    buf = io.StringIO()
    console = Console(file=buf, width=80, force_terminal=True, color_system="standard")
    reply = "# Title\n\nSome **bold** text.\n\n```\ncode\n```\n- item"
    chat = Chat(ScriptedEngine([reply]), TerminalRenderer(console, console))
    chat.handle("show me")
    raw = buf.getvalue()
    assert "\x1b[1m# Title" in raw and "\x1b[36mcode" in raw  # heading bold, code cyan
    lines = re.sub(r"\x1b\[[0-9;]*m", "", raw).split("\n")
    assert "\n".join(lines[:8]) == reply  # every character once, in order; no redraws (no cursor moves)
    assert lines[8].startswith("stop · ") and "prompt tok" in lines[8]
    assert "\x1b[A" not in raw and "\r" not in raw


def continued_on_screen(cut: str, more: str) -> tuple:
    """A reply cut (Ctrl-C) at `cut`, then /continue streaming `more`, in a TerminalRenderer on a colour terminal:
    what /continue wrote (escape sequences kept) and the chat."""
    import io

    from rich.console import Console

    from yi_cli.conversation.chat import Chat
    from yi_cli.engines.events import Finish, Stats, Text
    from yi_cli.ui.render import TerminalRenderer

    class Parts(ScriptedEngine):
        parts = [(cut, "interrupted"), (more, "stop")]

        def stream(self, prompt, settings, cancel):
            text, reason = self.parts.pop(0)
            yield Text(text)
            yield Finish(Stats(prompt_tokens=1, new_tokens=1, finish_reason=reason))

    buf = io.StringIO()
    console = Console(file=buf, width=80, force_terminal=True, color_system="standard")
    chat = Chat(Parts(), TerminalRenderer(console, console))
    chat.handle("say it")
    buf.seek(0)
    buf.truncate()
    chat.handle("/continue")
    return buf.getvalue(), chat


@pytest.mark.parametrize("cut,shown", [("The answer is hel", "…hello world."), ("The answer is ", "hello world.")])
def test_a_continue_of_a_reply_cut_mid_word_shows_the_word_whole(cut, shown):
    """A reply cut mid-word ("hel"), then /continue: the continuation began on a line of its own with the rest of
    the word ("lo world."); the cut piece is shown again before it (dim, after an ellipsis). The session holds the
    reply once, whole."""
    raw, chat = continued_on_screen(cut, "lo world." if cut.endswith("hel") else "hello world.")
    assert re.sub(r"\x1b\[[0-9;]*m", "", raw).split("\n")[0] == shown
    assert chat.session.turns[-1].content == "The answer is hello world."


@pytest.mark.parametrize(
    "cut,more,shown",
    [
        ("静夜思：床前明月光，疑是地", "上霜。", "…疑是地上霜。"),  # from the clause's comma on
        ("答：" + "月" * 30, "亮。", "…" + "月" * 20 + "亮。"),  # one clause: its last 40 columns
        ("床前明月光。", "疑是地上霜。", "疑是地上霜。"),  # cut at a full stop: nothing again, as after a space
    ],
)
def test_a_continue_of_a_chinese_reply_shows_again_only_its_cut_clause(cut, more, shown):
    """Chinese has no spaces between words: /continue showed the whole run since the last space again, its last
    40 characters (80 columns, two rows of an 80-column terminal) before the continuation. The piece shown again is
    the cut clause, from its punctuation on, at most 40 columns."""
    raw, chat = continued_on_screen(cut, more)
    assert re.sub(r"\x1b\[[0-9;]*m", "", raw).split("\n")[0] == shown
    assert chat.session.turns[-1].content == cut + more


def test_a_continue_inside_a_code_fence_goes_on_tinted_as_code():
    """A reply cut inside a fenced code block, then /continue: the continuation was tinted as if it began a new
    reply, its code plain and, past the closing fence, its prose in the code's colour (the fence read as opening
    one). It goes on from the cut reply's state: the code tinted, the text after the fence plain."""
    raw, chat = continued_on_screen("Intro.\n\n```python\ndef f(x):\n    ret", "urn x\n```\n\nAfter it.")
    assert "\x1b[36murn x" in raw and "\x1b[36m```" in raw  # the code, and its closing fence
    assert "\x1b[36mAfter" not in raw and "After it." in raw
    assert chat.session.turns[-1].content == "Intro.\n\n```python\ndef f(x):\n    return x\n```\n\nAfter it."


def test_terminal_renderer_shows_control_characters_instead_of_obeying_them():
    import io

    from rich.console import Console

    from yi_cli.conversation.chat import Chat
    from yi_cli.ui.render import TerminalRenderer

    buf = io.StringIO()
    console = Console(file=buf, width=80, force_terminal=True, color_system=None)
    reply = "a\x1b[2J b\rc\tok \x07\x9b \u202eevil\u2066"  # bidi marks reorder the line in VTE: as the pipe shows them
    chat = Chat(ScriptedEngine([reply]), TerminalRenderer(console, console, show_stats=False))
    chat.handle("hi")
    assert buf.getvalue() == "a^[[2J b^Mc\tok ^GM-^[ \\u202eevil\\u2066\n"


def test_edit_rewrites_the_last_message_and_regenerates():
    engine = ScriptedEngine(["first reply", "second reply", "third reply"])
    chat, out, err = plain_chat(engine)
    chat.handle("/edit nothing yet")
    assert "nothing to edit yet" in err.getvalue()
    chat.handle("what is 2+2")
    chat.handle("/edit what is 3+3")
    assert [t.content for t in chat.session.turns] == ["what is 3+3", "second reply"]
    chat.editor = lambda old, head="": old.replace("3+3", "4+4")
    chat.handle("/edit")
    assert [t.content for t in chat.session.turns] == ["what is 4+4", "third reply"]
    assert engine.seen[-1][-1]["content"] == "what is 4+4"


def test_an_edit_returned_as_a_signal_ends_the_chat_is_not_sent():
    """SIGTERM (or SIGHUP, SIGQUIT) landing as the inline edit> prompt returns its line ends the chat the way it
    does at >>> (cli._leave turns `running` off and lets the prompt return): the edited message was sent all the
    same, a new reply generated by a chat that was ending. It is not sent; the exchange stays as it was."""
    engine = ScriptedEngine(["first reply", "never"])
    chat, out, err = plain_chat(engine)
    chat.handle("what is 2+2")

    def edit_as_a_signal_lands(old, head=""):
        chat.running, chat.terminated = False, True  # what cli._leave does while a prompt returns its line
        return "what is 3+3"

    chat.editor = edit_as_a_signal_lands
    chat.handle("/edit")
    assert len(engine.seen) == 1 and err.getvalue() == ""
    assert [t.content for t in chat.session.turns] == ["what is 2+2", "first reply"]


def test_edit_with_text_keeps_the_files_attached_to_the_message(tmp_path):
    """`/edit just the question` after `/file notes.txt`: the new text took the place of the whole message, the file
    went from the conversation without a word and the reply came without it."""
    (tmp_path / "notes.txt").write_text("the notes\n")
    (tmp_path / "my todo.txt").write_text("the todo\n")
    engine = ScriptedEngine(["first reply", "second reply"])
    chat, out, err = plain_chat(engine)
    chat.handle(f"/file {tmp_path / 'notes.txt'}")
    chat.handle(f"/file '{tmp_path / 'my todo.txt'}'")
    chat.handle("what do these say")
    sent = chat.session.turns[0].content
    assert sent.endswith("\n\nwhat do these say") and "the notes" in sent and "the todo" in sent
    chat.handle("/edit just the question")
    assert chat.session.turns[0].content == sent.replace("what do these say", "just the question")
    assert engine.seen[-1][-1]["content"] == chat.session.turns[0].content
    assert "the message keeps its 2 attached files" in err.getvalue()
    chat.handle("/edit ```\nnot a file\n```")  # typed text that looks like a block is what was typed
    assert chat.session.turns[0].content == sent.replace("what do these say", "```\nnot a file\n```")


def test_a_file_changed_between_attach_and_send_goes_as_it_is_now(tmp_path):
    """`/file notes.txt`, then notes.txt edited in another window, then the message: the copy read at /file went,
    while the line had said "it goes with your next message". It is read again and said so; one that cannot be read
    now goes as it was read, with the reason."""
    notes, gone = tmp_path / "notes.txt", tmp_path / "gone.txt"
    notes.write_text("draft\n")
    gone.write_text("kept text\n")
    engine = ScriptedEngine(["one", "two"])
    chat, out, err = plain_chat(engine)
    chat.handle(f"/file {notes}")
    chat.handle(f"/file {gone}")
    notes.write_text("the final version\n")  # another size: the change shows whatever the clock's granularity
    gone.unlink()
    chat.handle("read these")
    sent = engine.seen[-1][-1]["content"]
    assert "the final version" in sent and "draft" not in sent and "kept text" in sent
    assert f"{notes} changed since it was attached: it goes as it is now" in err.getvalue()
    assert f"{gone}: cannot read (No such file or directory); it goes as it was when attached" in err.getvalue()
    chat.handle(f"/file {notes}")  # unchanged since: read once, nothing said
    chat.handle("again")
    assert "the final version" in engine.seen[-1][-1]["content"]
    assert err.getvalue().count("changed since") == 1


def test_a_file_swapped_for_a_pipe_after_attach_goes_as_it_was_read(tmp_path):
    """`/file notes.txt`, then notes.txt replaced by a FIFO nothing writes into: the message's re-read opened the
    FIFO and waited for a writer, with nothing on the screen (the typed message lost at Ctrl-C). It goes as it was
    read, and a line says why."""
    import os
    import threading

    notes = tmp_path / "notes.txt"
    notes.write_text("as attached\n")
    engine = ScriptedEngine(["one"])
    chat, out, err = plain_chat(engine)
    chat.handle(f"/file {notes}")
    notes.unlink()
    os.mkfifo(notes)
    sent = threading.Thread(target=chat.handle, args=("what does it say",))
    sent.start()
    sent.join(120)  # a bound on a failure, not a wait for luck: the message does not wait on the pipe
    if sent.is_alive():
        with open(notes, "w"):  # let the hung read end, to report it
            pass
        sent.join(60)
        pytest.fail("the message waited on the FIFO that replaced its attachment")
    assert "as attached" in engine.seen[-1][-1]["content"]
    assert f"{notes}: not a regular file now (a FIFO); it goes as it was when attached" in err.getvalue()
    assert chat.session.turns[0].content.endswith("what does it say")


def test_a_crashing_command_is_one_line_and_the_chat_goes_on():
    engine = ScriptedEngine(["still here"])
    engine.describe = lambda: [1 / 0]
    chat, out, err = plain_chat(engine)
    assert chat.handle("/model") is True
    assert err.getvalue().strip() == "error: '/model' failed (ZeroDivisionError: division by zero)"
    chat.handle("hello")
    assert chat.session.turns[-1].content == "still here"


def test_a_line_read_in_a_non_utf8_locale_is_taken_as_the_utf8_the_terminal_sent():
    """LC_ALL=C without Python's coercion: the REPL's line holds UTF-8 bytes as surrogates (it was refused)."""
    raw = "café 日本語 🐉".encode()
    chat, out, err = plain_chat(ScriptedEngine())
    chat.handle(raw.decode("ascii", "surrogateescape"))
    assert chat.session.turns[0].content == "café 日本語 🐉"
    chat.handle(b"\xff\xfe bad".decode("ascii", "surrogateescape"))
    assert "the input is not valid UTF-8; line ignored" in err.getvalue()
    assert len(chat.session.turns) == 2


def test_a_third_ctrl_c_on_a_deaf_engine_ends_the_reply_on_screen_too():
    """A long prefill does not answer cancel; the third Ctrl-C gives up on it. The turn was recorded, but the
    screen got no [interrupted] and the terminal renderer kept holding every notice until some later reply."""
    import io

    from rich.console import Console

    from yi_cli.conversation.chat import Chat
    from yi_cli.engines.events import Text
    from yi_cli.ui.render import TerminalRenderer

    release = threading.Event()
    streaming = threading.Event()

    class Deaf(ScriptedEngine):
        def stream(self, prompt, settings, cancel):
            yield Text("partial")
            streaming.set()
            release.wait(60)  # bounded; set at the end of the test

    out, err = io.StringIO(), io.StringIO()
    render = TerminalRenderer(Console(file=out, width=100), Console(file=err, width=100))
    chat = Chat(Deaf(), render)

    def interrupt():
        assert streaming.wait(60)
        ctrl_cs(chat, 3)
        release.set()  # given up on: the engine's thread may end now

    t = threading.Thread(target=interrupt)
    t.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            chat.handle("summarise")
    finally:
        t.join()
        release.set()
    assert "partial" in out.getvalue() and "[interrupted]" in out.getvalue()
    assert not render.streaming
    render.notice("shown at once")
    assert "shown at once" in err.getvalue()
    assert chat.session.turns[-1].interrupted and chat.session.turns[-1].content == "partial"


def test_a_third_ctrl_c_while_a_received_reply_is_drawn_keeps_what_was_shown():
    """A reply that came whole before it was drawn (a buffering proxy, a burst), its drawing given up on by a third
    Ctrl-C: the reply kept its whole text, never shown, as finished ("stop"), not interrupted."""
    import io

    from rich.console import Console

    from yi_cli.conversation.chat import Chat
    from yi_cli.engines.events import Finish, Stats, Text
    from yi_cli.ui.render import TerminalRenderer

    sent = threading.Event()

    class Burst(ScriptedEngine):
        def stream(self, prompt, settings, cancel):
            for word in ("one ", "two ", "three"):
                yield Text(word)
            yield Finish(Stats(prompt_tokens=len(prompt.ids), new_tokens=3, ttft_s=0.01))
            sent.set()  # every event is queued: the pump put the Finish before asking for more

    class Slow(TerminalRenderer):  # a terminal that takes its time drawing the first word
        def reply_text(self, text):
            super().reply_text(text)
            assert sent.wait(60)
            deadline = time.monotonic() + 60
            while chat.interrupts < 3 and time.monotonic() < deadline:
                time.sleep(0.01)  # polling a condition with a deadline; the third Ctrl-C raises out of here

    out, err = io.StringIO(), io.StringIO()
    chat = Chat(Burst(), Slow(Console(file=out, width=100), Console(file=err, width=100)))

    def interrupt():
        assert sent.wait(60)
        ctrl_cs(chat, 3)

    t = threading.Thread(target=interrupt)
    t.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            chat.handle("count")
    finally:
        t.join()
    assert "one" in out.getvalue() and "two" not in out.getvalue() and "[interrupted]" in out.getvalue()
    last = chat.session.turns[-1]
    assert last.content == "one " and last.interrupted


def test_continue_past_the_context_drops_the_oldest_exchanges_or_is_refused_with_one_line():
    """/continue of a cut reply whose conversation no longer fits. It was refused whatever the overflow policy ("shorten
    it, or lower max_new_tokens", neither of which could help) and first an AssertionError; it drops the oldest
    exchanges as a message does, the reply it extends kept, and is refused in one line where even that is not
    enough."""
    import io

    from rich.console import Console

    from yi_cli.conversation.chat import Chat
    from yi_cli.conversation.session import ChatSession
    from yi_cli.engines.events import Finish, Stats, Text
    from yi_cli.engines.template import Prompt
    from yi_cli.ui.render import PlainRenderer

    class Words:  # a template whose tokens are words, two markers a message
        def build(self, messages, continue_final=False, opening=True):
            n = sum(len(m["content"].split()) + 2 for m in messages)
            return Prompt(messages, list(range(n)), "", continue_final)

        def render(self, messages, continue_final=True, opening=True):
            return ""

        def count(self, text):
            return len(text.split())

        def reply_part(self, user, reply):
            return None

        def default_system(self):
            return None

        def surely_over(self, text, tokens):
            return False

        def most_chars_per_token(self):
            return float("inf")

    class Engine:
        template, context_length, name, quant = Words(), 100, "words", None
        prompts: list = []
        asked: list = []

        def stream(self, prompt, settings, cancel):
            self.prompts.append(prompt)
            self.asked.append(settings.max_new_tokens)
            yield Text(" more")
            yield Finish(Stats(prompt_tokens=len(prompt.ids), new_tokens=1))

    def chat_of(exchanges):
        session = ChatSession()
        for k in range(exchanges):
            session.add_exchange(f"q{k} " + "w " * 19, 20, f"r{k} " + "r " * 19, 20, "length", {})
        err = io.StringIO()
        render = PlainRenderer(Console(file=io.StringIO()), Console(file=err), out=io.StringIO())
        return Chat(Engine(), render, GenSettings(max_new_tokens=10), session), err

    chat, err = chat_of(3)  # 132 tokens; 90 fit with room for the reply
    chat.handle("/continue")
    assert "context full (100 tokens): dropped the oldest 1 exchange to fit" in err.getvalue(), err.getvalue()
    sent = Engine.prompts[-1]
    assert sent.continue_final and [m["content"].split()[0] for m in sent.messages] == ["q1", "r1", "q2", "r2"]
    assert chat.session.start == 2 and chat.session.turns[-1].content.endswith(" more")  # out of the context, kept

    chat, err = chat_of(1)
    chat.session.turns[-1].content += " r" * 80  # the reply alone is past the room: nothing to drop helps
    chat.handle("/continue")
    # no max_new_tokens makes room: said so (it said "shorten it, or lower max_new_tokens")
    assert err.getvalue().count("\n") == 1 and "the reply has reached the end of the context" in err.getvalue()
    assert "failed" not in err.getvalue() and chat.session.exchanges == 1

    chat, err = chat_of(1)
    chat.session.turns[-1].content += " r" * 50  # 94 tokens: past the 90 that keep room for a reply, in the context
    chat.handle("/continue")
    # it goes on into the room there is (it was refused: "shorten it, or lower max_new_tokens")
    assert err.getvalue() == "", err.getvalue()
    assert len(Engine.prompts[-1].ids) == 94 and Engine.asked[-1] == 6  # what the context holds of a reply
    assert chat.session.turns[-1].content.endswith(" r more")

    chat, err = chat_of(6)  # 264 tokens: the oldest go to fit even the room there is, unless --overflow refuse
    chat.options.overflow = "refuse"
    sent = len(Engine.prompts)
    chat.handle("/continue")
    assert "only 99 fit in the context" in err.getvalue() and len(Engine.prompts) == sent, err.getvalue()
    assert chat.session.start == 0 and chat.session.exchanges == 6


def test_a_reply_with_no_token_has_no_time_to_first_token():
    """A long prompt stopped by Ctrl-C while it was read: its footer said `ttft 0.00s` for a first token never
    produced, and /stats averaged that 0 in (run-through 4)."""
    from yi_cli.engines.events import Stats
    from yi_cli.ui.render import footer

    cut = Stats(prompt_tokens=4597, new_tokens=0, finish_reason="interrupted")
    assert footer(cut) == "interrupted · 4597 prompt tok · 0 new tok"
    chat, out, err = plain_chat(ScriptedEngine())
    chat.history = [cut, Stats(prompt_tokens=40, new_tokens=5, ttft_s=0.5, decode_s=1.0)]
    chat.handle("/stats")
    assert "mean time to first token: 0.500 s" in out.getvalue() and err.getvalue() == ""


def test_a_pipe_gets_a_blank_line_after_a_commands_output_and_hears_of_a_cut_reply():
    """In a pipe /history's table ran into the next reply (replies end with a blank line; a command's output did not),
    and a reply cut by --max-new-tokens was silent: only --stats said "length" (a walkthrough)."""
    chat, out, err = plain_chat(ScriptedEngine(["one two", "three four five six", "seven"]))
    chat.handle("hi")
    chat.handle("/history")
    chat.handle("/set max_new_tokens 2")
    chat.handle("more")  # cut after two words
    chat.handle("/retry")  # a command whose output is a reply: its blank line once
    assert out.getvalue().split("\n\n") == [
        "one two",
        " #  role       tokens  text\n 1  user       1       hi\n 2  assistant  2       one two",
        "max_new_tokens = 2",
        "three four",
        "seven",
        "",
    ]
    cut = "the reply stopped at the token limit (--max-new-tokens)\n"
    assert err.getvalue() == cut  # the second reply; the last ended by itself


def test_clear_on_an_empty_chat_says_there_is_nothing_to_clear():
    """`/clear` before any message said "cleared 0 exchanges" (a walk-through); with a system prompt it also said the
    prompt is kept, as if something had gone. It says there was nothing; a chat with a message still clears it."""
    for system in (None, "keep me"):
        chat, out, _ = plain_chat(ScriptedEngine())
        chat.session.system = system
        chat.handle("/clear")
        assert [ln for ln in out.getvalue().splitlines() if ln] == ["nothing to clear: no messages yet"]
        assert chat.session.system == system
        chat.handle("hello")
        chat.handle("/clear")
        assert [ln for ln in out.getvalue().splitlines() if ln][-1].startswith("cleared 1 exchange")
        assert chat.session.turns == []


def test_clear_and_a_context_drop_say_the_system_prompt_is_kept_only_where_there_is_one():
    """With no system prompt set, `/clear` said "cleared 0 exchange(s); the system prompt is kept" and a context drop
    "...to fit; the system prompt is kept" (a run-through): there was none to keep. They say so only with one."""
    for system in (None, "keep me"):
        engine = ScriptedEngine()
        engine.context_length = 64
        chat, out, err = plain_chat(engine, settings=GenSettings(max_new_tokens=16))
        chat.session.system = system
        for i in range(6):
            chat.handle(f"message number {i} with quite a few words in it")
        chat.handle("/clear")
        drops = [ln for ln in err.getvalue().splitlines() if ln.startswith("context full")]
        assert drops and all(
            ln.endswith("to fit" if system is None else "to fit; the system prompt is kept") for ln in drops
        )
        cleared = [ln for ln in out.getvalue().splitlines() if ln][-1]  # (a blank line ends a command's output)
        assert re.fullmatch(r"cleared (1 exchange|[02-9] exchanges)", cleared.split(";")[0])
        assert cleared.endswith("; the system prompt is kept") == bool(system), cleared


HISTORY_WORDS = ["hi", "你好世界", "a" * 30, "x:y", ":smile:", "tab\there", "end\u3000", "l\u2028s", "😀", "e\u0301"]
HISTORY_WORDS += ["[b]no markup[/b]", "http://h:80/p:q", "trail  ", "\n", "\n\n", "word" * 12, "ｆｕｌｌ", "\x1b[2J"]


def _history_rows(seed: int, n: int) -> list[tuple[str, ...]]:
    from yi_cli.safe_text import safe

    rnd = random.Random(seed)
    rows = [("", "system", "", safe("be terse\n\tplease"))]
    for i in range(1, n + 1):
        text = " ".join(rnd.choice(HISTORY_WORDS) for _ in range(rnd.randint(0, 12)))
        role = ("user", "assistant")[i % 2]
        rows.append(
            (str(i), role, str(rnd.randint(0, 10 ** rnd.randint(0, 6))), safe(text) + rnd.choice(["", " [length]"]))
        )
    return rows


def test_history_draws_the_table_rich_draws_at_every_width():
    """/history's table (HistoryTable, drawn without rich's cost per cell) is rich's Table's, character for character
    and style for style: in a pipe (whole rows, or at a width), on a terminal folding rows at its width; on yi-chat's
    consoles (emoji codes off: `:smile:` stays as typed on both)."""
    import io

    from rich.table import Table

    from yi_cli.conversation.history_table import HistoryTable
    from yi_cli.ui.render import make_console, piped

    for seed in range(40):
        rows = _history_rows(seed, seed % 9)
        tables = (Table(show_header=True, header_style="bold", box=None), HistoryTable("#", "role", "tokens", "text"))
        for col in ("#", "role", "tokens", "text"):
            tables[0].add_column(col, overflow="fold")
        for t in tables:
            for row in rows:
                t.add_row(*row)
        for width in (12, 30, 47, 80):
            assert piped(tables[0], width, True) == piped(tables[1], width, True)
            assert piped(tables[0], width, False) == piped(tables[1], width, False)
            screens = []
            for t in tables:
                screen = io.StringIO()
                term = make_console(file=screen, width=width, force_terminal=True, color_system="standard")
                term.print(t, markup=False, highlight=False)
                screens.append(screen.getvalue())
            assert screens[0] == screens[1], (seed, width)


def test_history_of_a_long_context_renders_few_cells_through_rich(monkeypatch):
    """/history on a context of 10,000 exchanges took 7 s to print: every cell of the table went through rich's
    Text (measured twice, wrapped, cropped, padded). A row of single lines that fit is written as rich would write
    it; rich draws only the header and the rows it has to fold or change. Text like `10:30:` is not one of those (it
    was, as an emoji code, until the consoles had them off: 10,000 such exchanges took 8.8-10.0 s, now 0.5-0.8)."""
    from rich.text import Text

    from yi_cli.conversation.session import ChatSession, Turn

    session = ChatSession()
    for i in range(500):
        q, a = f"question {i} at 10:30: ok", f"answer {i}\n\nin two lines"
        session.turns += [Turn("user", q, 3), Turn("assistant", a, 5, "stop")]
    session.turns += [Turn("user", "a tab\there", 3), Turn("assistant", "and a long line " * 20, 5, "stop")]
    chat, out, err = plain_chat(ScriptedEngine([]), session=session)
    wraps = []
    real = Text.wrap
    monkeypatch.setattr(Text, "wrap", lambda self, *a, **k: (wraps.append(self.plain), real(self, *a, **k))[1])
    chat.handle("/history")
    lines = out.getvalue().splitlines()
    assert err.getvalue() == "" and len(lines) == 1 + 500 * 4 + 2 + 1  # the blank line after a command's output
    assert lines[1:5] == [
        " 1     user       3       question 0 at 10:30: ok",
        " 2     assistant  5       answer 0",
        "",
        " " * 26 + "in two lines",
    ]
    assert lines[-3:-1] == [
        " 1001  user       3       a tab   here",
        " 1002  assistant  5       " + "and a long line " * 19 + "and a long line",
    ]
    assert len(wraps) <= 3 * 4  # the header's cells and the two rows rich draws (the old table: 4 a row)


def test_a_command_compares_the_session_without_copying_it_and_still_sees_every_change(monkeypatch):
    """Each command copied the whole conversation twice (session.to_dict, before and after, to know whether the
    autosave follows): ~0.6 s a command at 10,000 exchanges. A command that changes nothing copies nothing and
    saves nothing; one that changes the conversation or a setting is saved."""
    from yi_cli.conversation.session import ChatSession

    saves = []
    chat, out, err = plain_chat(ScriptedEngine(["r-edit", "r-retry"]), on_turn=lambda c: saves.append(1))
    for i in range(200):
        chat.session.add_exchange(f"q{i}", 3, f"a{i}", 2, "stop", {"new_tokens": 2})
    copies = []
    real = ChatSession.to_dict
    monkeypatch.setattr(ChatSession, "to_dict", lambda self: copies.append(1) or real(self))
    for line in ["/help", "/history", "/stats", "/set", "/system"]:
        chat.handle(line)
    assert not copies and not saves, err.getvalue()
    changes = ["/set temperature 0.3", "/system be brief", "/edit q199 again", "/retry", "/undo", "/clear"]
    for line in changes:  # saved (a reply a command makes is saved as every reply is, then again by the command)
        before = len(saves)
        chat.handle(line)
        assert len(saves) > before, (line, err.getvalue())
    assert chat.session.turns == [] and chat.settings.temperature == 0.3


@pytest.mark.parametrize(
    "where", ["as the prompt returned it", "while it was prepared", "a command as the prompt returned it"]
)
def test_a_message_sent_as_a_signal_ends_the_chat_is_kept(monkeypatch, where):
    """SIGTERM, SIGHUP or SIGQUIT (a terminal closed) right after Enter: the prompt returned the line with the chat
    already stopped, or the signal's KeyboardInterrupt came while the message was prepared, before its reply took
    the signals. The message was dropped: shown as sent, in the input history, not in the session (-c never saw
    it; a first message left no session at all). It is kept as a Ctrl-C typed with its Enter keeps it: its reply
    stopped as it starts. A command's line is not run once the chat has stopped."""
    from yi_cli.ui import repl

    engine = ScriptedEngine(["a fruit"])
    chat, out, _ = plain_chat(engine)
    line = "/system be brief" if where.startswith("a command") else "Name a fruit"

    def stop():  # what the ending signals' handler (cli._leave) does to the chat
        chat.running, chat.terminated = False, True

    def read_line(session, prompt_text, **kw):
        if where != "while it was prepared":
            stop()  # end_prompt leaves a prompt returning its line to return it
        return line

    monkeypatch.setattr(repl, "read_line", read_line)
    monkeypatch.setattr(repl, "signal_keys_typed_ahead", lambda keys_in: set())
    if where == "while it was prepared":
        real, signalled = chat._fits_untokenized, []

        def preparing(text):
            if not signalled:
                signalled.append(text)
                stop()
                raise KeyboardInterrupt  # where no prompt reads, the handler raises it
            return real(text)

        monkeypatch.setattr(chat, "_fits_untokenized", preparing)
    from prompt_toolkit.input import DummyInput

    monkeypatch.setattr(repl, "AHEAD", [])  # what the chat's end takes of the keys typed ahead: this test's own
    repl._one_line(chat, SimpleNamespace(input=DummyInput()), ">>> ")
    assert repl.AHEAD == [""]  # nothing was typed ahead (a plain chat has no terminal's queue)
    turns = chat.session.turns
    if where.startswith("a command"):
        assert turns == [] and chat.session.system != "be brief"
        return
    assert [(t.role, t.content, t.finish_reason) for t in turns] == [
        ("user", "Name a fruit", ""),
        ("assistant", "", "interrupted"),
    ]
    assert "[interrupted]" in out.getvalue()


@pytest.mark.parametrize("screen", [True, False])
def test_a_servers_crlf_line_ends_are_line_ends_on_a_terminal_and_in_a_pipe(screen):
    """A reply with CRLF line ends (a server's): a terminal showed `^M` at each line's end where a pipe wrote LF,
    and a CRLF split across two pieces reached a pipe as `\\x0d`. A lone CR stays visible in both."""
    import io

    from rich.console import Console

    from yi_cli.conversation.chat import Chat
    from yi_cli.engines.events import Finish, Stats, Text
    from yi_cli.ui.render import TerminalRenderer

    class Pieces(ScriptedEngine):
        def stream(self, prompt, settings, cancel):
            for piece in ("line one\r", "\nline two\r\nthree\rfour\r"):
                yield Text(piece)
            yield Finish(Stats(prompt_tokens=1, new_tokens=2, finish_reason="stop"))

    if screen:
        buf = io.StringIO()
        console = Console(file=buf, width=80, force_terminal=True, color_system=None)
        chat = Chat(Pieces(), TerminalRenderer(console, console, show_stats=False))
    else:
        chat, buf, _ = plain_chat(Pieces())
    chat.handle("hi")
    cr = "^M" if screen else "\\x0d"
    assert buf.getvalue().startswith(f"line one\nline two\nthree{cr}four{cr}\n"), repr(buf.getvalue())


def test_retry_after_a_failed_send_sends_that_message_again(tmp_path):
    """A message whose send failed (a server's error) is not recorded; /retry then regenerated the exchange before
    it, replacing a reply the user had not asked to lose, and never sent the message. It sends the message, with
    the files that were attached to it; a seed given is for that reply only."""
    engine = ScriptedEngine(["r1", "r2"])
    chat, out, err = plain_chat(engine)
    chat.handle("q1")
    (tmp_path / "notes.txt").write_text("a note\n")
    chat.handle(f"/file {tmp_path / 'notes.txt'}")
    engine.fail_with = ConnectionError("the server went away")
    chat.handle("q2")
    assert [t.content for t in chat.session.turns] == ["q1", "r1"]
    engine.fail_with = None
    chat.handle("/retry 9")
    turns = [t.content for t in chat.session.turns]
    assert turns[:2] == ["q1", "r1"] and turns[3] == "r2" and len(turns) == 4
    assert turns[2].endswith("q2") and "a note" in turns[2] and chat.attachments == []
    assert engine.seeds[-1] == 9 and chat.settings.seed is None
    assert "sending again the message that was not sent" in err.getvalue()
    chat.handle("/retry")  # sent now: /retry is a new reply to it again
    assert [t.content for t in chat.session.turns][2:] == [turns[2], "echo: " + turns[2]]


def test_retry_after_a_failed_send_and_a_setting_sends_it_and_after_an_undo_does_not():
    engine = ScriptedEngine(["r1", "r2"])
    chat, out, err = plain_chat(engine)
    chat.handle("q1")
    engine.fail_with = ConnectionError("the server went away")
    chat.handle("q2")
    chat.handle("/set temperature 0.5")  # not the conversation: q2 is still the last message
    engine.fail_with = None
    chat.handle("/retry")
    assert [t.content for t in chat.session.turns] == ["q1", "r1", "q2", "r2"]
    assert engine.settings_seen[-1].temperature == 0.5
    engine.fail_with = ConnectionError("the server went away")
    chat.handle("q3")
    chat.handle("/undo")  # the conversation changed: q3 is no longer what /retry answers
    engine.fail_with = None
    chat.handle("/retry")
    assert [t.content for t in chat.session.turns] == ["q1", "echo: q1"]


def test_the_ending_line_does_not_say_a_session_is_saved_whose_last_autosave_failed(tmp_path, monkeypatch):
    """After an autosave failed (a read-only or full home), a run still ended with "the session is saved in X",
    whose file held only the turns before; and a piped run whose every autosave failed exited 0."""
    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    autosave = store.Autosave("pipe")
    chat, out, err = plain_chat(ScriptedEngine(["one", "two"]), on_turn=autosave)
    chat.handle("first")
    assert autosave.where() == f"the session is saved in {autosave.path}"

    def refuse(*a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(store, "write_atomic", refuse)
    chat.handle("second")
    assert "autosave to" in err.getvalue() and "failed (Read-only file system)" in err.getvalue()
    assert autosave.where() == "the last turns are not saved (autosave failed: Read-only file system)"


def test_a_session_named_in_a_store_folder_that_cannot_be_searched_says_so(tmp_path, monkeypatch):
    """--resume NAME where the sessions folder cannot be searched (its x bit gone) said "no such session file": the
    look-up's permission error read as no file. Faked for the one folder (the suite may run as root, whom no mode
    denies)."""
    import os

    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    folder = store.sessions_dir()
    real = os.lstat

    def lstat(path, *a, **k):
        if os.path.dirname(os.fspath(path)) == str(folder):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path, *a, **k)

    monkeypatch.setattr(os, "lstat", lstat)
    with pytest.raises(YiError) as e:
        store.read("20261205-201517-a60d12")
    assert str(e.value) == f"{folder}: cannot search the sessions folder (permission denied)"


def test_a_loaded_session_is_not_copied_by_an_ending_signal_and_nothing_left_is_no_failure(tmp_path, monkeypatch):
    """/load then SIGHUP: the ending's autosave wrote the loaded conversation into a new file, unchanged (listed
    twice, -c took the copy); the ending names the loaded file. A piped run whose autosave failed, then /undo left
    nothing of that conversation to save, exited 1 (after /clear the unwritten turns are lost: it still does)."""
    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path / "home"))
    autosave = store.Autosave("interactive")
    chat, out, err = plain_chat(ScriptedEngine(["Fine.", "Again."]), on_turn=autosave)
    saved = tmp_path / "s.json"
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    saved.write_text(json.dumps({"format": "yi-chat-session", "version": 1, "turns": turns}))
    chat.handle(f"/load {saved}")
    autosave(chat)  # as cli's ending does after a signal
    assert store.entries() == [] and autosave.where() == f"the session is saved in {saved}"
    chat.handle("/set temperature 0.3")  # a change: the loaded conversation goes into a file of its own now
    assert len(store.entries()) == 1

    def refuse(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "write_atomic", refuse)
    chat.handle("one more")
    assert autosave.failing == "No space left on device"
    chat.handle("/clear")  # another conversation: the turns that could not be written are lost all the same
    assert autosave.failing == "No space left on device"
    monkeypatch.setattr(store, "write_new", refuse)
    chat.handle("again")
    chat.handle("/undo")  # this conversation emptied: nothing of it left to save
    assert autosave.failing is None


def test_a_home_with_a_line_break_is_named_on_one_line(tmp_path, monkeypatch):
    """YI_CHAT_HOME=$'a\\nb': `-c`'s "no interactive session saved yet in ..." and the ending's "the session is saved
    in ..." went over two lines."""
    from yi_cli.conversation import store

    home = tmp_path / "a\nb"
    monkeypatch.setenv("YI_CHAT_HOME", str(home))
    with pytest.raises(YiError) as e:
        store.resolve("last")
    assert "\n" not in str(e.value) and f"{tmp_path}/a\\nb/data/sessions" in str(e.value)
    autosave = store.Autosave("pipe")
    chat, out, err = plain_chat(ScriptedEngine(["one"]), on_turn=autosave)
    chat.handle("first")
    assert autosave.path is not None and "\n" not in autosave.where() and "a\\nb" in autosave.where()


def test_json_lines_say_each_failure_in_an_object_with_its_line():
    """--json wrote nothing for a refused message, a failed command or a skipped line, and a failed reply's object
    had no text of why: a reader pairing its input with the objects lost count, and had to read stderr. Each now
    has an object whose `error` is the line stderr got."""
    import io

    from rich.console import Console

    from yi_cli.conversation.chat import Chat, Options
    from yi_cli.ui.render import JsonRenderer

    out, err = io.StringIO(), io.StringIO()
    engine = ScriptedEngine(["fine"])
    engine.context_length = 40
    chat = Chat(
        engine,
        JsonRenderer(Console(file=io.StringIO()), Console(file=err), out=out),
        options=Options(overflow="refuse"),
    )
    chat.handle("/undo")  # nothing to undo: a command that fails
    chat.handle("/nosuch")  # not a command at all
    chat.handle("word " * 60)  # over the context: refused before any reply
    chat.handle("hi")
    chat.handle("/history")
    engine.fail_with = YiError("the server is gone")
    chat.handle("again")
    chat.render.error("stdin line 9 is not valid UTF-8; skipped")  # as cli's pipe reader says it
    got = [json.loads(x) for x in out.getvalue().splitlines()]
    lines = [x.removeprefix("error: ") for x in err.getvalue().splitlines() if x.startswith("error: ")]
    assert [sorted(o) for o in got] == [
        ["command", "error", "output"],
        ["error"],
        ["decode_tok_s", "error", "finish_reason", "new_tokens", "prompt", "prompt_tokens", "reply", "ttft_s"],
        ["decode_tok_s", "finish_reason", "new_tokens", "prompt", "prompt_tokens", "reply", "ttft_s"],
        ["command", "output"],
        ["decode_tok_s", "error", "finish_reason", "new_tokens", "prompt", "prompt_tokens", "reply", "ttft_s"],
        ["error"],
    ], got
    assert [o["error"] for o in got if "error" in o] == lines and len(lines) == 5, (got, lines)
    assert got[0]["command"] == "undo" and got[2]["prompt"] == "word " * 60 and got[2]["finish_reason"] == "error"
    assert got[2]["prompt_tokens"] is None and got[2]["new_tokens"] == 0 and got[2]["reply"] == ""
    assert got[3]["reply"] == "fine" and got[5]["prompt"] == "again" and got[5]["finish_reason"] == "error"


@pytest.mark.parametrize("how", ["load", "fork"])
def test_a_failed_reply_leaves_no_second_file_of_the_conversation(tmp_path, monkeypatch, how):
    """The message goes into the session's file as its reply starts. After /load (or going on from a file another
    yi-chat holds: a fork), that write made a new file; a reply that failed then left it, a second file of the same
    conversation that -c took (the one that Autosave.loaded is there to prevent), and the ending line named it."""
    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path / "home"))
    first = store.Autosave("interactive")
    chat, _, _ = plain_chat(ScriptedEngine(["a0"]), on_turn=first)
    chat.handle("q0")
    (original,) = store.sessions_dir().glob("*.json")
    failing = ScriptedEngine(fail_with=YiError("the server is gone"))
    if how == "load":
        first.close()
        saver = store.Autosave("interactive")
        again, _, err = plain_chat(failing, on_turn=saver)
        again.handle("/load last")
    else:  # the first chat still holds its file
        session, _, data = store.read("last")
        saver = store.autosave_for("last", data, "interactive")
        assert saver.forked
        again, _, err = plain_chat(failing, session=session, on_turn=saver)
    again.handle("q1")
    assert "the server is gone" in err.getvalue()
    assert list(store.sessions_dir().glob("*.json")) == [original]
    if how == "load":
        assert saver.where() == f"the session is saved in {original}"
    saver.close()
    first.close()


def test_an_autosave_that_cannot_write_is_said_once_whatever_the_replies_do(tmp_path, monkeypatch):
    """Autosave failing (the sessions' folder a file) and replies failing: each failed reply said the autosave
    failure again (the message's write, then putting the files back, cleared what had been said), and a first
    message that failed reported the failure of a save of a turn that never was."""
    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "data").mkdir(parents=True)
    (tmp_path / "home" / "data" / "sessions").write_text("")
    engine = ScriptedEngine(fail_with=YiError("the server is gone"))
    saver = store.Autosave("pipe")
    chat, _, err = plain_chat(engine, on_turn=saver)
    chat.handle("a")
    chat.handle("b")
    assert "autosave" not in err.getvalue() and saver.failing is None, err.getvalue()
    engine.fail_with = None
    chat.handle("c")
    chat.handle("d")
    assert err.getvalue().count("autosave to ") == 1 and saver.failing == "Not a directory", err.getvalue()


def test_json_lines_after_a_line_given_up_by_ctrl_c_name_the_right_line():
    """A line the REPL gave up on (a third Ctrl-C out of a /retry, a Ctrl-C while a message was tokenized) left the
    --json renderer holding it: the next unknown command's error went into the abandoned /retry's object (never
    written), or into an object for the abandoned message."""
    import io

    from rich.console import Console

    from yi_cli.conversation.chat import Chat
    from yi_cli.engines.events import Stats
    from yi_cli.ui.render import JsonRenderer

    out = io.StringIO()
    chat = Chat(
        ScriptedEngine(["one", "two"]), JsonRenderer(Console(file=io.StringIO()), Console(file=io.StringIO()), out=out)
    )
    chat.handle("hi")

    def given_up(*a, **k):
        chat._abandoned = ("", Stats(prompt_tokens=None, finish_reason="interrupted"), None, None)
        raise KeyboardInterrupt

    for line, where in [("/retry", "_stream"), ("a long pasted message", "_prompt")]:
        real = getattr(chat, where)
        setattr(chat, where, given_up)
        with pytest.raises(KeyboardInterrupt):
            chat.handle(line)
        setattr(chat, where, real)
        chat.handle("/bogus")
    got = [json.loads(x) for x in out.getvalue().splitlines()]
    bogus = [o for o in got if "unknown command /bogus" in o.get("error", "")]
    assert bogus == [{"error": "unknown command /bogus; /help lists them, and //TEXT sends a message starting /"}] * 2
    assert not any(o.get("prompt") == "a long pasted message" and "error" in o for o in got), got


def test_a_ctrl_c_as_a_commands_change_is_autosaved_leaves_the_file_as_the_screen(tmp_path, monkeypatch):
    """/undo (or /system) in a long session, Ctrl-C while its autosave turned the session into JSON: the screen said
    `removed the last exchange`, the file kept it, and -c brought it back (a sessions review: 4 of 4)."""
    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path / "home"))
    saver = store.Autosave("interactive")
    chat, out, _ = plain_chat(ScriptedEngine(["a0", "a1"]), on_turn=saver)
    chat.handle("q0")
    chat.handle("q1")
    real, calls = store.dumps, []

    def interrupted(*a, **kw):  # the Ctrl-C arrives as the JSON is made, the first time only
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(store, "dumps", interrupted)
    with pytest.raises(KeyboardInterrupt):
        chat.handle("/undo")
    assert "removed the last exchange" in out.getvalue()
    assert [t["content"] for t in json.loads(saver.path.read_text())["turns"]] == ["q0", "a0"]
    saver.close()


def test_an_undo_whose_file_cannot_be_removed_says_so(tmp_path, monkeypatch):
    """/undo of the only exchange in a read-only store: `removed the last exchange`, exit 0, nothing said, and the
    file (which --resume and -c open) still held it. One line says so, and the run counts it as a failed save."""
    import os

    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path / "home"))
    saver = store.Autosave("interactive")
    chat, out, err = plain_chat(ScriptedEngine(["a0"]), on_turn=saver)
    chat.handle("q0")
    path, real = saver.path, os.unlink

    def refused(p, *a, **kw):
        if str(p) == str(path):
            raise PermissionError(13, "Permission denied", str(p))
        return real(p, *a, **kw)

    monkeypatch.setattr(store.os, "unlink", refused)
    chat.handle("/undo")
    monkeypatch.setattr(store.os, "unlink", real)
    assert "removed the last exchange" in out.getvalue()
    assert f"autosave could not remove {path} (Permission denied)" in err.getvalue(), err.getvalue()
    assert "the last turns are not saved" in saver.where()
    assert path.exists()
    saver.close()


def test_a_ctrl_c_as_the_prompt_is_built_keeps_the_message_and_its_files(tmp_path, monkeypatch):
    """Ctrl-C after Enter while the prompt was built (seconds for a long session): the message was not recorded and
    the files taken for it were gone (`/file` said nothing attached, /retry sent the text alone). It stops the reply
    as it starts, as during it: the message and its file are kept with an empty [interrupted] reply."""
    import os
    import signal

    from yi_cli.conversation.chat import Chat

    notes = tmp_path / "notes.txt"
    notes.write_text("the notes\n")
    engine = ScriptedEngine(["a long reply that should never be shown"])
    chat, out, err = plain_chat(engine)
    chat.handle(f"/file {notes}")
    real = Chat._prompt

    def slow_prompt(self, pending):  # the Ctrl-C comes while the prompt is built
        os.kill(os.getpid(), signal.SIGINT)
        return real(self, pending)

    monkeypatch.setattr(Chat, "_prompt", slow_prompt)
    chat.handle("summarize the notes")
    last = chat.session.turns[-1]
    assert last.finish_reason == "interrupted" and last.content == "", last
    assert "the notes" in chat.session.turns[-2].content and "summarize the notes" in chat.session.turns[-2].content


def test_a_ctrl_c_before_the_reply_leaves_the_files_attached(tmp_path, monkeypatch):
    """A Ctrl-C raised before the reply's signals are taken (the conversation's messages listed for a long session):
    the files taken for the message were dropped with it. They wait for the next message again."""
    from yi_cli.conversation.chat import Chat

    notes = tmp_path / "notes.txt"
    notes.write_text("the notes\n")
    chat, out, err = plain_chat(ScriptedEngine(["a0"]))
    chat.handle(f"/file {notes}")

    def interrupted(self, pending):
        raise KeyboardInterrupt

    monkeypatch.setattr(Chat, "reply", interrupted)
    with pytest.raises(KeyboardInterrupt):
        chat.handle("summarize the notes")
    assert [(a.name, a.text) for a in chat.attachments] == [(str(notes), "the notes\n")]
    assert chat.unsent == "summarize the notes"


def test_a_resumed_store_entry_that_is_a_symlink_goes_on_in_the_file_it_names(tmp_path, monkeypatch):
    """A session of the store linked to a synced folder: resumed, the link was replaced by a copy, the conversation
    going on in two files (the link's target left behind). Its writer's lock is beside the link: a /save onto the
    target missed it."""
    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path / "home"))
    first = store.Autosave("interactive")
    chat, _, _ = plain_chat(ScriptedEngine(["a0"]), on_turn=first)
    chat.handle("q0")
    first.close()
    synced = tmp_path / "synced" / "chat.json"
    synced.parent.mkdir()
    first.path.rename(synced)
    link = first.path
    link.symlink_to(synced)
    session, settings, data = store.read("last")
    saver = store.autosave_for("last", data, "interactive")
    chat, _, _ = plain_chat(ScriptedEngine(["a1"]), session=session, on_turn=saver)
    chat.handle("q1")
    other, _, err = plain_chat(ScriptedEngine(["b1"]))  # another chat's /save! onto the file, by either name
    other.handle("q")
    for name in (synced, link):
        other.handle(f"/save! {name}")
        assert err.getvalue().count("another yi-chat is writing this session file") == 1 + (name == link)
    saver.close()
    assert link.is_symlink()
    assert [t["content"] for t in json.loads(synced.read_text())["turns"]][::2] == ["q0", "q1"]


def test_the_context_drops_no_more_exchanges_than_the_prompt_needs():
    """Saved token counts a token off (a reply that ended on its end-of-turn token counts one more than its text)
    put the estimate a fraction of a token past the budget: two exchanges were dropped where one made room, and
    the reply changed (a long-context review: 86 of 150 conversations at some context). The fewest that fit go."""
    from yi_cli.conversation import context

    rebuild = {0: 100, 2: 75, 4: 50}.get  # the whole prompt; without the first exchange; without both
    assert context.fit(rebuild, 100, [9, 10, 10, 10], 75) == 2
    assert context.fit({0: 100, 2: 76, 4: 50}.get, 100, [9, 10, 10, 10], 75) == 4


def test_a_refusal_suggests_only_what_can_make_room():
    """A prompt past the whole context was told to "lower max_new_tokens", and a one-shot at the most the model
    takes to "give more --context" (a long-context review)."""
    from yi_cli.conversation import context

    rebuild = {0: 9030}.get
    with pytest.raises(
        YiError, match=r"only 8184 fit in the context \(after reserving room for the reply\); shorten it$"
    ):
        context.fit(rebuild, 9030, [], 8184, context=8192)
    with pytest.raises(YiError, match=r"; shorten it, or give more --context$"):
        context.fit(rebuild, 9030, [], 8184, one_shot=True, context=8192)
    with pytest.raises(YiError, match=r"; shorten it$"):
        context.fit(rebuild, 9030, [], 8184, one_shot=True, context=8192, more=False)
    with pytest.raises(YiError, match=r"; shorten it, or give more --context or a lower --max-new-tokens$"):
        context.fit({0: 8190}.get, 8190, [], 8184, one_shot=True, context=8192)
    assert (
        context.remedy(False, False, system=True)
        == "shorten it, or lower max_new_tokens (the system prompt counts too)"
    )
    # a one-shot on a resumed session whose system prompt is long: `-p hi` was told to shorten "hi"
    with pytest.raises(YiError, match=r"; shorten it, or give more --context \(the system prompt counts too\)$"):
        context.fit(rebuild, 9030, [], 8184, one_shot=True, context=8192, system=True)
