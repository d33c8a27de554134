"""A fresh start on the fast engine imports only what that path needs: no transformers modeling / generation
modules, no transformers config classes (light.py), on the demo no transformers at all (light_tokenizer.py), and the
values that replace them are exactly transformers'."""

import json
import os
import subprocess
import sys

import pytest
import torch

from yi_cli.checkpoint import light
from yi_cli.runtime import causal
from yi_cli.runtime.llama import PREFILL_ATTENTION, rotary

# Modules the fast engine must not import before (or for) its first token.
FORBIDDEN = (
    "transformers.models",  # modeling_llama, and the auto / configuration modules AutoConfig and AutoTokenizer use
    "transformers.generation",
    "transformers.modeling_utils",
    "transformers.configuration_utils",
    "torch.nn.attention.bias",  # imports torch._dynamo (runtime/causal.py)
    "torch._dynamo",
)

YI_6B = {  # Yi-6B-Chat's config.json (the fields that matter here), legacy rope_theta, no head_dim
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-05,
    "rope_theta": 5000000.0,
    "rope_scaling": None,
    "vocab_size": 64000,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
VIEWED = [
    YI_6B,
    {**YI_6B, "rope_theta": 5000000},  # an int theta stays an int, as in LlamaConfig
    {"model_type": "llama"},  # every default
    {**YI_6B, "head_dim": 64, "num_key_value_heads": None, "eos_token_id": [2, 7]},
    {**YI_6B, "rope_parameters": {"rope_type": "default", "rope_theta": 1e7}},
    {**YI_6B, "rope_parameters": {"rope_theta": 1e6}},
    {**YI_6B, "max_position_embeddings": 200000, "tie_word_embeddings": True, "rms_norm_eps": 1e-6},
]
SCALED = [
    {**YI_6B, "rope_scaling": {"type": "linear", "factor": 2.0}},
    {**YI_6B, "rope_scaling": {"rope_type": "dynamic", "factor": 3.5}},
    {**YI_6B, "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096}},
    {
        **YI_6B,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 1024,
        },
    },
]


def llama_config(raw):
    from transformers import LlamaConfig

    return LlamaConfig.from_dict(dict(raw))


def reference_rotary(cfg):
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    rot = LlamaRotaryEmbedding(cfg)
    return rot.inv_freq, float(rot.attention_scaling)


@pytest.mark.parametrize("raw", VIEWED, ids=range(len(VIEWED)))
def test_light_view_equals_llamaconfig(raw):
    real = llama_config(raw)
    view = light.llama_view(raw, lambda: real)
    assert view is not None
    for name in [*light.DEFAULTS, "model_type", "num_key_value_heads", "head_dim", "rope_parameters"]:
        got, want = getattr(view, name), getattr(real, name)
        assert (got, type(got)) == (want, type(want)), name
    assert view.attention_bias is real.attention_bias  # any other field comes from the real config
    inv, scale = rotary(view, "cpu")  # the fast path: computed from the view, no modeling module
    want_inv, want_scale = reference_rotary(real)
    assert torch.equal(inv, want_inv) and scale == want_scale == 1.0


@pytest.mark.parametrize("raw", SCALED, ids=lambda r: r["rope_scaling"].get("rope_type", "linear"))
def test_scaled_rope_uses_the_real_config_and_transformers_values(raw):
    assert light.llama_view(raw, None) is None  # scaled RoPE: the loader builds LlamaConfig as before
    cfg = llama_config(raw)
    inv, scale = rotary(cfg, "cpu")
    want_inv, want_scale = reference_rotary(cfg)
    assert torch.equal(inv, want_inv) and scale == want_scale


@pytest.mark.parametrize(
    "raw",
    [
        {**YI_6B, "model_type": "mistral"},
        {**YI_6B, "auto_map": {"AutoConfig": "x.Y"}},
        {**YI_6B, "hidden_act": "gelu"},
        {**YI_6B, "rms_norm_eps": "1e-5"},
        {**YI_6B, "tie_word_embeddings": 1},
        {**YI_6B, "eos_token_id": "2"},
        {**YI_6B, "partial_rotary_factor": 0.5},
        # rope_scaling wins over rope_parameters in LlamaConfig (the view took rope_parameters' theta and kind)
        {**YI_6B, "rope_parameters": {"rope_type": "default", "rope_theta": 1e7}, "rope_scaling": {"type": "linear"}},
    ],
)
def test_anything_unusual_gets_the_real_config(raw):
    assert light.llama_view(raw, None) is None


@pytest.mark.parametrize(
    "raw",
    [
        YI_6B,
        *SCALED,
        {**YI_6B, "rope_parameters": {"rope_theta": 1e6}},
        {**YI_6B, "rope_parameters": {"rope_type": "linear"}, "rope_scaling": {"type": "yarn", "factor": 3}},
        {**YI_6B, "rope_scaling": {"type": "bogus", "rope_type": "linear", "factor": 2.0}},
        {**YI_6B, "rope_scaling": {"type": "bogus"}},
    ],
    ids=range(len(SCALED) + 5),
)
def test_rope_kind_is_the_one_llamaconfig_standardizes_to(raw):
    """plausible.rope_kind judges config.json for `models` and `pull` without transformers: it must name the kind
    LlamaConfig ends with, and plausible.ROPE_TYPES the kinds rotary() computes."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from yi_cli.checkpoint import plausible

    assert plausible.ROPE_TYPES == tuple(sorted({"default", *ROPE_INIT_FUNCTIONS}))
    assert plausible.rope_kind(raw) == llama_config(raw).rope_parameters["rope_type"]


def test_demo_checkpoint_views_equal_transformers(demo_dir):
    from transformers import AutoConfig, GenerationConfig

    from yi_cli.checkpoint.loader import open_checkpoint

    ckpt = open_checkpoint(demo_dir, device="cpu", dtype="fp32")
    assert isinstance(ckpt.config, light.LlamaView) and isinstance(ckpt.generation_config, light.GenerationView)
    real = AutoConfig.from_pretrained(str(demo_dir))
    for name in [*light.DEFAULTS, "model_type", "num_key_value_heads", "head_dim", "rope_parameters"]:
        assert getattr(ckpt.config, name) == getattr(real, name), name
    assert ckpt.hf_config.to_dict() == real.to_dict()
    gen = GenerationConfig.from_pretrained(str(demo_dir))
    assert ckpt.generation_config.eos_token_id == gen.eos_token_id
    assert ckpt.hf_generation_config.to_dict() == gen.to_dict()


def fast_start_imports(model: str, device: str) -> set[str]:
    """The real entry, to its first token on the fast engine: the modules `-X importtime` saw it import."""
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    cmd = [sys.executable, "-X", "importtime", "-m", "yi_cli", "--model", model, "--device", device]
    cmd += ["--engine", "fast", "--max-new-tokens", "2", "--temperature", "0", "--json", "-p", "Say hi"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout)["new_tokens"] >= 1
    imported = {ln.rsplit("|", 1)[1].strip() for ln in p.stderr.splitlines() if ln.startswith("import time:")}
    assert {"tokenizers", "jinja2", "yi_cli.checkpoint.light_tokenizer"} <= imported  # the list is real
    return imported


def transformers_modules(imported: set[str]) -> list[str]:
    return sorted(m for m in imported if m == "transformers" or m.startswith("transformers."))


@pytest.mark.parametrize("model", ["demo", "demo-gptq8", "demo-fp32"])
def test_fast_start_imports_no_transformers_modeling_or_generation(demo_dir, model):
    imported = fast_start_imports(model, "cpu")
    bad = sorted(m for m in imported if m.startswith(FORBIDDEN))
    assert not bad, bad
    assert not transformers_modules(imported)  # the demo's tokenizer qualifies for light_tokenizer.py


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fast_start_on_cuda_imports_no_transformers_modeling_or_generation(demo_dir):
    """Warm-up, graph capture and the Triton kernels included."""
    imported = fast_start_imports("demo", "cuda")
    bad = sorted(m for m in imported if m.startswith(FORBIDDEN))
    assert not bad, bad
    assert not transformers_modules(imported)


# (query rows T, key slots L, head dim): chunks after a cached prefix, T == L (a first chunk), head sizes that flash
# pads (72, 80 % 8 == 0 aside), one row.
CAUSAL_SHAPES = [(5, 9, 64), (16, 16, 64), (1, 7, 64), (33, 100, 72), (64, 1100, 128), (7, 8, 80)]


def check_causal_equals_torch_bias(device, dtype, backends):
    from torch.nn.attention import sdpa_kernel
    from torch.nn.attention.bias import causal_lower_right

    g = torch.Generator(device).manual_seed(0)
    for t, length, hd in CAUSAL_SHAPES:
        # as llama.attention slices them: one head group's rows of qg [1, KV, G·T, hd], not contiguous
        qg = torch.randn(1, 3, 2 * t, hd, generator=g, device=device, dtype=dtype)
        k, v = (torch.randn(1, 3, length, hd, generator=g, device=device, dtype=dtype) for _ in "kv")
        for j in range(2):
            q = qg[:, :, j * t : (j + 1) * t]
            with sdpa_kernel(backends):
                want = torch.nn.functional.scaled_dot_product_attention(
                    q, k, v, attn_mask=causal_lower_right(t, length)
                )
                got = causal.attention(q, k, v)
            assert got.shape == want.shape and torch.equal(got, want), (t, length, hd, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_causal_attention_equals_torch_lower_right_bias_on_cpu(dtype):
    check_causal_equals_torch_bias("cpu", dtype, PREFILL_ATTENTION)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", ["flash", "efficient", "prefill"])
def test_causal_attention_equals_torch_lower_right_bias_on_gpu(dtype, backend):
    from torch.nn.attention import SDPBackend

    backends = {
        "flash": [SDPBackend.FLASH_ATTENTION],
        "efficient": [SDPBackend.EFFICIENT_ATTENTION],
        "prefill": PREFILL_ATTENTION,
    }[backend]
    check_causal_equals_torch_bias("cuda", dtype, backends)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    "t, length, kv, groups, hd", [(1024, 1024, 4, 8, 128), (300, 1324, 4, 8, 128), (5, 9, 2, 7, 64)]
)
def test_grouped_attention_is_each_head_groups_attention_on_gpu(t, length, kv, groups, hd):
    """llama.attention's prompt chunks: all heads in one flash call (causal.grouped) give each head what attending
    through its own KV head gives, within bf16 rounding of an fp32 reference (flash may split the keys
    differently for 4 heads than for 32), and the [KV, G, T] rows come back where the per-group path puts them."""
    from yi_cli.runtime.llama import attention

    g = torch.Generator("cuda").manual_seed(0)
    qg = torch.randn(1, kv, groups * t, hd, generator=g, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(1, kv, length, hd, generator=g, device="cuda", dtype=torch.bfloat16) for _ in "kv")
    got = attention(qg, k, v, t, None)
    assert causal.grouped(qg.reshape(1, kv * groups, t, hd), k, v) is not None  # the one-call path ran
    mask = torch.tril(torch.ones(t, length, dtype=torch.bool, device="cuda"), diagonal=length - t)
    for j in range(groups):
        rows = slice(j * t, (j + 1) * t)
        want = torch.nn.functional.scaled_dot_product_attention(
            qg[:, :, rows].float(), k.float(), v.float(), attn_mask=mask
        )
        per_group = causal.attention(qg[:, :, rows], k, v).float()
        err, err_group = (got[:, :, rows].float() - want).abs().max(), (per_group - want).abs().max()
        assert err <= max(2 * err_group, 1e-2), (j, float(err), float(err_group))


@pytest.mark.parametrize(
    "tokenizer_config, config, plain",
    [
        ({"tokenizer_class": "TokenizersBackend"}, {"model_type": "llama"}, True),
        ({"tokenizer_class": "LlamaTokenizer"}, {"model_type": "llama"}, False),  # Yi's own: AutoTokenizer decides
        ({"tokenizer_class": "PreTrainedTokenizerFast"}, {"model_type": "llama"}, False),
        (
            {"tokenizer_class": "TokenizersBackend", "auto_map": {"AutoTokenizer": ["x.T", None]}},
            {"model_type": "llama"},
            False,
        ),
        ({"tokenizer_class": "TokenizersBackend"}, {"model_type": "qwen2"}, False),
        ({"tokenizer_class": "TokenizersBackend"}, {"model_type": "llama", "auto_map": {}}, False),
    ],
)
def test_direct_tokenizer_load_only_where_autotokenizer_picks_tokenizersbackend(
    tmp_path, tokenizer_config, config, plain
):
    from yi_cli.checkpoint import loader

    (tmp_path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert not loader._plain_tokenizer(tmp_path)  # no tokenizer.json
    (tmp_path / "tokenizer.json").write_text("{}")
    assert loader._plain_tokenizer(tmp_path) is plain
