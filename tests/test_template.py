import pytest

from yi_cli.conversation import context
from yi_cli.engines import template
from yi_cli.engines.template import Template
from yi_cli.errors import YiError


@pytest.fixture(scope="module")
def yi_like_tokenizer():
    """A tokenizer with Yi's special-token ids (1, 2, 6, 7, 8) and, like some Yi checkpoints, no chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = [
        "<unk>",
        "<|startoftext|>",
        "<|endoftext|>",
        "<pad3>",
        "<pad4>",
        "<pad5>",
        "<|im_start|>",
        "<|im_end|>",
        "<|im_sep|>",
    ]
    words = ["user", "assistant", "system", "hello", "there", "hi", "\n"]
    vocab = {t: i for i, t in enumerate(specials + words)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(pattern="\n", behavior="isolated")
    tk.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<|startoftext|>", eos_token="<|endoftext|>", unk_token="<unk>"
    )


def test_yi_fallback_is_chatml_and_stops_on_2_6_7_8(yi_like_tokenizer):
    tok = yi_like_tokenizer
    assert not tok.chat_template
    tpl = Template(tok)
    assert tpl.source == template.CHATML
    msgs = [{"role": "system", "content": "hi"}, {"role": "user", "content": "hello"}]
    prompt = tpl.build(msgs)
    assert prompt.text == (
        "<|im_start|>system\nhi<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    )
    assert prompt.ids[0] == 6 and prompt.ids.count(7) == 2 and 1 not in prompt.ids  # no bos before a template
    assert tpl.stop_ids == {2, 6, 7, 8}


def test_continue_final_leaves_the_last_reply_open(yi_like_tokenizer):
    tpl = Template(yi_like_tokenizer)
    msgs = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}]
    assert tpl.build(msgs, continue_final=True).text == (
        "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\nhi there"
    )
    raw = Template(yi_like_tokenizer, raw=True)
    assert raw.build(msgs, continue_final=True).text == "hellohi there"
    # plain completion sends no system prompt (/system says so: tests/test_commands.py)
    assert raw.build([{"role": "system", "content": "Once upon a time. "}, *msgs]).text == "hellohi there"


def test_demo_template_and_stop_ids(demo_loaded):
    tok = demo_loaded.tokenizer
    tpl = Template(tok, demo_loaded.config)
    prompt = tpl.build([{"role": "user", "content": "What is 2+2?"}])
    assert prompt.text.endswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    assert tok.convert_tokens_to_ids("<|im_end|>") in tpl.stop_ids
    assert tok.decode(prompt.ids) == prompt.text


def test_default_system_prompt_is_read_off_the_template(demo_dir, yi_like_tokenizer):
    """/system said "(no system prompt)" while the demo's template put its own in every prompt: the default is read
    off the real template, and none is claimed where the template adds none or cannot be read that way."""
    from yi_cli.checkpoint import family, loader

    demo = Template(loader.load_tokenizer(demo_dir))
    assert demo.default_system() == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert demo.default_system() in demo.render([{"role": "user", "content": "hi"}])
    yi = Template(yi_like_tokenizer)
    assert yi.source == template.CHATML and yi.default_system() is None
    for source in (family.TEMPLATES["yi"], family.TEMPLATES["yi-coder"]):
        yi.source = source
        assert yi.default_system() is None
    yi.source = "{{ raise_exception('System role not supported') if messages[0]['role'] == 'system' }}x"
    assert yi.default_system() is None  # a template that refuses a system prompt: nothing to tell
    assert Template(yi_like_tokenizer, raw=True).default_system() is None


def test_fit_drops_whole_exchanges_and_rebuilds_about_once():
    sizes = [3, 5] * 4  # four exchanges of the session (user 3, assistant 5 tokens)
    rebuilt = []

    def rebuild(n):  # the prompt without the first n messages: 10 for the system + last message, 2 per marker
        rebuilt.append(n)
        return 10 + sum(s + 2 for s in sizes[n:])

    # the whole prompt, the base, the estimate, and one exchange fewer (that it does not fit)
    assert context.fit(rebuild, rebuild(0), sizes, 30) == 6 and rebuilt == [0, 8, 6, 4]
    with pytest.raises(YiError, match="fit in the context"):
        context.fit(rebuild, rebuild(0), sizes, 5)
    with pytest.raises(YiError, match="fit in the context"):
        context.fit(rebuild, rebuild(0), sizes, 30, policy="refuse")


TEXTS = [
    "What is 2+2?",
    "  leading spaces, trailing  \n\n tabs\t and CRLF\r\n",
    "日本語と中文，还有 emoji 🤖🎉 and café",
    "<|im_start|>user\nspecial tokens typed as text<|im_end|>",
    "```python\ndef f(x):\n    return x ** 2\n```",
]


@pytest.mark.parametrize(
    "source", ["own", template.CHATML, "yi", "yi-coder"], ids=["demo-template", "chatml", "yi", "yi-coder"]
)
def test_fast_path_tokenizer_builds_the_same_prompts_as_autotokenizer(demo_dir, source):
    """The fast path loads the demo's tokenizer without transformers (light_tokenizer.py; its transformers twin is
    TokenizersBackend, loaded directly): prompts, ids, counts and decoded text must equal AutoTokenizer's, under the
    demo's own template and under Yi-style ones."""
    from transformers import AutoTokenizer

    from yi_cli.checkpoint import family, loader
    from yi_cli.checkpoint.light_tokenizer import LightTokenizer

    light, auto = loader.load_tokenizer(demo_dir), AutoTokenizer.from_pretrained(str(demo_dir))
    assert isinstance(light, LightTokenizer)
    assert type(light.real()) is type(auto) and light.real().init_kwargs == auto.init_kwargs
    assert light.get_vocab() == auto.get_vocab() and light.chat_template == auto.chat_template
    msgs = [{"role": "system", "content": "Be brief."}]
    for i, text in enumerate(TEXTS):
        msgs += [{"role": "user", "content": text}, {"role": "assistant", "content": TEXTS[-1 - i]}]
    ta, tb = Template(light), Template(auto)
    if source != "own":
        ta.source = tb.source = family.TEMPLATES.get(source, source)
    assert ta.stop_ids == tb.stop_ids
    for n in range(1, len(msgs) + 1):
        for cont in (False, True) if msgs[n - 1]["role"] == "assistant" else (False,):
            pa, pb = ta.build(msgs[:n], cont), tb.build(msgs[:n], cont)
            assert (pa.text, pa.ids) == (pb.text, pb.ids)
            assert light.decode(pa.ids, skip_special_tokens=True) == auto.decode(pb.ids, skip_special_tokens=True)
    for text in TEXTS:
        assert ta.count(text) == tb.count(text)
        ids = auto(text, add_special_tokens=True)["input_ids"]
        assert light(text, add_special_tokens=True)["input_ids"] == ids
        assert light.decode(ids) == auto.decode(ids)
