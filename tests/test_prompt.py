import pytest

from yi_cli import prompt
from yi_cli.errors import YiError


@pytest.fixture(scope="module")
def yi_like_tokenizer():
    """A tokenizer with Yi's special-token ids (1, 2, 6, 7, 8) and, like some Yi checkpoints, no chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<|startoftext|>", "<|endoftext|>", "<pad3>", "<pad4>", "<pad5>",
                "<|im_start|>", "<|im_end|>", "<|im_sep|>"]
    words = ["user", "assistant", "system", "hello", "there", "hi", "\n"]
    vocab = {t: i for i, t in enumerate(specials + words)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(pattern="\n", behavior="isolated")
    tk.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<unk>")


def test_yi_fallback_is_chatml_and_stops_on_2_6_7_8(yi_like_tokenizer):
    tok = yi_like_tokenizer
    assert not tok.chat_template
    assert prompt.template_of(tok) == prompt.CHATML
    msgs = [{"role": "system", "content": "hi"}, {"role": "user", "content": "hello"}]
    assert prompt.render(tok, msgs) == (
        "<|im_start|>system\nhi<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n")
    ids = prompt.build_ids(tok, msgs)
    assert ids[0] == 6 and ids.count(7) == 2 and 1 not in ids  # no bos in front of a templated prompt
    assert prompt.stop_ids(tok) == {2, 6, 7, 8}


def test_demo_template_and_stop_ids(demo_loaded):
    tok = demo_loaded.tokenizer
    text = prompt.render(tok, [{"role": "user", "content": "What is 2+2?"}])
    assert text.endswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert im_end in prompt.stop_ids(tok, demo_loaded.config)
    ids = prompt.build_ids(tok, [{"role": "user", "content": "What is 2+2?"}])
    assert tok.decode(ids) == text


def test_fit_drops_whole_exchanges_and_keeps_system():
    msgs = [{"role": "system", "content": "s"}]
    for i in range(4):
        msgs += [{"role": "user", "content": f"u{i}"}, {"role": "assistant", "content": f"a{i}"}]
    msgs.append({"role": "user", "content": "last"})
    count = len  # one "token" per message
    kept, dropped = prompt.fit(count, msgs, 4)
    assert dropped == 6
    assert [m["content"] for m in kept] == ["s", "u3", "a3", "last"]
    with pytest.raises(YiError, match="fit in the context"):
        prompt.fit(count, msgs, 1)
    with pytest.raises(YiError):
        prompt.fit(count, msgs, 8, policy="refuse")
