"""A piped run's stdin (cli.run_pipe): its lines as its reads (pipes.chunks) bring them, whether it is UTF-16."""

from __future__ import annotations

import re

_ENDS = re.compile(rb"\r\n?|\n")


class TooLong:
    """In place of a line longer than `limit` bytes: the line is not kept (its bytes past the limit are read and
    dropped as they arrive, up to its end)."""

    def __init__(self, limit: int):
        self.limit = limit


def lines(reads, limit: int):
    """The lines of a sequence of reads, ended by LF, CRLF or a bare CR (classic Mac files, `\r`-joined output: it
    was one message, its slash commands sent to the model as text), without their endings; each as soon as its end
    arrives (a CR's too: iterating the stream waited for an LF, and held a CR-only stream whole). A CR that ends a
    read is taken for a line end at once; an LF right after it, in the next read, ends nothing more. A line longer
    than `limit` bytes comes as a TooLong as soon as it passes the limit: `yi-chat < /dev/zero` (one endless line)
    held it all in memory, gigabytes a few seconds, and said nothing."""
    parts, size, after_cr, dropping = [], 0, False, False
    for chunk in reads:
        start = 1 if after_cr and chunk[:1] == b"\n" else 0
        for m in _ENDS.finditer(chunk, start):
            if not dropping:
                parts.append(chunk[start : m.start()])
                size += m.start() - start
                yield b"".join(parts) if size <= limit else TooLong(limit)
            parts, size, start, dropping = [], 0, m.end(), False
        if start < len(chunk) and not dropping:
            parts.append(chunk[start:])
            size += len(chunk) - start
            if size > limit:
                yield TooLong(limit)
                parts, size, dropping = [], 0, True
        after_cr = chunk.endswith(b"\r")
    if parts:  # the last line, with no end
        yield b"".join(parts)


UTF16_BOMS = {b"\xff\xfe": "utf-16-le", b"\xfe\xff": "utf-16-be"}


def utf16(head: bytes) -> bool:
    """Whether stdin's first bytes are UTF-16 text: a byte order mark, then what reads as text in UTF-16 (a line
    end, mostly ASCII, or printable text throughout: a line of Chinese with no line end, as Notepad saves one, was
    skipped as invalid UTF-8), not invalid UTF-8 that starts with the mark's bytes."""
    codec = UTF16_BOMS.get(head[:2])
    if codec is None:
        return False
    text = head[2 : len(head) - len(head) % 2].decode(codec, "replace")
    if "\n" in text or 2 * sum(c < "\x80" for c in text) > len(text):
        return True
    whole = text[:-1] if text.endswith("\ufffd") else text  # a pair of surrogates cut by the read
    return bool(whole) and "\ufffd" not in whole and all(c.isprintable() or c in "\t\r" for c in whole)
