import pytest

from tests.fixtures import ScriptedEngine, plain_chat
from yi_cli.conversation import commands
from yi_cli.engines import settings as gen
from yi_cli.errors import YiError


def test_parse_commands_and_messages():
    assert commands.parse("hello") is None
    assert commands.parse("//etc/hosts is a path") is None
    cmd, arg = commands.parse("  /SET temperature 0.2 ")
    assert cmd.name == "set" and arg == "temperature 0.2"
    assert commands.parse("/quit")[0].name == "exit"


def test_unknown_and_malformed_commands_are_refused_with_a_hint():
    with pytest.raises(YiError, match=r"unknown command /histroy; did you mean /history\?"):
        commands.parse("/histroy")
    with pytest.raises(YiError, match="takes no argument"):
        commands.parse("/clear now")


def test_help_is_generated_from_the_table():
    text = commands.help_text()
    for c in commands.TABLE.values():
        assert c.usage in text and c.help in text


def test_set_validates_and_records_source():
    chat, out, err = plain_chat(ScriptedEngine())
    chat.handle("/set temperature 0.25")
    assert chat.settings.temperature == 0.25
    assert chat.options.setting_sources["temperature"] == "command"
    chat.handle("/set top_p 7")
    assert "top_p must be in (0, 1]" in err.getvalue()
    chat.handle("/set nonsense 1")
    assert "unknown setting" in err.getvalue()
    chat.handle("/set")
    assert "temperature = 0.25  (command)" in out.getvalue() and "top_k = 0  (default)" in out.getvalue()
    assert chat.failures == 2
    assert all(name in commands.TABLE["set"].help for name in gen.NAMES)  # /help names every setting


def test_clear_history_undo_system(monkeypatch):
    chat, out, err = plain_chat(
        ScriptedEngine(["first answer", "second answer"]),
    )
    chat.handle("/system be terse")
    chat.handle("q one")
    chat.handle("q two")
    chat.handle("/history")
    hist = out.getvalue()
    assert "system" in hist and "be terse" in hist and "second answer" in hist
    chat.handle("/undo")
    assert [t.content for t in chat.session.turns] == ["q one", "first answer"]
    chat.handle("/clear")
    assert chat.session.turns == [] and chat.session.system == "be terse"
    assert chat.context_used() == chat.engine.count([{"role": "system", "content": "be terse"}]) > 0  # toolbar

    refused = []

    def refuse(*a, **k):  # a template that needs a user message (Qwen3's raises): the toolbar must not fail
        refused.append(a)
        raise YiError("the chat template failed (No user query found in messages.)")

    monkeypatch.setattr(chat.engine.template, "build", refuse)  # the engines' template is shared: put back
    chat.session.system = "be brief"
    assert chat.context_used() == 0 and chat.context_used() == 0
    assert len(refused) == 1  # asked again only when the conversation changes (the toolbar redraws per key)
    chat.handle("/exit")
    assert chat.running is False
