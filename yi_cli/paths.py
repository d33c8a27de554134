"""Where yi-chat keeps its files: XDG dirs, or everything under $YI_CHAT_HOME when set."""
from __future__ import annotations

import os
from pathlib import Path


def _base(xdg_var: str, fallback: str, sub: str) -> Path:
    home = os.environ.get("YI_CHAT_HOME")
    if home:
        return Path(home) / sub
    root = os.environ.get(xdg_var) or os.path.join(os.path.expanduser("~"), fallback)
    return Path(root) / "yi-chat"


def cache_dir() -> Path:
    return _base("XDG_CACHE_HOME", ".cache", "cache")


def data_dir() -> Path:
    return _base("XDG_DATA_HOME", ".local/share", "data")


def config_dir() -> Path:
    return _base("XDG_CONFIG_HOME", ".config", "config")


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) with mode 0700; raises OSError when that is impossible."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
