"""A model config checked for plausible sizes before anything is allocated: each size field an integer in a sane
range, and the weights plus a full-context KV cache estimated against the memory of the device.

Without this, `num_hidden_layers: 1000000` builds modules for minutes and `max_position_embeddings: 10**9` asks
for a 128 GB cache; both now fail at once with one line naming the field and the file (exit 3).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import LoadError, shown
from ..inputs import type_name

# field -> (smallest, largest): the largest real models are far inside these (Llama-3.1-405B: 126 layers,
# hidden 16384, 128 heads; vocabularies up to 256k; contexts up to 10M).
BOUNDS = {
    "num_hidden_layers": (1, 1024),
    "hidden_size": (1, 1 << 17),
    "intermediate_size": (1, 1 << 20),
    "vocab_size": (1, 1 << 22),
    "num_attention_heads": (1, 1024),
    "num_key_value_heads": (1, 1024),
    "head_dim": (1, 4096),
    # a context of fewer positions holds no chat at all: 1 loaded, then every prompt was "shorten it"
    "max_position_embeddings": (16, 1 << 24),
}


def layers(cfg: dict) -> int | None:
    """config.json's num_hidden_layers where it states one (check's bounds passed), for the weights to match."""
    n = cfg.get("num_hidden_layers")
    return n if type(n) is int else None


def check(cfg: dict, src: Path) -> None:
    """Each size field present is an integer in BOUNDS, and the head counts divide as attention needs; and the model
    one that chats at all: not an encoder-decoder."""
    if cfg.get("is_encoder_decoder") is True:
        # T5 / flan-t5, BART, Whisper, Marian: a pull fetched the weights and said ready, `models` listed it ok, and
        # -m failed in transformers' words ("Unrecognized configuration class <class '...T5Config'> for this kind of
        # AutoModel: AutoModelForCausalLM.") or with the decoder's "missing tensor" (WhisperForCausalLM).
        arch = cfg.get("architectures")
        what = ", ".join(x for x in ([cfg.get("model_type")] + (arch if type(arch) is list else [])) if type(x) is str)
        raise LoadError(
            f"{src}: an encoder-decoder model{f' ({shown(what, 80)})' if what else ''}, not one yi-chat can chat with "
            "(it runs decoder-only language models: Yi, Llama, Qwen, Mistral, GPT-2, ...)"
        )
    arch = cfg.get("architectures")
    heads = [x for x in arch if type(x) is str] if type(arch) is list else []
    if heads and not any(generates(x) for x in heads):
        # BERT and its kin (a sentence-embedding model's BertModel, a BertForMaskedLM, a classifier): `pull` and
        # `models` took them, and `-m` loaded a model that cannot write text (transformers builds a decoder for it
        # with fresh weights, or fails in its own words)
        raise LoadError(
            f"{src}: {shown(', '.join(heads), 80)} is not a model that writes text (an encoder, a classifier or a "
            "bare model without its language-model head), not one yi-chat can chat with"
        )
    for key, (lo, hi) in BOUNDS.items():
        v = cfg.get(key)
        if v is None:
            continue
        if type(v) is not int:
            raise LoadError(f"{src}: {key} must be an integer, found {type_name(v)} {v!r:.40}")
        if not lo <= v <= hi:
            raise LoadError(f"{src}: {key} = {v} is not a plausible size (expected {lo}..{hi})")
    # Numbers the runtime computes with (inv_freq = 1 / theta ** (2i / d); x / sqrt(mean(x²) + eps)): a string was a
    # TypeError traceback building the model, a negative theta NaN frequencies and a model that babbles.
    rope = cfg.get("rope_parameters")
    numbers = (  # (key, value, a rotary base: positive; else >= 0)
        ("rope_theta", cfg.get("rope_theta"), True),
        ("rope_parameters.rope_theta", rope.get("rope_theta") if type(rope) is dict else None, True),
        ("rms_norm_eps", cfg.get("rms_norm_eps"), False),
    )
    for key, v, positive in numbers:
        if v is not None and (type(v) not in (int, float) or not (v > 0 if positive else v >= 0)):
            want = "a positive number" if positive else "a number >= 0"
            raise LoadError(f"{src}: {key} must be {want}, found {type_name(v)} {v!r:.40}")
    window = cfg.get("sliding_window")
    if window is not None and (type(window) is not int or window < 1):
        # a string or a fraction failed every turn on the generate engine (TypeError), 0 or less meant no window
        raise LoadError(
            f"{src}: sliding_window must be a positive integer or null, found {type_name(window)} {window!r:.40}"
        )
    pad, vocab = cfg.get("pad_token_id"), cfg.get("vocab_size")
    if type(pad) is int and type(vocab) is int and not -vocab <= pad < vocab:
        # one past an unresized vocabulary: the fast engine chatted, /model, --engine generate and yi_cli.load failed
        # in torch's words ("Padding_idx must be within num_embeddings"), said of the weights
        raise LoadError(f"{src}: pad_token_id = {pad} is past the vocabulary (vocab_size = {vocab})")
    for key, theta, base in numbers:  # 1e300: no position told apart (babble); 1e-300: frequencies past any float
        if base and theta is not None and not 1 <= theta <= MAX_THETA:  # (the fast engine refused it, generate babbled)
            raise LoadError(
                f"{src}: {key} = {theta!r:.40} is not a plausible rotary base (1..{MAX_THETA:g}; real ones 1e4..1e7)"
            )
    eps = cfg.get("rms_norm_eps")
    if eps is not None and not eps <= MAX_EPS:  # 1e300 (or Infinity): every activation divided to 0, empty replies
        raise LoadError(f"{src}: rms_norm_eps = {eps!r:.40} is not a plausible epsilon (at most {MAX_EPS:g})")
    kind = rope_kind(cfg)
    if cfg.get("model_type") == "llama" and kind not in ROPE_TYPES:
        # -m refused it only as the model loaded (llama.rotary), after `pull` said ready and `models` listed it ok
        raise LoadError(f"{src}: rope_type {kind!r:.40} is not one yi-chat knows ({', '.join(ROPE_TYPES)})")
    _rope_scaling(cfg, kind, src)
    heads, kv = cfg.get("num_attention_heads"), cfg.get("num_key_value_heads")
    if heads and kv and heads % kv:
        raise LoadError(f"{src}: num_attention_heads = {heads} is not a multiple of num_key_value_heads = {kv}")
    hidden = cfg.get("hidden_size")
    if heads and hidden and cfg.get("head_dim") is None and hidden % heads:
        raise LoadError(f"{src}: hidden_size = {hidden} is not a multiple of num_attention_heads = {heads}")
    head_dim = cfg.get("head_dim") or (hidden // heads if heads and hidden else None)
    if cfg.get("model_type") == "llama" and head_dim and head_dim % 2:
        # RoPE turns pairs of a head's dimensions: an odd head loaded, then every turn failed on the fast engine
        # ("The size of tensor a (63) must match the size of tensor b (64)"). Llama's only: other types rotate part
        # of a head (partial_rotary_factor, at the top or in rope_parameters) and transformers judges them
        raise LoadError(f"{src}: head_dim = {head_dim} is odd, and rotary position embeddings need an even head size")


MAX_EPS = 1.0  # real models' rms_norm_eps: 1e-6 .. 1e-5
MAX_THETA = 1e12  # real models' rope_theta: 1e4 (Llama 2) .. 5e6 (Yi 200K), 1e7 (Qwen 1M)
MAX_ROPE_SCALE = 100.0  # yarn's attention_factor, mscale, mscale_all_dim: real ones 0.7 .. 1.5


MAX_ROPE_FACTOR = 1 << 16  # real scalings: 2 .. 64 (yarn, linear, llama3's 8 and 32)


def _rope_scaling(cfg: dict, kind, src: Path) -> None:
    """The numbers of a rope scaling (rope_scaling, else rope_parameters) that no model has, refused as transformers'
    own validation warns of them (its warnings are off: configs.quiet_transformers): a factor under 1 or past any
    model's, an original context under 1, llama3's low_freq_factor not under its high_freq_factor. Each loaded and
    answered garbage ("*nurse: 1. I", "HIGGFHD-1**"), exit 0."""
    where, rope = _rope_source(cfg)
    if type(rope) is not dict or kind == "default":
        return

    def number(key: str, lo: float, hi: float, integer: bool = False) -> None:
        v = rope.get(key)
        if v is None:
            return
        kinds = (int,) if integer else (int, float)
        if type(v) not in kinds or not lo <= v <= hi:
            want = "an integer" if integer else "a number"
            raise LoadError(f"{src}: {where}.{key} must be {want} in {lo:g}..{hi:g}, found {type_name(v)} {v!r:.40}")

    number("factor", 1, MAX_ROPE_FACTOR)
    number("original_max_position_embeddings", 1, BOUNDS["max_position_embeddings"][1], integer=True)
    if kind == "yarn":  # attention_factor 0 or 1e6 (every attention score scaled to nothing, or past softmax): babble
        for key in ("attention_factor", "mscale", "mscale_all_dim"):
            number(key, 1e-3 if key == "attention_factor" else 0, MAX_ROPE_SCALE)
    if kind == "longrope":  # a factor divides a frequency: 0 or negative ones turned positions around (babble)
        for key in ("short_factor", "long_factor"):
            v = rope.get(key)
            if v is not None and not (
                type(v) is list and all(type(x) in (int, float) and 0 < x <= MAX_ROPE_FACTOR for x in v)
            ):
                raise LoadError(f"{src}: {where}.{key} must be a list of numbers in (0, {MAX_ROPE_FACTOR:g}]")
    if kind == "proportional":  # none of a head rotated (0) is no position at all
        v = rope.get("partial_rotary_factor")
        if v is not None and not (type(v) in (int, float) and 0 < v <= 1):
            raise LoadError(f"{src}: {where}.partial_rotary_factor must be a number in (0, 1], found {v!r:.40}")
    if kind == "llama3":
        number("low_freq_factor", 0, MAX_ROPE_FACTOR)
        number("high_freq_factor", 0, MAX_ROPE_FACTOR)
        low, high = rope.get("low_freq_factor"), rope.get("high_freq_factor")
        if low is not None and high is not None and not low < high:
            raise LoadError(f"{src}: {where}.low_freq_factor = {low:g} must be under its high_freq_factor = {high:g}")


# The rope kinds Llama's rotary embedding computes: "default" and transformers' ROPE_INIT_FUNCTIONS (tests/test_start.py
# compares them), named here so that `models` and `pull` judge a config without importing transformers.
ROPE_TYPES = ("default", "dynamic", "linear", "llama3", "longrope", "proportional", "yarn")


def rope_kind(cfg: dict):
    """The rope_type LlamaConfig standardizes config.json's dict to: rope_scaling's where it is set (it wins over
    rope_parameters), its legacy "type" where "rope_type" is missing, "default" where neither says."""
    rope = _rope_source(cfg)[1]
    if type(rope) is not dict:
        return "default"
    return rope.get("rope_type", rope.get("type", "default"))


def _rope_source(cfg: dict) -> tuple[str, object]:
    """The field that says the rope and its value: rope_scaling where it is set (it wins), else rope_parameters."""
    rope = cfg.get("rope_scaling")
    return ("rope_scaling", rope) if rope is not None else ("rope_parameters", cfg.get("rope_parameters"))


# Heads of transformers' model classes that do not write text: an encoder's masked LM or pre-training heads, the
# classifiers, and speech and vision heads; a class named only "...Model" (BertModel, LlamaModel) has no head at all.
NOT_GENERATING = (
    "ForMaskedLM",
    "ForPreTraining",
    "ForNextSentencePrediction",
    "ForSequenceClassification",
    "ForTokenClassification",
    "ForQuestionAnswering",
    "ForMultipleChoice",
    "ForImageClassification",
    "ForAudioClassification",
    "ForAudioFrameClassification",
    "ForXVector",
    "ForCTC",
    "ForObjectDetection",
    "ForSemanticSegmentation",
    "ForDepthEstimation",
    "ForMaskedImageModeling",
)


def generates(architecture: str) -> bool:
    """Whether a config's `architectures` entry names a class that writes text (XForCausalLM, GPT2LMHeadModel,
    XForConditionalGeneration, ...): not one of NOT_GENERATING's heads, nor a bare "...Model"."""
    if architecture.endswith(NOT_GENERATING):
        return False
    return not architecture.endswith("Model") or architecture.endswith("LMHeadModel")


# The same sizes under other architectures' names (transformers maps them with a config class's attribute_map:
# GPT-2's n_embd / n_layer / n_head / n_positions, T5's d_model / num_layers / num_heads / d_ff, MPT's n_layers /
# n_heads / max_seq_len): without them a 13 MB GPT-2 was estimated as a 7B Llama (the fallbacks) and refused.
ALIASES = {
    "hidden_size": ("n_embd", "d_model"),
    "num_hidden_layers": ("n_layer", "num_layers", "n_layers"),
    "num_attention_heads": ("n_head", "num_heads", "n_heads"),
    "intermediate_size": ("n_inner", "d_ff", "ffn_dim"),
    "max_position_embeddings": ("n_positions", "max_seq_len", "seq_length"),
}


def size(cfg: dict, key: str) -> int | None:
    """A size field of config.json under its Llama name or an alias (ALIASES); None where none is an integer in
    BOUNDS (the Llama names themselves were checked by check)."""
    lo, hi = BOUNDS.get(key, (1, 1 << 24))
    for name in (key, *ALIASES.get(key, ())):
        v = cfg.get(name)
        if type(v) is int and lo <= v <= hi:
            return v
    return None


def estimate(cfg: dict, elem_bytes: int, weight_bits: float, positions: int | None = None) -> tuple[int, int] | None:
    """(weight bytes, KV-cache bytes at the full context, or at `positions` where fewer: --context) of a
    decoder-only transformer with this config; None where the config names no hidden size or layer count yi-chat
    knows (an architecture of its own: nothing to go on)."""
    llama = cfg.get("model_type") == "llama"  # transformers fills a size it lacks with LlamaConfig's (7B's)
    hidden = size(cfg, "hidden_size") or (4096 if llama else None)
    layers = size(cfg, "num_hidden_layers") or (32 if llama else None)
    if hidden is None or layers is None:
        return None
    heads = size(cfg, "num_attention_heads") or (32 if llama else max(hidden // 128, 1))
    kv = size(cfg, "num_key_value_heads") or heads
    head_dim = size(cfg, "head_dim") or max(hidden // heads, 1)
    inter = size(cfg, "intermediate_size") or (11008 if llama else 4 * hidden)
    vocab = size(cfg, "vocab_size") or 32000
    ctx = held_positions(cfg, positions)
    per_layer = hidden * head_dim * (2 * heads + 2 * kv) + 3 * hidden * inter
    embed = vocab * hidden * (1 if cfg.get("tie_word_embeddings") else 2)
    weights = int(layers * per_layer * weight_bits / 8) + embed * elem_bytes
    cache = 2 * layers * kv * head_dim * ctx * elem_bytes
    return weights, cache


def context(cfg: dict) -> int:
    """The positions a full KV cache holds (4096 where the config names none)."""
    return size(cfg, "max_position_embeddings") or 4096


def held_positions(cfg: dict, positions: int | None) -> int:
    """The positions a KV cache is counted for: the full context's, or `positions` (--context) where fewer."""
    return min(context(cfg), positions or context(cfg))


def device_memory(device: str) -> int | None:
    """Total bytes of the device's memory: the GPU's, else the machine's physical memory; None when unknown."""
    if device.startswith("cuda"):
        import torch

        try:
            return torch.cuda.mem_get_info(torch.device(device))[1]
        except Exception:  # a broken driver is reported by the load itself
            return None
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(
    cfg: dict, src: Path, device: str, elem_bytes: int, weight_bits: float, positions: int | None = None
) -> None:
    """Refuse a model whose weights and KV cache (the full context's, or `positions`': --context) exceed the
    device's memory. A config's max_position_embeddings of 2^20 refused the model even under --context 4096."""
    have = device_memory(device)
    if have is None:
        return
    sizes = estimate(cfg, elem_bytes, weight_bits, positions)
    if sizes is None:
        return
    weights, cache = sizes
    if weights + cache > have:
        gib = 1 << 30
        culprit = "max_position_embeddings" if cache > weights else "the model's sizes"
        ctx = held_positions(cfg, positions)
        hint = "; --context N holds fewer positions" if weights < have and ctx > 1 else ""
        raise LoadError(
            f"{src}: {culprit}: this model needs about {(weights + cache) / gib:.1f} GiB "
            f"(weights {weights / gib:.1f} GiB, KV cache for {ctx} "
            f"positions {cache / gib:.1f} GiB), more than the {have / gib:.1f} GiB of {device}{hint}"
        )
