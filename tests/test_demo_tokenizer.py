"""The demo's tokenizer files written from its GGUF's metadata (checkpoint/gguf_tokenizer.py): they encode as SmolLM's
own tokenizer (llama.cpp's fingerprint of it), name the GGUF's special tokens, keep the fast path's light tokenizer,
are what the demo conversion publishes whatever transformers' version, and refuse GGUF tokenizers they cannot
express with one LoadError."""

import hashlib
import json
from pathlib import Path

import pytest
from gguf import GGUFWriter
from tokenizers import Tokenizer

from yi_cli.checkpoint import demo, gguf_tokenizer, light_tokenizer
from yi_cli.checkpoint.light_tokenizer import LightTokenizer
from yi_cli.errors import LoadError

# llama.cpp's conversion/base.py (get_vocab_base_pre): the text it encodes with a model's tokenizer, and the sha256
# of the ids that names SmolLM's pre-tokenizer ("smollm", from HuggingFaceTB/SmolLM-135M's tokenizer.json).
CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) "
    "✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you "
    "sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
SMOLLM_CHKHSH = "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249"


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo-tokenizer")
    gguf_tokenizer.write(demo.gguf_path(), out)
    return out


def test_the_shipped_gguf_tokenizes_as_smollm_by_llama_cpps_fingerprint(written):
    tok = Tokenizer.from_file(str(written / "tokenizer.json"))
    ids = tok.encode(CHKTXT).ids
    assert hashlib.sha256(str(ids).encode()).hexdigest() == SMOLLM_CHKHSH
    assert tok.decode(ids) == CHKTXT
    assert tok.get_vocab_size() == 49152


def test_the_config_names_the_ggufs_special_tokens_and_the_template_is_the_ggufs(written):
    config = json.loads((written / "tokenizer_config.json").read_text())
    assert config["eos_token"] == config["pad_token"] == "<|im_end|>"  # GGUF eos and padding id 2
    assert (config["bos_token"], config["unk_token"]) == ("<|im_start|>", "<|endoftext|>")
    template = (written / "chat_template.jinja").read_text(encoding="utf-8")
    assert template.startswith("{% for message in messages %}") and "<|im_start|>assistant" in template


def test_the_fast_path_keeps_its_light_tokenizer_on_the_written_files(written):
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    light = light_tokenizer.load(written, lambda: None)
    assert isinstance(light, LightTokenizer)
    real = TokenizersBackend.from_pretrained(str(written))
    assert (light.eos_token_id, real.eos_token_id) == (2, 2)
    for text in ("Year 2024: 3.14 apples", "<|im_start|>user\nhi<|im_end|>", "café 🦙"):
        assert light(text, add_special_tokens=False)["input_ids"] == real(text, add_special_tokens=False)["input_ids"]


def test_the_demo_conversion_publishes_exactly_these_files(demo_fp32_dir, demo_dir, written):
    for d in (demo_fp32_dir, demo_dir):
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            assert (d / name).read_bytes() == (written / name).read_bytes(), (d, name)


def tiny_gguf(path: Path, *, model="gpt2", pre="smollm", add_bos=False, eos=2, tokens=None, merges=None) -> Path:
    tokens = tokens or ["<unk>", "<s>", "</s>", "1", "2", "12", "a", "b", "ab"]
    w = GGUFWriter(str(path), "llama")
    w.add_tokenizer_model(model)
    if pre is not None:
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    w.add_token_merges(merges or ["1 2", "a b"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(eos)
    w.add_add_bos_token(add_bos)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize(("pre", "pieces"), [("smollm", ["1", "2", "ab"]), ("gpt2", ["12", "ab"])])
def test_smollm_splits_digits_before_merging_and_gpt2_does_not(tmp_path, pre, pieces):
    gguf_tokenizer.write(tiny_gguf(tmp_path / "t.gguf", pre=pre), tmp_path / "out")
    tok = Tokenizer.from_file(str(tmp_path / "out" / "tokenizer.json"))
    assert tok.encode("12ab").tokens == pieces
    assert tok.encode("<s>ab</s>").ids == [1, 8, 2]  # control tokens are special added tokens
    assert not (tmp_path / "out" / "chat_template.jinja").exists()  # the GGUF has none


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        ({"model": "llama"}, "tokenizer 'llama'"),
        ({"pre": "qwen2"}, "pre-tokenizer 'qwen2'"),
        ({"pre": None}, "pre-tokenizer 'default'"),
        ({"add_bos": True}, "adds bos"),
        ({"eos": 40}, "eos_token_id 40 is not a control token"),
        ({"eos": 5}, "eos_token_id 5 is not a control token"),
        ({"tokens": ["<unk>", "<s>", "</s>", "a", "a"]}, "inconsistent"),
        ({"merges": ["ab"]}, "inconsistent"),
    ],
)
def test_what_it_cannot_express_is_one_load_error(tmp_path, kw, says):
    with pytest.raises(LoadError, match=says):
        gguf_tokenizer.write(tiny_gguf(tmp_path / "t.gguf", **kw), tmp_path / "out")
    assert not (tmp_path / "out" / "tokenizer.json").exists()
