"""Messages -> token ids via the tokenizer's chat template (ChatML fallback for Yi); stop-token set; fitting."""
from __future__ import annotations

from . import family
from .errors import YiError

# Yi chat models use ChatML; some Yi tokenizers ship without a template (DESIGN.md).
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# End-of-turn / end-of-text markers of ChatML models. Yi: <|endoftext|>=2, <|im_start|>=6, <|im_end|>=7, <|im_sep|>=8.
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|im_start|>", "<|im_sep|>", "<|eot_id|>", "<|end|>")


def template_of(tokenizer) -> str | None:
    """The chat template to use: the tokenizer's own, ChatML for ChatML vocabularies, else None (raw).

    Yi's shipped template is replaced by ChatML (it prints a system prompt unwrapped), and a known Yi base model
    gets None: its vocabulary has the ChatML tokens but it was never tuned to chat.
    """
    tpl = getattr(tokenizer, "chat_template", None)
    if isinstance(tpl, dict):  # several named templates: take the default one
        tpl = tpl.get("default") or next(iter(tpl.values()), None)
    if tpl:
        return CHATML if family.is_shipped_yi_template(tpl) else tpl
    if family.is_base(getattr(tokenizer, "name_or_path", "")):
        return None
    vocab = tokenizer.get_vocab()
    return CHATML if "<|im_start|>" in vocab and "<|im_end|>" in vocab else None


AUTO = "auto"  # resolve the template with template_of; callers that build many prompts resolve it once


def render(tokenizer, messages: list[dict], template: str | None = AUTO) -> str:
    """The exact prompt text (special tokens included) the model sees for `messages`; template None means raw."""
    if template == AUTO:
        template = template_of(tokenizer)
    if template is None:
        return "".join(m["content"] for m in messages if m["role"] != "system")
    return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=True)


def build_ids(tokenizer, messages: list[dict], template: str | None = AUTO) -> list[int]:
    if template == AUTO:
        template = template_of(tokenizer)
    text = render(tokenizer, messages, template)
    # The template already wrote the special tokens; a raw prompt gets the tokenizer's usual bos.
    return list(tokenizer(text, add_special_tokens=template is None)["input_ids"])


def stop_ids(tokenizer, config=None, generation_config=None) -> set[int]:
    """Every id that ends a reply: tokenizer eos, the model's eos ids, and the template's end-of-turn tokens."""
    ids: set[int] = set()
    for src in (tokenizer, config, generation_config):
        eos = getattr(src, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, (list, tuple)):
            ids.update(int(e) for e in eos)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in STOP_TOKENS if t in vocab)
    return ids


def fit(count, messages: list[dict], budget: int, policy: str = "drop") -> tuple[list[dict], int]:
    """Drop the oldest exchanges (never the system prompt or the last user turn) until `count(msgs) <= budget`.

    `count` maps messages to a token count. Returns (messages, number of messages dropped). With policy
    "refuse" nothing is dropped and an overflow raises YiError.
    """
    msgs = list(messages)
    dropped = 0
    n = count(msgs)
    while n > budget:
        first = 1 if msgs and msgs[0]["role"] == "system" else 0
        if policy == "refuse" or len(msgs) - first <= 1:
            raise YiError(f"the prompt is {n} tokens but only {budget} fit in the context "
                          f"(after reserving room for the reply); shorten it, /clear, or lower max_new_tokens")
        # Drop one exchange (user + assistant) so roles keep alternating.
        k = 2 if len(msgs) - first > 2 and msgs[first + 1]["role"] == "assistant" else 1
        del msgs[first:first + k]
        dropped += k
        n = count(msgs)
    return msgs, dropped
