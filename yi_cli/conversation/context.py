"""The overflow policy: which of the oldest exchanges a prompt drops to fit the context (pure, no torch)."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import YiError

SYSTEM_COUNTS = " (the system prompt counts too)"  # where /clear would not make room and one is set


def budget(ctx: int, max_new_tokens: int) -> int:
    """The prompt's tokens a context of `ctx` takes, the room kept for a reply taken off: a quarter of it at most,
    one token at least (a context under 4 kept none, and a prompt that filled it went to the engine with
    max_new_tokens 0: the fast engine's own limit said, or transformers' ValueError)."""
    return ctx - max(1, min(max_new_tokens, ctx // 4))


def remedy(one_shot: bool, clears: bool, lower: bool = True, more: bool = True, system: bool = False) -> str:
    """What a refusal says to do: shorten it; /clear where forgetting the exchanges would make room (a session's);
    more --context where the model takes more than the context is (a one-shot's: `more`); a lower max_new_tokens
    where the prompt fits the whole context (`lower`: "lower max_new_tokens" was said of a prompt past it, and "give
    more --context" at the most the model takes)."""
    if one_shot:  # (a resumed session's system prompt may be what is long: said, as a chat's refusal says it)
        flags = [f for f, ok in (("give more --context", more), ("a lower --max-new-tokens", lower)) if ok]
        return "shorten it" + (", or " + " or ".join(flags) if flags else "") + (SYSTEM_COUNTS if system else "")
    items = ["shorten it"] + ["/clear"] * clears + ["lower max_new_tokens"] * lower
    said = items[0] if len(items) == 1 else ", ".join(items[:-1]) + ", or " + items[-1]
    return said + (SYSTEM_COUNTS if system and not clears else "")


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
    context: int | None = None,
    more: bool = True,
) -> int:
    """How many of the oldest droppable messages (whole user + assistant exchanges) must go for the prompt to fit.

    total: tokens of the whole prompt; sizes: tokens of each droppable message's text, oldest first (the system
    prompt and the message being answered are not droppable); rebuild(n): tokens of the prompt without the first n.
    The sizes, plus the template's markers measured once, estimate how many must go, so the prompt is rebuilt about
    three times however many exchanges are dropped (the estimate, and one exchange fewer: that it does not
    fit). With policy "refuse", or when dropping everything is not enough,
    YiError (its message ends with what to do: `remedy`'s, which says the system prompt counts too where one is set
    and /clear would not make room: `system`). clearable: whether /clear would leave what is answered
    (not for /continue, whose reply /clear takes too). context: the whole context (a prompt past it is not helped
    by a lower max_new_tokens); more: whether a larger --context can be given (the model takes more).
    """

    def refuse(n: int, clears: bool = True):
        """clears: forgetting the exchanges would make room (else /clear, which keeps the system prompt, cannot)."""
        lower = context is None or n < context
        why = remedy(one_shot, clears and not one_shot, lower, more, system)
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
    lo, hi = 0, len(sizes)  # rebuild(lo) > budget >= rebuild(hi): the whole prompt is over, none of it fits
    for _ in range(3):  # the estimate, corrected twice
        while est > budget and n + 2 <= len(sizes):
            est -= sizes[n] + sizes[n + 1] + 2 * markers
            n += 2
        est = rebuild(n) if n < len(sizes) else base
        if est <= budget:
            hi = n
            break
        lo = n
    # The fewest between: an estimate past the budget by a fraction of a token (a saved count one off: a reply that
    # ended on its end-of-turn token) dropped one exchange more than the prompt needed, and the reply changed.
    # Sizes far off (a session file's token counts can be anything: 10**30, 0) moved the estimate one exchange a
    # rebuild, each as long as the conversation: a 50000-exchange file took hours. One exchange fewer first (the
    # estimate is most often right: then one rebuild more), then halving.
    if hi - lo > 2:
        if rebuild(hi - 2) <= budget:
            hi -= 2
        else:
            lo = hi - 2
    while hi - lo > 2:
        mid = lo + (hi - lo) // 4 * 2
        if rebuild(mid) <= budget:
            hi = mid
        else:
            lo = mid
    return hi
