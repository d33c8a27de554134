"""Quantized checkpoints on disk: which format (AutoAWQ GEMM int4, AutoGPTQ v1 4/8-bit) and reading one projection's
packed tensors into a QWeight (formats.py holds the bit layouts)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import LoadError
from ..inputs import field
from .files import Tensors, check_index, fetch_again, index_files, matching, read_json

if TYPE_CHECKING:
    from .formats import QWeight

PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SUPPORTED = "supported: awq gemm 4-bit with zero_point, gptq v1 4/8-bit"


def detect(path: Path, cfg: dict, listed: list[str] | None = None) -> dict | None:
    """None for a plain checkpoint; else the quantization settings. Unsupported variants raise LoadError. listed: the
    repo's file names where its weights are not fetched yet (a hub pull), checked in place of the folder's."""
    src, qc = path / "config.json", cfg.get("quantization_config")
    if qc is None:
        src = path / "quantize_config.json"  # AutoGPTQ writes it; older versions leave config.json alone
        if not src.is_file():
            return None
        qc = dict(read_json(src))
        qc.setdefault("quant_method", "gptq")
    if not isinstance(qc, dict):
        raise LoadError(f"{src}: quantization_config is not an object")
    for key, kinds in (
        ("quant_method", str),
        ("bits", int),
        ("w_bit", int),
        ("group_size", int),
        ("q_group_size", int),
        ("version", str),
        ("checkpoint_format", str),
        ("format", str),
        ("modules_to_not_convert", (list, type(None))),
        ("zero_point", bool),
        ("sym", bool),
        ("desc_act", bool),
    ):
        field(qc, key, kinds, src, LoadError, label=f"quantization_config.{key}")
    if not all(isinstance(m, str) for m in qc.get("modules_to_not_convert") or []):
        raise LoadError(f"{src}: quantization_config.modules_to_not_convert must be a list of module names")
    method = str(qc.get("quant_method", "")).lower()
    bits = qc.get("bits", qc.get("w_bit"))  # w_bit / q_group_size: AutoAWQ's own key names
    group = qc.get("group_size", qc.get("q_group_size", 128))
    if method not in ("awq", "gptq"):
        raise LoadError(f"{src}: quantization method {method or 'unknown'!r} is not supported ({SUPPORTED})")
    if not isinstance(group, int) or not (group == -1 or group > 0):
        raise LoadError(f"{src}: group_size {group!r} is not supported (a positive integer or -1)")
    quant = {"method": method, "bits": bits, "group_size": group, "config_file": src.name}
    if method == "awq":
        version = str(qc.get("version", "gemm")).lower()
        if bits != 4:
            raise LoadError(f"{src}: AWQ with bits={bits} is not supported ({SUPPORTED})")
        if version != "gemm":
            raise LoadError(f"{src}: AWQ version {version!r} is not supported ({SUPPORTED})")
        if qc.get("zero_point", True) is not True:
            raise LoadError(f"{src}: AWQ with zero_point false is not supported ({SUPPORTED})")
        quant.update(
            version="gemm",
            zero_point=True,
            sym=False,
            desc_act=False,
            skip=list(qc.get("modules_to_not_convert") or []),
        )
    else:
        fmt = str(qc.get("checkpoint_format", qc.get("format", "gptq"))).lower()
        if bits not in (4, 8):
            raise LoadError(f"{src}: GPTQ with bits={bits} is not supported ({SUPPORTED})")
        if fmt != "gptq":
            raise LoadError(f"{src}: GPTQ checkpoint_format {fmt!r} is not supported ({SUPPORTED})")
        if qc.get("lm_head"):
            raise LoadError(f"{src}: a quantized lm_head is not supported ({SUPPORTED})")
        quant.update(
            version="gemm",
            zero_point=True,
            sym=bool(qc.get("sym", True)),
            desc_act=bool(qc.get("desc_act", False)),
            skip=[],
        )
    idx = path / "model.safetensors.index.json"
    if listed is None:
        quant["files"] = _weight_files(path, quant, src)
    elif idx.is_file():  # its shards, not fetched yet
        quant["files"] = sorted(index_files(idx))
    else:
        quant["files"] = _named(path, quant, src, sorted(n for n in listed if n.endswith(".safetensors")))
    return quant


def _weight_files(path: Path, quant: dict, src: Path) -> list[str]:
    names = check_index(path)  # None: no index (a dangling link is none, as for a plain checkpoint)
    if names is not None:
        return sorted(names)
    files = [f.name for f in matching(path, "*.safetensors")]
    if not files:
        how = fetch_again(path / "model.safetensors", otherwise=None)  # the demo's or the hub's: how to get them
        more = f"; {how}" if how else ""
        raise LoadError(
            f"{path}: no *.safetensors weight files (quantized checkpoints load only from safetensors){more}"
        )
    return _named(path, quant, src, files)


def _named(path: Path, quant: dict, src: Path, files: list[str]) -> list[str]:
    """The weight files, whose names do not contradict the quantization settings."""
    for name in files:  # AutoGPTQ names its file after the settings: gptq_model-8bit-64g.safetensors
        m = re.fullmatch(r"gptq_model-(\d+)bit-(\d+)g\.safetensors", name)
        if m and (int(m[1]), int(m[2])) != (quant["bits"], quant["group_size"]):
            raise LoadError(
                f"{path / name}: file name says {m[1]}-bit group {m[2]}, but {src.name} says "
                f"{quant['bits']}-bit group {quant['group_size']}"
            )
    return files


class NotPackable(ValueError):
    """A projection's sizes that its quantization's packing cannot hold (the message names the layer)."""


def packing(name: str, k: int, n: int, quant: dict) -> tuple[int, str, dict[str, list[int]]]:
    """(group size, what an error about it adds, the shapes of its packed tensors by key) of projection `name`
    ([n, k] as nn.Linear) in AutoAWQ / AutoGPTQ form; NotPackable where its sizes do not pack."""
    b = quant["bits"]
    g = k if quant["group_size"] == -1 else quant["group_size"]
    what = f" (in={k}, out={n}, {quant['method']} {b}-bit group {g})"
    if k % g or (n * b) % 32 or (k * b) % 32:
        raise NotPackable(f"layer {name} is not packable{what}")
    awq = quant["method"] == "awq"
    return (
        g,
        what,
        {
            "qweight": [k, n * b // 32] if awq else [k * b // 32, n],
            "qzeros": [k // g, n * b // 32],
            "scales": [k // g, n],
            "g_idx": [k],
        },
    )


def read_qweight(t: Tensors, name: str, k: int, n: int, quant: dict, device: str, bias: bool = False) -> QWeight:
    """Packed tensors of projection `name` ([n, k] as nn.Linear) -> QWeight on `device`, shapes checked. torch is
    imported here, not with the module: `detect` serves `yi-chat models` and `pull`, which load no weights."""
    import torch

    from . import formats as Q

    try:
        g, what, shapes = packing(name, k, n, quant)
    except NotPackable as e:
        raise LoadError(f"{t.missing_in}: {e}") from None

    def get(key: str, shape: list[int], ints: tuple = ()):
        w = t.get(f"{name}.{key}", shape, what)
        if ints and w.dtype not in ints:  # the unpacking shifts and masks words: a float one was a traceback
            want = " or ".join(map(dtype_name, ints))
            raise LoadError(
                f"{t.where[f'{name}.{key}']}: tensor {name}.{key} is {dtype_name(w.dtype)}, expected {want}{what}"
            )
        return w.to(device)  # unpacked on the target device: fast on CUDA

    words = (torch.int32,)
    floats = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # I16 scales were read as numbers
    qweight = get("qweight", shapes["qweight"], words)
    qzeros = get("qzeros", shapes["qzeros"], words)
    scales = get("scales", shapes["scales"], floats)
    # as the model's config says (attention_bias, mlp_bias), as transformers builds it: a bias it has no place for
    # is not read (the fast engine applied one, the generate engine not), one it has must be there
    bias = get("bias", [n], floats) if bias else None
    if quant["method"] == "awq":
        return Q.from_awq(qweight, qzeros, scales, quant["group_size"], bias)
    if f"{name}.g_idx" in t or quant["desc_act"]:
        g_idx = get("g_idx", shapes["g_idx"], (torch.int32, torch.int64))
    else:
        g_idx = Q.trivial_g_idx(k, g, device)
    if g_idx.numel() and not (0 <= int(g_idx.min()) and int(g_idx.max()) < k // g):
        raise LoadError(f"{t.where[f'{name}.g_idx']}: tensor {name}.g_idx has group numbers outside 0..{k // g - 1}")
    return Q.from_gptq(qweight, qzeros, scales, g_idx.to(torch.int32), quant["bits"], quant["group_size"], bias)


def dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")
