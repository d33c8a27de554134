"""`yi-chat pull REPO` and `yi-chat models [--all] [--json]`: fetch a hub checkpoint; list what can be chatted with.

No torch: a checkpoint is described from its config, quantization settings and safetensors headers only.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import struct
import sys
from pathlib import Path

from .. import inputs
from ..checkpoint import demo, family, hub
from ..errors import LoadError, UsageError, YiError, shown
from .args import as_prompt_hint

COMMANDS = ("pull", "models")
GIT_REFUSES = "~^:?*[\\"  # characters git check-ref-format refuses in any ref name, spaces and controls aside


def revision_arg(value: str) -> str:
    """--revision: a branch, tag or commit named as git allows (git check-ref-format; refs/pr/1 is one). The hub
    answered an empty one with a 404 that read as an outage ("try again later"), and the cache keeps a revision as
    the file refs/REVISION, which a name with `..` or a leading / would put outside it."""
    if not value:
        raise argparse.ArgumentTypeError("the revision is empty; give a branch, tag or commit (default main)")
    if any("\udc80" <= c <= "\udcff" for c in value):  # an argument's bytes that are not UTF-8 ('\udcff' was shown)
        why = "it is not valid UTF-8"
    elif any(c.isspace() or not c.isprintable() for c in value):
        why = "it holds whitespace or control characters"
    elif bad := [c for c in GIT_REFUSES if c in value]:
        why = f"git refuses {bad[0]!r} in a ref name"
    elif (
        value == "@"
        or "@{" in value
        or ".." in value
        or value.endswith(".")
        or any(not part or part.startswith(".") or part.endswith(".lock") for part in value.split("/"))
    ):
        why = "git refuses a name with '..', '@{', an empty part or one that starts with '.' or ends in '.lock'"
    else:
        return value
    # quoted as typed, a byte that is not UTF-8 as \xff (repr wrote Python's '\udcff')
    raise argparse.ArgumentTypeError(f"'{shown(value, 80)}' is not a branch, tag or commit name ({why})")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like the main parser
        raise UsageError(f"{message} (see {self.prog} --help){as_prompt_hint(message)}")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="yi-chat", description="Fetch and list models.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    pull = sub.add_parser(
        "pull",
        help="download a hub checkpoint into the Hugging Face cache, without chatting",
        description="Download what yi-chat needs of a hub repo (config, tokenizer, safetensors) "
        "into the Hugging Face cache; an interrupted download continues.",
    )
    pull.add_argument(
        "repo", help="hub id (01-ai/Yi-6B-Chat-4bits), Yi alias (yi-6b-chat-4bits), demo model or config alias"
    )
    pull.add_argument("--revision", default="main", type=revision_arg, help="branch, tag or commit (default main)")
    pull.add_argument("--allow-pickle", action="store_true", help="also fetch pickle .bin weights")
    models = sub.add_parser(
        "models",
        help="list the models this machine can chat with",
        description="Cached hub checkpoints, the demo models and config aliases.",
    )
    models.add_argument("--all", action="store_true", help="also list the Yi family's aliases, fetched or not")
    models.add_argument("--json", action="store_true", help="one JSON array on stdout")
    return p


def main(argv: list[str], aliases: dict | None = None) -> int:
    args, extra = parser().parse_known_args(argv)
    if extra:  # argparse leaves them to the top parser, whose help is not the subcommand's
        said = f"unrecognized arguments: {shown(' '.join(extra), 80)}"
        raise UsageError(f"{said} (see yi-chat {args.command} --help){as_prompt_hint(said)}")
    aliases = aliases or {}
    return pull(args, aliases) if args.command == "pull" else models(args, aliases)


def pull(args, aliases: dict) -> int:
    from ..checkpoint.files import pull_again
    from .config import as_alias

    name = aliases.get(args.repo, args.repo)
    with as_alias(args.repo if args.repo in aliases else None, name):  # the target named, as its alias
        path = _pulled(args, name, alias=args.repo in aliases)
    row = _tokenizer_checked(path, describe(path))
    base = " · a base model: it continues text, a -Chat model answers" if family.is_base(path) else ""
    print(f"yi-chat: {args.repo}: {shown(summary(row), 400)}{base}", file=sys.stderr)  # its dtype is the hub's
    if not row["loadable"]:  # stdout stays empty: its one line is the path of a model that loads
        # "fetched" only where a fetch ran: offline (a truncated blob), the demo and a config alias's folder fetch none
        repo = family.repo_of(path)
        got = "fetched, but " if repo and not hub.offline() else ""
        reason = row["reason"]
        if got:  # every file is as the hub lists it (fetched and checked, or checked by size): pulling again is vain
            reason = reason.replace(pull_again(repo), "the hub's file is so (fetched whole, as the hub lists it)")
        raise LoadError(f"{args.repo}: {got}yi-chat cannot load it: {reason}")
    print(path)
    return 0


def _tokenizer_checked(path: Path, row: dict) -> dict:
    """row, not loadable where the tokenizer or its chat template does not load as -m loads them (a tokenizer.json
    cut short, an eos_token that is a number, a template that is not Jinja: `pull` said ready, then -m refused).
    Only a pull does this: the listing reads no tokenizer (a few MB each)."""
    if not row["loadable"]:
        return row
    from types import SimpleNamespace

    from ..checkpoint.loader import load_tokenizer
    from ..engines.template import Template

    try:  # with the model's vocabulary: a tokenizer whose ids run past it (another model's) was "ready"
        Template(load_tokenizer(path), SimpleNamespace(vocab_size=_config(path).get("vocab_size")))
    except YiError as e:
        return {**row, "loadable": False, "reason": str(e)}
    return row


def _pulled(args, name: str, alias: bool) -> Path:
    """The folder `pull` describes for name (args.repo, or the target of its config alias)."""
    if not name.strip():  # Path('') is the current folder: "a local folder, which pull does not fetch (-m  opens it)"
        raise UsageError("pull: the repo name is empty: give ORG/NAME or a Yi alias (see yi-chat models --all)")
    repo = family.expand(name)
    local = inputs.user_path(name, UsageError)
    here = os.path.isdir(local)  # False where the lookup fails (a part over 255 bytes: Path.is_dir raised ENAMETOOLONG)
    hub_id = hub.written_as_id(repo) and hub.id_problem(repo) is None
    # `pull` is about the hub: ORG/NAME (as typed, or a Yi alias) is the hub repo even where a folder of that name
    # is here, and a path is no name to pull. A config alias stands for what -m opens: its folder first, described.
    if args.revision != "main" and (name in demo.NAMES or (alias and here)):  # taken and ignored (exit 0)
        made = "is made here from the demo's GGUF" if name in demo.NAMES else "is a folder here"
        raise UsageError(f"--revision {shown(args.revision, 100)}: {name} {made}, not fetched from the hub")
    if name in demo.NAMES:
        from ..checkpoint.loader import demo_cache

        demo_cache()  # a name that is not UTF-8: the tokenizer failed after "demo: AWQ int4 · ..." was said
        return demo.ensure(name)
    if hub_id and not (alias and here):
        return _pull_hub(args, repo, shadowed=name if not alias and here else None)
    if alias and here:
        return local
    if alias and not hub.written_as_id(repo):  # a config alias to a folder that is not there
        raise LoadError(f"{name}: no such directory, and not a hub id")
    # a//b, a/b/c, ../x, a folder: not a hub id, whichever way it came (-m says a malformed one as usage too)
    problem = hub.id_problem(repo) if hub.written_as_id(repo) else None
    what = f"not a valid hub id ({problem})" if problem else "not a hub id (ORG/NAME) or a Yi alias"
    # A mistyped Yi alias: -m says "did you mean"; pull said only "not a hub id or a Yi alias".
    near = difflib.get_close_matches(name.lower(), [*family.ALIASES, *demo.NAMES], n=1, cutoff=0.8)
    if near and not problem:
        what += f"; did you mean {near[0]}?"
    folder = f"; a local folder, which pull does not fetch (-m {name} opens it)" if here else ""
    raise UsageError(f"{name}: {what} (see yi-chat models --all){folder}")


def _pull_hub(args, repo: str, shadowed: str | None) -> Path:
    """Fetch repo (the cache as it is under HF_HUB_OFFLINE). shadowed: the name, where a folder of that name is here:
    -m opens that folder, not this repo, which the lines say."""
    note = f"the folder {shadowed} here is not what pull fetches: -m {shadowed} opens that folder, not this repo"
    try:
        snap = hub.cached_snapshot(repo, args.revision)
        if hub.offline() and hub.usable(repo, snap, args.allow_pickle):
            path = snap  # HF_HUB_OFFLINE: what the cache has is what there is
        else:
            path = hub.fetch(repo, allow_pickle=args.allow_pickle, revision=args.revision, local=False)
    except LoadError as e:
        raise LoadError(f"{e} ({note})" if shadowed else str(e)) from None
    if shadowed:
        print(f"yi-chat: {args.repo}: the hub repo; {note}", file=sys.stderr)
    return path


def names() -> list[str]:
    """What `-m` can be completed with: cached hub repos, the Yi aliases and the config's own aliases."""
    from . import config

    try:
        own = list(config.read()[0].get("aliases", {}))
    except UsageError:  # a broken config: complete what does not depend on it
        own = []
    try:
        cached = [repo for repo, *_ in hub.scan() if "/" in repo]  # (models--gpt2's `gpt2` is no id -m takes)
    except LoadError:  # a hub cache that cannot be read: the other names
        cached = []
    return cached + [m.alias for m in family.MEMBERS] + own


def models(args, aliases: dict) -> int:
    rows = []
    cached = {}
    try:
        found = hub.scan()
    except LoadError as e:  # a hub cache that cannot be read: said, and the other rows listed (it listed none)
        print(f"yi-chat: {e}; its models are not listed", file=sys.stderr)
        found = []
    for repo, snap, size, why in found:
        m = family.BY_REPO.get(repo.lower())
        if snap is None:  # its folders cannot be read: listed with the reason (it was left out without a word)
            row = {"name": repo, "source": "hub", "alias": m.alias if m else None, **_blank(), "loadable": False}
            rows.append({**row, "reason": why})
            cached[repo.lower()] = rows[-1]
            continue
        row = {"name": repo, "source": "hub", "alias": m.alias if m else None, **describe(snap, size)}
        damaged = hub.damaged(snap)
        cut = not row["loadable"] and not damaged and hub.cut_short(snap)
        refused = hub.refused(snap) if cut else None
        if damaged:  # a link to a blob deleted since: whatever the files that are there say
            row.update(
                loadable=False, reason=f"a file of it is missing from the cache: `yi-chat pull {repo}` fetches it again"
            )
        elif cut and not refused:  # a pull completes it
            row.update(loadable=False, reason=f"the download is not complete: `yi-chat pull {repo}` continues it")
        elif row["loadable"] and not hub.is_main(repo, snap):
            # complete, but not main's (`pull --revision COMMIT|BRANCH`, or refs/main gone or damaged: the newest
            # snapshot is shown): -m REPO asks for main; it said "the download is not complete", or listed it ok
            row.update(loadable=False, reason=hub.unnamed(repo, snap))
        elif refused:  # where the pull stopped, not the weights it did not fetch for that reason
            row["reason"] = refused
        cached[repo.lower()] = row
        rows.append(row)
    for name in demo.NAMES:
        rows.append({"name": name, "source": "demo", "alias": None, **_demo_row(name)})
    for alias, target in sorted(aliases.items()):
        rows.append(
            {
                "name": alias,
                "source": "config alias",
                "alias": None,
                "target": target,
                **_describe_target(target, cached),
            }
        )
    if args.all:
        for m in family.MEMBERS:
            if m.repo.lower() in cached:
                continue
            rows.append(
                {
                    "name": m.repo,
                    "source": "Yi family (not fetched)",
                    "alias": m.alias,
                    **_blank(),
                    "format": _family_format(m),
                    "params": _params_of(m),
                    "context": m.context,
                    "loadable": True,
                    "reason": f"yi-chat pull {m.alias}",
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _table(rows)
    return 0


def _demo_row(name: str) -> dict:
    """The demo checkpoint's row: described when it has been converted (listing never converts it)."""
    from ..paths import cache_dir, cannot_make

    d = cache_dir() / "demo" / name
    try:
        from ..checkpoint.loader import demo_cache

        demo_cache()  # listed ok, where -m demo refuses it
        done = demo.converted(d)
    except LoadError as e:  # its cache cannot be read: that row says so, the others are listed
        return {**_blank(), "loadable": False, "reason": str(e)}
    if done:
        return describe(d)
    if why := cannot_make(d.parent):  # listed "converted on first use", and that use failed at once
        return {**_blank(), "loadable": False, "reason": f"{d.parent}: cannot create the cache directory ({why})"}
    return {**_blank(), "loadable": True, "reason": "converted on first use"}


def _blank() -> dict:
    return {"path": None, "format": None, "params": None, "size": None, "context": None}


def _describe_target(target: str, cached: dict) -> dict:
    if target in demo.NAMES:
        return _demo_row(target)
    try:
        p = inputs.user_path(target, LoadError)
        kind = inputs.looked_up(p, LoadError)
    except LoadError as e:  # a folder on the way cannot be searched: this row says so, the others are listed
        return {**_blank(), "loadable": False, "reason": str(e)}
    if kind == "directory":
        return describe(p)
    repo = family.expand(target).lower()
    if repo in cached:
        return {k: v for k, v in cached[repo].items() if k not in ("name", "source", "alias")}
    if bad := hub.malformed(target):  # models//yi: -m says so (exit 2), and pull would refuse it
        return {**_blank(), "loadable": False, "reason": bad}
    where = f"no folder {os.path.abspath(p)}, and" if hub.written_as_id(target) else "not a directory and"
    return {**_blank(), "loadable": False, "reason": f"{target}: {where} not fetched (yi-chat pull)"}


def describe(path: Path, size: int | None = None) -> dict:
    """format, parameters, size on disk, context length, and whether yi-chat can load it (else the reason)."""
    from ..checkpoint import configs, plausible, quantized, shapes
    from ..checkpoint import files as loader

    row = {
        **_blank(),
        "path": str(path),
        "size": size if size is not None else _disk_size(path),
        "loadable": True,
        "reason": None,
    }
    try:
        cfg = _config(path)
        row["context"] = cfg.get("max_position_embeddings") or cfg.get("n_positions")
        quant = quantized.detect(path, cfg)
        if quant is None:
            files = loader.plain_files(path, allow_pickle=True)
            tensors = loader.check_safetensors(files, plain=True)
            loader.check_layers(tensors, plausible.layers(cfg))
            shapes.check(tensors, cfg, None)
            row["format"] = (
                str(cfg.get("torch_dtype") or cfg.get("dtype") or "float16")
                .replace("float", "fp")
                .replace("bfp16", "bf16")
            )
            if files[0].suffix == ".bin":
                row["format"] += " (pickle .bin: needs --allow-pickle)"
            row["params"] = _header_params(files) or _params_from_config(cfg)
        else:
            # The loader's check, as for plain weights: a file shorter than its header says (a cut-short copy) is
            # damaged, which the headers alone pass.
            tensors = loader.check_safetensors([path / f for f in quant["files"]])
            loader.check_layers(tensors, plausible.layers(cfg))
            shapes.check(tensors, cfg, quant)
            row["format"] = f"{quant['method'].upper()} int{quant['bits']}"
            row["params"] = _params_from_config(cfg)
        if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer.model")):
            raise LoadError(f"{path}: no tokenizer (tokenizer.json or tokenizer.model)")
        loader.check_side_files(path)  # generation_config.json's eos ids, as the load checks them
        configs.check_type(path, cfg, quant is not None)  # a model_type the load would refuse
    except LoadError as e:
        row.update(loadable=False, reason=str(e))
    return row


def _config(path: Path) -> dict:
    """config.json, its sizes checked as the loader checks them before it builds anything: a checkpoint whose
    num_hidden_layers is -3 was listed ok, and -m refused it."""
    from ..checkpoint import files, plausible

    cfg = files.read_config(path)
    plausible.check(cfg, path / "config.json")
    return cfg


def _disk_size(path: Path) -> int | None:
    """Bytes of the files in path; None where it cannot be listed (describe's checks then say why)."""
    try:
        return sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    except OSError:
        return None


def _header_params(files: list[Path]) -> int | None:
    """Parameters counted from safetensors headers (exact for plain checkpoints; no tensor is read)."""
    n = 0
    for f in files:
        if f.suffix != ".safetensors":
            return None
        with open(f, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        for k, v in header.items():
            if k != "__metadata__":
                count = 1
                for d in v["shape"]:
                    count *= d
                n += count
    return n


def _params_from_config(cfg: dict) -> int | None:
    """A Llama-shaped decoder's parameter count from its config (quantized checkpoints pack their weights)."""
    try:
        h, i, n_layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
        heads, vocab = cfg["num_attention_heads"], cfg["vocab_size"]
    except KeyError:
        return None
    kv = cfg.get("num_key_value_heads") or heads
    hd = cfg.get("head_dim") or h // heads
    layer = 2 * h * heads * hd + 2 * h * kv * hd + 3 * h * i + 2 * h
    return n_layers * layer + vocab * h * (1 if cfg.get("tie_word_embeddings") else 2) + h


def _params_of(m: family.Member) -> int:
    return _params_from_config(
        {
            "hidden_size": m.hidden,
            "intermediate_size": m.intermediate,
            "vocab_size": 64000,
            "num_hidden_layers": m.layers,
            "num_attention_heads": m.heads,
            "num_key_value_heads": m.kv_heads,
        }
    )


def _family_format(m: family.Member) -> str:
    return f"{m.fmt.upper()} int{m.bits}" if m.fmt in ("awq", "gptq") else m.fmt


def _count(n: int | None) -> str:
    if not n:
        return "-"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def _bytes(n: int | None) -> str:
    from rich.filesize import decimal

    return decimal(n) if n else "-"


def summary(row: dict) -> str:
    return (
        f"{row['format'] or '?'} · {_count(row['params'])} params · {_bytes(row['size'])} · "
        f"context {row['context'] or '?'}"
    )


def _table(rows: list[dict]) -> None:
    from rich.table import Table

    from .render import make_console, measure, piped

    t = Table(box=None, pad_edge=False)
    for col in ("model", "alias", "source", "format", "params", "size", "context", "status"):
        t.add_column(col, no_wrap=col != "status", overflow="fold")
    for r in rows:
        status = "ok" if r["loadable"] and not r["reason"] else (r["reason"] or "")
        if not r["loadable"]:
            status = f"cannot load: {r['reason']}"
        cells = (r["name"], r.get("alias") or "", r["source"], r["format"] or "-")
        cells += (_count(r["params"]), _bytes(r["size"]), str(r["context"] or "-"), status)
        # control characters shown visibly, as -m's lines show them: an alias target's ESC [31m turned the terminal red
        t.add_row(*(shown(c, len(c)) for c in cells))
    console = make_console(highlight=False, markup=False)  # a name or a reason is shown as written, brackets too
    # A terminal too narrow for the table's unbroken columns (40 columns) had them cut ("demo-gp", the status gone):
    # it gets whole rows, as a pipe does, and wraps them itself
    if console.is_terminal and measure(t).minimum <= console.width:
        console.print(t)
        return

    # A pipe gets whole rows (not rows wrapped at 80 columns), without the spaces rich pads every line with to the
    # width of the longest reason (200 columns and more: `cat -A` showed them)
    sys.stdout.write(piped(t, console.width, whole=True))
    sys.stdout.flush()
