"""What was typed ahead when a chat at a terminal ends by a signal (SIGTERM, `kill -HUP`, SIGQUIT) or by Ctrl-C while
the model loads: lines typed during a reply wait, unechoed, in the terminal's input queue for the next prompt (keys.py).
With no next prompt they went to the shell, which ran each as a command, and the messages were lost. They are taken
out of the queue instead and kept in the input history, where ↑ at the next prompt finds them (no torch, no
prompt_toolkit).

The keys are raw (the hold turns line editing off): `lines` edits them as the prompt would have, for the keys a
line is made of: Enter ends a message, Esc then Enter and a paste's line breaks are lines of one message, Backspace,
Ctrl-U and Ctrl-W erase; cursor and function keys are dropped, the text going on at the end.
"""

from __future__ import annotations

import datetime
import errno
import os
import re
import stat
from pathlib import Path

from ..paths import data_dir, private_dir

PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"
HISTORY_ENTRY_CHARS = 64 << 10  # the longest entry of the input history that ↑ recalls (repl.TailHistory)
# a key's escape sequence: CSI (arrows, Delete, function keys, with modifiers), SS3 (arrows in application mode),
# or Alt with a key
_ESCAPE = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|O.|.)?", re.S)


def history_path():
    """The REPL's input history (prompt_toolkit's FileHistory format)."""
    return data_dir() / "history"


def lines(keys: str) -> list[str]:
    """The messages in keys typed at a prompt that never came: each Enter ends one; what follows the last Enter is
    one too (a message not sent yet). Blank ones are left out."""
    out: list[str] = []
    line: list[str] = []
    pos = 0
    while pos < len(keys):
        ch = keys[pos]
        if keys.startswith(PASTE_START, pos):  # a paste: its text as it is, line breaks included
            end = keys.find(PASTE_END, pos)
            end = len(keys) if end < 0 else end
            line += keys[pos + len(PASTE_START) : end].replace("\r\n", "\n").replace("\r", "\n")
            pos = end + len(PASTE_END)
            continue
        if ch == "\x1b" and keys[pos + 1 : pos + 2] in ("\r", "\n"):  # Esc then Enter (Alt-Enter): a new line
            line.append("\n")
            pos += 2
            continue
        if ch == "\x1b":
            pos = _ESCAPE.match(keys, pos).end()
            continue
        pos += 1
        if ch in "\r\n":
            out.append("".join(line))
            line = []
        elif ch in "\x7f\x08":  # Backspace
            line = line[:-1]
        elif ch == "\x15":  # Ctrl-U: the line so far
            line = []
        elif ch == "\x17":  # Ctrl-W: the word before the cursor
            line = list(re.sub(r"\S*\s*$", "", "".join(line)))
        elif ch == "\t" or ch >= " ":
            line.append(ch)
    out.append("".join(line))
    return [text for text in out if text.strip()]


class NotRegularFile(OSError):
    """The history's path is something other than a regular file (a FIFO, a device, a folder)."""


def open_history(path: Path | None = None) -> int:
    """The input history file (path, else history_path()) opened for appending, made if missing, mode 0600 (another
    user's file there is refused: the chmod fails). Opened non-blocking: a FIFO in its place would wait for a reader,
    and a link to /dev/zero would be read without end, so anything but a regular file raises NotRegularFile; OSError
    where the folder or the file is not ours to write."""
    path = path or history_path()
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY | getattr(os, "O_NONBLOCK", 0), 0o600)
    except OSError as e:  # ENXIO: a FIFO that no one reads (opened for writing without waiting), or a device gone
        if e.errno == errno.ENXIO:
            raise NotRegularFile(f"not a regular file: {path}") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(f"not a regular file: {path}")
        os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def keep(messages: list[str]) -> bool:
    """Append messages to the input history file; False where the file cannot be written."""
    try:
        append(messages)
        return True
    except OSError:
        return False


def append(messages: list[str], path: Path | None = None) -> None:
    """Append messages to the input history file as prompt_toolkit's FileHistory stores a line (its lines
    `+`-prefixed under a `#` timestamp), through open_history: OSError where it cannot be written."""
    fd = open_history(path)
    try:
        stamp = datetime.datetime.now()
        text = "".join(f"\n# {stamp}\n" + "".join(f"+{ln}\n" for ln in m.split("\n")) for m in messages)
        # one write: another yi-chat's lines stay whole. A key's bytes that the terminal's encoding did not decode
        # (PYTHONIOENCODING=ascii and UTF-8 typed) arrive as surrogates: written back as the bytes they were (an
        # encode error here was prompt_toolkit's traceback at every such message)
        os.write(fd, text.encode("utf-8", "surrogateescape"))
    finally:
        os.close(fd)


def said(messages: list[str], kept: bool) -> str:
    """The ending line's words for them: how many, and where they are (or that they could not be kept)."""
    n = len(messages)
    what = f"{n} message{'s' if n > 1 else ''} typed ahead {'were' if n > 1 else 'was'} not sent"
    if kept and all(len(m) <= HISTORY_ENTRY_CHARS for m in messages):
        return f"{what}: in the input history (↑ at the next prompt)"
    if kept:  # a paste of 200 KB: in the file, but too long for ↑ to recall (it was promised)
        from ..errors import shown

        return f"{what}: in the input history file {shown(str(history_path()), 200)} (too long for ↑ to recall)"
    # never echoed, they were nowhere else: each as a JSON string, to copy (a line break in one as \n)
    import json

    from ..safe_text import json_line

    texts = ", ".join(json_line(json.dumps(m, ensure_ascii=False)) for m in messages)
    return f"{what}, and the input history could not be written; {'they were' if n > 1 else 'it was'}: {texts}"
