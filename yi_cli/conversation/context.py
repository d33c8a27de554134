"""The overflow policy: which of the oldest exchanges a prompt drops to fit the context (pure, no torch)."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import YiError

REMEDY = "shorten it, /clear, or lower max_new_tokens"  # a session's, where clearing would make room
NO_CLEAR = "shorten it, or lower max_new_tokens"  # where /clear would not
SYSTEM_COUNTS = " (the system prompt counts too)"  # NO_CLEAR's, where one is set
ONE_SHOT = "shorten it, or give more --context or a lower --max-new-tokens"  # a one-shot run's (it has no /clear)


def past_any(messages: list[dict], ctx: int, chars_per_token: float) -> int:
    """How many of the oldest droppable messages (whole exchanges) go before the prompt is rendered at all: as few
    as leave the others within the context by the fewest tokens they can take, a token each `chars_per_token`
    characters (the most one of the vocabulary stands for: Template.most_chars_per_token) and one for each
    message's markers. Those could not fit (with one fewer gone the rest is past the context), and fit would drop
    them first; rendered, a session of 50,000 exchanges or of one 30 MB message met the template's own bounds at
    every message."""

    def least(m: dict) -> float:
        return len(m["content"]) / chars_per_token + 1

    total = sum(map(least, messages))
    n = 0
    while total > ctx and n + 2 <= len(messages):
        total -= least(messages[n]) + least(messages[n + 1])
        n += 2
    return n


def fit(
    rebuild: Callable[[int], int],
    total: int,
    sizes: list[int],
    budget: int,
    policy: str = "drop",
    one_shot=False,
    system=False,
    clearable=True,
) -> int:
    """How many of the oldest droppable messages (whole user + assistant exchanges) must go for the prompt to fit.

    total: tokens of the whole prompt; sizes: tokens of each droppable message's text, oldest first (the system
    prompt and the message being answered are not droppable); rebuild(n): tokens of the prompt without the first n.
    The sizes, plus the template's markers measured once, estimate how many must go, so the prompt is rebuilt about
    twice however many exchanges are dropped. With policy "refuse", or when dropping everything is not enough,
    YiError (its message ends with what to do: ONE_SHOT for a one-shot run, else REMEDY or NO_CLEAR, which says the
    system prompt counts too where one is set: `system`). clearable: whether /clear would leave what is answered
    (not for /continue, whose reply /clear takes too).
    """

    def refuse(n: int, clears: bool = True):
        """clears: forgetting the exchanges would make room (else /clear, which keeps the system prompt, cannot)."""
        why = ONE_SHOT if one_shot else REMEDY if clears else NO_CLEAR + (SYSTEM_COUNTS if system else "")
        return YiError(
            f"the prompt is {n} tokens but only {budget} fit in the context (after reserving room for the reply); {why}"
        )

    if policy == "refuse" or not sizes:
        raise refuse(total, clearable and bool(sizes) and rebuild(len(sizes)) <= budget)
    assert len(sizes) % 2 == 0, "droppable messages come in whole exchanges"
    base = rebuild(len(sizes))  # the prompt with every droppable message gone
    if base > budget:
        raise refuse(base, False)
    markers = (total - base - sum(sizes)) / len(sizes)  # template tokens around each message
    n, est = 0, total
    for _ in range(3):  # the estimate, corrected twice
        while est > budget and n + 2 <= len(sizes):
            est -= sizes[n] + sizes[n + 1] + 2 * markers
            n += 2
        est = rebuild(n) if n < len(sizes) else base
        if est <= budget:
            return n
    # Sizes far off (a session file's token counts can be anything: 10**30, 0) moved the estimate one exchange a
    # rebuild, each as long as the conversation: a 50000-exchange file took hours. Halving: rebuild(lo) > budget >=
    # rebuild(hi).
    lo, hi = n, len(sizes)
    while hi - lo > 2:
        mid = lo + (hi - lo) // 4 * 2
        if rebuild(mid) <= budget:
            hi = mid
        else:
            lo = mid
    return hi
