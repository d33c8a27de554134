"""A piped run's reads of stdin (pipes.py, ui/stdin_lines.py): a signal never waits for the next line."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from yi_cli import pipes
from yi_cli.conversation import attach
from yi_cli.ui import stdin_lines


class Came(Exception):
    pass


def _blocked(tid: int) -> bool:
    """Thread tid waits in the kernel on something other than a lock (the GIL is a futex)."""
    wchan = Path(f"/proc/self/task/{tid}/wchan").read_text()
    return wchan not in ("", "0") and "futex" not in wchan


@pytest.mark.skipif(not Path(f"/proc/self/task/{os.getpid()}/wchan").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("reader", ["stdin", "fifo", "fifo's open"])
def test_a_signal_whose_handler_cannot_interrupt_the_read_still_runs_it(tmp_path, reader):
    """CI hung on a piped run sent Ctrl-C right after a reply: the signal came in the instant before the read of the
    next line entered the kernel, so it interrupted nothing and the handler waited for a line that never came. Here
    the signal is taken by another thread, which interrupts the main thread's wait no more than that instant did:
    the handler must run at once, before any input. `-f FIFO` / `/file FIFO` hung the same way (a stress run's
    count: 15 of 20 with the signal just after a chunk), and in its open while no writer had come."""
    w = None
    if reader == "stdin":
        r, w = os.pipe()
    else:
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        if reader == "fifo":
            w = os.open(fifo, os.O_RDWR)  # a writer already there: the reader's open does not wait for one
    main, handled, wrote = threading.get_native_id(), threading.Event(), []

    def other():
        while not _blocked(main):  # the main thread is in its read (or its select)
            time.sleep(0.001)
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)  # the C handler runs on this thread
        if not handled.wait(10):  # the read missed it: a line and the pipe's end end it, the only way out
            writer = w if w is not None else os.open(fifo, os.O_WRONLY)
            wrote.append(os.write(writer, b"a line\n"))
            os.close(writer)

    old = signal.signal(signal.SIGUSR1, lambda signum, frame: (_ for _ in ()).throw(Came()))
    thread = threading.Thread(target=other)
    try:
        thread.start()
        with pytest.raises(Came):
            if reader == "stdin":
                with os.fdopen(r, "rb") as stdin:
                    got = next(pipes.chunks(stdin))
            else:
                got = attach.read_bytes(str(fifo))
            pytest.fail(f"read {got!r} first")
        handled.set()
    finally:
        handled.set()
        thread.join()
        signal.signal(signal.SIGUSR1, old)
        if not wrote and w is not None:
            os.close(w)
    assert wrote == []


def test_reads_end_at_the_end_of_input_and_keep_every_byte():
    r, w = os.pipe()
    os.write(w, b"one\r\ntwo\rthree")
    os.close(w)
    with os.fdopen(r, "rb") as stdin:
        assert list(stdin_lines.lines(pipes.chunks(stdin), 100)) == [b"one", b"two", b"three"]


@pytest.mark.parametrize("split", [1, 3, 7, 64])
def test_a_line_past_the_limit_comes_as_too_long_once_and_the_lines_after_it_whole(split):
    data = b"12345678\n" + b"x" * 20 + b"\r\nok\n123456789\n" + b"y" * 30  # limit 8: the third and last too long
    reads = [data[i : i + split] for i in range(0, len(data), split)]
    got = list(stdin_lines.lines(iter(reads), 8))
    assert [g if isinstance(g, bytes) else ("too long", g.limit) for g in got] == [
        b"12345678",
        ("too long", 8),
        b"ok",
        ("too long", 8),
        ("too long", 8),
    ]


def test_an_endless_line_is_said_before_its_end(tmp_path):
    """One endless line (`< /dev/zero`) comes as TooLong once it passes the limit, not when (never) it ends."""
    endless = (b"z" * 5 for _ in iter(int, 1))
    lines = stdin_lines.lines(endless, 1000)
    assert isinstance(next(lines), stdin_lines.TooLong)


def test_read_upto_stops_at_its_limit_and_reads_a_short_input_whole():
    r, w = os.pipe()
    os.write(w, b"x" * 100)
    with os.fdopen(r, "rb") as stdin:
        assert pipes.read_upto(stdin, 40) == b"x" * 40  # the rest stays unread: refused as too large anyway
        os.close(w)
        assert pipes.read_upto(stdin, 1000) == b"x" * 60


def test_a_pipe_has_ended_once_its_writer_closed_it_and_it_is_read_out():
    """pipes.ended (when a piped run may hold the terminal's keys): not while the writer may still write, nor while
    what it wrote waits unread; yes once both are past, without reading anything."""
    r, w = os.pipe()
    with os.fdopen(r, "rb", buffering=0) as stdin:
        assert not pipes.ended(stdin)  # open, empty
        os.write(w, b"one\n")
        assert not pipes.ended(stdin)  # open, something to read
        os.close(w)
        assert not pipes.ended(stdin)  # closed, something still to read
        assert os.read(stdin.fileno(), 100) == b"one\n"
        assert pipes.ended(stdin)
        assert os.read(stdin.fileno(), 100) == b""  # nothing was taken by the look
