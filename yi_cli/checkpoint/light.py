"""config.json and generation_config.json of a plain Llama checkpoint read without transformers' config classes.

Building a LlamaConfig imports transformers' modeling side (activations, hub kernels, torch.distributed.tensor: ~0.8
s on the CPU here, several on the GPU machine) and GenerationConfig imports transformers.generation; the fast
engine reads a dozen numbers. `llama_view` answers those fields with LlamaConfig's own defaults; anything else it is
asked loads the real config (transformers) on first use. It returns None, so the loader builds the real config at
once as before (and its errors stay what they were), for anything it does not mirror exactly: another model type,
remote code, a rope type other than the original one, a field of an unexpected type.
"""

from __future__ import annotations

# field -> LlamaConfig's default (transformers 5; tests/test_start.py compares every one against LlamaConfig).
DEFAULTS = {
    "hidden_act": "silu",
    "mlp_bias": False,
    "attention_bias": False,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "rms_norm_eps": 1e-6,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
    "max_position_embeddings": 2048,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
DEFAULT_THETA = 10000.0
_INTS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
_INTS_OR_NONE = ("num_key_value_heads", "head_dim", "max_position_embeddings")


class LlamaView:
    """The fields of a LlamaConfig that the fast runtime, the template and /model read; other attributes come from
    the real config, built on first use by `load_real` (transformers)."""

    def __init__(self, fields: dict, load_real):
        self.__dict__.update(fields)
        self._load_real, self._real = load_real, None

    def real(self):
        """The transformers config (for the generate engine, /model's meta model, yi_cli.load)."""
        if self._real is None:
            self._real = self._load_real()
        return self._real

    def __getattr__(self, name: str):  # only for names not set in __init__
        if name.startswith("_"):  # our own before __init__ ran (copy, pickle), dunders: never the real config's
            raise AttributeError(name)
        return getattr(self.real(), name)


def _number(v) -> bool:
    return type(v) in (int, float)


def _ids(v) -> bool:
    return v is None or type(v) is int or (type(v) is list and all(type(e) is int for e in v))


def rope_parameters(raw: dict) -> dict | None:
    """LlamaConfig's standardized rope_parameters for the original RoPE, None for any other kind."""
    rp = raw.get("rope_parameters")
    if raw.get("rope_scaling") is not None:  # LlamaConfig takes it over rope_parameters (theta and all)
        return None
    if rp is not None:
        if type(rp) is not dict or set(rp) - {"rope_theta", "rope_type"} or rp.get("rope_type", "default") != "default":
            return None
        theta = rp.get("rope_theta", raw.get("rope_theta", DEFAULT_THETA))
    elif "partial_rotary_factor" not in raw:
        theta = raw.get("rope_theta", DEFAULT_THETA)
    else:
        return None
    return {"rope_theta": theta, "rope_type": "default"} if _number(theta) and theta > 0 else None


def llama_view(raw: dict, load_real) -> LlamaView | None:
    """A LlamaView of config.json's dict `raw` (already through plausible.check), or None where only
    transformers' own LlamaConfig gives the exact values."""
    if raw.get("model_type") != "llama" or "auto_map" in raw:
        return None
    fields = {k: raw.get(k, d) for k, d in DEFAULTS.items()}
    if (
        fields["hidden_act"] != "silu"
        or type(fields["mlp_bias"]) is not bool
        or type(fields["attention_bias"]) is not bool
        or type(fields["tie_word_embeddings"]) is not bool
        or not _number(fields["rms_norm_eps"])
        or not all(type(fields[k]) is int for k in _INTS)
        or not all(raw.get(k) is None or type(raw[k]) is int for k in _INTS_OR_NONE)
        or not _ids(fields["eos_token_id"])
        or not _ids(fields["bos_token_id"])
    ):
        return None
    rope = rope_parameters(raw)
    if rope is None:
        return None
    heads = fields["num_attention_heads"]
    fields["num_key_value_heads"] = raw.get("num_key_value_heads") or heads
    fields["head_dim"] = raw.get("head_dim") or fields["hidden_size"] // heads
    fields["max_position_embeddings"] = raw.get("max_position_embeddings", DEFAULTS["max_position_embeddings"])
    fields["sliding_window"] = raw.get("sliding_window")  # (plausible: a positive int or None)
    fields.update(model_type="llama", rope_parameters=rope)
    return LlamaView(fields, load_real)


class GenerationView:
    """generation_config.json's eos_token_id (all the fast engine reads of it); the rest from transformers'
    GenerationConfig, built on first use."""

    def __init__(self, eos_token_id, load_real):
        self.eos_token_id = eos_token_id
        self._load_real, self._real = load_real, None

    def real(self):
        if self._real is None:
            self._real = self._load_real()
        return self._real

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.real(), name)


def generation_view(raw: dict, load_real) -> GenerationView | None:
    eos = raw.get("eos_token_id")
    return GenerationView(eos, load_real) if _ids(eos) else None
