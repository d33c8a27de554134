"""A plain checkpoint's tokenizer without transformers: tokenizer.json through `tokenizers`, the chat template rendered
the way transformers renders it.

Importing transformers costs a fresh start 0.5 s on the CPU here and 1.6 s on the H200 (its dependency check alone
1.5 s), and the fast engine asks little of its tokenizer: a rendered template, ids, decoded text, the vocabulary and
the special tokens. `load` builds a LightTokenizer only where TokenizersBackend.from_pretrained (what AutoTokenizer
picks for these files: loader._plain_tokenizer) provably leaves tokenizer.json's backend as it is: every key of
tokenizer_config.json is one whose effect is mirrored here, its special tokens are special added tokens of
tokenizer.json already (transformers would add or re-flag them), any added_tokens_decoder repeats tokenizer.json's,
no truncation or padding is baked in, and the vocabulary is too small for transformers' Mistral regex patch. Anything
else gets None, and the loader builds transformers' tokenizer as before (its errors stay its own). What is not
mirrored raises instead of answering differently; `real()` is transformers' tokenizer, built on first use.

Mirrors transformers 5.25 (tokenization_utils_base, tokenization_utils_tokenizers, utils/chat_template_utils);
tests/test_light_tokenizer.py holds both side by side. An older transformers 5 renders yi-chat's messages (role and
content strings) alike; it differs on other message fields (None fields, reasoning names) and namespace attributes
named `_x`, which yi-chat never sends.
"""

from __future__ import annotations

import json
import re
from collections.abc import ItemsView, KeysView, ValuesView
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.ext import Extension, loopcontrols
from jinja2.filters import make_attrgetter
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer, processors

from ..errors import failed
from ..rust_panic import reports_held

NAMED = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
EXTRA = ("extra_special_tokens", "additional_special_tokens")
# tokenizer_config.json keys with no effect on a TokenizersBackend's encode, decode or templates (stored, overridden
# by from_pretrained, or only read for padding, truncation and warnings); the keys checked below come on top.
INERT = {
    "backend",
    "tokenizer_class",
    "name_or_path",
    "is_local",
    "local_files_only",
    "model_max_length",
    "add_bos_token",  # dropped by from_pretrained when tokenizer.json exists
    "add_eos_token",
    "model_input_names",
    "add_prefix_space",
    "legacy",
    "errors",
    "spaces_between_special_tokens",
    "use_default_system_prompt",
    "sp_model_kwargs",
    "clean_up_tokenization_spaces",
    "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output",
}
CHECKED = {*NAMED, *EXTRA, "chat_template", "added_tokens_decoder", "split_special_tokens"}
CHECKED |= {"padding_side", "truncation_side"}
FLAGS = ("content", "single_word", "lstrip", "rstrip", "normalized", "special")
LEGACY_FILES = ("special_tokens_map.json", "added_tokens.json")  # read only without an added_tokens_decoder
MISTRAL_PATCH_VOCAB = 100000  # above it TokenizersBackend may rewrite the pre-tokenizer's regex
CHAT_TEMPLATE_FILE, CHAT_TEMPLATE_DIR = "chat_template.jinja", "additional_chat_templates"
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
MIRRORS = "5.25"  # the transformers release whose template sandbox and message fields this mirrors
CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


class NotMirrored(Exception):
    """Files whose tokenizer only transformers builds exactly."""


def load(path: Path, load_real) -> LightTokenizer | None:
    """The LightTokenizer of checkpoint `path` (loader._plain_tokenizer holds), or None: use transformers'."""
    if not jinja_is_safe():
        return None  # transformers refuses to render with it, in its own words
    try:
        # As transformers reads it: strict UTF-8 (a BOM is its error), not inputs.read_json's leniency.
        config = json.loads((path / "tokenizer_config.json").read_bytes().decode("utf-8"))
        check_config(config)
        if "added_tokens_decoder" not in config and any((path / f).exists() for f in LEGACY_FILES):
            raise NotMirrored("special_tokens_map.json or added_tokens.json")  # transformers merges them in
        template = chat_template(path, config)
        with reports_held():
            backend = Tokenizer.from_file(str(path / "tokenizer.json"))
            check_backend(backend, config)
    except BaseException as e:  # NotMirrored, unreadable files, a Rust panic: transformers decides, in its own words
        if not failed(e):
            raise
        return None
    if backend.post_processor is None:  # TokenizersBackend.update_post_processor, no bos / eos added
        backend.post_processor = processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1", special_tokens=[])
    return LightTokenizer(path, backend, config, template, load_real)


def check_config(config: dict) -> None:
    unknown = set(config) - INERT - CHECKED
    if unknown:
        raise NotMirrored(f"tokenizer_config.json keys {sorted(unknown)}")
    for k in NAMED:  # a string; dicts (AddedToken) and "" take other paths in transformers
        if config.get(k) is not None and (type(config[k]) is not str or not config[k]):
            raise NotMirrored(k)
    for k in EXTRA:
        v = config.get(k)
        if v is not None and (type(v) is not list or not all(type(t) is str and t for t in v)):
            raise NotMirrored(k)
    if config.get("split_special_tokens", False) is not False:
        raise NotMirrored("split_special_tokens")
    for k in ("padding_side", "truncation_side"):  # anything else is transformers' ValueError
        if config.get(k, "right") not in ("right", "left"):
            raise NotMirrored(k)
    decoder = config.get("added_tokens_decoder")
    if decoder is not None and (
        type(decoder) is not dict
        or not all(type(t) is dict and set(t) == set(FLAGS) and type(t["content"]) is str for t in decoder.values())
        or not all(type(t[f]) is bool for t in decoder.values() for f in FLAGS[1:])
    ):
        raise NotMirrored("added_tokens_decoder")


def chat_template(path: Path, config: dict) -> str | dict | None:
    """tokenizer.chat_template as from_pretrained sets it: chat_template.jinja and additional_chat_templates/*.jinja
    (a dict of named templates unless only the first exists) take priority over tokenizer_config.json's entry."""
    found = {}
    files = [("default", path / CHAT_TEMPLATE_FILE)] if (path / CHAT_TEMPLATE_FILE).exists() else []
    if (path / CHAT_TEMPLATE_DIR).is_dir():
        files += [(f.name.removesuffix(".jinja"), f) for f in (path / CHAT_TEMPLATE_DIR).glob("*.jinja")]
    for name, f in files:
        if not f.is_file():
            raise NotMirrored(str(f))
        with open(f, encoding="utf-8") as fh:  # text mode, as transformers: newlines translated
            found[name] = fh.read()
    if found:
        return found["default"] if list(found) == ["default"] else found
    t = config.get("chat_template")
    if t is None or type(t) is str:
        return t
    if type(t) is list and all(type(e) is dict and type(e.get("name")) is str for e in t):
        if all(type(e.get("template")) is str for e in t):
            return {e["name"]: e["template"] for e in t}
    raise NotMirrored("chat_template")


def check_backend(backend: Tokenizer, config: dict) -> None:
    if backend.truncation is not None or backend.padding is not None:
        raise NotMirrored("truncation or padding in tokenizer.json")
    if backend.get_vocab_size(with_added_tokens=True) > MISTRAL_PATCH_VOCAB:
        raise NotMirrored("vocabulary size")
    added = backend.get_added_tokens_decoder()
    special = {t.content for t in added.values() if t.special}
    if not all(config[k] in special for k in NAMED if config.get(k) is not None):
        raise NotMirrored("a named special token that is not a special added token")
    contents = {t.content for t in added.values()}
    if not all(t in contents for k in EXTRA for t in config.get(k) or []):
        raise NotMirrored("an extra special token that is not an added token")
    for i, t in (config.get("added_tokens_decoder") or {}).items():
        mine = added.get(int(i))
        if mine is None or any(getattr(mine, f) != t[f] for f in FLAGS):
            raise NotMirrored(f"added token {i}")


class LightTokenizer:
    """The part of transformers' TokenizersBackend that yi-chat's fast engine uses, with identical results."""

    def __init__(self, path: Path, backend: Tokenizer, config: dict, template, load_real):
        self.name_or_path = str(path)
        self.chat_template = template
        self._backend = backend
        self._named = {k: config[k] for k in NAMED if config.get(k) is not None}
        # _decode: the clean-up is skipped for BPE models unless forced
        self._clean_up = bool(config.get("clean_up_tokenization_spaces", False)) and (
            type(backend.model).__name__ != "BPE"
            or bool(config.get("clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", False))
        )
        self._load_real, self._real = load_real, None

    def real(self):
        """transformers' tokenizer of the same files (the generate engine's streamer, yi_cli.load)."""
        if self._real is None:
            self._real = self._load_real()
        return self._real

    def __repr__(self) -> str:
        return f"LightTokenizer(name_or_path={self.name_or_path!r})"

    def __getattr__(self, name: str):  # only for names not set in __init__ or defined below
        if name.startswith("_"):
            raise AttributeError(name)
        token = name.removesuffix("_id")
        if token in NAMED:
            value = self._named.get(token)
            return value if token == name or value is None else self.convert_tokens_to_ids(value)
        raise NotImplementedError(f"LightTokenizer.{name} is not mirrored: use Checkpoint.hf_tokenizer")

    @property
    def special_tokens_map(self) -> dict[str, str]:
        return dict(self._named)

    def get_vocab(self) -> dict[str, int]:
        return self._backend.get_vocab(with_added_tokens=True)

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int] | None:
        if isinstance(tokens, str):
            i = self._backend.token_to_id(tokens)
            return self.unk_token_id if i is None else i
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        if type(text) is not str:
            raise NotImplementedError("LightTokenizer encodes one str: use Checkpoint.hf_tokenizer")
        return {"input_ids": self._backend.encode(text, add_special_tokens=add_special_tokens).ids}

    def decode(self, token_ids: int | list[int], skip_special_tokens: bool = False) -> str:
        ids = [token_ids] if isinstance(token_ids, int) else token_ids
        if type(ids) not in (list, tuple) or not all(type(i) is int for i in ids):
            raise NotImplementedError("LightTokenizer decodes a list of ints: use Checkpoint.hf_tokenizer")
        text = self._backend.decode(ids, skip_special_tokens=skip_special_tokens)
        return clean_up_tokenization(text) if self._clean_up else text

    def apply_chat_template(
        self,
        conversation: list[dict],
        chat_template: str | None = None,
        add_generation_prompt: bool = False,
        continue_final_message: bool | str = False,
        tokenize: bool = True,
    ) -> str:
        """The rendered prompt text (tokenize=False only), as PreTrainedTokenizerBase.apply_chat_template."""
        if tokenize:
            raise NotImplementedError("LightTokenizer renders text (tokenize=False): use Checkpoint.hf_tokenizer")
        template = self._template(chat_template)
        if type(conversation) not in (list, tuple):
            raise NotImplementedError("LightTokenizer renders a list of message dicts")
        if len(conversation) == 0:
            raise ValueError("Cannot apply chat template to an empty conversation. Provide at least one message.")
        chat = []
        for m in conversation:
            if type(m) is not dict:
                if isinstance(m, (list, tuple)) or hasattr(m, "messages"):
                    raise NotImplementedError("LightTokenizer renders one conversation")
                raise TypeError(f"Chat messages should be dicts, dataclasses or pydantic models, but got {m!r}.")
            chat.append({plain(k): plain(v) for k, v in m.items() if v is not None})
        if continue_final_message and add_generation_prompt:
            raise ValueError(
                "continue_final_message and add_generation_prompt are not compatible. Use continue_final_message when "
                "you want the model to continue the final message, and add_generation_prompt when you want to add a "
                "header that will prompt it to start a new assistant message instead."
            )
        chat = alias_reasoning_fields(chat)
        return render(template, chat, add_generation_prompt, continue_final_message, self._named)

    def _template(self, chat_template: str | None) -> str:
        """get_chat_template without tools."""
        own = self.chat_template
        if isinstance(own, dict):
            if chat_template is not None and chat_template in own:
                return own[chat_template]
            if chat_template is None:
                if "default" in own:
                    return own["default"]
                raise ValueError(
                    "This model has multiple chat templates with no default specified! Please either pass a chat "
                    "template or the name of the template you wish to use to the `chat_template` argument. "
                    f"Available template names are {sorted(own.keys())}."
                )
        elif chat_template is None:
            if own is None:
                raise ValueError(
                    "Cannot use chat template functions because tokenizer.chat_template is not set and no template "
                    "argument was passed!"
                )
            return own
        return chat_template


def clean_up_tokenization(text: str) -> str:
    return (
        text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
    )


def plain(value):
    """A copy of `value` as the template sees it (transformers' _plain_template_data), for JSON-typed values; other
    objects (transformers renders placeholders or converts them) are refused."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if type(value) is dict:
        return {plain(k): plain(v) for k, v in value.items()}
    if type(value) is list:
        return [plain(v) for v in value]
    if type(value) is tuple:
        return tuple(plain(v) for v in value)
    raise NotImplementedError(f"LightTokenizer renders JSON-typed messages, not {type(value).__name__}")


def alias_reasoning_fields(chat: list[dict]) -> list[dict]:
    """`reasoning_content` (and `thinking`, for gpt-oss templates) filled from older names for a message's reasoning."""
    out = []
    for m in chat:
        reasoning = next((m[k] for k in REASONING_FIELDS if m.get(k) is not None), None)
        out.append(m if reasoning is None else {"thinking": reasoning, **m, "reasoning_content": reasoning})
    return out


def render(template: str, chat: list[dict], add_generation_prompt: bool, continue_final, specials: dict) -> str:
    """render_jinja_template for one conversation without tools or documents; `chat` is a fresh copy."""
    compiled = compile_template(template)
    if continue_final:
        field = continue_final if isinstance(continue_final, str) else "content"
        final = chat[-1].get(field)
        if final is None:
            raise ValueError(f'continue_final_message is set but the final message has no "{field}" to continue!')
        fields = [field]
        if field in REASONING_FIELDS:  # copied under several names: tag each copy the template may read
            fields = [f for f in REASONING_FIELDS if chat[-1].get(f) == final]
        if not any(f in template for f in fields):
            raise ValueError(
                f'continue_final_message is set to "{field}" but this is not an accepted field in the chat_template'
            )
        if isinstance(final, (list, tuple)):
            raise NotImplementedError("LightTokenizer continues text content, not content blocks")
        for f in fields:
            chat[-1][f] = chat[-1][f] + CONTINUE_TAG
    text = compiled.render(
        messages=chat, tools=None, documents=None, add_generation_prompt=add_generation_prompt, **specials
    )
    if continue_final:
        if final.strip() not in text or CONTINUE_TAG.strip() not in text:
            raise ValueError(
                "continue_final_message is set but the final message does not appear in the chat after "
                "applying the chat template! This can happen if the chat template deletes portions of "
                "the final message. Please verify the chat template and final message in your chat to "
                "ensure they are compatible."
                f"Final message to continue: {final.strip()}\nRendered chat:\n{text}"
            )
        at = text.rindex(CONTINUE_TAG.strip())
        # The template kept the tag's trailing space: cut there; it trimmed spacing: cut and strip what is left.
        text = text[:at] if text[at : at + len(CONTINUE_TAG)] == CONTINUE_TAG else text[:at].rstrip()
    return text


class Generation(Extension):
    """The `{% generation %}` block of assistant-mask templates; it renders its body (the tracker stays off)."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller) -> str:
        return caller()


class TemplateDict:
    """`dict` in templates, without attribute access to the type."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class TemplateNamespace(jinja2.utils.Namespace):
    """`namespace` in templates; underscore attributes (a way into CPython internals) refused."""

    def __init__(*args, **kwargs):
        self, args = args[0], args[1:]  # Jinja's own signature trick: namespace(self=...) still works
        attrs = dict(*args, **kwargs)
        for name in attrs:
            TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"Chat templates cannot store underscore-prefixed attributes on a namespace, but got {name!r}. "
                "Please rename the attribute."
            )


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Jinja's own tojson escapes HTML characters
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(format):
    return datetime.now().strftime(format)


def jinja_is_safe() -> bool:
    """jinja2 >= 3.1.6, as transformers requires (older ones have known sandbox escapes)."""
    try:
        return tuple(int(p) for p in jinja2.__version__.split(".")[:3]) >= (3, 1, 6)
    except ValueError:  # a pre-release: let transformers judge it
        return False


TEXT_LIMIT = 1 << 24  # characters a value may become as text in a template: BoundedSandbox.MAX_ITEMS


def texted(value, what: str = "a value written as text") -> None:
    """Refuse a list, tuple, dict or set whose text (str, tojson, pprint) would pass TEXT_LIMIT characters, before
    the one C call that writes it: `(['x' * 1000000] * 4000)|string` is 4000 references to one string, small in
    memory, and 4 GB as text. The walk counts each reference (that is what the text repeats) and stops at the
    limit, so it takes at most ~TEXT_LIMIT / 2 steps."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return
    size, todo = 0, [value]
    while todo:
        x = todo.pop()
        if isinstance(x, str):
            size += len(x) + 2
        elif isinstance(x, dict):
            size += 2 + 4 * len(x)
            todo += x.keys()
            todo += x.values()
        elif isinstance(x, (list, tuple, set, frozenset, KeysView, ValuesView, ItemsView)):
            size += 2 + 2 * len(x)
            todo += x
        elif isinstance(x, jinja2.utils.Namespace):  # its repr holds its attributes
            size += 12
            todo.append(getattr(x, "_Namespace__attrs", {}))
        else:  # a number, None, an object's repr: short
            size += 24
        if size > TEXT_LIMIT:
            raise jinja2.exceptions.SecurityError(f"{what} of more than {TEXT_LIMIT} characters is too long")


class Filters(dict):
    """A sandbox's filters, whose tojson (set after the sandbox is made, by transformers as by compile_template) gets
    its indent bounded: it is repeated on each line of the value, `([0]*1000)|tojson(indent=1000000)` a gigabyte."""

    def __setitem__(self, name, f):
        if name == "tojson":
            g = f

            def f(x, *a, **k):
                indent = k.get("indent", a[1] if len(a) > 1 else None)
                n = len(indent) if isinstance(indent, str) else indent if type(indent) is int else 0
                if n > 64:
                    raise jinja2.exceptions.SecurityError(f"tojson's indent of {n} is over 64")
                texted(x, "a tojson")
                return g(x, *a, **k)

        super().__setitem__(name, f)


class BoundedCodeGenerator(CodeGenerator):
    """`a ~ b` through the environment's bounded_concat, not jinja's bare "".join (no hook of jinja's sees it), and
    each `{{ value }}` through `texted` before jinja's str() of it."""

    def _output_child_pre(self, node, frame, finalize):
        super()._output_child_pre(node, frame, finalize)
        self.write("environment.bounded_text(")

    def _output_child_post(self, node, frame, finalize):
        self.write(")")
        super()._output_child_post(node, frame, finalize)

    def visit_Concat(self, node, frame):  # noqa: N802 (jinja's visitor name)
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """transformers' sandbox, with each operation that builds a value in one C call bounded: the time limit
    (engines/timebox.py) cannot stop such a call. `{{ 9 ** 99999999 }}` held the GIL for minutes (the run hung),
    `{{ m.content * 300000000 }}` asked for gigabytes (the run was killed for memory), and so did a join, a
    replace, a concatenation or an indented tojson of strings each within the bound."""

    code_generator_class = BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})
    MAX_ITEMS = 1 << 24  # a repeated string or list, a padded one: far beyond any prompt
    MAX_BITS = 1 << 20  # an integer power: 315,653 digits
    WIDENING = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})  # str methods taking a width

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        # the filters that pad (center, indent) or format (format) in one C call, bounded as the methods are
        center, indent, fmt = self.filters["center"], self.filters["indent"], self.filters["format"]

        def bounded_center(value, width=80):
            self.wide(width, "a string centred in")
            return center(value, width)

        def bounded_indent(text, width=4, *a, **k):
            self.wide(width, "an indent")
            return indent(text, width, *a, **k)

        def bounded_format(value, *a, **k):
            self.wide_format(value, (*a, *k.values()))
            return fmt(value, *a, **k)

        join, replace = self.filters["join"], self.filters["replace"]
        batch, add = self.filters["batch"], self.filters["sum"]

        def bounded_batch(value, linecount, fill_with=None):
            if fill_with is not None and type(linecount) is int:
                self.long(linecount, "a batch")  # its last row is padded to linecount in one C call
            return batch(value, linecount, fill_with)

        def bounded_sum(env, iterable, attribute=None, start=0):
            if isinstance(start, (int, float)):
                return add(env, iterable, attribute, start)
            # lists (or tuples) added up: one C call, quadratic in them
            items = list(iterable if attribute is None else map(make_attrgetter(env, attribute), iterable))
            total = sum(len(x) if isinstance(x, (list, tuple)) else 1 for x in items) + len(items)
            self.long(total, "a sum")
            # each addition copies the sum so far: 1000 lists of 1000 took 4.6 s in the call, past the time box
            if total * len(items) > self.MAX_ITEMS * 4:
                raise jinja2.exceptions.SecurityError(f"a sum of {len(items)} sequences ({total} items) is too slow")
            return add(env, items, start=start)

        texting = {}
        for name in ("string", "pprint", "e", "escape", "forceescape", "safe", "urlencode", "xmlattr"):
            if name in self.filters:
                texting[name] = self.texting(self.filters[name], name)

        def bounded_join(ctx, value, d="", *a, **k):
            self.joined(value, d)
            return join(ctx, value, d, *a, **k)

        def bounded_replace(ctx, s, old, new, *a, **k):
            self.replaced(s, old, new)
            return replace(ctx, s, old, new, *a, **k)

        self.filters = Filters(
            {
                **self.filters,
                "center": bounded_center,
                "indent": bounded_indent,
                "format": bounded_format,
                "join": jinja2.pass_eval_context(bounded_join),
                "replace": jinja2.pass_eval_context(bounded_replace),
                "batch": bounded_batch,
                "sum": jinja2.pass_environment(bounded_sum),
                **texting,
            }
        )

    @staticmethod
    def texting(f, name: str):
        """Filter `name` (which writes its value as text in one C call), its value checked by `texted` first."""
        kind = getattr(f, "jinja_pass_arg", None)  # pass_context / pass_eval_context / pass_environment: an arg first

        def g(*a, **k):
            texted(a[1] if kind is not None else a[0], f"a |{name}")
            return f(*a, **k)

        if kind is not None:
            g.jinja_pass_arg = kind
        return g

    def bounded_text(self, value):
        texted(value)
        return value

    def long(self, n: int, what: str) -> None:
        if n > self.MAX_ITEMS:
            raise jinja2.exceptions.SecurityError(f"{what} of {n} items is too long")

    def joined(self, items, sep="") -> None:
        """A join of strings (the filter, str.join) past MAX_ITEMS characters in all is refused before it is built."""
        if isinstance(items, (list, tuple)):
            self.long(sum(len(x) if isinstance(x, str) else 0 for x in items) + len(str(sep)) * len(items), "a join")
            texted(items, "a join")  # items that are not strings, all together: each within the bound, 4000 were not

    def replaced(self, s, old, new) -> None:
        if isinstance(s, str) and isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
            self.long(len(s) + (s.count(old) if old else len(s) + 1) * (len(new) - len(old)), "a replace")

    def bounded_concat(self, parts) -> str:
        self.long(sum(len(p) for p in parts if isinstance(p, str)), "a concatenation")
        texted(parts, "a concatenation")  # with its parts that are not strings
        return "".join(str(p) for p in parts)

    def wide(self, n, what: str) -> None:
        """Refuse a width past MAX_ITEMS: `'x'.center(2000000000)` is one C call asking for gigabytes."""
        if type(n) is int and n > self.MAX_ITEMS:
            raise jinja2.exceptions.SecurityError(f"{what} {n} characters wide is too long")

    def wide_format(self, fmt, args=()) -> None:
        """A format string's widths and precisions (`'%2000000000s' % x`, `'{:>2000000000}'.format(x)`): any number
        in it past MAX_ITEMS is refused, and so is such an int argument where a width comes from the arguments
        (`'%*s' % (n, x)`, `'{:>{w}}'.format(x, w=n)`)."""
        if not isinstance(fmt, str):
            return
        texted(tuple(args), "a format's arguments")  # all together, as the one call writes them
        big = any(len(d) > 8 or int(d) > self.MAX_ITEMS for d in re.findall(r"\d+", fmt))
        if not big and ("*" in fmt or re.search(r"\{[^{}]*\{", fmt)):
            big = any(type(n) is int and n > self.MAX_ITEMS for n in args)
        if big:
            raise jinja2.exceptions.SecurityError("a format with a width past 16777216 characters is too long")

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja's own signature)
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str) and name in __self.WIDENING:
            for n in (*args, *kwargs.values()):
                __self.wide(n, "a string padded to")
        elif isinstance(owner, str) and name == "join" and args:
            __self.joined(args[0], owner)
        elif isinstance(owner, str) and name == "replace" and len(args) >= 2:
            __self.replaced(owner, args[0], args[1])
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value):  # `'{:>9999999999}'.format`: jinja wraps str.format as it is looked up
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None

        def bounded(*args, **kwargs):
            self.wide_format(
                value.__self__, (*args, *kwargs.values(), *(a for x in args if isinstance(x, dict) for a in x.values()))
            )
            return wrapped(*args, **kwargs)

        return bounded

    def call_binop(self, context, operator, left, right):
        if operator == "%":
            self.wide_format(left, right if isinstance(right, tuple) else (right,))
        elif operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and type(n) is int and len(seq) * n > self.MAX_ITEMS:
                    raise jinja2.exceptions.SecurityError(f"a repetition of {len(seq) * n} items is too long")
            # a product of integers each within the bound: squared over and over, 16M bits, then one `%` of them
            # took minutes in one C call (division is quadratic in the digits)
            if type(left) is int and type(right) is int and left.bit_length() + right.bit_length() > self.MAX_BITS:
                raise jinja2.exceptions.SecurityError(
                    f"an integer product of about {left.bit_length() + right.bit_length()} bits is too large"
                )
        elif operator == "+":
            both = [isinstance(x, str) for x in (left, right)], [isinstance(x, (list, tuple)) for x in (left, right)]
            if any(all(kind) for kind in both):
                self.long(len(left) + len(right), "a sum")
        elif type(left) is int and type(right) is int and right > 0 and left.bit_length() * right > self.MAX_BITS:
            raise jinja2.exceptions.SecurityError(
                f"an integer power of about {left.bit_length() * right} bits is too large"
            )
        return super().call_binop(context, operator, left, right)


@lru_cache
def compile_template(template: str):
    """The template in transformers' sandbox: the same environment options, globals and filters; `*` and `**`
    bounded (BoundedSandbox)."""
    env = BoundedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals.update(
        raise_exception=raise_exception, strftime_now=strftime_now, dict=TemplateDict(), namespace=TemplateNamespace
    )
    return env.from_string(template)
