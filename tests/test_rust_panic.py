"""rust_panic.reports_held: fd 2 held over a tokenizer's call, what others wrote there passed on, a Rust panic's
report left out."""

from __future__ import annotations

import os

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


def test_a_signals_exception_inside_the_ending_still_gives_fd_2_back(capfd, monkeypatch):
    """A Ctrl-C raised while the held call ends (inside _pass_on, before fd 2 is put back) left every later line of
    the run in the private file; the end is finished, then the KeyboardInterrupt raised."""
    real, cuts = rust_panic._pass_on, []

    def cut_once(failed):
        if not cuts:
            cuts.append(1)
            raise KeyboardInterrupt
        real(failed)

    monkeypatch.setattr(rust_panic, "_pass_on", cut_once)
    with pytest.raises(KeyboardInterrupt):
        with reports_held():
            os.write(2, b"held\n")
    os.write(2, b"the ending's line\n")
    assert capfd.readouterr().err == "held\nthe ending's line\n"
    assert rust_panic._saved is None
