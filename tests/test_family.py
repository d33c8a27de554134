"""The Yi family: every member as a tiny random checkpoint in its exact config / tokenizer-config form (template,
special tokens, eos ids, rope parameters, context), laid out as in the hub cache, loaded by yi_cli.load: the
rendered prompt, the stop set and the context length the loader reports; aliases."""

import json
import sys
from pathlib import Path

import pytest

from yi_cli.checkpoint import family
from yi_cli.checkpoint.writer import YI_SPECIALS, write_byte_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import make_checkpoint  # noqa: E402

TINY = dict(
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=320,
)
GROUP = 64
MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
CHATML_TEXT = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"


def config(m: family.Member) -> dict:
    """config.json as the released repo writes it, with tiny sizes in place of the real ones."""
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "max_position_embeddings": m.context,
        "model_type": "llama",
        "pad_token_id": 0,
        "pretraining_tp": 1,
        "rms_norm_eps": m.rms_eps,
        "rope_scaling": None,
        "rope_theta": m.rope_theta,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.37.2",
        "use_cache": True,
        **TINY,
    }
    if m.fmt == "awq":
        cfg["quantization_config"] = {
            "bits": 4,
            "group_size": GROUP,
            "quant_method": "awq",
            "version": "gemm",
            "zero_point": True,
        }
    elif m.fmt == "gptq":
        cfg["quantization_config"] = {
            "bits": 8,
            "group_size": GROUP,
            "damp_percent": 0.01,
            "desc_act": False,
            "static_groups": False,
            "sym": True,
            "true_sequential": True,
            "model_name_or_path": None,
            "model_file_base_name": "model",
            "quant_method": "gptq",
        }
    return cfg


def tokenizer_config(m: family.Member) -> dict:
    tc = {
        "add_bos_token": False,
        "add_eos_token": False,
        "bos_token": "<|startoftext|>",
        "eos_token": m.eos,
        "pad_token": "<unk>",
        "unk_token": "<unk>",
        "clean_up_tokenization_spaces": False,
        "model_max_length": m.context,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": {
            str(i): {
                "content": t,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for i, t in enumerate(YI_SPECIALS)
        },
    }
    if m.template:
        tc["chat_template"] = family.TEMPLATES[m.template]
    return tc


def tiny(m: family.Member, root: Path) -> Path:
    """A checkpoint of member `m` where the hub cache would put it: models--01-ai--<name>/snapshots/<commit>."""
    out = root / f"models--{m.repo.replace('/', '--')}" / "snapshots" / "0123abcd"
    out.mkdir(parents=True)
    write_byte_tokenizer(out)
    (out / "chat_template.jinja").unlink(missing_ok=True)  # the member's own template (or none) is in the config
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(m), indent=2))
    cfg = config(m)
    fmt = {"awq": "awq", "gptq": "gptq8"}.get(m.fmt, "fp16")
    make_checkpoint.write_weights(out, cfg, fmt, GROUP, seed=0, max_bytes=1 << 30)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    gen = {"bos_token_id": 1, "eos_token_id": m.gen_eos, "pad_token_id": 0, "max_length": m.context}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2))
    if m.fmt == "gptq":
        (out / "quantize_config.json").write_text(json.dumps(cfg["quantization_config"], indent=2))
    return out


@pytest.mark.parametrize("m", family.MEMBERS, ids=lambda m: m.alias)
def test_member_loads_with_its_template_stop_set_and_context(m, tmp_path):
    import threading

    from yi_cli.checkpoint.loader import open_checkpoint
    from yi_cli.engines.local import LocalEngine
    from yi_cli.engines.settings import GenSettings

    ckpt = open_checkpoint(tiny(m, tmp_path), device="cpu", dtype="fp32")
    assert ckpt.context_length == m.context
    assert ckpt.name == m.repo
    assert (ckpt.quant or {}).get("method", "bf16") == m.fmt
    engine = LocalEngine(ckpt, backend="generate")
    tpl = engine.template
    if m.chat:  # Yi's shipped template prints the system prompt raw: yi-chat renders ChatML with it wrapped
        prompt = tpl.build(MSGS)
        assert prompt.text == CHATML_TEXT
        assert prompt.ids[0] == 6 and prompt.ids.count(7) == 2 and 1 not in prompt.ids
    else:  # a base model: plain completion, the system prompt is not sent
        assert tpl.source is None
        assert tpl.render(MSGS) == "Hi there"
    # <|endoftext|>, <|im_start|>, <|im_end|>, <|im_sep|>: whatever the tokenizer / generation config call eos.
    assert tpl.stop_ids == {2, 6, 7, 8}
    events = list(engine.stream(tpl.build(MSGS[1:]), GenSettings(max_new_tokens=3, temperature=0), threading.Event()))
    assert events[-1].stats.new_tokens >= 1


def test_aliases_expand_to_the_family_repos():
    assert family.expand("yi-6b-chat-4bits") == "01-ai/Yi-6B-Chat-4bits"
    assert family.expand("YI-1.5-9B-Chat-16K") == "01-ai/Yi-1.5-9B-Chat-16K"
    assert family.expand("yi-coder-1.5b-chat") == "01-ai/Yi-Coder-1.5B-Chat"
    assert family.expand("acme/other") == "acme/other" and family.expand("demo") == "demo"
    assert len(family.ALIASES) == len(family.MEMBERS) == 18


def test_family_facts_from_the_research():
    a = family.ALIASES
    assert (a["yi-9b"].layers, a["yi-9b"].hidden) == (48, 4096)
    assert (a["yi-34b-chat"].layers, a["yi-34b-chat"].hidden, a["yi-34b-chat"].heads, a["yi-34b-chat"].kv_heads) == (
        60,
        7168,
        56,
        8,
    )
    assert (a["yi-6b-chat-4bits"].fmt, a["yi-6b-chat-4bits"].bits) == ("awq", 4)
    assert (a["yi-34b-chat-8bits"].fmt, a["yi-34b-chat-8bits"].bits) == ("gptq", 8)
    assert a["yi-1.5-34b-chat-16k"].context == 16384 and a["yi-coder-9b-chat"].context == 131072
    assert not a["yi-6b-200k"].chat and a["yi-6b-chat"].gen_eos == 7 and a["yi-1.5-9b-chat"].eos == "<|im_end|>"


def test_a_directory_named_like_a_base_model_runs_raw(tmp_path):
    m = family.ALIASES["yi-9b"]
    assert family.member_of(tmp_path / "Yi-9B") is m and family.is_base(tmp_path / "Yi-9B")
    assert family.member_of(tmp_path / "models--01-ai--Yi-9B" / "snapshots" / "x") is m
    assert not family.is_base(tmp_path / "Yi-9B-Chat-finetune") and family.member_of("/x/y") is None
