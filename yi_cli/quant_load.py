"""Detect and load AWQ / GPTQ checkpoints (placeholder until the quant-formats work lands)."""
from __future__ import annotations

from pathlib import Path

from .errors import LoadError


def detect(path: Path, cfg: dict) -> dict | None:
    q = cfg.get("quantization_config")
    if q is None and not (path / "quantize_config.json").is_file():
        return None
    raise LoadError(f"{path / 'config.json'}: quantized checkpoints are not supported yet")


def load_quantized(path: Path, cfg: dict, quant: dict, device: str, dtype):
    raise LoadError(f"{path}: quantized checkpoints are not supported yet")
