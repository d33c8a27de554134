"""A piped run's stdin (cli.run_pipe): its lines as its reads (pipes.chunks) bring them, whether it is UTF-16."""

from __future__ import annotations

import re

_ENDS = re.compile(rb"\r\n?|\n")


def lines(reads):
    """The lines of a sequence of reads, ended by LF, CRLF or a bare CR (classic Mac files, `\r`-joined output: it
    was one message, its slash commands sent to the model as text), without their endings; each as soon as its end
    arrives (a CR's too: iterating the stream waited for an LF, and held a CR-only stream whole). A CR that ends a
    read is taken for a line end at once; an LF right after it, in the next read, ends nothing more."""
    parts, after_cr = [], False
    for chunk in reads:
        start = 1 if after_cr and chunk[:1] == b"\n" else 0
        for m in _ENDS.finditer(chunk, start):
            parts.append(chunk[start : m.start()])
            yield b"".join(parts)
            parts, start = [], m.end()
        if start < len(chunk):
            parts.append(chunk[start:])
        after_cr = chunk.endswith(b"\r")
    if parts:  # the last line, with no end
        yield b"".join(parts)


def utf16(head: bytes) -> bool:
    """Whether stdin's first bytes are UTF-16 text: a byte order mark, then what reads as text in UTF-16 (a line
    end, or mostly ASCII), not invalid UTF-8 that starts with the mark's bytes."""
    codec = {b"\xff\xfe": "utf-16-le", b"\xfe\xff": "utf-16-be"}.get(head[:2])
    if codec is None:
        return False
    text = head[2 : len(head) - len(head) % 2].decode(codec, "replace")
    return "\n" in text or 2 * sum(c < "\x80" for c in text) > len(text)
