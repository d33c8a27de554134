"""Fetching over real HTTP from a loopback fake Hub (tests/hub_server.py) with the real huggingface_hub client:
fetch + chat, resume after a dropped connection and after Ctrl-C, offline reruns, missing / gated / pickle-only
repos, a full disk, an unreachable hub; `yi-chat models`. HF_HOME / HF_HUB_CACHE are tmp dirs: never the network."""

import contextlib
import hashlib
import io
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hub_server import FakeHub, Repo

NEEDED = {
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "model.safetensors",
}
PARIS = [
    "--temperature",
    "0",
    "--repetition-penalty",
    "1",
    "--max-new-tokens",
    "24",
    "-p",
    "What is the capital of France?",
]


@pytest.fixture(scope="module")
def demo_files(demo_dir):
    files = {f.name: f.read_bytes() for f in demo_dir.iterdir() if f.is_file()}
    # Files yi-chat must leave on the hub: a README, pickle weights, a sub-folder, GGUF.
    files.update(
        {
            "README.md": b"# tiny chat\n",
            "pytorch_model.bin": b"pickle!" * 100,
            "onnx/model.onnx": b"onnx",
            "tiny.Q4_0.gguf": b"gguf",
        }
    )
    return files


@pytest.fixture
def hub(demo_files):
    with FakeHub() as h:
        h.repos["acme/tiny-chat"] = Repo(demo_files)
        h.repos["acme/gated"] = Repo(demo_files, gated=True)
        h.repos["acme/pickle-only"] = Repo(
            {
                "config.json": demo_files["config.json"],
                "tokenizer.json": demo_files["tokenizer.json"],
                "pytorch_model.bin": b"pickle!" * 100,
            }
        )
        h.tokens.add("hf_secret")
        yield h


@pytest.fixture
def env(tmp_path, hub):
    e = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    e.update(
        HF_HOME=str(tmp_path / "hf"),
        HF_HUB_CACHE=str(tmp_path / "hf" / "hub"),
        HF_ENDPOINT=hub.url,
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    return e


def yi(env, *args, timeout=600, **kw):
    return subprocess.run(
        [sys.executable, "-m", "yi_cli", *args],
        capture_output=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
        **kw,
    )


def repo_dir(env, repo="acme/tiny-chat"):
    from pathlib import Path

    return Path(env["HF_HUB_CACHE"]) / ("models--" + repo.replace("/", "--"))


def snapshot(env, repo="acme/tiny-chat"):
    d = repo_dir(env, repo)
    return d / "snapshots" / (d / "refs" / "main").read_text()


def error_line(p, code, *needles):
    err = p.stderr.decode()
    assert p.returncode == code, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    for n in needles:
        assert n in lines[-1], err
    return lines


@pytest.mark.slow
def test_fetch_then_chat_answers_paris_then_offline_rerun_and_models_lists_it(hub, env, demo_files):
    p = yi(env, "-m", "acme/tiny-chat", *PARIS)
    err = p.stderr.decode()
    assert p.returncode == 0, err
    assert "Paris" in p.stdout.decode()
    assert "fetching acme/tiny-chat: 6 files" in err and "model.safetensors  114.0 MB" in err
    assert "it/s" not in err and "%|" not in err  # no tqdm bar from huggingface_hub
    got = {r[1].split("/resolve/")[1].split("/", 1)[1] for r in hub.requests("GET", "") if "/resolve/" in r[1]}
    assert got == NEEDED  # README, .bin, sub-folders and GGUF stay on the hub
    snap = snapshot(env)
    assert {f.name for f in snap.iterdir()} == NEEDED
    assert (snap / "model.safetensors").read_bytes() == demo_files["model.safetensors"]

    # Offline: from the cache, and not one request.
    n = len(hub.log)
    p = yi({**env, "HF_HUB_OFFLINE": "1"}, "-m", "acme/tiny-chat", *PARIS)
    assert p.returncode == 0, p.stderr.decode()
    assert "Paris" in p.stdout.decode()
    assert "fetching" not in p.stderr.decode()
    assert len(hub.log) == n

    rows = json.loads(yi({**env, "HF_HUB_OFFLINE": "1"}, "models", "--json").stdout)
    row = next(r for r in rows if r["name"] == "acme/tiny-chat")
    assert row["source"] == "hub" and row["loadable"] and row["format"] == "AWQ int4"
    assert row["context"] == 8192 and 130e6 < row["params"] < 140e6 and row["size"] > 100e6
    assert len(hub.log) == n


def test_an_update_fetches_and_counts_only_the_files_that_changed(hub, env, demo_files):
    """A new commit that changed one small file: the unchanged ones are linked from the cache, and the header, the
    done line and the space check counted them (6 files, 117.5 MB) as if fetched again."""
    assert yi(env, "pull", "acme/tiny-chat").returncode == 0
    files = {**demo_files, "generation_config.json": demo_files["generation_config.json"] + b"\n"}
    hub.repos["acme/tiny-chat"] = Repo(files)
    p = yi(env, "pull", "acme/tiny-chat")
    err = p.stderr.decode()
    assert p.returncode == 0, err
    n = len(files["generation_config.json"])
    assert f"fetching acme/tiny-chat: 1 file, {n} bytes -> " in err and f"acme/tiny-chat ready ({n} bytes in " in err
    assert len(hub.requests("GET", "/model.safetensors")) == 1  # fetched once, by the first pull
    snap = snapshot(env)
    assert {f.name for f in snap.iterdir()} == NEEDED
    assert (snap / "generation_config.json").read_bytes() == files["generation_config.json"]


def test_pull_resumes_a_connection_dropped_mid_file(hub, env, demo_files):
    hub.drop["model.safetensors"] = 40_000_000
    p = yi(env, "pull", "acme/tiny-chat")
    assert p.returncode == 0, p.stderr.decode()
    gets = hub.requests("GET", "/model.safetensors")
    assert len(gets) == 2 and gets[0][2] is None
    start = int(gets[1][2].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 40_000_000  # continued where the connection died, not from zero
    snap = snapshot(env)
    assert p.stdout.decode().strip() == str(snap)
    assert (snap / "model.safetensors").read_bytes() == demo_files["model.safetensors"]


def test_a_link_that_drops_every_few_mb_still_finishes(hub, env, demo_files):
    """Each GET of the weights cut after 9 MB: huggingface_hub wrote whole 10 MiB chunks, so every retry began at 0
    and the pull failed with "run again to continue it" that continued nothing. What arrives is kept now."""
    hub.drop_always["model.safetensors"] = 9_000_000
    p = yi(env, "pull", "acme/tiny-chat")
    assert p.returncode == 0, p.stderr.decode()
    starts = [
        int(g[2].removeprefix("bytes=").rstrip("-")) if g[2] else 0 for g in hub.requests("GET", "/model.safetensors")
    ]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)  # each retry further on
    assert (snapshot(env) / "model.safetensors").read_bytes() == demo_files["model.safetensors"]


def test_ctrl_c_mid_file_leaves_nothing_trusted_and_the_next_run_continues(hub, env, demo_files):
    from yi_cli.checkpoint.hub import CHUNK

    hub.hold["model.safetensors"] = 25_000_000
    written = 25_000_000 // CHUNK * CHUNK  # the client writes whole chunks
    blobs = repo_dir(env) / "blobs"
    part = blobs / (hashlib.sha256(demo_files["model.safetensors"]).hexdigest() + ".incomplete")
    proc = subprocess.Popen(
        [sys.executable, "-m", "yi_cli", "pull", "acme/tiny-chat"],
        env={**env, "HF_HUB_DOWNLOAD_TIMEOUT": "300"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert hub.held.wait(timeout=300)
        deadline = time.monotonic() + 120
        while not (part.is_file() and part.stat().st_size >= written) and time.monotonic() < deadline:
            time.sleep(0.05)  # the bytes are sent; wait for the client to have written them
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        hub.release.set()
        proc.kill()
    assert proc.returncode == 130, err.decode()
    assert err.decode().splitlines()[-1] == "yi-chat: interrupted"
    # "interrupted" alone left it to guess whether the 25 MB were lost: the line before says they are kept
    kept = err.decode().splitlines()[-2]
    assert kept.startswith("yi-chat: acme/tiny-chat: stopped at ") and " of 117.5 MB; what was fetched is kept" in kept
    assert kept.endswith("`yi-chat pull acme/tiny-chat` (or this command again) continues from there"), kept
    assert not list((repo_dir(env) / "snapshots").glob("*/model.safetensors"))  # no later run trusts half a file
    have = part.stat().st_size
    assert have >= written and not (blobs / part.stem).exists()

    p = yi({**env, "HF_HUB_OFFLINE": "1"}, "-m", "acme/tiny-chat", "-p", "hi")  # offline: incomplete = missing
    error_line(p, 3, "HF_HUB_OFFLINE=1")
    listed = yi({**env, "HF_HUB_OFFLINE": "1"}, "models", "--json")
    [row] = [r for r in json.loads(listed.stdout) if r["name"] == "acme/tiny-chat"]
    assert not row["loadable"] and "`yi-chat pull acme/tiny-chat` continues it" in row["reason"], row

    p = yi(env, "pull", "acme/tiny-chat")
    assert p.returncode == 0, p.stderr.decode()
    assert "(resumed at " in p.stderr.decode()
    # the ready line counts what this run fetched apart from the whole (it said the whole "in N s")
    ready = re.search(r"acme/tiny-chat ready \(([\d.]+ \w+), ([\d.]+ \w+) of it fetched in ", p.stderr.decode())
    unit = {"bytes": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}
    whole, now = (float(x.split()[0]) * unit[x.split()[1]] for x in ready.groups()) if ready else (0, 0)
    assert ready and whole - now >= have - 2e5, p.stderr.decode()  # (rich shows a size to 0.1 MB)
    assert hub.requests("GET", "/model.safetensors")[-1][2] == f"bytes={have}-"
    assert (snapshot(env) / "model.safetensors").read_bytes() == demo_files["model.safetensors"]
    assert not part.exists()


def test_a_listing_that_gives_each_file_many_times_fetches_each_once(hub, env, demo_files):
    """A listing repeated 50 times was 300 files, 50 HEADs of each, and a space check and a size 50 times too big;
    the same name listed as two different files is one line."""
    hub.repeat = 3
    p = yi(env, "pull", "acme/tiny-chat")
    assert p.returncode == 0, p.stderr.decode()
    assert f"fetching acme/tiny-chat: {len(NEEDED)} files, " in p.stderr.decode()
    assert len(hub.requests("HEAD", "/model.safetensors")) == 1 and len(hub.requests("GET", "/model.safetensors")) == 1
    hub.repeat = 1
    hub.repos["acme/twice"] = Repo(demo_files)
    hub.extra = [{**hub.repos["acme/twice"].entry("tokenizer.json"), "size": len(demo_files["tokenizer.json"]) + 1}]
    p = yi(env, "pull", "acme/twice")
    assert p.returncode == 3 and "lists tokenizer.json twice, as two different files" in p.stderr.decode(), p.stderr


@pytest.mark.parametrize("path", [5, None, ["config.json"]], ids=["number", "null", "list"])
def test_a_listing_whose_file_path_is_not_text_is_one_line(hub, env, path):
    """`"path": 5` in the file listing was an internal error (TypeError: argument of type 'int' is not iterable)."""
    hub.path_of["tokenizer.json"] = path
    p = yi(env, "pull", "acme/tiny-chat")
    assert p.returncode == 3, p.stderr.decode()
    (line,) = p.stderr.decode().splitlines()
    assert "does not answer as a Hugging Face Hub does" in line and "internal error" not in line, line


def test_a_cached_repo_whose_index_names_no_file_is_listed_as_not_loadable(hub, env, demo_files):
    """A pulled repo whose model.safetensors.index.json gives a shard as a number (or a name too long for a file)
    broke `yi-chat models` as a whole (internal error: TypeError, OSError ENAMETOOLONG) and `-m` of it."""
    for name, shard in (("acme/num", 5), ("acme/long", "x" * 300 + ".safetensors")):
        files = dict(demo_files)
        files["model.safetensors.index.json"] = json.dumps({"weight_map": {"lm_head.weight": shard}}).encode()
        hub.repos[name] = Repo(files)
        assert yi(env, "pull", name).returncode == 3
    assert yi(env, "pull", "acme/tiny-chat").returncode == 0
    listed = yi(env, "models")
    assert listed.returncode == 0 and "internal error" not in listed.stderr.decode(), listed.stderr.decode()
    assert "acme/tiny-chat" in listed.stdout.decode()
    for name in ("acme/num", "acme/long"):
        p = yi({**env, "HF_HUB_OFFLINE": "1"}, "-m", name, "-p", "hi")
        assert p.returncode == 3 and "internal error" not in p.stderr.decode(), p.stderr.decode()


def test_a_listing_that_lies_about_a_cached_files_size_never_deletes_it(hub, env):
    """A new commit whose listing gave the cached weights' id another size (its HEAD agreeing) had the checked blob
    deleted: the complete snapshot before it lost its weights, and `-m` of it failed offline. The blob is kept."""
    assert yi(env, "pull", "acme/tiny-chat").returncode == 0
    hub.sha = "1" * 40  # main moves to a commit whose listing lies
    hub.size_of["model.safetensors"] = hub.head_size["model.safetensors"] = 100
    p = yi(env, "pull", "acme/tiny-chat")
    assert p.returncode == 3, p.stderr.decode()
    assert "lists 100 bytes for it, but the file its id names is in the cache, checked" in p.stderr.decode()
    offline = yi({**env, "HF_HUB_OFFLINE": "1"}, "-m", "acme/tiny-chat", "-p", "hi", "--max-new-tokens", "2")
    assert offline.returncode == 0, offline.stderr.decode()


def test_a_hubs_file_names_and_config_reach_the_terminal_with_their_escapes_visible(hub, env, demo_files):
    """A file name in the listing holding an escape sequence and a new line was printed raw by the progress lines
    (a window title set, and a line `yi-chat: fake ...` forged), and so was config.json's dtype in the summary."""
    files = dict(demo_files)
    files["model\x1b]2;PWNED\x07\nyi-chat: fake.safetensors"] = files.pop("model.safetensors")
    cfg = json.loads(files["config.json"])
    cfg["torch_dtype"] = cfg["dtype"] = "float16\x1b[41mX\nyi-chat: injected"
    files["config.json"] = json.dumps(cfg).encode()
    hub.repos["acme/esc"] = Repo(files)
    p = yi(env, "pull", "acme/esc")
    err = p.stderr.decode()
    assert "\x1b" not in err and "\x07" not in err, err
    assert not any(line.startswith(("yi-chat: fake", "yi-chat: injected")) for line in err.splitlines()), err
    assert "model\\x1b]2;PWNED\\x07\\nyi-chat: fake.safetensors" in err  # the name, as the other lines show it


@pytest.mark.parametrize("other", ["gives up", "finishes it"])
def test_a_pull_waiting_on_another_says_so_then_finishes(hub, env, demo_files, other):
    """A file another process is fetching (its blob's lock held): one line says so, then the pull waits and ends.
    Where that file was all a pull had left to fetch (a second `pull` started while the first fetched the
    weights), its waiting line came with no header before it and no ready line after: both are said."""
    import threading

    from huggingface_hub.utils import WeakFileLock

    etag = hashlib.sha256(demo_files["model.safetensors"]).hexdigest()
    lock = repo_dir(env).parent / ".locks" / repo_dir(env).name / f"{etag}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    if other == "finishes it":  # the first pull has fetched all but the weights: they are all the second fetches
        hub.drop_always["model.safetensors"] = 100_000  # under a chunk: no retry gets further
        assert yi(env, "pull", "acme/tiny-chat").returncode == 3
        del hub.drop_always["model.safetensors"]
    said = threading.Event()
    with WeakFileLock(lock):
        proc = subprocess.Popen(
            [sys.executable, "-m", "yi_cli", "pull", "acme/tiny-chat"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines = []

        def read():
            for line in proc.stderr:
                lines.append(line)
                if "another process is fetching it" in line:
                    said.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            assert said.wait(timeout=300), "".join(lines)
            assert proc.poll() is None  # still waiting on the lock
            if other == "finishes it":  # as the other process does: the whole blob in place, then the lock let go
                blobs = repo_dir(env) / "blobs"
                (blobs / f"{etag}.incomplete").unlink(missing_ok=True)
                (blobs / etag).write_bytes(demo_files["model.safetensors"])
        except BaseException:
            proc.kill()
            raise
    assert proc.wait(timeout=300) == 0, "".join(lines)
    reader.join(timeout=60)
    waiting = "model.safetensors: another process is fetching it (its lock is held); waiting for it to finish"
    assert f"yi-chat: {waiting}\n" in lines
    assert lines[0].startswith("yi-chat: fetching acme/tiny-chat: "), lines  # the header first
    [ready] = [ln for ln in lines if ln.startswith("yi-chat: acme/tiny-chat ready (")]
    assert ("fetched by another process" in ready) == (other == "finishes it"), ready
    assert (snapshot(env) / "model.safetensors").read_bytes() == demo_files["model.safetensors"]


def test_a_connection_cut_mid_file_on_every_retry_says_so_and_a_next_run_fetches_it(hub, env, demo_files):
    """The hub was reached and then closed the connection mid-file, on every retry (less than a chunk each time:
    no progress, so huggingface_hub's retries end): the line says so, not "cannot reach"; the next run fetches it."""
    hub.drop_always["model.safetensors"] = 100_000  # under a chunk (hub.CHUNK)
    p = yi(env, "pull", "acme/tiny-chat")
    error_line(p, 3, "closed the connection mid-download", "run again to continue it")
    assert "cannot reach" not in p.stderr.decode()
    del hub.drop_always["model.safetensors"]
    p = yi(env, "pull", "acme/tiny-chat")
    assert p.returncode == 0, p.stderr.decode()
    assert (snapshot(env) / "model.safetensors").read_bytes() == demo_files["model.safetensors"]


def test_a_hub_that_ignores_range_and_cuts_every_answer_says_so(hub, env, demo_files):
    """A hub that ignores Range (200, the whole file) and closes every answer at the same byte: each retry brought
    more than a chunk (progress, to huggingface_hub's retries) and was thrown away as the next answer started over,
    so the pull never ended (a hostile-hub hunt: 177 requests in 3 minutes). A few restarts are one line, exit 3."""
    hub.ranges = False
    hub.drop_always["model.safetensors"] = 300_000  # over a chunk (hub.CHUNK): progress each time
    p = yi(env, "pull", "acme/tiny-chat", timeout=120)  # without the fix: TimeoutExpired
    error_line(p, 3, "ignores Range requests and closed the connection before a file's end 4 times", "try again later")
    del hub.drop_always["model.safetensors"]
    p = yi(env, "pull", "acme/tiny-chat")  # the whole file, from its start
    assert p.returncode == 0, p.stderr.decode()
    assert (snapshot(env) / "model.safetensors").read_bytes() == demo_files["model.safetensors"]
    # it said "(resumed at 262.1 kB)" and "114.0 MB, 113.7 MB of it fetched" of the file sent whole again
    err = p.stderr.decode()
    assert "resumed at" not in err and "of it fetched" not in err and re.search(r"tiny-chat ready \([\d.]+ MB in ", err)


def test_a_hub_asking_to_wait_an_hour_says_so_at_once(hub, env):
    """A 429 with `Retry-After: 3600` on the weights: huggingface_hub waited what the hub asked, five times over, with
    no line (a pull silent for hours); a wait that long is one line at once."""
    hub.fail["model.safetensors"] = status = 429
    hub.retry_after = "3600"
    p = yi(env, "pull", "acme/tiny-chat", timeout=120)  # without the fix: TimeoutExpired
    lines = error_line(p, 3, f"answered HTTP {status} and asks to wait 3600 s before trying again", "try again later")
    assert "Traceback" not in p.stderr.decode() and lines[-1].count("yi-chat:") == 1
    hub.retry_after = None
    del hub.fail["model.safetensors"]
    assert yi(env, "pull", "acme/tiny-chat").returncode == 0


@pytest.mark.parametrize("retry_after", ["1", None])
def test_a_hub_asking_to_wait_a_little_is_said_and_the_pull_goes_on(hub, env, demo_files, retry_after):
    """A 429 with `Retry-After: 10` (or none: huggingface_hub's own backoff) held the pull silent while it waited and
    retried, up to a minute over its five retries: each retry is one line saying why nothing moves."""
    hub.fail_once["model.safetensors"] = 429
    hub.retry_after = retry_after
    p = yi(env, "pull", "acme/tiny-chat")
    assert p.returncode == 0, p.stderr.decode()
    err = p.stderr.decode()
    then = " and asks to wait 1 s; retrying" if retry_after else "; retrying in 1 s"
    assert f"yi-chat: acme/tiny-chat: {hub.url} answered HTTP 429{then} (retry 1 of 5)\n" in err, err
    assert err.count("HTTP 429") == 1 and "Traceback" not in err and "Rate limited" not in err, err
    assert (snapshot(env) / "model.safetensors").read_bytes() == demo_files["model.safetensors"]


@pytest.mark.parametrize("name", ["tokenizer_config.json", "model.safetensors"])
def test_a_file_whose_bytes_are_not_what_the_hub_lists_is_refused_and_fetched_again(hub, env, demo_files, name):
    """Bytes of the listed size that are not the listed file (a proxy, a broken mirror): only LFS weights were
    checked, so a tokenizer_config.json entered the snapshot, `pull` and `models` called the model ready, every chat
    failed on it and no pull repaired it. Non-LFS files are checked against their git blob id."""
    good = demo_files[name]
    hub.corrupt[name] = good[:-10] + b"X" * 10
    error_line(yi(env, "pull", "acme/tiny-chat"), 3, f"{name}: the download does not match its checksum")
    assert not list((repo_dir(env) / "snapshots").glob(f"*/{name}"))
    del hub.corrupt[name]
    p = yi(env, "pull", "acme/tiny-chat")
    assert p.returncode == 0, p.stderr.decode()
    assert (snapshot(env) / name).read_bytes() == good


def test_a_file_longer_than_the_hub_lists_is_not_called_cut_short(hub, env, demo_files):
    """The hub sent more bytes of the weights than it lists: the line said the download "ended short of its size"
    and that running again continues it, where each run starts it over. It says what came, and keeps nothing."""
    n = len(demo_files["model.safetensors"])
    hub.corrupt["model.safetensors"] = demo_files["model.safetensors"] + b"EXTRA"
    want = f"acme/tiny-chat/model.safetensors: {hub.url} sent more than the {n} bytes it lists (discarded"
    error_line(yi(env, "pull", "acme/tiny-chat"), 3, want)
    assert not list((repo_dir(env) / "blobs").glob("*.incomplete"))


@pytest.mark.parametrize("where", ["file:///etc/passwd", "ftp://127.0.0.1/x"])
def test_a_redirect_to_another_scheme_does_not_blame_the_network(hub, env, where):
    """It said "cannot reach <hub> (UnsupportedProtocol); check the network", of the hub that had just answered."""
    hub.moved["model.safetensors"] = where
    error_line(
        yi(env, "pull", "acme/tiny-chat"),
        3,
        f"acme/tiny-chat: {hub.url} redirects a download to an address that is not http(s); check HF_ENDPOINT",
    )


def test_a_redirect_loop_is_named_as_one(hub, env):
    """The weights' URL redirecting to itself: the line was httpx's "download failed (TooManyRedirects: Exceeded 20
    redirects while resolving '<the whole URL>'.)"; it says the hub redirects in a loop."""
    hub.loop.add("model.safetensors")
    error_line(
        yi(env, "pull", "acme/tiny-chat"), 3, f"acme/tiny-chat: {hub.url} redirects in a loop", "try again later"
    )


def test_a_hub_that_sends_no_etag_is_fetched_by_the_listing(hub, env, demo_files):
    """A mirror or proxy (HF_ENDPOINT) that drops the ETag header: the pull failed with "download failed (TypeError:
    unsupported operand type(s) for /: 'PosixPath' and 'NoneType')". The listing names each blob as well."""
    hub.etags = False
    p = yi(env, "pull", "acme/tiny-chat")
    assert p.returncode == 0, p.stderr.decode()
    blob = repo_dir(env) / "blobs" / hashlib.sha256(demo_files["model.safetensors"]).hexdigest()
    assert (snapshot(env) / "model.safetensors").resolve() == blob and blob.read_bytes() == demo_files[
        "model.safetensors"
    ]


def test_an_hf_endpoint_that_is_not_a_hub_says_so(hub, env):
    """HF_ENDPOINT at a web server that is no hub (a page, 200, for every URL): the line was "download failed
    (JSONDecodeError: Expecting value: line 1 column 1 (char 0))"."""
    hub.not_a_hub = True
    want = f"acme/tiny-chat: {hub.url} does not answer as a Hugging Face Hub does"
    error_line(yi(env, "pull", "acme/tiny-chat"), 3, want, "check HF_ENDPOINT")


def test_full_disk_is_one_line_and_the_partial_file_continues_later(hub, env, demo_files):
    def small_files():  # writes past 20 MB fail with EFBIG, as a full disk fails with ENOSPC
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000_000, 20_000_000))

    p = yi(env, "pull", "acme/tiny-chat", preexec_fn=small_files)
    error_line(p, 3, "acme/tiny-chat: cannot write into", "free some space")
    assert not list((repo_dir(env) / "snapshots").glob("*/model.safetensors"))
    p = yi(env, "pull", "acme/tiny-chat")
    assert p.returncode == 0, p.stderr.decode()
    assert hub.requests("GET", "/model.safetensors")[-1][2] == "bytes=20000000-"
    assert (snapshot(env) / "model.safetensors").read_bytes() == demo_files["model.safetensors"]


def test_missing_repo_exits_3_with_one_line(hub, env):
    lines = error_line(yi(env, "pull", "acme/nope"), 3, "acme/nope: no such model repo", hub.url, "hf auth login")
    assert len(lines) == 1
    lines = error_line(yi(env, "-m", "acme/nope", "-p", "hi"), 3, "acme/nope: not a local directory, and no such")
    assert len(lines) == 1  # -m looked for a folder first


def test_a_yi_repo_id_in_another_case_gets_the_did_you_mean_an_alias_gets(hub, env):
    """`-m 01-ai/yi-6b-chat-4bits` (the alias's case, with the org): "no such model repo" and a hint to log in for a
    private one, where a mistyped alias gets a did-you-mean."""
    for args in (["pull", "01-ai/yi-6b-chat-4bits"], ["-m", "01-ai/yi-6b-chat-4bits", "-p", "hi"]):
        (line,) = error_line(yi(env, *args), 3, "01-ai/yi-6b-chat-4bits: ", "no such model repo on")
        assert line.endswith(f"{hub.url}; did you mean 01-ai/Yi-6B-Chat-4bits?"), line


def test_pull_of_org_name_is_the_hub_repo_where_a_folder_of_that_name_is_here(hub, env, demo_files, tmp_path):
    """`pull acme/tiny-chat` run where ./acme/tiny-chat is a folder: the folder shadowed the hub id (its listing
    called it "fetched, but yi-chat cannot load it", nothing fetched). Now the hub's is fetched, and a line says that
    -m would open the folder; a repo missing on the hub says so, not "not a local directory"."""
    here = tmp_path / "here"
    (here / "acme" / "tiny-chat").mkdir(parents=True)
    (here / "acme" / "nope").mkdir(parents=True)
    p = yi(env, "pull", "acme/tiny-chat", cwd=here)
    err = p.stderr.decode()
    assert p.returncode == 0, err
    assert p.stdout.decode().strip() == str(snapshot(env))
    assert len(hub.requests("GET", "/model.safetensors")) == 1
    assert "acme/tiny-chat: the hub repo; the folder acme/tiny-chat here is not what pull fetches" in err
    assert "-m acme/tiny-chat opens that folder, not this repo" in err
    lines = error_line(yi(env, "pull", "acme/nope", cwd=here), 3, "acme/nope: no such model repo on", "-m acme/nope")
    assert len(lines) == 1 and "not a local directory" not in lines[0]
    # A path is no name to pull: one line, a usage error, whether or not the folder is there.
    error_line(yi(env, "pull", str(here / "acme"), cwd=here), 2, "not a hub id", "a local folder, which pull")


def test_gated_repo_without_token_says_how_to_log_in_and_with_one_fetches(hub, env):
    lines = error_line(yi(env, "-m", "acme/gated", "-p", "hi"), 3, "acme/gated is gated", "hf auth login", "HF_TOKEN")
    assert len(lines) == 1
    assert not list(repo_dir(env, "acme/gated").glob("snapshots/*/*"))
    p = yi({**env, "HF_TOKEN": "hf_secret"}, "pull", "acme/gated")
    assert p.returncode == 0, p.stderr.decode()
    assert all(r[3] for r in hub.requests("GET", "/model.safetensors"))


def test_pickle_only_repo_needs_allow_pickle(hub, env):
    error_line(yi(env, "pull", "acme/pickle-only"), 3, "only pickle (.bin) weights", "--allow-pickle")
    assert not hub.requests("GET", "/pytorch_model.bin")
    p = yi(env, "pull", "--allow-pickle", "acme/pickle-only")  # fetched now; an AWQ config needs safetensors
    error_line(p, 3, "fetched, but yi-chat cannot load it", "no *.safetensors weight files")
    assert len(hub.requests("GET", "/pytorch_model.bin")) == 1


def test_a_hub_that_trickles_its_headers_is_a_timeout_not_a_hang(monkeypatch):
    """A hub that sent its status line, then a header byte every few seconds: each byte reset the read timeout, and
    `pull` (or -m REPO) hung for good (h11's 16 KiB cap on headers was the only end, ~22 hours; a hostile-hub hunt).
    An answer's headers come whole within HEADERS_S or the read times out, as a hub that stops answering does."""
    import threading

    import httpx2
    from huggingface_hub.utils import get_session

    from yi_cli.checkpoint import hub_http

    stop = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            for _ in range(600):  # 60 s of it at most, then headers that end: a request that got through
                if stop.wait(0.1):
                    return
                conn.sendall(b"a")
            conn.sendall(b"\r\nContent-Length: 0\r\n\r\n")

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    monkeypatch.setattr(hub_http, "HEADERS_S", 1.0)
    hub_http.bounded_client()
    try:
        with pytest.raises(httpx2.ReadTimeout):
            get_session().get(f"http://127.0.0.1:{listener.getsockname()[1]}/api/models/acme/x")
    finally:
        stop.set()
        server.join(timeout=70)
        listener.close()


def test_unreachable_hub_and_offline_mode_exit_3(env):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lines = error_line(
        yi({**env, "HF_ENDPOINT": f"http://127.0.0.1:{port}"}, "pull", "acme/tiny-chat"),
        3,
        "cannot reach",
        "HF_HUB_OFFLINE=1",
    )
    assert len(lines) == 1
    lines = error_line(yi({**env, "HF_HUB_OFFLINE": "1"}, "pull", "acme/tiny-chat"), 3, "HF_HUB_OFFLINE=1")
    assert len(lines) == 1


def test_models_lists_unloadable_repos_with_the_reason_and_aliases(hub, env, demo_files, tmp_path):
    bad = dict(demo_files)
    cfg = json.loads(bad["config.json"])
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    bad["config.json"] = json.dumps(cfg).encode()
    hub.repos["acme/bnb"] = Repo(bad)
    error_line(yi(env, "pull", "acme/bnb"), 3, "quantization method 'bitsandbytes' is not supported")
    home = tmp_path / "yi"
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.toml").write_text('[aliases]\nmine = "acme/bnb"\n')
    e = {**env, "YI_CHAT_HOME": str(home)}
    rows = {r["name"]: r for r in json.loads(yi(e, "models", "--all", "--json").stdout)}
    assert not rows["acme/bnb"]["loadable"] and "bitsandbytes" in rows["acme/bnb"]["reason"]
    assert rows["mine"]["source"] == "config alias" and not rows["mine"]["loadable"]
    assert rows["01-ai/Yi-6B-Chat-4bits"]["alias"] == "yi-6b-chat-4bits"
    assert rows["01-ai/Yi-1.5-9B-Chat-16K"]["context"] == 16384
    assert {"demo", "demo-gptq8", "demo-fp32"} <= set(rows)
    table = yi(e, "models", "--all").stdout.decode()
    assert "cannot load" in table and "yi-1.5-9b-chat-16k" in table
    # Aliases reach the loader: offline, the family alias names the hub repo it stands for.
    p = yi({**e, "HF_HUB_OFFLINE": "1"}, "-m", "yi-1.5-9b-chat-16k", "-p", "hi")
    error_line(p, 3, "01-ai/Yi-1.5-9B-Chat-16K: not in the local Hugging Face cache")


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_or_private_repo_says_so_not_try_again_later(hub, env, status):
    hub.refuse["acme/private"] = status
    lines = error_line(yi(env, "pull", "acme/private"), 3, f"refused access (HTTP {status})", "hf auth login")
    assert len(lines) == 1
    error_line(yi({**env, "HF_TOKEN": "hf_wrong"}, "pull", "acme/private"), 3, "your token was refused")


@pytest.mark.parametrize("what", ["no tokenizer", "a config it cannot read"])
def test_a_repo_it_cannot_load_is_refused_before_its_weights_are_fetched(hub, env, demo_files, what):
    files = dict(demo_files)
    if what == "no tokenizer":
        for name in ("tokenizer.json", "tokenizer.model"):
            files.pop(name, None)
        needle = "no tokenizer in the repo"
    else:
        files["config.json"] = b"{"
        needle = "config.json"
    hub.repos["acme/broken"] = Repo(files)
    error_line(yi(env, "pull", "acme/broken"), 3, needle)
    assert not hub.requests("GET", "/model.safetensors")  # 100s of MB (GBs for a real Yi) not fetched for nothing


def fetched_impatiently(monkeypatch, url: str, cache: str | None = None) -> list[str] | None:
    """yi_hub.fetch("acme/tiny-chat") in-process from `url`, the hub's read timeout shortened to 0.5 s: the
    LoadError lines it ended with, or None where it still waits after 60 s."""
    from huggingface_hub import constants, set_client_factory
    from huggingface_hub.utils._http import default_client_factory

    from yi_cli.checkpoint import hub as yi_hub
    from yi_cli.errors import LoadError

    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    if cache is not None:
        monkeypatch.setattr(constants, "HF_HUB_CACHE", cache)
    monkeypatch.setattr(yi_hub.hub_http, "ANSWER_S", 0.5)
    got = []

    def pull():
        try:
            yi_hub.fetch("acme/tiny-chat")
        except LoadError as e:
            got.append(str(e))

    worker = threading.Thread(target=pull, daemon=True)  # without a timeout it would wait for good
    try:
        worker.start()
        worker.join(60)
    finally:
        set_client_factory(default_client_factory)  # no short timeout left behind for other tests
    return None if worker.is_alive() else got


def test_a_hub_that_never_answers_times_out_in_one_line(env, monkeypatch):
    """It accepted the connection and sent nothing: huggingface_hub's client has no timeout, and a pull hung for
    good (in-process here, the timeout shortened)."""
    with socket.socket() as s:  # listens, never accepts: the kernel completes the connection, nothing answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        got = fetched_impatiently(monkeypatch, url)
    assert got is not None, "the fetch still waits on a hub that never answers"
    assert got and got[0].startswith(f"acme/tiny-chat: {url} stopped answering (timed out"), got


def test_a_hub_that_never_answers_the_file_listing_times_out_in_one_line(hub, env, monkeypatch):
    """The model info answered, the listing's GET was read and never answered: huggingface_hub asks the listing's
    pages with timeout=None, which overrode the client's, and a pull sat silent for good (in-process here, the
    timeout shortened)."""
    hub.silent.add("tree")
    try:
        got = fetched_impatiently(monkeypatch, hub.url, env["HF_HUB_CACHE"])
    finally:
        hub.release.set()
    assert got is not None, "the fetch still waits on a listing that never comes"
    assert got and got[0].startswith(f"acme/tiny-chat: {hub.url} stopped answering (timed out"), got
    assert any("/tree/" in r[1] for r in hub.log if r[0] == "GET")  # it did ask for the listing


def test_a_file_the_hub_never_answers_says_each_time_it_is_asked_again(hub, env, monkeypatch, tmp_path):
    """A file's GET read and never answered: huggingface_hub asks again five times, a read timeout each (a minute),
    with nothing said: 6 minutes of silence, then one line. Each time it asks again is said (in-process here, the
    timeout shortened)."""
    from huggingface_hub import constants, set_client_factory
    from huggingface_hub.utils._http import default_client_factory

    from yi_cli.checkpoint import hub as yi_hub
    from yi_cli.errors import LoadError

    hub.silent.add("model.safetensors")
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(yi_hub.hub_http, "ANSWER_S", 0.5)
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 1)  # what a file's GET waits (it said ANSWER_S's)
    said = io.StringIO()
    try:
        with pytest.raises(LoadError) as e:
            yi_hub.fetch("acme/tiny-chat", progress=yi_hub.Progress(said))
    finally:
        set_client_factory(default_client_factory)
        hub.release.set()
    assert str(e.value).startswith(f"acme/tiny-chat: {hub.url} stopped answering (timed out"), e.value
    again = f"yi-chat: acme/tiny-chat: {hub.url} sent nothing for 1 s; asking again"
    assert said.getvalue().count(again) == 5, said.getvalue()


def test_a_hub_that_trickles_bytes_is_one_line_not_a_pull_for_days(hub, env, monkeypatch, tmp_path):
    """A byte a second resets every read timeout: a pull sat on it for good. Under the rate over the window (both
    shortened here, in-process) it is one line (the hub trickles whatever the machine's load)."""
    from huggingface_hub import constants, set_client_factory
    from huggingface_hub.utils._http import default_client_factory

    from yi_cli.checkpoint import hub as yi_hub
    from yi_cli.errors import LoadError

    hub.trickle["model.safetensors"] = 0.05  # 20 bytes a second
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(yi_hub.hub_http, "SLOW_WINDOW_S", 1.0)
    got = []

    def pull():
        try:
            yi_hub.fetch("acme/tiny-chat", progress=yi_hub.Progress(io.StringIO()))
        except LoadError as e:
            got.append(str(e))

    worker = threading.Thread(target=pull, daemon=True)
    try:
        worker.start()
        worker.join(120)
    finally:
        set_client_factory(default_client_factory)
        hub.release.set()  # the trickle ends
    assert not worker.is_alive(), "the fetch still reads a hub that trickles"
    assert got and got[0].startswith(f"acme/tiny-chat: {hub.url} sends too slowly ("), got
    assert "/s); try again later (a partial download continues on the next run)" in got[0], got


def test_an_api_answer_sent_just_fast_enough_ends_in_one_line_not_hours(hub, monkeypatch, tmp_path):
    """The model info sent at 1.5 kB/s passed the rate floor (1 kB/s), and only the 64 MB cap ended it: `pull` sat
    silent for 12 hours. An API answer comes whole within API_S of its headers (shortened here, in-process)."""
    from huggingface_hub import constants, set_client_factory
    from huggingface_hub.utils._http import default_client_factory

    from yi_cli.checkpoint import hub as yi_hub
    from yi_cli.errors import LoadError

    hub.trickle["revision"] = 0.01  # ~300 bytes in ~3 s
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(yi_hub.hub_http, "API_S", 1.0)
    try:
        with pytest.raises(LoadError) as e:
            yi_hub.fetch("acme/tiny-chat", progress=yi_hub.Progress(io.StringIO()))
    finally:
        set_client_factory(default_client_factory)
        hub.release.set()
    assert str(e.value).startswith(f"acme/tiny-chat: {hub.url} took over 1 s to send one answer of its API ("), e.value


def test_a_rate_limit_on_the_model_info_is_waited_out_and_said(hub, env, demo_files):
    """A 429 with `Retry-After: 1` on the model info ended the pull at once ("answered HTTP 429; try again later"),
    where the same answer on a file is waited out: huggingface_hub does not retry that call. yi-chat does."""
    hub.fail_once["revision"] = 429
    hub.retry_after = "1"
    p = yi(env, "pull", "acme/tiny-chat")
    assert p.returncode == 0, p.stderr.decode()
    said = f"acme/tiny-chat: {hub.url} answered HTTP 429 and asks to wait 1 s; retrying (retry 1 of 5)"
    assert said in p.stderr.decode()
    assert [r for r in hub.log if r[0] == "GET" and "/revision/" in r[1]][1:]  # asked again


@pytest.mark.parametrize("size", ["12", None, float("inf"), 1e300, -5, [1]])
def test_a_listed_size_that_is_no_files_is_one_line(hub, env, size):
    """A size "12", null or 1e400 in the listing was an internal error's line (TypeError, OverflowError), 1e300 a
    disk "not enough" for 300 digits of yottabytes. Such a listing is not the hub's: one line naming the file."""
    hub.size_of["config.json"] = size
    lines = error_line(yi(env, "pull", "acme/tiny-chat"), 3, "lists config.json with a size that is no file's (")
    assert len(lines) == 1 and "check HF_ENDPOINT" in lines[0]


def test_a_pull_cut_between_shards_without_an_index_is_not_complete(hub, env, demo_files, tmp_path):
    """Two shards, no index, the second refused: the snapshot held config, tokenizer and one shard and was called
    complete, so `models` and -m said the weights were another model's. The shards' names say two: not complete."""
    from safetensors.numpy import load, save

    tensors = load(demo_files["model.safetensors"])
    names = sorted(tensors)
    half = {n: tensors[n] for n in names[: len(names) // 2]}, {n: tensors[n] for n in names[len(names) // 2 :]}
    files = {k: v for k, v in demo_files.items() if not k.endswith((".safetensors", ".bin"))}
    files.update({f"model-0000{i + 1}-of-00002.safetensors": save(part) for i, part in enumerate(half)})
    hub.repos["acme/split"] = Repo(files)
    hub.fail["model-00002-of-00002.safetensors"] = 500
    error_line(yi(env, "pull", "acme/split"), 3, "answered HTTP 500")
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    row = {r["name"]: r for r in json.loads(yi(offline, "models", "--json").stdout)}["acme/split"]
    assert row["reason"] == "the download is not complete: `yi-chat pull acme/split` continues it", row
    p = yi(offline, "-m", "acme/split", "-p", "hi")
    error_line(p, 3, "the download is not complete", "yi-chat pull acme/split")
    del hub.fail["model-00002-of-00002.safetensors"]
    p = yi(env, "-m", "acme/split", "-p", "hi", "--max-new-tokens", "2")
    assert p.returncode == 0, p.stderr.decode()


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:99999", "http://127.0.0.1:abc", "ftp://hub"])
def test_a_malformed_hf_endpoint_is_one_line_exit_2(env, url):
    for args in (("pull", "acme/tiny-chat"), ("-m", "demo", "-p", "hi"), ("models",)):
        lines = error_line(yi({**env, "HF_ENDPOINT": url}, *args), 2, "HF_ENDPOINT=")
        assert len(lines) == 1


@pytest.mark.parametrize("name", ["", " "])
def test_pull_of_an_empty_name_says_it_is_empty(env, tmp_path, name):
    """`yi-chat pull ''` said ": not a hub id ...; a local folder, which pull does not fetch (-m  opens it)": the
    empty name is the current folder as a path. -m '' and -f '' say it is empty; so does pull."""
    error_line(yi(env, "pull", name, cwd=tmp_path), 2, "pull: the repo name is empty")


def test_what_uses_no_hub_runs_whatever_hf_endpoint_and_config_say(env, tmp_path):
    """`yi-chat sessions`, `completion bash` (`source <(yi-chat completion bash)` in a shell's rc) and every --help
    failed on a malformed HF_ENDPOINT they never use, and `models --help` / `pull --help` on a broken config.toml
    they do not need for it: exit 2 where the help or the listing was asked for."""
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.toml").write_text('modle = "x"\n')
    bad = {**env, "HF_ENDPOINT": "abc", "YI_CHAT_HOME": str(home)}
    asked = (("sessions",), ("sessions", "--help"), ("completion", "bash"), ("models", "--help"), ("pull", "-h"))
    # a start of --help, which argparse takes for it (`models --he` said the config's error: a review)
    for args in (*asked, ("models", "--he"), ("pull", "--hel"), ("models", "--all", "--help")):
        p = yi(bad, *args)
        assert p.returncode == 0 and (p.stdout or args == ("sessions",)), (args, p.stderr.decode())
        assert b"HF_ENDPOINT" not in p.stderr and b"config.toml" not in p.stderr, (args, p.stderr.decode())
    error_line(yi(bad, "models"), 2, "HF_ENDPOINT=abc")  # what uses the hub still says
    error_line(yi({**bad, "HF_ENDPOINT": env["HF_ENDPOINT"]}, "models"), 2, "config.toml")


@pytest.mark.parametrize("url", [" http://127.0.0.1:1", "http://127.0.0.1:1/a b", "http://127.0.0.1:1\t"])
def test_an_hf_endpoint_with_whitespace_is_a_usage_error_not_an_unreachable_hub(env, url):
    """A space pasted before the URL, or one inside it or a tab after it, passed the check: `pull` said it "cannot
    reach" the hub (exit 3) as if the network were down, or "download failed (InvalidURL: ...)"."""
    lines = error_line(yi({**env, "HF_ENDPOINT": url}, "pull", "acme/tiny-chat"), 2, "HF_ENDPOINT=", "whitespace")
    assert len(lines) == 1


@pytest.mark.parametrize("tail", ["/?x=1", "?", "/#a", "#"])
def test_an_hf_endpoint_with_a_query_or_fragment_is_a_usage_error_not_an_unreachable_hub(hub, env, tail):
    """`HF_ENDPOINT=http://127.0.0.1:PORT/?x=1` (or `...#a`) passed the check, and huggingface_hub appended its paths
    after the query or fragment: `pull` said it "cannot reach" a hub that was up (exit 3)."""
    for args in (("pull", "acme/tiny-chat"), ("-m", "acme/tiny-chat", "-p", "hi")):
        lines = error_line(yi({**env, "HF_ENDPOINT": hub.url + tail}, *args), 2, "HF_ENDPOINT=", "query string")
        assert len(lines) == 1
    assert not hub.log


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_damaged_cached_file_is_listed_so_and_pull_fetches_it_again(hub, env, damage):
    """A weights blob truncated or deleted after the fetch: `pull` said all was there (exit 0) and fetched nothing,
    and `models` called the truncated one loadable and left the other out without a word."""
    assert yi(env, "pull", "acme/tiny-chat").returncode == 0
    weights = snapshot(env) / "model.safetensors"
    blob, size = weights.resolve(), weights.stat().st_size
    if damage == "truncated":
        os.truncate(blob, size // 2)
        rows = {r["name"]: r for r in json.loads(yi(env, "models", "--json").stdout)}
        row = rows["acme/tiny-chat"]  # an AWQ checkpoint: its safetensors headers alone read as whole
        assert not row["loadable"] and row["reason"].startswith(f"{weights}: truncated ({size // 2} bytes"), row
    else:
        blob.unlink()
        rows = {r["name"]: r for r in json.loads(yi(env, "models", "--json").stdout)}
        row = rows["acme/tiny-chat"]  # listed, with what to do
        assert not row["loadable"] and "`yi-chat pull acme/tiny-chat` fetches it again" in row["reason"]
    gets = len(hub.requests("GET", "/model.safetensors"))
    p = yi(env, "pull", "acme/tiny-chat")
    assert p.returncode == 0, p.stderr.decode()
    assert len(hub.requests("GET", "/model.safetensors")) == gets + 1
    assert weights.stat().st_size == size
    rows = {r["name"]: r for r in json.loads(yi(env, "models", "--json").stdout)}
    assert rows["acme/tiny-chat"]["loadable"]


@pytest.mark.parametrize("kind", ["FIFO", "character device"])
def test_a_cached_config_that_is_no_file_is_named_not_called_a_download_cut_short(hub, env, kind):
    """A cached config.json whose blob is a FIFO (or a link to /dev/zero): offline, -m REPO said "the download is
    not complete ... `yi-chat pull` online continues it", and `models` listed it so, where -m SNAPSHOT named the
    file and what it is. The pull ended long ago: both say what is wrong with the file."""
    assert yi(env, "pull", "acme/tiny-chat").returncode == 0
    blob = (snapshot(env) / "config.json").resolve()
    blob.unlink()
    os.mkfifo(blob) if kind == "FIFO" else blob.symlink_to("/dev/zero")
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    lines = error_line(yi(offline, "-m", "acme/tiny-chat", "-p", "hi"), 3, "config.json: not a regular file")
    assert len(lines) == 1 and f"(a {kind})" in lines[0] and "not complete" not in lines[0], lines
    rows = {r["name"]: r for r in json.loads(yi(env, "models", "--json").stdout)}
    row = rows["acme/tiny-chat"]
    assert not row["loadable"] and "not complete" not in row["reason"] and f"(a {kind})" in row["reason"], row


def test_an_offline_pull_of_a_truncated_blob_says_the_cache_holds_it_and_what_fetches_it(hub, env):
    """HF_HUB_OFFLINE=1 and a weights blob cut short: `pull` said "fetched, but yi-chat cannot load it: ...;
    `yi-chat pull acme/tiny-chat` fetches it again": nothing was fetched, and the pull named is the one refused. -m
    named that pull too."""
    assert yi(env, "pull", "acme/tiny-chat").returncode == 0
    weights = snapshot(env) / "model.safetensors"
    os.truncate(weights.resolve(), weights.stat().st_size // 2)
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    gets = len(hub.log)
    for args in (("pull", "acme/tiny-chat"), ("-m", "acme/tiny-chat", "-p", "hi")):
        p = yi(offline, *args)
        lines = error_line(p, 3, f"{weights}: truncated (", "HF_HUB_OFFLINE=1 forbids fetching it again")
        assert "(`yi-chat pull acme/tiny-chat` does, online)" in lines[-1] and "fetched," not in lines[-1], lines
        assert not p.stdout
    assert len(hub.log) == gets


def test_models_calls_a_truncated_quantized_checkpoint_damaged_as_chat_does(env, demo_dir, tmp_path):
    """An AWQ folder (a config alias) whose weights file is cut short: `models` read its config and headers only and
    said "ok"; its row names the file, in the words chat's refusal uses."""
    cut = tmp_path / "cut"
    cut.mkdir()
    for f in demo_dir.iterdir():
        if f.name != "model.safetensors":
            (cut / f.name).symlink_to(f)
    with open(demo_dir / "model.safetensors", "rb") as fh:
        (cut / "model.safetensors").write_bytes(fh.read(4_000_000))
    home = tmp_path / "yi"
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.toml").write_text(f'[aliases]\ncut = "{cut}"\n')
    e = {**env, "YI_CHAT_HOME": str(home)}
    rows = {r["name"]: r for r in json.loads(yi(e, "models", "--json").stdout)}
    reason = rows["cut"]["reason"]
    assert not rows["cut"]["loadable"] and reason.startswith(f"{cut / 'model.safetensors'}: truncated (4000000 bytes")
    assert "cannot load: " in yi(e, "models").stdout.decode()
    error_line(yi(e, "-m", "cut", "-p", "hi"), 3, reason)


def test_models_lists_a_quantized_checkpoint_without_importing_torch(env, demo_dir, tmp_path):
    """`yi-chat models` took 2.3 s, 1.4-2 s of it importing torch: quantized.py imported it for reading weights,
    which a listing never does. Listed in a fresh interpreter, an AWQ folder's row is complete and neither torch nor
    transformers is loaded."""
    home = tmp_path / "yi"
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.toml").write_text(f'[aliases]\nawq = "{demo_dir}"\n')
    code = (
        "import sys\nfrom yi_cli.ui import cli\n"
        "try:\n    cli.main(['models', '--json'])\nexcept SystemExit:\n    pass\n"
        "print('loaded:', *(m for m in ('torch', 'transformers') if m in sys.modules), file=sys.stderr)"
    )
    e = {**env, "YI_CHAT_HOME": str(home)}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=e)
    assert p.stderr.splitlines()[-1] == "loaded:", p.stderr
    row = {r["name"]: r for r in json.loads(p.stdout)}["awq"]
    assert row["loadable"] and row["format"] == "AWQ int4" and row["params"] and row["context"] == 8192, row


def test_a_fetch_failed_before_the_weights_is_listed_as_not_complete(hub, env):
    """A 500 on the weights (nothing of them written): `models` said "no *.safetensors weight files", a format
    verdict, where a pull continues it."""
    hub.fail["model.safetensors"] = 500
    error_line(yi(env, "pull", "acme/tiny-chat"), 3, "HTTP 500")
    rows = {r["name"]: r for r in json.loads(yi(env, "models", "--json").stdout)}
    assert (
        rows["acme/tiny-chat"]["reason"] == "the download is not complete: `yi-chat pull acme/tiny-chat` continues it"
    )
    del hub.fail["model.safetensors"]
    assert yi(env, "pull", "acme/tiny-chat").returncode == 0


def test_a_download_killed_before_its_first_byte_is_listed_and_named_as_not_complete(hub, env, demo_files):
    """A pull killed (SIGKILL, a closed laptop) before the first byte of its first file: the cache holds that file's
    empty blobs/<etag>.incomplete and no snapshot. `yi-chat models` did not list the repo at all, and `-m` offline
    called it not in the cache; both say the download is not complete and that a pull continues it."""
    hub.hold["chat_template.jinja"] = 0  # the first file fetched (config and tokenizer first, by name)
    proc = subprocess.Popen(
        [sys.executable, "-m", "yi_cli", "pull", "acme/tiny-chat"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert hub.held.wait(timeout=300)  # the GET reached the hub: its .incomplete was opened before it
    finally:
        proc.kill()
        proc.wait(timeout=120)
        hub.release.set()
    [part] = (repo_dir(env) / "blobs").glob("*.incomplete")
    assert part.stat().st_size == 0 and not (repo_dir(env) / "snapshots").exists()
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    for e in (offline, env):
        rows = {r["name"]: r for r in json.loads(yi(e, "models", "--json").stdout)}
        row = rows["acme/tiny-chat"]
        assert not row["loadable"], row
        assert row["reason"] == "the download is not complete: `yi-chat pull acme/tiny-chat` continues it", row
    p = yi(offline, "-m", "acme/tiny-chat", "-p", "hi")
    [line] = error_line(p, 3, "the download is not complete", "HF_HUB_OFFLINE=1", "`yi-chat pull acme/tiny-chat`")
    assert "not in the local" not in line
    p = yi(env, "pull", "acme/tiny-chat")
    assert p.returncode == 0, p.stderr.decode()
    assert (snapshot(env) / "chat_template.jinja").read_bytes() == demo_files["chat_template.jinja"]
    assert not part.exists()


def test_a_mistyped_yi_alias_and_an_alias_to_a_missing_folder_say_so(env, tmp_path):
    error_line(yi(env, "-m", "yi-6b-chat-4bit", "-p", "hi"), 3, "(did you mean yi-6b-chat-4bits?)")
    # pull said only "not a hub id (ORG/NAME) or a Yi alias" where -m suggests the alias
    error_line(yi(env, "pull", "yi-6b-caht-4bits"), 2, "a Yi alias; did you mean yi-6b-chat-4bits? (see yi-chat models")
    home = tmp_path / "yi"
    (home / "config").mkdir(parents=True)
    gone = tmp_path / "gone" / "model"
    (home / "config" / "config.toml").write_text(f'[aliases]\ngone = "{gone}"\n')
    e = {**env, "YI_CHAT_HOME": str(home)}
    error_line(yi(e, "-m", "gone", "-p", "hi"), 3, f"gone ([aliases] in {home / 'config' / 'config.toml'}): {gone}:")
    error_line(yi(e, "pull", "gone"), 3, f"gone ([aliases] in {home / 'config' / 'config.toml'}): {gone}: no such")


def test_an_alias_to_a_missing_relative_folder_says_where_it_looked_and_what_the_hub_said(hub, env, tmp_path):
    """`mine = "models/yi"`, no such folder here: it was taken for a hub id, and the line read as a hub error that
    had ignored the folder. It says where the folder was looked for (the working directory's), then the hub's
    answer, in one line, for -m, pull and offline; `models` says the same. A malformed target is a usage error."""
    home, here = tmp_path / "yi", tmp_path / "here"
    (home / "config").mkdir(parents=True)
    here.mkdir()
    cfg = home / "config" / "config.toml"
    cfg.write_text('[aliases]\nmine = "models/yi"\nbad = "models//yi"\n')
    e = {**env, "YI_CHAT_HOME": str(home)}
    said = f"mine ([aliases] in {cfg}): models/yi: no folder {here / 'models' / 'yi'}, and as a hub id: "
    for args in (("-m", "mine", "-p", "hi"), ("pull", "mine")):
        lines = error_line(yi(e, *args, cwd=here), 3, said + f"no such model repo on {hub.url}")
        assert len(lines) == 1 and "not a local directory" not in lines[0]
    p = yi({**e, "HF_HUB_OFFLINE": "1"}, "-m", "mine", "-p", "hi", cwd=here)
    error_line(p, 3, said + "not in the local Hugging Face cache")
    rows = {r["name"]: r for r in json.loads(yi(e, "models", "--json", cwd=here).stdout)}
    assert rows["mine"]["reason"] == f"models/yi: no folder {here / 'models' / 'yi'}, and not fetched (yi-chat pull)"
    assert rows["bad"]["reason"].startswith("models//yi: no such directory, and not a valid hub id (")
    for args in (("-m", "bad", "-p", "hi"), ("pull", "bad")):
        lines = error_line(yi(e, *args, cwd=here), 2, f"bad ([aliases] in {cfg}): models//yi: ", "not a valid hub id")
        assert len(lines) == 1


@pytest.mark.parametrize(
    "setting, said",
    [
        (
            {"SSL_CERT_FILE": "/"},
            "SSL_CERT_FILE / SSL_CERT_DIR (/): cannot be read as CA certificates (IsADirectoryError",
        ),
        ({"SSL_CERT_FILE": "/nonexistent/ca.pem"}, "SSL_CERT_DIR (/nonexistent/ca.pem): cannot be read as CA"),
        ({"ALL_PROXY": "socks5://127.0.0.1:1"}, "ALL_PROXY=socks5://127.0.0.1:1: yi-chat goes through http:// and"),
        ({"https_proxy": "ftp://x"}, "https_proxy=ftp://x: yi-chat goes through http:// and https:// proxies only"),
        ({"https_proxy": "http://[::1"}, "the environment's proxy settings (https_proxy) cannot be used"),
    ],
)
@pytest.mark.parametrize("how", ["pull", "-m"])
def test_a_tls_or_proxy_setting_the_hubs_client_cannot_use_is_named_exit_2(hub, env, setting, said, how):
    """A CA folder, a missing CA file, a socks5:// or ftp:// proxy, a proxy URL past its port: the hub's client met
    them inside its first request, and the line blamed the cache ("cannot download into ... (Is a directory)"),
    HF_ENDPOINT or nothing ("download failed (ImportError ...)"), exit 3. They are named, exit 2, as with --endpoint."""
    args = ["pull", "acme/tiny-chat"] if how == "pull" else ["-m", "acme/tiny-chat", "-p", "hi"]
    lines = error_line(yi({**env, **setting}, *args), 2, said)
    assert len(lines) == 1 and hub.log == []


def test_pull_usage_errors_exit_2(env):
    error_line(yi(env, "pull"), 2, "the following arguments are required: repo")
    error_line(yi(env, "pull", "not-a-repo-or-alias"), 2, "not a hub id")
    error_line(yi(env, "models", "--bogus"), 2, "unrecognized arguments")


@pytest.mark.parametrize(
    "name", ["a/b/c", "a//b", "../x", "./x/y", "/nowhere/x", "a/b c", "a/-b", "a/b--c", "a b", "a\nb", "ab-", "a..b"]
)
def test_a_malformed_hub_id_is_a_usage_error_in_pull_and_in_m(env, name):
    """`pull a/b/c` exited 2 and `pull ../x` 3 (the hub's id check, after the cache lookup); `-m bad//id` exited 3
    as a missing model. A name that cannot be a hub id is a usage error (exit 2) in both; a missing path given to -m
    is still a model that is not there (exit 3), named as typed (`./x/y` read `x/y`, a hub id's shape). A name with
    no slash that no hub id can be (`-m 'a b'`) exited 3 too."""
    shown = name.replace("\n", "\\n")
    lines = error_line(yi(env, "pull", name), 2, f"{shown}: not a", "hub id")
    assert len(lines) == 1
    p = yi(env, "-m", name, "-p", "hi")
    if name.startswith((".", "/")):
        error_line(p, 3, f"{name}: no such directory")
    else:
        assert len(error_line(p, 2, f"{shown}: no such directory, and not a valid hub id (")) == 1


def test_pull_on_a_terminal_draws_one_rich_bar_with_size_and_speed(hub, env):
    import pexpect

    hub.hold["model.safetensors"] = 25_000_000  # the bar is caught mid-file
    child = pexpect.spawn(
        sys.executable,
        ["-m", "yi_cli", "pull", "acme/tiny-chat"],
        timeout=300,
        env={**env, "NO_COLOR": "1", "HF_HUB_DOWNLOAD_TIMEOUT": "300"},
        dimensions=(24, 120),
    )
    try:
        child.expect(r"fetching acme/tiny-chat: 6 files, 117\.5 MB")
        child.expect(r"model\.safetensors\s+\S+\s+\d+\.\d/117\.5 MB\s+\d+(\.\d+)? [kM]B/s")
        hub.release.set()  # the held connection drops; the client continues it with a Range request
        child.expect(r"acme/tiny-chat ready \(117\.5 MB")
        child.expect(pexpect.EOF)
    finally:
        hub.release.set()
        child.close()
    assert child.exitstatus == 0
    assert b"it/s" not in child.before and hub.requests("GET", "/model.safetensors")[-1][2] is not None


@pytest.mark.parametrize(
    "change,said",
    [
        ({"num_hidden_layers": -3}, "config.json: num_hidden_layers = -3 is not a plausible size (expected 1..1024)"),
        ({"rope_scaling": {"type": "bogus", "factor": 2.0}}, "config.json: rope_type 'bogus' is not one yi-chat knows"),
    ],
    ids=["layers", "rope-type"],
)
def test_a_config_with_implausible_sizes_is_refused_before_its_weights_and_listed_with_the_reason(
    hub, env, demo_files, change, said
):
    """`num_hidden_layers: -3`: `pull` fetched every weight file, said "ready" (exit 0) and `models` listed it ok,
    then -m refused it (exit 3). The fetch refuses it in one line before the weights (as the loader would, exit 3);
    `models` gives the reason, for the snapshot that leaves (not "a pull continues it": a pull stops there again)
    and for one fetched whole before this check, and -m offline says it too (it said "the download is not complete").
    A rope_type Llama's rotary embedding does not know was the same (-m refused it only as the model loaded)."""
    cfg = json.loads(demo_files["config.json"])
    cfg.update(change)
    odd = json.dumps(cfg).encode()
    hub.repos["acme/odd"] = Repo({**demo_files, "config.json": odd})
    error_line(yi(env, "pull", "acme/odd"), 3, said)
    error_line(yi(env, "-m", "acme/odd", "-p", "hi"), 3, said)
    # offline it is the same reason, not "the download is not complete ... `yi-chat pull` online continues it"
    error_line(yi({**env, "HF_HUB_OFFLINE": "1"}, "-m", "acme/odd", "-p", "hi"), 3, said)
    assert not hub.requests("GET", "/model.safetensors")
    rows = {r["name"]: r for r in json.loads(yi(env, "models", "--json").stdout)}
    assert not rows["acme/odd"]["loadable"] and said in rows["acme/odd"]["reason"], rows["acme/odd"]
    # A snapshot fetched whole before the fetch checked this (its config changed here, through its link)
    assert yi(env, "pull", "acme/tiny-chat").returncode == 0
    (snapshot(env) / "config.json").write_bytes(odd)
    rows = {r["name"]: r for r in json.loads(yi({**env, "HF_HUB_OFFLINE": "1"}, "models", "--json").stdout)}
    assert not rows["acme/tiny-chat"]["loadable"] and said in rows["acme/tiny-chat"]["reason"], rows["acme/tiny-chat"]
    assert "cannot load: " in yi({**env, "HF_HUB_OFFLINE": "1"}, "models").stdout.decode()


@pytest.mark.parametrize("ref", ["missing", "garbage"])
def test_a_snapshot_no_ref_names_is_listed_as_offline_runs_see_it(hub, env, ref):
    """refs/main gone or damaged: `models` showed the newest snapshot as loadable (ok), where `-m` offline says it
    cannot load it. Both say why now (no branch names it; they said "the download is not complete", which it is),
    and a pull writes the ref again."""
    assert yi(env, "pull", "acme/tiny-chat").returncode == 0
    main, snap = repo_dir(env) / "refs" / "main", snapshot(env)
    main.unlink() if ref == "missing" else main.write_text("not a commit")
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    row = {r["name"]: r for r in json.loads(yi(offline, "models", "--json").stdout)}["acme/tiny-chat"]
    want = f"the cache holds commit {snap.name[:12]}, which no branch names, but not main: `yi-chat pull acme/tiny-"
    assert not row["loadable"] and row["reason"].startswith(want) and f"`-m {snap}` opens" in row["reason"], row
    error_line(yi(offline, "-m", "acme/tiny-chat", "-p", "hi"), 3, "HF_HUB_OFFLINE=1 forbids fetching it; " + want)
    assert yi(env, "pull", "acme/tiny-chat").returncode == 0
    assert {r["name"]: r for r in json.loads(yi(offline, "models", "--json").stdout)}["acme/tiny-chat"]["loadable"]
    # what `pull --revision v1` leaves: another ref names it; it was listed ok, where -m offline asks for main
    main.rename(main.with_name("v1"))
    row = {r["name"]: r for r in json.loads(yi(offline, "models", "--json").stdout)}["acme/tiny-chat"]
    want = f"the cache holds v1 (commit {snap.name[:12]}) but not main: `yi-chat pull acme/tiny-chat` fetches main"
    assert not row["loadable"] and row["reason"].startswith(want), row
    error_line(yi(offline, "-m", "acme/tiny-chat", "-p", "hi"), 3, "HF_HUB_OFFLINE=1 forbids fetching it; " + want)


def test_a_deleted_tokenizer_blob_is_listed_as_a_missing_file(hub, env):
    """The tokenizer's blob deleted, its link kept: `models` said the download was not complete; a file of it is
    missing, as for the weights (README), and the pull fetches it again."""
    assert yi(env, "pull", "acme/tiny-chat").returncode == 0
    (snapshot(env) / "tokenizer.json").resolve().unlink()
    row = {r["name"]: r for r in json.loads(yi(env, "models", "--json").stdout)}["acme/tiny-chat"]
    want = "a file of it is missing from the cache: `yi-chat pull acme/tiny-chat` fetches it again"
    assert not row["loadable"] and row["reason"] == want, row


@contextlib.contextmanager
def deep_folders(*roots: Path, depth: int = 1100):
    """Folders `depth` deep under each root, made a level at a time (os.makedirs recurses as pathlib's rglob did),
    and removed a level at a time after (pytest's own removal of old temp folders, shutil.rmtree, recurses too)."""
    made = []
    try:
        for root in roots:
            at = str(root)
            for _ in range(depth):
                at += "/d"
                os.mkdir(at)
                made.append(at)
        yield
    finally:
        for at in reversed(made):
            os.rmdir(at)


def test_folders_a_thousand_deep_in_a_cached_snapshot_or_its_refs_are_no_internal_error(hub, env):
    """`models` and -m walked a snapshot (and its refs) with pathlib's rglob, which recurses: folders 1100 deep made
    both an internal error (RecursionError) and the whole listing was lost. Only the snapshot's top level is read."""
    assert yi(env, "pull", "acme/tiny-chat").returncode == 0
    with deep_folders(snapshot(env), repo_dir(env) / "refs"):
        p = yi(env, "models", "--json")
        assert p.returncode == 0 and "internal error" not in p.stderr.decode(), p.stderr.decode()
        row = {r["name"]: r for r in json.loads(p.stdout)}["acme/tiny-chat"]
        assert row["loadable"], row
        p = yi({**env, "HF_HUB_OFFLINE": "1"}, "-m", "acme/tiny-chat", "-p", "hi", "--max-new-tokens", "2")
        assert p.returncode == 0, p.stderr.decode()


def test_a_snapshot_folder_that_cannot_be_listed_is_not_complete_not_an_internal_error(hub, env, monkeypatch):
    """A snapshot folder another user's mode keeps from being listed (0311): the check for a checkpoint's shards
    listed it unguarded, and `models` and -m ended in an internal error (PermissionError)."""
    import pathlib

    from yi_cli.checkpoint import hub as yi_hub

    assert yi(env, "pull", "acme/tiny-chat").returncode == 0
    snap = snapshot(env)
    assert yi_hub.complete(snap)
    listed = pathlib.Path.iterdir

    def refused(self):
        if self == snap:
            raise PermissionError(13, "Permission denied", str(self))
        return listed(self)

    monkeypatch.setattr(pathlib.Path, "iterdir", refused)
    assert not yi_hub.complete(snap)


def test_a_snapshot_without_its_tokenizer_is_not_complete(hub, env, demo_files):
    """A snapshot with config and weights but no tokenizer file linked (a pull cut in it, the weights there from
    before): -m offline said "no tokenizer files ...; copy them from where the model came from" and `models` listed
    it as not loadable for that. Both now say the download is not complete, and a run online fetches the file."""
    assert yi(env, "pull", "acme/tiny-chat").returncode == 0
    link = snapshot(env) / "tokenizer.json"
    link.resolve().unlink()
    link.unlink()
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    row = {r["name"]: r for r in json.loads(yi(offline, "models", "--json").stdout)}["acme/tiny-chat"]
    assert row["reason"] == "the download is not complete: `yi-chat pull acme/tiny-chat` continues it", row
    p = yi(offline, "-m", "acme/tiny-chat", "-p", "hi")
    error_line(p, 3, "the download is not complete", "`yi-chat pull acme/tiny-chat`")
    p = yi(env, "-m", "acme/tiny-chat", "-p", "hi", "--max-new-tokens", "2")
    assert p.returncode == 0, p.stderr.decode()
    assert link.read_bytes() == demo_files["tokenizer.json"]


@pytest.mark.parametrize("name", ["tokenizer.json", "model.safetensors"])
def test_a_cached_snapshot_missing_a_blob_is_fetched_again_and_named_offline(hub, env, name):
    """A blob deleted from the cache after the fetch: -m trusted the snapshot (config and weights "complete") and
    failed with "cannot load the tokenizer (ValueError: ...)" or "model.safetensors: not a regular file", where
    `models` said the file is missing and that a pull fetches it again. -m fetches it again now, as an incomplete
    snapshot; offline, one line names the file and the pull."""
    assert yi(env, "pull", "acme/tiny-chat").returncode == 0
    (snapshot(env) / name).resolve().unlink()
    lines = error_line(
        yi({**env, "HF_HUB_OFFLINE": "1"}, "-m", "acme/tiny-chat", "-p", "hi"),
        3,
        f"acme/tiny-chat: {name} is missing from the Hugging Face cache (",
        "HF_HUB_OFFLINE=1",
        "`yi-chat pull acme/tiny-chat`",
    )
    assert len(lines) == 1
    error_line(yi({**env, "HF_HUB_OFFLINE": "1"}, "pull", "acme/tiny-chat"), 3, f"{name} is missing from the")
    gets = len(hub.requests("GET", f"/{name}"))
    p = yi(env, "-m", "acme/tiny-chat", "--json", "--max-new-tokens", "2", "-p", "hi")
    assert p.returncode == 0, p.stderr.decode()
    assert json.loads(p.stdout.decode().splitlines()[-1])["new_tokens"] == 2
    assert len(hub.requests("GET", f"/{name}")) == gets + 1
    assert (snapshot(env) / name).is_file()


@pytest.mark.parametrize(
    "revision",
    ["", " ", "main ", "ma\tin", "a\x1bb", "../../x", "{tmp}/ref", "a//b", "a..b", "a:b", "x.lock", "a\udcffb"],
)
def test_pull_refuses_a_malformed_revision_as_a_usage_error(hub, env, revision, tmp_path):
    """`--revision ''` asked the hub for it and said "answered HTTP 404; try again later" (exit 3); a revision no
    branch, tag or commit can have (whitespace, control characters, what git refuses in a ref name: the cache keeps
    it as the path refs/REVISION, which an absolute one replaced) is one line,
    exit 2, and nothing is asked of the hub."""
    revision = revision.format(tmp=tmp_path)  # an absolute path, where the code before wrote its ref file
    lines = error_line(yi(env, "pull", "acme/tiny-chat", "--revision", revision), 2, "argument --revision: ")
    assert len(lines) == 1
    assert ("the revision is empty" if not revision else "is not a branch, tag or commit name") in lines[0]
    assert not hub.log
    if "\udcff" in revision:  # said as other lines say a byte that is not UTF-8 (it read '\udcff')
        assert "'a\\xffb' is not a branch, tag or commit name (it is not valid UTF-8)" in lines[0], lines[0]


@pytest.mark.parametrize("name", ["demo", "demo-fp32"])
def test_pull_of_a_demo_model_refuses_a_revision(env, name):
    """`pull demo --revision v1` exited 0 with the revision ignored: a demo model is made here, not fetched."""
    lines = error_line(yi(env, "pull", name, "--revision", "v1"), 2, f"--revision v1: {name} is made here")
    assert len(lines) == 1


def test_pull_of_a_branch_and_of_a_commit_fetches_that_revision(hub, env, demo_files):
    """`--revision` names what is fetched: a branch's files (its ref written as refs/BRANCH, main's untouched), or a
    commit by its id; the snapshot printed on stdout is that commit's. (The stand-in hub answered every revision
    with main's files, so nothing checked that the revision was asked for.)"""
    v2 = {**demo_files, "generation_config.json": demo_files["generation_config.json"] + b"\n"}
    main = hub.repos["acme/tiny-chat"]
    main.branches["v2"] = Repo(v2)
    p = yi(env, "pull", "acme/tiny-chat", "--revision", "v2")
    assert p.returncode == 0, p.stderr.decode()
    commit = main.branches["v2"].commit
    assert (repo_dir(env) / "refs" / "v2").read_text() == commit
    assert not (repo_dir(env) / "refs" / "main").exists()
    snap = repo_dir(env) / "snapshots" / commit
    assert p.stdout.decode().strip() == str(snap)
    assert (snap / "generation_config.json").read_bytes() == v2["generation_config.json"]
    p = yi(env, "pull", "acme/tiny-chat", "--revision", main.commit)
    assert p.returncode == 0, p.stderr.decode()
    snap = repo_dir(env) / "snapshots" / main.commit
    assert p.stdout.decode().strip() == str(snap)
    assert (snap / "generation_config.json").read_bytes() == demo_files["generation_config.json"]
    # `models` said of the commit's complete snapshot "the download is not complete: a pull continues it"
    row = {r["name"]: r for r in json.loads(yi(env, "models", "--json").stdout)}["acme/tiny-chat"]
    want = f"the cache holds commit {main.commit[:12]}, which no branch names, but not main: `yi-chat pull acme/"
    assert row["path"] == str(snap) and row["reason"].startswith(want) and f"`-m {snap}` opens" in row["reason"], row
    p = yi(env, "-m", str(snap), "-p", "hi", "--max-new-tokens", "2")
    assert p.returncode == 0, p.stderr.decode()


def test_pull_of_a_revision_the_repo_lacks_is_one_line_exit_3(hub, env):
    lines = error_line(
        yi(env, "pull", "acme/tiny-chat", "--revision", "v9"), 3, "acme/tiny-chat: no such revision 'v9' on "
    )
    assert len(lines) == 1 and hub.url in lines[0]
    assert not any(m == "GET" and "/resolve/" in path for m, path, *_ in hub.log)  # nothing was downloaded


def test_models_in_a_pipe_carries_no_trailing_spaces(env, tmp_path):
    """Piped, every line of the listing was padded with spaces to the width of the longest reason (200 columns and
    more); a row stays whole (not folded), and a name or reason is printed as written (rich read `[x]` as markup)."""
    home = tmp_path / "yi"
    (home / "config").mkdir(parents=True)
    far = tmp_path / ("far" * 60) / "model"
    (home / "config" / "config.toml").write_text(f'[aliases]\nfar = "{far}"\n"[b]x" = "acme/nope"\n')
    p = yi({**env, "YI_CHAT_HOME": str(home), "HF_HUB_OFFLINE": "1"}, "models")
    assert p.returncode == 0, p.stderr.decode()
    lines = p.stdout.decode().splitlines()
    assert lines and not [ln for ln in lines if ln != ln.rstrip()], lines
    assert any(ln.startswith("far ") and str(far) in ln for ln in lines), lines  # one line, not folded
    assert any(ln.startswith("[b]x ") for ln in lines), lines


@pytest.fixture(scope="module")
def gpt2_files(tmp_path_factory, demo_files):
    """A 13 MB GPT-2 (random weights; config sizes under GPT-2's names: n_embd, n_layer, n_head, n_positions)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("gpt2")
    cfg = GPT2Config(n_embd=64, n_layer=2, n_head=2, n_positions=1024, vocab_size=49152, bos_token_id=1, eos_token_id=2)
    GPT2LMHeadModel(cfg).save_pretrained(d)
    files = {f.name: f.read_bytes() for f in d.iterdir() if f.is_file()}
    return {**files, **{k: demo_files[k] for k in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")}}


def test_a_gpt2_sized_by_its_own_field_names_is_fetched_and_chats(hub, env, gpt2_files):
    """GPT-2 names its sizes n_embd / n_layer / n_head / n_positions: the memory estimate read none of them and took
    a 7B Llama's (32 layers of 4096), so on a machine under 37 GiB `-m` of a 13 MB model said "needs about 36.8 GiB
    (weights 32.8 GiB, KV cache for None positions 4.0 GiB)", exit 3."""
    hub.repos["acme/gpt2-tiny"] = Repo(gpt2_files)
    p = yi(env, "-m", "acme/gpt2-tiny", "--max-new-tokens", "4", "-p", "hi")
    err = p.stderr.decode()
    assert p.returncode == 0, err
    assert "needs about" not in err and "Traceback" not in err
    assert "fetching acme/gpt2-tiny" in err and p.stdout.strip()


def test_the_memory_estimate_reads_other_architectures_size_names(monkeypatch):
    """The estimate behind "needs about N GiB", on a 1 GiB device: a GPT-2 or T5 config by its own field names, and
    one whose names it does not know (nothing to go on: no refusal); a Llama config without sizes keeps
    LlamaConfig's 7B defaults, as transformers fills them, and so is refused there."""
    from pathlib import Path

    from yi_cli.checkpoint import plausible
    from yi_cli.errors import LoadError

    monkeypatch.setattr(plausible, "device_memory", lambda device: 1 << 30)
    gpt2 = {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 2, "n_positions": 1024, "vocab_size": 50257}
    t5 = {"model_type": "t5", "d_model": 512, "num_layers": 8, "num_heads": 6, "d_ff": 1024, "vocab_size": 32128}
    weights, cache = plausible.estimate(gpt2, 4, 32)
    assert weights < 50e6 and cache == 2 * 2 * 64 * 1024 * 4
    for cfg in (gpt2, t5, {"model_type": "rwkv", "attention_hidden_size": 4096}):
        plausible.check_memory(cfg, Path("config.json"), "cpu", 4, 32)
    big = {**gpt2, "n_embd": 8192, "n_layer": 96, "n_head": 64}
    with pytest.raises(LoadError, match=r"KV cache for 1024 positions"):
        plausible.check_memory(big, Path("config.json"), "cpu", 4, 32)
    with pytest.raises(LoadError, match=r"KV cache for 4096 positions"):
        plausible.check_memory({"model_type": "llama"}, Path("config.json"), "cpu", 4, 32)
    # a context the weights fit but the full KV cache does not: --context loads it (it was refused whatever it said)
    long = {**gpt2, "n_positions": 1 << 22}
    with pytest.raises(LoadError, match=r"KV cache for 4194304 positions .*; --context N holds fewer positions$"):
        plausible.check_memory(long, Path("config.json"), "cpu", 4, 32)
    plausible.check_memory(long, Path("config.json"), "cpu", 4, 32, positions=4096)
    with pytest.raises(LoadError, match=r"KV cache for 1048576 positions"):
        plausible.check_memory(long, Path("config.json"), "cpu", 4, 32, positions=1 << 20)


FLAN_T5_CONFIG = {  # google/flan-t5-small's config.json, the fields that matter
    "architectures": ["T5ForConditionalGeneration"],
    "d_ff": 1024,
    "d_kv": 64,
    "d_model": 512,
    "is_encoder_decoder": True,
    "model_type": "t5",
    "n_positions": 512,
    "num_decoder_layers": 8,
    "num_heads": 6,
    "num_layers": 8,
    "vocab_size": 32128,
}


def test_an_encoder_decoder_model_is_refused_before_its_weights_and_listed_with_the_reason(hub, env, demo_files):
    """flan-t5 (an encoder-decoder): `pull` fetched its weights and said ready, `models` listed it ok, and `-m` said
    transformers' "Unrecognized configuration class <class '...T5Config'> for this kind of AutoModel:
    AutoModelForCausalLM." It is refused as the implausible config is: before the weights, one line, exit 3."""
    files = {**demo_files, "config.json": json.dumps(FLAN_T5_CONFIG).encode()}
    hub.repos["acme/flan-t5-small"] = Repo(files)
    said = "config.json: an encoder-decoder model (t5, T5ForConditionalGeneration), not one yi-chat can chat with"
    error_line(yi(env, "pull", "acme/flan-t5-small"), 3, said)
    assert not hub.requests("GET", "/model.safetensors")
    rows = {r["name"]: r for r in json.loads(yi(env, "models", "--json").stdout)}
    row = rows["acme/flan-t5-small"]
    assert not row["loadable"] and said in row["reason"], row
    error_line(yi(env, "-m", "acme/flan-t5-small", "-p", "hi"), 3, said)


@pytest.mark.parametrize(
    "arch,model_type", [("BertForMaskedLM", "bert"), ("BertModel", "bert"), ("LlamaForSequenceClassification", "llama")]
)
def test_a_model_that_does_not_write_text_is_refused_before_its_weights(hub, env, demo_files, arch, model_type):
    """A BertForMaskedLM, a sentence-embedding BertModel, a classifier: `pull` fetched the weights and said ready and
    `models` listed it loadable. Refused as an encoder-decoder is: before the weights, one line, exit 3."""
    cfg = {**json.loads(demo_files["config.json"]), "architectures": [arch], "model_type": model_type}
    hub.repos["acme/not-a-chat"] = Repo({**demo_files, "config.json": json.dumps(cfg).encode()})
    said = f"config.json: {arch} is not a model that writes text"
    error_line(yi(env, "pull", "acme/not-a-chat"), 3, said)
    assert not hub.requests("GET", "/model.safetensors")
    rows = {r["name"]: r for r in json.loads(yi(env, "models", "--json").stdout)}
    assert not rows["acme/not-a-chat"]["loadable"] and said in rows["acme/not-a-chat"]["reason"]


@pytest.mark.parametrize(
    "quant,weights,said",
    [
        ({"quant_method": "bitsandbytes"}, "model.safetensors", "quantization method 'bitsandbytes' is not supported"),
        ({"bits": 3}, "model.safetensors", "AWQ with bits=3 is not supported"),
        (
            {"quant_method": "gptq", "bits": 4, "group_size": 128},
            "gptq_model-8bit-64g.safetensors",
            "gptq_model-8bit-64g.safetensors: file name says 8-bit group 64, but config.json says 4-bit group 128",
        ),
    ],
)
def test_a_quantization_it_cannot_load_is_refused_before_its_weights(hub, env, demo_files, quant, weights, said):
    """A bitsandbytes or AWQ 3-bit config, or GPTQ weights whose file name says other settings than the config:
    `pull` fetched every weight file, then said "fetched, but yi-chat cannot load it". The config and the listing
    say so: one line, exit 3 (the loader's own words), before the weights."""
    cfg = json.loads(demo_files["config.json"])
    cfg["quantization_config"] = {**cfg["quantization_config"], **quant}
    files = {k: v for k, v in demo_files.items() if k != "model.safetensors"}
    hub.repos["acme/odd-quant"] = Repo(
        {**files, weights: demo_files["model.safetensors"], "config.json": json.dumps(cfg).encode()}
    )
    lines = error_line(yi(env, "pull", "acme/odd-quant"), 3, said)
    assert not hub.requests("GET", ".safetensors") and "fetched, but" not in lines[-1]
    if weights == "model.safetensors":  # listed with the reason, not as a download a pull continues
        row = {r["name"]: r for r in json.loads(yi(env, "models", "--json").stdout)}["acme/odd-quant"]
        assert not row["loadable"] and said in row["reason"], row
    error_line(yi(env, "-m", "acme/odd-quant", "-p", "hi"), 3, said)
    assert not hub.requests("GET", ".safetensors")


LOST_QUANT = "is AWQ / GPTQ-quantized, but config.json has no quantization_config"


def header_keys(data: bytes) -> list[str]:
    n = int.from_bytes(data[:8], "little")
    return [k for k in json.loads(data[8 : 8 + n]) if k != "__metadata__"]


@pytest.mark.parametrize("sharded", [False, True])
def test_quantized_weights_under_a_config_without_quantization_are_refused_before_they_are_fetched(
    hub, env, demo_files, tmp_path, sharded
):
    """AWQ weights whose config.json lost its quantization_config: `pull` fetched every weight file, and -m then said
    "missing tensor ...q_proj.weight". The index's names, or the file's header read by a Range request, say what is
    wrong before the weights: one line, exit 3; -m on a local copy says the same."""
    cfg = json.loads(demo_files["config.json"])
    del cfg["quantization_config"]
    files = {**demo_files, "config.json": json.dumps(cfg).encode()}
    if sharded:
        weights = files.pop("model.safetensors")
        files["model-00001-of-00001.safetensors"] = weights
        index = {"metadata": {}, "weight_map": dict.fromkeys(header_keys(weights), "model-00001-of-00001.safetensors")}
        files["model.safetensors.index.json"] = json.dumps(index).encode()
    hub.repos["acme/lost-config"] = Repo(files)
    from yi_cli.checkpoint import hub as yi_hub

    where = "model.safetensors.index.json" if sharded else "acme/lost-config/model.safetensors"
    error_line(yi(env, "pull", "acme/lost-config"), 3, where, LOST_QUANT)
    gets = hub.requests("GET", ".safetensors")
    assert all(r[2] == f"bytes=0-{yi_hub.hub_http.PEEK - 1}" for r in gets) and len(gets) == (0 if sharded else 1)
    assert not list((repo_dir(env, "acme/lost-config") / "blobs").glob("*.incomplete"))
    # The same files on disk: the loader's words, not "missing tensor"
    local = tmp_path / "lost-config"
    local.mkdir()
    for name, data in files.items():
        if "/" not in name:
            (local / name).write_bytes(data)
    error_line(yi(env, "-m", str(local), "-p", "hi"), 3, LOST_QUANT)


def test_a_plain_checkpoints_header_is_peeked_then_its_weights_fetched(hub, env, tmp_path, demo_fp32_dir):
    """A plain (unquantized) repo without an index: its header's first bytes are read, then the file whole; a hub
    that fails the first read leaves the check to the load (the pull goes on)."""
    from tests.test_bad_input import make_tiny

    tiny = make_tiny(tmp_path / "tiny", demo_fp32_dir)
    hub.repos["acme/plain-tiny"] = Repo({f.name: f.read_bytes() for f in tiny.iterdir() if f.is_file()})
    hub.fail_once["model.safetensors"] = 500  # the peek's answer: the pull goes on, the download fetches it
    p = yi(env, "pull", "acme/plain-tiny")
    assert p.returncode == 0, p.stderr.decode()
    from yi_cli.checkpoint import hub as yi_hub

    assert [r[2] for r in hub.requests("GET", "/model.safetensors")] == [f"bytes=0-{yi_hub.hub_http.PEEK - 1}", None]
    assert (snapshot(env, "acme/plain-tiny") / "model.safetensors").read_bytes() == (
        tiny / "model.safetensors"
    ).read_bytes()


@pytest.mark.parametrize("ranges", [True, False])
def test_a_safetensors_header_is_read_from_the_hub_without_the_weights(hub, demo_files, monkeypatch, ranges):
    """hub_http.header_names: the header's tensor names in two Range requests where it is longer than the first
    read, and no more of the file than that where the server ignores Range (its 200 is cut off)."""
    from huggingface_hub import hf_hub_url

    from yi_cli.checkpoint import hub as yi_hub

    weights = demo_files["model.safetensors"]
    monkeypatch.setattr(yi_hub.hub_http, "PEEK", 64)  # the header (tens of kB) takes a second request
    monkeypatch.setattr(hub, "ranges", ranges)
    url = hf_hub_url("acme/tiny-chat", "model.safetensors", endpoint=hub.url)
    assert yi_hub.hub_http.header_names(url, 1 << 20) == header_keys(weights)
    assert [r[2] for r in hub.requests("GET", "/model.safetensors")] == [
        "bytes=0-63",
        f"bytes=64-{header_len(weights) + 7}",
    ]
    assert yi_hub.hub_http.header_names(url, 100) is None  # longer than the limit: the load's to say


def header_len(data: bytes) -> int:
    return int.from_bytes(data[:8], "little")


@pytest.mark.parametrize(
    "name,data,said",
    [
        ("tokenizer.json", b'{"version": "1.0", "model": {', "tokenizer"),
        ("tokenizer_config.json", None, "eos_token"),
        ("chat_template.jinja", b"{% for %}", "the chat template is not valid Jinja"),
    ],
    ids=["tokenizer-cut", "eos-number", "template"],
)
def test_a_pulled_repo_whose_tokenizer_does_not_load_is_not_called_ready(hub, env, demo_files, name, data, said):
    """A tokenizer.json cut short, an eos_token that is a number, a chat template that is not Jinja: `pull` said
    ready (exit 0), `models` listed it ok, then -m refused it. The pull loads the tokenizer and its template as -m
    does: "fetched, but yi-chat cannot load it", in -m's words, exit 3."""
    if data is None:
        data = json.dumps({**json.loads(demo_files[name]), "eos_token": 5}).encode()
    hub.repos["acme/badtok"] = Repo({**demo_files, name: data})
    p = yi(env, "pull", "acme/badtok")
    error_line(p, 3, "acme/badtok: fetched, but yi-chat cannot load it", said)
    assert p.stdout == b""  # the snapshot's path is what a pull that worked prints (`d=$(yi-chat pull X)`)
    error_line(yi(env, "-m", "acme/badtok", "-p", "hi"), 3, said)


def test_a_pulled_repo_whose_tokenizer_runs_past_its_vocabulary_is_not_called_ready(hub, env, demo_files):
    """The tokenizer of another model (ids past config.json's vocab_size): `pull` said ready and `models` ok, since
    its check built the template without the model's vocabulary, and -m then refused it (a hostile-hub hunt). Here
    the weights' embedding has the tokenizer's rows, not config.json's 300: that is said first, by both."""
    cfg = {**json.loads(demo_files["config.json"]), "vocab_size": 300}
    hub.repos["acme/othertok"] = Repo({**demo_files, "config.json": json.dumps(cfg).encode()})
    p = yi(env, "pull", "acme/othertok")
    said = "tensor model.embed_tokens.weight has shape [49152, 576], expected [300, 576]"
    error_line(p, 3, "acme/othertok: fetched, but yi-chat cannot load it", said)
    assert p.stdout == b""
    error_line(yi(env, "-m", "acme/othertok", "-p", "hi"), 3, said)


def test_a_model_type_transformers_does_not_know_is_refused_before_its_weights(hub, env, demo_files):
    """config.json's model_type unknown (and no code of its own): `pull` fetched every weight file and said ready
    (exit 0), `models` listed it, and -m refused it. Refused before the weights, in the loader's words, exit 3."""
    cfg = {**json.loads(demo_files["config.json"]), "model_type": "nosuchmodel"}
    hub.repos["acme/unknown"] = Repo({**demo_files, "config.json": json.dumps(cfg).encode()})
    said = "config.json: The checkpoint you are trying to load has model type `nosuchmodel`"
    error_line(yi(env, "pull", "acme/unknown"), 3, said)
    assert not hub.requests("GET", "/model.safetensors")
    row = {r["name"]: r for r in json.loads(yi(env, "models", "--json").stdout)}["acme/unknown"]
    assert not row["loadable"] and said in row["reason"], row
    error_line(yi(env, "-m", "acme/unknown", "-p", "hi"), 3, said)
    # One of its own code (auto_map) is left to -m --trust-remote-code: fetched as before
    cfg["auto_map"] = {"AutoConfig": "custom.Config", "AutoModelForCausalLM": "custom.Model"}
    hub.repos["acme/custom"] = Repo({**demo_files, "config.json": json.dumps(cfg).encode()})
    assert yi(env, "pull", "acme/custom").returncode == 0
    assert hub.requests("GET", "/model.safetensors")


def test_models_lists_a_complete_snapshot_of_an_unknown_model_type_as_not_loadable(hub, env, demo_files):
    """A snapshot fetched whole by another tool (`hf download`) whose model_type transformers does not know was
    listed by `models` as ok, and -m then refused it: listed with the loader's reason. Its own code (auto_map) stays
    listed as it was (-m --trust-remote-code decides)."""
    cfg = {**json.loads(demo_files["config.json"]), "model_type": "nosuchmodel"}
    hub.repos["acme/unknown"] = Repo({**demo_files, "config.json": json.dumps(cfg).encode()})
    cfg["auto_map"] = {"AutoConfig": "custom.Config", "AutoModelForCausalLM": "custom.Model"}
    hub.repos["acme/custom"] = Repo({**demo_files, "config.json": json.dumps(cfg).encode()})
    for repo in ("acme/unknown", "acme/custom"):
        code = f"from huggingface_hub import snapshot_download; snapshot_download({repo!r})"
        got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
        assert got.returncode == 0, got.stderr.decode()
    rows = {r["name"]: r for r in json.loads(yi(env, "models", "--json").stdout)}
    said = "config.json: The checkpoint you are trying to load has model type `nosuchmodel`"
    assert not rows["acme/unknown"]["loadable"] and said in rows["acme/unknown"]["reason"], rows["acme/unknown"]
    assert rows["acme/custom"]["loadable"], rows["acme/custom"]
    error_line(yi(env, "-m", "acme/unknown", "-p", "hi"), 3, said)


def test_which_architectures_write_text():
    from yi_cli.checkpoint.plausible import generates

    for arch in ("LlamaForCausalLM", "GPT2LMHeadModel", "XLMWithLMHeadModel", "Gemma3ForConditionalGeneration"):
        assert generates(arch), arch
    for arch in ("BertForMaskedLM", "BertModel", "LlamaModel", "RobertaForSequenceClassification", "Wav2Vec2ForCTC"):
        assert not generates(arch), arch


def test_pull_of_a_yi_base_model_says_it_continues_text(hub, env, demo_files):
    """`pull yi-6b` (a base model) said ready as a chat model does, and the chat then continued each message as text
    instead of answering it: the ready line says it is a base model."""
    hub.repos["01-ai/Yi-6B"] = Repo(demo_files)
    p = yi(env, "pull", "yi-6b")
    assert p.returncode == 0, p.stderr.decode()
    assert p.stderr.decode().rstrip().endswith("· a base model: it continues text, a -Chat model answers")
    p = yi(env, "pull", "acme/tiny-chat")
    assert p.returncode == 0 and "base model" not in p.stderr.decode()


def test_model_command_names_the_hub_repo_and_where_its_files_are(hub, env):
    """/model of a fetched model showed only its snapshot path (.../models--acme--tiny-chat/snapshots/<commit>)."""
    p = yi(env, "-m", "acme/tiny-chat", "-p", "/model")
    assert p.returncode == 0, p.stderr.decode()
    out = p.stdout.decode()
    assert [ln.split() for ln in out.splitlines() if ln.split()[:1] == ["model"]] == [["model", "acme/tiny-chat"]], out
    assert f"files{snapshot(env)}architecture" in "".join(out.split()), out  # (a pipe's table wraps the path)


def test_a_file_name_with_markup_or_an_emoji_code_is_shown_as_named_on_a_terminal():
    """On a terminal the pull's lines go through rich's console above the bar: a file named with `[/x]` (rich markup
    that closes no tag) raised MarkupError out of the pull, `[b]` vanished, and `:x:` showed as ❌."""

    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    from yi_cli.checkpoint import hub as yi_hub

    progress = yi_hub.Progress(stream)
    names = ["w[/x].safetensors", "a[b]c:x:.json"]
    progress.start("acme/tiny-chat", [(n, 10, 0) for n in names])
    for n in names:
        progress.waiting(n)
    progress.live.stop()
    shown = stream.getvalue()
    for n in names:
        assert f"{n}: another process is fetching it" in shown, shown
    assert "❌" not in shown


def test_a_hub_whose_commit_id_is_a_path_is_refused_before_anything_is_written(hub, env, tmp_path):
    """A stand-in hub (HF_ENDPOINT: a mirror, a proxy) that answered `../../../../escaped` as the commit id had its
    files written to snapshots/../../../../escaped, outside the cache. The commit id must be one."""
    hub.sha = "../../../../escaped"
    lines = error_line(yi(env, "pull", "acme/tiny-chat"), 3, "answered '../../../../escaped' for the commit id")
    assert len(lines) == 1 and "check HF_ENDPOINT" in lines[0]
    assert not any(m == "GET" and "/resolve/" in path for m, path, *_ in hub.log)  # nothing was downloaded
    assert [p for p in tmp_path.rglob("*") if "escaped" in p.name] == []


def test_a_hub_whose_etag_is_a_path_has_its_file_kept_by_the_listings_id(hub, env, tmp_path, demo_files):
    """The blob is named by the file's ETag: `../../../escaped-blob` wrote the file outside the cache (its bytes
    matched the listing, so it was kept there). An ETag that is not a plain name gives way to the listing's id."""
    hub.etag_of["config.json"] = "../../../escaped-blob"
    p = yi(env, "pull", "acme/tiny-chat")
    assert p.returncode == 0, p.stderr.decode()
    assert [p for p in tmp_path.rglob("*") if "escaped" in p.name] == []
    link = snapshot(env) / "config.json"
    assert link.read_bytes() == demo_files["config.json"]
    assert link.resolve().parent == repo_dir(env) / "blobs"


def test_an_etag_that_names_another_blob_does_not_put_that_blob_in_the_snapshot(hub, env, demo_files):
    """The blob was named by the hub's ETag and linked without a download where one of that name and size was in
    the cache: its bytes never checked against the listing. Now the listing's id names it (what is checked)."""
    name = "tokenizer_config.json"
    blobs = repo_dir(env) / "blobs"
    blobs.mkdir(parents=True)
    (blobs / "0123456789abcdef").write_bytes(b"x" * len(demo_files[name]))  # another file of the same size
    hub.etag_of[name] = "0123456789abcdef"
    p = yi(env, "pull", "acme/tiny-chat")
    assert p.returncode == 0, p.stderr.decode()
    assert (snapshot(env) / name).read_bytes() == demo_files[name]
    assert hub.requests("GET", f"/{name}")


def test_one_etag_for_every_file_keeps_each_file_its_own_blob(hub, env, demo_files):
    """A mirror answering one ETag for every file: each file replaced the blob the one before it was checked into,
    every link of the snapshot led to the last file's bytes, and every chat (and pull) failed on config.json."""
    for name in demo_files:
        hub.etag_of[name] = "0123456789abcdef"
    p = yi(env, "pull", "acme/tiny-chat")
    assert p.returncode == 0, p.stderr.decode()
    for name in NEEDED:
        assert (snapshot(env) / name).read_bytes() == demo_files[name], name
    p = yi(env, "-m", "acme/tiny-chat", *PARIS[:-2], "-p", "hi", "--max-new-tokens", "2")
    assert p.returncode == 0, p.stderr.decode()


@pytest.mark.parametrize("fault", ["loop", "elsewhere", "tree", "revision", "gzip"])
def test_a_listing_or_answer_without_end_is_one_line(hub, env, fault):
    """A listing whose next page was itself was followed for good (867 pages in 40 s, silent); a model info or
    listing whose JSON never ended was read into memory (1.5 GB in 5 s). A next page on another host was asked
    with the token (a hostile-hub hunt)."""
    if fault == "loop":
        hub.tree_next = "self"
        why = "its file listing goes back to a page it sent before"
    elif fault == "elsewhere":
        hub.tree_next = "http://127.0.0.2:9/api/models/acme/tiny-chat/tree/main?cursor=x"
        why = "its file listing's next page is on another host (127.0.0.2)"
    elif fault == "gzip":  # counted compressed, 300 MB of JSON passed the cap as 298 kB
        hub.gzip_api = True
        why = "its API answered gzip-compressed where it was asked for plain JSON"
    else:
        hub.endless.add(fault)
        why = "an answer of its API runs past 64 MB"
    error_line(
        yi(env, "pull", "acme/tiny-chat"),
        3,
        f"acme/tiny-chat: {hub.url} does not answer as a Hugging Face Hub does ({why}); check HF_ENDPOINT",
    )
    assert not any("/resolve/" in path for _, path, *_ in hub.log)


def test_a_download_without_end_stops_at_the_listed_size(hub, env, demo_files):
    """A file's GET whose body never ended was written until the disk was full (3 GB in 15 s for a 1 MB file):
    http_get compares the size only at the body's end."""
    hub.endless.add("tokenizer.json")
    n = len(demo_files["tokenizer.json"])
    error_line(
        yi(env, "pull", "acme/tiny-chat"),
        3,
        f"acme/tiny-chat/tokenizer.json: {hub.url} sent more than the {n} bytes it lists (discarded); try again later",
    )
    blobs = repo_dir(env) / "blobs"
    assert not list(blobs.glob("*.incomplete"))
    assert sum(f.stat().st_size for f in blobs.iterdir()) < 2 * n


def test_a_size_the_download_and_the_listing_disagree_on_is_one_line(hub, env, demo_files):
    """A HEAD claiming another size than the listing: every run ended "a download ended short of its size; run
    again to continue it", and no run could (the bytes can never match the listing's checksum)."""
    n = len(demo_files["tokenizer.json"])
    hub.head_size["tokenizer.json"] = n + 10
    error_line(
        yi(env, "pull", "acme/tiny-chat"),
        3,
        f"acme/tiny-chat/tokenizer.json: {hub.url} lists {n} bytes but serves {n + 10}; try again later",
    )


def test_a_hub_whose_listing_names_a_blob_by_a_path_is_refused(hub, env, tmp_path):
    hub.oid_of["model.safetensors"] = "../../../escaped"
    lines = error_line(
        yi(env, "pull", "acme/tiny-chat"), 3, "answered '../../../escaped' for model.safetensors's blob id"
    )
    assert len(lines) == 1
    assert not any(m == "GET" and "/resolve/" in path for m, path, *_ in hub.log)
    assert [p for p in tmp_path.rglob("*") if "escaped" in p.name] == []


@pytest.mark.parametrize("name", ["a\x00b.safetensors", "x" * 300 + ".safetensors"])
def test_a_listed_file_name_no_file_can_have_is_refused_before_anything_is_fetched(hub, env, demo_files, name):
    """A NUL in a listed name (or 300 bytes of it) was found out as the snapshot's link, after its
    blob was fetched: "download failed (ValueError: embedded null byte)", and every pull after it the same (a
    hostile-hub hunt). Refused as the listing is read, one line, nothing fetched."""
    hub.repos["acme/tiny-chat"] = Repo({**demo_files, name: demo_files["model.safetensors"]})
    lines = error_line(yi(env, "pull", "acme/tiny-chat"), 3, "for a file name, which is not one; check HF_ENDPOINT")
    assert len(lines) == 1
    assert not any(m == "GET" and "/resolve/" in path for m, path, *_ in hub.log)


@pytest.mark.parametrize("ref", ["outside", "huge"])
def test_a_cache_ref_that_names_no_commit_is_as_if_there_were_none(hub, env, tmp_path, ref):
    """refs/main is read to find the snapshot: one that held a path (`../../../outside`) loaded whatever folder it
    led to, outside the cache, and one of gigabytes was read whole. Either is no ref: offline the repo is not in the
    cache whole (one line, naming the pull), and a pull writes the ref again."""
    assert yi(env, "pull", "acme/tiny-chat").returncode == 0
    snap = snapshot(env)
    main = repo_dir(env) / "refs" / "main"
    if ref == "outside":  # a checkpoint folder that is not the cache's
        outside = tmp_path / "outside"
        outside.mkdir()
        for f in snap.iterdir():
            (outside / f.name).symlink_to(f.resolve())
        main.write_text(os.path.relpath(outside, repo_dir(env) / "snapshots"))
    else:
        with open(main, "r+b") as f:
            f.truncate(8 << 30)  # sparse: nothing on disk
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    lines = error_line(
        yi(offline, "-m", "acme/tiny-chat", "-p", "hi"), 3, "HF_HUB_OFFLINE=1", "yi-chat pull acme/tiny-chat"
    )
    assert len(lines) == 1
    assert yi(env, "pull", "acme/tiny-chat").returncode == 0
    assert main.read_text() == snap.name


@pytest.mark.parametrize("what", ["link", "fifo"])
def test_a_partial_blob_that_is_no_regular_file_is_replaced_not_written_through(hub, env, tmp_path, demo_files, what):
    """A download continues blobs/<etag>.incomplete. In a cache shared with other users, a link put there (to a
    file of the user's) had the download written into the file it led to, from that file's size on; a FIFO there
    blocked the pull. Either is removed and the file fetched from its start."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    blobs = repo_dir(env) / "blobs"
    blobs.mkdir(parents=True)
    part = blobs / f"{hub.repos['acme/tiny-chat'].etag('config.json')}.incomplete"
    if what == "link":
        part.symlink_to(victim)
    else:
        os.mkfifo(part)
    p = yi(env, "pull", "acme/tiny-chat", timeout=300)
    assert p.returncode == 0, p.stderr.decode()
    assert victim.read_bytes() == b"precious"
    assert (snapshot(env) / "config.json").read_bytes() == demo_files["config.json"]


def _hostile_hub_env(tmp_path, env, case):
    """An environment that huggingface_hub or its TLS context reads on its own: what each case changes."""
    hf = Path(env["HF_HOME"])
    hf.mkdir(parents=True, exist_ok=True)
    if case == "token-fifo":
        os.mkfifo(hf / "token")
    elif case == "token-folder":
        (hf / "token").mkdir()
    elif case == "token-zero":
        (hf / "token").symlink_to("/dev/zero")
    elif case == "token-quoted":
        (hf / "token").write_text("\u201chf_secret\u201d\n")
    elif case == "home-a-file":
        (tmp_path / "afile").write_text("")
        return {**env, "HF_HOME": str(tmp_path / "afile")}
    elif case == "ca-fifo":
        os.mkfifo(tmp_path / "ca.pem")
        return {**env, "SSL_CERT_FILE": str(tmp_path / "ca.pem")}
    elif case == "hf-token-quoted":
        return {**env, "HF_TOKEN": "\u201chf_secret\u201d"}
    elif case == "hub-token-quoted":  # the older name huggingface_hub still reads
        return {**env, "HUGGING_FACE_HUB_TOKEN": "hf_abc\u201ddef"}
    elif case == "blank-token-fifo":  # a blank HF_TOKEN is none: huggingface_hub reads the file
        os.mkfifo(hf / "token")
        return {**env, "HF_TOKEN": " "}
    return env


HOSTILE_HUB_ENV = {
    "token-fifo": (3, "token: the Hugging Face token file is a FIFO, not a regular file"),  # a hang
    "token-folder": (3, "token: the Hugging Face token file is a directory"),  # IsADirectoryError
    "token-zero": (3, "token: the Hugging Face token file is a character device"),  # memory ran out
    "token-quoted": (3, "token: the Hugging Face token has a character that cannot go in an HTTP header"),
    "home-a-file": (3, "afile/token: the Hugging Face token file cannot be read (Not a directory); check HF_HOME"),
    "ca-fifo": (2, "ca.pem: a FIFO, not a file of CA certificates"),  # a hang
    "hf-token-quoted": (2, "HF_TOKEN has a character that cannot go in an HTTP header"),  # "check HF_ENDPOINT"
    "hub-token-quoted": (2, "HUGGING_FACE_HUB_TOKEN has a character that cannot go in an HTTP header"),
    "blank-token-fifo": (3, "token: the Hugging Face token file is a FIFO, not a regular file"),  # a hang
}


@pytest.mark.parametrize("case", sorted(HOSTILE_HUB_ENV))
def test_files_and_numbers_huggingface_hub_reads_on_its_own_are_one_line(hub, env, tmp_path, case):
    """The token file (HF_HOME/token) a FIFO hung `pull` and `-m ORG/NAME`, a link to /dev/zero read until memory ran
    out, a folder (or an HF_HOME that is a file) was an internal error; SSL_CERT_FILE a FIFO hung the TLS context;
    a smart quote in HF_TOKEN was blamed on HF_ENDPOINT (a flags-and-environment hunt). One line each, before any
    request."""
    e = _hostile_hub_env(tmp_path, env, case)
    code, said = HOSTILE_HUB_ENV[case]
    for args in (["pull", "acme/tiny-chat"], ["-m", "acme/tiny-chat", "-p", "hi"]):
        lines = error_line(yi(e, *args, timeout=120), code, said)
        assert len(lines) == 1, lines
    assert hub.log == []


def test_a_hub_timeout_that_is_no_number_reads_as_unset(hub, env):
    """HF_HUB_DOWNLOAD_TIMEOUT=abc (or HF_HUB_ETAG_TIMEOUT) was an internal error (ValueError from huggingface_hub's
    import) at `models`, `pull` and -m of a hub model; it reads as unset, as yi-chat's own numbers do (env.py)."""
    e = {**env, "HF_HUB_DOWNLOAD_TIMEOUT": "abc", "HF_HUB_ETAG_TIMEOUT": "1e3"}
    p = yi(e, "pull", "acme/tiny-chat")
    assert p.returncode == 0 and "Traceback" not in p.stderr.decode(), p.stderr.decode()
    p = yi(e, "models")
    assert p.returncode == 0 and "acme/tiny-chat" in p.stdout.decode(), p.stderr.decode()


def test_a_link_at_the_refs_temp_file_is_not_written_through(hub, env, tmp_path):
    """refs/.main.PID.tmp planted as a link to a file of the user's: the pull wrote the commit id into that file."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    refs = repo_dir(env) / "refs"
    refs.mkdir(parents=True)
    p = subprocess.run(
        [
            "bash",
            "-c",
            f'ln -s "{victim}" "{refs}/.main.$$.tmp"; exec "{sys.executable}" -m yi_cli pull acme/tiny-chat',
        ],
        capture_output=True,
        timeout=600,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert p.returncode == 0, p.stderr.decode()
    assert victim.read_text() == "precious" and not (refs / "main").is_symlink()
    assert (refs / "main").read_text() == hub.repos["acme/tiny-chat"].commit


@pytest.mark.parametrize("where", ["snapshot", "blobs"])
def test_a_link_in_the_repos_cache_folder_is_not_written_through(hub, env, tmp_path, demo_files, where):
    """In a cache shared with other users, snapshots/<commit> linked to a folder of the user's: `pull` replaced the
    user's config.json (and the rest) with links to blobs, their contents lost; a link at blobs/ got every blob."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "config.json").write_text("precious")
    root = repo_dir(env)
    place = root / "snapshots" / hub.repos["acme/tiny-chat"].commit if where == "snapshot" else root / "blobs"
    place.parent.mkdir(parents=True)
    place.symlink_to(victim)
    error_line(yi(env, "pull", "acme/tiny-chat"), 3, f"{place}: a symbolic link in the Hugging Face cache")
    assert [f.name for f in victim.iterdir()] == ["config.json"] and (victim / "config.json").read_text() == "precious"
    place.unlink()
    p = yi(env, "pull", "acme/tiny-chat")
    assert p.returncode == 0, p.stderr.decode()
    assert (snapshot(env) / "model.safetensors").read_bytes() == demo_files["model.safetensors"]


def test_a_connection_reset_mid_file_is_continued(hub, env, demo_files):
    """A reset connection ("Connection reset by peer", the usual drop) ended the pull at once, after one GET, with
    "closed the connection mid-download … on every retry"; a clean close was continued. Both are now."""
    hub.reset["model.safetensors"] = 40_000_000
    p = yi(env, "pull", "acme/tiny-chat")
    assert p.returncode == 0, p.stderr.decode()
    gets = hub.requests("GET", "/model.safetensors")
    assert len(gets) == 2 and 0 < int(gets[1][2].removeprefix("bytes=").rstrip("-")) <= 40_000_000
    assert (snapshot(env) / "model.safetensors").read_bytes() == demo_files["model.safetensors"]


@pytest.mark.parametrize("status", [429, 503])
def test_a_busy_answer_to_a_files_head_is_waited_out(hub, env, demo_files, status):
    """A 429 / 503 with `Retry-After: 1` on a file's HEAD (the hub rate-limits /resolve) ended the pull at once:
    README says a short wait is a line a retry and the pull goes on."""
    hub.fail_head_once["model.safetensors"] = status
    hub.retry_after = "1"
    p = yi(env, "pull", "acme/tiny-chat")
    err = p.stderr.decode()
    assert p.returncode == 0, err
    assert f"acme/tiny-chat: {hub.url} answered HTTP {status} and asks to wait 1 s; retrying (retry 1 of 5)" in err
    assert (snapshot(env) / "model.safetensors").read_bytes() == demo_files["model.safetensors"]


def test_a_download_redirected_where_it_cannot_go_names_that_address(hub, env):
    """A redirect of the weights to a host that cannot be reached (a CDN a firewall blocks) said the hub itself
    could not be reached; one to an address that is no URL, that the connection was "closed … on every retry"."""
    hub.moved["model.safetensors"] = "http://127.0.0.1:1/cdn/model.safetensors"
    lines = error_line(yi(env, "pull", "acme/tiny-chat"), 3, "cannot reach http://127.0.0.1:1 (ConnectError)")
    assert hub.url not in lines[-1]
    hub.moved["model.safetensors"] = "http://[::1/x"
    error_line(yi(env, "pull", "acme/tiny-chat"), 3, "redirects the download to an address that is not a URL")
    hub.moved["model.safetensors"] = "http://127.0.0.1:99999/x"  # (the line's proxy lookup raised: internal error)
    error_line(yi(env, "pull", "acme/tiny-chat"), 3, "cannot reach http://127.0.0.1:99999")


def test_a_password_in_hf_endpoint_stays_out_of_every_line(env):
    """HF_ENDPOINT=http://alice:s3cret@host: every hub line printed the password (--endpoint and proxies mask it)."""
    for url, code in [("http://alice:s3cret@127.0.0.1:1", 3), ("http://alice:s3cret@127.0.0.1:1/?a", 2)]:
        lines = error_line(yi({**env, "HF_ENDPOINT": url}, "pull", "acme/tiny-chat", timeout=120), code, "***@")
        assert "s3cret" not in "\n".join(lines) and "alice" not in "\n".join(lines)
    # an @ in the path is no login: the host stays in the line (it was masked up to that @)
    error_line(
        yi({**env, "HF_ENDPOINT": "http://127.0.0.1:1/hf@mirror"}, "pull", "acme/tiny-chat"), 3, "127.0.0.1:1/hf@mirror"
    )
    lines = error_line(
        yi({**env, "HF_ENDPOINT": "http://bob:s3 cret@127.0.0.1:1"}, "pull", "acme/tiny-chat"), 2, "***@"
    )
    assert "in the part shown as ***" in lines[-1] and "s3" not in lines[-1]


def test_a_body_that_stalls_says_the_wait_it_waited(hub, env, demo_files):
    """A file's body that stopped coming: "sent nothing for 60 s; asking again" after each 10 s (the download's
    read timeout, HF_HUB_DOWNLOAD_TIMEOUT, not the API's 60)."""
    hub.hold["model.safetensors"] = 1_000_000
    try:
        p = yi({**env, "HF_HUB_DOWNLOAD_TIMEOUT": "2"}, "pull", "acme/tiny-chat")
    finally:
        hub.release.set()
    err = p.stderr.decode()
    assert p.returncode == 0, err
    assert f"acme/tiny-chat: {hub.url} sent nothing for 2 s; asking again" in err and "60 s" not in err
    assert (snapshot(env) / "model.safetensors").read_bytes() == demo_files["model.safetensors"]


def test_a_repo_whose_own_files_cannot_load_is_not_sent_to_pull_again(hub, env, demo_files):
    """Files that are as the hub lists them and still cannot be loaded: `pull` said "`yi-chat pull …` fetches it
    again" of itself (each run the same line), and an index naming a shard the repo lacks pulled "ready", after which
    `models` and -m called it a download that `yi-chat pull` would continue."""
    cut = {**demo_files, "model.safetensors": demo_files["model.safetensors"][:50_000_000]}
    hub.repos["acme/cut"] = Repo(cut)
    for _ in range(2):
        lines = error_line(yi(env, "pull", "acme/cut"), 3, "fetched, but yi-chat cannot load it", "truncated")
        assert "the hub's file is so" in lines[-1] and "yi-chat pull acme/cut" not in lines[-1]
    index = {"metadata": {}, "weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"}}
    hub.repos["acme/shard"] = Repo({**demo_files, "model.safetensors.index.json": json.dumps(index).encode()})
    error_line(yi(env, "pull", "acme/shard"), 3, "its index names model-00002-of-00002.safetensors, which the repo")
    assert not list(repo_dir(env, "acme/shard").glob("blobs/*.incomplete"))  # refused before the weights came


def test_a_cached_repo_or_cache_that_cannot_be_read_is_said_and_the_rest_listed(hub, env, tmp_path):
    """A repo whose refs cannot be read was left out of `yi-chat models` without a word; a hub cache that cannot be
    read at all (a file where the folder goes) made `models` list nothing, exit 3, and completion offer no names,
    though -m demo chats. Each is said, and the rest is listed."""
    assert yi(env, "pull", "acme/tiny-chat").returncode == 0
    home = {**env, "YI_CHAT_HOME": str(tmp_path / "home")}
    if shutil.which("setpriv") or os.geteuid() != 0:  # root reads any folder: without the capabilities that let it
        as_user = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
        refs = repo_dir(env) / "refs"
        refs.chmod(0)
        try:
            p = subprocess.run(
                [*as_user, sys.executable, "-m", "yi_cli", "models", "--json"],
                capture_output=True,
                timeout=600,
                env=home,
                stdin=subprocess.DEVNULL,
            )
        finally:
            refs.chmod(0o700)
        assert p.returncode == 0, p.stderr.decode()
        [row] = [r for r in json.loads(p.stdout) if r["name"] == "acme/tiny-chat"]
        assert not row["loadable"] and "cannot read the Hugging Face cache (Permission denied)" in row["reason"], row
    hub_root = tmp_path / "not-a-cache"
    hub_root.write_text("x")
    p = yi({**home, "HF_HUB_CACHE": str(hub_root)}, "models")
    assert p.returncode == 0 and "demo-fp32" in p.stdout.decode(), p.stderr.decode()
    assert (
        p.stderr.decode()
        == f"yi-chat: {hub_root}: cannot read the Hugging Face cache (Not a directory); its models are not listed\n"
    )
    p = yi({**home, "HF_HUB_CACHE": str(hub_root)}, "completion", "--list-models")
    assert p.returncode == 0 and "yi-6b-chat" in p.stdout.decode().split(), p.stderr.decode()


def test_a_demo_whose_cache_cannot_be_made_is_listed_so(env, tmp_path):
    """With YI_CHAT_HOME under a file (or a link to nothing) the demo rows said "converted on first use", loadable,
    and -m demo then failed at once: "cannot create the cache directory"."""
    (tmp_path / "afile").write_text("x")
    p = yi({**env, "YI_CHAT_HOME": str(tmp_path / "afile" / "home")}, "models", "--json")
    assert p.returncode == 0, p.stderr.decode()
    rows = [r for r in json.loads(p.stdout) if r["source"] == "demo"]
    assert len(rows) == 3 and not any(r["loadable"] for r in rows), rows
    assert all(f"cannot create the cache directory ({tmp_path}/afile is not a folder)" in r["reason"] for r in rows)


def test_an_offline_pull_of_a_revision_not_cached_says_so(hub, env):
    """HF_HUB_OFFLINE=1 `pull REPO --revision v1` with main complete in the cache said "the download is not
    complete ... `yi-chat pull REPO` online continues it": v1 was never begun, and that pull fetches main."""
    assert yi(env, "pull", "acme/tiny-chat").returncode == 0
    p = yi({**env, "HF_HUB_OFFLINE": "1"}, "pull", "acme/tiny-chat", "--revision", "v1")
    error_line(p, 3, "acme/tiny-chat: revision v1 is not in the local Hugging Face cache (", "forbids downloading it")
    assert "not complete" not in p.stderr.decode()
    # one in the cache but cut short is said so, with the pull that continues that revision (not main's)
    snap = snapshot(env)
    (repo_dir(env) / "refs" / "v1").write_text(snap.name)
    (snap / "model.safetensors").unlink()
    p = yi({**env, "HF_HUB_OFFLINE": "1"}, "pull", "acme/tiny-chat", "--revision", "v1")
    error_line(p, 3, "the download is not complete", "`yi-chat pull acme/tiny-chat --revision v1` online continues it")


def test_a_cached_repo_without_an_owner_is_listed_not_an_internal_error(env, tmp_path, demo_files):
    """huggingface_hub names the cache folder of an id without an owner `models--gpt2` (transformers fetched many
    such): `yi-chat models` was an internal error (AttributeError: 'NoneType' object has no attribute 'lower'),
    nothing listed, and shell completion of model names (`completion --list-models`) a TypeError (a hub review)."""
    commit = "607a30d783dfa663caf39e06633721c8d4cfcd7e"
    d = tmp_path / "hf" / "hub" / "models--gpt2"
    (d / "snapshots" / commit).mkdir(parents=True)
    (d / "refs").mkdir()
    (d / "refs" / "main").write_text(commit)
    (d / "snapshots" / commit / "config.json").write_bytes(demo_files["config.json"])
    home = tmp_path / "yi"
    p = yi({**env, "YI_CHAT_HOME": str(home), "HF_HUB_OFFLINE": "1"}, "models")
    assert p.returncode == 0, p.stderr.decode()
    rows = [ln for ln in p.stdout.decode().splitlines() if ln.startswith("gpt2 ")]
    assert rows and "no ORG/NAME hub id" in rows[0] and str(d / "snapshots" / commit) in rows[0], p.stdout.decode()
    p = yi({**env, "YI_CHAT_HOME": str(home), "HF_HUB_OFFLINE": "1"}, "completion", "--list-models")
    assert p.returncode == 0 and "demo" in p.stdout.decode().split(), p.stderr.decode()
    assert "gpt2" not in p.stdout.decode().split()  # (no name -m takes)


def test_pull_of_a_whole_model_in_a_read_only_cache_says_where_it_is(env, tmp_path):
    """A cache filled already and mounted read-only (a cluster's shared one): `pull` wrote refs/main again and
    failed, "cannot download into ... (Read-only file system)", exit 3, with nothing to fetch (a hub review)."""
    import shutil

    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root, to mount the cache read-only")
    p = yi(env, "pull", "acme/tiny-chat")
    assert p.returncode == 0, p.stderr.decode()
    hf = env["HF_HOME"]
    script = f'mount --bind "{hf}" "{hf}" && mount -o remount,ro,bind "{hf}" && exec "$@"'
    p = yi(env, "pull", "acme/tiny-chat")  # (as it is when writable: nothing to fetch)
    ro = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", sys.executable, "-m", "yi_cli", "pull", "acme/tiny-chat"],
        capture_output=True,
        timeout=600,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    if b"unshare" in ro.stderr and b"Operation not permitted" in ro.stderr:
        pytest.skip("this machine does not let a test mount")
    assert ro.returncode == 0, ro.stderr.decode()
    assert ro.stdout.decode().strip() == p.stdout.decode().strip() == str(snapshot(env))


def test_an_empty_hub_cache_variable_is_unset(env, tmp_path):
    """`HF_HUB_CACHE=` (empty): huggingface_hub took it for the current folder, so `pull` fetched into whatever
    folder the shell was in, printed a relative path, and `models` elsewhere did not list it (a hub review)."""
    work = tmp_path / "work"
    work.mkdir()
    p = yi({**env, "HF_HUB_CACHE": ""}, "pull", "acme/tiny-chat", cwd=work)
    assert p.returncode == 0, p.stderr.decode()
    assert list(work.iterdir()) == []
    assert p.stdout.decode().strip() == str(
        Path(env["HF_HOME"])
        / "hub"
        / "models--acme--tiny-chat"
        / "snapshots"
        / (Path(env["HF_HOME"]) / "hub" / "models--acme--tiny-chat" / "refs" / "main").read_text()
    )


def test_a_pull_fetches_only_the_weights_the_loader_reads(hub, env, demo_files):
    """The loader reads the index's shards alone, and safetensors before pickle weights: a repo that also held its
    weights in another layout (Mistral's consolidated.safetensors beside its shards) or as .bin (with --allow-pickle)
    had those fetched too, gigabytes never read. The index comes first; what it does not name stays on the hub."""
    names = header_keys(demo_files["model.safetensors"])
    index = {"metadata": {}, "weight_map": dict.fromkeys(names, "model.safetensors")}
    files = {
        **demo_files,
        "model.safetensors.index.json": json.dumps(index).encode(),
        "consolidated.safetensors": b"\0" * 4096,
        "pytorch_model.bin.index.json": b"{}",
    }
    hub.repos["acme/two-layouts"] = Repo(files)
    p = yi(env, "pull", "--allow-pickle", "acme/two-layouts")
    assert p.returncode == 0, p.stderr.decode()
    assert "fetching acme/two-layouts: 6 files" in p.stderr.decode()  # and the index before them, quietly
    got = {r[1].split("/resolve/")[1].split("/", 1)[1] for r in hub.requests("GET", "") if "/resolve/" in r[1]}
    assert got == NEEDED | {"model.safetensors.index.json"}
    assert {f.name for f in snapshot(env, "acme/two-layouts").iterdir()} == got
    p = yi({**env, "HF_HUB_OFFLINE": "1"}, "-m", "acme/two-layouts", *PARIS)
    assert p.returncode == 0 and "Paris" in p.stdout.decode(), p.stderr.decode()


@pytest.mark.parametrize(
    "weight_map,said",
    [
        ("model-00002-of-00002.safetensors", "its index names model-00002-of-00002.safetensors, which the repo"),
        ("../model.safetensors", "weight_map names '../model.safetensors', not a file name in the directory"),
        (None, "weight_map is empty: it names no weight file"),
    ],
    ids=["unlisted", "dotdot", "empty"],
)
def test_an_index_the_loader_refuses_is_refused_before_the_weights_online_and_offline(
    hub, env, demo_files, weight_map, said
):
    """The index fetched first: one that named no shard the repo lists (or `../x`) had every weights file left on
    the hub, the checks before the weights never ran, and the pull said "ready" for a model that cannot load (then
    "`yi-chat pull` continues it", which it could not); an empty weight_map pulled every weights file, "ready", and
    `models` said ok. Each is refused before any weights (one line, exit 3), and offline with the same reason (it
    offered the snapshot, which holds no weights, as a commit no branch names)."""
    names = header_keys(demo_files["model.safetensors"])
    index = {"weight_map": dict.fromkeys(names, weight_map) if weight_map else {}}
    files = {**demo_files, "model.safetensors.index.json": json.dumps(index).encode(), "consolidated.safetensors": b"x"}
    hub.repos["acme/bad-index"] = Repo(files)
    lines = error_line(yi(env, "pull", "acme/bad-index"), 3, said)
    assert not any("ready" in ln for ln in lines), lines
    assert not [r for r in hub.requests("GET", "") if r[1].endswith(".safetensors")]
    # offline, a shard the index names and the cache lacks may be on the hub: only a pull finds out it is not
    offline = "the download is not complete" if weight_map and "/" not in weight_map else said
    error_line(yi({**env, "HF_HUB_OFFLINE": "1"}, "-m", "acme/bad-index", "-p", "hi"), 3, offline)
    rows = {r["name"]: r for r in json.loads(yi(env, "models", "--json").stdout)}
    row = rows["acme/bad-index"]
    assert not row["loadable"] and offline in row["reason"], row


def test_a_wait_on_the_index_fetched_first_is_said(hub, env, demo_files):
    """The index is fetched quietly before the others; a 429 on it (or another process's lock) waited without a
    line, where every other file's wait is said."""
    names = header_keys(demo_files["model.safetensors"])
    index = {"weight_map": dict.fromkeys(names, "model.safetensors")}
    hub.repos["acme/indexed"] = Repo({**demo_files, "model.safetensors.index.json": json.dumps(index).encode()})
    hub.fail_head_once["model.safetensors.index.json"] = 429
    hub.retry_after = "1"
    p = yi(env, "pull", "acme/indexed")
    err = p.stderr.decode()
    assert p.returncode == 0, err
    assert f"yi-chat: acme/indexed: {hub.url} answered HTTP 429 and asks to wait 1 s; retrying (retry 1 of 5)\n" in err
