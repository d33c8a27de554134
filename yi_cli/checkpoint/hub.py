"""Fetch a checkpoint from the Hugging Face Hub into its cache, resumably; list what the cache holds.

Everything goes through huggingface_hub and its cache layout (blobs/<etag>, snapshots/<commit>/<file> -> blob,
refs/<revision>), so `hf cache ls`, transformers and snapshot_download(local_files_only=True) see what we fetched;
HF_HOME / HF_HUB_CACHE / HF_ENDPOINT / HF_TOKEN / HF_HUB_OFFLINE are read by huggingface_hub itself.

Why not snapshot_download: since huggingface_hub 1.x a download goes to a per-process temp file that is deleted
on any failure, so Ctrl-C or a dropped connection restarts a 4 GB shard from zero. We keep the partial blob as
blobs/<etag>.incomplete and continue it with a Range request (huggingface_hub's http_get, which also retries a
connection dropped mid-file within the run). A file enters snapshots/ only once complete and checked (size, and
the sha256 of LFS files or the git blob id of others), so a later run never trusts half a file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shlex
import shutil
import stat
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from .. import env_files, http_env, inputs, terminal
from ..errors import LoadError, shown
from . import configs, hub_http, plausible
from .family import BY_REPO, repo_of
from .files import check_unquantized, impossible_name, index_files, read_config, read_json
from .hub_http import endpoint

# What yi-chat reads from a checkpoint; README, weights of other frameworks, GGUF and images stay on the hub.
NEEDED = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "model.safetensors.index.json",
    "quantize_config.json",
)
INDEX, PICKLE_INDEX = "model.safetensors.index.json", "pytorch_model.bin.index.json"
TOKENIZERS = ("tokenizer.json", "tokenizer.model")  # the loader takes either
LOGIN = "log in with `hf auth login` or set HF_TOKEN"
NOT_LOCAL = "not a local directory, and "  # a repo missing on the hub, after the name was looked for as a folder
LOCK_NOTICE_S = 1.0  # a file another process is fetching: say so after this long
# What the hub's answers may name in the cache's paths (snapshots/<commit>, blobs/<etag>): a hub commit id
# (huggingface_hub's REGEX_COMMIT_HASH) and one plain file name. A stand-in hub (HF_ENDPOINT: a mirror, a proxy)
# that answered `../../x` wrote files outside the cache.
COMMIT = re.compile(r"[0-9a-f]{40}")
BLOB = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,127}")
REF_LIMIT = 4096  # refs/<revision> holds a commit id


def offline() -> bool:
    return bool(env_files.hub_constants().HF_HUB_OFFLINE)


def cache_root() -> Path:
    return Path(env_files.hub_constants().HF_HUB_CACHE)


def wanted(path: str, allow_pickle: bool) -> bool:
    """Top-level files yi-chat needs; .bin weights only when pickle is allowed."""
    if "/" in path:
        return False
    if path in NEEDED or path.endswith(".safetensors"):
        return True
    return allow_pickle and (path.endswith(".bin") or path == PICKLE_INDEX)


def written_as_id(name: str) -> bool:
    """Written as a hub id is (ORG/NAME), not as a path (/..., ./..., ../..., ~/...): such a name that breaks the
    hub's rules is malformed (see id_problem), where a path is a folder that is there or missing."""
    return "/" in name and not name.startswith((".", "/", "~"))


def id_problem(repo: str, slashes: int = 1) -> str | None:
    """Why repo cannot be a hub id (two slashes, characters the hub refuses), or None when it can. slashes: 0 for a
    name of no namespace (gpt2)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if repo.count("/") != slashes:
        return "a hub id is ORG/NAME, with one slash"
    try:
        validate_repo_id(repo)
    except HFValidationError as e:  # its rule, less the id it quotes at the end ("...: 'a/b c'."; a line break in
        rule = str(e)  # the id cut it short, and its first line was the rule with "'x/a")
        for end in (f": '{repo}'.", f": '{repo}'"):
            rule = rule.removesuffix(end)
        return " ".join(rule.split())
    return None


def name_problem(name: str) -> str | None:
    """Why a name with no slash (gpt2 is an id too) cannot be a hub id (a blank, a character the hub refuses), or
    None; a path-like one (.x, ~x) is a folder that is missing, not a malformed id."""
    if "/" in name or name.startswith((".", "~")):
        return None
    return id_problem(name, slashes=0)


def malformed(repo: str, typed: str | None = None) -> str | None:
    """The line for a name that is no folder and, written as a hub id, breaks the hub's rules (bad//id, a/b/c):
    "TYPED: no such directory, and not a valid hub id (RULE)", as -m and `yi-chat models` say it; None otherwise.
    typed: the name as the user gave it, where repo is what it expanded to."""
    problem = id_problem(repo) if written_as_id(repo) else None
    return f"{typed or repo}: no such directory, and not a valid hub id ({problem})" if problem else None


def storage(repo: str) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    try:
        return cache_root() / repo_folder_name(repo_id=repo, repo_type="model")
    except ValueError as e:  # HFValidationError: characters a repo id cannot have
        raise LoadError(f"{repo}: not a valid hub id ({str(e).splitlines()[0]})") from None


def cached_snapshot(repo: str, revision: str = "main") -> Path | None:
    """The snapshot folder the cache has for repo@revision, or None (no network)."""
    root = storage(repo)
    try:  # a folder that cannot be searched raises EACCES where a missing one is None
        ref = root / "refs" / revision
        commit = _ref_commit(ref) if inputs.kind_of(ref) == "regular file" else revision
        if commit is None:
            return None
        snap = root / "snapshots" / commit
        return snap if inputs.kind_of(snap) == "directory" else None
    except OSError as e:
        raise LoadError(f"{root}: cannot read the Hugging Face cache ({e.strerror or e})") from None


def refs_naming(repo: str, snap: Path) -> list[str]:
    """The refs of the cache that name this snapshot: main, or a revision a pull fetched (`--revision v1`)."""
    refs = storage(repo) / "refs"
    try:
        names = [p.relative_to(refs).as_posix() for p in refs.rglob("*") if p.is_file()] if refs.is_dir() else []
        return [name for name in names[:100] if cached_snapshot(repo, name) == snap]
    except (OSError, LoadError, RecursionError):  # RecursionError: folders a thousand deep (pathlib recurses)
        return []


def is_main(repo: str, snap: Path) -> bool:
    """Whether refs/main names this snapshot (what -m REPO loads); True where the cache cannot be read (the row of
    `yi-chat models` says what is wrong with it)."""
    try:
        return cached_snapshot(repo) == snap
    except LoadError:
        return True


def unnamed(repo: str, snap: Path) -> str:
    """What a complete snapshot main does not name is (a pull of a commit or of a branch, or refs/main gone): -m
    REPO asks for main, which the cache does not have."""
    commit = shown(snap.name, 40)[:12]
    named = refs_naming(repo, snap)
    what = f"{shown(named[0], 100)} (commit {commit})" if named else f"commit {commit}, which no branch names,"
    return (
        f"the cache holds {what} but not main: `yi-chat pull {repo}` fetches main; `-m {shown(str(snap), 400)}` "
        "opens this one"
    )


def _ref_commit(ref: Path) -> str | None:
    """The commit a cache ref names; None where it names none (damaged, gigabytes long, or a path such as `../x`,
    which led outside the cache): as if there were no ref, so a fetch writes it again."""
    if ref.stat().st_size > REF_LIMIT:
        return None
    commit = inputs.read_bytes(ref, REF_LIMIT, LoadError, "Hugging Face cache ref").decode("ascii", "replace").strip()
    return commit if COMMIT.fullmatch(commit) else None


def _not_a_name(repo: str, what: str, value) -> LoadError:
    return LoadError(
        f"{repo}: {endpoint()} answered {shown(repr(value), 80)} for {what}, which is not one; check HF_ENDPOINT"
    )


INFO_TRIES = 6  # the model info asked at most this many times where the hub asks to wait (429, 503), as a file is


def _repo_info(api, repo: str, revision: str, progress):
    """The model's info (_busy_retried)."""
    # the call's timeout: its None would override the client's
    return _busy_retried(lambda: api.repo_info(repo, revision=revision, timeout=hub_http.ANSWER_S), repo, progress)


def _busy_retried(call, repo: str, progress):
    """call(), a request huggingface_hub does not retry (the model's info, a file's HEAD); a 429 or 503 whose wait is
    short (hub_http.RETRY_WAIT_S) is waited out and asked again, with a line a retry, as huggingface_hub does for a
    file's GET: a rate limit's `Retry-After: 2` on it ended the pull at once."""
    from huggingface_hub import errors

    for attempt in range(1, INFO_TRIES + 1):
        try:
            return call()
        except errors.HfHubHTTPError as e:
            status = getattr(getattr(e, "response", None), "status_code", None)
            if status not in (429, 503) or attempt == INFO_TRIES:
                raise
            asked, hub_http.RETRIES.asked = hub_http.RETRIES.asked, None
            wait = asked[1] if asked and asked[1] is not None else 2 ** (attempt - 1)
            how = f"asks to wait {wait} s" if asked and asked[1] is not None else f"is busy; waiting {wait} s"
            progress._line(
                f"{repo}: {endpoint()} answered HTTP {status} and {how}; retrying (retry {attempt} of {INFO_TRIES - 1})"
            )
            time.sleep(wait)


MAX_FILE_BYTES = 1 << 50  # a petabyte: a listed size past it is no checkpoint file's


def complete(snap: Path) -> bool:
    """Enough to load: a config, a tokenizer and weights, every shard the index lists present (a run cut short links
    files one by one, weights last; one cut in the tokenizer, with its weights linked by an earlier pull, was loaded
    and said "no tokenizer files; copy them from where the model came from")."""

    def there(name: str) -> bool:  # a file that is there, whatever it is: the loader says what is wrong with one
        return inputs.looked_up(snap / name, LoadError, snap, "the Hugging Face cache") is not None

    # A file there that is no regular file (a FIFO, /dev/zero) or an index the loader refuses was called a download
    # not complete (offline: "`yi-chat pull` continues it"), where the loader names the file and what is wrong.
    if not there("config.json") or not any(there(name) for name in TOKENIZERS):
        return False
    for index in (INDEX, PICKLE_INDEX):
        if (snap / index).is_file():
            try:  # within the JSON limits (deep nesting was a RecursionError traceback)
                shards = set(inputs.read_json(snap / index, inputs.JSON_LIMIT, LoadError, index)["weight_map"].values())
            except (LoadError, KeyError, TypeError, AttributeError):
                return True  # no list of shards to wait for: the loader refuses the index
            try:  # a name the index gives that no file can have (a number, 300 characters) is a shard not there
                return all(isinstance(s, str) and (snap / s).is_file() for s in shards)
            except (OSError, ValueError):
                return False
    if _shards_missing(snap):  # no index to list them: their names say how many there are
        return False
    return any(snap.glob("*.safetensors")) or any(snap.glob("*.bin"))


SHARD = re.compile(r"(.+)-(\d{5})-of-(\d{5})\.(safetensors|bin)")


def _shards_missing(snap: Path) -> bool:
    """Whether the snapshot holds some of the shards `NAME-0000I-of-0000N` of a checkpoint without an index, not all
    N: a pull cut at its second shard was called complete, and its load said the weights were another model's."""
    groups: dict[tuple, set[int]] = {}
    try:
        for p in snap.iterdir():
            if (m := SHARD.fullmatch(p.name)) and p.is_file():
                groups.setdefault((m[1], m[3], m[4]), set()).add(int(m[2]))
    except OSError:  # a folder that cannot be listed (another user's, mode 0311): no weights seen, as glob saw none
        return True
    return any(have != set(range(1, int(total) + 1)) for (_, total, _), have in groups.items())


def cut_short(snap: Path) -> bool:
    """A fetch stopped before the snapshot was complete: files are linked as they arrive, config and tokenizer first
    and weights last, so a connection dropped, a checksum failed or a Ctrl-C leaves one without (all) its weights."""
    try:
        return not complete(snap)
    except LoadError:  # a snapshot that cannot be read: its listing row says why already
        return False


def fetch(repo: str, *, allow_pickle: bool = False, revision: str = "main", progress=None, local: bool = True) -> Path:
    """Download what yi-chat needs of `repo` into the hub cache (continuing partial files); return the snapshot.
    local: the name was looked for as a local folder first (-m), which a repo missing on the hub says; `pull` asks
    the hub alone."""
    env_files.hub_constants()  # before huggingface_hub imports them
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import HFValidationError
    from huggingface_hub.utils import logging as hub_logging

    if offline():
        other = revision != "main"  # a revision never fetched was said to be a download cut short, and main's pull
        if other and cached_snapshot(repo, revision) is None:  # advised (its state is no matter here)
            raise LoadError(
                f"{repo}: revision {shown(revision, 80)} is not in the local Hugging Face cache ({cache_root()}), "
                "and HF_HUB_OFFLINE=1 forbids downloading it"
            )
        if not other and (why := _newest_refused(repo)) is not None:  # a pull stops at it again, online (and an
            raise LoadError(why)  # index refused left a snapshot "complete", no weights in it, offered as one)
        if not other and (snap := _unnamed_snapshot(repo)) is not None:
            raise LoadError(f"{repo}: HF_HUB_OFFLINE=1 forbids fetching it; {unnamed(repo, snap)}")
        if started(repo):
            again = f"yi-chat pull {repo}" + (f" --revision {shlex.quote(revision)}" if other else "")
            raise LoadError(
                f"{repo}: the download is not complete in the Hugging Face cache ({cache_root()}), and "
                f"HF_HUB_OFFLINE=1 forbids continuing it: `{again}` online continues it"
            )
        raise LoadError(
            f"{repo}: not in the local Hugging Face cache ({cache_root()}), and HF_HUB_OFFLINE=1 forbids downloading it"
        )
    env_files.hf_token()  # the files huggingface_hub and its TLS context read unchecked: a FIFO hung the request
    http_env.check_for_hub()  # the CA files and proxies its client is made from, each named (exit 2)
    progress = progress or Progress()
    hub_logging.set_verbosity_error()  # its retry warnings are multi-line; a dropped connection resumes quietly
    hub_http.RETRIES.notify(repo, progress)
    hub_http.PAGES.reset()
    hub_http.bounded_client()
    api = HfApi()
    try:
        commit = _repo_info(api, repo, revision, progress).sha
        listed = [f for f in api.list_repo_tree(repo, recursive=True, revision=commit) if isinstance(f, RepoFile)]
        if not all(isinstance(f.path, str) for f in listed):  # `"path": 5` was an internal error (TypeError)
            raise TypeError("a file's path is not text")
    except (ValueError, KeyError, TypeError) as e:  # answers that are not the hub's JSON: a page, a list, no sizes
        if isinstance(e, HFValidationError):
            raise hub_error(e, repo, local, revision) from None
        raise LoadError(
            f"{repo}: {endpoint()} does not answer as a Hugging Face Hub does ({e.__class__.__name__}); check "
            "HF_ENDPOINT"
        ) from None
    except Exception as e:
        raise hub_error(e, repo, local, revision) from None
    if not isinstance(commit, str) or not COMMIT.fullmatch(commit):
        raise _not_a_name(repo, "the commit id (40 hex digits)", commit)
    files = list({f.path: f for f in listed if wanted(f.path, allow_pickle)}.values())
    if len(files) < sum(wanted(f.path, allow_pickle) for f in listed):  # each listed more than once
        # a listing repeated 50 times was 50 fetches' worth of HEADs, and a space check and a total 50 times too big
        seen = {}
        for f in listed:
            if wanted(f.path, allow_pickle) and seen.setdefault(f.path, (f.size, _etag(f))) != (f.size, _etag(f)):
                raise LoadError(
                    f"{repo}: {endpoint()} lists {shown(f.path, 200)} twice, as two different files; check HF_ENDPOINT"
                )
    for f in files:  # each one's blob name in the cache where its ETag is not one (_fetch_file)
        if isinstance(f.size, bool) or not isinstance(f.size, int) or not 0 <= f.size < MAX_FILE_BYTES:
            # a size "12", null or 1e400 was an internal error's line (TypeError, OverflowError); 1e300, a disk
            # "not enough" for its 300 digits of yottabytes
            raise LoadError(
                f"{repo}: {endpoint()} lists {shown(f.path, 200)} with a size that is no file's "
                f"({shown(repr(f.size), 40)}); check HF_ENDPOINT"
            )
        if any(impossible_name(part) for part in f.path.split("/")):
            # no file can have that name: it was found out as the snapshot's link, after the blob was fetched
            raise _not_a_name(repo, "a file name", f.path)
        if not isinstance(blob_id := _etag(f), str) or not BLOB.fullmatch(blob_id):
            raise _not_a_name(repo, f"{shown(f.path, 200)}'s blob id", blob_id)
    if not any(f.path.endswith((".safetensors", ".bin")) for f in files):
        if any(f.path.endswith(".bin") for f in listed):
            raise LoadError(
                f"{repo}: only pickle (.bin) weights; they can run code when loaded, "
                "pass --allow-pickle if you trust them"
            )
        raise LoadError(f"{repo}: no safetensors weights in the repo (yi-chat reads safetensors checkpoints)")
    _loadable_as_listed(repo, files)
    files = _read_as_loaded(files)
    root = storage(repo)
    snap = root / "snapshots" / commit
    blobs = root / "blobs"
    try:
        _real_folder(root, blobs)
        files = _indexed(repo, commit, files, root, snap)
        todo = sorted(
            (f for f in files if not _have(snap / f.path, f.size)),
            key=lambda f: (f.path.endswith((".safetensors", ".bin")), f.path),
        )  # config and tokenizer first: weights linked last
        # An update's unchanged files are in the cache already (blobs/<etag>, the commit before linked them): they
        # are only linked into the new snapshot, so neither the space check nor the size shown counts them.
        fetching = [f for f in todo if not _have(blobs / _etag(f), f.size)]
        check_space(blobs, sum(f.size for f in fetching) - sum(_partial_size(blobs, f) for f in fetching))
        progress.start(repo, [(f.path, f.size, _partial_size(blobs, f)) for f in fetching])
        checked = False
        for f in todo:
            if not checked and f.path.endswith((".safetensors", ".bin")):
                # Fetched first: a config yi-chat cannot read, or whose sizes no model has (num_hidden_layers = -3,
                # which the load would refuse), fails here, before the weights are fetched for nothing; and so does a
                # quantization the loader refuses (bitsandbytes, AWQ 3-bit), or one the weights' names contradict.
                cfg = _config_checked(snap)
                shards = _weight_map(snap)
                _shards_as_listed(repo, shards, files)
                if configs.check_before_weights(snap, cfg, [f.path for f in files]) is None:
                    _unquantized_as_listed(repo, commit, snap, files, shards)
                checked = True
            _fetch_file(repo, commit, f, root, progress)
        ref = root / "refs" / revision
        if revision != commit and not _names(ref, commit):  # (written again, a read-only cache of a model that
            # was whole already failed the pull: "Read-only file system", nothing to fetch)
            _real_folder(root, ref.parent)
            tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
            tmp.unlink(missing_ok=True)  # a link planted there had the commit written into the file it named
            with open(
                os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644), "w"
            ) as f:
                f.write(commit)
            os.replace(tmp, ref)
    except LoadError:
        raise
    except Exception as e:
        raise hub_error(e, repo, local, revision) from None
    except KeyboardInterrupt:  # "interrupted" alone left it to guess whether the gigabytes so far were lost
        progress.stop()
        progress.kept(repo)
        raise
    finally:
        progress.stop()  # also on Ctrl-C: the terminal gets its cursor back
    progress.done(repo)
    return snap


def _names(ref: Path, commit: str) -> bool:
    """Whether the ref file at `ref` (a regular file, not a link) names `commit` already, as _ref_commit reads it."""
    try:
        return not ref.is_symlink() and inputs.kind_of(ref) == "regular file" and _ref_commit(ref) == commit
    except (OSError, LoadError):
        return False


def _unnamed_snapshot(repo: str) -> Path | None:
    """The snapshot `yi-chat models` shows for repo (scan's choice) where it is complete and main names none."""
    try:
        if cached_snapshot(repo) is not None:
            return None
        snap = _newest(storage(repo))
        return snap if snap is not None and complete(snap) else None
    except (OSError, LoadError):
        return None


def refused(snap: Path) -> str | None:
    """Why a snapshot's config.json or weights index, where it is there, is refused (unreadable, implausible sizes, a
    quantization or a model_type the loader refuses, an index that names no file or not a file of the folder), else
    None: a pull stops at it again, before the weights, so it is that reason, not a download that `pull`
    continues."""
    if not (snap / "config.json").is_file():  # cut short before its config: the pull does continue it
        return None
    try:
        configs.check_before_weights(snap, _config_checked(snap), [])  # (the weights' names are the hub's listing)
    except LoadError as e:
        return str(e)
    return None


def _config_checked(snap: Path) -> dict:
    """A snapshot's config.json, read and checked as a pull checks it before the weights (sizes no model has), and
    its weights index where it has one (an index the loader refuses: no shard named, `../x`)."""
    cfg = read_config(snap)
    plausible.check(cfg, snap / "config.json")
    if (snap / INDEX).is_file():
        index_files(snap / INDEX)
    return cfg


def _newest_refused(repo: str) -> str | None:
    """refused() of repo's newest snapshot (where a refused pull stopped: no ref names it yet)."""
    try:
        snap = _newest(storage(repo))
    except (OSError, LoadError):
        return None
    return refused(snap) if snap is not None else None


def started(repo: str) -> bool:
    """The cache holds a download of repo that was begun: a snapshot folder, or a partial blob (a pull killed before
    the first byte of its first file leaves an empty blobs/<etag>.incomplete and nothing else)."""
    root = storage(repo)
    try:
        return (root / "snapshots").is_dir() or _partial(root)
    except OSError:
        return False


def _partial(root: Path) -> bool:
    """A repo folder of the cache holds a partial blob (blobs/<etag>.incomplete: a download cut short)."""
    return any((root / "blobs").glob("*.incomplete"))


def _have(path: Path, size: int | None) -> bool:
    """The snapshot holds this file whole: a regular file (through its link) of the listed size. A blob truncated or
    deleted since (a full disk, a hand) is fetched again instead of trusted."""
    try:
        return path.is_file() and (size is None or path.stat().st_size == size)
    except OSError:
        return False


def _read_as_loaded(files: list) -> list:
    """The listed files less the weights the loader would pass over (files.weight_files): pickle weights beside
    safetensors ones (with --allow-pickle, a repo that has both had both fetched)."""
    if not any(f.path.endswith(".safetensors") for f in files):
        return files
    return [f for f in files if not (f.path.endswith(".bin") or f.path == PICKLE_INDEX)]


def _indexed(repo: str, commit: str, files: list, root: Path, snap: Path) -> list:
    """The listed files less the safetensors files the weights index does not name, which the loader never reads
    (files.plain_files; transformers reads the index's shards alone): a repo that also holds its weights in another
    layout (Mistral's consolidated.safetensors) had them fetched too, twice the gigabytes. The index is fetched
    first for it, quietly (tens of kB); an index that names no shard leaves the listing as it is (the loader says
    what is wrong with it)."""
    index = next((f for f in files if f.path == INDEX), None)
    if index is None or index.size > inputs.JSON_LIMIT:
        return files
    if not _have(snap / INDEX, index.size):  # (blobs/ made already)
        quiet = _Quiet()
        quiet.start(repo, [(index.path, index.size, 0)])
        _fetch_file(repo, commit, index, root, quiet)
    try:
        shards = _weight_map(snap)
    except LoadError:
        return files
    named = {s for s in (shards or {}).values() if isinstance(s, str)}
    kept = [f for f in files if not f.path.endswith(".safetensors") or f.path in named]
    if not any(f.path.endswith(".safetensors") for f in kept):  # none of them listed (`../x`, a shard missing):
        return files  # the checks before the weights say what is wrong with it (it pulled "ready", no weights)
    return kept


def _loadable_as_listed(repo: str, files) -> None:
    """What the listing alone shows yi-chat cannot load, said before gigabytes of weights are fetched."""
    names = {f.path for f in files}
    if "config.json" not in names:
        raise LoadError(f"{repo}: no config.json in the repo (not a transformers model checkpoint)")
    if not names & {"tokenizer.json", "tokenizer.model"}:
        raise LoadError(f"{repo}: no tokenizer in the repo (tokenizer.json or tokenizer.model)")


def _weight_map(snap: Path) -> dict | None:
    """The weights index's weight_map (fetched already: it is no weights file), {} where the index has none that is
    a map (the loader says what is wrong with it); None where there is no index."""
    if not (snap / INDEX).is_file():
        return None
    index = read_json(snap / INDEX)
    shards = index.get("weight_map") if isinstance(index, dict) else None
    return shards if isinstance(shards, dict) else {}


def _shards_as_listed(repo: str, shards: dict | None, files) -> None:
    """A weights index (its _weight_map) that names a shard the repo does not list: said before the weights are
    fetched. The pull ended "ready", and then `models` and -m called the model a download cut short that `yi-chat
    pull` would continue, which it could not."""
    if not shards:
        return
    listed = {f.path for f in files}
    missing = sorted({s for s in shards.values() if isinstance(s, str)} - listed)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise LoadError(
            f"{repo}: its index names {shown(missing[0], 200)}{more}, which the repo on {endpoint()} does not have: "
            "the repo is incomplete, and cannot be loaded until its owner adds the file"
        )


def _unquantized_as_listed(repo: str, commit: str, snap: Path, files, shards: dict | None) -> None:
    """A config that names no quantization over AWQ / GPTQ weights, said before they are fetched: the tensor names
    of the index's weight_map (_weight_map), else of each safetensors file's header on the hub."""
    from huggingface_hub import hf_hub_url

    if shards is not None:
        check_unquantized(snap / INDEX, shards)  # a bad index ({}): the loader's to say
        return
    for f in files:
        if f.path.endswith(".safetensors"):
            try:
                names = hub_http.header_names(hf_hub_url(repo, f.path, revision=commit), inputs.HEADER_LIMIT)
            except Exception:  # noqa: BLE001 - a hub that fails it: the download says so, after its own retries
                names = None
            check_unquantized(f"{repo}/{f.path}", names or ())


def _etag(f) -> str:
    """The name of a listed file's blob in the cache: the hub's ETag, its LFS sha256 or else its git blob id."""
    return f.lfs.sha256 if f.lfs is not None else f.blob_id


def _partial_size(blobs: Path, f) -> int:
    """The size of f's partial blob to continue: a regular file, not a link (0 for anything else, which
    _open_partial replaces)."""
    try:
        st = os.lstat(blobs / f"{_etag(f)}.incomplete")
    except FileNotFoundError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def _open_partial(part: Path):
    """blobs/<etag>.incomplete opened to continue it. Anything but a regular file in its place is removed first: in
    a cache shared with other users, a link there (to a file of the user's) had the download written into the file
    it led to, and a FIFO blocked the open."""
    try:
        if not stat.S_ISREG(os.lstat(part).st_mode):
            part.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(part, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0), 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # (put there since the look above)
        os.close(fd)
        raise LoadError(f"{part}: not a regular file; remove it and run again")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "r+b")


def check_space(folder: Path, need: int) -> None:
    free = shutil.disk_usage(folder).free
    if need > free:
        raise LoadError(
            f"not enough disk space in {folder}: {_size(need)} to download, {_size(free)} free "
            "(free some space, or point HF_HUB_CACHE at a larger disk)"
        )


def _real_folder(root: Path, folder: Path) -> Path:
    """`folder` (in `root`, the repo's own folder of the cache) made where it is missing, none of its parts below
    root a symbolic link: in a cache shared with other users, a link at snapshots/<commit> (to a folder of the
    user's) had the user's files replaced by links to blobs, and one at blobs/ had the blobs written into it."""
    part = root
    for name in folder.relative_to(root).parts:
        part = part / name
        try:
            link = stat.S_ISLNK(os.lstat(part).st_mode)
        except FileNotFoundError:
            break
        if link:
            raise LoadError(
                f"{part}: a symbolic link in the Hugging Face cache, where yi-chat writes only into folders of its "
                "own; remove it and run again"
            )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _fetch_file(repo: str, commit: str, entry, root: Path, progress) -> None:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(repo, entry.path, revision=commit)
    try:
        meta = _busy_retried(lambda: get_hf_file_metadata(url), repo, progress)
    except ValueError as e:  # a redirect to `http://[::1/x` or a port past 65535: "download failed (ValueError…)"
        raise LoadError(
            f"{repo}/{shown(entry.path, 200)}: {endpoint()} answers with an address that cannot be followed "
            f"({shown(str(e), 200)}); check HF_ENDPOINT"
        ) from None
    if meta.size is not None and meta.size != entry.size:  # its bytes could never match the listing's checksum
        raise LoadError(
            f"{repo}/{shown(entry.path, 200)}: {endpoint()} lists {entry.size} bytes but serves {meta.size}; try "
            "again later"
        )
    # The blob is named by the listing's id (LFS sha256, else git blob id): the one its bytes are checked against.
    # The hub's ETag is that same id; one that named another file's blob (a mirror's, or one ETag for every file)
    # had this file linked to that blob unchecked, or each file's blob replace the one before it.
    etag = _etag(entry)
    blob = root / "blobs" / etag
    # huggingface_hub's lock for this blob: two processes never append to one partial file.
    lock = root.parent / ".locks" / root.name / f"{etag}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with _locked(lock, entry.path, progress):
        if blob.is_file() and blob.stat().st_size != entry.size:
            if _matches(blob, entry):  # the very bytes the listing's id names: the listed size is what is wrong
                raise LoadError(
                    f"{repo}/{shown(entry.path, 200)}: {endpoint()} lists {entry.size} bytes for it, but the file its "
                    f"id names is in the cache, checked, with {blob.stat().st_size}; kept (try again later)"
                )
            blob.unlink()  # damaged since it was checked: not the file the hub has
        if not blob.is_file():
            _download(repo, entry, url, meta, blob, progress)
    link = root / "snapshots" / commit / entry.path
    _real_folder(root, link.parent)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(blob, link.parent), tmp)
    os.replace(tmp, link)


@contextmanager
def _locked(lock: Path, name: str, progress):
    """The blob's lock; a line first when another process holds it (its fetch goes on: this one waits, silent
    otherwise as if hung)."""
    from filelock import Timeout
    from huggingface_hub.utils import WeakFileLock

    try:
        with WeakFileLock(lock, timeout=LOCK_NOTICE_S):
            yield
            return
    except Timeout:
        if progress is not None:
            progress.waiting(name)
    with WeakFileLock(lock):
        yield


# Bytes http_get reads before it writes them: what a dropped connection loses. Its own 10 MiB made a link that
# drops every few MB never finish (each retry started where the last whole chunk ended: nowhere), and a Ctrl-C kept
# nothing of the last 10 MiB.
CHUNK = 256 << 10


def _download(repo: str, entry, url: str, meta, blob: Path, progress) -> None:
    """Continue blobs/<etag>.incomplete from its size with a Range request; move it into place once checked."""
    from huggingface_hub.utils import build_hf_headers

    env_files.hub_constants().DOWNLOAD_CHUNK_SIZE = CHUNK  # read by http_get at each call

    part = blob.with_name(f"{blob.name}.incomplete")  # huggingface_hub's own name for a partial blob
    headers = build_hf_headers()
    if urlparse(meta.location).netloc != urlparse(url).netloc:
        headers.pop("authorization", None)  # a signed CDN URL: the token stays with the hub
    with _open_partial(part) as fh:
        have = os.fstat(fh.fileno()).st_size
        if have > entry.size:
            fh.truncate(0)
            have = 0
        progress.file(entry.path, entry.size, have)
        fh.seek(have)
        try:
            _continued(meta.location, fh, entry.size, headers, progress)
        except _Bounded.Past:  # an endless body filled the disk: stopped at the listed size
            part.unlink()
            raise LoadError(
                f"{repo}/{shown(entry.path, 200)}: {endpoint()} sent more than the {entry.size} bytes it lists "
                "(discarded); try again later"
            ) from None
        except Exception as e:
            if _bad_location(e):  # http_get took it for a dropped connection: "closed the connection … on every retry"
                raise LoadError(
                    f"{repo}/{shown(entry.path, 200)}: {endpoint()} redirects the download to an address that is not a "
                    "URL; try again later"
                ) from None
            if _cut_off(e):  # reached, then cut off mid-file past http_get's own retries
                raise LoadError(
                    f"{repo}: {endpoint()} closed the connection mid-download ({e.__class__.__name__}) on every "
                    "retry; run again to continue it"
                ) from None
            raise
        os.fchmod(fh.fileno(), 0o644)
    if not _matches(part, entry):
        part.unlink()
        raise LoadError(f"{repo}/{entry.path}: the download does not match its checksum (discarded; run again)")
    os.replace(part, blob)
    progress.file_done(entry.path)


CUT_TRIES = 5  # connections reset (ECONNRESET) in a row, with no byte between them, before the pull gives up


def _continued(url: str, fh, size: int, headers: dict, progress) -> None:
    """http_get from fh's end to `size`. It continues a connection closed or timed out mid-file itself, but not one
    reset (ReadError: "Connection reset by peer", the usual drop), which ended the pull at its first one and said
    "on every retry": such a reset is continued here, up to CUT_TRIES in a row without a byte between them."""
    import httpx2
    from huggingface_hub.file_download import http_get

    tries = 0
    while True:
        have = fh.tell()
        try:
            return http_get(
                url,
                _Bounded(fh, size),
                resume_size=have,
                headers=headers,
                expected_size=size,
                tqdm_class=progress.bar_class(),
            )
        except httpx2.ReadError:
            tries = 1 if fh.tell() > have else tries + 1
            if tries >= CUT_TRIES:
                raise
            time.sleep(1)  # as http_get waits before it asks again


class _Bounded:
    """The partial blob as http_get writes it, refusing a write past `size` bytes of the file: http_get compares
    the size only once the body ends, and a body that never ended filled the disk."""

    class Past(Exception):
        pass

    def __init__(self, fh, size: int):
        self.fh, self.size = fh, size

    def write(self, data) -> int:
        if self.fh.tell() + len(data) > self.size:
            raise self.Past
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)


def _cut_off(e: BaseException) -> bool:
    import httpx2

    return isinstance(e, (httpx2.RemoteProtocolError, httpx2.ReadError))


def _bad_location(e: BaseException) -> bool:
    """httpx's error for a redirect whose Location is no URL (`data:…`, `http://[::1/x`)."""
    import httpx2

    return isinstance(e, httpx2.RemoteProtocolError) and "location header" in str(e).lower()


def _matches(path: Path, entry) -> bool:
    """The bytes are the file the hub listed: an LFS file's sha256, any other's git blob id (sha1 of "blob SIZE\\0"
    and the bytes). Checking LFS files only let a damaged tokenizer_config.json into the snapshot for good."""
    if entry.lfs is not None:
        h, want = hashlib.sha256(), entry.lfs.sha256
    else:
        h, want = hashlib.sha1(b"blob %d\0" % path.stat().st_size), entry.blob_id
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest() == want


def hub_error(e: BaseException, repo: str, local: bool = True, revision: str = "main") -> LoadError:
    """One line for each way a fetch fails: missing repo, gated, revision, network, disk; the rest by type. local:
    a folder by that name was looked for first (fetch's local); revision: the one asked for."""
    import httpx2
    from huggingface_hub import errors, get_token

    where = endpoint()
    try:
        token = get_token()
    except (OSError, ValueError):  # its file unreadable (env_files.hf_token said so where the fetch began)
        token = None
    if isinstance(e, errors.GatedRepoError):
        if token:
            return LoadError(f"{repo} is gated and your token has no access: accept its terms at {where}/{repo}")
        return LoadError(f"{repo} is gated: accept its terms at {where}/{repo}, then {LOGIN}")
    if isinstance(e, errors.RepositoryNotFoundError):
        twin = BY_REPO.get(repo.lower())  # 01-ai/yi-6b-chat-4bits: a Yi repo's id in another case
        if twin and twin.repo != repo:
            hint = f"; did you mean {twin.repo}?"
        else:
            hint = "" if token else f"; if it is private, {LOGIN}"
        return LoadError(f"{repo}: {NOT_LOCAL if local else ''}no such model repo on {where}{hint}")
    if isinstance(e, errors.RevisionNotFoundError):
        return LoadError(f"{repo}: no such revision {shown(revision, 100)!r} on {where}")
    if isinstance(e, errors.RemoteEntryNotFoundError):
        return LoadError(f"{repo}: a file listed by the hub is missing on {where}; try again later")
    if isinstance(e, hub_http.WaitTooLong):
        return LoadError(
            f"{repo}: {where} answered HTTP {e.status} and asks to wait {e.wait} s before trying again; try again "
            "later (a partial download continues on the next run)"
        )
    if isinstance(e, hub_http.StartsOver):
        return LoadError(
            f"{repo}: {where} ignores Range requests and closed the connection before a file's end {e.times} times "
            "(each answer started the file over); try again later"
        )
    if isinstance(e, hub_http.TooMuch):
        return LoadError(f"{repo}: {where} does not answer as a Hugging Face Hub does ({e}); check HF_ENDPOINT")
    if isinstance(e, hub_http.AnswerTooLong):
        return LoadError(
            f"{repo}: {where} took over {hub_http.API_S:.0f} s to send one answer of its API "
            f"({_size(e.got)} by then); try again later"
        )
    if isinstance(e, hub_http.TooSlow):
        return LoadError(
            f"{repo}: {where} sends too slowly ({_size(e.got)} in {e.seconds:.0f} s, "
            f"under {_size(hub_http.SLOW_RATE)}/s); "
            "try again later (a partial download continues on the next run)"
        )
    if isinstance(e, errors.HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", "?")
        if status in (401, 403):  # not a gated repo (handled above): a token refused, or a private repo
            why = "your token was refused or has no access to it" if token else f"if it is private, {LOGIN}"
            return LoadError(f"{repo}: {where} refused access (HTTP {status}); {why}")
        return LoadError(f"{repo}: {where} answered HTTP {status}; try again later")
    if isinstance(e, httpx2.TooManyRedirects):  # not a TransportError: its line was httpx's, with the whole URL
        return LoadError(f"{repo}: {where} redirects in a loop (too many redirects); try again later")
    if isinstance(e, httpx2.UnsupportedProtocol):  # a redirect to file:// or ftp://: the hub answered
        return LoadError(f"{repo}: {where} redirects a download to an address that is not http(s); check HF_ENDPOINT")
    if isinstance(e, httpx2.TimeoutException) and not isinstance(e, httpx2.ConnectTimeout):
        return LoadError(
            f"{repo}: {where} stopped answering (timed out waiting for data); try again later "
            "(a partial download continues on the next run)"
        )
    if isinstance(e, (httpx2.TransportError, errors.OfflineModeIsEnabled)):
        where = _failed_at(e) or where  # a download redirected to another host (a CDN) that cannot be reached
        try:
            via = env_files.proxy_for(where) if isinstance(e, httpx2.ConnectError) else None
        except ValueError:  # a redirect's port past 65535: no proxy setting applies to it
            via = None
        return LoadError(
            f"{repo}: cannot reach {where}{f' through {via}' if via else ''} ({e.__class__.__name__}); check the "
            "network, or set "
            "HF_HUB_OFFLINE=1 to use only the cache (a partial download continues on the next run)"
        )
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return LoadError(
            f"{repo}: cannot write into {cache_root()} ({os.strerror(e.errno)}); free some space or "
            "point HF_HUB_CACHE at a larger disk (the partial download is kept and continues)"
        )
    if isinstance(e, OSError) and "Consistency check failed" in str(e):
        return LoadError(f"{repo}: a download ended short of its size; run again to continue it")
    if isinstance(e, OSError):
        return LoadError(f"{repo}: cannot download into {cache_root()} ({e.strerror or e})")
    return LoadError(f"{repo}: download failed ({e.__class__.__name__}: {e})")


def _failed_at(e: BaseException) -> str | None:
    """The scheme://host[:port] a request that failed went to, where it is not the hub's (a redirect's); else None."""
    try:
        url = e.request.url
    except (AttributeError, RuntimeError):  # no request attached
        return None
    hub = urlparse(endpoint())
    try:
        same = (url.scheme, url.host, url.port) == (hub.scheme, hub.hostname, hub.port)
    except ValueError:
        same = False
    return None if same else env_files.hidden_login(f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}")


def scan() -> list[tuple[str, Path | None, int | None, str | None]]:
    """(repo id, snapshot path, size on disk, why it cannot be read) of each model repo in the hub cache: its main
    ref's snapshot, else its newest; a repo with no snapshot yet, only partial blobs (a pull killed in its first
    file), gives its own folder, which holds no config: a download cut short. Read here rather than with
    huggingface_hub's scan_cache_dir, which leaves out (with a warning) a repo whose snapshot links a missing blob or
    whose ref ends in a newline: `yi-chat models` lost them without a word. A repo whose folders cannot be read is
    there with the reason (no snapshot), one whose blobs cannot be counted with no size (both were left out)."""
    root = cache_root()
    try:
        folders = sorted((d for d in root.iterdir() if d.name.startswith("models--")), key=lambda d: d.name.lower())
    except FileNotFoundError:
        return []
    except OSError as e:
        raise LoadError(f"{root}: cannot read the Hugging Face cache ({e.strerror or e})") from None
    out = []
    for d in folders:
        repo = repo_of(d)
        try:
            snap = cached_snapshot(repo) if repo else None
            if snap is None:
                snap = _newest(d)
            if snap is None and _partial(d):
                snap = d
        except (OSError, LoadError) as e:
            why = str(e) if isinstance(e, LoadError) else f"{d}: cannot read the Hugging Face cache ({e.strerror or e})"
            if repo:
                out.append((repo, None, None, why))
            continue
        try:
            size = (
                sum(b.stat().st_size for b in (d / "blobs").iterdir() if b.is_file()) if (d / "blobs").is_dir() else 0
            )
        except OSError:  # listed without its size, as -m still loads it
            size = None
        if snap is not None and repo is None:  # models--gpt2, as huggingface_hub names an id with no owner: a None
            # in its place was an internal error of `models` and of shell completion
            name = d.name.removeprefix("models--")
            out.append((name, None, size, f"{name} is no ORG/NAME hub id yi-chat fetches; -m {snap} opens the folder"))
        elif snap is not None:
            out.append((repo, snap, size, None))
    return out


def _newest(folder: Path) -> Path | None:
    """The newest snapshot of a repo's cache folder, None where it has none."""
    if not (folder / "snapshots").is_dir():
        return None
    return max(
        (s for s in (folder / "snapshots").iterdir() if s.is_dir()), key=lambda s: s.stat().st_mtime, default=None
    )


def missing(snap: Path, allow_pickle: bool = True) -> list[str]:
    """The files yi-chat reads (wanted) that a snapshot links to a blob no longer there (deleted or moved since they
    were fetched). Others (a README another tool fetched) are no loss, and no fetch of ours would bring them back."""
    try:
        links = [p.name for p in snap.iterdir() if p.is_symlink() and not p.exists()]  # only top-level ones are read
    except OSError:
        return []
    return sorted(name for name in links if wanted(name, allow_pickle))


def damaged(snap: Path) -> bool:
    """A snapshot that links a file its blob no longer backs (deleted or moved since it was fetched)."""
    return bool(missing(snap))


def usable(repo: str, snap: Path | None, allow_pickle: bool = False) -> bool:
    """Whether the cached snapshot serves as it is, without the network: complete, and no file of it gone from the
    cache since (complete() looks at what it links: a snapshot whose tokenizer blob was deleted was loaded
    and failed as "cannot load the tokenizer"). A damaged one is fetched again, as one cut short is; offline, where
    nothing can fetch it, it is a LoadError naming what is missing and the pull that brings it back (fetch's own
    offline line would call the model not in the cache at all)."""
    if snap is None:
        return False
    gone = missing(snap, allow_pickle)
    if gone and offline():
        raise LoadError(
            f"{repo}: {', '.join(gone)} {'is' if len(gone) == 1 else 'are'} missing from the Hugging Face cache "
            f"({snap}), and HF_HUB_OFFLINE=1 forbids fetching {'it' if len(gone) == 1 else 'them'} again "
            f"(`yi-chat pull {repo}` does, online)"
        )
    return not gone and complete(snap)


def _size(n: float) -> str:
    from rich.filesize import decimal

    return decimal(int(n))


class Progress:
    """yi-chat's one download display: a rich bar (size, speed, time left) on a terminal, else one line per file
    on stderr. huggingface_hub's tqdm bars never show: http_get is handed bar_class(), which reports here."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.live = None
        self.opened = False
        self.waited = self.fetched = False  # waited on another process's lock; fetched a file itself
        self.t0 = self.t_file = time.monotonic()
        self.total = self.done_bytes = self.file_bytes = self.file_have = 0
        self.lost = 0  # bytes that were here when the pull started, fetched again: the hub ignored a Range request

    def start(self, repo: str, files: list[tuple[str, int, int]]) -> None:
        """Nothing shows yet: a repo that turns out gated or missing at its first file gets only its error line."""
        self.repo, self.files = repo, files
        self.t0 = time.monotonic()
        self.total = sum(size for _, size, _ in files)
        self.done_bytes = sum(have for _, _, have in files)

    def _open(self) -> None:
        resumed = f", {_size(self.done_bytes)} already here" if self.done_bytes else ""
        if self.stream.isatty():
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import Progress as Bar

            from ..progress import rewrap_safe, stage_column

            self.live = Bar(
                stage_column(),  # a long file name is cut: the line wrapped its size onto a second row at 60 columns
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=terminal.console(file=self.stream),
                transient=True,
            )
            self.task = self.live.add_task(self.repo, total=self.total, completed=self.done_bytes)
            rewrap_safe(self.live).start()
        n = len(self.files)
        self._line(f"fetching {self.repo}: {n} file{'s' * (n != 1)}, {_size(self.total)}{resumed} -> {cache_root()}")
        self.opened = True

    def file(self, name: str, size: int, have: int) -> None:
        if not self.opened:
            self._open()
        self.fetched = True
        self.t_file, self.file_bytes, self.file_have = time.monotonic(), size, have
        if self.live is not None:
            self.live.update(self.task, description=shown(name, 1000))  # the hub's name: its escapes made visible

    def waiting(self, name: str) -> None:
        if not self.opened:  # the first file it has to fetch is the other's: what this pull is, first
            self._open()
        self.waited = True
        self._line(f"{name}: another process is fetching it (its lock is held); waiting for it to finish")

    def restarted(self, initial: int) -> None:
        """huggingface_hub's bar for the file starts at `initial` bytes: below what was here (a hub that ignored the
        Range request sent the whole file, which is written again from its start), the file is not resumed; it said
        "resumed at N kB" and counted the N kB as not fetched."""
        if initial < self.file_have:
            self.lost += self.file_have - initial
            self.advance(initial - self.file_have)
            self.file_have = initial

    def advance(self, n: int) -> None:
        self.done_bytes += n
        if self.live is not None:
            self.live.update(self.task, advance=n)

    def file_done(self, name: str) -> None:
        if self.live is None:
            dt = max(time.monotonic() - self.t_file, 1e-6)
            got = self.file_bytes - self.file_have
            resumed = f" (resumed at {_size(self.file_have)})" if self.file_have else ""
            self._line(f"  {name}  {_size(self.file_bytes)}  {_size(got / dt)}/s{resumed}")

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def kept(self, repo: str) -> None:
        """A fetch stopped (Ctrl-C) after some bytes: they stay in the cache, and a pull continues from them."""
        if self.opened and self.done_bytes:
            self._line(
                f"{repo}: stopped at {_size(self.done_bytes)} of {_size(self.total)}; what was fetched is kept, and "
                f"`yi-chat pull {repo}` (or this command again) continues from there"
            )

    def done(self, repo: str) -> None:
        if self.opened:
            dt = max(time.monotonic() - self.t0, 1e-6)
            had = sum(have for _, _, have in self.files) - self.lost  # resumed: "114.0 MB in 7.4 s" counted them
            now = f", {_size(self.total - had)} of it fetched" if had else ""
            if self.waited and not self.fetched:  # it said ready without a line before (a second pull at once)
                now = ", fetched by another process"
            self._line(f"{repo} ready ({_size(self.total)}{now} in {dt:.1f} s)")

    def _line(self, text: str) -> None:
        text = shown(text, 2000)  # file names are the hub's: an escape sequence or a new line in one ran or forged
        if self.live is not None:
            # as written: a file's name may hold `[b]`, `[/x]` (rich markup, an error) or `:x:` (an emoji code)
            self.live.console.print(f"yi-chat: {text}", highlight=False, markup=False, emoji=False)
            return
        try:
            print(f"yi-chat: {text}", file=self.stream, flush=True)
        except OSError:
            pass

    def bar_class(self):
        """A tqdm stand-in for huggingface_hub's http_get: byte counts go to this display."""
        owner = self

        class Bar:
            def __init__(self, *args, initial=0, **kwargs):
                owner.restarted(int(initial or 0))

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def update(self, n=1):
                owner.advance(int(n or 0))

            def close(self):
                pass

        return Bar


class _Quiet(Progress):
    """The display of the index's fetch before the others (tens of kB): no "fetching" line, bar or line of its own;
    a wait (another process's lock, a hub's 429) is said as for any file (it waited in silence)."""

    def _open(self) -> None:
        self.opened = True

    def file_done(self, name: str) -> None:
        pass
