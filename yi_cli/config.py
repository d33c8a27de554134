"""Defaults from a TOML file in the user's config dir (config.toml); flags override them (no torch)."""

from __future__ import annotations

import tomllib

from .engines.settings import NAMES, parse
from .errors import UsageError
from .paths import config_dir

TOP_KEYS = {"model", "device", "dtype", "engine", "overflow", "system", "endpoint"}


def path():
    return config_dir() / "config.toml"


def read() -> tuple[dict, dict]:
    """Return (top-level options, generation settings) from config.toml; ({}, {}) when there is none."""
    p = path()
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):  # no config (or no usable home): defaults
        return {}, {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"{p}: cannot read the config file ({e})") from None
    gen = data.pop("generation", {}) or {}
    aliases = data.pop("aliases", {})  # [aliases] name = "path or hub id": names for -m and `yi-chat models`
    if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
        raise UsageError(f"{p}: [aliases] maps names to strings (a directory or a hub id)")
    remote = data.pop("remote", {})
    unknown = (set(data) - TOP_KEYS) | {f"generation.{k}" for k in set(gen) - set(NAMES)}
    if unknown or not isinstance(gen, dict):
        raise UsageError(f"{p}: unknown key(s): {', '.join(sorted(unknown)) or 'generation'}")
    for k, v in data.items():
        if not isinstance(v, str):
            raise UsageError(f"{p}: {k} must be a string")
    if aliases:
        data["aliases"] = aliases
    if not isinstance(remote, dict):
        raise UsageError(f"{p}: remote must be a table ([remote])")
    data["remote"] = remote  # timeouts and size limits of --endpoint, checked by remote_http.Limits.from_config
    return data, {k: parse(k, v) for k, v in gen.items()}
