"""Slash commands: one table of name -> handler, usage and help; parsing and validation (no torch)."""

from __future__ import annotations

import difflib
import os
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, replace

from rich.console import Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from ..engines import settings as gen
from ..errors import YiError, shown
from ..safe_text import one_line, safe, separators_visible, visible
from . import attach
from .history_table import HistoryTable
from .session import exchanges_said


@dataclass(frozen=True)
class Command:
    name: str
    handler: Callable
    usage: str
    help: str
    takes_arg: bool = False  # False: any argument is an error
    forced: Callable | None = None  # the handler of /NAME! (/save! replaces a file /save refuses), where there is one


ESCAPES = {"//", "／／", "/／", "／/"}  # two slashes, either width: a message that starts with the second


def utf8(line: str) -> str:
    """A line read in a locale that is not UTF-8 (LC_ALL=C without Python's UTF-8 coercion) holds its bytes past
    ASCII as surrogates: they are UTF-8 (a terminal sends that) or the line is refused."""
    if not any("\ud800" <= c <= "\udfff" for c in line):
        return line
    try:
        return line.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:
        raise YiError("the input is not valid UTF-8; line ignored") from None


def is_message(line: str) -> bool:
    """Whether Chat.handle sends `line` to the model: not a command (a known one or not), not blank."""
    try:
        if parse(line) is not None:
            return False
    except YiError:  # an unknown command, or a known one misused
        return False
    return bool(message_text(line).strip())


def message_text(line: str) -> str:
    """What a line that is not a command sends: "//x" sends "/x", and "／／x" "／x" (an input method's slashes,
    either width in either place)."""
    return line.strip()[1:] if line.strip()[:2] in ESCAPES else line


class Misused(YiError):
    """A command yi-chat knows, given in a form it does not take (`/clear now`, `/set! x`): `command` names it, for
    --json's object (it was `{"error": ...}` alone, as for a line that is no command)."""

    def __init__(self, message: str, command: str):
        super().__init__(message)
        self.command = command


def parse(line: str):
    """Return (Command, argument text) for a slash command, None for a chat message. '//x' is a message."""
    # a byte-order mark before it (a UTF-8-with-BOM file's first line, in `cat a.txt b.txt |`) is none of the line's
    s = _half_width_slash(_rstrip(line.lstrip().lstrip("\ufeff").lstrip()))
    if not s.startswith("/") or s[:2] in ESCAPES:
        return None
    # any white space parts them: a tab, an input method's ideographic space, a new line (Esc-Enter, a paste: the
    # name was "system\nbe", an unknown command, and /file's path took the lines after it)
    name = next(iter(s[1:].split(None, 1)), "") if s[1:2].strip() else ""
    arg = s[1 + len(name) :]  # the words as typed (/system's text keeps its ideographic spaces)
    name = name.lower()
    bang = len(name) > 1 and name.endswith("!")
    base = name[:-1] if bang else name
    cmd = TABLE.get(ALIASES.get(base, base))
    if cmd is None:
        hint = _near(base, "; /help lists them, and //TEXT sends a message starting /")
        raise YiError(f"unknown command /{shown(name, 40)}{hint}")
    usage = cmd.usage.replace(f"/{cmd.name}", f"/{base}", 1)  # as typed: /reset x is told of /reset, not /clear
    if bang:
        if cmd.forced is None:
            raise Misused(f"/{base} has no ! form (usage: {usage})", cmd.name)
        cmd = replace(cmd, name=cmd.name + "!", handler=cmd.forced)
    arg = _rstrip(arg.lstrip())
    if arg and not cmd.takes_arg:
        more = "; a chat keeps its model: another is yi-chat -m NAME" if cmd.name == "model" else ""  # `/model X`
        raise Misused(f"/{base} takes no argument (usage: {usage}{more})", cmd.name)
    return cmd, arg


def _rstrip(text: str) -> str:
    """`text` less the white space it ends in, but for a space escaped by a backslash (a path dropped from a file
    manager, `report.txt\\ `: the space is the name's; it was lost, and /save wrote a file named `out\\`)."""
    out = text.rstrip()
    escaped = (len(out) - len(out.rstrip("\\"))) % 2 == 1
    return out + " " if escaped and text[len(out) : len(out) + 1] == " " else out


# An input method in full-width mode types each space as this one: between a command and its words it is a space
IDEOGRAPHIC_SPACE = "\u3000"


def keyword(text: str) -> str:
    """A command's keyword as typed in full-width mode (`ａｌｌ`, `ｔｏｐ＿ｋ`, `０．５`): its half-width form."""
    return unicodedata.normalize("NFKC", text).strip()


def _half_width_slash(s: str) -> str:
    """A line a Chinese or Japanese input method typed as `／history` (full-width solidus, maybe full-width letters
    and an ideographic space after): the command it names, written `/history`. A line starting ／ that names no
    command stays a message as typed."""
    if not s.startswith("／"):
        return s
    typed = s.split(maxsplit=1)[0]  # up to any space, the ideographic one too
    word = unicodedata.normalize("NFKC", typed)
    base = word[1:].lower().removesuffix("!")
    if ALIASES.get(base, base) not in TABLE:
        return s
    rest = s[len(typed) :]
    return word + (" " + rest[1:] if rest else "")


def _near(name: str, otherwise: str, choices=None, mark: str = "/") -> str:
    """The tail of an unknown name's line: the nearest command or alias (or of `choices`) as a question, else
    `otherwise`. A name that begins one to three of them is taken for an abbreviation of those: by spelling alone,
    `/hi` was nearest `/h` (help), `/det` `/set`, and `/cl`, `/con`, `/re` near nothing."""
    pool = list(TABLE) + list(ALIASES) if choices is None else list(choices)
    if choices is None and name in INTENTS:  # another tool's word: ours, not the nearest spelling
        return f"; did you mean {mark}{INTENTS[name]}?"
    starts = [c for c in pool if name and c.startswith(name)]
    near = starts if 1 <= len(starts) <= 3 else difflib.get_close_matches(name, pool, n=1)
    return f"; did you mean {' or '.join(mark + n for n in near)}?" if near else otherwise


def run(chat, cmd: Command, arg: str) -> None:
    cmd.handler(chat, arg)


def do_help(chat, arg):
    if arg:
        typed = keyword(arg).split()[0]  # `/help set extra`: the command's name, set
        base = typed.lstrip("/").rstrip("!").lower()
        cmd = TABLE.get(ALIASES.get(base, base))
        if cmd is None:  # `/help !` said "no command /": the name as typed where nothing is left of it
            name = base or typed.lstrip("/")
            raise YiError(f"no command /{shown(name, 40)}{_near(base, '; /help lists the commands')}")
        names = [f"/{a}" for a, target in ALIASES.items() if target == cmd.name]
        also = f"  (also {', '.join(names)})" if names else ""
        # the help indented, wrapping under itself as in /help's table (as text it wrapped back to column 0)
        chat.render.show(Group(Text(cmd.usage + also), Padding(Text(cmd.help), (0, 0, 0, 2))))  # [all]: no markup
        return
    chat.render.show(help_text())


def help_text() -> Group:
    """The command table in two columns: a description longer than the terminal is wide wraps inside its own
    column (as plain text it wrapped back to column 0, under the commands)."""
    return Group(
        "Commands (type a message to chat; '//' starts a message with '/'):",
        _HelpTable(),
        "Keys: Enter sends · Esc then Enter (or a paste) adds a new line · Ctrl-C stops a reply "
        "or clears the line · Ctrl-D exits",
    )


class _HelpTable:
    """The commands beside their help where at least DESCRIBED columns are left for the help, else each command's
    line with its help under it, indented (in 20 columns the table showed the commands alone, cut, and no help; in
    30 the help broke inside its words)."""

    DESCRIBED = 30

    def __rich_console__(self, console, options):
        usage = max(len(c.usage) for c in TABLE.values()) + 2
        if options.max_width >= usage + 2 + self.DESCRIBED:
            grid = Table.grid(padding=(0, 2))
            grid.add_column(no_wrap=True)
            grid.add_column(overflow="fold")
            for c in TABLE.values():
                grid.add_row(Text(f"  {c.usage}"), Text(c.help))  # as written: rich read `[all]` as a markup tag
            yield grid
            return
        for c in TABLE.values():
            yield Padding(Text(c.usage, overflow="fold"), (0, 0, 0, 2))
            yield Padding(Text(c.help), (0, 0, 0, 4))


def do_exit(chat, arg):
    chat.running = False


def do_clear(chat, arg):
    n = chat.session.exchanges
    if not chat.session.turns:  # (it said "cleared 0 exchanges"); the conversation stays the one it is (a resumed
        chat.unsent = chat.unsent_edit = None  # file of no exchange: a new id left it behind unsaid); a message
        chat.render.show("nothing to clear: no messages yet")  # refused is let go all the same
        return
    chat.session.clear()
    kept = "; the system prompt is kept" if chat.session.system else ""  # none set: none to keep (it said kept)
    chat.render.show(f"cleared {exchanges_said(n)}{kept}")


def do_history(chat, arg):
    if arg and keyword(arg).lower() != "all":
        raise YiError(f"usage: /history [all] (all: with the attached files in full), not /history {shown(arg, 40)}")
    whole = bool(arg)
    s = chat.session
    if not s.turns and not s.system:
        chat.render.show("(no turns yet)")
        return
    t = HistoryTable("#", "role", "tokens", "text")  # rich's Table's output, at a fraction of its cost a row
    if s.system:
        t.add_row("", "system", "", cell(s.system))
    for i, turn in enumerate(s.turns[s.start :], 1):  # the context's (dropped ones stay in the file)
        note = f" [{turn.finish_reason}]" if turn.finish_reason in ("interrupted", "length") else ""
        text = turn.content if whole or turn.role != "user" else attach.folded(turn.content, turn.files)
        t.add_row(str(i), turn.role, str(chat.tokens_of(turn) or ""), cell(text) + note)
    chat.render.show(t, whole=True)  # a pipe gets each turn on its line, whole


SHOWN = 500_000  # characters of one turn /history shows: rich folds a longer cell in a time that grows as its square


def cell(text: str) -> str:
    """A turn's text as /history shows it: escape sequences made visible (loaded text), tabs expanded here. rich
    measured a cell before it expanded its tabs, so a turn holding one was folded at it onto a second row, in a
    pipe too (`name<TAB>age<TAB>city` as `name    age` / `city`). U+2028 and U+2029 as escapes: written raw, a
    terminal draws nothing or a box for them and a reader of the pipe's lines (str.splitlines) breaks a row there.
    Unicode's tag characters too, which no terminal draws: a resumed file's hidden instruction reached the model
    unseen. A turn past SHOWN characters is cut there (a 50 MB one held the terminal for minutes)."""
    more = len(text) - SHOWN
    shown_text = tags_visible(separators_visible(safe(text[:SHOWN]))).expandtabs(8)
    return shown_text + (f"\n… [{more} more characters not shown]" if more > 0 else "")


_TAGS = re.compile("[\U000e0000-\U000e007f]")


def tags_visible(text: str) -> str:
    """Unicode's tag characters as escapes: no terminal draws them (a hidden instruction in a loaded session)."""
    return _TAGS.sub(lambda m: visible(m.group()), text)


def hidden_visible(text: str) -> str:
    """What a command shows of a loaded text (/system, /prompt): tag characters and line separators as escapes, as
    /history shows them (/system drew a hidden instruction as nothing); cut at SHOWN characters, as /history cuts a
    turn (a resumed session's 50 MB system prompt held the terminal for 10 s and more)."""
    more = len(text) - SHOWN
    cut = f"\n… [{more} more characters not shown]" if more > 0 else ""
    return tags_visible(separators_visible(text[:SHOWN])) + cut


def do_system(chat, arg):
    tpl = chat.engine.template
    plain = getattr(tpl, "plain", False)  # plain completion sends no system prompt
    if not arg:
        if chat.session.system:
            unsent = "\n(not sent: this model runs as plain completion: --raw, or a base model)" if plain else ""
            chat.render.show(f"system prompt: {hidden_visible(chat.session.system)}{unsent}")
        elif tpl is not None and (default := tpl.default_system()):  # none set is not always none sent
            chat.render.show(
                f"system prompt: {default}\n(none set: this is the chat template's default; /system TEXT replaces it)"
            )
        else:
            chat.render.show("(no system prompt)")
        return
    chat.session.system = None if keyword(arg).lower() in ("none", "off", "-") else arg  # ｎｏｎｅ too
    if chat.session.system is None and tpl is not None and tpl.default_system():
        chat.render.show("system prompt cleared; the chat template's default applies (/system shows it)")
        return
    if chat.session.system is not None and plain:  # it said "set", and it was not sent
        chat.render.show(
            "system prompt set, but not sent: this model runs as plain completion (--raw, or a base model)"
        )
        return
    chat.render.show("system prompt " + ("cleared" if chat.session.system is None else "set"))


def do_set(chat, arg):
    if not arg:
        cur = chat.settings.to_dict()
        src = chat.options.setting_sources
        chat.render.show("\n".join(f"{k} = {cur[k]}  ({src.get(k, 'default')})" for k in gen.NAMES))
        return
    name, *rest = keyword(arg).split(None, 1)  # any white space between them, a tab too (as after the command)
    value = rest[0] if rest else ""
    if not value.strip():
        raise YiError("usage: /set NAME VALUE (/set alone lists the settings)")
    name = name.lower()  # as command names: /set Temperature 0.5 sets temperature
    if name not in gen.NAMES:
        known = f"; known: {', '.join(gen.NAMES)}"
        raise YiError(f"unknown setting {shown(name, 40)!r}{_near(name, known, gen.NAMES, '')}")
    v = gen.parse(name, value)
    setattr(chat.settings, name, v)
    chat.options.setting_sources[name] = "command"
    raw = _number(value) if name in gen.FLOORS else None
    low = raw is not None and raw != v  # under gen.LEAST: read as its floor, and said so
    chat.render.show(f"{name} = {v}" + (f" (under {gen.LEAST}: read as {v})" if low else ""))


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def do_undo(chat, arg):
    if chat.session.undo() is None:
        raise YiError("nothing to undo")
    chat.render.show("removed the last exchange")


def do_retry(chat, arg):
    """/retry [SEED]: a new reply to the last message; where the last message's send failed (a server's error, a
    refusal), that message is sent again (it regenerated the exchange before it, whose reply it replaced)."""
    if chat.unsent is None and len(chat.session.turns) < 2:
        raise YiError("nothing to retry")
    # A seed given here is for this reply only; the session's setting stays what it was.
    settings = replace(chat.settings, seed=gen.parse("seed", arg)) if arg else None
    if chat.unsent is not None:
        chat.render.notice("sending again the message that was not sent")
        chat.send(chat.unsent, settings)
        return
    if chat.unsent_edit is not None:
        chat.render.notice("sending again the edit that was not applied")
        _edited(chat, *chat.unsent_edit, settings)
        return
    chat.regenerate(chat.session.turns[-2].content, settings, chat.session.turns[-2].files)


def do_edit(chat, arg):
    """/edit [TEXT]: rewrite the last message and reply to it anew; where the last message's send failed or was
    refused (too long), that message is the one rewritten and sent (it rewrote the exchange before it)."""
    turns = chat.session.turns
    unsent = chat.unsent
    if unsent is None and len(turns) < 2:
        raise YiError("nothing to edit yet")
    old = unsent if unsent is not None else turns[-2].content
    files = 0 if unsent is not None else turns[-2].files  # a message not sent: its files wait in chat.attachments
    if unsent is None and chat.unsent_edit is not None:  # an edit not applied: it is what is rewritten
        old, files = chat.unsent_edit
    head, kept = attach.leading(old, files)
    if arg:  # what was typed is rewritten; the files attached to it stay (the editor shows them, to change too)
        new = head + arg
    elif chat.editor is not None:
        new = chat.editor(old, head=head)
    else:
        raise YiError("usage: /edit NEW TEXT (no editor here: give the new message)")
    if new is None:  # the editor gave up (its file left empty, Ctrl-C at edit>) and said why
        return
    if not chat.running:  # a SIGTERM, SIGHUP or SIGQUIT as edit> returned its line: the chat ends, as at >>>
        return
    new = utf8(new)  # a byte typed at edit> that the locale could not read, as one typed at >>>
    if not new.strip():
        chat.render.notice("edit cancelled: the message was left empty")
        return
    if new == old:
        chat.render.notice("edit cancelled: the message is unchanged")
        return
    if unsent is not None:
        chat.render.notice("editing the message that was not sent")
        chat.send(new)
        return
    kept = attach.files_kept(old, files, new)  # an editor's rewrite: the blocks left as they were stay files
    if kept:
        chat.render.notice(f"the message keeps its {kept} attached file{'s' * (kept > 1)}")
    _edited(chat, new, kept)


def _edited(chat, new: str, kept: int | None, settings=None) -> None:
    """The last exchange replaced by `new`'s (kept: its attached files); where the reply fails or is refused, the
    edit is kept (chat.unsent_edit) and said: the exchange before it stays."""
    before = chat.session.turns[-2:]

    def unchanged() -> bool:
        now = chat.session.turns[-2:]
        return len(now) == len(before) and all(a is b for a, b in zip(now, before, strict=True))

    chat.unsent_edit = None
    try:
        chat.regenerate(new, settings, files=kept)
    except YiError as e:  # refused before it was sent (too long for the context)
        if unchanged():
            chat.unsent_edit = (new, kept)
            raise YiError(f"{e} ({EDIT_KEPT})") from None
        raise
    if unchanged():
        chat.unsent_edit = (new, kept)
        chat.render.notice(EDIT_KEPT)


EDIT_KEPT = "the edit was not applied: /retry sends it again, /edit rewrites it"


def do_continue(chat, arg):
    last = chat.session.last_assistant()
    if last is None:
        raise YiError("nothing to continue yet: /continue extends a reply cut by Ctrl-C or the token limit")
    if last.finish_reason not in ("interrupted", "length"):
        raise YiError("/continue extends a reply cut by Ctrl-C or the token limit; the last one was complete")
    chat.extend()


def do_prompt(chat, arg):
    tpl = chat.engine.template
    if tpl is None:
        raise YiError("this engine does not expose its prompt (remote engines apply the template server-side)")
    messages = chat.session.messages()
    if not messages:
        if tpl.default_system():
            chat.render.show("(nothing yet: the template's default system prompt (/system), then your first message)")
        else:
            chat.render.show("(nothing yet: the prompt starts with your first message)")
        return
    # The conversation as it stands, each turn closed: the next request adds your message and the reply's opening
    # to it. Ending with that opening after a reply showed a prompt that no request sends. The toolbar's ctx is this
    # count too (meter.py keeps it without tokenizing the conversation again).
    prompt = tpl.build(messages, opening=False)
    chat.render.show(hidden_visible(prompt.text))  # what the model reads, hidden characters too
    chat.render.show(f"({len(prompt.ids)} tokens)")


def do_model(chat, arg):
    for part in chat.engine.describe():
        chat.render.show(part)


def do_stats(chat, arg):
    h = chat.history
    new = sum(s.new_tokens for s in h)
    firsts = [s.ttft_s for s in h if s.new_tokens]  # a reply stopped before its first token has no time to it
    rates = [s.decode_tok_s for s in h if s.decode_tok_s]
    lines = [
        f"replies since the chat started: {len(h)}  (interrupted {sum(s.finish_reason == 'interrupted' for s in h)}, "
        f"cut by length {sum(s.finish_reason == 'length' for s in h)})",
        f"tokens generated: {new}",
        f"mean time to first token: {sum(firsts) / len(firsts):.3f} s" if firsts else "",
        f"mean decode speed: {sum(rates) / len(rates):.1f} tok/s" if rates else "",
        _context_line(chat.context_used(), chat.engine.context_length),
    ]
    chat.render.show("\n".join(x for x in lines if x))


def _context_line(used: int | None, length: int | None) -> str:
    """How full the context is; a server that has not reported its count for these turns yet (a resumed chat, a
    reply cut before its usage came) gets a `?` and when it will be known."""
    line = f"context used: {'?' if used is None else used} / {length or '?'} tokens"
    return line + (" (the server reports it with its next reply)" if used is None else "")


def do_save(chat, arg, replace=False):
    from . import store
    from .attach import as_dropped

    if arg == "-":  # `-` is stdin / stdout elsewhere (-f -, -p -): a file of that name was made in the folder
        raise YiError(f"/save{'!' * replace} -: give a file name (./- names a file called -)")
    path = store.save(chat, as_dropped(arg) if arg else None, replace)  # a path typed as /file takes it
    chat.render.show(f"saved to {one_line(str(path))}")  # a line break in its name: said on one line


def do_save_replacing(chat, arg):
    if not arg:
        raise YiError("usage: /save! PATH (/save alone writes a new file in the session store)")
    do_save(chat, arg, replace=True)


def do_load(chat, arg):
    from . import store
    from .attach import as_dropped

    if not arg:
        raise YiError("usage: /load PATH (or a NAME yi-chat sessions lists)")
    arg = as_dropped(arg)  # quoted or its spaces escaped, as a terminal's drag and drop types it (as /file)
    data = store.load_into(chat, arg)
    # The chat's model stays: a conversation of another model went on with this one without a word
    was = data.get("model")
    other = isinstance(was, str) and was != chat.engine.name
    other = f" (it was with {shown(was, 200)}; it goes on with {chat.engine.name})" if other else ""
    # `last` named as the file it found (as --resume's line names it): a chat's newest may be its own
    said = one_line(arg) if arg != "last" else f"{one_line(os.path.basename(data['path']))} (last)"
    chat.render.show(f"loaded {exchanges_said(chat.session.exchanges)} from {said}{other}")


TABLE = {
    c.name: c
    for c in [
        Command("help", do_help, "/help [COMMAND]", "show the commands, or one command's help", True),
        Command("clear", do_clear, "/clear", "forget the conversation (keeps the system prompt)"),
        Command(
            "history",
            do_history,
            "/history [all]",
            "list the turns with roles and token counts (attached files as one line each; all: in full)",
            True,
        ),
        Command(
            "system",
            do_system,
            "/system [TEXT|none]",
            "show or set the system prompt (none set: the chat template's default, where it adds one)",
            True,
        ),
        Command(
            "set",
            do_set,
            "/set [NAME VALUE]",
            "list the settings, or set one: " + ", ".join(gen.NAMES),
            True,
        ),
        Command(
            "retry",
            do_retry,
            "/retry [SEED]",
            "regenerate the last reply, or resend a failed message (SEED: this retry only)",
            True,
        ),
        Command("undo", do_undo, "/undo", "remove the last exchange"),
        Command(
            "edit",
            do_edit,
            "/edit [TEXT]",
            "rewrite your last message ($EDITOR, inline, or TEXT: its attached files stay) and regenerate the reply",
            True,
        ),
        Command("continue", do_continue, "/continue", "extend a reply cut by Ctrl-C or the token limit"),
        Command(
            "prompt",
            do_prompt,
            "/prompt",
            "show the conversation so far as the model sees it (chat template, special tokens), with its token count",
        ),
        Command("model", do_model, "/model", "show the model: config, quantization, memory, module tree"),
        Command(
            "stats",
            do_stats,
            "/stats",
            "the replies since the chat started (across /clear and /load): tokens, speed; the context in use",
        ),
        Command(
            "save",
            do_save,
            "/save[!] [PATH]",
            "save the session to a JSON file (alone: a new one in the session store); /save! PATH replaces a file "
            "that is not this session's",
            True,
            do_save_replacing,
        ),
        Command(
            "load",
            do_load,
            "/load PATH|NAME",
            "load a session saved with /save (NAME: one yi-chat sessions lists)",
            True,
        ),
        Command(
            "file", attach.do_file, "/file [PATH]", "attach a text file to your next message (alone: list them)", True
        ),
        Command("detach", attach.do_detach, "/detach", "drop the files attached to your next message"),
        Command("exit", do_exit, "/exit", "leave (Ctrl-D too)"),
    ]
}
ALIASES = {"quit": "exit", "q": "exit", "h": "help", "?": "help", "reset": "clear"}
# Other chat tools' names for our commands: by spelling alone `/resume` was nearest /reset (which forgets the
# conversation), `/attach` /detach (which drops the files waiting), `/regen` /reset, `/settings` /stats
INTENTS = {"resume": "load", "open": "load", "regen": "retry", "regenerate": "retry", "redo": "retry"}
INTENTS |= {"attach": "file", "settings": "set", "config": "set", "new": "clear", "sys": "system", "back": "undo"}
