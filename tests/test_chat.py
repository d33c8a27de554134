import json
import os
import signal
import threading

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


def test_ctrl_c_mid_reply_keeps_partial_reply_and_session():
    engine = ScriptedEngine(["one two three four five six seven eight nine ten"] + ["next answer"], delay=0.05)
    engine.started = threading.Event()
    chat, out, err = plain_chat(engine)

    def interrupt():
        engine.started.wait(5)
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C delivers to the REPL's main thread

    t = threading.Thread(target=interrupt)
    t.start()
    stats = chat.turn("count to ten")
    t.join()
    assert stats.finish_reason == "interrupted"
    last = chat.session.last_assistant()
    assert last.interrupted and 1 <= len(last.content.split()) < 10
    assert out.getvalue().startswith("one") and "[interrupted]" in out.getvalue()
    # The session goes on, roles still alternate.
    chat.handle("and now?")
    assert chat.session.turns[-1].content == "next answer"
    assert [t.role for t in chat.session.turns] == ["user", "assistant"] * 2


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
    assert "dropped the" in err.getvalue() and "oldest exchange" in err.getvalue()
    assert chat.session.system == "keep me"
    assert chat.session.turns[-2].content.startswith("message number 5")
    assert engine.count(engine.seen[-1]) <= 64 - 16
    assert engine.seen[-1][0] == {"role": "system", "content": "keep me"}


def test_overflow_refuse_policy():
    from yi_cli.conversation.chat import Options

    engine = ScriptedEngine()
    engine.context_length = 32
    chat, out, err = plain_chat(engine, settings=GenSettings(max_new_tokens=8), options=Options(overflow="refuse"))
    chat.handle("short")
    chat.handle(" ".join(["long"] * 40))
    assert "only 24 fit in the context" in err.getvalue()
    assert [t.content for t in chat.session.turns] == ["short", "echo: short"]


def test_retry_and_continue():
    engine = ScriptedEngine(["first try", "a b c d e f", "second try", "third"])
    chat, out, err = plain_chat(engine, settings=GenSettings(max_new_tokens=3))
    chat.handle("q")
    chat.handle("/retry 7")
    # The seed is for that retry only: the session keeps its own, the next turn samples unseeded again.
    assert engine.settings_seen[-1].seed == 7 and chat.settings.seed is None
    assert chat.session.turns[-1].content == "a b c" and chat.session.turns[-1].finish_reason == "length"
    chat.handle("/continue")
    # The cut reply is sent back open (continue_final), and the new text extends it in place.
    assert engine.prompts[-1].continue_final and engine.seen[-1][-1] == {"role": "assistant", "content": "a b c"}
    assert chat.session.turns[-1].content == "a b csecond try"
    assert len(chat.session.turns) == 2
    chat.handle("/continue")
    assert "was complete" in err.getvalue()
    chat.handle("/retry")
    assert engine.settings_seen[-1].seed is None


def test_a_turn_builds_its_prompt_once_and_a_failure_leaves_the_session_as_it_was():
    from tests.fixtures import WordTemplate

    engine = ScriptedEngine(["a1", "a2"])
    chat, out, err = plain_chat(engine)
    chat.handle("q1")
    before, builds = chat.session.to_dict(), WordTemplate.builds
    chat.handle("q2")
    assert WordTemplate.builds == builds + 1
    assert chat.context_used() == len(engine.prompts[-1].ids) + 1  # from the turn itself: no rebuild
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
    assert WordTemplate.builds - builds <= 4  # the full prompt, the base, the estimate, the final build
    assert len(engine.prompts[-1].ids) <= 40 - 10


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


@pytest.mark.parametrize(
    "text,done,tail",
    [
        ("para one\n\npara two", "para one\n\n", "para two"),
        ("```\ncode\n\nmore\n", "", "```\ncode\n\nmore\n"),
        ("a\n\n```\nx\n```\n\nb", "a\n\n```\nx\n```\n\n", "b"),
    ],
)
def test_split_blocks_never_cuts_inside_code(text, done, tail):
    from yi_cli.ui.render import split_blocks

    assert split_blocks(text) == (done, tail)


def test_live_renderer_prints_markdown_and_footer():
    import io

    from rich.console import Console

    from yi_cli.conversation.chat import Chat
    from yi_cli.ui.render import LiveRenderer

    buf = io.StringIO()
    console = Console(file=buf, width=80, force_terminal=True, color_system=None)
    chat = Chat(ScriptedEngine(["# Title\n\nSome **bold** text.\n\n- item"]), LiveRenderer(console, console))
    chat.handle("show me")
    text = buf.getvalue()
    assert "Title" in text and "bold" in text and "**" not in text
    assert "stop · " in text and "prompt tok" in text


def test_edit_rewrites_the_last_message_and_regenerates():
    engine = ScriptedEngine(["first reply", "second reply", "third reply"])
    chat, out, err = plain_chat(engine)
    chat.handle("/edit nothing yet")
    assert "nothing to edit yet" in err.getvalue()
    chat.handle("what is 2+2")
    chat.handle("/edit what is 3+3")
    assert [t.content for t in chat.session.turns] == ["what is 3+3", "second reply"]
    chat.editor = lambda old: old.replace("3+3", "4+4")
    chat.handle("/edit")
    assert [t.content for t in chat.session.turns] == ["what is 4+4", "third reply"]
    assert engine.seen[-1][-1]["content"] == "what is 4+4"


def test_a_crashing_command_is_one_line_and_the_chat_goes_on():
    engine = ScriptedEngine(["still here"])
    engine.describe = lambda: [1 / 0]
    chat, out, err = plain_chat(engine)
    assert chat.handle("/model") is True
    assert err.getvalue().strip() == "error: '/model' failed (ZeroDivisionError: division by zero)"
    chat.handle("hello")
    assert chat.session.turns[-1].content == "still here"
