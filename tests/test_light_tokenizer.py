"""The fast path's tokenizer without transformers (checkpoint/light_tokenizer.py) against the one transformers builds
for the same files (TokenizersBackend.from_pretrained, what AutoTokenizer picks for them): the same backend, ids,
rendered prompts, decoded text and special tokens on the real demo tokenizer and Yi-style ones; transformers' own
wherever that is not provable; errors for anything it does not mirror."""

import json
import random
import shutil
from pathlib import Path

import jinja2
import pytest
import transformers
from packaging.version import Version
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from yi_cli.checkpoint import family, light_tokenizer, loader, writer
from yi_cli.checkpoint.light_tokenizer import LightTokenizer
from yi_cli.engines import template
from yi_cli.engines.template import Detokenizer, Template

TEXTS = [
    "What is 2+2?",
    "",
    " ",
    "  leading spaces, trailing  \n\n tabs\t and CRLF\r\n",
    "日本語と中文，还有 emoji 🤖🎉👩‍👩‍👧 and café, naïve",
    "<|im_start|>user\nspecial tokens typed as text<|im_end|>",
    "<|im_start|><|im_end|><|endoftext|> glued<|im_start|and broken <|im_end",
    "```python\ndef f(x):\n    return x ** 2\n```",
    "It 's a test , isn't it ? Yes ! We 're done .",
    "nul \x00 and bell \x07 and U+FFFD \ufffd",
    "long " * 300,
]
# Exercises what transformers' sandbox adds: namespace, loop controls, raise_exception, tojson, dict, strftime_now,
# the {% generation %} block, special tokens as variables, and trimmed content (continue_final's rstrip branch).
FEATURES = (
    "{%- set ns = namespace(n=0) -%}{{ bos_token }}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'tool' %}{{ raise_exception('no tools here: ' + m['content']) }}{% endif -%}"
    "{%- if loop.index > 6 %}{% break %}{% endif -%}{%- set ns.n = ns.n + 1 -%}"
    "<|im_start|>{{ m['role'] }}{% if m.name is defined %} ({{ m.name }}){% endif %}"
    "{% if m.extra is defined %} {{ m.extra | tojson }}{% endif %}\n"
    "{% if m.reasoning_content is defined %}<think>{{ m.reasoning_content }}/{{ m.thinking }}</think>{% endif %}"
    "{% generation %}{{ m['content'] | trim }}{% endgeneration %}{{ eos_token }}\n"
    "{% endfor %}"
    "{{ ns.n }} {{ messages[0]['role'] | tojson }} {{ dict(a='é<>') | tojson }} {{ strftime_now('%%') }}\n"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SOURCES = {"chatml": template.CHATML, "yi": family.YI_SHIPPED_TEMPLATE, "yi-coder": family.YI_CODER_TEMPLATE}
SOURCES["features"] = FEATURES


# The sandbox light_tokenizer mirrors is 5.25's. An older transformers 5 (5.17, the H200 image's) differs on what
# yi-chat never sends (its messages are role and content strings): it keeps None fields, copies no reasoning field
# and allows a namespace attribute named _x; a message that is not a dict fails with another error. Compared there
# only on what both render alike.
OLDER = Version(transformers.__version__) < Version(light_tokenizer.MIRRORS)
older_sandbox = pytest.mark.skipif(
    OLDER, reason=f"transformers {transformers.__version__}: an older sandbox than light_tokenizer mirrors"
)


def conversations() -> list[list[dict]]:
    system = {"role": "system", "content": "Be brief. 简洁。"}
    turns = [{"role": "user", "content": t} for t in TEXTS[:4]]
    multi = [system]
    for i, u in enumerate(turns):
        multi += [u, {"role": "assistant", "content": TEXTS[-2 - i]}]
    odd = [
        {"role": "user", "content": "hi", "name": None, "extra": {"k": [1, 2.5, True, None]}},
        {"role": "assistant", "content": "thinking done  ", "reasoning": "2+2 is 4"},
    ]
    return [
        [turns[0]],
        [system, turns[0]],
        [{"role": "user", "content": TEXTS[4]}, {"role": "assistant", "content": "🤖 sure"}],
        [{"role": "user", "content": TEXTS[5]}],
        multi,
        *([] if OLDER else [odd]),
        [{"role": "user", "content": "cut"}, {"role": "assistant", "content": "trailing spaces   "}],
    ]


def make_pair(path: Path):
    """(the LightTokenizer, transformers' TokenizersBackend) of the tokenizer files in `path`."""
    light = light_tokenizer.load(path, lambda: TokenizersBackend.from_pretrained(str(path)))
    assert isinstance(light, LightTokenizer), f"{path} should qualify"
    return light, TokenizersBackend.from_pretrained(str(path))


def byte_tokenizer(dst: Path) -> Path:
    """Yi's special-token ids, byte-level BPE, ChatML in chat_template.jinja (writer.write_byte_tokenizer)."""
    dst.mkdir(parents=True, exist_ok=True)
    writer.write_byte_tokenizer(dst)
    return dst


def word_tokenizer(dst: Path) -> Path:
    """A WordLevel (not BPE) tokenizer with transformers' clean-up on: decode joins words with spaces, then cleans."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    words = ["it", "'s", "a", "test", ",", "isn't", "?", "yes", "!", "we", "'re", "done", ".", "user", "assistant"]
    tk = Tokenizer(models.WordLevel({t: i for i, t in enumerate(specials + words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.add_special_tokens(specials)
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.chat_template = template.CHATML
    fast.save_pretrained(str(dst))
    edit_json(dst / "tokenizer_config.json", lambda c: c.update(clean_up_tokenization_spaces=True))
    return dst


def edit_json(f: Path, change) -> None:
    data = json.loads(f.read_text())
    change(data)
    f.write_text(json.dumps(data))


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors"))
    return dst


@pytest.fixture(scope="module")
def byte_dir(tmp_path_factory):
    return byte_tokenizer(tmp_path_factory.mktemp("byte") / "tok")


@pytest.fixture(scope="module", params=["demo", "byte"])
def pair(request, tmp_path_factory):
    if request.param == "demo":
        from yi_cli.checkpoint import demo

        return make_pair(demo.ensure("demo"))
    return make_pair(byte_tokenizer(tmp_path_factory.mktemp("byte") / "tok"))


def assert_same_backend(light, real):
    """from_pretrained left tokenizer.json's backend as it is (light_tokenizer's conditions), field by field."""
    assert light._backend.to_str() == real.backend_tokenizer.to_str()


def test_the_backend_vocabulary_and_special_tokens_are_transformers(pair):
    light, real = pair
    assert_same_backend(light, real)
    assert light.name_or_path == real.name_or_path and light.chat_template == real.chat_template
    assert light.get_vocab() == real.get_vocab()
    assert light.special_tokens_map == real.special_tokens_map
    for name in light_tokenizer.NAMED:
        assert getattr(light, name) == getattr(real, name), name
        assert getattr(light, name + "_id") == getattr(real, name + "_id"), name
    tokens = [*light.get_vocab(), "no-such-token-anywhere", "<|im_end|> ", ""]
    assert light.convert_tokens_to_ids(tokens) == real.convert_tokens_to_ids(tokens)
    assert all(light.convert_tokens_to_ids(t) == real.convert_tokens_to_ids(t) for t in tokens[-3:])


def test_ids_and_decoded_text_are_transformers(pair):
    light, real = pair
    for text in TEXTS:
        for specials in (True, False):
            ids = real(text, add_special_tokens=specials)["input_ids"]
            assert light(text, add_special_tokens=specials)["input_ids"] == ids, text
        for skip in (True, False):
            assert light.decode(ids, skip_special_tokens=skip) == real.decode(ids, skip_special_tokens=skip)
    rng = random.Random(0)
    vocab = len(real.get_vocab())
    added = list(real.added_tokens_decoder)
    for _ in range(200):  # any ids: byte pieces that split UTF-8, special tokens anywhere
        ids = [rng.choice(added) if rng.random() < 0.2 else rng.randrange(vocab) for _ in range(rng.randrange(1, 12))]
        for skip in (True, False):
            assert light.decode(ids, skip_special_tokens=skip) == real.decode(ids, skip_special_tokens=skip), ids
        assert light.decode(ids[0]) == real.decode(ids[0])


def test_streamed_text_is_transformers(pair):
    """engines/template.Detokenizer on both: the same deltas, token by token, U+FFFD hold-backs included."""
    light, real = pair
    ids: list[int] = []
    for text in TEXTS[3:9]:
        ids += real(text, add_special_tokens=False)["input_ids"] + [real.convert_tokens_to_ids("<|im_end|>")]
    a, b = Detokenizer(light), Detokenizer(real)
    deltas = [(a.add(i), b.add(i)) for i in ids]
    assert [x for x, _ in deltas] == [y for _, y in deltas]
    assert a.flush() == b.flush()


@pytest.mark.parametrize("source", ["own", *SOURCES])
def test_prompts_render_and_tokenize_as_transformers(pair, source):
    """Template.build on both (the text and ids yi-chat sends): with and without the generation prompt, continuing
    the final message, system messages, multi-turn, CJK and emoji, special tokens typed by the user."""
    light, real = pair
    ta, tb = Template(light), Template(real)
    assert (ta.source, ta.stop_ids) == (tb.source, tb.stop_ids)
    if source != "own":
        ta.source = tb.source = SOURCES[source]
    built = 0
    for msgs in conversations():
        for cont in (False, True) if msgs[-1]["role"] == "assistant" else (False,):
            pa, pb = outcome(ta, msgs, cont), outcome(tb, msgs, cont)
            assert pa == pb, (source, msgs, cont)
            built += pa[0] == "built"
        for gen in (False, True):
            kw = dict(chat_template=ta.source, tokenize=False, add_generation_prompt=gen)
            assert light.apply_chat_template(msgs, **kw) == real.apply_chat_template(msgs, **kw)
    assert built >= len(conversations())  # FEATURES stops after 6 messages: a long continuation fails on both
    for text in TEXTS:
        assert ta.count(text) == tb.count(text)


def outcome(tpl: Template, msgs: list[dict], cont: bool):
    """("built", text, ids) of a Template.build, or the error it raised."""
    try:
        p = tpl.build(msgs, cont)
    except Exception as e:  # noqa: BLE001 - compared
        return type(e), str(e)
    return "built", p.text, p.ids


def raised(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - compared below
        return type(e), str(e)
    return None


USER = [{"role": "user", "content": "x"}]
CONTINUE = {"continue_final_message": True}


@pytest.mark.parametrize(
    "tpl, msgs, kw",
    [
        (FEATURES, [{"role": "tool", "content": "x"}], {}),  # raise_exception
        ("{{ messages.append(1) }}", USER, {}),  # the immutable sandbox
        pytest.param("{% set ns = namespace() %}{% set ns._x = 1 %}", USER, {}, marks=older_sandbox),  # no _x
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", USER, {}),
        ("{% for m in messages %}{{ m['role'] }}{% endfor %}{# content #}", USER, CONTINUE),  # content dropped
        ("{{ 'no field' }}", [{"role": "assistant", "content": "x"}], CONTINUE),
        (template.CHATML, [{"role": "user"}], CONTINUE),  # nothing to continue
        (template.CHATML, [], {}),
        pytest.param(template.CHATML, ["not a dict"], {}, marks=older_sandbox),
        (template.CHATML, USER, {"continue_final_message": True, "add_generation_prompt": True}),
        ("{% for %}", USER, {}),  # a syntax error
        (None, USER, {}),  # no template at all: the fixtures' own
    ],
)
def test_template_errors_are_transformers(pair, tpl, msgs, kw):
    light, real = pair
    got = raised(lambda: light.apply_chat_template(msgs, chat_template=tpl, tokenize=False, **kw))
    want = raised(lambda: real.apply_chat_template(msgs, chat_template=tpl, tokenize=False, **kw))
    assert got == want
    assert (got is None) == (tpl is None)  # the list is real: all the others fail


def test_what_it_does_not_mirror_raises(pair):
    light, _ = pair
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(NotImplementedError, match="hf_tokenizer"):
        light.apply_chat_template(msgs)  # transformers' default tokenize=True returns a BatchEncoding
    with pytest.raises(NotImplementedError, match="hf_tokenizer"):
        light.batch_decode([[1, 2]])
    with pytest.raises(NotImplementedError, match="hf_tokenizer"):
        light(["a", "b"])
    with pytest.raises(NotImplementedError, match="hf_tokenizer"):
        light.decode([[1, 2]])
    with pytest.raises(NotImplementedError):
        light.apply_chat_template([{"role": "user", "content": ("a",), "x": object()}], tokenize=False)
    with pytest.raises(AttributeError):
        light._private  # noqa: B018 - copy / pickle probes stay AttributeErrors


def with_config(change):
    return lambda d: edit_json(d / "tokenizer_config.json", change)


def with_tokenizer_json(change):
    return lambda d: edit_json(d / "tokenizer.json", change)


def added_decoder(d: Path) -> dict:
    added = json.loads((d / "tokenizer.json").read_text())["added_tokens"]
    return {str(t["id"]): {k: t[k] for k in light_tokenizer.FLAGS} for t in added}


def named_templates(d: Path) -> None:
    (d / "chat_template.jinja").unlink()
    config = {"chat_template": [{"name": "default", "template": template.CHATML}, {"name": "other", "template": "x"}]}
    edit_json(d / "tokenizer_config.json", lambda c: c.update(config))


def extra_template_files(d: Path) -> None:
    (d / "additional_chat_templates").mkdir()
    (d / "additional_chat_templates" / "tool_use.jinja").write_text("{{ 'tools' }}\r\n")


def no_post_processor(t: dict) -> None:
    t["post_processor"] = None


def bos_post_processor(t: dict) -> None:
    bos = {"SpecialToken": {"id": "<|startoftext|>", "type_id": 0}}
    a, b = {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}
    special = {"<|startoftext|>": {"id": "<|startoftext|>", "ids": [1], "tokens": ["<|startoftext|>"]}}
    t["post_processor"] = {"type": "TemplateProcessing", "single": [bos, a], "pair": [bos, a, b]}
    t["post_processor"]["special_tokens"] = special


QUALIFY = {
    "added-tokens-decoder": lambda d: edit_json(
        d / "tokenizer_config.json", lambda c: c.update(added_tokens_decoder=added_decoder(d))
    ),
    "extra-special-tokens": with_config(lambda c: c.update(extra_special_tokens=["<|im_sep|>", "<|reserved_3|>"])),
    "no-post-processor": with_tokenizer_json(no_post_processor),  # transformers writes its own: $A, no bos
    "bos-post-processor": with_tokenizer_json(bos_post_processor),  # kept: a raw prompt starts with bos
    "named-templates": named_templates,
    "template-files": extra_template_files,
    "config-template-loses-to-file": with_config(lambda c: c.update(chat_template="{{ 'unused' }}")),
    "cleanup-on-bpe": with_config(lambda c: c.update(clean_up_tokenization_spaces=True)),  # skipped for BPE
    "inert-keys": with_config(lambda c: c.update(add_bos_token=True, padding_side="left", legacy=False)),
}


@pytest.mark.parametrize("variant", QUALIFY)
def test_variants_that_qualify_are_transformers(byte_dir, tmp_path, variant):
    d = copy(byte_dir, tmp_path / "tok")
    QUALIFY[variant](d)
    light, real = make_pair(d)
    assert_same_backend(light, real)
    assert light.chat_template == real.chat_template and light.special_tokens_map == real.special_tokens_map
    ta, tb = Template(light), Template(real)
    assert (ta.source, ta.stop_ids) == (tb.source, tb.stop_ids)
    for msgs in conversations():
        pa, pb = ta.build(msgs), tb.build(msgs)
        assert (pa.text, pa.ids) == (pb.text, pb.ids)
        assert light.decode(pa.ids) == real.decode(pb.ids)
        for name in light.chat_template if isinstance(light.chat_template, dict) else ():
            kw = dict(chat_template=name, tokenize=False, add_generation_prompt=True)
            assert light.apply_chat_template(msgs, **kw) == real.apply_chat_template(msgs, **kw)
    for text in TEXTS:
        assert light(text)["input_ids"] == real(text)["input_ids"]
    assert (light("hi")["input_ids"][0] == 1) == (variant == "bos-post-processor")


def test_a_word_level_tokenizer_cleans_up_decoded_text_as_transformers(tmp_path):
    light, real = make_pair(word_tokenizer(tmp_path / "tok"))
    assert_same_backend(light, real)
    ids = real(TEXTS[8].lower())["input_ids"]
    assert light.decode(ids) == real.decode(ids) == "it's a test, isn't it? yes! we're done."
    assert light._backend.decode(ids) != light.decode(ids)  # the clean-up ran
    detok_a, detok_b = Detokenizer(light), Detokenizer(real)
    assert [detok_a.add(i) for i in ids] == [detok_b.add(i) for i in ids]


def bom(d: Path) -> None:
    (d / "tokenizer_config.json").write_bytes(b"\xef\xbb\xbf" + (d / "tokenizer_config.json").read_bytes())


def special_not_special(t: dict) -> None:
    t["added_tokens"][2]["special"] = False  # <|endoftext|>, the eos: transformers re-adds it as special


FALL_BACK = {
    "unknown-key": with_config(lambda c: c.update(fast_tokenizer_files=["tokenizer.json"])),
    "truncation-key": with_config(lambda c: c.update(max_length=8)),
    "model-specific-token": with_config(lambda c: c.update(image_token="<|im_sep|>")),
    "token-as-object": with_config(lambda c: c.update(eos_token={"__type": "AddedToken", "content": "<|im_end|>"})),
    "empty-token": with_config(lambda c: c.update(sep_token="")),
    "eos-not-added": with_config(lambda c: c.update(eos_token="a")),  # a plain vocabulary entry
    "eos-not-special": with_tokenizer_json(special_not_special),
    "extra-not-added": with_config(lambda c: c.update(additional_special_tokens=["<new>"])),
    "extra-as-dict": with_config(lambda c: c.update(extra_special_tokens={"image_token": "<|im_sep|>"})),
    "split-special-tokens": with_config(lambda c: c.update(split_special_tokens=True)),
    "bad-padding-side": with_config(lambda c: c.update(padding_side="middle")),
    "truncation-in-json": with_tokenizer_json(
        lambda t: t.update(truncation={"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0})
    ),
    "legacy-special-tokens-map": lambda d: (d / "special_tokens_map.json").write_text('{"eos_token": "<|im_end|>"}'),
    "legacy-added-tokens": lambda d: (d / "added_tokens.json").write_text('{"<new>": 265}'),
    "added-tokens-decoder-differs": lambda d: edit_json(
        d / "tokenizer_config.json",
        lambda c: c.update(added_tokens_decoder={**added_decoder(d), "7": {**added_decoder(d)["7"], "lstrip": True}}),
    ),
    "added-tokens-decoder-new": lambda d: edit_json(
        d / "tokenizer_config.json",
        lambda c: c.update(added_tokens_decoder={**added_decoder(d), "300": {**added_decoder(d)["7"], "content": "x"}}),
    ),
    "template-file-is-a-dir": lambda d: ((d / "chat_template.jinja").unlink(), (d / "chat_template.jinja").mkdir()),
    "template-object": lambda d: (
        (d / "chat_template.jinja").unlink(),
        edit_json(d / "tokenizer_config.json", lambda c: c.update(chat_template={"default": "x"})),
    ),
    "bom": bom,
    "broken-tokenizer-json": lambda d: (d / "tokenizer.json").write_text('{"version": "1.0"}'),
}


@pytest.mark.parametrize("variant", FALL_BACK)
def test_anything_not_mirrored_gets_transformers(byte_dir, tmp_path, variant):
    d = copy(byte_dir, tmp_path / "tok")
    FALL_BACK[variant](d)
    assert light_tokenizer.load(d, None) is None
    (d / "config.json").write_text('{"model_type": "llama"}')
    assert loader._plain_tokenizer(d)
    try:
        tok = loader.load_tokenizer(d)
    except Exception as e:  # noqa: BLE001 - transformers' own error, as before
        assert variant in ("broken-tokenizer-json", "bad-padding-side", "bom", "template-file-is-a-dir"), e
    else:
        assert isinstance(tok, TokenizersBackend)


def test_the_re_flagged_eos_is_why_that_variant_falls_back(byte_dir, tmp_path):
    """The condition is real: transformers re-adds a named special token that tokenizer.json does not mark special."""
    d = copy(byte_dir, tmp_path / "tok")
    FALL_BACK["eos-not-special"](d)
    from tokenizers import Tokenizer

    real = TokenizersBackend.from_pretrained(str(d))
    assert real.backend_tokenizer.to_str() != Tokenizer.from_file(str(d / "tokenizer.json")).to_str()
    assert real.decode([2], skip_special_tokens=True) == ""


def test_loader_gives_the_fast_path_the_light_tokenizer_and_the_rest_transformers(demo_dir, byte_dir, tmp_path):
    from yi_cli.checkpoint.loader import open_checkpoint

    ckpt = open_checkpoint(demo_dir, device="cpu", dtype="fp32")
    assert isinstance(ckpt.tokenizer, LightTokenizer)
    real = ckpt.hf_tokenizer
    assert type(real) is TokenizersBackend and ckpt.hf_tokenizer is real  # built once
    d = copy(byte_dir, tmp_path / "tok")
    (d / "config.json").write_text('{"model_type": "llama"}')
    assert isinstance(loader.load_tokenizer(d), LightTokenizer)
    assert isinstance(loader.load_tokenizer(d, trust_remote_code=True), TokenizersBackend)  # AutoTokenizer decides


def test_the_sandbox_is_transformers():
    """The environment's options, globals and filters equal transformers' compiled one."""
    from transformers.utils.chat_template_utils import _compile_jinja_template

    ours, theirs = light_tokenizer.compile_template(FEATURES).environment, _compile_jinja_template(FEATURES).environment
    # ours bounds `*` and `**` (BoundedSandbox); so does theirs once the loader loaded a transformers tokenizer
    assert type(ours) is light_tokenizer.BoundedSandbox
    assert type(theirs) in (jinja2.sandbox.ImmutableSandboxedEnvironment, light_tokenizer.BoundedSandbox)
    assert light_tokenizer.BoundedSandbox.__bases__ == (jinja2.sandbox.ImmutableSandboxedEnvironment,)
    for option in ("trim_blocks", "lstrip_blocks", "keep_trailing_newline", "autoescape", "undefined", "finalize"):
        assert getattr(ours, option) == getattr(theirs, option), option
    assert set(ours.globals) == set(theirs.globals) and set(ours.filters) == set(theirs.filters)
    assert {type(e).__name__ for e in ours.extensions.values()} - {"Generation"} == {
        type(e).__name__ for e in theirs.extensions.values()
    } - {"AssistantTracker"}
