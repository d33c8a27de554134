"""Files and stdin as context (`-f PATH`, piped stdin with `-p`, `/file PATH`): read, checked, fenced (no torch).

An attachment goes into the user message as a fenced block before the prompt, the convention of `llm`
(`git diff | yi-chat -p "review this"`). Only UTF-8 text is taken: a binary or undecodable file is refused with one
line, and so is one that cannot fit the model's context, before the model loads when its size alone says so
(more than CHARS_PER_TOKEN characters per token of context), else by counting its tokens once the tokenizer is up.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
import threading
from dataclasses import dataclass

from .. import inputs, pipes
from ..errors import UsageError, YiError, shown
from . import context

STDIN = "-"
MAX_BYTES = 64 << 20  # read no further: far beyond any context, and bounds memory for `-f /dev/zero`
CHARS_PER_TOKEN = 10  # text averages 3-5 characters per token; past 10 per token of context it cannot fit


@dataclass(frozen=True)
class Attachment:
    name: str  # the path as given, or "stdin"
    text: str
    titled: bool = True  # a file's block is headed by its name; piped stdin's is not
    path: str | None = None  # a regular file's path as given, read again at send time where it changed since
    version: tuple | None = None  # its (inode, mtime, size) when it was read

    def block(self) -> str:
        """The text in a fence longer than any backtick run inside it (CommonMark), under its name."""
        runs = [len(m) for m in re.findall(r"`{3,}", self.text)]
        fence = "`" * max([3, *(n + 1 for n in runs)])
        head = f"{self.name.replace(chr(10), chr(92) + 'n')}:\n" if self.titled else ""  # the name on its one line
        return f"{head}{fence}\n{self.text.rstrip(chr(10))}\n{fence}"


def decode(data: bytes, name: str, use: str = "attached") -> str:
    """Bytes -> text, or one line saying why they are not text (NUL bytes), or not UTF-8 and how to convert them:
    a Chinese file saved in GBK or Big5 (Windows' default for Chinese) was refused as if it were not text at all,
    and a UTF-16 one (Notepad's "Unicode") as a binary file for its NUL bytes. `use`: what the text was for
    ("attached", or "read as the prompt" for `-p -`, where the line spoke of attaching)."""
    if wide := inputs.wide_encoding(data):
        raise UsageError(f"{shown(name, 200)}: {wide} text, not UTF-8 ({inputs.convert(name, wide)})")
    if b"\x00" in data:
        raise UsageError(f"{shown(name, 200)}: binary file (it contains NUL bytes); only text can be {use}")
    try:
        return inputs.bom_text(data)
    except UnicodeDecodeError as e:
        chinese = legacy_chinese(data)
        raise UsageError(
            f"{shown(name, 200)}: not UTF-8 text (undecodable byte at offset {e.start}); only UTF-8 text can be {use}"
            + (f" ({inputs.convert(name, 'GBK', 'Chinese saved as GBK: ')}; as Big5: -f BIG5)" if chinese else "")
        ) from None


CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uf900-\ufaff\uff00-\uffef]")


LATIN_LETTER = re.compile(rb"[A-Za-z][\x80-\xff][A-Za-z]")
LATIN_WORD = re.compile(rb"[a-z]{2}[\x80-\xff][a-z]{2}")
KANA = re.compile("[\u3041-\u3096\u30a1-\u30fa]")


# The bytes looked at: a few pages tell the encoding (the whole of a 49 MB GBK file, decoded twice into lists of
# characters, took 11 s and 2.2 GB to be refused)
SAMPLE = 1 << 16


def _decoded(data: bytes, encoding: str) -> str | None:
    """`data` (SAMPLE bytes at most, maybe cut from a longer text) decoded, else None; a character the cut split at
    the end is left out."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        if len(data) == SAMPLE and e.start >= len(data) - 4:
            try:
                return data[: e.start].decode(encoding)
            except UnicodeDecodeError:
                return None
        return None


def _kana(data: bytes) -> bool:
    """Whether `data` reads as Japanese: it decodes in Shift-JIS with hiragana or katakana in it (their lead bytes,
    0x82 and 0x83, are none of Big5's and only rare characters' of GBK; EUC-JP's kana are Big5's commonest)."""
    text = _decoded(data, "shift_jis")
    return text is not None and KANA.search(text) is not None


def legacy_chinese(data: bytes, least: int = 1) -> bool:
    """Whether `data` reads as Chinese in GB18030 (GBK's superset) or Big5: it decodes, and everything past ASCII
    is a CJK character or punctuation, `least` of them at least (Latin-1 text seldom decodes so; a single pair of
    stray bytes may). Not where a byte past ASCII stands alone between ASCII letters (Latin-1's `Z\xfcrich`,
    `se\xf1or`: a CJK character is two bytes) or the bytes read as Japanese kana in Shift-JIS (Chinese has none):
    the GBK hint garbled them, iconv exiting 0."""
    first = re.search(rb"[\x80-\xff]", data)  # from the first byte past ASCII (all before it is ASCII, whole)
    begin = max(0, first.start() - 8) if first else 0
    data = data[begin : begin + SAMPLE]
    if _kana(data):
        return False
    # Big5's second byte is an ASCII letter as often as not (你: A7 41): a Latin word there is two letters a side
    for encoding, latin in (("gb18030", LATIN_LETTER), ("big5", LATIN_WORD)):
        if latin.search(data) or (text := _decoded(data, encoding)) is None:
            continue
        wide = [c for c in text if ord(c) > 0x7F]
        if len(wide) >= least and all(CJK.match(c) for c in wide):
            return True
    return False


WAIT_NOTICE_S = 1.0  # a pipe read longer than this says what it waits for


def read_bytes(name: str, stdin=None, waiting=None, regular: bool = False) -> bytes:
    """The bytes of `name` (`-`: stdin). waiting(line): called once where a pipe's reading takes over WAIT_NOTICE_S
    (a FIFO nothing writes into yet, a slow command's output): the open or the read blocks until it ends, and the
    chat showed nothing meanwhile, its keys held, as if hung. regular: only a regular file is read (opened without
    blocking, and checked once open); anything else is a UsageError."""
    if name == STDIN:
        stream = stdin if stdin is not None else sys.stdin
        if stream is None:  # started with stdin closed
            return b""
        # through pipes: a Ctrl-C as the read begins ends it (it waited for the pipe's end); `-f -` (or
        # /dev/stdin) of a slow pipe says it waits, as a FIFO's does (`sleep 100 | yi-chat -f - -p x` said nothing)
        with _waiting_for("stdin", waiting):
            return (
                pipes.read_upto(stream.buffer, MAX_BYTES + 1)
                if hasattr(stream, "buffer")
                else stream.read(MAX_BYTES + 1)
            )
    p = inputs.user_path(name, UsageError)
    try:
        kind = inputs.kind_of(p)  # through links: `-f <(cmd)` names /dev/fd/63, a pipe
        if kind == "directory":
            raise UsageError(f"{shown(name, 200)}: is a directory; attach files one by one")
        # A pipe is read to its end (process substitution, /dev/stdin piped); a device is refused before it is
        # opened, as /load refuses it: /dev/zero never ends (it read 64 MiB to say "too large"), a terminal would
        # wait on the chat's own held keys, and opening some devices does things.
        if kind not in (None, "regular file", "FIFO"):
            raise UsageError(
                f"{shown(name, 200)}: not a regular file (a {kind}); only regular files and pipes can be attached"
            )
        if regular and kind not in (None, "regular file"):  # (a missing one fails to open, as before)
            raise UsageError(f"{shown(name, 200)}: not a regular file now (a {kind})")
        with _waiting_for(name, waiting, kind == "FIFO"), _open(p, regular or kind == "FIFO") as f:
            if regular and not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # swapped since the look above
                raise UsageError(f"{shown(name, 200)}: not a regular file now")
            if os.isatty(f.fileno()):  # swapped for a terminal since the look above
                raise UsageError(f"{shown(name, 200)}: is a terminal; only files can be attached")
            return pipes.read_upto(f, MAX_BYTES + 1)  # a FIFO's Ctrl-C as a read begins ends it, as stdin's
    except OSError as e:
        raise UsageError(f"{shown(name, 200)}: cannot read ({e.strerror or e})") from None
    except ValueError:  # a NUL byte in the path
        raise UsageError(f"{shown(name, 200)}: not a valid file name") from None


def _open(p, nonblocking: bool):
    """p open for reading; without blocking where only a regular file will do (a FIFO's open waits for a writer),
    and for a FIFO, whose wait for a writer is then pipes' select(), which a signal ends: a signal just before a
    blocking open entered the kernel was not handled until something wrote into the FIFO."""
    if not nonblocking:
        return open(p, "rb")
    return os.fdopen(os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)), "rb")


@contextlib.contextmanager
def _waiting_for(name: str, waiting, pipe: bool = True):
    """A line through waiting(line) if the block takes over WAIT_NOTICE_S (a timer's thread); no waiting: nothing.
    pipe: a FIFO or stdin; else a file whose read did not end (/proc/kmsg, a stalled network mount: the chat showed
    nothing, as if hung)."""
    if not waiting:
        yield
        return
    if pipe:
        line = f"{shown(name, 200)}: a pipe, read to its end: waiting for what writes into it (Ctrl-C gives it up)"
    else:
        line = f"{shown(name, 200)}: still reading it: a file with no end (as some of /proc), or a stalled disk? "
        line += "(Ctrl-C gives it up)"
    timer = threading.Timer(WAIT_NOTICE_S, waiting, [line])
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def read(name: str, stdin=None, use: str = "attached", waiting=None, regular: bool = False) -> Attachment:
    """Read and check one attachment; `-` is stdin. A name's bytes that are not UTF-8 (an argument's, kept as
    surrogates) are named as `\\xff` in the message: the tokenizer takes no surrogates."""
    label = "stdin" if name == STDIN else name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if name != STDIN and (out := own_output(name)):
        raise UsageError(
            f"{shown(label, 200)}: is yi-chat's own {out}, a pipe it writes into; reading it would wait for ever"
        )
    version = None if name == STDIN else _version(name)  # before the read: a change while reading shows later
    data = read_bytes(name, stdin, waiting, regular)
    if len(data) > MAX_BYTES and use != "attached":  # `-p -`: a prompt, past any model's context (exit 1, as one)
        raise YiError(f"{shown(label, 200)}: the prompt is over {MAX_BYTES >> 20} MiB, more than any context can hold")
    if len(data) > MAX_BYTES:
        raise UsageError(f"{shown(label, 200)}: too large to attach (over {MAX_BYTES >> 20} MiB)")
    return Attachment(label, decode(data, label, use), name != STDIN, name if version else None, version)


def _version(name: str) -> tuple | None:
    """A regular file's (inode, mtime, size); None for anything else (a pipe is read once, to its end)."""
    try:
        st = os.stat(inputs.user_path(name, UsageError))
    except (OSError, ValueError, UsageError):
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size) if stat.S_ISREG(st.st_mode) else None


def fresh(attachments: list[Attachment], notice) -> list[Attachment]:
    """The attachments as their files are now: one changed since it was attached (edited in another window before
    the message went) is read again, and said so; one that cannot be read now goes as it was read, and says why
    (a FIFO in its place now too: reading it hung the message, as nothing wrote into it)."""
    out = []
    for a in attachments:
        if a.path is None or _version(a.path) == a.version:
            out.append(a)
            continue
        try:
            out.append(read(a.path, regular=True))
        except UsageError as e:
            notice(f"{e}; it goes as it was when attached")
            out.append(a)
        else:
            notice(f"{shown(a.name, 200)} changed since it was attached: it goes as it is now")
    return out


def gather(words: list[str], prompt: str | None, files: list[str], tty: bool, waiting=None) -> tuple[str | None, list]:
    """The one-shot prompt (None for a chat) and the attachments, read and checked: the prompt words or -p TEXT,
    `-p -` from stdin, piped stdin as the context of a one-shot prompt, then the -f files (`-` is stdin; a FIFO's
    wait is said through waiting(line), as /file's)."""
    if words and prompt is not None:
        raise UsageError("two prompts: give -p TEXT or the prompt words, not both")
    prompt = " ".join(words) if words else prompt
    # `-f /dev/stdin` (or /proc/self/fd/0) with stdin a pipe is `-f -`: in a piped chat it took the whole script as
    # the attachment (no turn sent), with -p it was read again after the piped context (empty)
    own = [own_input(f) for f in files]
    said = next((shown(f, 200) for f, o in zip(files, own, strict=True) if o), STDIN)  # as spelled, for the errors
    files = [STDIN if o else f for f, o in zip(files, own, strict=True)]
    if files.count(STDIN) > 1 or (prompt == STDIN and STDIN in files):
        raise UsageError("stdin can be read once: give '-' to one of -p and -f")
    if prompt is None and STDIN in files:
        where = "the terminal" if tty else "the chat's input (one turn per line)"
        raise UsageError(f"-f {said}: stdin is {where} here; '-f -' goes with -p")
    if tty and prompt == STDIN:  # read from a terminal whose keys are held (not echoed): a hang
        raise UsageError("-p -: stdin is the terminal here; pipe the prompt in (... | yi-chat -p -) or give -p TEXT")
    if tty and STDIN in files:
        raise UsageError(f"-f {said}: stdin is the terminal here; pipe the text in (... | yi-chat -f - -p TEXT)")
    if prompt is not None and prompt != STDIN:  # its bytes past ASCII as surrogates where they are not UTF-8: said
        try:  # at the start, by name (it was "the input is not valid UTF-8; line ignored", after the model loaded)
            prompt = prompt.encode("utf-8", "surrogateescape").decode("utf-8")
        except UnicodeError:
            raise UsageError(("the prompt words are" if words else "-p/--prompt is") + " not valid UTF-8") from None
    if "" in files:  # Path("") is the current folder: it was ": is a directory; attach files one by one"
        raise UsageError("-f/--file is empty: give a file path, or - for stdin")
    attachments = []
    if prompt == STDIN:
        prompt = read(STDIN, use="read as the prompt").text.strip()
        if not prompt:
            raise UsageError("-p -: stdin is empty")
    elif prompt is not None and not prompt.strip():
        raise UsageError("the prompt words are empty" if words else "-p/--prompt is empty")
    elif prompt is not None and not tty and STDIN not in files:
        piped = read(STDIN)  # `git diff | yi-chat -p "review this"`
        attachments += [piped] if piped.text.strip() else []
    return prompt, attachments + [read(f, waiting=waiting) for f in files]


def compose(attachments: list[Attachment], prompt: str) -> str:
    return "\n\n".join([a.block() for a in attachments] + ([prompt] if prompt else []))


LEADING_BLOCK = re.compile(r"(?:(?P<name>[^\n`]*):\n)?(?P<fence>`{3,})\n(?P<body>.*?)\n(?P=fence)(?:\n+|$)", re.S)
# A block known to be a file's (its message recorded how many lead it): a name with backticks in it too
FILE_BLOCK = re.compile(r"(?:(?P<name>[^\n]*):\n)?(?P<fence>`{3,})\n(?P<body>.*?)\n(?P=fence)(?:\n+|$)", re.S)


def _blocks(message: str, files: int | None):
    """The attachment blocks `message` starts with: `files` of them where its turn recorded how many (a code block
    the user typed first is not one), else as many as look like compose's."""
    end, pattern = 0, LEADING_BLOCK if files is None else FILE_BLOCK
    while (files is None or files > 0) and (m := pattern.match(message, end)):
        yield m
        end = m.end()
        files = None if files is None else files - 1


def leading(message: str, files: int | None = None) -> tuple[str, int]:
    """The attachment blocks `message` starts with (as compose wrote them, the blank lines after them included) and
    how many there are: what the user typed is the rest."""
    found = list(_blocks(message, files))
    return message[: found[-1].end() if found else 0], len(found)


def files_kept(old: str, files: int | None, new: str) -> int:
    """How many of the attachment blocks `old` starts with (`files`, as leading takes it) an editor's rewrite `new`
    still starts with, each as it was: those stay files; a block changed, and each one after it, is now text the
    user wrote (an edited message was told from its text, and a code block typed first became a file)."""
    n = 0
    for m in _blocks(old, files):
        block = old[: m.end()].rstrip("\n")
        if not (new.startswith(block) and new[len(block) : len(block) + 1] in ("", "\n")):
            break
        n += 1
    return n


def folded(message: str, files: int | None = None) -> str:
    """`message` with each attachment block it starts with as one line, `notes.md: [attached, 120 lines]`, and what
    the user typed after them whole: what /history shows (it printed a 20,000-line file in full; `/history all`
    still does)."""
    lines, end = [], 0
    for m in _blocks(message, files):
        n = m["body"].count("\n") + 1 if m["body"] else 0
        size = f"{n} line{'s' * (n != 1)}" if n else "empty"
        lines.append(f"{m['name']}: [attached, {size}]" if m["name"] is not None else f"[attached, {size}]")
        end = m.end()
    return "\n".join(lines + ([message[end:]] if message[end:] else [])) if lines else message


def summary(message: str, files: int | None = None) -> str:
    """The first line of what the user typed, behind the attachments: `[+2 files] review this`."""
    head, n = leading(message, files)
    first = (message[len(head) :].strip().splitlines() or [""])[0]
    return f"[+{n} file{'s' * (n > 1)}] {first}" if n else first


def take(chat, text: str) -> str:
    """The message actually sent: the attachments waiting for the next message (-f, /file), then `text`."""
    pending, chat.attachments = chat.attachments, []
    return compose(pending, text) if pending else text


def context_hint(model: str | None) -> int | None:
    """The context length of a local checkpoint read from its config.json, without loading anything; None when
    it is not known before loading (a hub id, a remote model, a demo not converted yet)."""
    if not model:
        return None
    from ..checkpoint import demo
    from ..paths import cache_dir

    try:
        d = cache_dir() / "demo" / model if model in demo.NAMES else inputs.user_path(model, UsageError)
        # As the loader reads it (size, kind, nesting): a FIFO there hung this look, deep nesting was a traceback.
        n = inputs.read_json(d / "config.json", inputs.JSON_LIMIT, UsageError, "config.json").get(
            "max_position_embeddings"
        )
    except UsageError:  # loading the model then says what is wrong
        return None
    return n if isinstance(n, int) and n > 0 else None


def check_size(attachments: list[Attachment], context: int | None) -> None:
    """Before loading: refuse what is too long by its length alone, one file or all of them together (two files
    each under the bound were refused only once the model had loaded: minutes, for a large one)."""
    if context is None:
        return
    named = [a for a in attachments if len(a.text) > CHARS_PER_TOKEN * context][:1] or attachments  # one, or all
    total = sum(len(a.text) for a in named)
    if total > CHARS_PER_TOKEN * context:
        raise UsageError(
            f"{names(named)}: too large for the model's context ({total} characters"
            f"{' together' if len(named) > 1 else ''}; the context holds {context} tokens)"
        )


def check_total(engine, attachments: list[Attachment]) -> None:
    """Refuse files whose text together is surely too long for the context, before tokenizing them: by the
    template's proven bound (Template.surely_over: 4 x the longest token's characters a token), not the average
    CHARS_PER_TOKEN, which files of long tokens (rules of `=`, indented code) pass. The last one is being added."""
    tpl, ctx = engine.template, engine.context_length
    text = compose(attachments, "")
    if tpl is not None and ctx is not None and tpl.surely_over(text, ctx):
        raise UsageError(
            f"{_named(attachments)}: too large for the model's context ({len(text)} characters; the context holds "
            f"{ctx} tokens)"
        )


def names(attachments: list[Attachment]) -> str:
    """The names of attached files as a line says them (the files that no message took, -f's refused at start)."""
    return ", ".join(shown(a.name, 200) for a in attachments)


def _named(attachments: list[Attachment], added: bool = True) -> str:
    """The files a refusal names: the one being attached and how many wait before it (naming each of hundreds
    made every further /file's refusal longer), or all of them (-f at the start)."""
    if not added:
        return names(attachments)
    before = len(attachments) - 1
    waiting = f" (with the {before} file{'s' if before != 1 else ''} attached before it)" if before else ""
    return f"{shown(attachments[-1].name, 200)}{waiting}"


def check_tokens(
    engine, settings, attachments: list[Attachment], prompt: str = "", added: bool = False, system: str | None = None
) -> None:
    """After loading: refuse attachments whose tokens leave no room in the context for the system prompt (`system`:
    one was left out, and a file that did not fit with it was sent and refused as "the prompt"), the prompt and a
    reply. A prompt too long without them is not theirs to refuse: its own line says so (a two-line file was
    named). `added`: the last one is being attached to those before it (the refusal names it and counts them)."""
    tpl, ctx = engine.template, engine.context_length
    if not attachments or tpl is None or ctx is None:
        return
    budget = context.budget(ctx, settings.max_new_tokens)  # the room the chat keeps for a reply (Chat._prompt)
    lead = [{"role": "system", "content": system}] if system else []
    n = len(tpl.build([*lead, {"role": "user", "content": compose(attachments, prompt)}]).ids)
    if n > budget:
        # the system prompt and the prompt over it without the files too: not theirs (a 5-byte file was blamed)
        if len(tpl.build([*lead, {"role": "user", "content": prompt}]).ids) > budget:
            return
        raise UsageError(
            f"{_named(attachments, added)}: too large for the model's context ({n} tokens with the prompt; "
            f"{budget} fit with room for the reply)"
        )


def as_dropped(arg: str) -> str:
    """The path `arg` names where a terminal's drag and drop (or a shell habit) typed it quoted ('a b.txt',
    "a b.txt", or a part of it: ~/'My Notes'/a.txt) or with its spaces escaped (a\\ b.txt): its one shell word,
    when the text as typed names nothing (`it's.txt` is that file)."""
    import shlex

    if not any(c in arg for c in "'\"\\"):
        return arg
    try:
        words = shlex.split(arg)
        if len(words) != 1 or os.path.lexists(inputs.user_path(arg, UsageError)):
            return arg
        if not arg.startswith(("'", '"')) and "\\" not in arg and not _names_more(words[0], arg):
            return arg  # quotes inside a name (/save rock'n'roll.json) are the name's, as typed
    except (ValueError, UsageError):  # an unclosed quote; a name the path check refuses: as typed
        return arg
    if not words[0]:  # '' was "": is a directory" (/file), the current folder (/load), the store's default (/save)
        raise UsageError(f"{arg}: an empty path; give a file's path")
    if words[0].startswith("~") and arg.startswith(("'", '"', "\\")):  # a quoted ~ is the shell's literal one
        return os.path.join(".", words[0])
    return words[0]


def _names_more(word: str, arg: str) -> bool:
    """Whether the shell's reading of a name quoted in part (`~/'My Notes'/a.txt`) names something, or a folder to
    write in, where the name as typed does not."""
    path, typed = inputs.user_path(word, UsageError), inputs.user_path(arg, UsageError)
    return os.path.lexists(path) or (
        os.path.isdir(os.path.dirname(path) or ".") and not os.path.isdir(os.path.dirname(typed) or ".")
    )


def _path_then_message(arg: str) -> tuple[str, str]:
    """(path, message) of a /file whose words go on past a new line: the path up to the end of the line where its
    quotes close (a dropped name may hold a new line), the lines after it a message to send with the file (the whole
    text was taken for a path: "a.txt\nsummarize: cannot read", the question left in the input history); `//` starts
    such a message with `/`, as it does a line. (arg, "") where it has one line, where the whole of it names a
    file, or where the lines after the path are a command (`/file a.txt` + `/file b.txt` is not a message)."""
    import shlex

    lines = arg.split("\n")
    try:
        if len(lines) < 2 or os.path.lexists(inputs.user_path(as_dropped(arg), UsageError)):  # a name, pasted whole
            return arg, ""
    except (UsageError, OSError, ValueError):
        pass
    for k in range(1, len(lines)):
        path, message = "\n".join(lines[:k]), "\n".join(lines[k:]).strip()
        try:
            shlex.split(path)
        except ValueError:  # a quote left open: the name goes on
            continue
        if not message or (message.startswith("/") and not message.startswith("//")):
            return arg, ""
        return path.strip(), message[1:] if message.startswith("//") else message
    return arg, ""


def _one_path(arg: str) -> None:
    """Refuse `/file a.txt b.txt` as what it is, two paths to one command, where the text as a whole names nothing
    but its words name files (it was "a.txt b.txt: cannot read", no hint that /file takes one path)."""
    import shlex

    try:
        words = shlex.split(arg)
    except ValueError:  # an unclosed quote: the words as spaces split them
        words = arg.split()
    try:
        if len(words) < 2 or os.path.lexists(inputs.user_path(arg, UsageError)):
            return
        found = [w for w in words if os.path.lexists(inputs.user_path(w, UsageError))]
    except (UsageError, ValueError):  # ~nobody, a NUL byte: read says what is wrong with it
        return
    if len(found) >= 2:
        raise UsageError(
            f"/file takes one path, and {shown(arg, 200)} names {len(found)} files: attach each with its own /file "
            "(a path with spaces goes quoted: /file 'my notes.txt')"
        )


def own_input(name: str, shared: bool = False) -> bool:
    """Whether `name` is the process's own stdin: /dev/stdin, /proc/self/fd/0, the FIFO (or socket) it was started
    with, or the file redirected to it (not where `shared`: what reading it takes from stdin, a pipe's). Reading a
    pipe takes what stdin holds; a regular file is read from its start apart, and was so read twice: `-f /dev/stdin
    -p x < notes.txt` sent the text as the piped context and again as the file, and without -p it went with the
    first turn while each of its lines was a turn."""
    if name == STDIN:
        return True
    try:
        st, own = os.stat(inputs.user_path(name, UsageError)), os.fstat(0)
    except (OSError, ValueError, UsageError):  # no stdin, no such file: read() says what is wrong with it
        return False
    read = stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode) or (stat.S_ISREG(st.st_mode) and not shared)
    return read and (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def own_output(name: str) -> str | None:
    """ "stdout" or "stderr" where `name` is the pipe (or socket) that one of them writes into (`/file /dev/stdout`
    in a piped run): read to its end, it waited for an end that only yi-chat's own exit brings (a hang)."""
    try:
        st = os.stat(inputs.user_path(name, UsageError))
    except (OSError, ValueError, UsageError):  # read() says what is wrong with it
        return None
    if not (stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode)):
        return None
    return pipes.output_of(st)


def do_detach(chat, arg: str) -> None:
    """/detach: the files attached for the next message go."""
    gone, chat.attachments = chat.attachments, []
    chat.render.show("detached " + names(gone) if gone else "(nothing attached)")


def do_file(chat, arg: str, goes: str = "your next message") -> None:
    """/file PATH: attach a text file to the next message; /file alone lists what is attached."""
    if not arg:
        listed = names(chat.attachments)
        chat.render.show("attached for the next message: " + listed if listed else "(nothing attached)")
        return
    if arg == STDIN:
        raise UsageError("/file -: stdin is the chat's own input here; give a file path")
    if chat.options.one_shot:  # its attachment would wait for a message that never comes
        raise UsageError("/file: a one-shot prompt has no next message; attach with -f PATH")
    path_line, message = _path_then_message(arg)
    if message:  # `/file notes.txt`, a new line, a question (a paste, Esc-Enter): the file, then the question sent
        try:
            do_file(chat, path_line, "the message after it")
        except YiError as e:  # the question went unsaid, without a word of it
            again = "" if chat.options.batch else " (↑ recalls it)"
            raise (UsageError if isinstance(e, UsageError) else YiError)(
                f"{e}; the message after it was not sent{again}"
            ) from None
        chat.send(message)
        return
    _one_path(arg)
    path = as_dropped(arg)
    if own_input(path, shared=True):  # `/file /dev/stdin` in a piped chat: the rest of the input became the attachment
        raise UsageError(
            f"{shown(path, 200)}: is the chat's own input (stdin); attaching it would take the lines after this one"
        )
    try:
        a = read(path, waiting=chat.render.notice)
    except KeyboardInterrupt:  # Ctrl-C gave up a pipe's wait: said of the file, not a bare "interrupted"
        if chat.terminated or chat.options.batch:  # a signal ends the chat; Ctrl-C ends a piped run
            raise
        try:
            pipe = inputs.kind_of(inputs.user_path(path, UsageError)) == "FIFO"
        except (OSError, UsageError):
            pipe = False
        what = "the wait for what writes into it" if pipe else "its reading"
        raise UsageError(f"{shown(path, 200)}: not attached (Ctrl-C stopped {what})") from None
    check_total(chat.engine, [*chat.attachments, a])  # by its length alone, with the others: before tokenizing
    check_tokens(chat.engine, chat.settings, [*chat.attachments, a], added=True, system=chat.session.system)
    chat.attachments.append(a)
    lines = a.text.count("\n") + (bool(a.text) and not a.text.endswith("\n"))
    times = sum(b.name == a.name for b in chat.attachments)
    again = {1: "", 2: " (attached twice now)"}.get(times, f" (attached {times} times now)")
    size = f"{lines} line{'s' if lines != 1 else ''}" if a.text else "empty"
    chat.render.show(f"attached {names([a])} ({size}){again}; it goes with {goes}")
