"""Messages -> Prompt(ids, text) through the tokenizer's chat template (ChatML fallback for Yi), built once per turn;
the stop-token set; streaming detokenization. No torch here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..checkpoint.files import TEMPLATE_LIMIT
from ..errors import LoadError, YiError, failed, failure, first_line, shown
from ..rust_panic import reports_held
from . import timebox

# Characters of a text one character of a token can stand for: NFKC and the like fold a few into one ("e" + U+0301
# into "é"); Template.surely_over's margin.
CHARS_PER_TOKEN_CHAR = 4
TEMPLATE_SECONDS = 10.0  # a template renders in milliseconds; a loaded machine compiling it first takes ~0.1 s
# What a rendered prompt may add to its messages' text: a template's markers and default system prompt are KBs; one
# that writes more is refused before the tokenizer sees it (16M characters for "hi" took the tokenizer 49 s and
# 4.5 GB, 208M had it abort the process).
RENDER_SLACK = 1 << 20
# What a render may add to the process's resident memory: a 200K-token conversation's text is a few MB; a template
# that writes 16 MB a pass in a loop took 10 GB before the time limit
TEMPLATE_MEMORY = 512 << 20

# Yi chat models use ChatML; some Yi tokenizers ship without a template.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# End-of-turn / end-of-text markers of ChatML models. Yi: <|endoftext|>=2, <|im_start|>=6, <|im_end|>=7, <|im_sep|>=8.
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|im_start|>", "<|im_sep|>", "<|eot_id|>", "<|end|>")
# Message texts no template rewrites or meets in a real chat: default_system finds where the template puts them.
PROBE_SYSTEM, PROBE_USER = "yi-chat-probe-system-7Q", "yi-chat-probe-user-7Q"


@dataclass(frozen=True)
class Prompt:
    """What one reply is generated from. `ids`/`text` are None for engines that tokenize server-side."""

    messages: list[dict]
    ids: list[int] | None = None
    text: str | None = None
    continue_final: bool = False  # the last message is an assistant reply to extend, not a closed turn


def template_of(tokenizer) -> str | None:
    """The chat template to use: the tokenizer's own, ChatML for ChatML vocabularies, else None (raw).

    Yi's shipped template is replaced by ChatML (it prints a system prompt unwrapped), and a known Yi base model
    gets None: its vocabulary has the ChatML tokens but it was never tuned to chat.
    """
    from ..checkpoint import family

    tpl = getattr(tokenizer, "chat_template", None)
    if isinstance(tpl, dict):  # several named templates: take the default one
        tpl = tpl.get("default") or next(iter(tpl.values()), None)
    if tpl is not None and not isinstance(tpl, str):  # `"chat_template": 5` (or true, or a list of them): it was
        # an internal error (AttributeError) as the model loaded
        where = Path(getattr(tokenizer, "name_or_path", "") or ".") / "tokenizer_config.json"
        raise LoadError(
            f"{shown(str(where), 200)}: chat_template is not text ({shown(repr(tpl), 40)}); --raw runs the model "
            "without it"
        )
    if tpl:
        return CHATML if family.is_shipped_yi_template(tpl) else tpl
    if family.is_base(getattr(tokenizer, "name_or_path", "")):
        return None
    vocab = tokenizer.get_vocab()
    return CHATML if "<|im_start|>" in vocab and "<|im_end|>" in vocab else None


def template_file(where: str) -> Path | str:
    """The file a checkpoint's chat template came from (looked up where a template is refused, not at every load):
    in the order the tokenizer takes the default template (the last read wins: additional_chat_templates/default.jinja
    over chat_template.jinja, which was named for it)."""
    folder = Path(where)
    files = ("additional_chat_templates/default.jinja", "chat_template.jinja", "tokenizer_config.json")
    return next((folder / f for f in files if (folder / f).is_file()), where)


def _parses(source: str, where: str) -> None:
    """A checkpoint's chat template that is not valid Jinja is refused as the model loads, naming its file: it was
    a chat whose every message failed with "the chat template failed (Expected an expression, ...)" and no file."""
    import jinja2

    from ..checkpoint.light_tokenizer import compile_template

    if len(source) > TEMPLATE_LIMIT:
        raise LoadError(
            f"{template_file(where)}: the chat template is {len(source)} characters, over the limit of "
            f"{TEMPLATE_LIMIT}; --raw runs the model without it"
        )
    try:
        compile_template(source)
    except jinja2.TemplateSyntaxError as e:
        raise LoadError(
            f"{template_file(where)}: the chat template is not valid Jinja ({shown(e.message or '', 120)}, line "
            f"{e.lineno}); --raw runs the model without it"
        ) from None
    except (SyntaxError, RecursionError, MemoryError, ValueError, OverflowError) as e:
        # valid Jinja that Python cannot compile: 25 nested loops ("too many statically nested blocks"), thousands
        # of nested ifs or brackets, a 5000-digit number literal
        raise LoadError(
            f"{template_file(where)}: the chat template cannot be compiled ({shown(failure(e), 120)}); "
            "--raw runs the model without it"
        ) from None


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


class Template:
    """A model's prompt format: chat template (None: raw completion), tokenizer and stop ids, resolved once."""

    def __init__(self, tokenizer, config=None, generation_config=None, raw: bool = False):
        self.tokenizer = tokenizer
        self.source = None if raw else template_of(tokenizer)
        self.stop_ids = stop_ids(tokenizer, config, generation_config)
        self._longest: int | None = None  # characters of the vocabulary's longest token (surely_over)
        if self.source is not None:
            _parses(self.source, getattr(tokenizer, "name_or_path", ""))
        rows = getattr(config, "vocab_size", None)
        self.vocab = rows if type(rows) is int and rows > 0 else None  # the embedding's rows: ids past them fail
        try:  # a short chat, rendered once for both checks (a template that loops is stopped once, not twice)
            probe = self.render([{"role": "user", "content": PROBE_USER}]) if self.source or self.vocab else None
        except YiError:  # a template that cannot render it is left to the first turn to say so
            probe = None
        if probe is not None and self.source is not None:
            self._writes_the_message(probe)
        if probe is not None and self.vocab is not None:
            self._fits_the_model(probe)

    def _writes_the_message(self, text: str) -> None:
        """A template that writes none of a message's text (`text`: the probe rendered) is refused as the model
        loads: an empty prompt failed each turn in torch's words (generate) or as "the prompt is 0 tokens" (fast),
        and one writing a blank line answered a message the model never saw, recorded as answered."""
        if PROBE_USER not in text:
            raise LoadError(
                f"{template_file(getattr(self.tokenizer, 'name_or_path', ''))}: the chat template writes none of the "
                "messages' text (a test message rendered as "
                f"{shown(repr(text), 60)}); --raw runs the model without it"
            )

    def _fits_the_model(self, text: str) -> None:
        """A tokenizer whose ids for a short chat (`text`: the probe rendered) are past the model's vocabulary (the
        files of another model) is refused as the model loads: every turn failed with "generation failed
        (IndexError: index 70000 is out of bounds ...)"."""
        try:  # build's ids, unchecked: encode would refuse them as a turn
            ids = self.encode(text, self.source is None, fits=False)
        except YiError:
            return
        if ids and max(ids) >= self.vocab:
            raise LoadError(
                f"{getattr(self.tokenizer, 'name_or_path', '') or 'the tokenizer'}: the tokenizer gives token id "
                f"{max(ids)} for a short chat, past the model's vocabulary of {self.vocab} (config.json's vocab_size):"
                f" the tokenizer files are not this model's"
            )

    def surely_over(self, text: str, tokens: int) -> bool:
        """Whether `text` takes more than `tokens` tokens by its length alone: more characters than the vocabulary's
        longest token has, times CHARS_PER_TOKEN_CHAR (a normalizer may fold a few characters into one), times
        `tokens`. A provable bound, not an estimate: a text it passes is tokenized and counted."""
        return len(text) > self.most_chars_per_token() * tokens

    def most_chars_per_token(self) -> int:
        """The most characters of a text one token can stand for (surely_over's bound)."""
        if self._longest is None:
            self._longest = max(map(len, self.tokenizer.get_vocab()), default=1)
        return CHARS_PER_TOKEN_CHAR * self._longest

    @property
    def plain(self) -> bool:
        """Plain completion (--raw, a base model): no chat template, no system prompt sent."""
        return self.source is None

    def render(self, messages: list[dict], continue_final: bool = False, opening: bool = True) -> str:
        """The exact prompt text (special tokens included) the model sees. opening: end with the opening of the
        reply to come (the template's generation prompt); without it, the conversation as it stands (/prompt)."""
        if self.source is None:  # raw: the text as is, so a cut reply continues where it stopped (plain
            return "".join(m["content"] for m in messages if m["role"] != "system")  # completion: no system prompt)
        try:
            text = timebox.run(
                lambda: self.tokenizer.apply_chat_template(
                    messages,
                    chat_template=self.source,
                    tokenize=False,
                    add_generation_prompt=opening and not continue_final,
                    continue_final_message=continue_final,
                ),
                TEMPLATE_SECONDS,
                TEMPLATE_MEMORY,
            )
        except timebox.OverMemory:
            raise YiError(
                f"the chat template took more than {TEMPLATE_MEMORY >> 20} MB of memory and was stopped (a template "
                f"that blows its input up?); the message was not sent"
            ) from None
        except timebox.TimedOut:
            raise YiError(
                f"the chat template ran for more than {TEMPLATE_SECONDS:g} s and was stopped (a loop in "
                f"the checkpoint's template?); the message was not sent"
            ) from None
        except YiError:
            raise
        except Exception as e:  # a template that cannot render these messages (roles, continuation)
            raise YiError(f"the chat template failed ({first_line(e)})") from None
        given = sum(len(m["content"]) for m in messages if isinstance(m.get("content"), str))
        if len(text) > 4 * given + RENDER_SLACK:
            raise YiError(
                f"the chat template wrote {len(text)} characters for {given} of messages (a template that blows "
                f"its input up?); the message was not sent"
            )
        return text

    def default_system(self) -> str | None:
        """The system prompt the template adds when the conversation has none (SmolLM2's names the model; Yi's
        ChatML adds none), read off the template itself: a conversation given a system prompt of ours shows where
        the template puts one, and the same conversation without it what the template puts there instead. None when
        it adds none, or when that cannot be told (a template that refuses a system role or moves it elsewhere)."""
        if self.source is None:
            return None
        user = {"role": "user", "content": PROBE_USER}
        try:
            alone = self.render([user])
            given = self.render([{"role": "system", "content": PROBE_SYSTEM}, user])
        except YiError:
            return None
        at, end = given.find(PROBE_SYSTEM), given.find(PROBE_USER)
        if not 0 <= at < end or PROBE_USER not in alone:
            return None
        head = alone[: alone.index(PROBE_USER)]  # what comes before the user's text without a system prompt
        before, after = given[:at], given[at + len(PROBE_SYSTEM) : end]  # around ours, up to the user's text
        if len(head) > len(before) + len(after) and head.startswith(before) and head.endswith(after):
            return head[len(before) : len(head) - len(after)].strip() or None
        return None

    def build(self, messages: list[dict], continue_final: bool = False, opening: bool = True) -> Prompt:
        """The prompt of one reply, tokenized once. continue_final: the last (assistant) message stays open, via the
        template's own continue_final_message; opening: as render's."""
        text = self.render(messages, continue_final, opening)
        # The template already wrote the special tokens; a raw prompt gets the tokenizer's usual bos.
        ids = self.encode(text, self.source is None)
        return Prompt(list(messages), ids, text, continue_final)

    def reply_part(self, user: str, reply: str) -> tuple[str, str] | None:
        """(opening, part): what a reply to `user` adds to a conversation, read off that exchange rendered alone
        (O(its text)). part: the reply's opening (the generation prompt, ChatML's "<|im_start|>assistant\\n"), its
        text and the turn's closing ("<|im_end|>\\n"), as the template writes them. None where the part cannot be
        counted apart from the text before it: a raw prompt (it runs on into the reply), an opening that does not
        start with a special token (a tokenizer splits text at special tokens before anything else, so a part that
        starts with one tokenizes alone as it does at the end of the whole conversation), or a template that refuses
        the exchange alone."""
        if self.source is None:
            return None
        asked = [{"role": "user", "content": user}]
        try:
            closed, opened = self.render(asked, opening=False), self.render(asked)
            whole = self.render([*asked, {"role": "assistant", "content": reply}], opening=False)
        except YiError:
            return None
        if opened == closed or not opened.startswith(closed) or not whole.startswith(opened):
            return None
        opening = opened[len(closed) :]
        first = self.encode(opening)[:1]
        if not first or self.tokenizer.decode(first, skip_special_tokens=True):  # no special token first
            return None
        return opening, whole[len(closed) :]

    def count(self, text: str) -> int:
        """Tokens of a message's text alone (what it adds to a prompt, template markers aside), or of a reply's part."""
        return len(self.encode(text, fits=False))

    def encode(self, text: str, special: bool = False, fits: bool = True) -> list[int]:
        """The tokenizer's ids; a failure inside it (a Rust panic of a hostile tokenizer.json's normalizer) is one
        YiError: the turn is not sent, the chat goes on."""
        try:
            with reports_held():
                ids = list(self.tokenizer(text, add_special_tokens=special)["input_ids"])
        except BaseException as e:
            if not failed(e):
                raise
            raise YiError(f"the tokenizer failed on this text ({failure(e)})") from None
        # fits: what goes to the model (a count of a reply already made, /history's, is only a count)
        if fits and self.vocab is not None and ids and max(ids) >= self.vocab:
            raise YiError(
                f"the tokenizer gives token id {max(ids)} for this text, past the model's vocabulary of {self.vocab} "
                f"(its tokenizer files are not the weights'); the message was not sent"
            )
        return ids

    def detokenizer(self, context: list[int] = ()) -> Detokenizer:
        return Detokenizer(self.tokenizer, context)


class Detokenizer:
    """Token ids -> text deltas, holding back incomplete UTF-8 pieces (byte tokens decode them as U+FFFD; a
    SentencePiece byte-fallback decoder turns a whole run of byte tokens into U+FFFD while one of its characters is
    incomplete), to the end: a reply cut inside a character ends before it. `context`: the ids shown before this
    stream (a /continue's cut reply), decoded with the new ones and never emitted, so that a character they began
    is completed. Windows of ids always start on a character boundary."""

    CONTEXT = 8  # ids of the context kept: a character's bytes, and the word before them

    def __init__(self, tokenizer, context: list[int] = ()):
        self.tok = tokenizer
        self.ids: list[int] = list(context)[-self.CONTEXT :]
        # The context's text: from its first character boundary (a character the window cuts in front left out) to
        # the end of its last complete character (an incomplete one's ids stay, for the new ones to complete).
        i = j = 0
        for i in range(len(self.ids)):
            j = self._complete_end(i)
            if j > i and not self._text(i, j).startswith("\ufffd"):
                break
        self.ids = self.ids[i:]
        self.start = 0  # ids before this are already emitted and final
        self.emitted = self._text(0, j - i) if j > i else ""  # text of ids[start:] already emitted

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self._text(self.start)
        if text.endswith("\ufffd"):
            return ""
        delta = text[len(self.emitted) :]
        self.emitted = text
        if len(self.ids) - self.start > 16:  # keep decoding windows short: O(n) per reply, not O(n^2)
            s = len(self.ids) - 4
            while s < len(self.ids) and self._text(s).startswith("\ufffd"):  # not inside a character
                s += 1
            self.start, self.emitted = s, self._text(s)
        return delta

    def flush(self) -> str:
        text = self._text(self.start, self._complete_end(self.start))
        delta = text[len(self.emitted) :] if text.startswith(self.emitted) else ""
        self.emitted = text
        return delta

    def _text(self, a: int, b: int | None = None) -> str:
        return self.tok.decode(self.ids[a:b], skip_special_tokens=True)

    def _complete_end(self, a: int) -> int:
        """The end of ids[a:] without its incomplete last character: the largest j whose text does not end in
        U+FFFD (a character of U+FFFD itself at the very end is held back too: rare, and a cut reply's loss)."""
        j = len(self.ids)
        while j > a and self._text(a, j).endswith("\ufffd"):
            j -= 1
        return j
