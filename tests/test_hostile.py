"""The hostile-input battery of issue 13: files, configs, model directories, stdin and streams, signals at random
instants, concurrency, misbehaving servers, terminal injection.

Every case asserts one clear outcome (the error type and so the exit code, the file and field named in the
message, or the exact data on disk) and that no traceback escapes. Most run in-process against the readers the
CLI uses; the rest run the real command on a tiny random Llama checkpoint (hidden 64, 2 layers, the demo's
tokenizer) or against a loopback server, so the whole file stays within a few minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests import compat_servers as cs
from tests.compat_servers import Server
from tests.test_bad_input import make_tiny, no_traceback, one_line_error, yi
from yi_cli import inputs
from yi_cli.errors import EXIT_LOAD, EXIT_USAGE, LoadError, UsageError, YiError
from yi_cli.safe_text import safe

PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_src(tmp_path_factory, demo_fp32_dir):
    return make_tiny(tmp_path_factory.mktemp("hostile") / "tiny", demo_fp32_dir)


@pytest.fixture
def tiny(tmp_path, tiny_src):
    return Path(shutil.copytree(tiny_src, tmp_path / "ckpt"))


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def sparse(path: Path, size: int) -> None:
    """A file of `size` bytes that takes no disk: the size check must refuse it before reading."""
    with open(path, "wb") as f:
        f.truncate(size)


# --- session files ------------------------------------------------------------------------------------------------

GOOD_SESSION = {
    "format": "yi-chat-session",
    "version": 1,
    "model": "m",
    "settings": {},
    "system": None,
    "turns": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
}


def with_turn(**changes) -> str:
    d = json.loads(json.dumps(GOOD_SESSION))
    d["turns"][0].update(changes)
    return json.dumps(d)


SESSION_CASES = {
    "inf-literal": (with_turn().replace('"content": "hi"', '"content": "hi", "tokens": Infinity'), "Infinity"),
    "nan-literal": (with_turn().replace('"content": "hi"', '"content": "hi", "tokens": NaN'), "NaN"),
    "1e400": (with_turn().replace('"content": "hi"', '"content": "hi", "tokens": 1e400'), "out of range"),
    "neg-1e400": (
        json.dumps(GOOD_SESSION).replace('"settings": {}', '"settings": {"temperature": -1e400}'),
        "out of range",
    ),
    "huge-int": (with_turn().replace('"content": "hi"', '"content": "hi", "tokens": ' + "9" * 41), "out of range"),
    "5000-digit-int": (
        with_turn().replace('"content": "hi"', '"content": "hi", "tokens": ' + "9" * 5000),
        "out of range",
    ),
    "nested-list-100000": (json.dumps(GOOD_SESSION)[:-1] + ', "x": ' + nested(100_000) + "}", "nested 100001 deep"),
    "nested-object-100000": ('{"a":' * 100_000 + "1" + "}" * 100_000, "nested 100000 deep"),
    "nested-65": (json.dumps(GOOD_SESSION)[:-1] + ', "x": ' + nested(65) + "}", "nested 66 deep"),
    "tokens-string": (with_turn(tokens="many"), "tokens must be an integer"),
    "tokens-float": (with_turn(tokens=1.5), "tokens must be an integer"),
    "tokens-negative": (with_turn(tokens=-5), "turn 0: tokens -5 is not a count of tokens"),
    "tokens-huge": (with_turn(tokens=10**30), "is not a count of tokens (0 to 2147483647)"),
    "stats-list": (with_turn(stats=[1, 2]), "stats an object"),
    "finish-reason-number": (with_turn(finish_reason=5), "finish_reason text"),
    "content-number": (with_turn(content=5), "turn 0 has no text content"),
    "role-swapped": (with_turn(role="assistant"), "should be a user turn"),
    "two-user-turns": (
        json.dumps({**GOOD_SESSION, "turns": GOOD_SESSION["turns"][:1] * 2 + GOOD_SESSION["turns"][1:]}),
        "turn 1 should be an assistant turn",  # "a assistant" before
    ),
    "context-start-past-the-end": (json.dumps({**GOOD_SESSION, "context_start": 4}), "context_start must be"),
    "context-start-odd": (json.dumps({**GOOD_SESSION, "context_start": 1}), "context_start must be"),
    "turns-not-list": (json.dumps({**GOOD_SESSION, "turns": {"a": 1}}), "not a chat session"),
    "system-list": (json.dumps({**GOOD_SESSION, "system": ["x"]}), "system prompt must be text"),
    "unanswered-user-turn": (json.dumps({**GOOD_SESSION, "turns": GOOD_SESSION["turns"][:1]}), "without a reply"),
    "wrong-format": (json.dumps({**GOOD_SESSION, "format": "other"}), "not a yi-chat session file"),
    "version-2": (json.dumps({**GOOD_SESSION, "version": 2}), "version 2 is not supported"),
    "version-string": (json.dumps({**GOOD_SESSION, "version": "1"}), "version '1' is not supported"),
    "temperature-text": (json.dumps({**GOOD_SESSION, "settings": {"temperature": "hot"}}), "temperature"),
    "unknown-setting": (json.dumps({**GOOD_SESSION, "settings": {"temprature": 1}}), "unknown setting"),
    "settings-list": (json.dumps({**GOOD_SESSION, "settings": [1]}), "malformed session file"),
    "settings-names": (json.dumps({**GOOD_SESSION, "settings": ["seed"]}), "settings is not an object"),
    "settings-text": (json.dumps({**GOOD_SESSION, "settings": "seed"}), "settings is not an object"),
    # every reply of the resumed chat failed (the sampler's float32 made it infinity): refused as the file is read
    "top-k-10**39": (json.dumps({**GOOD_SESSION, "settings": {"top_k": 10**39}}), "top_k must be >= 0 (0 = off)"),
    "top-level-list": ("[1, 2]", "not a yi-chat session file"),
    "empty": ("", "corrupt session file (the file is empty)"),
    "truncated": (json.dumps(GOOD_SESSION)[:40], "corrupt session file"),
    "not-utf8": (b'{"format": "\xff\xfe"}', "corrupt session file"),
    # half of a character outside the BMP (a rare CJK one, an emoji) as a JSON escape alone, as a tool slicing
    # UTF-16 writes it: loaded, the chat failed at every output after it ('/history' failed (UnicodeEncodeError)),
    # every reply too, and `yi-chat sessions` ended in a traceback
    "lone-surrogate-turn": (with_turn(content="坏\ud842字"), "a lone surrogate"),
    "lone-surrogate-system": (json.dumps({**GOOD_SESSION, "system": "\udfb7"}), "a lone surrogate"),
    "lone-surrogate-model": (json.dumps({**GOOD_SESSION, "model": "m\ud83d"}), "a lone surrogate"),
}


@pytest.mark.parametrize("case", sorted(SESSION_CASES))
def test_session_file_malformed(case, home):
    from yi_cli.conversation import store

    text, needle = SESSION_CASES[case]
    store.sessions_dir().mkdir(parents=True, exist_ok=True)
    f = store.sessions_dir() / "20261204-000000-aaaaaa.json"  # in the store, as the listing reads it
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(YiError) as e:
        store.read(str(f))
    msg = str(e.value)
    assert str(f) in msg and needle in msg and "\n" not in msg, msg
    # the store's listing passes it by too (it listed files --resume refused: a version 2, settings of no use)
    assert f.name not in {x["name"] for x in store.entries()}
    f.write_text(json.dumps(GOOD_SESSION))  # the same file, well formed: listed (the check above can fail)
    assert f.name in {x["name"] for x in store.entries()}


def test_a_listing_cache_of_the_version_before_is_not_taken(home):
    """The listing took only what --resume takes from version 2 on; a cache written before kept an entry of a file
    --resume refuses (tokens -5), and `-c` chose it as the newest, then failed. Version 1's cache is read again."""
    from yi_cli.conversation import listing, store

    folder = store.sessions_dir()
    folder.mkdir(parents=True)
    bad = folder / "20261204-000001-bbbbbb.json"
    bad.write_text(with_turn(tokens=-5))
    st = bad.stat()
    entry = {"mode": "interactive", "model": "m", "updated": "2026-12-04T00:00:01Z", "exchanges": 1, "first_line": "hi"}
    (folder / listing.NAME).write_text(
        json.dumps({"version": 1, "files": {bad.name: {"id": listing.identity(st), "entry": entry}}})
    )
    assert bad.name not in {x["name"] for x in store.entries()}
    cached = json.loads((folder / listing.NAME).read_text())
    assert cached["version"] == listing.VERSION


CACHE_ENTRY_CASES = {  # (field, value) of a cached entry that store._entry never makes
    "surrogate-updated": ("updated", "\ud800x"),
    "surrogate-first-line": ("first_line", "\ud800x"),
    "surrogate-model": ("model", "m\ud800"),
    "surrogate-mode": ("mode", "\udfff"),
    "escapes-updated": ("updated", "\x1b]0;PWNED\x07\x1b[2J\x1b[31mRED\nNEWLINE"),
    "hand-edited-updated": ("updated", "yesterday"),
    "impossible-updated": ("updated", "9999-99-99T99:99:99Z"),
    "two-lines": ("first_line", "a\nb"),
    "first-line-too-long": ("first_line", "x" * 1001),
    "negative-exchanges": ("exchanges", -1),
}


@pytest.mark.parametrize("case", sorted(CACHE_ENTRY_CASES))
def test_a_listing_cache_entry_is_taken_only_as_the_listing_writes_it(home, case):
    """A `.listing-cache` entry was checked for its types alone: a lone surrogate (the JSON escape \\ud800) in any of
    its text ended `yi-chat sessions` and `--json` in UnicodeEncodeError, and an `updated` of escape sequences went
    raw into the table. An entry of values the listing never writes is ignored and the file read again: the listing
    is the one without the cache, and a UTF-8 terminal shows it."""
    from yi_cli.conversation import listing, store

    folder = store.sessions_dir()
    folder.mkdir(parents=True)
    f = folder / "20261204-000000-aaaaaa.json"
    f.write_text(json.dumps({**GOOD_SESSION, "mode": "interactive", "updated": "2026-12-04T00:00:00.000000Z"}))
    plain = store.entries()
    field, value = CACHE_ENTRY_CASES[case]
    entry = {k: v for k, v in plain[0].items() if k not in ("path", "name")}

    def hostile_cache():
        cache = {"version": listing.VERSION, "files": {f.name: {"id": listing.identity(f.stat()), "entry": entry}}}
        (folder / listing.NAME).write_text(json.dumps(cache))  # ASCII: \\ud800 as the escape

    entry[field] = value
    hostile_cache()
    assert store.entries() == plain and store.resolve("last") == f
    if not case.startswith(("surrogate", "escapes")):  # the ones the command itself failed on, or printed raw
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8:strict"}  # as LANG=en_US.UTF-8 has it
    for flags in ([], ["--json"]):
        hostile_cache()
        p = subprocess.run([PY, "-m", "yi_cli", "sessions", *flags], capture_output=True, env=env)
        assert p.returncode == 0 and p.stderr == b"", p.stderr.decode()
        out = p.stdout.decode()
        if flags:
            assert json.loads(out) == plain
        else:
            assert "\x1b" not in out and "\\x1b" not in out and "2026-12-04 00:00:00   interactive  m " in out, out


def test_a_session_with_a_lone_surrogate_is_passed_by_in_the_listing(home):
    """`yi-chat sessions` ended in a traceback (UnicodeEncodeError) on a stored file holding half a character as a
    JSON escape (\\ud842): the listing leaves it out, as any file that cannot be read as a session, names it on
    stderr, and lists the rest; a pair of escapes that is one character (𠮷) is that character."""
    store = home / "data" / "sessions"
    store.mkdir(parents=True)
    (store / "20261204-000000-aaaaaa.json").write_text(with_turn(content="坏\ud842字"))
    (store / "20261204-000001-bbbbbb.json").write_text(with_turn(content="\ud842\udfb7野家"))
    p = subprocess.run(
        [PY, "-m", "yi_cli", "sessions"], capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert p.returncode == 0 and p.stderr.decode() == (
        f"left out 1 file in {store} that yi-chat cannot read as sessions: 20261204-000000-aaaaaa.json\n"
    )
    out = p.stdout.decode()
    assert "𠮷野家" in out and "20261204-000001-bbbbbb.json" in out and "aaaaaa" not in out


def test_the_listing_shows_a_stored_files_mode_and_name_visibly(home):
    """`yi-chat sessions` printed a session file's `mode` as the file held it: an escape sequence there (or in a
    file's name) reached the terminal and ran (colours, a cleared screen, a window title). Shown as escapes, as a
    first line or a model is; a long mode is cut to its column."""
    store = home / "data" / "sessions"
    store.mkdir(parents=True)
    hostile = {**GOOD_SESSION, "mode": "\x1b]0;pwned\x07\x1b[2J" + "x" * 40}
    (store / "20261204-000000-aaaaaa.json").write_text(json.dumps(hostile))
    (store / "20261204-000001-\x1b[31m.json").write_text(json.dumps(GOOD_SESSION))
    p = subprocess.run(
        [PY, "-m", "yi_cli", "sessions"], capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert p.returncode == 0 and p.stderr == b"", p.stderr.decode()
    out = p.stdout.decode()
    assert "\x1b" not in out and "\x07" not in out, out
    assert "\\x1b]0;pwne..." in out and "20261204-000001-\\x1b[31m.json" in out, out


def test_the_listing_keeps_a_row_a_line_and_its_folder_and_json_inert(tmp_path):
    """A session file's name holding a newline broke its row of `yi-chat sessions` in two (safe() keeps \\n); a
    YI_CHAT_HOME holding escape sequences was written raw into the table's header and into "no saved sessions in";
    `--json` left U+202E and a C1 CSI raw in a name, a path, a model and a first line, as the chat's --json does
    not. Each is shown visibly, and --json still reads back as the same strings."""
    home = tmp_path / "h\x1b]0;T\x07\nX"
    folder = home / "data" / "sessions"
    folder.mkdir(parents=True)
    hostile = {**GOOD_SESSION, "model": "m\u202eodel", "updated": "2026-12-04T00:00:00.000000Z"}
    hostile["turns"] = [{"role": "user", "content": "abc\u202edef \x9b2J"}, {"role": "assistant", "content": "ok"}]
    names = ["new\nline.json", "bidi\u202eevil.json"]
    for name in names:
        (folder / name).write_text(json.dumps(hostile))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "YI_CHAT_HOME": str(home), "PYTHONIOENCODING": "utf-8:strict"}
    table = subprocess.run([PY, "-m", "yi_cli", "sessions"], capture_output=True, env=env)
    assert table.returncode == 0 and table.stderr == b"", table.stderr.decode()
    out = table.stdout.decode()
    assert not any(c in out for c in "\x1b\x07\u202e\x9b"), out
    lines = out.splitlines()
    assert len(lines) == 3 and lines[0].endswith("(in " + str(tmp_path) + "/h\\x1b]0;T\\x07\\nX/data/sessions)"), out
    assert lines[1].endswith("2J  new\\nline.json") and lines[2].endswith("2J  bidi\\u202eevil.json"), out
    listed = subprocess.run([PY, "-m", "yi_cli", "sessions", "--json"], capture_output=True, env=env)
    assert listed.returncode == 0 and listed.stderr == b"", listed.stderr.decode()
    assert not any(c in listed.stdout.decode() for c in "\u202e\x9b"), listed.stdout.decode()
    got = json.loads(listed.stdout)
    assert sorted((e["name"], e["path"]) for e in got) == sorted((n, str(folder / n)) for n in names)
    assert {(e["model"], e["first_line"]) for e in got} == {("m\u202eodel", "abc\u202edef \x9b2J")}
    env["YI_CHAT_HOME"] = str(tmp_path / "\x1b[2J")
    empty = subprocess.run([PY, "-m", "yi_cli", "sessions"], capture_output=True, env=env)
    assert (empty.returncode, empty.stderr.decode()) == (0, f"no saved sessions in {tmp_path}/\\x1b[2J/data/sessions\n")


def test_a_stored_files_mode_that_is_not_text_is_listed_as_none(home):
    """A session file's `mode` that is a list or a number was listed as Python wrote it (`['x']` in the table, a
    JSON array in --json, where a mode is a string or null); the listing cache then refused its own entry."""
    store = home / "data" / "sessions"
    store.mkdir(parents=True)
    for i, mode in enumerate((["x"], 7, {"a": 1})):
        (store / f"20261204-00000{i}-aaaaaa.json").write_text(json.dumps({**GOOD_SESSION, "mode": mode}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    listed = subprocess.run([PY, "-m", "yi_cli", "sessions", "--json"], capture_output=True, env=env)
    assert listed.returncode == 0 and listed.stderr == b"", listed.stderr.decode()
    assert [e["mode"] for e in json.loads(listed.stdout)] == [None, None, None]
    table = subprocess.run([PY, "-m", "yi_cli", "sessions"], capture_output=True, env=env).stdout.decode()
    rows = [ln.split() for ln in table.splitlines() if ln.startswith("2026")]
    assert [r[2] for r in rows] == ["-", "-", "-"], table


@pytest.mark.parametrize("flags", [[], ["--json"]])
def test_the_listing_of_a_file_whose_name_is_not_utf8(home, flags):
    """A session file whose name holds a byte that is not UTF-8 (copied from a Latin-1 system) ended `yi-chat
    sessions` in a traceback (UnicodeEncodeError) on a UTF-8 terminal, whose stdout is strict: the name is listed
    with the byte as an escape, and the other sessions with it."""
    store = home / "data" / "sessions"
    store.mkdir(parents=True)
    (store / "20261204-000001-aaaaaa.json").write_text(json.dumps(GOOD_SESSION))
    with open(os.path.join(os.fsencode(store), b"20261204-000000-caf\xe9.json"), "w") as f:
        f.write(json.dumps(GOOD_SESSION))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8:strict"}  # as LANG=en_US.UTF-8 has it
    p = subprocess.run([PY, "-m", "yi_cli", "sessions", *flags], capture_output=True, env=env)
    assert p.returncode == 0 and p.stderr == b"", p.stderr.decode()
    out = p.stdout.decode()
    names = [r["name"] for r in json.loads(out)] if flags else out
    assert "20261204-000000-caf\\xe9.json" in names and "20261204-000001-aaaaaa.json" in names, out


def _fifo(tmp_path: Path) -> Path:
    f = tmp_path / "fifo.json"
    os.mkfifo(f)
    return f


SPECIAL_FILES = {
    "fifo": (_fifo, "not a regular file (a FIFO)"),
    "dev-zero": (lambda p: Path("/dev/zero"), "not a regular file (a character device)"),
    "directory": (lambda p: p, "not a regular file (a directory)"),
    "65-MiB": (lambda p: (sparse(p / "big.json", 65 << 20), p / "big.json")[1], "more than the 64 MiB limit"),
    "missing": (lambda p: p / "nope.json", "no such session file"),
    "symlink-loop": (lambda p: (os.symlink(p / "loop", p / "loop"), p / "loop")[1], "cannot read"),
}


@pytest.mark.parametrize("case", sorted(SPECIAL_FILES))
def test_session_special_files_refused_without_blocking(case, tmp_path, home):
    from yi_cli.conversation import store

    make, needle = SPECIAL_FILES[case]
    f = make(tmp_path)
    result: dict = {}

    def load():  # in a thread: a FIFO opened for reading would block the test forever
        try:
            store.read(str(f))
        except YiError as e:
            result["msg"] = str(e)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "reading the file blocked"
    assert needle in result["msg"], result


def test_load_of_a_fifo_in_a_piped_chat_is_one_error_and_the_chat_goes_on(tmp_path, tiny_src):
    fifo = _fifo(tmp_path)
    p = yi("-m", tiny_src, "--max-new-tokens", "2", stdin=f"/load {fifo}\nhello\n", home=tmp_path / "h", timeout=300)
    err = p.stderr.decode()
    assert p.returncode == 1, err  # the failed command counts; the chat went on to answer "hello"
    assert "not a regular file (a FIFO)" in err and str(fifo) in err
    no_traceback(err)
    sessions = list((tmp_path / "h" / "data" / "sessions").glob("*.json"))
    assert len(sessions) == 1 and json.loads(sessions[0].read_text())["turns"][0]["content"] == "hello"


def test_a_device_or_socket_is_not_attached_but_a_pipe_is(tmp_path, home):
    """/file /dev/zero read 64 MiB to say "too large to attach (over 64 MiB)" where /load says "not a regular file
    (a character device)" up front. /file and -f refuse a device or a socket before opening it, with that kind of
    line; a pipe, which `-f <(cmd)` names (/dev/fd/63) and /dev/stdin is when piped, is still read to its end."""
    import socket

    from tests.fixtures import ScriptedEngine, plain_chat
    from yi_cli.conversation import attach

    sock = tmp_path / "sock"
    chat, out, err = plain_chat(ScriptedEngine())
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock))
        for path in ("/dev/zero", sock):
            chat.handle(f"/file {path}")
    tail = "only regular files and pipes can be attached"
    assert err.getvalue().splitlines() == [
        f"error: /dev/zero: not a regular file (a character device); {tail}",
        f"error: {sock}: not a regular file (a socket); {tail}",
    ]
    assert chat.attachments == [] and chat.failures == 2
    # -f: refused before the model loads (a model that does not exist would be exit 3)
    p = yi("--model", str(tmp_path / "no-model"), "-f", "/dev/zero", "-p", "hi", home=home)
    one_line_error(p, EXIT_USAGE, f"/dev/zero: not a regular file (a character device); {tail}")

    def pipe(text: bytes) -> tuple[int, str]:  # what a shell's <(cmd) gives: a pipe's read end as /dev/fd/N
        r, w = os.pipe()
        os.write(w, text)
        os.close(w)
        return r, f"/dev/fd/{r}"

    r1, piped = pipe(b"from a pipe\n")
    r2, flagged = pipe(b"from -f\n")
    try:
        chat.handle(f"/file {piped}")
        _, attached = attach.gather([], "hi", [flagged], tty=True)
    finally:
        os.close(r1)
        os.close(r2)
    assert [a.text for a in chat.attachments] == ["from a pipe\n"] and chat.failures == 2
    assert [(a.name, a.text) for a in attached] == [(flagged, "from -f\n")]


@pytest.mark.parametrize("case", ["fifo", "nested", "17-MiB", "directory"])
def test_the_context_look_before_loading_reads_config_json_defensively(case, tmp_path):
    """`-f FILE -m DIR` reads DIR/config.json's context before loading, to refuse an attachment by its size alone:
    it read the file raw, so a FIFO there hung the run and deep nesting was a RecursionError traceback. It reads it
    as the loader does and leaves the verdict to the load."""
    from yi_cli.conversation import attach

    f = tmp_path / "config.json"
    if case == "fifo":
        os.mkfifo(f)
    elif case == "nested":
        f.write_text('{"max_position_embeddings": 8, "x": ' + nested(100_000) + "}")
    elif case == "17-MiB":
        sparse(f, 17 << 20)
    else:
        f.mkdir()
    result: dict = {}

    def look():
        try:
            result["n"] = attach.context_hint(str(tmp_path))
        except BaseException as e:  # noqa: BLE001 - the test reports it
            result["other"] = e

    t = threading.Thread(target=look, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "the look at config.json blocked"
    assert result == {"n": None}, result


# --- config.toml --------------------------------------------------------------------------------------------------

CONFIG_CASES = {
    "temperature-inf": ("[generation]\ntemperature = inf\n", "not a finite number"),
    "temperature-nan": ("[generation]\ntemperature = nan\n", "not a finite number"),
    "temperature-1e400": ("[generation]\ntemperature = 1e400\n", "not a finite number"),
    "top-p-neg-inf": ("[generation]\ntop_p = -inf\n", "not a finite number"),
    "max-new-tokens-5000-digits": ("[generation]\nmax_new_tokens = " + "9" * 5000 + "\n", "cannot read"),
    "max-new-tokens-huge": ("[generation]\nmax_new_tokens = 99999999999\n", "max_new_tokens must be between"),
    "top-k-39-digits": ("[generation]\ntop_k = " + "9" * 39 + "\n", "and at most 2147483647 (2**31 - 1;"),
    "top-k-2**31": (f"[generation]\ntop_k = {2**31}\n", "top_k must be >= 0 (0 = off) and at most 2147483647"),
    "temperature-400-digits": ("[generation]\ntemperature = 1" + "0" * 400 + "\n", "temperature is out of range"),
    "context-true": ("context = true\n", "context: True is not a positive whole number of tokens"),
    "context-negative": ("context = -5\n", "context: '-5' is not a positive number of tokens"),
    "context-39-digits": ("context = " + "9" * 39 + "\n", "is more tokens than any model's context (at most"),
    "context-2**31-K": (f'context = "{2**21}K"\n', "context: '2097152K' is more tokens than any model's context"),
    "remote-seconds-400-digits": ("[remote]\ndeadline = 1" + "0" * 400 + "\n", "must be at most 1000000 seconds"),
    "remote-seconds-1e12": ("[remote]\nconnect_timeout = 1e12\n", "remote.connect_timeout must be at most 1000000"),
    "overflow-dorp": ('overflow = "dorp"\n', "did you mean 'drop'"),
    "engine-fsat": ('engine = "fsat"\n', "did you mean 'fast'"),
    "dtype-fp61": ('dtype = "fp61"\n', "did you mean"),
    "engine-number": ("engine = 3\n", "engine must be a string"),
    "generation-3": ("generation = 3\n", "generation must be a table"),
    "generation-0": ("generation = 0\n", "generation must be a table"),  # a false value was taken for {}
    "generation-false": ("generation = false\n", "generation must be a table"),
    "generation-empty-array": ("generation = []\n", "generation must be a table"),
    "remote-5": ("remote = 5\n", "remote must be a table"),
    "aliases-number-value": ("[aliases]\nx = 5\n", "[aliases] maps names to strings"),
    "aliases-demo": ('[aliases]\ndemo = "/models/mine"\n', "[aliases] demo would hide the built-in demo model demo"),
    "aliases-demo-fp32": ('[aliases]\ndemo-fp32 = "x/y"\n', "[aliases] demo-fp32 would hide the built-in demo model"),
    "aliases-empty-name": ('[aliases]\n"" = "demo"\n', "[aliases] '' is not a name for -m (empty, blank or with"),
    "aliases-blank-name": ('[aliases]\n"  " = "demo"\n', "[aliases] '  ' is not a name for -m"),
    "aliases-control-name": ('[aliases]\n"a\\u001bb" = "demo"\n', "[aliases] 'a\\x1bb' is not a name for -m"),
    "aliases-tab-name": ('[aliases]\n"a\\tb" = "demo"\n', "[aliases] 'a\\tb' is not a name for -m"),
    "aliases-empty-target": ('[aliases]\nmine = " "\n', "[aliases] mine is empty (a directory or a hub id)"),
    "endpoint-ftp": ('endpoint = "ftp://x"\n', "endpoint: ftp://x: not an http(s) URL of an OpenAI-compatible server"),
    "endpoint-port": ('endpoint = "http://h:99999/v1"\n', "endpoint: http://h:99999/v1: not an http(s) URL"),
    "endpoint-blank": ('endpoint = " "\n', "endpoint: ' ': not an http(s) URL"),  # it was ': not an'
    "endpoint-userinfo": ('endpoint = "ftp://me:pw@x"\n', "endpoint: ftp://***@x: not an http(s) URL"),
    "unknown-key-modle": ('modle = "demo"\n', "did you mean model?"),
    "unknown-generation-key": ("[generation]\ntemprature = 1\n", "did you mean generation.temperature?"),
    "table-name-case": ("[Generation]\ntemperature = 1\n", "did you mean [generation]?"),  # was generation.seed
    "table-name-typo": ('[alias]\nmine = "x/y"\n', "did you mean [aliases]?"),  # was no suggestion
    # a table's key at the top, or a misspelling of one: the key in its table (were no suggestion)
    "remote-key-at-top": ("connect_timeout = 5\n", "did you mean remote.connect_timeout?"),
    "generation-key-typo-at-top": ("tempratur = 1\n", "did you mean generation.temperature?"),
    "speculate-typo": ('[generation]\nspeculate = "lookp"\n', "got 'lookp' (did you mean 'lookup'?)"),
    "device-typo": ('device = "cpuu"\n', "unknown device 'cpuu' (use auto, cpu, cuda or cuda:N; did you mean 'cpu'?)"),
    # A top-level key appended below a table is the table's in TOML: said so (was generation.model with a
    # did-you-mean of generation.seed, an unknown remote.endpoint, or an alias named model, silently)
    "model-under-generation": ('[generation]\ntemperature = 1\nmodel = "x"\n', "model is under [generation], where it"),
    "endpoint-under-remote": ('[remote]\nendpoint = "http://h"\n', "endpoint is under [remote], where it is not"),
    "model-under-aliases": ('[aliases]\nmine = "/m"\nmodel = "mine"\n', "model is under [aliases], where it is"),
    "api-key-in-file": ('api_key = "sk-123"\n', "keys are not kept in the config file"),
    "api-key-env-bad": ('api_key_env = "1 2"\n', "is not an environment variable name"),
    "device-tpu": ('device = "tpu"\n', "unknown device"),
    "model-empty": ('model = " "\n', "model is empty"),
    "model-nul": ('model = "a\\u0000b"\n', "model 'a\\x00b' holds a NUL character"),  # was os.stat's traceback
    "aliases-nul-target": ('[aliases]\nx = "\\u0000"\n', "[aliases] x = '\\x00' holds a NUL character"),
    "nested-array-100000": ("x = " + nested(100_000) + "\n", "nested 100000 deep, more than the limit of 64"),
    "bad-toml": ("[generation\n", "cannot read"),
    "not-utf8": (b"model = '\xff'\n", "not UTF-8"),
}


def test_an_unknown_generation_key_is_not_told_to_be_the_table_it_is_in(home):
    """`[generation] foo = 1` got "did you mean [generation]?" (the table it sat in; 'generation.foo' is close to
    'generation'): a [generation] key is matched against that table's keys alone, and nothing near is no suggestion."""
    from yi_cli.ui import config

    config.path().parent.mkdir(parents=True)
    for text, hint in (("[generation]\nfoo = 1\n", None), ("[generation]\ntemprature = 1\n", "generation.temperature")):
        config.path().write_text(text)
        with pytest.raises(UsageError) as e:
            config.read()
        msg = str(e.value)
        assert ("did you mean" not in msg) if hint is None else f"(did you mean {hint}?)" in msg, msg


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_config_toml_malformed(case, home):
    from yi_cli.ui import config

    text, needle = CONFIG_CASES[case]
    p = config.path()
    p.parent.mkdir(parents=True)
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(UsageError) as e:
        config.read()
    msg = str(e.value)
    assert msg.startswith(str(p)) and needle in msg and "\n" not in msg, msg
    assert e.value.exit_code == EXIT_USAGE


@pytest.mark.parametrize("kind", ["fifo", "directory", "2-MiB", "dangling-link"])
def test_config_toml_special_files(kind, home, tmp_path):
    """A dangling symbolic link (a dotfiles checkout not made yet) said "no such config file" of a file `ls` lists."""
    from yi_cli.ui import config

    p = config.path()
    p.parent.mkdir(parents=True)
    gone = tmp_path / "dotfiles" / "config.toml"
    {
        "fifo": lambda: os.mkfifo(p),
        "directory": lambda: p.mkdir(),
        "2-MiB": lambda: sparse(p, 2 << 20),
        "dangling-link": lambda: p.symlink_to(gone),
    }[kind]()
    with pytest.raises(UsageError) as e:
        config.read()
    assert str(p) in str(e.value)
    said = {"2-MiB": "limit", "dangling-link": f"a symbolic link to {gone}, which does not exist"}
    assert said.get(kind, "not a regular file") in str(e.value)


def test_a_huge_history_file_is_read_from_its_tail_and_kept_whole(home, monkeypatch):
    """The whole history file was read before the first prompt took a key: a multi-GB one stalled the start. Its
    last HISTORY_TAIL bytes are read (an entry cut by their start left out, not shown in part), as FileHistory
    parses them; the file keeps every line and takes new ones."""
    from prompt_toolkit.history import FileHistory

    from yi_cli.ui import repl

    class Render:
        def notice(self, msg):
            raise AssertionError(msg)

    path = home / "data" / "history"
    path.parent.mkdir(parents=True)
    old = FileHistory(str(path))
    for i in range(300):
        old.store_string(f"line {i}" + ("\nand a second \xff\u00e9 line" if i % 3 else ""))
    whole = list(old.load_history_strings())  # newest first
    assert list(repl.history(Render()).load_history_strings()) == whole  # within the tail: all of it
    size = path.stat().st_size
    monkeypatch.setattr(repl, "HISTORY_TAIL", size // 10, raising=False)
    hist = repl.history(Render())
    tail = list(hist.load_history_strings())
    assert 0 < len(tail) < len(whole) // 5 and tail == whole[: len(tail)]
    hist.store_string("new line")
    assert path.stat().st_size > size and list(FileHistory(str(path)).load_history_strings())[1:] == whole


def test_the_history_gives_recall_its_newest_entries_of_a_size_a_prompt_can_edit(home, monkeypatch):
    """An entry of 3 MB in the history made ↑ take 12 s and every key after it 11 s; 400,000 short entries made
    each key of a Ctrl-R search 8 s. Recall goes through the newest HISTORY_ENTRIES entries, each of
    HISTORY_ENTRY_CHARS at most; the file keeps them all."""
    from prompt_toolkit.history import FileHistory

    from yi_cli.ui import repl

    path = home / "data" / "history"
    path.parent.mkdir(parents=True)
    old = FileHistory(str(path))
    monkeypatch.setattr(repl, "HISTORY_ENTRIES", 50)
    for i in range(80):
        old.store_string(f"line {i}" + ("x" * repl.HISTORY_ENTRY_CHARS if i in (40, 79) else ""))
    got = list(repl.TailHistory(str(path)).load_history_strings())
    assert got == [f"line {i}" for i in reversed(range(79)) if i != 40][:50]
    assert len(list(FileHistory(str(path)).load_history_strings())) == 80


def test_config_toml_saved_with_a_bom_and_crlf_is_read(home):
    """A config.toml saved "UTF-8 with BOM" (Notepad) failed: "Invalid statement (at line 1, column 1)", on a
    character no editor shows (run-through 4)."""
    from yi_cli.ui import config

    config.path().parent.mkdir(parents=True)
    config.path().write_bytes(b'\xef\xbb\xbfmodel = "demo"\r\n[generation]\r\ntemperature = 0.3\r\n')
    assert config.read() == ({"model": "demo", "remote": {}}, {"temperature": 0.3})


@pytest.mark.parametrize("value", ["32768", '"32K"', '" 32k "'])
def test_config_context_is_tokens_like_the_flag(value, home):
    """A TOML integer and the flag's text alike: config.read hands make_engine the number of tokens (an integer
    crashed there: 'int' object has no attribute 'strip')."""
    from yi_cli.ui import config

    config.path().parent.mkdir(parents=True)
    config.path().write_text(f"context = {value}\n")
    assert config.read()[0]["context"] == 32768


def test_config_typo_through_the_command_is_one_line_exit_2(home):
    (home / "config").mkdir()
    (home / "config" / "config.toml").write_text('overflow = "dorp"\n')
    one_line_error(yi("-p", "hi", home=home), 2, "config.toml", "did you mean 'drop'")


def test_a_bad_endpoint_or_alias_name_in_the_config_is_a_config_error_for_every_command(home):
    """`endpoint = "ftp://x"` failed only a chat that used it, with a line that did not name the file (`models` ran,
    exit 0), and `[aliases] "" = "demo"` made a row without a name: each is one line naming the file, exit 2, whether
    or not the run uses it (as `endpoint = 5` was)."""
    (home / "config").mkdir()
    cfg = home / "config" / "config.toml"
    for text, needle in (
        ('endpoint = "ftp://x"\n', f"{cfg}: endpoint: ftp://x: not an http(s) URL"),
        ('[aliases]\n"" = "demo"\n', f"{cfg}: [aliases] '' is not a name for -m"),
        ('[aliases]\nx = "a\\u0000b"\n', f"{cfg}: [aliases] x = 'a\\x00b' holds a NUL character"),  # a traceback
    ):
        cfg.write_text(text)
        for args in (("-p", "hi"), ("--endpoint", "", "-p", "hi"), ("models",), ("pull", "demo")):
            one_line_error(yi(*args, home=home), 2, needle)


def test_a_good_endpoint_in_the_config_is_kept_as_written(home):
    """The config's endpoint is checked as --endpoint's is, and handed on as written (host:port gets its http:// and
    /v1 where the engine builds its URL); "" names none, as before."""
    from yi_cli.ui import config

    config.path().parent.mkdir(parents=True)
    for value in ("localhost:8000", "https://u:p@gw.example/proxy/openai/v1?api-version=1", ""):
        config.path().write_text(f'endpoint = "{value}"\n')
        assert config.read()[0]["endpoint"] == value


def test_an_alias_named_like_a_demo_model_is_refused_in_one_line(home):
    """`[aliases] demo = ...` took -m demo (the default model) and `yi-chat pull demo` over without a word."""
    (home / "config").mkdir()
    (home / "config" / "config.toml").write_text('[aliases]\ndemo = "/models/mine"\n')
    for args in (("-p", "hi"), ("-m", "demo", "-p", "hi"), ("pull", "demo"), ("models",)):
        one_line_error(yi(*args, home=home), 2, "config.toml: [aliases] demo would hide the built-in demo model demo")


def test_an_alias_named_like_a_yi_model_points_it_at_a_local_copy(home, tiny_src):
    """A Yi alias or repo name in [aliases] is a deliberate override (the model's weights kept elsewhere): -m with
    that name opens the alias's folder, and yi-chat models lists it so."""
    (home / "config").mkdir()
    (home / "config" / "config.toml").write_text(
        f'[aliases]\nyi-6b-chat-4bits = "{tiny_src}"\n"01-ai/Yi-6B-Chat" = "{tiny_src}"\n'
    )
    for name in ("yi-6b-chat-4bits", "01-ai/Yi-6B-Chat"):  # no hub here: an answer is the local folder's
        p = yi("-m", name, "--json", "-p", "hi", "--max-new-tokens", "2", home=home)
        assert p.returncode == 0, p.stderr.decode()
        assert json.loads(p.stdout.decode().splitlines()[-1])["new_tokens"] == 2
    listed = yi("models", "--json", home=home)
    assert listed.returncode == 0, listed.stderr.decode()
    rows = {r["name"]: r for r in json.loads(listed.stdout.decode())}
    for name in ("yi-6b-chat-4bits", "01-ai/Yi-6B-Chat"):
        assert (rows[name]["source"], rows[name]["path"]) == ("config alias", str(tiny_src))


def test_the_models_table_shows_an_alias_targets_controls_visibly(home):
    """An [aliases] target holding ESC [31m reached the table's status raw (the terminal turned red), where --json
    and -m escape it: every cell of the table shows control characters visibly."""
    (home / "config").mkdir()
    (home / "config" / "config.toml").write_text('[aliases]\nx = "/no/such\\u001b[31mdir\\u0007"\n')
    listed = yi("models", home=home)
    assert listed.returncode == 0, listed.stderr.decode()
    out = listed.stdout.decode()
    assert "\x1b" not in out and "\x07" not in out, repr(out)
    assert "/no/such\\x1b[31mdir\\x07" in out, out


# --- model directories: config.json and friends -------------------------------------------------------------------


def set_json(f: Path, **changes) -> None:
    d = json.loads(f.read_text())
    d.update(changes)
    f.write_text(json.dumps(d))


CONFIG_JSON_CASES = {
    "layers-1000000": ({"num_hidden_layers": 1_000_000}, "num_hidden_layers = 1000000 is not a plausible size"),
    "layers-0": ({"num_hidden_layers": 0}, "num_hidden_layers = 0 is not a plausible"),
    "layers-negative": ({"num_hidden_layers": -2}, "num_hidden_layers = -2"),
    "layers-string": ({"num_hidden_layers": "2"}, "num_hidden_layers must be an integer, found a string"),
    "layers-true": ({"num_hidden_layers": True}, "num_hidden_layers must be an integer, found true/false"),
    "layers-float": ({"num_hidden_layers": 2.5}, "num_hidden_layers must be an integer, found a number"),
    "hidden-huge": ({"hidden_size": 1 << 30}, "hidden_size = 1073741824"),
    "hidden-zero": ({"hidden_size": 0}, "hidden_size = 0"),
    "vocab-1e9": ({"vocab_size": 10**9}, "vocab_size = 1000000000"),
    "vocab-negative": ({"vocab_size": -1}, "vocab_size = -1"),
    "heads-zero": ({"num_attention_heads": 0}, "num_attention_heads = 0"),
    "kv-heads-not-dividing": ({"num_key_value_heads": 3}, "not a multiple of num_key_value_heads = 3"),
    "hidden-not-dividing": ({"hidden_size": 66, "head_dim": None}, "hidden_size = 66 is not a multiple"),
    "max-pos-negative": ({"max_position_embeddings": -1}, "max_position_embeddings = -1"),
    "max-pos-zero": ({"max_position_embeddings": 0}, "max_position_embeddings = 0"),
    "max-pos-one": ({"max_position_embeddings": 1}, "max_position_embeddings = 1"),  # every prompt "shorten it"
    "pad-text": ({"pad_token_id": "x"}, 'pad_token_id must be a token id or null, got "x"'),  # ran on the fast engine
    "pad-list": ({"pad_token_id": [2]}, "pad_token_id must be a token id or null, got [2]"),
    "max-pos-1e9-float": ({"max_position_embeddings": 1e9}, "max_position_embeddings must be an integer"),
    "max-pos-1e9": ({"max_position_embeddings": 10**9}, "max_position_embeddings = 1000000000"),
    # a string theta was a TypeError traceback building the runtime; a negative one NaN frequencies (babble)
    "rope-theta-string": (
        {"rope_parameters": {"rope_theta": "abc", "rope_type": "default"}},
        "rope_parameters.rope_theta must be a positive number, found a string",
    ),
    "rope-theta-negative": ({"rope_theta": -5.0}, "rope_theta must be a positive number, found a number -5.0"),
    "rope-theta-zero": ({"rope_parameters": {"rope_theta": 0}}, "rope_parameters.rope_theta must be a positive"),
    "rms-eps-negative": ({"rms_norm_eps": -1}, "rms_norm_eps must be a number >= 0, found an integer -1"),
    # rope numbers no model has, each loaded and babbled on both engines, exit 0 (a hostile-checkpoint review)
    "rope-theta-huge": ({"rope_theta": 1e300}, "rope_theta = 1e+300 is not a plausible rotary base"),
    "rope-theta-tiny": (
        {"rope_parameters": {"rope_theta": 1e-300, "rope_type": "default"}},
        "rope_parameters.rope_theta = 1e-300 is not a plausible rotary base",
    ),
    "yarn-attention-factor-0": (
        {
            "rope_scaling": {
                "rope_type": "yarn",
                "factor": 2.0,
                "original_max_position_embeddings": 64,
                "attention_factor": 0.0,
            }
        },
        "rope_scaling.attention_factor must be a number in 0.001..100",
    ),
    "yarn-mscale-huge": (
        {"rope_scaling": {"rope_type": "yarn", "factor": 2.0, "mscale": 1e30, "mscale_all_dim": 1e-30}},
        "rope_scaling.mscale must be a number in 0..100",
    ),
    "longrope-negative": (
        {"rope_scaling": {"rope_type": "longrope", "short_factor": [-1.0] * 8, "long_factor": [1.0] * 8}},
        "rope_scaling.short_factor must be a list of numbers in (0, 65536]",
    ),
    "proportional-none-rotated": (
        {"rope_scaling": {"rope_type": "proportional", "partial_rotary_factor": 0.0}},
        "rope_scaling.partial_rotary_factor must be a number in (0, 1], found 0.0",
    ),
    # one past an unresized vocabulary: the fast engine chatted, /model and the generate engine failed in torch's words
    "pad-past-vocab": (
        {"pad_token_id": 1 << 21, "vocab_size": 1 << 21},
        "pad_token_id = 2097152 is past the vocabulary",
    ),
    "rms-eps-string": ({"rms_norm_eps": "x"}, "rms_norm_eps must be a number >= 0, found a string"),
    # a string or a fraction failed every turn on the generate engine (TypeError), after the model loaded
    "sliding-window-string": ({"sliding_window": "x"}, "sliding_window must be a positive integer or null"),
    "sliding-window-fraction": ({"sliding_window": 1.5}, "sliding_window must be a positive integer or null"),
    # transformers' reason was on its message's second line: the line ended "Validation error for field 'X':"
    "tie-embeddings-string": ({"tie_word_embeddings": "no"}, "'tie_word_embeddings': TypeError: Field"),
    "bos-id-string": (
        {"bos_token_id": "x"},
        'bos_token_id must be a token id or null, got "x"',
    ),  # was pydantic's words
    "cache-exceeds-memory": (
        {"max_position_embeddings": 1 << 24, "num_hidden_layers": 1024, "num_key_value_heads": 4},
        "max_position_embeddings: this model needs about",
    ),
    "weights-exceed-memory": (
        {
            "num_hidden_layers": 1024,
            "hidden_size": 65536,
            "intermediate_size": 262144,
            "num_attention_heads": 512,
            "num_key_value_heads": 512,
            "max_position_embeddings": 16,
        },
        "the model's sizes: this model needs about",
    ),
}


@pytest.mark.parametrize("case", sorted(CONFIG_JSON_CASES))
def test_model_config_sizes_checked_before_any_allocation(case, tiny):
    from yi_cli.checkpoint.loader import open_checkpoint

    changes, needle = CONFIG_JSON_CASES[case]
    set_json(tiny / "config.json", **changes)
    t0 = time.monotonic()
    with pytest.raises(LoadError) as e:
        open_checkpoint(tiny, device="cpu")
    msg = str(e.value)
    assert msg.startswith(str(tiny / "config.json")) and needle in msg, msg
    assert e.value.exit_code == EXIT_LOAD
    assert time.monotonic() - t0 < 60  # refused from the numbers, not after building a million modules


def test_a_library_message_cut_at_a_colon_keeps_its_reason():
    from yi_cli.errors import first_line

    e = TypeError("Validation error for field 'x':\n    TypeError: Field 'x' expected bool, got str\n  more\n")
    assert first_line(e) == "Validation error for field 'x': TypeError: Field 'x' expected bool, got str"
    assert first_line(ValueError("bad value\n  details")) == "bad value" and first_line(ValueError()) == "ValueError"


def write_raw(f: Path, text: str | bytes) -> None:
    f.write_bytes(text if isinstance(text, bytes) else text.encode())


JSON_FILE_CASES = {
    "config-nested": ("config.json", '{"model_type": "llama", "x": ' + nested(100_000) + "}", "nested 100001 deep"),
    "config-inf": ("config.json", '{"model_type": "llama", "rope_theta": Infinity}', "Infinity is not a JSON number"),
    "config-1e400": ("config.json", '{"model_type": "llama", "rope_theta": 1e400}', "out of range"),
    "config-list": ("config.json", "[]", "not a transformers model config"),
    "config-17-MiB": ("config.json", None, "more than the 16 MiB limit"),
    "config-fifo": ("config.json", "fifo", "not a regular file (a FIFO)"),
    "generation-nested": ("generation_config.json", nested(100_000), "nested 100000 deep"),
    "generation-nan": ("generation_config.json", '{"temperature": NaN}', "NaN is not a JSON number"),
    "generation-17-MiB": ("generation_config.json", None, "more than the 16 MiB limit"),
    "generation-fifo": ("generation_config.json", "fifo", "not a regular file (a FIFO)"),
    # int()'s ValueError / TypeError as a traceback (the same in config.json was one line already)
    "generation-eos-text": ("generation_config.json", '{"eos_token_id": ["x"]}', "eos_token_id must be a token id"),
    # a pad or bos id that is not one: the fast engine (which reads no pad) chatted, /model and the generate engine
    # failed in pydantic's words
    "generation-pad-text": (
        "generation_config.json",
        '{"pad_token_id": "x"}',
        'pad_token_id must be a token id or null, got "x"',
    ),
    "generation-bos-list": (
        "generation_config.json",
        '{"bos_token_id": [1]}',
        "bos_token_id must be a token id or null",
    ),
    "generation-eos-null": ("generation_config.json", '{"eos_token_id": [2, null]}', "a list of them, got [2, null]"),
    "generation-eos-negative": ("generation_config.json", '{"eos_token_id": -1}', "a list of them, got -1"),
    # past any vocabulary: every turn of the generate engine failed ("Overflow when unpacking long long")
    "generation-eos-huge": ("generation_config.json", '{"eos_token_id": [1' + "0" * 39 + "]}", "got [1000000"),
    "config-eos-huge": ("config.json", '{"model_type": "llama", "eos_token_id": 2147483648}', "got 2147483648"),
    "tokenizer-config-nested": ("tokenizer_config.json", '{"a": ' + nested(5000) + "}", "nested 5001 deep"),
    "tokenizer-config-17-MiB": ("tokenizer_config.json", None, "more than the 16 MiB limit"),
    "quantize-config-nested": ("quantize_config.json", '{"bits": ' + nested(100_000) + "}", "nested 100001 deep"),
    "quantize-config-inf": ("quantize_config.json", '{"bits": 8, "group_size": -Infinity}', "-Infinity"),
    "quantize-config-modules-5": (
        "quantize_config.json",
        '{"quant_method": "awq", "bits": 4, "modules_to_not_convert": 5}',
        "modules_to_not_convert 5 must be a list or null",
    ),
    "quantize-config-modules-ints": (
        "quantize_config.json",
        '{"quant_method": "awq", "bits": 4, "modules_to_not_convert": [1]}',
        "must be a list of module names",
    ),
    "quantize-config-bits-string": ("quantize_config.json", '{"bits": "8"}', "bits '8' must be an integer"),
    "quantize-config-group-true": (
        "quantize_config.json",
        '{"bits": 8, "group_size": true}',
        "group_size true must be an integer",
    ),
    "quantize-config-desc-act-string": (
        "quantize_config.json",
        '{"bits": 8, "desc_act": "yes"}',
        "desc_act 'yes' must be true/false",
    ),
    "index-nested": ("model.safetensors.index.json", '{"weight_map": ' + nested(100_000) + "}", "nested 100001"),
    "index-weight-map-list": ("model.safetensors.index.json", '{"weight_map": []}', "weight_map must be an object"),
    "index-path-escape": (
        "model.safetensors.index.json",
        '{"weight_map": {"a": "../../etc/passwd"}}',
        "not a file name in the directory",
    ),
    # a NUL in a shard's name was "missing" (the lookup's ValueError), half a character an internal error
    "index-nul": ("model.safetensors.index.json", '{"weight_map": {"a": "m\\u0000.safetensors"}}', "not a file name"),
    "index-surrogate": ("model.safetensors.index.json", '{"weight_map": {"a": "\\ud800.st"}}', "not a file name"),
    "index-inf": (
        "model.safetensors.index.json",
        '{"metadata": {"total_size": Infinity}, "weight_map": {}}',
        "Infinity",
    ),
}


@pytest.mark.parametrize("case", sorted(JSON_FILE_CASES))
def test_checkpoint_json_files_read_defensively(case, tiny):
    from yi_cli.checkpoint.loader import open_checkpoint

    name, text, needle = JSON_FILE_CASES[case]
    f = tiny / name
    if name == "quantize_config.json":  # detected only when config.json has no quantization_config
        assert "quantization_config" not in json.loads((tiny / "config.json").read_text())
    f.unlink(missing_ok=True)
    if text is None:
        sparse(f, 17 << 20)
    elif text == "fifo":
        os.mkfifo(f)
    else:
        write_raw(f, text)
    result: dict = {}

    def load():
        try:
            open_checkpoint(tiny, device="cpu")
        except LoadError as e:
            result["msg"] = str(e)
        except BaseException as e:  # noqa: BLE001 - the test reports it
            result["other"] = e

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(120)
    assert not t.is_alive(), "open_checkpoint blocked"
    assert "other" not in result, repr(result.get("other"))
    assert result["msg"].startswith(str(f)) and needle in result["msg"], result["msg"]


@pytest.mark.parametrize("kind", ["fifo", "directory", "65-MiB"])
def test_tokenizer_json_is_a_regular_file_within_its_limit(kind, tiny):
    """A directory (or a FIFO) named tokenizer.json was "cannot load the tokenizer (ValueError: Couldn't
    instantiate the backend tokenizer from one of: )", naming neither the file nor what is wrong with it."""
    from yi_cli.checkpoint.loader import open_checkpoint

    f = tiny / "tokenizer.json"
    assert f.is_file()
    f.unlink()
    {"fifo": lambda: os.mkfifo(f), "directory": f.mkdir, "65-MiB": lambda: sparse(f, 65 << 20)}[kind]()
    with pytest.raises(LoadError) as e:
        open_checkpoint(tiny, device="cpu")
    want = {
        "fifo": f"{f}: not a regular file (a FIFO); a tokenizer.json must be a regular file",
        "directory": f"{f}: not a regular file (a directory); a tokenizer.json must be a regular file",
        "65-MiB": f"{f}: {65 << 20} bytes, more than the 64 MiB limit of a tokenizer.json",
    }
    assert str(e.value) == want[kind]
    assert e.value.exit_code == EXIT_LOAD


@pytest.mark.parametrize("case", ["nested", "17-MiB"])
def test_a_hub_snapshot_index_is_read_within_the_json_limits(case, tmp_path):
    """A cached hub snapshot's index was read raw to tell whether the snapshot is complete: deep nesting was a
    RecursionError traceback for `-m ORG/NAME` and for `yi-chat models`. Read within the limits; a bad one is a
    snapshot not complete, as a corrupt one was."""
    from yi_cli.checkpoint import hub

    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    index = tmp_path / "model.safetensors.index.json"
    if case == "nested":
        index.write_text('{"weight_map": ' + nested(100_000) + "}")
    else:
        sparse(index, 17 << 20)
    assert hub.complete(tmp_path) is False


def _header(f: Path) -> tuple[dict, bytes]:
    raw = f.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _write_header(f: Path, header: dict | str, body: bytes, n: int | None = None) -> None:
    h = (header if isinstance(header, str) else json.dumps(header)).encode()
    f.write_bytes(struct.pack("<Q", len(h) if n is None else n) + h + body)


def _first_tensor(h: dict) -> str:
    return next(k for k in h if k != "__metadata__")


SAFETENSORS_CASES = {
    "no-data-offsets": (lambda h, k: h[k].pop("data_offsets"), "data_offsets must be [begin, end]"),
    "offsets-reversed": (lambda h, k: h[k].update(data_offsets=h[k]["data_offsets"][::-1]), "data_offsets must be"),
    "offsets-strings": (lambda h, k: h[k].update(data_offsets=["0", "4"]), "data_offsets must be"),
    "offsets-three": (lambda h, k: h[k].update(data_offsets=[0, 1, 2]), "data_offsets must be"),
    "offsets-shape-mismatch": (lambda h, k: h[k].update(shape=[1]), "its shape [1]"),
    "dtype-unknown": (lambda h, k: h[k].update(dtype="F99"), "unknown dtype 'F99'"),
    "dtype-missing": (lambda h, k: h[k].pop("dtype"), "unknown dtype 'None'"),
    "shape-negative": (lambda h, k: h[k].update(shape=[-1, 4]), "shape must be a list of non-negative integers"),
    "shape-string": (lambda h, k: h[k].update(shape="64"), "shape must be a list"),
    "entry-not-object": (lambda h, k: h.update({k: 5}), "header entry is not an object"),
    "offsets-past-end": (
        lambda h, k: h[k].update(data_offsets=[h[k]["data_offsets"][0] + 10**12, h[k]["data_offsets"][1] + 10**12]),
        "leave a gap",  # before the bytes past the file's end ("truncated", which a cut download is)
    ),
    # what the safetensors library refuses as the model loads, which `yi-chat models` said "ok" of
    "offsets-overlap": (
        lambda h, k: h[k].update(data_offsets=[o + 1 for o in h[k]["data_offsets"]]),
        "data_offsets overlap another tensor's or leave a gap",
    ),
    "metadata-not-strings": (lambda h, k: h.update(__metadata__={"format": 5}), "__metadata__ must map names to"),
    "shape-overflow": (
        lambda h, k: h[k].update(shape=[2**62, 2**62, 0], data_offsets=[h[k]["data_offsets"][0]] * 2),
        "overflows",
    ),
}


@pytest.mark.parametrize("case", sorted(SAFETENSORS_CASES))
def test_safetensors_header_entries_checked(case, tiny):
    from yi_cli.checkpoint.loader import open_checkpoint

    f = tiny / "model.safetensors"
    header, body = _header(f)
    change, needle = SAFETENSORS_CASES[case]
    change(header, _first_tensor(header))
    _write_header(f, header, body)
    with pytest.raises(LoadError) as e:
        open_checkpoint(tiny, device="cpu")
    assert str(e.value).startswith(str(f)) and needle in str(e.value), str(e.value)


@pytest.mark.parametrize("case", ["length-2^60", "length-zero", "nested", "nan", "list", "not-json"])
def test_safetensors_header_itself_hostile(case, tiny):
    from yi_cli.checkpoint.loader import open_checkpoint

    f = tiny / "model.safetensors"
    header, body = _header(f)
    text = {"nested": '{"a": ' + nested(100_000) + "}", "nan": '{"a": NaN}', "list": "[]", "not-json": "{oops"}
    needle = {
        "length-2^60": "header",
        "length-zero": "header length does not fit",
        "nested": "nested 100001 deep",
        "nan": "NaN",
        "list": "not a JSON object",
        "not-json": "not a valid safetensors file (corrupt header",
    }[case]
    if case.startswith("length"):
        _write_header(f, header, body, n=1 << 60 if case == "length-2^60" else 0)
    else:
        _write_header(f, text[case], body)
    with pytest.raises(LoadError) as e:
        open_checkpoint(tiny, device="cpu")
    assert str(e.value).startswith(str(f)) and needle in str(e.value), str(e.value)


def test_model_config_error_through_the_command_is_one_line_exit_3(tiny, home):
    set_json(tiny / "config.json", num_hidden_layers=1_000_000)
    one_line_error(yi("-m", tiny, "-p", "hi", home=home), 3, "config.json", "num_hidden_layers")


# --- chat templates -----------------------------------------------------------------------------------------------

LOOPS = {
    "nested-ranges": "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
    "deep-recursion-macro": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{% for i in range(99999) %}"
    "{% for j in range(99999) %}{{ i }}{% endfor %}{% endfor %}",
    "string-loop": "{% for i in range(99999) %}{% for c in 'x' * 99999 %}{% endfor %}{% endfor %}",
}


@pytest.mark.parametrize("case", sorted(LOOPS))
def test_a_chat_template_that_loops_is_stopped(case, tiny_src, monkeypatch):
    from transformers import AutoTokenizer

    from yi_cli.engines import template

    monkeypatch.setattr(template, "TEMPLATE_SECONDS", 1.0)
    t = template.Template(AutoTokenizer.from_pretrained(str(tiny_src)))
    t.source = LOOPS[case]
    t0 = time.monotonic()
    with pytest.raises(YiError, match="chat template ran for more than 1 s"):
        t.build([{"role": "user", "content": "hi"}])
    assert time.monotonic() - t0 < 30
    t.source = template.CHATML  # the same template object still works afterwards
    assert "<|im_start|>user\nhi" in t.render([{"role": "user", "content": "hi"}])


# One C call each, which the time limit cannot stop: `9 ** 99999999` held the GIL (the run hung) and
# `m.content * 300000000` asked for gigabytes (the run was killed); these smaller ones show the bound without the cost.
BIG_OPS = {
    "power": ("{{ (3 ** 700000) % 7 }}", "an integer power of about 1400000 bits is too large"),
    "product": (
        "{% set a = 2 ** 500000 %}{% set b = a * a %}{{ (b * a) % 7 }}",
        "an integer product of about 1500002 bits is too large",
    ),
    "repetition": ("{{ ('x' * 20000000)|length }}", "a repetition of 20000000 items is too long"),
    "repeated-message": ("{{ (messages[0].content * 10000000)|length }}", "a repetition of 20000000 items"),
    # widths: `'x'.center(2000000000)` was bounded only by the time limit, after the gigabytes were asked for
    "center": ("{{ 'x'.center(20000000)|length }}", "a string padded to 20000000 characters wide is too long"),
    "zfill": ("{{ messages[0].content.zfill(20000000)|length }}", "padded to 20000000 characters wide"),
    "center-filter": ("{{ ('x'|center(20000000))|length }}", "a string centred in 20000000 characters wide"),
    "indent-filter": ("{{ ('a\nb'|indent(20000000))|length }}", "an indent 20000000 characters wide"),
    "percent-width": ("{{ ('%20000000s' % 'x')|length }}", "a format with a width past 16777216 characters"),
    "format-filter": ("{{ ('%.20000000f'|format(1.0))|length }}", "a format with a width past 16777216 characters"),
    "format-method": ("{{ '{:>20000000}'.format('x')|length }}", "a format with a width past 16777216 characters"),
    "star-width": ("{{ ('%*s' % (20000000, 'x'))|length }}", "a format with a width past 16777216 characters"),
    "nested-width": ("{{ '{:>{w}}'.format('x', w=20000000)|length }}", "a format with a width past 16777216"),
    # strings each within the bound, built into one past it (a join of 400 copies of 16 MB was 6.4 GB)
    "join-filter": ("{{ (['x' * 9000000] * 2)|join|length }}", "a join of 18000000 items is too long"),
    "join-method": ("{{ ''.join(['x' * 9000000] * 2)|length }}", "a join of 18000000 items is too long"),
    "replace-filter": ("{{ (('x' * 5000)|replace('x', 'y' * 5000))|length }}", "a replace of 25000000 items"),
    "replace-method": ("{{ ('x' * 5000).replace('x', 'y' * 5000)|length }}", "a replace of 25000000 items"),
    "tilde": ("{% set a = 'x' * 9000000 %}{{ (a ~ a)|length }}", "a concatenation of 18000000 items is too long"),
    "plus": ("{% set a = 'x' * 9000000 %}{{ (a + a)|length }}", "a sum of 18000000 items is too long"),
    "tojson-indent": ("{{ ([0] * 10)|tojson(indent=1000000)|length }}", "tojson's indent of 1000000 is over 64"),
    # a list of references to one string: small in memory, its text 4 GB (`['x' * 1000000] * 4000`) in one C call
    "batch-fill": ("{% for b in [1]|batch(20000000, 0) %}{{ b|length }}{% endfor %}", "a batch of 20000000 items"),
    "string-of-refs": ("{{ (['x' * 1000000] * 20)|string|length }}", "a |string of more than 16777216 characters"),
    "tojson-of-refs": ("{{ (['x' * 1000000] * 20)|tojson|length }}", "a tojson of more than 16777216 characters"),
    "pprint-of-refs": ("{{ (['x' * 1000000] * 20)|pprint|length }}", "a |pprint of more than 16777216 characters"),
    "output-of-refs": ("{{ {'a': ['x' * 1000000] * 20} }}", "a value written as text of more than 16777216"),
    "tilde-of-refs": ("{{ (1 ~ (['x' * 1000000] * 20))|length }}", "a concatenation of more than 16777216"),
    "percent-of-refs": ("{{ ('%s' % [['x' * 1000000] * 20])|length }}", "a format's arguments of more than 16777216"),
    "format-of-refs": ("{{ '{}'.format(['x' * 1000000] * 20)|length }}", "a format's arguments of more than 16777216"),
    "join-of-lists": ("{{ [['x' * 1000000] * 20, 'a']|join|length }}", "a join of more than 16777216"),
    # each argument or item within the bound, all of them together past it; views and namespaces show their values
    "join-of-many-lists": ("{% set x = ['x' * 1000000] * 10 %}{{ ([x] * 4)|join|length }}", "a join of more than"),
    "percent-of-many": ("{% set x = ['x' * 1000000] * 10 %}{{ ('%s%s' % (x, x))|length }}", "a format's arguments"),
    "dict-values": ("{{ dict.fromkeys(range(20), 'x' * 1000000).values()|string|length }}", "a |string of more than"),
    "namespace": ("{% set n = namespace(a=['x' * 1000000] * 20) %}{{ n|string|length }}", "a |string of more than"),
    "sum-quadratic": ("{{ ([[0] * 1000] * 2000)|sum(start=[])|length }}", "a sum of 2000 sequences"),
    "sum-of-lists": ("{{ ([[1] * 10000000] * 2)|sum(start=[])|length }}", "a sum of 20000002 items is too long"),
}


@pytest.mark.parametrize("backend", ["light", "transformers"])
@pytest.mark.parametrize("case", sorted(BIG_OPS))
def test_a_template_asking_for_a_huge_value_is_refused(case, backend, tiny_src):
    from yi_cli.checkpoint import light_tokenizer, loader
    from yi_cli.engines import template

    tok = loader.load_tokenizer(tiny_src) if backend == "light" else loader._hf_tokenizer(tiny_src, False, False)
    assert isinstance(tok, light_tokenizer.LightTokenizer) == (backend == "light")
    t = template.Template(tok)
    t.source, needle = BIG_OPS[case]
    with pytest.raises(YiError, match="the chat template failed") as e:
        t.build([{"role": "user", "content": "hi"}])
    assert needle in str(e.value), str(e.value)
    t.source = template.CHATML  # the same template object still works afterwards
    assert "<|im_start|>user\nhi" in t.render([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("backend", ["light", "transformers"])
def test_a_template_whose_steps_each_within_the_bounds_pile_up_memory_is_stopped(backend, tiny_src, monkeypatch):
    """A loop writing 16 MB a pass: each step within the bounds above, the render reached 10 GB before its 10 s
    time limit. The render's growth of the process's memory is bounded (64 MB here, 512 in the chat)."""
    from yi_cli.checkpoint import loader
    from yi_cli.engines import template

    monkeypatch.setattr(template, "TEMPLATE_MEMORY", 64 << 20)
    tok = loader.load_tokenizer(tiny_src) if backend == "light" else loader._hf_tokenizer(tiny_src, False, False)
    t = template.Template(tok)
    t.source = "{% for i in range(20) %}{{ 'x' * 16000000 }}{% endfor %}{{ messages[0].content }}"
    with pytest.raises(YiError) as e:
        t.build([{"role": "user", "content": "hi"}])
    assert str(e.value).startswith("the chat template took more than 64 MB of memory and was stopped"), str(e.value)
    t.source = template.CHATML  # the same template object still works afterwards
    assert "<|im_start|>user\nhi" in t.render([{"role": "user", "content": "hi"}])


def test_a_template_that_writes_far_more_than_its_messages_is_refused_before_the_tokenizer(tiny_src):
    """Each step within the bounds above, the whole rendered prompt 16M characters for "hi": the tokenizer took 49 s
    and 4.5 GB on it (208M had it abort the process)."""
    from yi_cli.checkpoint import loader
    from yi_cli.engines import template

    t = template.Template(loader.load_tokenizer(tiny_src))
    t.source = "{% for i in range(3) %}{{ 'x' * 1000000 }}{% endfor %}{{ messages[0].content }}"
    with pytest.raises(YiError) as e:
        t.build([{"role": "user", "content": "hi"}])
    assert str(e.value).startswith("the chat template wrote 3000002 characters for 2 of messages"), str(e.value)
    t.source = "{{ 'x' * 1000 }}{{ messages[0].content }}"  # a default system prompt's worth is fine
    assert len(t.render([{"role": "user", "content": "hi" * 500000}])) == 1_001_000


def test_a_tokenizer_past_the_models_vocabulary_is_refused_as_it_loads(tmp_path, demo_fp32_dir):
    """The demo's tokenizer (49152 ids) beside weights of 300 rows (another model's files mixed in): every turn
    failed with "generation failed (IndexError: index 1620 is out of bounds for dimension 0 with size 300)"."""
    make_tiny(tmp_path / "mixed", demo_fp32_dir, vocab=300)
    p = yi("--model", str(tmp_path / "mixed"), "-p", "hi", "--max-new-tokens", "2", home=tmp_path)
    one_line_error(p, EXIT_LOAD, "past the model's vocabulary of 300", "the tokenizer files are not this model's")


def test_a_message_whose_ids_are_past_the_models_vocabulary_is_one_line_and_not_sent(tiny_src):
    """A tokenizer that passes the load's short chat can still give ids past the model's rows for other text: one
    line, the turn not sent (it was "generation failed (IndexError: ...)")."""
    from types import SimpleNamespace

    from yi_cli.checkpoint import loader
    from yi_cli.engines import template

    tok = loader.load_tokenizer(tiny_src)
    rows = max(template.Template(tok).build([{"role": "user", "content": template.PROBE_USER}]).ids) + 1
    t = template.Template(tok, SimpleNamespace(vocab_size=rows))  # the load's probe fits
    assert t.build([{"role": "user", "content": "hi"}]).ids
    far = next(w for w in ("你好世界", "Zürich", "ĳ") if max(tok(w, add_special_tokens=False)["input_ids"]) >= rows)
    with pytest.raises(YiError) as e:
        t.build([{"role": "user", "content": far}])
    assert str(e.value).startswith("the tokenizer gives token id ") and f"vocabulary of {rows} " in str(e.value)
    assert t.count(far) > 0  # a count (of a reply made, for /history) is only a count: it raised after the commit


def test_an_index_naming_a_shard_no_file_can_be_is_one_line(tmp_path):
    """A shard name holding a lone surrogate: the length check's encode raised UnicodeEncodeError, an internal
    error for -m and for every row of `yi-chat models`."""
    from yi_cli.checkpoint import files

    idx = tmp_path / "model.safetensors.index.json"
    for name in ("\ud800.safetensors", "x" * 300 + ".safetensors", 5):
        idx.write_text(json.dumps({"weight_map": {"lm_head.weight": name}}))
        with pytest.raises(LoadError):
            files.check_index(tmp_path)  # refused, or a shard that is missing: LoadError either way


def _one_tensor_file(f: Path, before: bytes = b"", after: bytes = b"") -> None:
    import struct

    import torch
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(4)}, str(f))
    raw = f.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = before + raw[8 : 8 + n]
    f.write_bytes(struct.pack("<Q", len(header)) + header + raw[8 + n :] + after)


@pytest.mark.parametrize(
    "case,needle",
    [
        ("bytes-after", "not a valid safetensors file (64 bytes after its tensors' data)"),
        ("bom", "not a valid safetensors file (its header begins with a byte-order mark)"),
        ("header-over-10**8", "its header is 100000001 bytes, more than the limit of 100000000 bytes"),
    ],
)
def test_safetensors_files_the_library_refuses_are_refused_by_the_checks_too(tmp_path, case, needle):
    """A file longer than its header says, a header that begins with a BOM, one between 10**8 bytes and 100 MiB:
    `yi-chat models` said ok and `pull` said ready of them, and -m then failed in the library's words (a
    hostile-checkpoint hunt). The library itself refuses each."""
    import struct

    from safetensors import safe_open

    from yi_cli.checkpoint import files

    f = tmp_path / "model.safetensors"
    if case == "header-over-10**8":
        with open(f, "wb") as fh:
            fh.write(struct.pack("<Q", 100_000_001))
            fh.truncate(100_000_200)  # sparse: nothing of it is read
    else:
        _one_tensor_file(f, **({"after": b"\0" * 64} if case == "bytes-after" else {"before": b"\xef\xbb\xbf"}))
    with pytest.raises(Exception):  # noqa: B017 - the library's own refusal, whatever its type
        with safe_open(str(f), "pt") as st:
            st.keys()
    with pytest.raises(LoadError) as e:
        files.check_safetensors([f])
    assert str(e.value).startswith(f"{f}: ") and needle in str(e.value)


@pytest.mark.parametrize("what", ["index-FIFO", "shard-device"])
def test_an_index_or_a_shard_that_is_no_regular_file_is_said_as_such(tmp_path, what):
    """A FIFO in the index's place was passed over in silence (the checkpoint loaded as if unsharded), and a shard
    linked to /dev/zero was "missing" (a hostile-checkpoint hunt)."""
    from yi_cli.checkpoint import files

    idx = tmp_path / "model.safetensors.index.json"
    if what == "index-FIFO":
        os.mkfifo(idx)
        needle = f"{idx}: not a regular file"
    else:
        idx.write_text(json.dumps({"weight_map": {"lm_head.weight": "model-00001.safetensors"}}))
        (tmp_path / "model-00001.safetensors").symlink_to("/dev/zero")
        needle = f"{tmp_path / 'model-00001.safetensors'}: weight shard listed in the index is a character device"
    with pytest.raises(LoadError) as e:
        files.check_index(tmp_path)
    assert str(e.value).startswith(needle), str(e.value)


def test_a_dangling_link_in_the_index_place_is_no_index_for_either_format(tmp_path):
    """A link to nothing where the index goes: a plain checkpoint loads without it, and so does a quantized one (the
    check that said what a FIFO there is refused it: a review)."""
    from yi_cli.checkpoint import files, quantized

    (tmp_path / "model.safetensors.index.json").symlink_to(tmp_path / "gone")
    _one_tensor_file(tmp_path / "model.safetensors")
    files.check_index(tmp_path)  # no index, nothing to check
    quant = {"bits": 4, "group_size": 128}
    assert quantized._weight_files(tmp_path, quant, tmp_path / "config.json") == ["model.safetensors"]


def test_a_partial_rotary_model_of_odd_head_size_is_not_refused(tmp_path):
    """The odd head_dim refusal took in Phi (head 9, partial_rotary_factor in rope_parameters: 4 dimensions rotated),
    which transformers runs (a review): only Llama's heads, all rotated, must be even."""
    from yi_cli.checkpoint import plausible

    phi = {"model_type": "phi", "hidden_size": 36, "num_attention_heads": 4, "num_key_value_heads": 4}
    phi["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}
    plausible.check(phi, tmp_path / "config.json")
    with pytest.raises(LoadError, match="head_dim = 9 is odd"):
        plausible.check({**phi, "model_type": "llama", "rope_parameters": None}, tmp_path / "config.json")


TOO_DEEP = {  # valid Jinja that Python cannot compile
    "nested-loops": "{% for i in range(2) %}" * 25 + "x" + "{% endfor %}" * 25,
    "nested-ifs": "{% if true %}" * 3000 + "x" + "{% endif %}" * 3000,
    "nested-brackets": "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
    "long-number": "{{ " + "7" * 5000 + " }}",
}


@pytest.mark.parametrize("case", sorted(TOO_DEEP))
def test_a_template_python_cannot_compile_is_refused_as_the_model_loads(case, tiny):
    from yi_cli.checkpoint.loader import load_tokenizer
    from yi_cli.engines.template import Template

    (tiny / "chat_template.jinja").write_text(TOO_DEEP[case])
    with pytest.raises(LoadError) as e:  # as the engine is made, before any turn
        Template(load_tokenizer(tiny))
    assert str(e.value).startswith(f"{tiny / 'chat_template.jinja'}: the chat template cannot be compiled ("), str(
        e.value
    )


def test_a_chat_template_file_over_its_limit_is_refused_by_its_size(tiny):
    from yi_cli.checkpoint.loader import open_checkpoint

    f = tiny / "chat_template.jinja"
    with open(f, "w") as out:  # a comment of 2 MiB, then a working template
        out.write("{# " + "x" * (2 << 20) + " #}" + CHATML_SOURCE)
    with pytest.raises(LoadError) as e:
        open_checkpoint(tiny, device="cpu")
    assert str(e.value) == f"{f}: {f.stat().st_size} bytes, more than the 1 MiB limit of a chat template"


CHATML_SOURCE = "{% for m in messages %}{{ m.content }}{% endfor %}"


def test_a_tokenizer_that_panics_is_one_line_at_load_and_at_encode(tiny):
    """The tokenizers library raises a Rust panic as PanicException, a BaseException: `except Exception` passed over
    it and the run ended in a traceback (exit 1) at load, or at every prompt."""
    from yi_cli.checkpoint.loader import open_checkpoint

    f = tiny / "tokenizer.json"
    good = json.loads(f.read_text())
    broken = json.loads(f.read_text())
    broken["normalizer"] = {"type": "Replace", "pattern": {"String": ""}, "content": "x"}  # panics on encode
    f.write_text(json.dumps(broken))
    ck = open_checkpoint(tiny, device="cpu")
    from yi_cli.engines.template import Template

    with pytest.raises(YiError) as e:
        Template(ck.tokenizer).build([{"role": "user", "content": "hello"}])
    assert str(e.value).startswith("the tokenizer failed on this text (PanicException: "), str(e.value)
    assert good["model"]["type"] == "BPE"
    good["model"].update(vocab={"a": 0, "b": 1}, merges=[["a", "b"]])  # a merge into no token of the vocabulary
    f.write_text(json.dumps(good))
    with pytest.raises(LoadError) as e:
        open_checkpoint(tiny, device="cpu")
    assert "cannot load the tokenizer (PanicException: " in str(e.value), str(e.value)


def panicking(tiny: Path, where: str) -> None:
    """tiny's tokenizer.json made to panic inside `tokenizers` on every encode, or as it loads."""
    f = tiny / "tokenizer.json"
    broken = json.loads(f.read_text())
    if where == "encode":
        broken["normalizer"] = {"type": "Replace", "pattern": {"String": ""}, "content": "x"}
    else:
        broken["model"].update(vocab={"a": 0, "b": 1}, merges=[["a", "b"]])
    f.write_text(json.dumps(broken))


@pytest.mark.parametrize("backtrace", ["", "1", "full"])
def test_a_tokenizer_panic_is_yi_chats_one_line_without_rusts_report(tiny, home, tmp_path, backtrace):
    """Rust's panic hook wrote its report on stderr before yi-chat's line: three lines (thread ... panicked at,
    the message, a note), or under RUST_BACKTRACE a page of stack frames."""
    env = {"RUST_BACKTRACE": backtrace} if backtrace else {}
    enc = Path(shutil.copytree(tiny, tmp_path / "enc"))
    panicking(enc, "encode")
    p = yi("-m", enc, "-p", "hello", "--max-new-tokens", "2", home=home, env={**env, "RUST_BACKTRACE": backtrace})
    one_line_error(p, 1, "error: the tokenizer failed on this text (PanicException: ")
    panicking(tiny, "load")
    p = yi("-m", tiny, "-p", "hello", home=home, env={**env, "RUST_BACKTRACE": backtrace})
    one_line_error(p, EXIT_LOAD, "cannot load the tokenizer (PanicException: ")


def test_a_piped_chat_goes_on_after_a_panic_with_its_lines_in_order(tiny, home):
    """Each message's panic is one line in its place; the run's own lines around them still reach stderr."""
    panicking(tiny, "encode")
    p = yi("-m", tiny, "--max-new-tokens", "2", stdin="one\ntwo\n", home=home, env={"RUST_BACKTRACE": "1"})
    err = p.stderr.decode()
    no_traceback(err)
    assert "panicked" not in err and "stack backtrace" not in err, err
    assert err.count("the tokenizer failed on this text (PanicException: ") == 2, err


def test_a_looping_template_refuses_the_turn_and_the_run_ends(tiny, home):
    (tiny / "chat_template.jinja").write_text(LOOPS["nested-ranges"])  # where transformers 5 keeps it
    p = yi("-m", tiny, "--max-new-tokens", "2", stdin="hello\n", home=home, timeout=300)
    err = p.stderr.decode()
    assert p.returncode == 1 and "chat template ran for more than" in err, err
    no_traceback(err)


def test_a_template_that_is_not_jinja_is_refused_as_the_model_loads(tiny, home):
    """A chat_template.jinja with a syntax error started a chat whose every message failed with "the chat template
    failed (Expected an expression, got 'end of statement block')", naming no file (-p: exit 1, as a failed turn).
    It is a broken checkpoint: one line naming the file, exit 3, and --raw runs without the template."""
    (tiny / "chat_template.jinja").write_text("{% for %}")
    one_line_error(
        yi("-m", tiny, "-p", "hi", home=home),
        3,
        f"{tiny / 'chat_template.jinja'}: the chat template is not valid Jinja (Expected an expression",
        "--raw runs the model without it",
    )
    p = yi("-m", tiny, "--raw", "--max-new-tokens", "2", "-p", "hi", home=home)
    assert p.returncode == 0, p.stderr.decode()
    # additional_chat_templates/default.jinja is the default template where it is there (the tokenizer reads it
    # last): its error was said of chat_template.jinja, a valid one
    (tiny / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    (tiny / "additional_chat_templates").mkdir()
    (tiny / "additional_chat_templates" / "default.jinja").write_text("{% for %}")
    bad = tiny / "additional_chat_templates" / "default.jinja"
    one_line_error(yi("-m", tiny, "-p", "hi", home=home), 3, f"{bad}: the chat template is not valid Jinja")


@pytest.mark.parametrize("source", ["{% for m in messages %}{% endfor %}", "{% for m in messages %} {% endfor %}"])
def test_a_template_that_writes_no_message_is_refused_as_the_model_loads(tiny, home, source):
    """A template rendering none of the messages' text: an empty prompt failed every turn in torch's words
    (generate: "Expected tensor for argument #1 'indices' to have one of the following scalar types") or as "the
    prompt is 0 tokens" (fast); a blank one answered a message the model never saw, the turn recorded as answered."""
    (tiny / "chat_template.jinja").write_text(source)
    for engine in ("fast", "generate"):
        p = yi("-m", tiny, "--engine", engine, "-p", "hi", home=home)
        one_line_error(p, EXIT_LOAD, f"{tiny / 'chat_template.jinja'}: the chat template writes none of the messages")
    p = yi("-m", tiny, "--raw", "--max-new-tokens", "2", "-p", "hi", home=home)
    assert p.returncode == 0, p.stderr.decode()


# --- streams, locales, terminals ----------------------------------------------------------------------------------


def run_shell(cmd: str, home: Path, env: dict | None = None, stdin: bytes = b"") -> subprocess.CompletedProcess:
    e = {**os.environ, "YI_CHAT_HOME": str(home), "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(["bash", "-c", cmd], input=stdin, capture_output=True, timeout=300, env=e)


# `0>/dev/null` (a typo of `</dev/null`): a stdin open for writing only was an internal error (EBADF), exit 1
STDIN_UNREADABLE = ["<&-", "0>/dev/null"]


@pytest.mark.parametrize("redirect", STDIN_UNREADABLE)
def test_stdin_closed_with_a_prompt_still_answers(tiny_src, home, redirect):
    p = run_shell(f"{PY} -m yi_cli -m {tiny_src} --max-new-tokens 3 -p hi {redirect}", home)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.strip()
    no_traceback(p.stderr.decode())


@pytest.mark.parametrize("redirect", STDIN_UNREADABLE)
def test_stdin_closed_without_a_prompt_is_an_empty_pipe(tiny_src, home, redirect):
    p = run_shell(f"{PY} -m yi_cli -m {tiny_src} {redirect}", home)
    assert p.returncode == 0 and "stdin is empty" in p.stderr.decode(), p.stderr.decode()
    p = run_shell(f"{PY} -m yi_cli -m {tiny_src} -p - {redirect}", home)
    one_line_error(p, 2, "-p -: stdin is empty")


@pytest.mark.parametrize("redirect", ["1>>", "2>>", "1<>"])
def test_stdin_that_stdout_or_stderr_appends_to_is_refused(tiny_src, home, tmp_path, redirect):
    """`< f >> f`: each reply appended to the file stdin reads was read back as the next message, without end (a
    pipes hunt: 82 exchanges of the model with itself in 20 s, and a --json line doubling each turn, until the disk
    filled). One line, exit 2, nothing sent; emptied first (`< f > f`) there is nothing to read, as before."""
    f = tmp_path / "loop.txt"
    f.write_text("Hi\n")
    p = run_shell(f"{PY} -m yi_cli -m {tiny_src} --max-new-tokens 3 < {f} {redirect} {f}", home)
    out = "stderr" if redirect == "2>>" else "stdout"
    said = f"stdin is the file {out} writes into: each line written would be read back as a message"
    assert p.returncode == 2 and said in f.read_text() + p.stderr.decode(), (p.stderr.decode(), f.read_text())
    assert not (home / "data" / "sessions").exists() or not list((home / "data" / "sessions").glob("*.json"))
    p = run_shell(f"{PY} -m yi_cli -m {tiny_src} --max-new-tokens 3 < {f} > {f}", home)
    assert p.returncode == 0 and "stdin is empty" in p.stderr.decode(), p.stderr.decode()


def test_stdout_closed_is_one_line_exit_2(home):
    p = run_shell(f"{PY} -m yi_cli -p hi >&-", home)
    one_line_error(p, 2, "stdout is closed; replies would be lost")
    p = run_shell(f"{PY} -m yi_cli sessions >&-", home)  # it said "replies" for a listing (run-through 4)
    one_line_error(p, 2, "stdout is closed; the output of yi-chat sessions would be lost")
    for flag in ("--help", "--version"):  # they said "replies would be lost"
        p = run_shell(f"{PY} -m yi_cli {flag} >&-", home)
        one_line_error(p, 2, f"stdout is closed; the output of yi-chat {flag} would be lost")
    for word, flag in (("--vers", "--version"), ("--he", "--help")):  # argparse takes a long flag's start: "replies"
        p = run_shell(f"{PY} -m yi_cli {word} >&-", home)
        one_line_error(p, 2, f"stdout is closed; the output of yi-chat {flag} would be lost")
    p = run_shell(f"{PY} -m yi_cli -- --help >&-", home)  # a prompt, after --
    one_line_error(p, 2, "stdout is closed; replies would be lost")


def test_stderr_closed_is_a_working_chat(tiny_src, home):
    p = run_shell(f"{PY} -m yi_cli -m {tiny_src} --max-new-tokens 3 -p hi 2>&-", home)
    assert p.returncode == 0 and p.stdout.strip()


def test_stderr_closed_error_keeps_its_exit_code_and_stays_off_stdout(home):
    p = run_shell(f"{PY} -m yi_cli -m /no/such/dir -p hi 2>&-", home)
    assert p.returncode == 3 and p.stdout == b""


@pytest.mark.parametrize(
    "env",
    [{"LANG": "C", "LC_ALL": "C"}, {"LANG": "C.UTF-8"}, {"TERM": "dumb"}, {"PYTHONIOENCODING": "ascii"}],
    ids=["LC_ALL=C", "C.UTF-8", "TERM=dumb", "ascii-io"],
)
def test_any_locale_or_terminal_with_non_ascii_input(env, tiny_src, home):
    p = yi("-m", tiny_src, "--max-new-tokens", "3", "--json", stdin="你好，世界 é\n", home=home, env=env)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 0, err
    no_traceback(err)
    assert json.loads(p.stdout.decode().splitlines()[0])["prompt"] == "你好，世界 é"


def test_whitespace_only_lines_do_nothing(tiny_src, home):
    p = yi("-m", tiny_src, "--max-new-tokens", "2", "--json", stdin=" \n\t\n   \nhi\n \n", home=home)
    assert p.returncode == 0, p.stderr.decode()
    assert [r["prompt"] for r in map(json.loads, p.stdout.decode().splitlines())] == ["hi"]
    assert p.stderr.decode().strip() == ""


def test_whitespace_only_prompt_is_one_line_exit_2(home):
    p = yi("-p", "   ", home=home)
    assert p.returncode == 2, p.stderr.decode()
    one_line_error(p, 2, "empty")


# --- terminal injection -------------------------------------------------------------------------------------------

INJECTIONS = {
    "title": ("a\x1b]0;pwned\x07b", "a\\x1b]0;pwned\\x07b"),
    "osc52-clipboard": ("\x1b]52;c;cm0gLXJmIH4=\x07", "\\x1b]52;c;cm0gLXJmIH4=\\x07"),
    "osc8-link": ("\x1b]8;;http://evil\x1b\\x\x1b]8;;\x1b\\", "\\x1b]8;;http://evil\\x1b\\x\\x1b]8;;\\x1b\\"),
    "csi-clear": ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),
    "c1-csi": ("\x9b31m", "\\x9b31m"),
    "bidi-override": ("abc\u202edef", "abc\\u202edef"),
    "backspace": ("ok\x08\x08no", "ok\\x08\\x08no"),
    "lone-cr": ("safe\rEVIL", "safe\\x0dEVIL"),
    "del-and-nul": ("a\x7fb\x00c", "a\\x7fb\\x00c"),
}


@pytest.mark.parametrize("case", sorted(INJECTIONS))
def test_escape_sequences_are_made_visible(case):
    raw, want = INJECTIONS[case]
    assert safe(raw) == want
    assert not any(ord(c) < 32 and c not in "\n\t" for c in safe(raw))


def test_plain_text_newlines_tabs_and_cjk_pass_unchanged():
    text = "line 1\n\tline 2 — 你好 👋🏽 ‍family\r\nend"
    assert safe(text) == text.replace("\r\n", "\n")


def test_history_of_a_loaded_session_shows_escapes_visibly(tmp_path, home):
    from tests.fixtures import ScriptedEngine, plain_chat
    from yi_cli.conversation import commands, store

    d = json.loads(json.dumps(GOOD_SESSION))
    d["turns"][1]["content"] = "hello \x1b]0;owned\x07 \x1b]52;c;Zm9v\x07"
    d["system"] = "sys \x1b[2J"
    f = tmp_path / "s.json"
    f.write_text(json.dumps(d))
    chat, out, err = plain_chat(ScriptedEngine())
    store.load_into(chat, str(f))
    commands.do_history(chat, "")
    shown = out.getvalue()
    assert "\x1b" not in shown and "\\x1b]0;owned\\x07" in shown and "\\x1b[2J" in shown, shown


def test_model_output_with_escapes_reaches_the_pipe_visibly():
    from tests.fixtures import ScriptedEngine, plain_chat

    chat, out, err = plain_chat(ScriptedEngine(["hi \x1b]0;t\x07 there"]))
    chat.handle("x")
    assert "\x1b" not in out.getvalue() and "\\x1b]0;t\\x07" in out.getvalue()
    assert chat.session.turns[-1].content == "hi \x1b]0;t\x07 there"  # the session keeps the true text


# --- misbehaving servers ------------------------------------------------------------------------------------------


def _remote(srv, *args, stdin="hi\n", home=None):
    return yi("--endpoint", srv.root + "/v1", "--model", "m", *args, stdin=stdin, home=home, timeout=120)


def _only_keepalives(h):
    if h.command == "GET":
        return cs.vllm_models(h)
    h.sse_start()
    for _ in cs.forever(30):
        h.chunk(b": keep-alive\n\n")
        if h.wait_for_close(0.05):
            return


def _escape_reply(h):
    if h.command == "GET":
        return cs.vllm_models(h)
    cs.vllm(h, ["safe", " \x1b]0;pwned\x07", " \x1b]52;c;Zm9v\x07 end"])


def _escape_error(h):
    if h.command == "GET":
        return cs.vllm_models(h)
    h.json(500, {"error": {"message": "boom \x1b]0;pwned\x07 \x1b[2J"}})


def _escape_model_id(h):
    if h.command == "GET":
        return h.json(200, {"data": [{"id": "evil\x1b]0;x\x07"}]})
    cs.vllm(h, ["ok"])


def _drop_mid_stream(h):
    if h.command == "GET":
        return cs.vllm_models(h)
    h.sse_start()
    h.event({"choices": [{"index": 0, "delta": {"content": "partial"}}]})
    h.connection.shutdown(2)


def _nan_usage(h):
    if h.command == "GET":
        return cs.vllm_models(h)
    h.sse_start()
    h.event({"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]})
    h.event('{"choices": [], "usage": {"prompt_tokens": NaN, "completion_tokens": 1e400}}')
    h.sse_end()


def _bad_utf8(h):
    if h.command == "GET":
        return cs.vllm_models(h)
    h.sse_start()
    h.chunk(b'data: {"choices": [{"index": 0, "delta": {"content": "\xff\xfe"}}]}\n\n')
    h.event({"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]})
    h.sse_end()


def _html(h):
    if h.command == "GET":
        return cs.vllm_models(h)
    data = b"<html>\x1b]0;x\x07 not an API</html>"
    h.send_response(200)
    h.send_header("Content-Type", "text/html")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


def _escape_models_error(h):
    h.json(500, {"error": {"message": "down \x1b]0;pwned\x07 \x1b]52;c;Zm9v\x07"}})


REMOTE_CASES = {
    "escape-every-error": (_escape_models_error, (), 1, "500"),
    "keepalives-only": (_only_keepalives, ("--idle-timeout", "1"), 1, "1"),
    "escape-reply": (_escape_reply, (), 0, None),
    "escape-error": (_escape_error, (), 1, "500"),
    "escape-model-id": (_escape_model_id, (), None, None),
    "drop-mid-stream": (_drop_mid_stream, (), 1, None),
    "nan-usage": (_nan_usage, (), None, None),
    "bad-utf8-chunk": (_bad_utf8, (), None, None),
    "html-answer": (_html, (), 1, None),
}


@pytest.mark.parametrize("case", sorted(REMOTE_CASES))
def test_misbehaving_server(case, home):
    answer, args, code, needle = REMOTE_CASES[case]
    with Server(answer) as srv:
        p = _remote(srv, *args, home=home)
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    no_traceback(err)
    assert "\x1b" not in out and "\x1b" not in err, (out, err)  # nothing from the server reaches a terminal raw
    if code is not None:
        assert p.returncode == code, err
    else:
        assert p.returncode in (0, 1), err
    if needle:
        assert needle in err
    if case == "escape-reply":
        assert "\\x1b]0;pwned\\x07" in out


# --- signals at random instants -----------------------------------------------------------------------------------


def _sessions(home: Path) -> list[dict]:
    out = []
    for f in sorted((home / "data" / "sessions").glob("*.json")):
        out.append(json.loads(f.read_text()))  # every file is whole, valid JSON
    return out


def _check_on_disk(stdout: bytes, home: Path) -> int:
    """Every reply the run printed (a --json line) is in a session file, and every session is well-formed."""
    replies = [json.loads(x) for x in stdout.decode().splitlines() if x.strip().startswith("{")]
    turns = [(t["role"], t["content"]) for s in _sessions(home) for t in s["turns"]]
    for s in _sessions(home):
        roles = [t["role"] for t in s["turns"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and len(roles) % 2 == 0, roles
    for r in replies:
        if "reply" in r:
            assert ("user", r["prompt"]) in turns and ("assistant", r["reply"]) in turns, r
    return len(replies)


# yi-chat run in-process with a hook that sends the process `sig` as torch's import begins, and records at exit
# how far torch's import got.
SIGNAL_AT_IMPORT = """
import atexit, builtins, os, signal, sys
real, fired, sig = builtins.__import__, [], getattr(signal, sys.argv[1])
def hook(name, *a, **k):
    if name == "torch" and not fired:
        fired.append(1)
        os.kill(os.getpid(), sig)
    return real(name, *a, **k)
builtins.__import__ = hook
atexit.register(lambda: print("torch imported:", "torch.distributed" in sys.modules, file=sys.stderr))
sys.argv = ["yi-chat", *sys.argv[2:]]
from yi_cli.launch import entry
entry()
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_signal_during_torchs_import_waits_for_its_end(tiny_src, home, sig):
    """A signal in the first ~0.3 s of a run (torch's import): its handler's KeyboardInterrupt, raised inside the
    import's native init, aborted the process (pybind11's terminate, exit 134), left numpy half loaded (a traceback:
    "cannot load module more than once per process") or was swallowed (both piped lines answered, exit 0). The
    signal is held until the import is done: it arrives here as the import begins, the import completes, then the
    run ends as the signal says, in one line, no line answered."""
    e = {**os.environ, "YI_CHAT_HOME": str(home), "COLUMNS": "80"}
    p = subprocess.run(
        [PY, "-c", SIGNAL_AT_IMPORT, sig, "-m", str(tiny_src), "--max-new-tokens", "2"],
        input=b"hello\nhow are you\n",
        capture_output=True,
        env=e,
        timeout=300,
    )
    err = p.stderr.decode()
    no_traceback(err)
    code, said = {"SIGTERM": (130, "terminated"), "SIGINT": (130, "interrupted"), "SIGHUP": (129, "hung up")}[sig]
    assert (p.returncode, p.stdout) == (code, b""), err
    assert err.splitlines() == [f"yi-chat: {said}", "torch imported: True"], err


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_at_a_random_instant_loses_no_finished_exchange(sig, seed, tiny_src, home):
    rng = random.Random(seed * 2 + (sig == signal.SIGINT))
    lines = "".join(f"line {i} {rng.random():.3f}\n" for i in range(40))
    e = {**os.environ, "YI_CHAT_HOME": str(home), "COLUMNS": "80"}
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "yi_cli",
            "-m",
            str(tiny_src),
            "--json",
            "--max-new-tokens",
            "4",
            "--temperature",
            "1",
            "--top-p",
            "1",
            "--seed",
            "0",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=e,
    )
    # The instant: a random number of replies in (0 = while the model loads or the first reply runs), then a
    # random fraction of the next one. Replies are waited for on the pipe, not by sleeping.
    proc.stdin.write(lines.encode())
    proc.stdin.close()
    proc.stdin = None  # communicate() below must not flush it again
    got = b""
    for _ in range(rng.randrange(0, 4)):
        line = proc.stdout.readline()
        if not line:
            break
        got += line
    time.sleep(rng.random() * 0.3)
    proc.send_signal(sig)
    rest, err = proc.communicate(timeout=120)
    err = err.decode(errors="replace")
    no_traceback(err)
    assert proc.returncode in (0, 130, -sig), (proc.returncode, err)
    if proc.returncode == 130:
        assert len([ln for ln in err.splitlines() if ln.strip()]) <= 2, err
    _check_on_disk(got + rest, home)


def test_an_interrupt_caught_inside_string_compiled_code_still_exits_with_its_code(tmp_path, home):
    """A signal that lands while code compiled from a string runs (dataclasses' generated methods, at import) is
    caught as any other, but left CPython's "unhandled interrupt" flag set: `python -m yi_cli` printed its line,
    then died by SIGINT (-2) instead of exiting 130 (test_signal_at_a_random_instant... met it about once in 25).
    The instant is made certain here: the chat's first step raises KeyboardInterrupt from an exec'd string."""
    (tmp_path / "sitecustomize.py").write_text(
        "import yi_cli.ui.cli as cli\ndef _main(args):\n    exec('raise KeyboardInterrupt')\ncli._main = _main\n"
    )
    root = Path(__file__).resolve().parents[1]
    e = {**os.environ, "YI_CHAT_HOME": str(home), "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)])}
    r = subprocess.run([PY, "-m", "yi_cli", "-p", "hi"], capture_output=True, text=True, env=e, timeout=120)
    no_traceback(r.stderr)
    assert r.returncode == 130, (r.returncode, r.stderr)
    assert r.stderr.strip() == "yi-chat: interrupted", r.stderr


# --- concurrency --------------------------------------------------------------------------------------------------


def test_two_runs_at_once_with_one_home_keep_both_conversations(tiny_src, home):
    e = {**os.environ, "YI_CHAT_HOME": str(home)}
    procs = [
        subprocess.Popen(
            [PY, "-m", "yi_cli", "-m", str(tiny_src), "--json", "--max-new-tokens", "2"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=e,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(f"run {i} a\nrun {i} b\nrun {i} c\n".encode(), timeout=300) for i, p in enumerate(procs)]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    firsts = sorted(s["turns"][0]["content"] for s in _sessions(home))
    assert firsts == ["run 0 a", "run 1 a"] and all(len(s["turns"]) == 6 for s in _sessions(home))
    assert _check_on_disk(outs[0][0] + outs[1][0], home) == 6


def test_three_saves_in_one_second_make_three_files(home):
    from tests.fixtures import ScriptedEngine, plain_chat
    from yi_cli.conversation import store

    chat, out, err = plain_chat(ScriptedEngine())
    chat.handle("hi")
    paths = {store.save(chat, None) for _ in range(3)}
    assert len(paths) == 3 and all(p.is_file() for p in paths)


@pytest.mark.slow
def test_two_first_runs_convert_the_demo_at_once(tmp_path):
    """Two processes on an empty cache: one converts, the other waits on the lock and reuses the result."""
    home = tmp_path / "home"
    e = {**os.environ, "YI_CHAT_HOME": str(home), "PYTHONPATH": str(ROOT)}
    code = "from yi_cli.checkpoint import demo; print(demo.ensure('demo-fp32'))"
    procs = [
        subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e) for _ in range(2)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    errs = [o[1].decode() for o in outs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert outs[0][0] == outs[1][0]
    assert sum("waiting for it" in x for x in errs) == 1 and sum("first run: ready" in x for x in errs) == 1, errs
    out = Path(outs[0][0].decode().strip())
    assert (out / "config.json").is_file() and not [p for p in out.parent.iterdir() if p.name.startswith(".tmp")]


@pytest.mark.parametrize("where", ["demo", "demo-relative", "hub", "own"])
def test_a_truncated_weight_file_says_how_to_get_it_again_where_it_lies(home, where, monkeypatch):
    """A truncated model.safetensors said "download it again (`yi-chat pull ORG/NAME` fetches a damaged hub file
    again)" wherever it lay: of the demo's cache too, which no pull fetches (it is converted)."""
    from yi_cli.checkpoint import files

    monkeypatch.chdir(home)
    folder = {
        "demo": home / "cache" / "demo" / "demo",
        "demo-relative": Path("cache") / "demo" / "demo",  # -m cache/demo/demo, from the home
        "hub": home / "hf" / "hub" / "models--acme--tiny" / "snapshots" / "abc123",
        "own": home / "models" / "mine",
    }[where]
    folder.mkdir(parents=True)
    head = json.dumps({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(head)) + head + b"\0" * 100)
    with pytest.raises(LoadError) as e:
        files.check_safetensors([folder / "model.safetensors"])
    said = {
        "demo": f"; remove {folder} and the next run converts the demo again",
        "demo-relative": f"; remove {folder} and the next run converts the demo again",
        "hub": "; `yi-chat pull acme/tiny` fetches it again",
        "own": "; download it again",
    }[where]
    assert str(e.value).startswith(f"{folder / 'model.safetensors'}: truncated (") and str(e.value).endswith(said)


def _leftovers(root: Path) -> list[Path]:
    """A killed conversion's temp folders (demo's own and writer's) and a stray temp file, in the demo cache."""
    made = [root / ".tmp-k1ll3d", root / ".demo.tmp-abc", root / ".demo-gptq8.old-xyz"]
    for d in made:
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "model.safetensors").write_bytes(b"x" * 1000)
    (root / ".tmp-file").write_bytes(b"x")
    return [*made, root / ".tmp-file"]


def test_a_killed_conversions_temp_folders_are_removed_when_no_conversion_runs(home):
    """A conversion killed with SIGKILL (the first run's, or a waiter's that took over) left its .tmp-* folder,
    0.5 GB, in the demo cache for good: only its own `finally` removed it. A run that finds the lock free removes
    them; one that finds it taken (a conversion runs now: they may be its own) leaves them."""
    import fcntl

    from yi_cli.checkpoint import demo

    root = home / "cache" / "demo"
    (root / "demo").mkdir(parents=True)
    (root / "demo" / "config.json").write_text("{}")
    left = _leftovers(root)
    with open(root / ".convert.lock", "a+") as held:  # another process's conversion, as far as flock knows
        fcntl.flock(held, fcntl.LOCK_EX)
        assert demo.ensure("demo") == root / "demo"
        assert all(p.exists() for p in left)
    assert demo.ensure("demo") == root / "demo"
    assert not [p for p in left if p.exists()]
    assert sorted(p.name for p in root.iterdir()) == [".convert.lock", "demo"]


@pytest.mark.parametrize("kind", ["FIFO", "directory"])
def test_a_demo_lock_file_that_is_no_file_is_named_as_such(home, kind):
    """The demo cache's lock file a FIFO: "demo: cannot create the cache directory (None)", exit 3 — the open
    succeeded and the file object failed with no reason, and the line named the folder, not the file."""
    from yi_cli.checkpoint import demo

    root = home / "cache" / "demo"
    root.mkdir(parents=True)
    lock = root / ".convert.lock"
    os.mkfifo(lock) if kind == "FIFO" else lock.mkdir()
    with pytest.raises(LoadError) as e:
        demo.ensure("demo-gptq8")
    assert str(e.value) == f"{lock}: not a regular file (a {kind}); remove it"


def test_a_demo_lock_file_whose_mode_cannot_be_set_is_one_line(home, monkeypatch):
    """Another user's lock file (or a file system that refuses modes): the fchmod's PermissionError escaped the
    lock's LoadError, past the guard that lets a cache already converted load without the lock."""
    from yi_cli.checkpoint import demo

    def refused(fd, mode):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(demo.os, "fchmod", refused)
    root = home / "cache" / "demo"
    root.mkdir(parents=True)
    with pytest.raises(LoadError) as e:
        demo.ensure("demo-gptq8")
    assert str(e.value) == f"{root / '.convert.lock'}: cannot open the demo cache's lock file (Operation not permitted)"


def test_a_conversion_starts_by_removing_what_a_killed_one_left(home, monkeypatch):
    from yi_cli.checkpoint import demo

    root = home / "cache" / "demo"
    root.mkdir(parents=True)
    left = _leftovers(root)
    seen = []
    monkeypatch.setattr(demo, "_make", lambda name, out, src: seen.append([p for p in left if p.exists()]) or out)
    assert demo.ensure("demo-gptq8") == root / "demo-gptq8"
    assert seen == [[]]


# --- the readers themselves ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,want",
    [
        ('{"a": "[[[[", "b": [1]}', 2),  # brackets inside strings do not nest
        ('{"a": "\\"[[[", "b": {}}', 2),  # nor after an escaped quote
        ("[" * 100_000 + "]" * 100_000, 100_000),  # any depth is measured without recursing
        ('"just a string"', 0),
    ],
)
def test_depth_is_measured_outside_strings(text, want):
    assert inputs.depth(text) == want


@pytest.mark.parametrize("number", ["9" * 5000, "1e400", "-1e400"])
def test_a_number_out_of_range_is_said_with_where_it_stands(number):
    """A parse hook knows no key: "the number 999... is out of range" named no field of a session file. It says the
    line and column, as JSON's own errors do."""
    text = '{\n  "turns": [\n    {"tokens": ' + number + "}\n  ]\n}"
    with pytest.raises(YiError) as e:
        inputs.loads(text, "s.json")
    assert str(e.value).endswith("is out of range at line 3 column 16"), str(e.value)


def test_limits_are_checked_before_reading(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x" * 1025)
    with pytest.raises(YiError, match="1025 bytes, more than the 1 KiB limit"):
        inputs.read_bytes(f, 1024)
    assert inputs.read_bytes(f, 1025) == b"x" * 1025


def test_a_signal_right_after_a_reply_is_shown_finds_it_on_disk(home):
    """The commit (session + autosave) happens before the reply is reported: a SIGTERM handler raising at the
    report (here: the renderer raising KeyboardInterrupt) cannot leave a shown exchange off the disk."""
    from tests.fixtures import ScriptedEngine, plain_chat
    from yi_cli.conversation import store

    chat, out, err = plain_chat(ScriptedEngine(["the answer"]))
    chat.on_turn = store.Autosave("pipe")

    def interrupted(text, stats, error=None):
        raise KeyboardInterrupt

    chat.render.reply_end = interrupted
    with pytest.raises(KeyboardInterrupt):
        chat.handle("question")
    session, _, _ = store.read(str(chat.on_turn.path))
    assert [(t.role, t.content) for t in session.turns] == [("user", "question"), ("assistant", "the answer")]


def test_the_autosave_write_holds_signals_until_it_is_done(home, monkeypatch):
    from tests.fixtures import ScriptedEngine, plain_chat
    from yi_cli.conversation import store

    chat, out, err = plain_chat(ScriptedEngine(["a reply"]))
    seen = []
    real_new, real_atomic = store.write_new, store.write_atomic

    def write_new(directory, text, owner=None):  # the message's, as its reply starts
        path = real_new(directory, text, owner)
        seen.append(path)
        return path

    def write_atomic(path, text):  # the reply's: a SIGINT lands in the middle of the write
        os.kill(os.getpid(), signal.SIGINT)
        real_atomic(path, text)
        seen.append(path)

    chat.on_turn = store.Autosave("pipe")
    monkeypatch.setattr(store, "write_new", write_new)
    monkeypatch.setattr(store, "write_atomic", write_atomic)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in the CLI: Ctrl-C raises
    try:
        # Held until the file is written, then taken by the reply it came after (which had stopped: nothing more to
        # stop), and counted, so that a piped run stops after this reply (it raised KeyboardInterrupt there, which
        # could cut the reply's [interrupted] mark and footer short; a second Ctrl-C, twice quickly)
        chat.handle("q")
    finally:
        signal.signal(signal.SIGINT, before)
    assert chat.ctrl_c == 1
    assert seen == [chat.on_turn.path] * 2
    assert store.read(str(chat.on_turn.path))[0].turns[-1].content == "a reply"


def test_a_server_error_at_start_is_one_line_exit_3_with_escapes_visible(home):
    """No --model: the model list is read at start, and its failure is the CLI's own one-line error."""
    with Server(_escape_models_error) as srv:
        p = yi("--endpoint", srv.root + "/v1", "-p", "hi", home=home, timeout=120)
    line = one_line_error(p, 3, "500")
    assert "\x1b" not in line and "\\x1b]0;pwned\\x07" in line, line


@pytest.mark.parametrize("obstacle", ["dangling-link", "file", "folder-without-config"])
def test_the_demo_is_packed_over_whatever_is_in_its_place(home, demo_fp32_dir, obstacle):
    """cache/demo/demo-gptq8 a dangling link (or a file, or a folder a conversion left without its config): the
    rename onto it failed, an internal error (NotADirectoryError), exit 1, at every run; and a demo-fp32 so left
    failed after the 20-60 s of its conversion, every run (a demo-cache hunt). What is there is moved aside."""
    from yi_cli.checkpoint import demo

    root = home / "cache" / "demo"
    root.mkdir(parents=True)
    (root / "demo-fp32").symlink_to(demo_fp32_dir)  # the source, converted (a link: no 500 MB copy)
    there = root / "demo-gptq8"
    if obstacle == "dangling-link":
        there.symlink_to(home / "nowhere")
    elif obstacle == "file":
        there.write_text("x")
    else:
        there.mkdir()
        (there / "model.safetensors").write_bytes(b"half")
    assert demo.ensure("demo-gptq8") == there
    assert there.is_dir() and not there.is_symlink() and (there / "config.json").is_file()
    assert sorted(p.name for p in root.iterdir()) == [".convert.lock", "demo-fp32", "demo-gptq8"]


@pytest.mark.parametrize("damage", ["empty-header", "no-weights", "fifo", "stray-tensor"])
def test_a_demo_source_that_cannot_be_packed_is_one_line(home, demo_fp32_dir, damage):
    """demo-fp32 damaged before demo or demo-gptq8 was packed from it: its weights cut short (an internal error,
    exit 1), gone (a demo of no tensors, "ready", then "missing tensor" at every run), a FIFO named *.safetensors
    beside them (a blocking open that no signal ended), a stray file's huge tensor (read whole into memory). Its
    files are checked as the loader checks them before a weight is read: one line naming the file and what to do;
    a stray tensor is not read at all."""
    from yi_cli.checkpoint import demo

    src = home / "cache" / "demo" / "demo-fp32"
    src.mkdir(parents=True)
    for f in demo_fp32_dir.iterdir():
        if f.suffix != ".safetensors" or damage in ("fifo", "stray-tensor"):
            shutil.copy(f, src / f.name)
    if damage == "empty-header":
        (src / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    elif damage == "fifo":
        os.mkfifo(src / "model-backup.safetensors")
    elif damage == "stray-tensor":  # 8 GB of F32 declared, a sparse file: read, it took every byte of memory
        header = json.dumps(
            {"extra.big": {"dtype": "F32", "shape": [2_000_000_000], "data_offsets": [0, 8_000_000_000]}}
        )
        with open(src / "zz-extra.safetensors", "wb") as f:
            f.write(len(header).to_bytes(8, "little") + header.encode())
            f.truncate(8 + len(header) + 8_000_000_000)
        assert demo.ensure("demo-gptq8") == src.parent / "demo-gptq8"
        return
    with pytest.raises(LoadError) as e:
        demo.ensure("demo-gptq8")
    said = {
        "empty-header": f"{src / 'model.safetensors'}: not a valid safetensors file (its header length does not fit "
        "the file)",
        "no-weights": f"{src}: no weight files (*.safetensors)",
        "fifo": f"{src / 'model-backup.safetensors'}: not a regular file",
    }[damage]
    assert str(e.value) == f"{said}; remove {src} and the next run converts the demo again"


@pytest.mark.parametrize("layers,said", [(1, "holds tensors of layer 1"), (3, "no tensors of layer 2")])
def test_a_config_whose_layer_count_the_weights_contradict_is_refused(tiny, home, layers, said):
    """num_hidden_layers edited below the weights' layers (30 to 20 in the demo): the model ran cut short and
    babbled ("I I I I"), exit 0, the leftover layers passed over in silence; above them, -m refused it only as it
    loaded while `pull` said ready and `models` ok (a demo-cache hunt). Both are one line at the check of the
    weights' headers, -m and `models` alike."""
    set_json(tiny / "config.json", num_hidden_layers=layers)
    p = subprocess.run(
        [PY, "-m", "yi_cli", "-m", str(tiny), "-p", "hi", "--max-new-tokens", "2"],
        capture_output=True,
        env={**os.environ, "YI_CHAT_HOME": str(home)},
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    err = p.stderr.decode()
    assert p.returncode == 3 and len(err.splitlines()) == 1, err
    assert f"{said}, but config.json has num_hidden_layers = {layers}" in err, err


def test_a_demo_folder_missing_files_says_how_to_get_it_whole(home, tmp_path):
    """A converted demo without its tokenizer said "copy them from where the model came from" (yi-chat made it: there
    is nowhere to copy from), and without its weights gave no way out (a demo-cache hunt). Both say to remove the
    folder for the next run to convert it again; a folder of the user's keeps its words."""
    from yi_cli.checkpoint import quantized
    from yi_cli.checkpoint.loader import load_tokenizer

    demo = home / "cache" / "demo" / "demo"
    demo.mkdir(parents=True)
    again = f"remove {demo} and the next run converts the demo again"
    with pytest.raises(LoadError) as e:
        load_tokenizer(demo)
    assert str(e.value).endswith(f"no tokenizer files (tokenizer.json or tokenizer.model); {again}"), e.value
    with pytest.raises(LoadError) as e:
        quantized._weight_files(demo, {"bits": 4, "group_size": 128}, demo / "config.json")
    assert str(e.value).endswith(f"(quantized checkpoints load only from safetensors); {again}"), e.value
    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(LoadError) as e:
        load_tokenizer(mine)
    assert str(e.value).endswith("; copy them from where the model came from"), e.value


@pytest.mark.parametrize("vocab", ["dangling-link", "folder", "fifo"])
def test_a_tokenizer_without_a_usable_vocabulary_is_refused_not_an_empty_one(tiny, home, vocab):
    """tokenizer_config.json naming LlamaTokenizer (as Yi's does), no tokenizer.json, and tokenizer.model a dangling
    link, a folder or a FIFO (or only an unrelated foo.model): transformers made a tokenizer of 3 tokens, every
    message was sent as no tokens, each reply empty, exit 0. One line, exit 3."""
    (tiny / "tokenizer.json").unlink()
    cfg = json.loads((tiny / "tokenizer_config.json").read_text())
    cfg["tokenizer_class"] = "LlamaTokenizer"
    (tiny / "tokenizer_config.json").write_text(json.dumps(cfg))
    model = tiny / "tokenizer.model"
    if vocab == "dangling-link":
        model.symlink_to("../../blobs/gone")
    elif vocab == "folder":
        model.mkdir()
    else:
        os.mkfifo(model)
    p = yi("-m", tiny, "-p", "hi", "--max-new-tokens", "2", home=home)
    one_line_error(p, EXIT_LOAD, f"{tiny}: no tokenizer files (tokenizer.json or tokenizer.model)")


def test_a_pickle_named_in_a_safetensors_index_is_refused_without_allow_pickle(tiny, home, tmp_path):
    """A safetensors index mapping one tensor to `evil.bin` (a torch.save pickle beside a real shard): transformers
    read it with torch's pickle loader, no --allow-pickle asked (its name sorting first). A safetensors index names
    safetensors shards: refused before any weight is read, and the pickle's code never runs."""
    import torch
    from safetensors import safe_open

    ran = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(ran), "w"))

    torch.save({"model.norm.weight": Evil()}, tiny / "evil.bin")
    with safe_open(tiny / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    (tiny / "model.safetensors").rename(tiny / "model-00001-of-00001.safetensors")
    weight_map = {k: "evil.bin" if k == "model.norm.weight" else "model-00001-of-00001.safetensors" for k in keys}
    (tiny / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    for engine in ("auto", "generate"):
        p = yi("-m", tiny, "--engine", engine, "-p", "hi", "--max-new-tokens", "2", home=home)
        one_line_error(p, EXIT_LOAD, f"{tiny / 'model.safetensors.index.json'}: weight_map names 'evil.bin', not a")
    assert not ran.exists()


@pytest.mark.parametrize("damage", ["config-cut", "config-empty-object", "weights-cut", "tokenizer-cut"])
def test_a_damaged_file_of_a_converted_demo_says_to_remove_its_folder(tiny_src, home, damage):
    """A corrupt config.json, a truncated model.safetensors or tokenizer.json in the demo's cache said what was wrong
    with a file the user never made, and nothing of what to do (the folder's removal converts it again)."""
    demo = Path(shutil.copytree(tiny_src, home / "cache" / "demo" / "demo-fp32"))
    name = {"config": "config.json", "weights": "model.safetensors", "tokenizer": "tokenizer.json"}[
        damage.split("-")[0]
    ]
    f = demo / name
    if damage == "config-empty-object":
        f.write_text("{}")
    else:
        f.write_bytes(f.read_bytes()[: min(1000, f.stat().st_size // 2)])
    line = one_line_error(yi("-m", "demo-fp32", "-p", "hi", "--max-new-tokens", "2", home=home), EXIT_LOAD, f"{f}: ")
    assert line.endswith(f"; remove {demo} and the next run converts the demo again"), line


@pytest.mark.parametrize("name,data", [("tokenizer.json", b"[]"), ("chat_template.jinja", b"\xff{{ messages }}")])
def test_a_tokenizer_file_of_the_wrong_shape_or_encoding_is_named(tiny, home, name, data):
    """tokenizer.json that is a JSON array (a TypeError inside the tokenizers library) and a chat_template.jinja that
    is not UTF-8 (a UnicodeDecodeError) were said of the folder: "ckpt: cannot load the tokenizer (...)". The line
    names the file."""
    f = tiny / name
    f.write_bytes(data)
    p = yi("-m", tiny, "-p", "hello", "--max-new-tokens", "2", home=home)
    one_line_error(p, EXIT_LOAD, f"{f}: cannot load the tokenizer (")


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json"])
def test_a_tokenizer_file_cut_short_is_named_with_its_json_error(tiny, home, name):
    """A truncated tokenizer.json was reported against the folder ("ckpt: cannot load the tokenizer
    (JSONDecodeError: ... line 4692 column 16)"): the line and column pointed into a file the line did not name."""
    f = tiny / name
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    p = yi("-m", tiny, "-p", "hello", "--max-new-tokens", "2", home=home)
    one_line_error(p, EXIT_LOAD, f"{f}: ", "JSONDecodeError" if name == "tokenizer.json" else "")


def test_context_loads_a_model_whose_full_kv_cache_would_not_fit(tiny, home):
    """A context whose KV cache the memory does not hold (a 1M-context fine-tune on a smaller machine; here 2^24
    positions and a machine of 1 GiB): the load was refused for the full context's cache whatever --context said
    (exit 3, the line naming no way out)."""
    cfg = json.loads((tiny / "config.json").read_text())
    (tiny / "config.json").write_text(json.dumps({**cfg, "max_position_embeddings": 1 << 24}))
    small = "from yi_cli.checkpoint import plausible; plausible.device_memory = lambda device: 1 << 30\n"
    run = [sys.executable, "-c", small + "from yi_cli.ui import cli; cli.entry()", "-m", str(tiny), "-p", "hello"]
    env = {**os.environ, "YI_CHAT_HOME": str(home)}
    p = subprocess.run([*run, "--max-new-tokens", "2"], stdin=subprocess.DEVNULL, capture_output=True, env=env)
    one_line_error(p, EXIT_LOAD, "max_position_embeddings: this model needs about", "; --context N holds fewer")
    p = subprocess.run([*run, "--context", "4096"], stdin=subprocess.DEVNULL, capture_output=True, env=env)
    assert p.returncode == 0, p.stderr.decode()


def test_a_chat_started_in_a_deleted_folder_says_so_in_one_line(tiny, home, tmp_path):
    """A shell in a folder removed under it: torch's import died in MKL ("Intel oneMKL FATAL ERROR: Cannot load
    .../libtorch_cpu.so"), exit 2, the code of a usage error, without a line of yi-chat's."""
    gone = tmp_path / "gone"
    script = f'mkdir "{gone}" && cd "{gone}" && rmdir "{gone}" && exec "$0" -m yi_cli -m "$1" -p hi'
    env = {**os.environ, "YI_CHAT_HOME": str(home)}
    p = subprocess.run(["sh", "-c", script, sys.executable, str(tiny)], capture_output=True, env=env)
    one_line_error(p, EXIT_LOAD, "the current folder no longer exists (deleted); cd to one that does")


def greedy_replies(model, home, engines=("fast", "generate"), tokens: int = 8) -> list[str]:
    """Each engine's greedy reply to "hi" (--json), each run checked to succeed."""
    replies = []
    for engine in engines:
        args = ("--engine", engine, "--json", "--temperature", "0", "--max-new-tokens", str(tokens), "-p", "hi")
        p = yi("-m", model, *args, home=home)
        assert p.returncode == 0, p.stderr.decode()
        replies.append(json.loads(p.stdout)["reply"])
    return replies


def test_both_engines_take_the_attention_biases_the_config_says(tiny, home):
    """config.json's attention_bias: the fast engine read q/k/v/o biases wherever the file had them. One without the
    biases its config names ran on the fast engine (the generate engine refused it: missing tensor); biases the config
    has no place for changed the fast engine's replies, while transformers leaves them out."""
    from safetensors.torch import load_file, save_file

    cfg = json.loads((tiny / "config.json").read_text())
    (tiny / "config.json").write_text(json.dumps({**cfg, "attention_bias": True}))
    for engine in ("fast", "generate"):
        p = yi("-m", tiny, "--engine", engine, "-p", "hi", home=home)
        one_line_error(p, EXIT_LOAD, "missing tensor model.layers.0.self_attn.")
    (tiny / "config.json").write_text(json.dumps(cfg))
    tensors = load_file(str(tiny / "model.safetensors"))
    g = __import__("torch").Generator().manual_seed(0)
    for name in [n for n in tensors if n.endswith("_proj.weight") and ".self_attn." in n]:
        tensors[name.replace(".weight", ".bias")] = __import__("torch").randn(tensors[name].shape[0], generator=g) * 5
    save_file(tensors, str(tiny / "model.safetensors"), metadata={"format": "pt"})
    fast, generate = greedy_replies(tiny, home, tokens=12)
    assert fast == generate


@pytest.mark.parametrize(
    "edit,said",
    [
        ({"vocab_size": 1000}, "tensor model.embed_tokens.weight has shape [49152, 576], expected [1000, 576]"),
        (
            {"head_dim": 32},
            "layer model.layers.0.self_attn.o_proj is not packable (in=288, out=576, awq 4-bit group 64)",
        ),
        ({"quantization_config": {"group_size": 128}}, "layer model.layers.0.self_attn.q_proj is not packable"),
        (
            {"intermediate_size": 1600},
            "tensor model.layers.0.mlp.gate_proj.qweight has shape [576, 192], expected [576, 200]",
        ),
    ],
)
def test_models_and_pull_check_the_tensor_shapes_the_config_implies(demo_dir, tmp_path, edit, said):
    """`yi-chat models` listed ok (and `pull` said ready) of checkpoints whose weights -m refused (exit 3): a
    head_dim, a vocab_size or an intermediate_size edited in config.json, a group_size that does not divide a
    projection's input. The headers' shapes are checked against the config as the listing reads them."""
    from yi_cli.checkpoint import demo
    from yi_cli.ui.models_cmd import describe

    for name in ("demo", "demo-gptq8", "demo-fp32"):  # as they are: loadable, every shape as the config says
        assert describe(Path(demo.ensure(name)))["loadable"], name  # (made here when no test before made it)
    ckpt = Path(shutil.copytree(demo_dir, tmp_path / "ckpt"))
    cfg = json.loads((ckpt / "config.json").read_text())
    for k, v in edit.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) else v
    (ckpt / "config.json").write_text(json.dumps(cfg))
    row = describe(ckpt)
    assert not row["loadable"] and row["reason"].startswith(f"{ckpt / 'model.safetensors'}: {said}"), row["reason"]


@pytest.mark.parametrize(
    "gone,untie",
    [("model.layers.3.self_attn.q_proj.qweight", False), ("model.norm.weight", False), ("lm_head.weight", True)],
    ids=["projection", "final-norm", "untied-head"],
)
def test_models_and_pull_say_a_tensor_the_load_needs_is_missing(demo_dir, tmp_path, gone, untie):
    """A checkpoint without one of its projections, its final norm, or (tie_word_embeddings false) its lm_head:
    `pull` said ready and `models` ok, and -m refused it ("missing tensor ..."). The headers say it first."""
    from safetensors.torch import load_file, save_file

    from yi_cli.ui.models_cmd import describe

    ckpt = Path(shutil.copytree(demo_dir, tmp_path / "ckpt"))
    tensors = load_file(str(ckpt / "model.safetensors"))
    tensors.pop(gone, None)
    save_file(tensors, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    if untie:
        cfg = json.loads((ckpt / "config.json").read_text())
        (ckpt / "config.json").write_text(json.dumps({**cfg, "tie_word_embeddings": False}))
    row = describe(ckpt)
    said = f"{ckpt / 'model.safetensors'}: missing tensor {gone}"
    assert not row["loadable"] and row["reason"] == said, row["reason"]


def test_the_missing_tensor_check_leaves_names_it_cannot_judge_to_the_load(tmp_path):
    """Pickle weights (no headers read: no names at all) and a Llama checkpoint saved without the `model.` prefix
    (transformers adds it; --engine generate chatted) were refused as missing model.embed_tokens.weight, the first
    after an IndexError for `yi-chat models` as a whole (a diff review)."""
    from yi_cli.checkpoint import shapes

    cfg = {
        "model_type": "llama",
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_hidden_layers": 1,
        "intermediate_size": 128,
        "vocab_size": 100,
    }
    shapes.check({}, cfg, None)
    f = tmp_path / "model.safetensors"
    shapes.check({f: {"embed_tokens.weight": [100, 64], "norm.weight": [64]}}, cfg, None)
    with pytest.raises(LoadError) as e:
        shapes.check({f: {"model.embed_tokens.weight": [100, 64], "model.norm.weight": [64]}}, cfg, None)
    assert str(e.value) == f"{f}: missing tensor model.layers.0.input_layernorm.weight"


def test_an_integer_where_transformers_declares_a_float_loads_on_both_engines(tiny, home):
    """ "rms_norm_eps": 0 (or 1, "initializer_range": 0): JSON has one kind of number, and a hand or a writer drops the
    ".0". The fast engine chatted; --engine generate and /model failed in the words of transformers' strict config
    ("Validation error for field 'rms_norm_eps': TypeError: ... expected float, got int"), exit 3."""
    cfg = json.loads((tiny / "config.json").read_text())
    (tiny / "config.json").write_text(json.dumps({**cfg, "rms_norm_eps": 1, "initializer_range": 0}))
    fast, generate = greedy_replies(tiny, home)
    assert fast == generate


def test_a_sliding_window_is_left_to_the_engine_that_attends_as_transformers_does(tiny, home):
    """config.json's sliding_window: transformers' Llama attends to that many positions only; the fast engine
    attended to all and chatted on, its replies past the window other than the generate engine's."""
    cfg = json.loads((tiny / "config.json").read_text())
    (tiny / "config.json").write_text(json.dumps({**cfg, "sliding_window": 4}))
    p = yi("-m", tiny, "--engine", "fast", "-p", "hi", home=home)
    one_line_error(p, EXIT_LOAD, "a sliding window of 4 positions: use --engine generate")
    auto, generate = greedy_replies(tiny, home, engines=("auto", "generate"))
    assert auto == generate


def test_a_context_of_a_few_tokens_keeps_room_for_one_and_a_long_system_prompt_is_not_a_files_fault(tiny, home):
    """--context 1 with --raw: a prompt that filled it went to the engine with max_new_tokens 0 ("the fast decoder
    holds 1 to 0", transformers' ValueError): one token is kept for the reply, and the chat's own refusal says so.
    A system prompt past the context with `-f` of a 5-byte file: "tiny.txt: too large for the model's context",
    exit 2, where the file was not the cause (a long-context review)."""
    for engine in ("fast", "generate"):
        p = yi("-m", tiny, "--engine", engine, "--raw", "--context", "1", "--max-new-tokens", "4", "-p", "h", home=home)
        assert p.returncode == 1, p.stderr.decode()
        err = p.stderr.decode()
        assert "but only 0 fit in the context" in err and "max_new_tokens` must be" not in err, err
    small = home.parent / "tiny.txt"
    small.write_text("tiny\n")
    p = yi("-m", tiny, "--context", "60", "--system", " ".join(["word"] * 100), "-f", small, stdin=b"hi\n", home=home)
    err = p.stderr.decode()
    assert "tiny.txt: too large" not in err and "the system prompt counts too" in err, err


def test_an_integer_where_a_config_declares_a_float_or_none_is_a_float():
    """Gemma 2's `"final_logit_softcapping": 30` (declared `float | None`) was refused as the strict config's
    "expected float, got int" where `30.0` chatted (a diff review)."""
    from transformers import CONFIG_MAPPING

    from yi_cli.checkpoint.configs import _float_fields

    cfg = {"final_logit_softcapping": 30, "rms_norm_eps": 1, "hidden_size": 64, "sliding_window": 4}
    assert _float_fields(CONFIG_MAPPING["gemma2"], cfg) == {"final_logit_softcapping": 30.0, "rms_norm_eps": 1.0}
