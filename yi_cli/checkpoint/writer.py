"""Turn a plain float checkpoint into AutoAWQ GEMM int4 or AutoGPTQ v1 checkpoints (round-to-nearest).

Used for `--model demo` (AWQ int4, group 64) and `--model demo-gptq8`, and by tests and scripts for fixtures.
Output is written to a temp dir beside `dst` and renamed into place, so a crash leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .. import durable
from . import formats as Q

PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
NOT_TOKENIZER = ("config.json", "quantize_config.json", "model.safetensors.index.json")
YI_SPECIALS = [
    "<unk>",
    "<|startoftext|>",
    "<|endoftext|>",
    "<|reserved_3|>",
    "<|reserved_4|>",
    "<|reserved_5|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|im_sep|>",
]  # ids 0..8 as in Yi's tokenizer
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def make_awq(src: Path, dst: Path, group_size: int = 64) -> Path:
    """AutoAWQ GEMM int4 with zero point: qweight/qzeros/scales per projection, no bias unless the source has one."""
    qc = {"quant_method": "awq", "bits": 4, "group_size": group_size, "zero_point": True, "version": "gemm"}

    def layer(w, bias):
        qw = Q.quantize_rtn(w, 4, group_size, sym=False)
        qw.bias = bias
        return Q.to_awq(qw)

    return _convert(Path(src), Path(dst), layer, qc, "model.safetensors", extra={})


def make_gptq(
    src: Path, dst: Path, bits: int = 8, group_size: int = 64, desc_act: bool = False, sym: bool = True
) -> Path:
    """AutoGPTQ 0.7 layout: gptq_model-{b}bit-{g}g.safetensors + quantize_config.json, zero fp16 bias per layer.

    desc_act without calibration data orders columns by descending max |w| (a stand-in for the Hessian
    diagonal AutoGPTQ uses), which gives a real g_idx permutation.
    """
    base = f"gptq_model-{bits}bit-{group_size}g"
    qc = {
        "bits": bits,
        "group_size": group_size,
        "damp_percent": 0.01,
        "desc_act": desc_act,
        "static_groups": False,
        "sym": sym,
        "true_sequential": True,
        "model_name_or_path": None,
        "model_file_base_name": base,
        "quant_method": "gptq",
        "checkpoint_format": "gptq",
    }

    def layer(w, bias):
        perm = torch.argsort(w.abs().amax(0), descending=True, stable=True) if desc_act else None
        qw = Q.quantize_rtn(w, bits, group_size, sym=sym, perm=perm)
        qw.bias = bias
        return Q.to_gptq(qw)

    return _convert(Path(src), Path(dst), layer, qc, base + ".safetensors", extra={"quantize_config.json": qc})


def _is_proj(prefix: str) -> bool:
    return ".layers." in prefix and prefix.rsplit(".", 1)[-1] in PROJ


def _convert(src: Path, dst: Path, layer, qc: dict, weights_name: str, extra: dict) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    from . import files, shapes

    cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
    # The source's files as the loader checks them, before a byte of a weight is read: a FIFO named *.safetensors
    # beside them hung the demo's conversion past every signal (a blocking open), a stray file's 8 GB tensor was
    # read into memory, and a source without weights made a demo of none, "ready"
    paths = files.plain_files(src, allow_pickle=False)
    names = files.check_safetensors(paths, plain=True)
    shapes.check(names, cfg, None)
    held = shapes.held_in(names)
    wanted = set(shapes.expected(cfg, None, held)) if cfg.get("model_type") == "llama" else set(held)
    tensors = {}
    for f in paths:
        with safe_open(str(f), framework="pt", device="cpu") as h:
            for k in h.keys():
                if k in wanted:
                    tensors[k] = h.get_tensor(k)
    out = {}
    for name, t in tensors.items():
        prefix, leaf = name.rsplit(".", 1)
        if _is_proj(prefix) and leaf == "weight":  # [out, in] float -> packed tensors (+ bias)
            packed = layer(t, tensors.get(prefix + ".bias"))
            out.update({f"{prefix}.{k}": v.contiguous() for k, v in packed.items()})
        elif not (_is_proj(prefix) and leaf == "bias"):  # embeddings, norms, lm_head: fp16 as AutoAWQ/AutoGPTQ save
            out[name] = t.to(torch.float16) if t.is_floating_point() else t
    cfg["quantization_config"] = qc
    cfg["dtype"] = "float16"
    files = {"config.json": cfg, **extra}
    return write_atomic(src, dst, lambda tmp: save_file(out, str(tmp / weights_name), metadata={"format": "pt"}), files)


def write_atomic(src: Path, dst: Path, write_weights, json_files: dict) -> Path:
    """Build dst in a temp dir beside it: tokenizer files copied from src, write_weights(tmp), JSON files; rename."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    umask = os.umask(0)
    os.umask(umask)
    try:
        for f in src.iterdir():  # tokenizer files, chat template, generation config
            if f.is_file() and f.suffix not in (".safetensors", ".bin") and f.name not in NOT_TOKENIZER:
                shutil.copy2(f, tmp / f.name)
        write_weights(tmp)
        for name, data in json_files.items():
            (tmp / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        for f in [tmp, *tmp.iterdir()]:  # mkdtemp makes 0700 dirs; give the result the usual permissions
            os.chmod(f, (0o777 if f.is_dir() else 0o666) & ~umask)
        durable.replace_dir(tmp, dst)  # fsync the files, rename, fsync the parent
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def write_byte_tokenizer(dst: Path) -> None:
    """A minimal byte-level tokenizer with Yi's special token ids and ChatML template (fixtures, benchmarks)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()  # 256 printable stand-ins for the bytes
    vocab = {t: i for i, t in enumerate(YI_SPECIALS + sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(YI_SPECIALS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<unk>",
    )
    fast.chat_template = CHATML
    fast.save_pretrained(str(dst))
