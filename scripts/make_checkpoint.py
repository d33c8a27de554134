"""Build a Yi-shaped checkpoint with RANDOM weights in the exact on-disk formats, for load/decode benchmarks.

    python scripts/make_checkpoint.py --format awq --shape yi-6b --out /tmp/yi6b-awq
    --format awq    AutoAWQ GEMM int4 (zero point, group 128), model.safetensors / sharded
             gptq8  AutoGPTQ v1 int8 (sym, group 128), gptq4 the same at 4 bits; zero fp16 bias and g_idx per layer
             fp16   plain fp16
    --shape  yi-6b | yi-34b | tiny (hidden 256, 2 layers, vocab 320: for tests)

Packed tensors are drawn directly as random integers with scales chosen so every projection has weight std
1/sqrt(in): activations stay O(1) through all layers; no full-precision model is ever built. Files over
--max-shard-gb (default 4) are split into model-0000i-of-0000n.safetensors with model.safetensors.index.json.
Tokenizer: copied from --tokenizer DIR (e.g. the demo checkpoint) if given, otherwise a minimal byte-level tokenizer
with Yi's special-token ids and ChatML template (yi_cli.checkpoint.writer.write_byte_tokenizer). The text is meaningless.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from yi_cli.checkpoint import formats as Q  # noqa: E402
from yi_cli.checkpoint import writer  # noqa: E402

SHAPES = {
    "yi-6b": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=4,
        vocab_size=64000,
    ),
    "yi-34b": dict(
        hidden_size=7168,
        intermediate_size=20480,
        num_hidden_layers=60,
        num_attention_heads=56,
        num_key_value_heads=8,
        vocab_size=64000,
    ),
    "tiny": dict(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=320,
    ),
}
FORMATS = {"awq": ("awq", 4), "gptq8": ("gptq", 8), "gptq4": ("gptq", 4), "fp16": (None, 16)}


def config(shape: str, fmt: str, group: int) -> dict:
    from transformers import LlamaConfig

    cfg = LlamaConfig(
        **SHAPES[shape],
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 5000000.0},
    ).to_dict()
    cfg.update(architectures=["LlamaForCausalLM"], dtype="float16")
    method, bits = FORMATS[fmt]
    if method == "awq":
        cfg["quantization_config"] = {
            "quant_method": "awq",
            "bits": 4,
            "group_size": group,
            "zero_point": True,
            "version": "gemm",
        }
    elif method == "gptq":
        cfg["quantization_config"] = {
            "bits": bits,
            "group_size": group,
            "damp_percent": 0.01,
            "desc_act": False,
            "static_groups": False,
            "sym": True,
            "true_sequential": True,
            "model_name_or_path": None,
            "model_file_base_name": None,
            "quant_method": "gptq",
            "checkpoint_format": "gptq",
        }
    return cfg


def linear(n_in: int, n_out: int, fmt: str, group: int, gen) -> dict[str, torch.Tensor]:
    """One projection (nn.Linear [out, in]) in `fmt`, weight std ~ 1/sqrt(in)."""
    std = n_in**-0.5
    if fmt == "fp16":
        return {"weight": (torch.randn(n_out, n_in, generator=gen) * std).half()}
    method, bits = FORMATS[fmt]
    # Codes are odd, uniform on 1..2^b-1 around the zero z = 2^(b-1): (q - z) is symmetric, std ~ 2^b / sqrt(12).
    # (All of 0..2^b-1 would give every weight the same mean -s/2: a direction every layer amplifies, with the
    # residual stream growing ~100x per layer from the third layer on and attention saturated, so the model's
    # output flips on bf16-level noise. Real checkpoints' weights are centred.)
    odd = sum(1 << (bits * i) for i in range(32 // bits))  # bit 0 of every code in a word
    words = lambda *shape: (
        torch.randint(-(2**31), 2**31, shape, generator=gen, dtype=torch.int64)  # noqa: E731
        | odd
    ).int()
    scales = (torch.rand(n_in // group, n_out, generator=gen) + 0.5) * (std * 12**0.5 / 2**bits)
    mid = torch.full((n_in // group, n_out), 2 ** (bits - 1), dtype=torch.int32)
    if method == "awq":
        return {"qweight": words(n_in, n_out // 8), "qzeros": Q.pack_cols(mid, 4, Q.AWQ_ORDER), "scales": scales.half()}
    return {
        "qweight": words(n_in * bits // 32, n_out),
        "qzeros": Q.pack_cols(mid - 1, bits),
        "scales": scales.half(),
        "g_idx": Q.trivial_g_idx(n_in, group),
        "bias": torch.zeros(n_out).half(),
    }


def tensors(cfg: dict, fmt: str, group: int, gen):
    """Yields (name, tensor) in file order, one layer at a time."""
    h, inter, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = cfg["num_key_value_heads"] * (h // cfg["num_attention_heads"])
    yield "model.embed_tokens.weight", torch.randn(v, h, generator=gen).half()
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for name, n_in, n_out in [
            ("self_attn.q_proj", h, h),
            ("self_attn.k_proj", h, kv),
            ("self_attn.v_proj", h, kv),
            ("self_attn.o_proj", h, h),
            ("mlp.gate_proj", h, inter),
            ("mlp.up_proj", h, inter),
            ("mlp.down_proj", inter, h),
        ]:
            for k, t in linear(n_in, n_out, fmt, group, gen).items():
                yield f"{p}{name}.{k}", t
        yield p + "input_layernorm.weight", torch.ones(h, dtype=torch.float16)
        yield p + "post_attention_layernorm.weight", torch.ones(h, dtype=torch.float16)
    yield "model.norm.weight", torch.ones(h, dtype=torch.float16)
    yield "lm_head.weight", (torch.randn(v, h, generator=gen) * h**-0.5).half()


def write_weights(tmp: Path, cfg: dict, fmt: str, group: int, seed: int, max_bytes: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    shards, cur, size = [], {}, 0
    for name, t in tensors(cfg, fmt, group, gen):
        nbytes = t.numel() * t.element_size()
        if cur and size + nbytes > max_bytes:
            shards.append(_save(tmp, len(shards), cur))
            cur, size = {}, 0
        cur[name], size = t, size + nbytes
    shards.append(_save(tmp, len(shards), cur))
    method, bits = FORMATS[fmt]
    if len(shards) == 1:  # AutoGPTQ names a single file after its settings
        single = f"gptq_model-{bits}bit-{group}g.safetensors" if method == "gptq" else "model.safetensors"
        (tmp / shards[0][0]).rename(tmp / single)
        return
    n, weight_map = len(shards), {}
    for i, (part, names) in enumerate(shards):
        final = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        (tmp / part).rename(tmp / final)
        weight_map.update({k: final for k in names})
    index = {
        "metadata": {"total_size": sum((tmp / f).stat().st_size for f in set(weight_map.values()))},
        "weight_map": weight_map,
    }
    (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _save(tmp: Path, i: int, cur: dict) -> tuple[str, list[str]]:
    name = f"part-{i}.safetensors"
    save_file(cur, str(tmp / name), metadata={"format": "pt"})
    return name, list(cur)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--format", choices=list(FORMATS), required=True)
    ap.add_argument("--shape", choices=list(SHAPES), default="yi-6b")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--group-size", type=int, default=None, help="default 128 (Yi's); 64 for --shape tiny")
    ap.add_argument("--tokenizer", type=Path, default=None, help="copy tokenizer files from this checkpoint dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-shard-gb", type=float, default=4.0)
    a = ap.parse_args(argv)
    group = a.group_size or (64 if a.shape == "tiny" else 128)
    cfg = config(a.shape, a.format, group)
    extra = {"config.json": cfg, "generation_config.json": {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}}
    if FORMATS[a.format][0] == "gptq":
        extra["quantize_config.json"] = cfg["quantization_config"]
    with tempfile.TemporaryDirectory() as tok:
        src = a.tokenizer
        if src is None:
            src = Path(tok)
            writer.write_byte_tokenizer(src)
        writer.write_atomic(
            src, a.out, lambda tmp: write_weights(tmp, cfg, a.format, group, a.seed, int(a.max_shard_gb * 2**30)), extra
        )
    print(json.dumps({"out": str(a.out), "format": a.format, "shape": a.shape, "group_size": group}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
