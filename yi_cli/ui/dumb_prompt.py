"""The prompt on a dumb terminal (TERM=dumb: Emacs' shell, some IDE consoles): the line drawn as it is (no torch).

prompt_toolkit's plain prompt for such a terminal echoes, at each change of the line, only the character before the
cursor: a paste showed its last character, a Backspace drew the character it left (`helloo`, two Backspaces: the
screen said `helloool`, `hell` was sent), ↑ showed nothing of the line it recalled, Tab's completion one character of
what it added. Here a change that adds at the end writes what it added; any other redraws the line: over itself
with a carriage return where it is one row (the only cursor move such a terminal has), else on a new line. So the
screen holds the line that Enter sends, as typed or recalled.
"""

from __future__ import annotations

import contextlib

from prompt_toolkit import PromptSession
from prompt_toolkit.formatted_text import fragment_list_to_text, to_formatted_text
from prompt_toolkit.utils import get_cwidth

CONTINUATION = "... "  # before each line of a message after its first, as the full prompt draws it


def rows(text: str) -> str:
    """A message's text as written: its lines after the first behind CONTINUATION, so that the scrollback tells a
    message's second line from the reply's text."""
    return text.replace("\n", "\r\n" + CONTINUATION)


def redraw(prompt: str, old: str, new: str, columns: int) -> str:
    """What to write to turn the line drawn as `old` (after `prompt`) into `new`, the cursor at its end."""
    if new.startswith(old):
        return rows(new[len(old) :])
    if "\n" in old + new or get_cwidth(prompt + max(old, new, key=get_cwidth)) >= columns:
        return "\r\n" + prompt + rows(new)  # rows a carriage return cannot reach: the line again below
    gone = max(get_cwidth(old) - get_cwidth(new), 0)
    return "\r" + prompt + new + " " * gone + ("\r" + prompt + new if gone else "")


_ACTIVE: list = []  # the line's redraw of the dumb prompt reading a line now (Session._dumb_prompt)


def resumed() -> None:
    """Back from a stop (Ctrl-Z, then `fg`) at a dumb prompt: the prompt and the line so far written again where the
    shell left the cursor. Nothing redrew them: `fg` left a bare row, and Enter sent a draft the screen did not
    show."""
    if _ACTIVE:
        _ACTIVE[-1]()


class Session(PromptSession):
    """A PromptSession whose dumb-terminal prompt draws the line as it is (the module's docstring)."""

    @contextlib.contextmanager
    def _dumb_prompt(self, message=""):
        with super()._dumb_prompt(message) as app:
            changed = self.default_buffer.on_text_changed
            theirs = changed._handlers[-1:]  # the one-character echo it has just added
            for handler in theirs:
                changed -= handler
            prompt = fragment_list_to_text(to_formatted_text(message))
            drawn = [""]  # after the prompt, which it has written: a default line is not (it echoes changes only)

            def draw(buffer) -> None:
                out = redraw(prompt, drawn[0], buffer.text, self.output.get_size().columns)
                drawn[0] = buffer.text
                if out:
                    self.output.write(out)
                    self.output.flush()

            def again() -> None:
                drawn[0] = self.default_buffer.text
                self.output.write(prompt + rows(drawn[0]))
                self.output.flush()

            changed += draw
            draw(self.default_buffer)
            _ACTIVE.append(again)
            try:
                yield app
            except KeyboardInterrupt:  # Ctrl-C drops the line: marked, as the full prompt marks it (the plain
                self.output.write("^C")  # prompt's own Ctrl-C binding goes before repl.bindings' one, which does)
                raise
            finally:
                _ACTIVE.remove(again)
                changed -= draw
