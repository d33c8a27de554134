"""The files of a checkpoint directory, read defensively: config.json, the safetensors index, safetensors headers,
and name -> tensor access over one or several safetensors files, with errors that name the file."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

from ..errors import LoadError, first_line


def read_json(f: Path) -> dict:
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise LoadError(f"{f}: corrupt JSON ({e.__class__.__name__}: {e})") from None
    if not isinstance(data, dict):
        raise LoadError(f"{f}: expected a JSON object")
    return data


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


def weight_files(path: Path, allow_pickle: bool) -> list[Path]:
    st = sorted(path.glob("*.safetensors"))
    if st:
        return st
    if sorted(path.glob("*.bin")):
        if not allow_pickle:
            raise LoadError(
                f"{path}: only pickle (.bin) weights found; they can run code when loaded, "
                "pass --allow-pickle if you trust them"
            )
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
