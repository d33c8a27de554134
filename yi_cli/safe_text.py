"""Text from outside (model output, session files, server messages) made safe to print on a terminal.

An escape sequence in a reply or a loaded session can set the window title, write the clipboard (OSC 52), forge
links (OSC 8) or redraw the screen; bidi overrides reorder what is shown. Every C0/C1 control character but
newline and tab, DEL, and the bidi embedding/override/isolate marks are shown as visible escapes (ESC as `\\x1b`);
so are lone surrogates, which no stream can write as UTF-8: the one Python makes of a byte that is not UTF-8 in a
file's or a folder's name (surrogateescape) as that byte, `\\xff`, as the listings name it.
Stateless per character, so a sequence split across two streamed pieces is caught in either piece.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_JSON_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def visible(ch: str) -> str:
    """One unsafe character as its escape: surrogateescape's byte as that byte (`\\xe9`), others by code point."""
    c = ord(ch)
    if 0xDC80 <= c <= 0xDCFF:  # surrogateescape's byte
        c -= 0xDC00
    # past U+FFFF as \U000e0049: \ue0049 reads as U+E004 then 9
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" if c < 0x10000 else f"\\U{c:08x}"


def _visible(m: re.Match) -> str:
    return visible(m.group())


def safe(text: str) -> str:
    """`text` with control characters and escape sequences made visible; \\n and \\t kept, \\r\\n becomes \\n."""
    if not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub(_visible, text.replace("\r\n", "\n"))


def one_line(text: str) -> str:
    """safe(text) kept to one line: its line breaks (and U+2028/U+2029) escaped too. An error is one line on stderr,
    whatever it quotes: a path with a line break in it (a YI_CHAT_HOME, a cache folder) split the line in two."""
    # not safe()'s CRLF as LF: a file named `z\r\n.safetensors` was said as `z\n.safetensors`, no file's name
    return separators_visible(_UNSAFE.sub(_visible, text).replace("\n", "\\n"))  # \n as other lines write it


def separators_visible(text: str) -> str:
    """text with U+2028 and U+2029 (line and paragraph separators) as escapes: a terminal draws nothing or a box
    for them, and str.splitlines() breaks a line there."""
    return _SEPARATORS.sub(_visible, text)


_SEPARATORS = re.compile("[\u2028\u2029]")


def shows_unicode(encoding: str | None) -> bool:
    """A stream of `encoding` (None: UTF-8) writes every character: one of the UTF encodings."""
    return (encoding or "utf-8").lower().replace("-", "").replace("_", "") in ("utf8", "utf16", "utf32")


def encodable(text: str, encoding: str | None) -> str:
    """text as a terminal of `encoding` shows it: each character it cannot encode as its escape (`\\u4f60`), as
    the streams write it (streams.repair: errors="backslashreplace"). Done before a layout measures the text, so
    that it measures what the terminal shows (CJK measured 2 columns a character and written 6)."""
    if shows_unicode(encoding):
        return text
    text = re.sub("[\ud800-\udfff]", _visible, text)  # surrogateescape's bytes as bytes (`\\xe4`), as safe() shows them
    try:
        return text.encode(encoding, "backslashreplace").decode(encoding)
    except LookupError:  # an encoding Python does not know: as it is
        return text


class LineEnds:
    """A streamed reply's CRLF line ends as LF, whichever pieces the CR and the LF came in: a CR that ends a piece
    waits for the next (flush() gives it back where none came). A terminal showed a server's CRLF as `^M` where a
    pipe wrote LF, and a CRLF split across two chunks was `\\x0d` in a pipe too."""

    def __init__(self):
        self.cr = False

    def feed(self, piece: str) -> str:
        if self.cr:
            piece, self.cr = "\r" + piece, False
        piece = piece.replace("\r\n", "\n")
        if piece.endswith("\r"):
            piece, self.cr = piece[:-1], True
        return piece

    def flush(self) -> str:
        cr, self.cr = "\r" if self.cr else "", False
        return cr


def json_line(text: str) -> str:
    """A line of JSON (json.dumps with ensure_ascii=False, which escapes C0 alone) with the other characters safe()
    makes visible written as JSON escapes (C1, DEL, bidi marks, lone surrogates): the same string to a JSON reader,
    inert in a terminal that `cat`s the file (--json left a C1 CSI and U+202E raw). U+2028 and U+2029 too: valid
    in JSON, they end a line for str.splitlines() and JavaScript-based JSON-lines readers, which cut the object."""
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
