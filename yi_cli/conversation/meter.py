"""The context meter: the tokens of the conversation as /prompt shows and counts it, kept in step with each reply
without tokenizing the conversation again (no torch)."""

from __future__ import annotations

from ..engines.template import Prompt
from ..errors import YiError

KEEP = 8  # the counts of the last conversation states: /undo goes back to one of them


def key(messages: list[dict]) -> tuple:
    return tuple((m["role"], m["content"]) for m in messages)


class Over(int):
    """A count known only to be past the context (`ctx >8192/8192`): a conversation so long its length alone says so
    is not tokenized (a loaded session of 30 MB held the prompt 23 s and 4 GB at each change, counting it)."""

    def __str__(self) -> str:
        return f">{int(self)}"

    def __format__(self, spec: str) -> str:  # f-strings use it, not __str__
        return format(str(self), spec)


def surely_over(tpl, messages: list[dict], ctx: int | None) -> bool:
    """Whether `messages` are past `ctx` tokens by their characters alone (Template.surely_over's bound)."""
    return ctx is not None and sum(len(m["content"]) for m in messages) > tpl.most_chars_per_token() * ctx


class Meter:
    """Tokens of the conversation as it stands, each turn closed: the text /prompt shows with its count, the prompt
    the next request starts with before the user's message (and the opening of the reply) is added to it.

    A conversation that comes by other ways than a reply (a loaded or resumed session, /system, /undo past the
    states kept) is counted in full once, as /prompt counts it. After a reply it is counted from the reply's own
    prompt: its ids are the conversation up to the reply's opening, so the count is theirs less the opening's, plus
    the tokens of the reply's part (its opening, text and closing: Template.reply_part) tokenized alone. The part
    starts with a special token and tokenizes alone as it does at the end of the whole text, and the template writes
    the reply there as it writes the exchange alone (the prompt ends with the same opening): /prompt's count
    exactly, at the cost of the new text (re-tokenizing the conversation after every reply would double the
    tokenizing of a turn at 200K tokens of context). A template whose part cannot be cut out so gets the full
    count."""

    def __init__(self):
        self.counts: dict[tuple, int] = {}  # conversation -> its count, the last KEEP states
        self.opening: tuple = (None, None, 0)  # (template, a reply's opening: the same every reply, its count)

    def used(self, tpl, messages: list[dict]) -> int:
        """The count of `messages` (the toolbar asks on every redraw: counted only when not known)."""
        k = key(messages)
        n = self.counts.get(k)
        if n is None:
            try:
                n = len(tpl.build(messages, opening=False).ids)
            except YiError:  # a template that refuses these messages (a system prompt alone): the toolbar goes on
                n = 0  # and asks again only when they change
            self._keep(k, n)
        return n

    def replied(self, tpl, prompt: Prompt, messages: list[dict]) -> None:
        """`messages`, the conversation with the reply to `prompt` in it (any exchanges it dropped gone too)."""
        user, reply = messages[-2]["content"], messages[-1]["content"]
        n = None
        if prompt.continue_final:  # /continue: the last reply's part grows, the conversation before it stays
            before = self.counts.get(key(prompt.messages))
            cut, grown = tpl.reply_part(user, prompt.messages[-1]["content"]), tpl.reply_part(user, reply)
            if before is not None and cut and grown:
                n = before - tpl.count(cut[1]) + tpl.count(grown[1])
        elif (part := tpl.reply_part(user, reply)) and prompt.text.endswith(part[0]):
            if self.opening[:2] != (tpl, part[0]):
                self.opening = (tpl, part[0], tpl.count(part[0]))
            n = len(prompt.ids) - self.opening[2] + tpl.count(part[1])
        if n is None:
            self.counts.pop(key(messages), None)  # counted in full when asked
        else:
            self._keep(key(messages), n)

    def _keep(self, k: tuple, n: int) -> None:
        self.counts.pop(k, None)
        self.counts[k] = n
        while len(self.counts) > KEEP:
            del self.counts[next(iter(self.counts))]
