"""Defaults from a TOML file in the user's config dir (config.toml); flags override them (no torch).

Every error names the file. API keys are not kept here: `api_key_env` names the environment variable that holds
one (yi-chat never writes a key anywhere)."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import re
import tomllib
from contextlib import contextmanager

from .. import inputs
from ..engines.remote_endpoint import Endpoint
from ..engines.remote_limits import Limits
from ..engines.settings import NAMES, parse
from ..errors import LoadError, UsageError, YiError, shown
from ..paths import config_dir


def device_arg(value: str) -> str:
    """`--device` and the config's `device`: auto, cpu, mps, cuda or cuda:N."""
    from ..checkpoint.loader import known_device

    if known_device(value):
        return value
    near = difflib.get_close_matches(value.lower(), ["auto", "cpu", "cuda", "mps"], n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise argparse.ArgumentTypeError(f"unknown device {value!r} (use auto, cpu, cuda or cuda:N{hint})")


# Far past any model's context (Yi's longest is 200K): a bigger number is a typo, refused rather than capped.
MAX_TOKENS = 2**31 - 1


class Tokens(int):
    """A number of tokens that keeps how it was written (`given`: "300K"), for messages that quote it."""

    given: str


def tokens_arg(value: str) -> int:
    """--context N and the config's `context` (as text): a positive whole number of tokens (16K, 128k and 200000
    alike: K = 1024), at most MAX_TOKENS; a Tokens, whose `given` is the text stripped."""
    v = value.strip().lower()
    scale = 1024 if v.endswith("k") else 1
    try:
        n = int(v[:-1] if scale > 1 else v) * scale
    except ValueError:  # also a number of more than 4300 digits
        n = 0
    if n <= 0:
        raise argparse.ArgumentTypeError(
            f"{shown(repr(value), 40)} is not a positive number of tokens (e.g. 32768 or 32K)"
        )
    if n > MAX_TOKENS:
        raise argparse.ArgumentTypeError(
            f"{shown(repr(value), 40)} is more tokens than any model's context (at most 2**31 - 1 = {MAX_TOKENS})"
        )
    out = Tokens(n)
    out.given = value.strip()
    return out


TOP_KEYS = {"context", "model", "device", "dtype", "engine", "overflow", "system", "endpoint", "api_key_env"}
CHOICES = {
    "dtype": ("auto", "fp32", "fp16", "bf16"),
    "engine": ("auto", "fast", "generate"),
    "overflow": ("drop", "refuse"),
}
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def path():
    return config_dir() / "config.toml"


def _bare_key_hint(text: str, message: str) -> str:
    """What TOML's "Invalid statement" or "Expected '='" means where the line starts with a key of other characters
    than A-Z a-z 0-9 _ - (a Chinese alias name, `模型 = "demo"`; `my model = ...`): such a key is written quoted."""
    import re

    at = re.search(r"at line (\d+), column \d+\)", message)
    lines = text.split("\n")  # as TOML counts them (splitlines also breaks at \r, \x0b, U+2028, ...)
    if not at or not 0 < int(at[1]) <= len(lines):
        return ""
    key, eq, _ = lines[int(at[1]) - 1].partition("=")
    key = key.strip()
    if not eq or not key or re.fullmatch(r"[A-Za-z0-9_.-]+", key) or key[0] in "\"'[":
        return ""
    return f'; a key of other characters than A-Z a-z 0-9 _ - is written quoted: "{shown(key, 40)}" = ...'


def read() -> tuple[dict, dict]:
    """Return (top-level options, generation settings) from config.toml; ({}, {}) when there is none."""
    p = path()
    if not _exists(p):
        return {}, {}
    text = inputs.read_text(p, inputs.CONFIG_LIMIT, UsageError, "config file")  # size and kind checked first
    text = text.removeprefix("\ufeff")  # saved "UTF-8 with BOM" (Notepad): "Invalid statement (at line 1, column 1)"
    try:
        data = tomllib.loads(text, parse_float=_finite)
    except RecursionError:  # it was "cannot read the config file (RecursionError: maximum recursion depth ...)"
        nest = inputs.depth(text)  # its brackets, as JSON counts them: near enough for a message
        raise UsageError(f"{p}: nested {nest} deep, more than the limit of {inputs.MAX_DEPTH}") from None
    except (tomllib.TOMLDecodeError, ValueError) as e:  # ValueError: inf, nan, a 5000-digit int
        hint = _bare_key_hint(text, str(e)) if isinstance(e, tomllib.TOMLDecodeError) else ""
        raise UsageError(
            f"{p}: cannot read the config file ({e.__class__.__name__}: {shown(str(e), 120)}){hint}"
        ) from None
    if "api_key" in data:
        raise UsageError(
            f"{p}: api_key: keys are not kept in the config file; set api_key_env to the name of "
            f"the environment variable that holds it"
        )
    gen = data.pop("generation", {})  # (`or {}` took generation = 0, false or [] for an empty table)
    aliases = data.pop("aliases", {})  # [aliases] name = "path or hub id": names for -m and `yi-chat models`
    if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
        raise UsageError(f"{p}: [aliases] maps names to strings (a directory or a hub id)")
    _alias_names(p, aliases)
    _no_builtin(p, aliases)
    remote = data.pop("remote", {})
    if not isinstance(gen, dict):
        raise UsageError(f"{p}: generation must be a table ([generation])")
    _misplaced(p, {"generation": gen, "remote": remote, "aliases": aliases})
    unknown = (set(data) - TOP_KEYS) | {f"generation.{k}" for k in set(gen) - set(NAMES)}
    if unknown:
        # A table's name too ([Generation], [alias]: it read as a key, and 'generation.seed' was suggested)
        tables = {t: f"[{t}]" for t in ("generation", "remote", "aliases")}
        first = sorted(unknown)[0].lower()
        if first.startswith("generation."):  # its own keys only: `[generation] foo = 1` got "did you mean
            bare = first.removeprefix("generation.")  # [generation]?", the table it sat in
            near = [f"generation.{n}" for n in difflib.get_close_matches(bare, NAMES, n=1, cutoff=0.6)]
        else:  # a table's key at the top (`connect_timeout = 5`, `tempratur`): the key in the table it belongs in
            inner = [*(f"generation.{n}" for n in NAMES), *(f"remote.{f.name}" for f in dataclasses.fields(Limits))]
            full = {**{k.partition(".")[2]: k for k in inner}, **{k: k for k in TOP_KEYS}, **tables}
            near = [full[n] for n in difflib.get_close_matches(first, list(full), n=1, cutoff=0.6)]
        raise UsageError(
            f"{p}: unknown key(s): {', '.join(shown(k, 40) for k in sorted(unknown))}"
            f"{f' (did you mean {near[0]}?)' if near else ''} (known: {', '.join(sorted(TOP_KEYS))}"
            f", [generation] {', '.join(NAMES)}, [remote], [aliases])"
        )
    data = {k: check(p, k, v) for k, v in data.items()}
    if aliases:
        data["aliases"] = aliases
    if not isinstance(remote, dict):
        raise UsageError(f"{p}: remote must be a table ([remote])")
    Limits.from_config(remote, str(p))  # checked whether or not this run is remote: any error in the file is one
    data["remote"] = remote  # timeouts and size limits of --endpoint
    try:
        return data, {k: parse(k, v) for k, v in gen.items()}
    except UsageError as e:
        raise UsageError(f"{p}: generation: {e}") from None


@contextmanager
def as_alias(alias: str | None, target: str, where: str | None = None):
    """Within it, resolving `target`: a LoadError or UsageError is said as alias_error's line where `target` came
    from `[aliases] alias`; else, where it came from a setting that is not on the command line (`where`:
    YI_CHAT_MODEL, config.toml's model), that line after the setting's name (`/models/gone: no such directory`
    left the user to guess where the name came from); else as it is."""
    try:
        yield
    except (LoadError, UsageError) as e:
        if alias is not None:
            raise alias_error(alias, target, e) from None
        if where is not None:
            raise type(e)(f"{where}: {e}") from None
        raise


def alias_error(alias: str, target: str, e: YiError) -> YiError:
    """e, met resolving `[aliases] alias = target`, as one line naming the alias and config.toml (its exit code
    kept). A target that reads as a relative path and as a hub id alike (models/yi) and is no folder was looked for
    as both: the line says where the folder would be (relative to the working directory, not to config.toml),
    since the hub's answer alone read as if the path had been ignored."""
    from ..checkpoint import hub

    msg = str(e)
    if hub.written_as_id(target) and hub.id_problem(target) is None and not os.path.isdir(target):
        rest = msg.removeprefix(f"{target}: ").removeprefix(hub.NOT_LOCAL)  # the hub's answer, without the id
        msg = f"{target}: no folder {os.path.abspath(target)}, and as a hub id: {rest}"
    return type(e)(f"{alias} ([aliases] in {path()}): {msg}")


def _alias_names(p, aliases: dict) -> None:
    """An alias is a name typed after -m: an empty or blank one (`"" = "demo"`) made a row without a name in
    `yi-chat models`, and one with a control character a row that moves the terminal's cursor. A blank target
    (`mine = ""`) is refused as `model = " "` is: it opened the working directory (Path("") is ".")."""
    for name, target in aliases.items():
        if not name.strip() or not name.isprintable():
            raise UsageError(
                f"{p}: [aliases] {shown(repr(name), 60)} is not a name for -m (empty, blank or with control characters)"
            )
        if not target.strip():
            raise UsageError(f"{p}: [aliases] {shown(name, 60)} is empty (a directory or a hub id)")
        if "\0" in target:  # os.stat's ValueError (embedded null byte) was a traceback in -m and `yi-chat models`
            raise UsageError(
                f"{p}: [aliases] {shown(name, 60)} = {shown(repr(target), 60)} holds a NUL character, which no path "
                "or hub id has"
            )


def _misplaced(p, tables: dict) -> None:
    """A top-level key written below a [table] line is that table's in TOML: `model = ...` appended to a file that
    ends in [generation] was an unknown key `generation.model` (with a did-you-mean of another generation key), under
    [remote] an unknown `remote.model`, and under [aliases] an alias named `model`, the setting silently not taken.
    The line says where the key belongs."""
    for table, keys in tables.items():
        if isinstance(keys, dict) and (top := sorted(set(keys) & TOP_KEYS)):
            raise UsageError(
                f"{p}: {top[0]} is under [{table}], where it is not a setting: move it above the file's first "
                "[table] line (in TOML a key belongs to the [table] line before it)"
            )


def _no_builtin(p, aliases: dict) -> None:
    """An alias named like a demo model is refused: -m takes the alias first, so the embedded demo (the default
    model) would be hidden without a word. A Yi alias or repo name may be taken on purpose (`yi-6b-chat-4bits =
    "/models/Yi-6B-Chat-4bits"`: a local copy of that model) and stays allowed."""
    from ..checkpoint import demo

    for name in aliases:
        if name in demo.NAMES:
            raise UsageError(
                f"{p}: [aliases] {shown(name, 60)} would hide the built-in demo model {name} (-m takes an alias "
                "first); choose another name"
            )


def _exists(p) -> bool:
    """Whether anything (a dangling link too) is at p. A folder on the way that cannot be searched hides the file
    from lexists, and running on the defaults would silently drop the user's settings: an error, as an unreadable
    file is."""
    try:
        os.lstat(p)
    except (FileNotFoundError, NotADirectoryError):  # no config (or no usable home): defaults
        return False
    except OSError as e:
        raise UsageError(f"{shown(str(p), 200)}: cannot read the config file ({e.strerror or e})") from None
    return True


def _finite(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"{text} is not a finite number")
    return v


def check(p, key: str, value):
    """The top-level `key`'s value as the program uses it (context: tokens, an int), or a UsageError naming p."""
    if key == "context":  # tokens: 32768 or "32K", as --context
        try:
            if type(value) not in (int, str):  # 100.5, true, a table
                raise argparse.ArgumentTypeError(f"{shown(repr(value), 40)} is not a positive whole number of tokens")
            return tokens_arg(str(value))  # the int that make_engine uses: TOML's 32768 is an int, "32K" text
        except argparse.ArgumentTypeError as e:
            raise UsageError(f"{p}: context: {e}") from None
    if not isinstance(value, str):
        raise UsageError(f"{p}: {key} must be a string")
    if key in CHOICES:
        value = inputs.choice(value, CHOICES[key], p, key, UsageError)
    if key == "model" and not value.strip():
        raise UsageError(f"{p}: model is empty")
    if key == "model" and "\0" in value:  # os.stat's ValueError (embedded null byte) was a traceback
        raise UsageError(f"{p}: model {shown(repr(value), 60)} holds a NUL character, which no path or hub id has")
    if key == "endpoint" and value:  # "": none here (the next source is used); else the check --endpoint gets
        try:
            Endpoint(value)
        except UsageError as e:
            raise UsageError(f"{p}: endpoint: {e}") from None
    if key == "api_key_env" and not ENV_NAME.fullmatch(value):
        raise UsageError(f"{p}: api_key_env = {shown(value, 40)!r} is not an environment variable name")
    if key == "device":
        try:
            device_arg(value)
        except argparse.ArgumentTypeError as e:
            raise UsageError(f"{p}: {e}") from None
    return value
