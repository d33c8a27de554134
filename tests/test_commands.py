import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from tests.fixtures import ScriptedEngine, plain_chat
from yi_cli.conversation import commands
from yi_cli.engines import settings as gen
from yi_cli.errors import YiError


def lines(out) -> list[str]:
    """What the commands wrote, without the blank line that ends each one's output in a pipe."""
    return [ln for ln in out.getvalue().splitlines() if ln]


def test_parse_commands_and_messages():
    assert commands.parse("hello") is None
    assert commands.parse("//etc/hosts is a path") is None
    cmd, arg = commands.parse("  /SET temperature 0.2 ")
    assert cmd.name == "set" and arg == "temperature 0.2"
    assert commands.parse("/quit")[0].name == "exit"


def test_a_command_typed_with_a_full_width_slash_runs():
    """`／history`, as a Chinese or Japanese input method types it, went to the model as a message. A full-width
    solidus (letters, an ideographic space) before a command's name is that command; before anything else, the line
    stays a message, as typed."""
    assert commands.parse("／history")[0].name == "history"
    assert commands.parse("／ｈｅｌｐ")[0].name == "help"
    cmd, arg = commands.parse("／system\u3000你是\u3000助手")
    assert cmd.name == "system" and arg == "你是\u3000助手"  # the argument as typed
    assert commands.parse("／不是命令") is None and commands.parse("／ 空格") is None
    chat, out, _ = plain_chat(ScriptedEngine(["答"]))
    chat.handle("你好")
    chat.handle("／history")
    assert chat.session.exchanges == 1 and "你好" in out.getvalue()


def test_a_new_line_separates_a_command_and_its_words():
    """`/system`, Esc-Enter, `Be terse.` (or a paste of two lines) said "unknown command /system\\nbe; did you mean
    /system?". A new line parts a command's name from its words as a space does; its words keep their lines."""
    chat, out, err = plain_chat(ScriptedEngine(["ok"]))
    chat.handle("/system\nBe terse.\nAnswer in French.")
    assert chat.session.system == "Be terse.\nAnswer in French.", err.getvalue()
    chat.handle("/history\r\nwhat")
    assert err.getvalue() == "error: usage: /history [all] (all: with the attached files in full), not /history what\n"
    err.seek(0), err.truncate(0)
    chat.handle("/set\ntemperature 0.5")
    assert chat.settings.temperature == 0.5 and err.getvalue() == "", err.getvalue()


def test_a_file_then_a_new_line_then_a_question_attaches_the_file_and_sends_the_question(tmp_path):
    """A paste of `/file notes.txt` and a question on the next line took both lines as the path: "notes.txt
    summarize this: cannot read", the question sent nowhere (a review). The first line is the path, the lines after
    it the message that goes with the file; a name with a new line in it, pasted whole, is still that file's, and a
    command on the next line is not sent as a message."""
    notes = tmp_path / "notes.txt"
    notes.write_text("the meeting is at noon\n")
    chat, out, err = plain_chat(ScriptedEngine(["noon", "ok"]))
    chat.handle(f"/file {notes}\nwhen is the meeting?\nanswer briefly")
    assert err.getvalue() == "" and chat.session.exchanges == 1 and not chat.attachments
    asked = chat.session.turns[0].content
    assert "the meeting is at noon" in asked and asked.endswith("when is the meeting?\nanswer briefly")
    assert chat.session.turns[0].files == 1 and chat.session.turns[1].content == "noon"
    odd = tmp_path / "two\nlines.txt"
    odd.write_text("odd\n")
    chat.handle(f"/file {odd}")
    assert err.getvalue() == "" and chat.session.exchanges == 1 and [a.text for a in chat.attachments] == ["odd\n"]
    chat.handle(f"/file {notes}\n/file {notes}")
    assert err.getvalue().startswith("error: ") and chat.session.exchanges == 1  # not a message
    # `//` starts the message with `/`, as it does a line; a quoted name holding a new line, then a message (a review)
    chat, out, err = plain_chat(ScriptedEngine(["one", "two"]))
    chat.handle(f"/file {notes}\n//etc is a folder?")
    chat.handle(f"/file '{odd}'\nwhat is inside?")
    assert err.getvalue() == "" and chat.session.exchanges == 2, err.getvalue()
    asked = [t.content for t in chat.session.turns if t.role == "user"]
    assert asked[0].endswith("\n/etc is a folder?") and "the meeting is at noon" in asked[0]
    assert asked[1].endswith("\nwhat is inside?") and "odd\n" in asked[1]


def test_a_file_refused_with_a_question_after_it_says_the_question_was_not_sent(tmp_path):
    """`/file data.bin` and a question on the next line, the file refused (binary): the error named the file, and the
    question was dropped without a word (only ↑ could find it). It says the question was not sent."""
    binary = tmp_path / "data.bin"
    binary.write_bytes(b"a\x00b")
    chat, out, err = plain_chat(ScriptedEngine(["ok"]))
    chat.handle(f"/file {binary}\nsummarize this please")
    said = err.getvalue()
    assert said.startswith(f"error: {binary}: binary file") and said.endswith(
        "; the message after it was not sent (↑ recalls it)\n"
    ), said
    assert chat.session.exchanges == 0 and not chat.attachments


def test_load_last_names_the_file_it_loaded(tmp_path, monkeypatch):
    """`/load last` said "loaded 1 exchange from last": which session it was, not said (the newest interactive one
    may be the chat's own). It names the file, as --resume's line does."""
    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path / "home"))
    first = store.Autosave("interactive")
    chat, _, _ = plain_chat(ScriptedEngine(["a0"]), on_turn=first)
    chat.handle("q0")
    first.close()
    (saved,) = store.sessions_dir().glob("*.json")
    again, out, err = plain_chat(ScriptedEngine([]), on_turn=store.Autosave("interactive"))
    again.handle("/load last")
    assert err.getvalue() == "" and f"loaded 1 exchange from {saved.name} (last)" in out.getvalue(), out.getvalue()


def test_save_to_a_dash_is_refused_not_a_file_named_dash(tmp_path, monkeypatch):
    """`/save -` wrote the session into a file named `-` in the working folder, where `-` means stdin or stdout
    everywhere else (-f -, -p -). Refused with how to name such a file; `./-` still makes it."""
    monkeypatch.chdir(tmp_path)
    chat, out, err = plain_chat(ScriptedEngine(["a"]))
    chat.handle("hi")
    for typed in ("/save -", "/save! -"):
        chat.handle(typed)
    assert err.getvalue() == (
        "error: /save -: give a file name (./- names a file called -)\n"
        "error: /save! -: give a file name (./- names a file called -)\n"
    ), err.getvalue()
    assert not (tmp_path / "-").exists()
    chat.handle("/save ./-")
    assert (tmp_path / "-").is_file() and "saved to" in out.getvalue()


def test_an_ideographic_space_separates_a_command_and_its_words():
    """An input method in full-width mode types each space as U+3000 (the ideographic space). `／set　temperature　0.5`
    said 'usage: /set NAME VALUE', `/history　all` 'unknown command /history\\u3000all', `／history　ａｌｌ` was not
    `all`: the space is a space there, and a command's keywords (a setting's name and value, `all`, /help's command)
    are read in their half-width form. Free text (/system's) stays as typed."""
    chat, out, _ = plain_chat(ScriptedEngine(["答"]))
    chat.handle("／set\u3000temperature\u30000.5")
    assert chat.settings.temperature == 0.5
    chat.handle("/set\u3000ｔｏｐ＿ｋ\u3000４０")
    assert chat.settings.top_k == 40
    chat.handle("/set temperature\u3000０．２５")
    assert chat.settings.temperature == 0.25
    chat.handle("/set\ttop_p\t0.75")  # a tab between the setting and its value too (it was the usage error)
    assert chat.settings.top_p == 0.75
    chat.handle("你好")
    for typed in ["/history\u3000all", "／history\u3000ａｌｌ", "/history\u3000\u3000ALL\u3000"]:
        out.seek(0), out.truncate(0)
        chat.handle(typed)
        assert "你好" in out.getvalue(), typed
    out.seek(0), out.truncate(0)
    chat.handle("/help\u3000ｓｅｔ")
    assert out.getvalue().startswith("/set")
    cmd, arg = commands.parse("/system\u3000你是\u3000助手")
    assert cmd.name == "system" and arg == "你是\u3000助手"
    cmd, arg = commands.parse("/file\u3000笔记.md")
    assert cmd.name == "file" and arg == "笔记.md"
    with pytest.raises(YiError, match="takes no argument"):
        commands.parse("/clear\u3000now")
    cmd, arg = commands.parse("/system\nline two")  # a line break too (test_a_new_line_separates_...)
    assert cmd.name == "system" and arg == "line two"


def test_unknown_and_malformed_commands_are_refused_with_a_hint():
    with pytest.raises(YiError, match=r"unknown command /histroy; did you mean /history\?"):
        commands.parse("/histroy")
    # a command's start alone, as an abbreviation: it was "did you mean /h?" (help) for /hi, /set for /det, none for /cl
    for typed, meant in [("/hi", "/history"), ("/det", "/detach"), ("/cl", "/clear"), ("/con", "/continue")]:
        with pytest.raises(YiError) as e:
            commands.parse(typed)
        assert str(e.value) == f"unknown command {typed}; did you mean {meant}?"
    with pytest.raises(YiError, match=r"unknown command /re; did you mean /retry or /reset\?"):
        commands.parse("/re")
    # other tools' words for our commands: by spelling /resume was nearest /reset (which forgets the conversation),
    # /attach /detach (which drops the files waiting)
    for typed, meant in [("/resume", "/load"), ("/regen", "/retry"), ("/regenerate", "/retry"), ("/attach", "/file")]:
        with pytest.raises(YiError) as e:
            commands.parse(typed)
        assert str(e.value) == f"unknown command {typed}; did you mean {meant}?"
    with pytest.raises(YiError) as e:
        commands.parse("/settings")
    assert str(e.value) == "unknown command /settings; did you mean /set?"
    with pytest.raises(YiError, match="takes no argument"):
        commands.parse("/clear now")
    # an alias is told of as typed: `/reset x` said "/clear takes no argument (usage: /clear)"
    for typed, said in [
        ("/reset x", "/reset takes no argument (usage: /reset)"),
        ("/quit now", "/quit takes no argument (usage: /quit)"),
        ("/q!", "/q has no ! form (usage: /q)"),
    ]:
        with pytest.raises(YiError) as e:
            commands.parse(typed)
        assert str(e.value) == said
    # `/model acme/tiny-chat`: a newcomer switching models is told how (it was the usage alone; a walkthrough)
    with pytest.raises(YiError) as e:
        commands.parse("/model acme/tiny-chat")
    assert str(e.value) == (
        "/model takes no argument (usage: /model; a chat keeps its model: another is yi-chat -m NAME)"
    )


def test_help_is_generated_from_the_table():
    text = shown_text(commands.help_text(), 400)
    for c in commands.TABLE.values():
        assert c.usage in text and c.help in text


def test_help_wraps_each_description_in_its_own_column():
    """A description longer than the terminal is wide wrapped back to column 0 (a run-through at 100 columns)."""
    lines = shown_text(commands.help_text(), 60).splitlines()
    rows = [line for line in lines if line.startswith("  ")]  # the table's (the title and the keys wrap as text)
    assert len(rows) > len(commands.TABLE)  # some wrapped
    column = 2 + max(len(c.usage) for c in commands.TABLE.values()) + 2  # where the descriptions start
    for line in rows:
        assert len(line.rstrip()) <= 60
        assert line.startswith("  /") or line[:column].strip() == "", line  # a command, or its description's column


@pytest.mark.parametrize("width", [20, 30, 52])
def test_help_in_a_narrow_terminal_puts_each_description_under_its_command(width):
    """In 20 columns /help showed the commands alone, cut, and no description (their column had no room); in 30
    the descriptions broke inside their words. Where a description would get fewer than 30 columns beside the
    commands, each goes under its command, indented, wrapped at spaces."""
    lines = shown_text(commands.help_text(), width).splitlines()
    assert all(len(line.rstrip()) <= width for line in lines)
    text = " ".join(line.strip() for line in lines)
    words = set(text.split())
    for c in commands.TABLE.values():
        assert "".join(c.help.split()) in "".join(text.split()), c.help  # all of it
        # wrapped at its spaces: a word breaks only where it is wider than the indented column
        assert all(w in words for w in c.help.split() if len(w) <= width - 4), c.help
        at = next(i for i, line in enumerate(lines) if line.startswith("  /" + c.name))
        assert lines[at + 1].startswith("    ") or lines[at + 2].startswith("    ")  # under it (the usage may wrap)


def shown_text(renderable, width: int) -> str:
    out = Console(file=io.StringIO(), width=width, color_system=None)
    out.print(renderable)
    return out.file.getvalue()


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


def test_set_names_ignore_case_and_typos_get_a_suggestion():
    """/HELP worked but /set Temperature 0.5 was an unknown setting with no hint."""
    chat, out, err = plain_chat(ScriptedEngine())
    chat.handle("/set Temperature 0.5")
    assert chat.settings.temperature == 0.5 and "temperature = 0.5" in out.getvalue()
    assert chat.options.setting_sources["temperature"] == "command"
    chat.handle("/set temprature 0.3")
    assert "unknown setting 'temprature'; did you mean temperature?" in err.getvalue()
    chat.handle("/set colour 1")
    assert "unknown setting 'colour'; known: temperature, top_p" in err.getvalue()
    assert chat.settings.temperature == 0.5 and chat.failures == 2


def test_set_refuses_integers_past_their_bounds():
    """A top_k of 10**39 was taken and then failed every reply (the sampler's float32 made it infinity)."""
    chat, out, err = plain_chat(ScriptedEngine())
    chat.handle("/set top_k " + "9" * 39)
    assert "top_k must be >= 0 (0 = off) and at most 2147483647 (2**31 - 1; any value >= the vocabulary" in (
        err.getvalue()
    )
    assert chat.settings.top_k == 0 and chat.failures == 1
    chat.handle(f"/set top_k {gen.TOP_K_MAX}")  # the bound itself: off, as any value from the vocabulary up
    assert chat.settings.top_k == 2**31 - 1 and chat.failures == 1
    chat.handle("/set max_new_tokens " + "9" * 39)
    chat.handle("/set seed " + "9" * 39)
    assert "max_new_tokens must be between 1 and 1000000" in err.getvalue() and "seed must be an integer" in (
        err.getvalue()
    )
    assert chat.failures == 3
    with pytest.raises(YiError, match="temperature is out of range"):  # a TOML or JSON integer past any float
        gen.parse("temperature", 10**400)


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


def test_a_system_prompt_too_long_to_show_is_cut_as_history_cuts_a_turn():
    """/system wrote a resumed session's 50 MB system prompt whole (10 s and more in a terminal); /history cut a
    turn at SHOWN characters. /system and /prompt cut theirs there too, and say how much is left out."""
    from yi_cli.conversation.commands import SHOWN

    chat, out, err = plain_chat(ScriptedEngine(["r"]))
    chat.session.system = "x" * (SHOWN + 1234)
    chat.handle("/system")
    shown = out.getvalue()
    assert shown.count("x") == SHOWN and "… [1234 more characters not shown]" in shown, shown[-200:]


def test_system_shows_the_templates_default_when_none_is_set(demo_dir):
    """The demo's template adds "You are a helpful AI assistant named SmolLM..." when no system prompt is given:
    /system said "(no system prompt)" (a run-through). It shows that default, says where it comes from and how to
    replace it; /system none says the default applies again."""
    from yi_cli.checkpoint import loader
    from yi_cli.engines.template import Template

    engine = ScriptedEngine()
    engine.template = Template(loader.load_tokenizer(demo_dir))  # the demo's real tokenizer and template
    chat, out, err = plain_chat(engine)
    chat.handle("/system")
    default = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert lines(out) == [
        f"system prompt: {default}",
        "(none set: this is the chat template's default; /system TEXT replaces it)",
    ]
    chat.handle("/system be terse")
    chat.handle("/system")
    chat.handle("/system none")
    assert lines(out)[2:] == [
        "system prompt set",
        "system prompt: be terse",
        "system prompt cleared; the chat template's default applies (/system shows it)",
    ]
    assert chat.session.system is None and err.getvalue() == ""

    plain, out, err = plain_chat(ScriptedEngine())  # a template that adds none
    plain.handle("/system")
    plain.handle("/system none")
    assert out.getvalue() == "(no system prompt)\n\nsystem prompt cleared\n\n"  # a blank line after each


def test_prompt_shows_the_conversation_so_far(demo_dir):
    """/prompt after a reply ended with "<|im_start|>assistant\n", the opening of a reply that no request sends
    (the next one has your message first). It shows the conversation so far, each turn closed, as /help says: the
    text the next request starts with."""
    from yi_cli.checkpoint import loader
    from yi_cli.engines.template import Template

    engine = ScriptedEngine(["Paris.", "Two million."])
    engine.template = tpl = Template(loader.load_tokenizer(demo_dir))
    chat, out, err = plain_chat(engine)
    chat.handle("/prompt")  # the demo's template puts its own system prompt first
    want = "(nothing yet: the template's default system prompt (/system), then your first message)\n"
    assert out.getvalue() == want + "\n"
    chat.handle("Capital of France?")
    mark = len(out.getvalue())
    chat.handle("/prompt")
    text = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>\n"
    )
    assert out.getvalue()[mark:] == f"{text}\n({len(tpl.tokenizer(text)['input_ids'])} tokens)\n\n"
    chat.handle("How many people?")
    assert engine.prompts[-1].text.startswith(text)  # the next request: this, then the new message
    assert "conversation so far" in commands.TABLE["prompt"].help and err.getvalue() == ""


def test_prompt_shows_hidden_tag_characters_as_history_does(demo_dir):
    """/history showed a loaded turn's Unicode tag characters (which no terminal draws: a hidden instruction) as
    escapes, while /prompt, which shows what the model reads, drew them as nothing. Both show escapes now."""
    from yi_cli.checkpoint import loader
    from yi_cli.engines.template import Template

    engine = ScriptedEngine()
    engine.template = Template(loader.load_tokenizer(demo_dir))
    chat, out, err = plain_chat(engine)
    chat.session.add_exchange("question" + "".join(chr(0xE0000 + ord(c)) for c in "PWNED"), 1, "answer", 1)
    chat.handle("/prompt")
    assert "question\\U000e0050\\U000e0057\\U000e004e\\U000e0045\\U000e0044<|im_end|>" in out.getvalue(), out.getvalue()
    assert err.getvalue() == ""
    chat.session.system = "Be brief." + "".join(chr(0xE0000 + ord(c)) for c in "HI") + " one\u2028two"
    chat.handle("/system")  # (it drew the tags as nothing, the separator raw)
    assert "system prompt: Be brief.\\U000e0048\\U000e0049 one\\u2028two" in out.getvalue(), out.getvalue()
    chat.handle("/system\u3000ｎｏｎｅ")  # full-width mode's none clears it, as /set's words are read (it was the text)
    assert chat.session.system is None and err.getvalue() == ""


def test_the_toolbars_context_used_is_prompts_count_in_every_state(demo_dir, tmp_path):
    """The toolbar's ctx and /prompt count the same text: the conversation so far, each turn closed, through the
    demo's real tokenizer and template. After a reply the toolbar had the reply's prompt plus its generated tokens,
    short of the turn's closing "<|im_end|>\\n" (86 against /prompt's 88); before one, the conversation with the
    opening of a reply. After a reply it is counted from the reply's own prompt, without a rebuild."""
    import json

    from yi_cli.checkpoint import loader
    from yi_cli.engines.template import Template

    # replies whose edges a tokenizer could join to the opening's "\n" or the closing: a blank line first, spaces
    replies = ["Paris.", "\n\nTwo  million \n", "About two  million.", " Two million.", "Over two million", " million"]
    replies.append("\nIt is  old. ")
    engine = ScriptedEngine(replies)
    engine.template = tpl = Template(loader.load_tokenizer(demo_dir))
    chat, out, err = plain_chat(engine)
    built, counted = [], []
    build, count = tpl.build, tpl.count
    tpl.build = lambda msgs, *a, **k: built.append(k.get("opening", True)) or build(msgs, *a, **k)
    tpl.count = lambda text: counted.append(text) or count(text)

    def same(rebuilt: bool = True) -> int:
        """The toolbar's count, as it asks at the next prompt, and /prompt's; whether it counted in full."""
        del built[:]
        used = chat.context_used()
        assert (False in built) == rebuilt, built
        mark = len(out.getvalue())
        chat.handle("/prompt")
        shown = re.search(r"\((\d+) tokens\)\n$", out.getvalue()[mark:])
        assert used == (int(shown.group(1)) if shown else 0), out.getvalue()[mark:]
        return used

    assert same(rebuilt=False) == 0  # nothing yet
    chat.handle("/system be terse")
    assert same() > 0  # a system prompt alone
    chat.handle("Capital of France?")
    same(rebuilt=False)
    chat.handle("How many people?")
    same(rebuilt=False)
    chat.handle("/retry")
    same(rebuilt=False)
    chat.handle("/edit How many people live there?")
    same(rebuilt=False)
    chat.handle("/set max_new_tokens 2")
    chat.handle("How old is it?")  # cut by the token limit, then continued
    assert chat.session.turns[-1].finish_reason == "length"
    same(rebuilt=False)
    chat.handle("/set max_new_tokens 100")
    chat.handle("/continue")
    assert chat.session.turns[-1].content == "Over two million"
    same(rebuilt=False)
    chat.handle("/undo")
    same(rebuilt=False)  # a state the toolbar has shown before
    chat.handle("/system be brief")
    same()
    chat.handle("Any river?")  # the next request's prompt starts with what /prompt showed
    text = engine.prompts[-1].text
    assert text.endswith("<|im_start|>user\nAny river?<|im_end|>\n<|im_start|>assistant\n")
    same(rebuilt=False)

    saved = tmp_path / "saved.json"  # a session loaded (or resumed) is counted in full once
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " Hello!\n\n"}]
    saved.write_text(json.dumps({"format": "yi-chat-session", "version": 1, "system": None, "turns": turns}))
    chat.handle(f"/load {saved}")
    same()
    chat.handle("/clear")
    assert same(rebuilt=False) == 0
    assert err.getvalue() == "the reply stopped at the token limit (--max-new-tokens)\n"  # How old is it?
    assert counted.count("<|im_start|>assistant\n") == 1  # a reply's opening, the same every reply: counted once


def test_file_refuses_a_file_too_long_for_the_context_before_tokenizing_it(tmp_path):
    """/file checks the length first, as -f does (it tokenized 3.3M tokens, ~10 s, before refusing)."""
    from tests.fixtures import BoundedTemplate, WordTemplate

    engine = ScriptedEngine()
    engine.context_length, engine.template = 100, BoundedTemplate()
    chat, out, err = plain_chat(engine)
    big = tmp_path / "big.txt"
    big.write_text("word " * 1000)
    builds = WordTemplate.builds
    chat.handle(f"/file {big}")
    assert re.search(r"too large for the model's context \(5\d\d\d characters", err.getvalue()), err.getvalue()
    assert WordTemplate.builds == builds  # refused by its length: no prompt was built
    assert chat.attachments == []

    empty, one = tmp_path / "empty.txt", tmp_path / "one.txt"
    empty.write_text("")
    one.write_text("a line\n")
    chat.handle(f"/file {empty}")
    chat.handle(f"/file {one}")
    chat.handle(f"/file {one}")
    shown = " ".join(out.getvalue().split())  # unwrapped
    assert "empty.txt (empty); it goes" in shown
    assert "one.txt (1 line); it goes" in shown
    assert "one.txt (1 line) (attached twice now); it goes" in shown
    chat.handle(f"/file {one}")  # a third time said "attached twice now" again
    shown = " ".join(out.getvalue().split())
    assert shown.endswith("one.txt (1 line) (attached 3 times now); it goes with your next message")


def test_files_attached_one_by_one_past_the_context_are_refused_by_name_and_by_their_total_length(
    tmp_path, monkeypatch
):
    """Hundreds of /file lines: each refusal named every file waiting (1500 lines wrote 6.3 MB to stderr) and
    tokenized them all, however far past the context their total length already was."""
    from tests.fixtures import BoundedTemplate as Bounded
    from tests.fixtures import WordTemplate

    engine = ScriptedEngine()
    engine.context_length, engine.template = 100, Bounded()
    chat, out, err = plain_chat(engine)
    monkeypatch.chdir(tmp_path)  # short names: the blocks' lengths are their text's
    words, sparse = Path("words.txt"), Path("sparse.txt")
    words.write_text("word " * 40)  # 40 tokens: one fits the 75 kept for a prompt, two do not
    sparse.write_text("y" * 300)  # 1 token, 300 characters: three fit, and a fourth is surely past the context
    chat.handle(f"/file {words}")
    chat.handle(f"/file {words}")
    assert len(chat.attachments) == 1
    assert err.getvalue().splitlines() == [
        f"error: {words} (with the 1 file attached before it): too large for the model's context (90 tokens with the "
        "prompt; 75 fit with room for the reply)"
    ]
    chat.handle("/detach")
    for _ in range(3):
        chat.handle(f"/file {sparse}")
    assert len(chat.attachments) == 3
    builds = WordTemplate.builds
    chat.handle(f"/file {sparse}")
    assert WordTemplate.builds == builds  # refused by the length alone, nothing tokenized
    assert len(chat.attachments) == 3
    assert err.getvalue().splitlines()[-1] == (
        f"error: {sparse} (with the 3 files attached before it): too large for the model's context (1286 characters; "
        "the context holds 100 tokens)"
    )


def test_file_of_a_pipe_nothing_writes_into_says_what_it_waits_for(tmp_path):
    """/file of a FIFO nothing writes into blocked in its open with nothing on the screen, keys held: the chat looked
    hung until Ctrl-C. Past a second a line says what it waits for; what is written then is attached."""
    import os
    import threading
    import time

    chat, out, err = plain_chat(ScriptedEngine(["a reply"]))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    handled = threading.Thread(target=chat.handle, args=(f"/file {fifo}",))
    handled.start()
    try:
        deadline = time.monotonic() + 60
        while "waiting for what writes into it (Ctrl-C gives it up)" not in err.getvalue():
            assert time.monotonic() < deadline, f"no line while /file waits on the pipe: {err.getvalue()!r}"
            time.sleep(0.01)  # the poll of a condition wait
        assert f"{fifo}: a pipe, read to its end" in err.getvalue()
    finally:
        with open(fifo, "w") as w:  # the writer comes: the open and the read end
            w.write("fed through the pipe\n")
        handled.join(60)
    assert not handled.is_alive()
    assert [a.text for a in chat.attachments] == ["fed through the pipe\n"]
    assert f"attached {fifo} (1 line)" in " ".join(out.getvalue().split())


def test_a_message_that_fails_keeps_its_attachments_waiting(tmp_path):
    """A turn refused (too long for the context) or failed (an engine error) took the /file attachments with it: the
    next message, typed again, went out without them and nothing said so (a run-through)."""
    engine = ScriptedEngine(["a reply"])
    engine.context_length = 64
    chat, out, err = plain_chat(engine)
    (tmp_path / "notes.txt").write_text("the secret is 42\n")
    chat.handle(f"/file {tmp_path / 'notes.txt'}")
    chat.handle("word " * 80)  # refused: does not fit the context
    assert "fit in the context" in err.getvalue()
    assert f"still attached for the next message: {tmp_path / 'notes.txt'}" in err.getvalue()
    assert [a.name for a in chat.attachments] == [str(tmp_path / "notes.txt")] and chat.session.turns == []
    engine.fail_with = RuntimeError("the server went away")  # failed with no text: not recorded either
    chat.handle("what is the secret?")
    assert "generation failed" in err.getvalue() or "the server went away" in err.getvalue()
    assert len(chat.attachments) == 1 and chat.session.turns == []
    engine.fail_with = None
    chat.handle("what is the secret?")
    assert chat.session.turns[0].content.endswith("the secret is 42\n```\n\nwhat is the secret?")
    assert chat.attachments == []


def test_detach_drops_the_attachments_and_file_takes_a_quoted_path(tmp_path):
    """/detach: the attachments waiting go; /file takes a path as a terminal's drag and drop types it (quoted,
    or its spaces escaped), which it refused as not found."""
    chat, out, err = plain_chat(ScriptedEngine(["r"]))
    spaced = tmp_path / "my notes.txt"
    spaced.write_text("hello\n")
    # quoted in part, as a shell takes it too (`{dir}/'my notes.txt'` was taken as typed: "cannot read")
    partly = (f"{tmp_path}/'my notes.txt'", f'{tmp_path}/my" "notes.txt')
    for typed in (f"'{spaced}'", f'"{spaced}"', str(spaced).replace(" ", "\\ "), *partly):
        chat.handle(f"/file {typed}")
    assert err.getvalue() == "" and [a.name for a in chat.attachments] == [str(spaced)] * 5
    chat.handle("/detach")
    assert f"detached {spaced}, {spaced}, {spaced}, {spaced}, {spaced}" in " ".join(out.getvalue().split())
    chat.handle("/detach")
    assert out.getvalue().rstrip().endswith("(nothing attached)") and chat.attachments == []
    chat.handle("hi")
    assert chat.session.turns[0].content == "hi"


def test_a_name_with_quotes_inside_is_that_name_and_a_folder_quoted_in_part_is_the_shells(tmp_path, monkeypatch):
    """Quotes read as the shell's only where the name as typed names nothing: `/save rock'n'roll.json` wrote
    rocknroll.json (a review of the change that took `dir/'a b.txt'` as the shell does); a new file in a folder
    quoted in part goes in that folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "My Notes").mkdir()
    chat, out, err = plain_chat(ScriptedEngine(["r"]))
    chat.handle("hi")
    chat.handle("/save rock'n'roll.json")
    chat.handle("/save ./'My Notes'/s.json")
    assert err.getvalue() == ""
    assert (tmp_path / "rock'n'roll.json").is_file() and (tmp_path / "My Notes" / "s.json").is_file()
    chat.handle("/load rock'n'roll.json")
    assert err.getvalue() == "" and "loaded 1 exchange from rock'n'roll.json" in out.getvalue()


def test_a_path_ending_in_an_escaped_space_keeps_it(tmp_path, monkeypatch):
    """A dropped `report.txt\\ ` (a name ending in a space, escaped as a file manager types it, and the space a drop
    adds after it) lost its space with the line's: "report.txt\\: cannot read", and `/save out\\ ` wrote `out\\`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "report.txt ").write_text("x\n")
    chat, out, err = plain_chat(ScriptedEngine(["r"]))
    chat.handle("/file report.txt\\  ")
    assert err.getvalue() == "" and [a.name for a in chat.attachments] == ["report.txt "]
    chat.handle("hi")
    chat.handle("/save out\\ ")
    chat.handle("/save plain.json  ")  # white space after a name is no part of it, as before
    assert err.getvalue() == "" and (tmp_path / "out ").is_file() and (tmp_path / "plain.json").is_file()
    assert not (tmp_path / "out\\").exists()


def test_paths_are_taken_as_the_shell_takes_them_a_folder_named_tilde_and_a_trailing_slash(tmp_path, monkeypatch):
    """pathlib made `./~/q.txt` the home folder's `~/q.txt` (a quoted `'~/q.txt'` too, which a shell leaves alone),
    so /file, /load and /save went to the home folder; `notes.txt/` read the file, where `cat notes.txt/` says "Not
    a directory" (a REPL hunt)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "q.txt").write_text("the home folder's\n")
    (tmp_path / "~").mkdir()
    (tmp_path / "~" / "q.txt").write_text("the folder named ~\n")
    (tmp_path / "notes.txt").write_text("notes\n")
    chat, out, err = plain_chat(ScriptedEngine(["r", "r"]))
    for typed in ("./~/q.txt", "'~/q.txt'", '"~/q.txt"', "\\~/q.txt", "~/q.txt"):
        chat.handle(f"/file {typed}")
    assert err.getvalue() == ""
    assert [a.text for a in chat.attachments] == ["the folder named ~\n"] * 4 + ["the home folder's\n"]
    chat.handle("/detach")
    chat.handle("hi")
    chat.handle("/save ./~/s.json")
    assert (tmp_path / "~" / "s.json").is_file() and not (tmp_path / "home" / "s.json").exists()
    assert f"saved to {tmp_path}/~/s.json" in out.getvalue()  # it said "saved to ~/s.json", the home's (a review)
    chat.handle("/load ./~/s.json")
    assert err.getvalue() == "" and out.getvalue().rstrip().endswith("loaded 1 exchange from ./~/s.json")
    for typed in ("/file notes.txt/", "/file notes.txt/.", "/load ./~/s.json/"):
        chat.handle(typed)
    assert err.getvalue().splitlines() == [
        f"error: {name}: not a directory (a path ending in / names a folder)"
        for name in ("notes.txt/", "notes.txt/.", "./~/s.json/")
    ]
    assert chat.attachments == [] and [t.content for t in chat.session.turns] == ["hi", "r"]


def test_a_file_name_holding_a_line_break_is_said_on_one_line(tmp_path, monkeypatch):
    """/file, /file alone and /detach printed the name raw, across two lines, where errors and /history escape it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "new\nline.txt").write_text("x\n")
    chat, out, err = plain_chat(ScriptedEngine(["r"]))
    chat.handle("/file 'new\nline.txt'")
    chat.handle("/file")
    chat.handle("/detach")
    assert err.getvalue() == ""
    assert [ln for ln in out.getvalue().splitlines() if ln] == [
        "attached new\\nline.txt (1 line); it goes with your next message",
        "attached for the next message: new\\nline.txt",
        "detached new\\nline.txt",
    ]


def test_file_with_several_paths_says_it_takes_one(tmp_path, monkeypatch):
    """`/file a.txt b.txt` said "a.txt b.txt: cannot read (No such file or directory)", no hint that /file takes
    one path (a run-through)."""
    monkeypatch.chdir(tmp_path)
    chat, out, err = plain_chat(ScriptedEngine(["r"]))
    for name in ("a.txt", "b.txt", "c c.txt"):
        (tmp_path / name).write_text(name + "\n")
    chat.handle("/file a.txt 'c c.txt'")
    assert err.getvalue() == (
        "error: /file takes one path, and a.txt 'c c.txt' names 2 files: attach each with its own /file (a path "
        "with spaces goes quoted: /file 'my notes.txt')\n"
    )
    assert chat.attachments == [] and chat.failures == 1
    chat.handle("/file a.txt missing.txt")  # one word a file: the text as typed is what is missing
    assert err.getvalue().endswith("error: a.txt missing.txt: cannot read (No such file or directory)\n")
    (tmp_path / "a.txt b.txt").write_text("both\n")  # a name with a space, typed unquoted, is that one file
    chat.handle("/file a.txt b.txt")
    assert [x.text for x in chat.attachments] == ["both\n"] and chat.failures == 2


def test_save_and_load_take_a_quoted_path_as_file_does(tmp_path):
    """/save and /load took a dragged path ('my dir/s.json') with its quotes: "the folder 'my dir does not
    exist", "no such session file" (run-through 4)."""
    chat, out, err = plain_chat(ScriptedEngine(["r"]))
    chat.handle("hi")
    (tmp_path / "my dir").mkdir()
    target = tmp_path / "my dir" / "s.json"
    chat.handle(f"/save '{target}'")
    assert err.getvalue() == "" and target.is_file()
    chat.handle("/clear")
    for typed in (f'"{target}"', str(target).replace(" ", "\\ ")):
        chat.handle(f"/load {typed}")
    assert err.getvalue() == "" and [t.content for t in chat.session.turns] == ["hi", "r"]
    assert out.getvalue().rstrip().endswith(f"loaded 1 exchange from {target}")


def test_an_empty_quoted_path_is_refused_by_file_save_and_load(tmp_path, monkeypatch):
    """`/file ''` said ": is a directory", `/load ""` read the current folder, and `/save ''` wrote a new file in the
    store as if no path was given (a review of the quoted paths)."""
    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    chat, out, err = plain_chat(ScriptedEngine(["r"]))
    chat.handle("hi")
    for typed in ("/file ''", '/file ""', "/save ''", "/save! ''", '/load ""'):
        chat.handle(typed)
    quotes = ["''", '""', "''", "''", '""']
    assert err.getvalue().splitlines() == [f"error: {q}: an empty path; give a file's path" for q in quotes]
    assert chat.failures == 5 and chat.attachments == [] and "saved" not in out.getvalue()
    assert not (tmp_path / "home").exists() or not list((tmp_path / "home").rglob("*.json"))
    assert [t.content for t in chat.session.turns] == ["hi", "r"]


def test_help_knows_the_aliases_and_names_them():
    """`/help quit` said "no command /quit" while /quit works (a run-through); `/help set extra` looked up
    "set extra"; `/help bogus` had no did-you-mean where `/bogus` has."""
    chat, out, err = plain_chat(ScriptedEngine())
    for name in ("quit", "q", "/exit", "h", "?", "reset", "set extra"):
        chat.handle(f"/help {name}")
    shown = out.getvalue()
    assert "/exit  (also /quit, /q)" in shown and "/help [COMMAND]  (also /h, /?)" in shown, shown
    assert "/clear  (also /reset)" in shown and "/set" in shown and err.getvalue() == ""
    chat.handle("/help histroy")
    assert err.getvalue().strip() == "error: no command /histroy; did you mean /history?"
    err.seek(0), err.truncate(0)
    chat.handle("/help !")  # it said "no command /"
    chat.handle("/help /!")
    said = ["error: no command /!; /help lists the commands"] * 2
    assert err.getvalue().splitlines() == said, err.getvalue()


def test_system_says_when_plain_completion_does_not_send_it(demo_dir):
    """--raw (and a base model) sends no system prompt, while /system said "set" (a run-through); /system alone
    then showed it as any system prompt (`yi-chat --raw --system X`, a session resumed into a base model)."""
    from yi_cli.checkpoint import loader
    from yi_cli.engines.template import Template

    engine = ScriptedEngine(["r"])
    engine.template = Template(loader.load_tokenizer(demo_dir), raw=True)
    chat, out, err = plain_chat(engine)
    chat.handle("/system be brief")
    assert "system prompt set, but not sent: this model runs as plain completion" in out.getvalue()
    chat.handle("/system")
    assert (
        out.getvalue()
        .rstrip()
        .endswith("system prompt: be brief\n(not sent: this model runs as plain completion: --raw, or a base model)")
    )
    engine.template = Template(loader.load_tokenizer(demo_dir))
    chat.handle("/system be brief")
    assert out.getvalue().rstrip().endswith("system prompt set")
    chat.handle("/system")
    assert out.getvalue().rstrip().endswith("system prompt set\n\nsystem prompt: be brief")


def test_continue_and_retry_say_what_is_wrong():
    chat, out, err = plain_chat(ScriptedEngine(["a1", "a2"]))
    chat.handle("/continue")
    assert "nothing to continue yet" in err.getvalue()  # it said "the last one was complete"
    chat.handle("q1")
    chat.handle("/retry 99999999999999999999999")
    assert "seed must be an integer from 0 to 2**63 - 1, got 99999999999999999999999" in err.getvalue()
    assert [t.content for t in chat.session.turns] == ["q1", "a1"]


def test_command_text_is_written_as_it_is_and_help_wraps_under_itself():
    """A file or a pipe got /system's text and /prompt's template broken at 80 columns (rich wraps text to the
    console's width), as if they held those line breaks; /help COMMAND wrapped back to column 0."""
    chat, out, err = plain_chat(ScriptedEngine())
    text = " ".join(f"word{i}" for i in range(60))  # ~400 characters on one line
    chat.handle(f"/system {text}")
    chat.handle("/system")
    assert lines(out)[1] == f"system prompt: {text}"
    mark = len(out.getvalue())
    chat.handle("/help save")
    usage, *rest, blank = out.getvalue()[mark:].splitlines()
    assert blank == "" and usage == commands.TABLE["save"].usage
    assert len(rest) >= 2  # the help is longer than 100 columns
    assert all(line.startswith("  ") and line == line.rstrip() and len(line) <= 100 for line in rest), rest
    assert " ".join(line.strip() for line in rest) == commands.TABLE["save"].help and err.getvalue() == ""


def test_load_takes_the_files_settings_as_a_resume_does_and_lists_them_as_session(tmp_path):
    """After /load, /set listed the loaded temperature as `flag` (the flag's 0.7 was gone) and the loaded
    max_new_tokens as `command`, and a setting the file lacks fell to the built-in default (a run-through):
    /load takes the file's settings as --resume does, a flag's excepted, each listed as `session`."""
    import json

    from yi_cli.conversation.chat import Options
    from yi_cli.engines.settings import GenSettings

    settings = GenSettings(temperature=0.7, top_p=0.9, max_new_tokens=60)
    sources = {"temperature": "flag", "top_p": "model", "max_new_tokens": "config"}
    chat, out, err = plain_chat(ScriptedEngine(), settings=settings, options=Options(setting_sources=sources))
    chat.handle("/set repetition_penalty 1.3")
    saved = tmp_path / "s.json"
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    held = {"temperature": 0.2, "top_p": 0.5, "repetition_penalty": 1.1, "max_new_tokens": 512}  # no speculate
    saved.write_text(json.dumps({"format": "yi-chat-session", "version": 1, "turns": turns, "settings": held}))
    chat.handle("/set speculate off")
    chat.handle(f"/load {saved}")
    chat.handle("/set")
    assert err.getvalue() == ""
    s = chat.settings
    assert (s.temperature, s.top_p, s.repetition_penalty, s.max_new_tokens) == (0.7, 0.5, 1.1, 512)
    assert s.speculate == "off"  # the file has none: this chat's stays
    listed = out.getvalue().split("loaded 1 exchange")[1]
    for line in (
        "temperature = 0.7  (flag)",
        "top_p = 0.5  (session)",
        "repetition_penalty = 1.1  (session)",
        "max_new_tokens = 512  (session)",
        "speculate = off  (command)",
    ):
        assert line in listed
    chat.handle("/load " + str(tmp_path / "missing.json"))  # refused: the chat's settings untouched
    assert chat.settings == s and chat.options.setting_sources["top_p"] == "session"


def test_piped_history_keeps_a_turn_with_brackets_or_its_cut_mark_whole_on_its_line():
    """Piped `/history` folded a reply cut by the token limit: its `[length]` mark went onto a continuation line
    under the text (a run-through), and so did the end of a message holding `[b]`: the table was measured with
    rich's markup on, which read them as tags of no width, and printed with it off."""
    from yi_cli.conversation.session import ChatSession

    words = " ".join(f"word{i}" for i in range(30))  # 229 characters: wider than the pipe's 100 columns
    session = ChatSession()
    session.add_exchange(f"[b]{words}[/b] [x]", 40, words, 30, "length")
    session.add_exchange("go on", 2, words + " [y]", 31, "interrupted")
    chat, out, err = plain_chat(ScriptedEngine(), session=session)
    chat.handle("/history")
    assert err.getvalue() == ""
    shown = lines(out)  # (without the blank line that ends the command's output)
    assert len(shown) == 5, shown  # the header and the four turns: no continuation line
    assert shown[1].endswith(f"[b]{words}[/b] [x]") and shown[2].endswith(f"{words} [length]")
    assert shown[4].endswith(f"{words} [y] [interrupted]")


def test_history_keeps_a_turn_holding_tabs_on_its_line():
    """rich measured a cell before it expanded its tabs: `name<TAB>age<TAB>city` was folded at a tab onto a second
    row, in a pipe too, where each turn is on its line, whole."""
    from yi_cli.conversation.session import ChatSession

    session = ChatSession(system="a\tb")
    session.add_exchange("name\tage\tcity", 5, "x\ty", 2)
    chat, out, err = plain_chat(ScriptedEngine(), session=session)
    chat.handle("/history")
    assert err.getvalue() == ""
    shown = lines(out)
    assert len(shown) == 4, shown  # the header, the system prompt and the two turns
    assert shown[1].endswith("a       b") and shown[2].endswith("name    age     city")
    assert shown[3].endswith("x       y")


def test_history_shows_line_and_paragraph_separators_as_escapes():
    """U+2028 and U+2029 in a turn were written raw: a terminal draws nothing (or a box) for them, and a reader of a
    pipe's lines (str.splitlines) broke the turn's row in two there."""
    from yi_cli.conversation.session import ChatSession

    session = ChatSession()
    session.add_exchange("one\u2028two", 5, "three\u2029four", 2)
    chat, out, err = plain_chat(ScriptedEngine(), session=session)
    chat.handle("/history")
    assert err.getvalue() == ""
    assert "\u2028" not in out.getvalue() and "\u2029" not in out.getvalue()
    shown = out.getvalue().rstrip("\n").splitlines()
    assert len(shown) == 3, shown  # the header and the two turns
    assert shown[1].endswith("one\\u2028two") and shown[2].endswith("three\\u2029four")


def test_load_of_another_models_conversation_says_which_model_goes_on(tmp_path):
    """`/load` of a conversation saved with another model (`-m demo-fp32`, loaded in a `demo` chat) went on with
    this chat's model without a word, where a resume says so (a run-through)."""
    import json

    chat, out, err = plain_chat(ScriptedEngine())
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    for name, model in (("other.json", "demo-fp32"), ("same.json", "scripted"), ("none.json", None)):
        held = {"format": "yi-chat-session", "version": 1, "turns": turns, **({"model": model} if model else {})}
        (tmp_path / name).write_text(json.dumps(held))
        chat.handle(f"/load {tmp_path / name}")
    assert err.getvalue() == ""
    assert lines(out) == [
        f"loaded 1 exchange from {tmp_path / 'other.json'} (it was with demo-fp32; it goes on with scripted)",
        f"loaded 1 exchange from {tmp_path / 'same.json'}",
        f"loaded 1 exchange from {tmp_path / 'none.json'}",
    ]


def test_history_counts_the_tokens_of_loaded_turns_that_came_without_them(tmp_path):
    """A session saved by a chat with a remote engine holds no token counts for its user turns (the server counts
    them); `/load`ed into a local chat, `/history` showed them blank. They are counted with this chat's tokenizer;
    a count the session holds is shown as held, and a chat that cannot count leaves the column blank."""
    import json

    from tests.fixtures import WordTemplate

    turns = [
        {"role": "user", "content": "what is the capital of France"},
        {"role": "assistant", "content": "Paris, of course.", "tokens": 7},
    ]
    (tmp_path / "remote.json").write_text(json.dumps({"format": "yi-chat-session", "version": 1, "turns": turns}))

    def history(template):
        engine = ScriptedEngine()
        engine.template = template
        chat, out, err = plain_chat(engine)
        chat.handle(f"/load {tmp_path / 'remote.json'}")
        out.truncate(0), out.seek(0)
        chat.handle("/history")
        assert err.getvalue() == ""
        return [ln.split()[:3] for ln in lines(out)[1:]]

    assert history(WordTemplate()) == [["1", "user", "6"], ["2", "assistant", "7"]]
    assert history(None) == [["1", "user", "what"], ["2", "assistant", "7"]]  # nothing to count with: blank


def test_history_shows_an_attached_file_as_one_line_and_all_shows_it_in_full(tmp_path, monkeypatch):
    """/history printed every attached file in full (a 20,000-line log took ~19 s to scroll by): each attachment
    is one line, `NAME: [attached, N lines]`, before what was typed; `/history all` prints it as sent."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.md").write_text("".join(f"note line {i}\n" for i in range(300)))
    (tmp_path / "empty.txt").write_text("")
    chat, out, err = plain_chat(ScriptedEngine(["the answer", "second"]))
    chat.handle("/file notes.md")
    chat.handle("/file empty.txt")
    chat.handle("what do the notes say?")
    out.truncate(0), out.seek(0)
    chat.handle("/history")
    folded = lines(out)
    assert err.getvalue() == "" and "note line 150" not in out.getvalue()
    text = folded[0].index("text")  # the table's text column
    assert [ln[text:] for ln in folded[1:5]] == [
        "notes.md: [attached, 300 lines]",
        "empty.txt: [attached, empty]",
        "what do the notes say?",
        "the answer",
    ], folded
    out.truncate(0), out.seek(0)
    chat.handle("/history all")
    assert "note line 150" in out.getvalue() and "notes.md:" in out.getvalue()
    assert chat.session.turns[0].content.count("note line") == 300  # the session keeps what was sent
    chat.handle("/history everything")
    assert (
        err.getvalue().strip()
        == "error: usage: /history [all] (all: with the attached files in full), not /history everything"
    )


def test_a_code_block_typed_first_is_the_users_and_a_file_named_with_a_backtick_is_a_file(tmp_path, monkeypatch):
    """Which attached files lead a message was told from its text: a code block the user typed first was shown as
    `[attached, 1 line]` and kept by `/edit TEXT` as a file; a file whose name has a backtick or a line break was
    shown in full and dropped by `/edit TEXT`. The message records how many lead it now."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tick`s.txt").write_text("one\n")
    (tmp_path / "nl\nname.txt").write_text("two\n")
    chat, out, err = plain_chat(ScriptedEngine(["a", "b", "c", "d"]))
    chat.handle("```\nx = 1\n```\nexplain")
    chat.handle("/file 'tick`s.txt'")
    chat.handle("/file 'nl\nname.txt'")
    chat.handle("hi")
    out.truncate(0), out.seek(0)
    chat.handle("/history")
    text = lines(out)[0].index("text")
    assert [ln[text:] for ln in lines(out)[1:7]] == [
        "```",
        "x = 1",
        "```",
        "explain",
        "a",
        "tick`s.txt: [attached, 1 line]",
    ], lines(out)
    assert "nl\\nname.txt: [attached, 1 line]" in out.getvalue()  # the name on its one line, its break shown
    chat.handle("/edit bye")
    assert chat.session.turns[-2].content.endswith("```\n\nbye") and "one" in chat.session.turns[-2].content
    assert chat.session.turns[-2].files == 2 and "the message keeps its 2 attached files" in err.getvalue()
    chat.handle("/undo")
    chat.handle("/edit what is x")  # the typed code block goes: it was never a file
    assert chat.session.turns[-2].content == "what is x" and chat.session.turns[-2].files == 0


def test_a_name_with_an_ideographic_space_is_shown_as_typed(tmp_path):
    """A file name with a Chinese input method's space (U+3000) was shown as `笔记\\u3000副本.md` in its error
    line, where the "attached" line showed it as typed; a no-break space, which passes for an ASCII one, stays
    escaped."""
    chat, out, err = plain_chat(ScriptedEngine(["r"]))
    for name in ("笔记\u3000副本.md", "notes\u00a0copy.md"):
        chat.handle(f"/file '{tmp_path / name}'")
    lines = err.getvalue().splitlines()
    assert len(lines) == 2 and f"{tmp_path}/笔记\u3000副本.md: " in lines[0], lines
    assert "notes\\xa0copy.md: " in lines[1], lines


def test_two_slashes_of_either_width_send_a_message_that_starts_with_the_second():
    """`//stats` sends "/stats"; a Chinese input method's `／stats 是什么` runs /stats, and `／／stats 是什么` sent
    "／／stats 是什么" (`/／stats` was an unknown command): two slashes of either width send the text from the
    second on, as `//` does."""
    engine = ScriptedEngine(["r"] * 5)
    chat, out, err = plain_chat(engine)
    typed = ["//stats 是什么", "／／stats 是什么", "/／stats 是什么", "／/stats 是什么", "／stats"]
    for line in typed:
        chat.handle(line)
    sent = [t.content for t in chat.session.turns if t.role == "user"]
    assert sent == ["/stats 是什么", "／stats 是什么", "／stats 是什么", "/stats 是什么"], err.getvalue()
    assert err.getvalue() == "" and "replies since the chat started: 4" in out.getvalue()  # ／stats ran /stats


def test_edit_and_retry_after_a_refused_message_take_that_message_not_the_exchange_before_it():
    """A message refused by its length alone left no trace for /retry, which regenerated the reply before it (and
    lost that reply); /edit after any refused message rewrote the exchange before it and dropped that exchange's
    reply. Both take the message that was not sent, as the refusal's "shorten it" means."""
    from tests.fixtures import BoundedTemplate as Bounded
    from yi_cli.engines.events import FINISH_STOP

    engine = ScriptedEngine(["Four.", "Still four.", "Apples."])
    engine.context_length, engine.template = 64, Bounded()
    chat, out, err = plain_chat(engine)
    chat.handle("what is two plus two")
    chat.handle("word " * 5000)  # refused by its length, before the tokenizer
    assert "more than the 64-token context can hold" in err.getvalue()
    chat.handle("/retry")
    assert "sending again the message that was not sent" in err.getvalue()
    assert chat.session.exchanges == 1 and chat.session.turns[-1].content == "Four."  # the reply before it stays

    chat.handle("apple " * 60)  # refused once tokenized (64 tokens of context, 48 kept for a prompt)
    assert "fit in the context" in err.getvalue()
    chat.handle("/edit apple apple")
    assert "editing the message that was not sent" in err.getvalue()
    assert [t.content for t in chat.session.turns] == ["what is two plus two", "Four.", "apple apple", "Still four."]
    assert chat.session.turns[-1].finish_reason == FINISH_STOP and chat.unsent is None

    chat.handle("/edit pears")  # sent now: /edit rewrites the last exchange again
    assert [t.content for t in chat.session.turns][-2:] == ["pears", "Apples."]
    assert chat.session.exchanges == 2


def test_an_edit_whose_reply_fails_is_kept_for_retry_and_edit():
    """An /edit whose reply failed (a server's 503) kept the exchange before it, as it should, but lost the new text
    without a word, and /retry then answered the old message again. The edit is kept and said: /retry sends it,
    /edit rewrites it; a refusal by its length keeps it too; a new message or /undo lets it go."""
    from tests.fixtures import BoundedTemplate as Bounded

    engine = ScriptedEngine(["Reply A.", "Reply B.", "Reply C."])
    chat, out, err = plain_chat(engine)
    chat.handle("question A")
    engine.fail_with = RuntimeError("HTTP 503 Service Unavailable")
    chat.handle("/edit question B")
    assert "the edit was not applied: /retry sends it again, /edit rewrites it" in err.getvalue()
    assert [t.content for t in chat.session.turns] == ["question A", "Reply A."]
    engine.fail_with = None
    chat.handle("/retry")
    assert "sending again the edit that was not applied" in err.getvalue()
    assert engine.seen[-1][-1]["content"] == "question B"
    assert [t.content for t in chat.session.turns] == ["question B", "Reply B."] and chat.unsent_edit is None

    engine.fail_with = RuntimeError("HTTP 503 Service Unavailable")
    chat.handle("/edit question C")
    engine.fail_with = None
    chat.handle("/edit question C, again")  # the edit not applied is what a second /edit rewrites
    assert [t.content for t in chat.session.turns] == ["question C, again", "Reply C."]

    engine.context_length, engine.template = 64, Bounded()
    chat.handle("/edit " + "word " * 5000)  # refused by its length alone: kept too, said on the error's line
    assert (
        err.getvalue().splitlines()[-1].endswith("(the edit was not applied: /retry sends it again, /edit rewrites it)")
    )
    assert chat.unsent_edit is not None
    chat.handle("/undo")  # the exchange it would replace is gone: so is the edit
    assert chat.unsent_edit is None and chat.session.turns == []


def test_an_editors_rewrite_keeps_a_typed_code_block_typed_and_an_attached_file_attached(tmp_path):
    """An /edit through the editor (or the inline edit> line) recorded no count of files, so a code block typed at
    the start of the message was read back as an attached file (/history's `[attached, 1 line]`, `/edit TEXT`
    kept it). The blocks the rewrite leaves as they were stay what they were; one changed is the user's text."""
    chat, out, err = plain_chat(ScriptedEngine(["one", "two", "three", "four"]))
    typed = "```\nx = 1\n```\nwhat does this do"
    chat.handle(typed)
    chat.editor = lambda old, head="": old + " exactly"
    chat.handle("/edit")
    assert chat.session.turns[-2].content == typed + " exactly" and chat.session.turns[-2].files == 0
    chat.handle("/edit explain it")
    assert chat.session.turns[-2].content == "explain it"

    notes = tmp_path / "notes.txt"
    notes.write_text("alpha\n")
    chat.handle(f"/file {notes}")
    chat.handle("summarise")
    chat.handle("/edit")  # the editor appends to what was typed: the file stays a file
    assert chat.session.turns[-2].files == 1 and chat.session.turns[-2].content.endswith("summarise exactly")
    chat.editor = lambda old, head="": old.replace("alpha", "beta")  # the file's block itself rewritten: the user's now
    chat.handle("/edit")
    assert chat.session.turns[-2].files == 0 and "beta" in chat.session.turns[-2].content


def test_a_byte_typed_at_the_edit_line_that_is_not_utf8_is_refused_as_at_the_prompt():
    """The edit> line skipped the check a line typed at >>> gets: "the tokenizer failed on this text (TypeError:
    ...)"."""
    chat, out, err = plain_chat(ScriptedEngine(["one", "two"]))
    chat.handle("hello")
    chat.editor = lambda old, head="": "caf\udce9"  # Latin-1 é read in a C locale
    chat.handle("/edit")
    assert err.getvalue().splitlines()[-1] == "error: the input is not valid UTF-8; line ignored"
    assert chat.session.turns[-2].content == "hello"


def test_continue_after_a_new_system_prompt_sends_it():
    """/continue resumed on the ids of the reply's own prompt, made with the system prompt of then: one set by
    /system since never reached the model (and its length was never checked against the context)."""
    from yi_cli.engines.events import FINISH_LENGTH, Finish, Stats, Text

    class WithIds(ScriptedEngine):
        def stream(self, prompt, settings, cancel):
            self.prompts.append(prompt)
            yield Text(" more")
            yield Finish(Stats(prompt_tokens=len(prompt.ids), new_tokens=1, finish_reason=FINISH_LENGTH), [7])

    engine = WithIds()
    chat, out, err = plain_chat(engine)
    chat.handle("tell me a story")
    chat.handle("/continue")
    resumed = engine.prompts[-1]
    assert resumed.ids[-1] == 7  # the same system prompt: resumed on the reply's own ids
    chat.handle("/system you are a pirate")
    chat.handle("/continue")
    sent = engine.prompts[-1]
    assert sent.messages[0] == {"role": "system", "content": "you are a pirate"}
    assert len(sent.ids) == len(engine.template.build(sent.messages, True).ids)  # built anew, not resumed


def test_a_reply_cut_by_the_end_of_the_context_says_so_not_the_token_limit():
    """A reply that ran into the end of the context was said to have stopped at --max-new-tokens, which raising
    could not help."""
    for asked, said in [(30, "the end of the context"), (3, "the token limit (--max-new-tokens)")]:
        engine = ScriptedEngine(["a " * 40])
        engine.context_length = 40
        chat, out, err = plain_chat(engine)
        chat.settings.max_new_tokens = asked
        chat.handle("w " * 20)  # 24 tokens of prompt: 16 left of the 40, short of 30, past 3
        assert err.getvalue().splitlines()[-1] == f"the reply stopped at {said}", asked
        assert chat.session.turns[-1].finish_reason == "length"  # /continue extends it either way


def test_a_byte_order_mark_or_a_tab_before_a_command_does_not_make_it_a_message():
    """`cat a.txt b.txt |` with b.txt saved with a BOM: its first line `\\ufeff/history` went to the model; `/set\\t
    temperature 0.5` was "unknown command /set\\ttemperature"."""
    cmd, arg = commands.parse("\ufeff/history")
    assert cmd.name == "history" and arg == ""
    cmd, arg = commands.parse("/set\ttemperature 0.5")
    assert cmd.name == "set" and arg == "temperature 0.5"
    cmd, arg = commands.parse("/history\tall")
    assert cmd.name == "history" and arg == "all"
    assert commands.parse("\ufeffhello") is None  # a message stays a message


def test_load_writes_no_copy_of_the_file_it_loaded_until_the_conversation_changes(tmp_path, monkeypatch):
    """/load saved the loaded conversation into the store at once, unchanged: `yi-chat sessions` listed it twice
    and -c took the copy. It is saved as a new file at its next change, as load_into says."""
    import json

    from yi_cli.conversation import store

    monkeypatch.setenv("YI_CHAT_HOME", str(tmp_path / "home"))
    chat, out, err = plain_chat(ScriptedEngine(["Fine."]), on_turn=store.Autosave("interactive"))
    saved = tmp_path / "s.json"
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    saved.write_text(json.dumps({"format": "yi-chat-session", "version": 1, "turns": turns}))
    chat.handle(f"/load {saved}")
    assert err.getvalue() == "" and store.entries() == []
    chat.handle("and you?")
    [entry] = store.entries()
    assert entry["exchanges"] == 2 and json.loads(saved.read_text())["turns"] == turns  # the loaded file untouched


def test_a_system_prompt_set_after_a_refused_message_leaves_it_to_retry_and_edit():
    """/system (to make room, say) after a refused message cleared it as if the conversation had changed: /retry then
    regenerated the exchange before it. Only a change of the turns (/undo, /clear, /load) lets it go."""
    from tests.fixtures import BoundedTemplate as Bounded

    engine = ScriptedEngine(["Hello.", "Sent."])
    engine.context_length, engine.template = 64, Bounded()
    chat, out, err = plain_chat(engine)
    chat.handle("hi")
    chat.handle("word " * 3000)
    chat.handle("/system be brief")
    assert chat.unsent is not None
    chat.handle("/edit a short one")
    assert "editing the message that was not sent" in err.getvalue()
    assert [t.content for t in chat.session.turns] == ["hi", "Hello.", "a short one", "Sent."]
    chat.handle("word " * 3000)
    chat.handle("/undo")  # the turns changed: the refused message is no longer the last thing said
    assert chat.unsent is None


def test_settings_under_the_least_value_are_read_as_it_from_any_source(tmp_path):
    """A temperature of 1e-40 gave garbage (logits / 1e-40 overflow), a repetition penalty of 1e-40 empty replies.
    Refusing them would refuse session and config files that hold them (0.005 was always accepted): they are read
    as what they approach, greedy and the least penalty."""
    import json

    assert gen.parse("temperature", "1e-40") == 0.0 and gen.parse("temperature", 0.005) == 0.0
    assert gen.parse("temperature", "0.01") == 0.01
    assert gen.parse("repetition_penalty", 1e-40) == 0.01 and gen.parse("repetition_penalty", "1.1") == 1.1
    saved = tmp_path / "s.json"
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    held = {"temperature": 0.005, "repetition_penalty": 0.001}
    saved.write_text(json.dumps({"format": "yi-chat-session", "version": 1, "turns": turns, "settings": held}))
    chat, out, err = plain_chat(ScriptedEngine())
    chat.handle(f"/load {saved}")
    assert err.getvalue() == "" and (chat.settings.temperature, chat.settings.repetition_penalty) == (0.0, 0.01)


def test_continue_refused_under_the_refuse_policy_does_not_suggest_clear():
    """/clear takes the reply /continue would extend: the refusal said "shorten it, /clear, or lower
    max_new_tokens" all the same."""
    from yi_cli.conversation.chat import Options
    from yi_cli.engines.events import FINISH_LENGTH

    engine = ScriptedEngine(["a " * 30, "b " * 30])
    engine.context_length = 100
    chat, out, err = plain_chat(engine, options=Options(overflow="refuse"))
    chat.settings.max_new_tokens = 20  # 80 of the 100 kept for a prompt
    chat.handle("w " * 20)  # 24 tokens, and 24 of its reply cut at 20 words
    chat.handle("x " * 10)  # 62 tokens with it: sent; /continue's 86 do not fit, and none may be dropped
    assert chat.session.turns[-1].finish_reason == FINISH_LENGTH
    engine.context_length = 80  # /continue's 86 past the whole context: only a drop, which the policy refuses
    chat.handle("/continue")
    said = err.getvalue().splitlines()[-1]
    assert "fit in the context" in said and "/clear" not in said, said


def test_files_of_long_tokens_that_fit_by_their_tokens_are_attached(demo_engine, tmp_path, monkeypatch):
    """The files' total length was held to 10 characters a token of context, an average: two files of rules (185
    lines of 80 `-`, ~27 characters a token with the real tokenizer) were refused by their length though their
    tokens fit. The bound is now the template's proven one (4 x its longest token)."""
    monkeypatch.setattr(demo_engine, "context_length", 2048)
    chat, out, err = plain_chat(demo_engine)
    for mark in "-=":
        rule = tmp_path / f"rule{mark}.txt"
        rule.write_text((mark * 80 + "\n") * 185)
        chat.handle(f"/file {rule}")
    assert err.getvalue() == "" and len(chat.attachments) == 2


def test_a_refused_message_is_let_go_by_a_clear_of_nothing_or_a_continue_and_the_set_says_a_value_was_read_low():
    """/clear of an empty conversation, or a /continue that extended the reply, left a refused message for /retry and
    /edit (the turns were compared by count and identity, and neither changed them so). /set of a temperature or
    penalty under the least one said the value read without saying why."""
    from tests.fixtures import BoundedTemplate

    engine = ScriptedEngine(["one two three", "four"])
    engine.context_length, engine.template = 64, BoundedTemplate()
    chat, out, err = plain_chat(engine)
    chat.handle("word " * 3000)
    chat.handle("/clear")
    assert chat.unsent is None
    chat.settings.max_new_tokens = 2
    chat.handle("hi")
    assert chat.session.turns[-1].finish_reason == "length"
    chat.handle("word " * 3000)
    chat.handle("/set max_new_tokens 20")
    chat.handle("/continue")
    assert chat.unsent is None and chat.session.turns[-1].content.endswith("four")
    chat.handle("/set temperature 0.001")
    chat.handle("/set temperature 0.5")
    said = lines(out)
    assert "temperature = 0.0 (under 0.01: read as 0.0)" in said and "temperature = 0.5" in said


def test_one_file_of_long_tokens_that_fits_by_its_tokens_is_attached(demo_engine, tmp_path, monkeypatch):
    """One file of indented lines (80 spaces a line: ~27 characters a token) was refused by 10 characters a token of
    context, where the same text in two files passed the files' proven bound."""
    monkeypatch.setattr(demo_engine, "context_length", 256)
    chat, out, err = plain_chat(demo_engine)
    indent = tmp_path / "indent.txt"
    indent.write_text(("x\n" + " " * 79) * 38 + "x\n")  # 3080 characters, ~116 tokens
    chat.handle(f"/file {indent}")
    assert err.getvalue() == "" and len(chat.attachments) == 1


def test_retry_refused_under_the_refuse_policy_does_not_suggest_clear():
    """/clear takes the exchange /retry would answer again: "nothing to retry" after the refusal's own advice."""
    from yi_cli.conversation.chat import Options

    engine = ScriptedEngine(["a " * 10, "b " * 10])
    engine.context_length = 100
    chat, out, err = plain_chat(engine, options=Options(overflow="refuse"))
    chat.settings.max_new_tokens = 10  # 90 kept for a prompt
    chat.handle("w " * 20)
    chat.handle("x " * 40)  # 24 + 14 + 44 = 82: sent
    chat.handle("/set max_new_tokens 25")  # 75 kept now: the retry's 82 do not fit, and none may be dropped
    chat.handle("/retry")
    said = err.getvalue().splitlines()[-1]
    assert "fit in the context" in said and "/clear" not in said, said


def test_history_shows_hidden_tag_characters_and_cuts_a_huge_turn():
    """A resumed file's turn holding Unicode tag characters (which no terminal draws) sent a hidden instruction that
    /history showed as nothing; a 50 MB turn held the terminal for minutes (rich folds a cell in a time that grows
    as its square). Tags are escapes; a turn past commands.SHOWN characters is cut there, and says how much is not."""
    from yi_cli.conversation import commands

    chat, out, err = plain_chat(ScriptedEngine(["r"]))
    hidden = "".join(chr(0xE0000 + ord(c)) for c in "PWNED")
    chat.session.add_exchange("question" + hidden, 1, "answer", 1)
    chat.session.add_exchange("y" * (commands.SHOWN + 1234), 1, "ok", 1)
    chat.handle("/history")
    text = out.getvalue()
    assert "question\\U000e0050\\U000e0057\\U000e004e\\U000e0045\\U000e0044" in text, text[:300]
    assert "… [1234 more characters not shown]" in text and text.count("y") < commands.SHOWN + 1000


def test_a_conversation_past_the_context_by_its_length_is_not_counted_at_each_redraw():
    """A loaded session of 30 MB held the prompt 23 s and 4 GB at each change: the toolbar's count (and /stats')
    tokenized the whole conversation. One past the context by its characters alone is said so, `ctx >N/N`,
    untokenized."""
    from tests.fixtures import BoundedTemplate
    from yi_cli.ui.repl import toolbar

    engine = ScriptedEngine(["r"])
    engine.template = BoundedTemplate()
    chat, out, err = plain_chat(engine)
    built = []
    build = engine.template.build
    engine.template.build = lambda *a, **k: built.append(1) or build(*a, **k)
    for i in range(50):
        chat.session.add_exchange(f"question {i} " + "lorem ipsum " * 400, 1, f"answer {i}", 1)
    ctx = engine.context_length
    assert toolbar(chat)().split(" · ")[1] == f"ctx >{ctx}/{ctx}" and built == []
    chat.handle("/stats")
    assert f"context used: >{ctx} / {ctx} tokens" in out.getvalue() and built == []
    chat.handle("/clear")
    chat.session.add_exchange("short", 1, "reply", 1)
    assert toolbar(chat)().split(" · ")[1] == f"ctx {len(build([*chat.session.messages()]).ids)}/{ctx}"
    engine.template.plain = True  # plain completion sends no system prompt: a long one is no part of the count
    chat.session.system = "rule " * 100_000
    assert not toolbar(chat)().split(" · ")[1].startswith("ctx >")


@pytest.mark.parametrize("columns", [10, 30, 40, 55, 80, 200])
def test_the_toolbar_drops_whole_fields_that_the_window_cannot_hold(columns):
    """At 40 columns the toolbar was cut by the terminal mid-value: `top_p 0.` for a top_p of 0.9. It holds as
    many whole fields as fit, the model's name always."""
    from yi_cli.ui.repl import toolbar

    chat, out, err = plain_chat(ScriptedEngine(["r"]))
    chat.settings.top_p = 0.9
    whole = toolbar(chat, lambda: 1000)().split(" · ")
    shown = toolbar(chat, lambda: columns)()
    fields = shown.split(" · ")
    assert fields == whole[: len(fields)] and (len(shown) < columns or len(fields) == 1), shown
    assert len(fields) == len(whole) or len(" · ".join(whole[: len(fields) + 1])) >= columns, shown
