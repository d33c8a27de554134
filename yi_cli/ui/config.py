"""Defaults from a TOML file in the user's config dir (config.toml); flags override them (no torch).

Every error names the file. API keys are not kept here: `api_key_env` names the environment variable that holds
one (yi-chat never writes a key anywhere)."""

from __future__ import annotations

import re
import tomllib

from ..engines.settings import NAMES, parse
from ..errors import UsageError, shown
from ..paths import config_dir

TOP_KEYS = {"context", "model", "device", "dtype", "engine", "overflow", "system", "endpoint", "api_key_env"}
CHOICES = {
    "dtype": ("auto", "fp32", "fp16", "bf16"),
    "engine": ("auto", "fast", "generate"),
    "overflow": ("drop", "refuse"),
}
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
    if "api_key" in data:
        raise UsageError(
            f"{p}: api_key: keys are not kept in the config file; set api_key_env to the name of "
            f"the environment variable that holds it"
        )
    gen = data.pop("generation", {}) or {}
    aliases = data.pop("aliases", {})  # [aliases] name = "path or hub id": names for -m and `yi-chat models`
    if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
        raise UsageError(f"{p}: [aliases] maps names to strings (a directory or a hub id)")
    remote = data.pop("remote", {})
    if not isinstance(gen, dict):
        raise UsageError(f"{p}: generation must be a table ([generation])")
    unknown = (set(data) - TOP_KEYS) | {f"generation.{k}" for k in set(gen) - set(NAMES)}
    if unknown:
        raise UsageError(
            f"{p}: unknown key(s): {', '.join(sorted(unknown))} (known: {', '.join(sorted(TOP_KEYS))}"
            f", [generation] {', '.join(NAMES)})"
        )
    for k, v in data.items():
        check(p, k, v)
    if aliases:
        data["aliases"] = aliases
    if not isinstance(remote, dict):
        raise UsageError(f"{p}: remote must be a table ([remote])")
    data["remote"] = remote  # timeouts and size limits of --endpoint, checked by remote_http.Limits.from_config
    try:
        return data, {k: parse(k, v) for k, v in gen.items()}
    except UsageError as e:
        raise UsageError(f"{p}: generation: {e}") from None


def check(p, key: str, value) -> None:
    if key == "context":  # tokens: 32768 or "32K", as --context
        import argparse

        from .cli import tokens_arg

        try:
            tokens_arg(str(value) if type(value) in (int, str) else "")
        except argparse.ArgumentTypeError as e:
            raise UsageError(f"{p}: context: {e}") from None
        return
    if not isinstance(value, str):
        raise UsageError(f"{p}: {key} must be a string")
    if key in CHOICES and value not in CHOICES[key]:
        raise UsageError(f"{p}: {key} = {shown(value, 40)!r}: use one of {', '.join(CHOICES[key])}")
    if key == "model" and not value.strip():
        raise UsageError(f"{p}: model is empty")
    if key == "api_key_env" and not ENV_NAME.fullmatch(value):
        raise UsageError(f"{p}: api_key_env = {shown(value, 40)!r} is not an environment variable name")
    if key == "device":
        import argparse

        from .cli import device_arg

        try:
            device_arg(value)
        except argparse.ArgumentTypeError as e:
            raise UsageError(f"{p}: {e}") from None
