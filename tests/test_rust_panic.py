"""rust_panic.reports_held: fd 2 held over a tokenizer's call, what others wrote there passed on, a Rust panic's
report left out."""

from __future__ import annotations

import os
import signal

import pytest

from yi_cli import rust_panic
from yi_cli.rust_panic import reports_held

REPORT = (
    b"\nthread '<unnamed>' (22095) panicked at src/tokenizer/normalizer.rs:373:36:\n"
    b"index out of bounds: the len is 13 but the index is 13\n"
    b"note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n"
)


class PanicException(BaseException):  # pyo3's name for a Rust panic; matched by name, as rust_panic does
    pass


def test_what_the_body_writes_reaches_stderr_after_it(capfd):
    with reports_held():
        os.write(2, b"a warning\n")
        assert capfd.readouterr().err == ""  # held while the call runs
    assert capfd.readouterr().err == "a warning\n"


def test_a_panics_report_is_left_out_and_what_came_before_it_kept(capfd):
    with pytest.raises(PanicException):
        with reports_held():
            os.write(2, b"a warning\n" + REPORT)
            raise PanicException("index out of bounds")
    assert capfd.readouterr().err == "a warning\n"


def test_another_exception_leaves_the_text_as_it_is(capfd):
    with pytest.raises(ValueError):
        with reports_held():
            os.write(2, REPORT)
            raise ValueError("not a panic")
    assert capfd.readouterr().err == REPORT.decode()


def test_fd_2_is_given_back_and_the_file_emptied_between_calls(capfd):
    before = os.fstat(2)
    for word in (b"one\n", b"two\n"):
        with reports_held():
            with reports_held():  # nested: held once
                os.write(2, word)
        after = os.fstat(2)
        assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    assert capfd.readouterr().err == "one\ntwo\n"
    assert rust_panic._saved is None


def test_a_signal_meanwhile_is_handled_once_fd_2_is_back(capfd):
    """Ctrl-C's handler (or SIGTERM's) raised inside the hold, at its start or its end, left fd 2 on the private
    file for the rest of the run (a review's loop met it 28 times in 555 holds); and a handler run inside it saw
    the file as stderr. The signal waits for the hold's end."""
    seen = []

    def handler(signum, frame):
        seen.append(os.fstat(2).st_ino)
        raise KeyboardInterrupt

    real = os.fstat(2).st_ino
    old = signal.signal(signal.SIGINT, handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with reports_held():
                os.write(2, b"held\n")
                signal.raise_signal(signal.SIGINT)
                os.write(2, b"still held\n")  # the handler has not run: the body goes on
    finally:
        signal.signal(signal.SIGINT, old)
    assert seen == [real] and rust_panic._saved is None
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "held\nstill held\nafter\n"
