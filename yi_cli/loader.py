"""Read a checkpoint directory once: config, tokenizer, weights (plain or AWQ/GPTQ); clear one-line errors."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LoadError, failure, first_line


@dataclass
class Loaded:
    model: object  # torch.nn.Module; forward(input_ids) returns .logits
    tokenizer: object
    path: Path
    device: str
    dtype: object  # torch.dtype of activations
    config: object  # transformers PretrainedConfig
    quant: dict | None = None  # {"method": "awq"|"gptq", "bits": 4|8, "group_size": g, ...}; None when plain
    name: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def context_length(self) -> int:
        return int(getattr(self.config, "max_position_embeddings", 4096) or 4096)


def pick_device(device: str | None) -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LoadError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise LoadError(f"--device {device}: unknown device (use cpu, cuda or cuda:N)")
    return device


def pick_dtype(dtype, device: str):
    import torch

    if dtype in (None, "", "auto"):
        return torch.float32 if device == "cpu" else torch.float16
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if dtype not in table:
        raise LoadError(f"--dtype {dtype}: unknown dtype (use auto, fp32, fp16 or bf16)")
    return table[dtype]


def read_config(path: Path) -> dict:
    cfg = path / "config.json"
    if not cfg.is_file():
        raise LoadError(f"{path}: no config.json (not a model checkpoint directory)")
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LoadError(f"{cfg}: corrupt config.json ({e.__class__.__name__}: {e})") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise LoadError(f"{cfg}: not a transformers model config (no model_type)")
    return data


def resolve(model: str, allow_pickle: bool = False) -> Path:
    """`model` is a local directory, 'demo'/'demo-*', a Yi alias (yi-6b-chat-4bits) or a hub id: a complete
    snapshot in the Hugging Face cache is used as is, anything else is fetched (unless HF_HUB_OFFLINE=1)."""
    from . import demo, family, hub

    if model in demo.NAMES:
        return demo.ensure(model)
    p = Path(model).expanduser()
    if p.exists():
        if not p.is_dir():
            raise LoadError(f"{p}: is a file; --model takes a checkpoint directory")
        return p
    repo = family.expand(model)
    if repo.count("/") == 1 and not repo.startswith((".", "/", "~")):
        snap = hub.cached_snapshot(repo)
        if snap is not None and hub.complete(snap):
            return snap
        return hub.fetch(repo, allow_pickle=allow_pickle)
    raise LoadError(f"{p}: no such directory, Yi alias (yi-chat models --all) or hub id")


def load(path, device: str | None = None, dtype=None, *, allow_pickle: bool = False,
         trust_remote_code: bool = False) -> Loaded:
    """Load a checkpoint for chat. Returns a Loaded with .model, .tokenizer and the settings used."""
    path = resolve(str(path), allow_pickle)
    cfg = read_config(path)
    device = pick_device(device)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-tensor bars on every start are noise; the CLI shows one status line
    hf_logging.set_verbosity_error()  # its load reports and warnings would bury our one-line errors
    from . import hub, quant_load

    quant = quant_load.detect(path, cfg)
    if quant is not None and device.startswith("cuda") and dtype in (None, "", "auto"):
        dtype = "bf16"  # the CUDA int4 kernel computes in bf16: fp16 would need extra copies of embeddings/lm_head
    dtype = pick_dtype(dtype, device)
    tokenizer = load_tokenizer(path, trust_remote_code)
    if quant is not None:
        model, config = quant_load.load_quantized(path, cfg, quant, device, dtype)
    else:
        model, config = load_plain(path, cfg, device, dtype, allow_pickle, trust_remote_code)
    model.eval()
    return Loaded(model=model, tokenizer=tokenizer, path=path, device=device, dtype=dtype, config=config,
                  quant=quant, name=hub.repo_of(path) or path.name)


def load_tokenizer(path: Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as e:  # transformers raises many types for a broken tokenizer
        raise LoadError(f"{path}: cannot load the tokenizer ({failure(e)})") from None


def weight_files(path: Path, allow_pickle: bool) -> list[Path]:
    st = sorted(path.glob("*.safetensors"))
    if st:
        return st
    if sorted(path.glob("*.bin")):
        if not allow_pickle:
            raise LoadError(f"{path}: only pickle (.bin) weights found; they can run code when loaded, "
                            "pass --allow-pickle if you trust them")
        return sorted(path.glob("*.bin"))
    raise LoadError(f"{path}: no weight files (*.safetensors)")


def check_index(path: Path) -> None:
    idx = path / "model.safetensors.index.json"
    if not idx.is_file():
        return
    try:
        names = set(json.loads(idx.read_text())["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LoadError(f"{idx}: corrupt index ({e.__class__.__name__})") from None
    for n in sorted(names):
        if not (path / n).is_file():
            raise LoadError(f"{path / n}: weight shard listed in the index is missing")


def check_safetensors(files: list[Path]) -> None:
    """Open each file's header and check its data fits the file: catches truncated downloads."""
    import struct

    for f in files:
        if f.suffix != ".safetensors":
            continue
        try:
            size = f.stat().st_size
            with open(f, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n)) if 0 < n < size else None
        except (OSError, ValueError, struct.error, UnicodeDecodeError):
            header = None
        if not isinstance(header, dict):
            raise LoadError(f"{f}: not a valid safetensors file")
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + n + end > size:
            raise LoadError(f"{f}: truncated ({size} bytes, header needs {8 + n + end}); download it again")


def load_plain(path: Path, cfg: dict, device: str, dtype, allow_pickle: bool, trust_remote_code: bool):
    from transformers import AutoConfig, AutoModelForCausalLM

    files = weight_files(path, allow_pickle)
    check_index(path)
    check_safetensors(files)
    try:
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as e:
        raise LoadError(f"{path / 'config.json'}: {first_line(e)}") from None
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            str(path), config=config, dtype=dtype, device_map=device if device != "cpu" else None,
            use_safetensors=not allow_pickle or None, trust_remote_code=trust_remote_code,
            output_loading_info=True)
    except Exception as e:
        raise LoadError(f"{path}: cannot load weights ({failure(e)})") from None
    # transformers fills missing tensors with random values and only warns: a model that would talk nonsense.
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise LoadError(f"{files[0] if len(files) == 1 else path}: missing tensor {missing[0]}{more}")
    return model, config


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
