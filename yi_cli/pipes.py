"""Reads of a pipe (a piped run's stdin, `-p -`) that a signal never waits behind.

Python runs a signal's handler in the main thread between bytecodes. A signal that came after the last check and
before read() entered the kernel interrupted nothing: the read went on waiting, and Ctrl-C between two replies of
`slow-producer | yi-chat` did nothing (CI met it: a piped run sent SIGINT right after a reply hung until killed,
about 1 run in 40). Each read here waits in select() on the descriptor and on the signal wakeup descriptor
(signal.set_wakeup_fd), which the interpreter writes to whenever a signal arrives: the wait ends, the handler runs."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import stat
import threading

READ = 1 << 16


def chunks(stream, size: int = READ):
    """A binary stream's reads, each as soon as it arrives, until its end. One that has a descriptor
    is read through it (what a buffered stream held is not read: nothing reads stdin before this)."""
    fd = _descriptor(stream)
    if fd is None or os.name != "posix":
        read = getattr(stream, "read1", stream.read)
        while chunk := read(size):
            yield chunk
        return
    # off the main thread no signal is handled here: select() on the descriptor alone (a FIFO opened without
    # blocking waits there for its writer: a read would find no writer and end at once)
    wake = woken = None
    if threading.current_thread() is threading.main_thread():
        wake, woken = os.pipe()
        os.set_blocking(wake, False)
        os.set_blocking(woken, False)
        old = signal.set_wakeup_fd(woken, warn_on_full_buffer=False)
    try:
        while True:
            ready = select.select([fd] if wake is None else [fd, wake], [], [])[0]
            if wake in ready:  # a signal came: its handler runs at the next line (Ctrl-C raises there)
                _drain(wake)
            if fd in ready:
                try:
                    chunk = os.read(fd, size)
                except BlockingIOError:  # a FIFO opened without blocking, its writer not there yet
                    continue
                if not chunk:
                    return
                yield chunk
    finally:
        if wake is not None:
            signal.set_wakeup_fd(old)
            os.close(wake)
            os.close(woken)


def read_upto(stream, limit: int) -> bytes:
    """Up to `limit` bytes of a binary stream, read as chunks() does: to its end, or until `limit` are in."""
    out = bytearray()
    with contextlib.closing(chunks(stream, min(READ, limit))) as reads:
        for chunk in reads:
            out += chunk
            if len(out) >= limit:
                break
    return bytes(out[:limit])


def writes_into_stdin() -> str | None:
    """ "stdout" or "stderr" where it appends to the regular file stdin reads, not read to its end yet (`< f >> f`):
    each line written would be read back as a line, without end (a runaway chat with itself until the disk filled;
    `cat` refuses it as "input file is output file"). An emptied one (`< f > f`) is at its end: nothing is read."""
    try:
        st = os.fstat(0)
        if not stat.S_ISREG(st.st_mode) or os.lseek(0, 0, os.SEEK_CUR) >= st.st_size:
            return None
    except OSError:
        return None
    return output_of(st)


def output_of(st: os.stat_result, streams=((1, "stdout"), (2, "stderr"))) -> str | None:
    """ "stdout" or "stderr" where that descriptor is the file `st` describes (its device and inode); `streams`:
    the descriptors looked at, and their names."""
    for fd, name in streams:
        with contextlib.suppress(OSError):
            out = os.fstat(fd)
            if (out.st_dev, out.st_ino) == (st.st_dev, st.st_ino):
                return name
    return None


STANDARD = ((0, "input (stdin)"), (1, "output (stdout)"), (2, "error output (stderr)"))


def ended(stream) -> bool:
    """Whether a pipe's (FIFO's, socket's) writer has closed it and all it wrote has been read out of it (not
    necessarily used yet), found without reading: it is ready and has nothing in it."""
    import fcntl
    import struct
    import termios

    fd = _descriptor(stream)
    if fd is None or os.name != "posix":
        return False
    try:
        if not select.select([fd], [], [], 0)[0]:
            return False
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0] == 0
    except (OSError, ValueError):
        return False


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
