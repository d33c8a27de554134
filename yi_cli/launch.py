"""The `yi-chat` command's first module (and `python -m yi_cli`'s): the signals that end yi-chat are caught before
anything else is imported, then the CLI runs. Until the CLI's own handlers take over (~70 ms of imports on 2 cores),
Ctrl-C printed a KeyboardInterrupt traceback and SIGQUIT dumped core; now any of them ends the start with the
documented exit code and one line. Nothing is held yet: no terminal modes, no session."""

from __future__ import annotations

import os

from .errors import ENDING, catch

_GONE: list = []  # set by the first signal: a second one's handler, run inside the first's, writes no second line


def _early(signum, frame):
    if _GONE:
        return
    _GONE.append(signum)
    code, words = ENDING[signum]
    try:
        os.write(2, f"yi-chat: {words}\n".encode())
    except OSError:  # a hung-up terminal
        pass
    os._exit(code)


def entry() -> None:
    catch(ENDING, _early)
    from .ui.cli import entry as run

    run()
