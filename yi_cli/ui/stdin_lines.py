"""A piped run's stdin (cli.run_pipe): its reads, its lines, whether it is UTF-16.

A signal that arrives in the instant before a read blocks is not lost. Python runs a handler in the main thread
between bytecodes; a signal that came after the last check and before read() entered the kernel interrupted nothing,
so the read went on waiting and Ctrl-C between two replies of `slow-producer | yi-chat` did nothing (CI met it: a
piped run sent SIGINT right after a reply hung until killed, about 1 run in 40). Each read waits in select() on
stdin and on the signal wakeup descriptor (signal.set_wakeup_fd), which the interpreter writes to whenever a
signal arrives: the wait ends, and the handler runs."""

from __future__ import annotations

import os
import re
import select
import signal
import threading

_ENDS = re.compile(rb"\r\n?|\n")
READ = 1 << 16


def chunks(stdin, size: int = READ):
    """stdin's reads, each as soon as it arrives, until its end. stdin: a binary stream; one that has a descriptor
    is read through it (what a buffered stream held is not read: nothing reads a piped run's stdin before this)."""
    fd = _descriptor(stdin)
    if fd is None or os.name != "posix" or threading.current_thread() is not threading.main_thread():
        read = getattr(stdin, "read1", stdin.read)
        while chunk := read(size):
            yield chunk
        return
    wake, woken = os.pipe()
    os.set_blocking(wake, False)
    os.set_blocking(woken, False)
    old = signal.set_wakeup_fd(woken, warn_on_full_buffer=False)
    try:
        while True:
            ready = select.select([fd, wake], [], [])[0]
            if wake in ready:  # a signal came: its handler runs at the next line (Ctrl-C raises there)
                _drain(wake)
            if fd in ready:
                if not (chunk := os.read(fd, size)):
                    return
                yield chunk
    finally:
        signal.set_wakeup_fd(old)
        os.close(wake)
        os.close(woken)


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


def _descriptor(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.BytesIO: UnsupportedOperation (an OSError)
        return None


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
