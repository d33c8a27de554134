"""Shared test helpers: a scripted engine (the Engine protocol over queued replies), its word-level template, and a
Chat that renders plain text into strings."""

from __future__ import annotations

import threading
import time

from rich.console import Console

from yi_cli.engines.events import FINISH_INTERRUPTED, FINISH_LENGTH, FINISH_STOP, Finish, Stats, Text
from yi_cli.engines.template import Prompt
from yi_cli.ui.render import PlainRenderer


class WordTemplate:
    """A template whose tokens are words: 4 per message for the markers, one per word of content."""

    stop_ids: set = set()
    builds = 0  # prompts built, over all instances (tests check a turn builds its prompt once)

    def render(self, messages, continue_final=False, opening=True):
        return "".join(f"<{m['role']}> {m['content']} " for m in messages)

    def build(self, messages, continue_final=False, opening=True):
        WordTemplate.builds += 1
        n = sum(len(m["content"].split()) + 4 for m in messages)
        return Prompt(list(messages), list(range(n)), self.render(messages, continue_final), continue_final)

    def reply_part(self, user, reply):
        """(opening, part) as Template's: no opening, and a part of the reply's 4 markers and its words."""
        return "", " ".join(["<assistant>"] * 4 + [reply])

    def count(self, text):
        return len(text.split())

    def surely_over(self, text, tokens):
        return False  # a word is one token however long: no length alone is surely over

    def most_chars_per_token(self):
        return float("inf")  # (as surely_over: no bound)

    def default_system(self):
        return None


class BoundedTemplate(WordTemplate):
    """WordTemplate with a proven bound on a token's length, as Template.surely_over has: 10 characters."""

    def surely_over(self, text, tokens):
        return len(text) > self.most_chars_per_token() * tokens

    def most_chars_per_token(self):
        return 10


CUT = "the reply stopped at the token limit (--max-new-tokens)\n"  # a piped reply cut short says so on stderr


class ScriptedEngine:
    """Replies with queued texts, word by word; honours cancel and max_new_tokens like a real engine."""

    name = "scripted"
    quant = None
    context_length = 10_000
    template = WordTemplate()

    def __init__(
        self, replies=(), delay: float = 0.0, fail_with: Exception | None = None, hold_after: int | None = None
    ):
        self.replies = list(replies)
        self.delay = delay
        self.fail_with = fail_with
        self.hold_after = hold_after  # after this many words, wait for cancel: only Ctrl-C ends the reply
        self.seen: list[list[dict]] = []  # the messages of each call
        self.prompts: list = []  # the Prompt of each call
        self.settings_seen: list = []  # the GenSettings of each call
        self.seeds: list = []  # the sampling seed of each call
        self.holding = threading.Event()  # set while a reply waits for cancel (hold_after)

    def count(self, messages):
        return len(self.template.build(messages).ids)

    def describe(self):
        return ["a scripted engine"]

    def stream(self, prompt, settings, cancel):
        messages = prompt.messages
        self.seen.append([dict(m) for m in messages])
        self.prompts.append(prompt)
        self.settings_seen.append(settings)
        self.seeds.append(settings.seed)
        if self.fail_with is not None:
            raise self.fail_with
        words = (self.replies.pop(0) if self.replies else "echo: " + messages[-1]["content"]).split(" ")
        stats = Stats(prompt_tokens=len(prompt.ids), ttft_s=0.01)
        for i, w in enumerate(words):
            if i == self.hold_after:
                self.holding.set()
                cancel.wait(60)  # bounded: a broken Ctrl-C fails the test instead of hanging it
            if cancel.is_set():
                stats.finish_reason = FINISH_INTERRUPTED
                yield Finish(stats)
                return
            if stats.new_tokens == settings.max_new_tokens:
                stats.finish_reason = FINISH_LENGTH
                yield Finish(stats)
                return
            yield Text(w if i == 0 else " " + w)
            stats.new_tokens += 1
            time.sleep(self.delay)
        stats.finish_reason = FINISH_STOP
        yield Finish(stats)


def plain_chat(engine, **kw):
    """A Chat writing plain text into strings: returns (chat, stdout buffer, stderr buffer)."""
    import io

    from yi_cli.conversation.chat import Chat

    out, err = io.StringIO(), io.StringIO()
    render = PlainRenderer(
        Console(file=out, width=100, color_system=None), Console(file=err, width=200, color_system=None), out=out
    )
    return Chat(engine, render, **kw), out, err
