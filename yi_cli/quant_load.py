"""Detect and load AutoAWQ GEMM int4 / AutoGPTQ v1 int4-int8 checkpoints with yi_cli's own kernels.

The model is built from its config on the meta device (no full-precision linears are ever materialised); each decoder
projection is replaced by a qlinear module made from the packed tensors, the rest is read from safetensors in `dtype`.
"""
from __future__ import annotations

import json
import re
from contextlib import ExitStack
from pathlib import Path

from .errors import LoadError, first_line
from .loader import check_index, check_safetensors

PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SUPPORTED = "supported: awq gemm 4-bit with zero_point, gptq v1 4/8-bit"


def _read_json(f: Path) -> dict:
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise LoadError(f"{f}: corrupt JSON ({e.__class__.__name__}: {e})") from None
    if not isinstance(data, dict):
        raise LoadError(f"{f}: expected a JSON object")
    return data


def detect(path: Path, cfg: dict) -> dict | None:
    """None for a plain checkpoint; else the quantization settings. Unsupported variants raise LoadError."""
    src, qc = path / "config.json", cfg.get("quantization_config")
    if qc is None:
        src = path / "quantize_config.json"  # AutoGPTQ writes it; older versions leave config.json alone
        if not src.is_file():
            return None
        qc = dict(_read_json(src))
        qc.setdefault("quant_method", "gptq")
    if not isinstance(qc, dict):
        raise LoadError(f"{src}: quantization_config is not an object")
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
        quant.update(version="gemm", zero_point=True, sym=False, desc_act=False,
                     skip=list(qc.get("modules_to_not_convert") or []))
    else:
        fmt = str(qc.get("checkpoint_format", qc.get("format", "gptq"))).lower()
        if bits not in (4, 8):
            raise LoadError(f"{src}: GPTQ with bits={bits} is not supported ({SUPPORTED})")
        if fmt != "gptq":
            raise LoadError(f"{src}: GPTQ checkpoint_format {fmt!r} is not supported ({SUPPORTED})")
        if qc.get("lm_head"):
            raise LoadError(f"{src}: a quantized lm_head is not supported ({SUPPORTED})")
        quant.update(version="gemm", zero_point=True, sym=bool(qc.get("sym", True)),
                     desc_act=bool(qc.get("desc_act", False)), skip=[])
    quant["files"] = _weight_files(path, quant, src)
    return quant


def _weight_files(path: Path, quant: dict, src: Path) -> list[str]:
    idx = path / "model.safetensors.index.json"
    if idx.is_file():
        check_index(path)
        return sorted(set(_read_json(idx)["weight_map"].values()))
    files = sorted(f.name for f in path.glob("*.safetensors"))
    if not files:
        raise LoadError(f"{path}: no *.safetensors weight files (quantized checkpoints load only from safetensors)")
    for name in files:  # AutoGPTQ names its file after the settings: gptq_model-8bit-64g.safetensors
        m = re.fullmatch(r"gptq_model-(\d+)bit-(\d+)g\.safetensors", name)
        if m and (int(m[1]), int(m[2])) != (quant["bits"], quant["group_size"]):
            raise LoadError(f"{path / name}: file name says {m[1]}-bit group {m[2]}, but {src.name} says "
                            f"{quant['bits']}-bit group {quant['group_size']}")
    return files


class Tensors:
    """Name -> tensor over one or several safetensors files, with errors that name the file."""

    def __init__(self, path: Path, files: list[Path], stack: ExitStack):
        from safetensors import safe_open

        self.where, self.handles = {}, {}
        index = path / "model.safetensors.index.json"
        self.missing_in = files[0] if len(files) == 1 else index if index.is_file() else path  # names the culprit
        for f in files:
            try:
                h = stack.enter_context(safe_open(str(f), framework="pt", device="cpu"))
            except Exception as e:
                raise LoadError(f"{f}: cannot read ({first_line(e)})") from None
            self.handles[f] = h
            for k in h.keys():
                self.where[k] = f

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def get(self, name: str, shape=None, what: str = ""):
        f = self.where.get(name)
        if f is None:
            raise LoadError(f"{self.missing_in}: missing tensor {name}{what}")
        h = self.handles[f]
        if shape is not None:
            got = list(h.get_slice(name).get_shape())
            if got != list(shape):
                raise LoadError(f"{f}: tensor {name} has shape {got}, expected {list(shape)}{what}")
        try:
            return h.get_tensor(name)
        except Exception as e:
            raise LoadError(f"{f}: cannot read tensor {name} ({first_line(e)})") from None


def _quant_weight(t: Tensors, name: str, lin, quant: dict, device: str):
    """Packed tensors of one layer -> QWeight on `device`, shapes checked against the config's Linear."""
    import torch

    from . import quant as Q

    k, n, b = lin.in_features, lin.out_features, quant["bits"]
    g = k if quant["group_size"] == -1 else quant["group_size"]
    what = f" (in={k}, out={n}, {quant['method']} {b}-bit group {g})"
    if k % g or (n * b) % 32 or (k * b) % 32:
        raise LoadError(f"{t.missing_in}: layer {name} is not packable{what}")

    def get(key: str, shape: list[int]):
        return t.get(f"{name}.{key}", shape, what).to(device)  # unpacked on the target device: fast on CUDA

    awq = quant["method"] == "awq"
    qweight = get("qweight", [k, n * b // 32] if awq else [k * b // 32, n])
    qzeros = get("qzeros", [k // g, n * b // 32])
    scales = get("scales", [k // g, n])
    bias = get("bias", [n]) if f"{name}.bias" in t or lin.bias is not None else None
    if awq:
        return Q.from_awq(qweight, qzeros, scales, quant["group_size"], bias)
    if f"{name}.g_idx" in t or quant["desc_act"]:
        g_idx = get("g_idx", [k])
    else:
        g_idx = Q.trivial_g_idx(k, g, device)
    if g_idx.numel() and not (0 <= int(g_idx.min()) and int(g_idx.max()) < k // g):
        raise LoadError(f"{t.where[f'{name}.g_idx']}: tensor {name}.g_idx has group numbers outside 0..{k // g - 1}")
    return Q.from_gptq(qweight, qzeros, scales, g_idx.to(torch.int32), b, quant["group_size"], bias)


def load_quantized(path: Path, cfg: dict, quant: dict, device: str, dtype):
    import torch
    from torch import nn
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    from .qlinear import make_linear

    files = [path / f for f in quant["files"]]
    check_safetensors(files)
    try:
        config = AutoConfig.from_pretrained(str(path))
        with torch.device("meta"):  # shapes only; every tensor is filled from the checkpoint below
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    except Exception as e:
        raise LoadError(f"{path / 'config.json'}: cannot build the model ({first_line(e)})") from None
    head = model.get_output_embeddings()
    with ExitStack() as stack:
        t = Tensors(path, files, stack)
        for name, lin in list(model.named_modules()):
            if (isinstance(lin, nn.Linear) and lin is not head and name.rsplit(".", 1)[-1] in PROJ
                    and not any(s in name for s in quant["skip"])):
                try:
                    q = make_linear(_quant_weight(t, name, lin, quant, device), device, dtype)
                except ValueError as e:  # g_idx that does not form equal groups
                    raise LoadError(f"{t.missing_in}: layer {name}: {e}") from None
                parent, leaf = name.rsplit(".", 1)
                setattr(model.get_submodule(parent), leaf, q)
        tied = bool(getattr(config, "tie_word_embeddings", False))
        for name, p in list(model.named_parameters(remove_duplicate=False)):
            if tied and head is not None and p is head.weight and name not in t:
                continue  # tied below
            w = t.get(name, list(p.shape), " (shape from config.json)")
            parent, leaf = name.rsplit(".", 1) if "." in name else ("", name)
            setattr(model.get_submodule(parent), leaf, nn.Parameter(w.to(device, dtype), requires_grad=False))
    if tied and head is not None:
        head.weight = model.get_input_embeddings().weight
    _init_meta_buffers(model, device)
    _trim_heap()
    for name, x in list(model.named_parameters()) + list(model.named_buffers()):
        if x.is_meta:
            raise LoadError(f"{path}: {name} was not loaded (not in the checkpoint)")
    if (path / "generation_config.json").is_file():
        try:
            model.generation_config = GenerationConfig.from_pretrained(str(path))
        except Exception as e:
            raise LoadError(f"{path / 'generation_config.json'}: {first_line(e)}") from None
    return model, config


def _init_meta_buffers(model, device: str) -> None:
    """Non-persistent buffers (rotary inv_freq) are computed in __init__, so on meta they are empty: rebuild."""
    import torch

    for name, m in list(model.named_modules()):
        if any(b.is_meta for b in m.buffers(recurse=False)) and hasattr(m, "config"):
            with torch.device("cpu"):
                fresh = type(m)(m.config).to(device)
            parent, leaf = name.rsplit(".", 1) if "." in name else ("", name)
            setattr(model.get_submodule(parent), leaf, fresh)


def _trim_heap() -> None:
    """Unpacking leaves ~2x the model in freed temporaries that glibc keeps resident; hand them back to the OS."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass
