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
