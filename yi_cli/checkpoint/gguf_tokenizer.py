"""The demo's tokenizer files (tokenizer.json, tokenizer_config.json, chat_template.jinja), written from its GGUF's
own metadata the way llama.cpp reads it: vocabulary, merges, token types, special token ids, pre-tokenizer and chat
template.

transformers' GGUF conversion is not stable across versions: 5.17 names `<|im_start|>` the eos token, drops the pad
token and adds byte fallback, 5.25 does neither, and neither splits digits as SmolLM's pre-tokenizer ("smollm") does.
These files are the same on every transformers version, keep light_tokenizer's fast path, and encode as SmolLM's
own tokenizer (tests/test_demo_tokenizer.py checks llama.cpp's fingerprint of it).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import LoadError

# llama.cpp's pre-tokenizers (src/llama-vocab.cpp) that are a byte-level BPE's GPT-2 regex, with "\p{N}" split
# first for "smollm": each digit its own piece, as tokenizers' Digits(individual_digits=True).
PRE_DIGITS = {"gpt2": False, "smollm": True}
CONTROL = 3  # llama.cpp's LLAMA_TOKEN_TYPE_CONTROL: a special added token
NAMED_IDS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "unk_token": "unknown_token_id"}
NAMED_IDS["pad_token"] = "padding_token_id"


def write(gguf: Path, out: Path) -> None:
    """Write the tokenizer files of GGUF file `gguf` into folder `out`; LoadError for what they cannot express."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf)).fields
    meta = _Meta(fields, gguf)
    model, pre = meta.text("tokenizer.ggml.model"), meta.text("tokenizer.ggml.pre", "default")
    if model != "gpt2" or pre not in PRE_DIGITS:
        raise LoadError(f"{gguf}: tokenizer {model!r} with pre-tokenizer {pre!r} is not supported")
    if meta.scalar("tokenizer.ggml.add_bos_token", False) or meta.scalar("tokenizer.ggml.add_eos_token", False):
        raise LoadError(f"{gguf}: a tokenizer that adds bos or eos tokens is not supported")
    tokens, types = meta.texts("tokenizer.ggml.tokens"), meta.ints("tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in meta.texts("tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens) or len(types) != len(tokens) or any(len(m) != 2 for m in merges):
        raise LoadError(f"{gguf}: inconsistent tokenizer vocabulary")
    config = {"backend": "tokenizers", "tokenizer_class": "TokenizersBackend"}
    for name, key in NAMED_IDS.items():
        i = meta.scalar(f"tokenizer.ggml.{key}", None)
        if i is not None:
            if not 0 <= i < len(tokens) or types[i] != CONTROL:
                raise LoadError(f"{gguf}: {key} {i} is not a control token")
            config[name] = tokens[i]
    config["clean_up_tokenization_spaces"] = False
    out.mkdir(parents=True, exist_ok=True)
    _backend(vocab, merges, [t for t, k in zip(tokens, types, strict=True) if k == CONTROL], PRE_DIGITS[pre]).save(
        str(out / "tokenizer.json")
    )
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    template = meta.text("tokenizer.chat_template", None)
    if template is not None:
        (out / "chat_template.jinja").write_text(template, encoding="utf-8", newline="")


def _backend(vocab: dict, merges: list, special: list, digits: bool):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    split = [pre_tokenizers.Digits(individual_digits=True)] if digits else []
    tok.pre_tokenizer = pre_tokenizers.Sequence([*split, byte_level]) if split else byte_level
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1", special_tokens=[])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    return tok


class _Meta:
    """Typed reads of a GGUFReader's fields (gguf's ReaderField: `parts` indexed by `data`, as transformers reads
    them); a missing or mistyped required field is a LoadError naming the file."""

    def __init__(self, fields: dict, path: Path):
        self.fields, self.path = fields, path

    def _parts(self, key: str, required: bool):
        f = self.fields.get(key)
        if f is None:
            if required:
                raise LoadError(f"{self.path}: no {key}")
            return None
        return [f.parts[i] for i in f.data]

    def texts(self, key: str) -> list[str]:
        try:
            return [bytes(p).decode("utf-8") for p in self._parts(key, True)]
        except (UnicodeDecodeError, TypeError, ValueError):
            raise LoadError(f"{self.path}: {key} is not text") from None

    def ints(self, key: str) -> list[int]:
        return [int(p[0]) for p in self._parts(key, True)]

    def text(self, key: str, default=LoadError):
        if key not in self.fields and default is not LoadError:
            return default
        values = self.texts(key)
        if len(values) != 1:
            raise LoadError(f"{self.path}: {key} is not one text")
        return values[0]

    def scalar(self, key: str, default):
        parts = self._parts(key, False)
        if parts is None:
            return default
        if len(parts) != 1 or len(parts[0]) != 1:
            raise LoadError(f"{self.path}: {key} is not one value")
        return parts[0][0].item()
