"""The tensor shapes a Llama config.json implies, checked against the safetensors headers without reading a weight.

`yi-chat models` listed as ok, and `pull` said ready of, checkpoints whose weights the load then refused: a head_dim
or a vocab_size edited in config.json, a quantization group_size that does not divide a projection's input. The load
checks each tensor as it reads it (checkpoint.loader, quantized.read_qweight); this says the same before any is read.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import LoadError, shown
from . import quantized
from .files import LAYER, missing_in
from .light import DEFAULTS

LINEARS = (  # Llama's projections: (name in a layer, rows from, columns from)
    ("self_attn.q_proj", "q", "d"),
    ("self_attn.k_proj", "kv", "d"),
    ("self_attn.v_proj", "kv", "d"),
    ("self_attn.o_proj", "d", "q"),
    ("mlp.gate_proj", "inter", "d"),
    ("mlp.up_proj", "inter", "d"),
    ("mlp.down_proj", "d", "inter"),
)


def sizes(cfg: dict) -> dict[str, int]:
    """The sizes of a Llama config (plausible.check has made them positive integers where given), as LlamaConfig
    fills the ones it lacks."""
    get = lambda k: cfg.get(k) or DEFAULTS[k]  # noqa: E731
    d, heads = get("hidden_size"), get("num_attention_heads")
    hd = cfg.get("head_dim") or d // heads
    kv = cfg.get("num_key_value_heads") or heads
    return {"d": d, "q": heads * hd, "kv": kv * hd, "inter": get("intermediate_size"), "vocab": get("vocab_size")}


def expected(
    cfg: dict, quant: dict | None, held: dict[str, tuple[Path, list[int]]]
) -> dict[str, tuple[list[int], str]]:
    """tensor name -> (shape, what the loader's error adds) for a Llama checkpoint's tensors among `held`; a
    projection not packable is a LoadError naming the file and the layer, as the load says it."""
    s = sizes(cfg)
    d, vocab = s["d"], s["vocab"]
    out: dict[str, tuple[list[int], str]] = {}
    for i in sorted({int(m[1]) for n in held if (m := LAYER.match(n))}):  # (check_layers: within the config's)
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = out[p + "post_attention_layernorm.weight"] = ([d], "")
        for mod, rows, cols in LINEARS:
            name, n, k = p + mod, s[rows], s[cols]
            if quant is not None and f"{name}.qweight" in held:  # qweight first, as read_qweight reads them
                try:
                    _, what, packed = quantized.packing(name, k, n, quant)
                except quantized.NotPackable as e:
                    raise LoadError(f"{held[f'{name}.qweight'][0]}: {e}") from None
                out.update({f"{name}.{key}": (shape, what) for key, shape in packed.items()})
            else:
                out[f"{name}.weight"] = ([n, k], "")
            out[f"{name}.bias"] = ([n], "")
    out.update({n: ([vocab, d], "") for n in ("model.embed_tokens.weight", "lm_head.weight")})
    out["model.norm.weight"] = ([d], "")
    return out


def check(tensors: dict[Path, dict[str, list[int]]], cfg: dict, quant: dict | None) -> None:
    """Each Llama tensor's shape in the headers (`tensors`: each safetensors file's, as check_safetensors read them)
    as config.json implies it; other architectures are left to the load."""
    if cfg.get("model_type") != "llama" or "auto_map" in cfg:
        return
    held = held_in(tensors)
    for name, (exp, what) in expected(cfg, quant, held).items():  # in the order the load reads them: the same first
        if name in held and list(held[name][1]) != exp:
            f, shape = held[name]
            raise LoadError(f"{f}: tensor {shown(name, 80)} has shape {list(shape)}, expected {exp}{what}")
    # Where no name is Llama's own (`model.` first: pickle weights, whose headers are not read, or a checkpoint
    # saved without the prefix, which transformers adds), the load (--engine generate) is left to say it
    if any(n.startswith("model.") for n in held) and (gone := _missing(cfg, quant, held)) is not None:
        # `pull` said ready and `models` ok of it, where the load refused it
        files = list(tensors)
        raise LoadError(f"{missing_in(files[0].parent, files)}: missing tensor {gone}")


def held_in(tensors: dict[Path, dict[str, list[int]]]) -> dict[str, tuple[Path, list[int]]]:
    """Each tensor's file and shape, by name, from each safetensors file's headers (check_safetensors)."""
    return {name: (f, shape) for f, t in tensors.items() for name, shape in t.items()}


def _missing(cfg: dict, quant: dict | None, held: dict) -> str | None:
    """The first tensor a Llama checkpoint cannot load without that the headers (`held`) lack: the embedding, each
    layer's norms and projections (packed or not; a bias is optional), the final norm, an untied lm_head."""
    layers = cfg.get("num_hidden_layers") or DEFAULTS["num_hidden_layers"]
    if "model.embed_tokens.weight" not in held:
        return "model.embed_tokens.weight"
    for i in range(layers):
        p = f"model.layers.{i}."
        for norm in ("input_layernorm.weight", "post_attention_layernorm.weight"):
            if p + norm not in held:
                return p + norm
        for mod, _, _ in LINEARS:
            if f"{p}{mod}.weight" not in held and f"{p}{mod}.qweight" not in held:
                return f"{p}{mod}.{'qweight' if quant is not None else 'weight'}"
    if "model.norm.weight" not in held:
        return "model.norm.weight"
    if not cfg.get("tie_word_embeddings", DEFAULTS["tie_word_embeddings"]) and "lm_head.weight" not in held:
        return "lm_head.weight"
    return None
