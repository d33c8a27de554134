"""Files and folders that exist but cannot be read (chmod 000): one line naming the path and the reason, with the
documented exit code, never a traceback and never a wrong diagnosis ('no saved sessions', 'not a valid safetensors
file', 'no weight files').

Tests run as root, whom permission bits do not stop, so most cases simulate the refusal in-process (`deny`: the
calls a non-root user would see fail raise EACCES, as test_cli_conventions makes flock raise ENOLCK). The last
tests run the real command on real permission bits without root's override (setpriv drops the capabilities; a
non-root run needs nothing), skipped where that cannot be arranged.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_bad_input import no_traceback, one_line_error
from yi_cli.errors import EXIT_CHAT, EXIT_LOAD, EXIT_USAGE, LoadError, UsageError, YiError

DENIED = os.strerror(errno.EACCES)  # "Permission denied"


def deny(monkeypatch, target: Path, search: bool = False) -> None:
    """`chmod 000 target` as a user without root's override meets it: opening or listing target raises EACCES; with
    search (a folder), so does every lookup below it. A stat of target itself still works, as it does for real."""
    target = os.path.abspath(target)

    def blocked(p, itself: bool) -> bool:
        if isinstance(p, int):  # a file descriptor: opened before the refusal
            return False
        p = os.path.abspath(os.fsdecode(os.fspath(p)))
        return (itself and p == target) or (search and p.startswith(target + os.sep))

    def wrap(fn, itself: bool):
        def refusing(p=".", *args, **kwargs):
            if blocked(p, itself):
                raise PermissionError(errno.EACCES, DENIED, os.fsdecode(os.fspath(p)))
            return fn(p, *args, **kwargs)

        return refusing

    for name in ("stat", "lstat", "mkdir"):  # a lookup of target itself goes through its parent: allowed
        monkeypatch.setattr(os, name, wrap(getattr(os, name), False))
    for name in ("open", "scandir", "listdir"):
        monkeypatch.setattr(os, name, wrap(getattr(os, name), True))
    monkeypatch.setattr(io, "open", wrap(io.open, True))  # pathlib's read_text and open
    monkeypatch.setattr(builtins, "open", wrap(builtins.open, True))


def fake_checkpoint(d: Path) -> Path:
    """Enough of a checkpoint for the checks that run before any weight is read."""
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (d / "model.safetensors").write_bytes(b"not read")
    return d


# --- 1. the demo cache, a --model path, the hub cache --------------------------------------------------------------


@pytest.mark.parametrize("locked", ["home", "cache", "cache/demo", "cache/demo/demo", "cache/demo/demo-fp32"])
def test_demo_cache_that_cannot_be_searched_is_one_load_error(home, monkeypatch, locked):
    """It raised PermissionError from is_file (a traceback, exit 1). demo-fp32 locked: demo itself is not converted
    yet, so the conversion looks for its fp32 source there."""
    from yi_cli.checkpoint import demo

    demo_dir = home / "cache" / "demo" / ("demo-fp32" if locked.endswith("fp32") else "demo")
    fake_checkpoint(demo_dir)
    deny(monkeypatch, home if locked == "home" else home / locked, search=True)
    with pytest.raises(LoadError) as e:
        demo.ensure("demo")
    assert str(e.value) == f"{demo_dir}: cannot read the demo model cache ({DENIED})"
    assert e.value.exit_code == EXIT_LOAD


def test_models_lists_a_demo_whose_cache_cannot_be_read(home, monkeypatch):
    from yi_cli.ui import models_cmd

    fake_checkpoint(home / "cache" / "demo" / "demo")
    deny(monkeypatch, home / "cache" / "demo" / "demo", search=True)
    row = models_cmd._demo_row("demo")
    assert not row["loadable"] and row["reason"].endswith(f"cannot read the demo model cache ({DENIED})")
    assert models_cmd._demo_row("demo-gptq8")["reason"] == "converted on first use"  # the others are listed


@pytest.mark.parametrize("where", ["below an unsearchable folder", "an unlistable checkpoint"])
def test_models_lists_an_alias_it_cannot_read(tmp_path, monkeypatch, where):
    """An [aliases] entry into a folder that cannot be searched, or at a checkpoint folder that cannot be listed:
    its row says why (a traceback before), the listing goes on."""
    from yi_cli.ui import models_cmd

    ckpt = fake_checkpoint(tmp_path / "locked" / "model")
    if where == "below an unsearchable folder":
        deny(monkeypatch, tmp_path / "locked", search=True)
        reason = f"{ckpt}: cannot read ({DENIED})"
    else:
        deny(monkeypatch, ckpt)  # its own listing refused; a stat of it works
        reason = f"{ckpt}: cannot list the checkpoint directory ({DENIED})"
    row = models_cmd._describe_target(str(ckpt), {})
    assert not row["loadable"] and row["reason"] == reason


def test_model_path_below_a_folder_that_cannot_be_searched(tmp_path, monkeypatch):
    from yi_cli.checkpoint.loader import resolve

    deny(monkeypatch, tmp_path / "locked", search=True)
    with pytest.raises(LoadError) as e:
        resolve(str(tmp_path / "locked" / "model"))
    assert str(e.value) == f"{tmp_path / 'locked' / 'model'}: cannot read ({DENIED})"


def test_checkpoint_folder_that_cannot_be_searched(tmp_path, monkeypatch):
    from yi_cli.checkpoint import files

    ckpt = fake_checkpoint(tmp_path / "ckpt")
    deny(monkeypatch, ckpt, search=True)
    with pytest.raises(LoadError) as e:
        files.read_config(ckpt)
    assert str(e.value) == f"{ckpt}: cannot read the checkpoint directory ({DENIED})"


@pytest.mark.parametrize("quantized", [False, True])
def test_checkpoint_folder_that_cannot_be_listed_is_not_one_without_weights(tmp_path, monkeypatch, quantized):
    """chmod 100: its files open, its listing fails, and pathlib's glob found nothing: 'no weight files'."""
    from yi_cli.checkpoint import files
    from yi_cli.checkpoint import quantized as q

    ckpt = fake_checkpoint(tmp_path / "ckpt")
    deny(monkeypatch, ckpt)
    with pytest.raises(LoadError) as e:
        if quantized:
            q.detect(ckpt, {"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128}})
        else:
            files.weight_files(ckpt, allow_pickle=False)
    assert str(e.value) == f"{ckpt}: cannot list the checkpoint directory ({DENIED})"


@pytest.mark.parametrize("locked", ["repo", "snapshot"])
def test_hub_cache_that_cannot_be_searched(tmp_path, monkeypatch, locked):
    from yi_cli.checkpoint import hub

    monkeypatch.setattr(hub, "cache_root", lambda: tmp_path / "hub")
    root = hub.storage("org/name")
    snap = fake_checkpoint(root / "snapshots" / "main")
    deny(monkeypatch, root if locked == "repo" else snap, search=True)
    with pytest.raises(LoadError) as e:
        hub.complete(hub.cached_snapshot("org/name"))
    assert str(e.value) == f"{root if locked == 'repo' else snap}: cannot read the Hugging Face cache ({DENIED})"
    if locked == "snapshot":
        assert not hub.cut_short(snap)  # `yi-chat models` lists it (as not loadable) and goes on


# --- 2. the sessions folder ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("locked", ["home", "sessions", "sessions-search-only"])
def test_sessions_folder_that_cannot_be_read_is_not_an_empty_store(home, monkeypatch, locked, capsys):
    """`yi-chat sessions` said 'no saved sessions in ...' and exited 0; -c said 'no interactive session saved yet'.
    sessions-search-only: chmod 600, the names are listed but no file can be looked at."""
    from yi_cli.conversation import store
    from yi_cli.ui import sessions_cmd

    sessions = store.sessions_dir()
    sessions.mkdir(parents=True)
    (sessions / "20250101-000000-abcdef.json").write_text("{}")
    if locked == "sessions-search-only":
        monkeypatch.setattr(os, "stat", _refusing_below(os.stat, sessions))
    else:
        deny(monkeypatch, home if locked == "home" else sessions, search=True)
    for run in (lambda: sessions_cmd.main([]), lambda: sessions_cmd.main(["--json"]), lambda: store.resolve("last")):
        with pytest.raises(YiError) as e:
            run()
        assert str(e.value) == f"{sessions}: cannot read the sessions folder ({DENIED})"
        assert e.value.exit_code == EXIT_CHAT
    assert capsys.readouterr().out == ""


def _refusing_below(fn, folder: Path):
    def refusing(p, *args, **kwargs):
        if not isinstance(p, int) and Path(os.fspath(p)).parent == folder:
            raise PermissionError(errno.EACCES, DENIED, os.fspath(p))
        return fn(p, *args, **kwargs)

    return refusing


def test_a_link_loop_in_the_sessions_folder_is_one_entry_left_out(home, capsys):
    """One NAME.json linking to itself made the whole store "cannot read the sessions folder (Too many levels of
    symbolic links)": `yi-chat sessions` and `-c` failed for every session. It is left out as any file that is not a
    session is; --resume of it names it."""
    from yi_cli.conversation import store
    from yi_cli.ui import sessions_cmd

    sessions = store.sessions_dir()
    sessions.mkdir(parents=True)
    good = sessions / "20250101-000000-abcdef.json"
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    good.write_text(json.dumps({"format": "yi-chat-session", "version": 1, "mode": "interactive", "turns": turns}))
    loop = sessions / "20300101-000000-fedcba.json"  # newer by its name: listed first were it read
    loop.symlink_to(loop.name)
    assert sessions_cmd.main(["--json"]) == 0
    assert [e["name"] for e in json.loads(capsys.readouterr().out)] == [good.name]
    assert store.resolve("last") == good
    with pytest.raises(YiError, match="cannot read the session file .Too many levels of symbolic links"):
        store.read(str(loop))


def test_a_session_file_unreadable_once_is_listed_again_once_it_can_be_read(home, capsys):
    """A session file that could not be read (chmod 000) was remembered in `.listing-cache` as no session under its
    unchanged identity (inode, size, time: a chmod changes none), so after `chmod 600` it stayed out of `yi-chat
    sessions` and `-c` until the cache was deleted. Only a file read and found malformed is remembered as such."""
    from yi_cli.conversation import store
    from yi_cli.ui import sessions_cmd

    sessions = store.sessions_dir()
    sessions.mkdir(parents=True)
    f = sessions / "20250101-000000-abcdef.json"
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    f.write_text(json.dumps({"format": "yi-chat-session", "version": 1, "mode": "interactive", "turns": turns}))
    with pytest.MonkeyPatch.context() as mp:
        deny(mp, f)
        assert store.entries() == []
        with pytest.raises(YiError, match="no interactive session saved yet"):
            store.resolve("last")
    assert store.resolve("last") == f
    assert sessions_cmd.main(["--json"]) == 0
    assert [(e["name"], e["first_line"]) for e in json.loads(capsys.readouterr().out)] == [(f.name, "hi")]


@pytest.mark.parametrize("limit", [[], ["-n", "5"], ["--json"]])
def test_the_files_a_listing_leaves_out_are_named_on_one_line(home, capsys, limit):
    """`yi-chat sessions` left out a session file damaged by hand, one of another format and one it could not open
    without a word: the conversation looked deleted. They are named on one line of stderr, the listing (or the
    JSON) as before, exit 0; the second listing, from `.listing-cache`, says the same."""
    from yi_cli.conversation import store
    from yi_cli.ui import sessions_cmd

    sessions = store.sessions_dir()
    sessions.mkdir(parents=True)
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    good = sessions / "20250101-000000-abcdef.json"
    good.write_text(json.dumps({"format": "yi-chat-session", "version": 1, "mode": "interactive", "turns": turns}))
    (sessions / "20250102-000000-bad000.json").write_text('{"format": "yi-chat-session", "turns": [')
    (sessions / "notes.json").write_text('{"format": "something-else", "turns": []}')
    locked = sessions / "20250103-000000-locked.json"
    locked.write_text(good.read_text())
    where = str(sessions)
    with pytest.MonkeyPatch.context() as mp:
        deny(mp, locked)
        for _ in range(2):
            assert sessions_cmd.main(limit) == 0
            out, err = capsys.readouterr()
            assert good.name in out and "bad000" not in out and "notes" not in out and "locked" not in out
            assert err == (
                f"left out 3 files in {where} that yi-chat cannot read as sessions: "
                "20250102-000000-bad000.json, 20250103-000000-locked.json, notes.json\n"
            )
    assert sessions_cmd.main(limit) == 0  # readable again: listed, and no longer named
    out, err = capsys.readouterr()
    assert locked.name in out and err == (
        f"left out 2 files in {where} that yi-chat cannot read as sessions: 20250102-000000-bad000.json, notes.json\n"
    )
    good.unlink()
    locked.unlink()
    assert sessions_cmd.main([]) == 0
    assert capsys.readouterr().err == (  # one line (a review: it was two)
        f"no saved sessions in {where} (left out 2 files in {where} that yi-chat cannot read as sessions: "
        "20250102-000000-bad000.json, notes.json)\n"
    )


def test_no_sessions_folder_yet_is_still_an_empty_store(home, capsys):
    from yi_cli.ui import sessions_cmd

    assert sessions_cmd.main([]) == 0
    assert "no saved sessions in" in capsys.readouterr().err


# --- 3. checkpoint files that cannot be read -----------------------------------------------------------------------


def test_unreadable_safetensors_is_cannot_read_not_invalid(tmp_path, monkeypatch):
    from yi_cli.checkpoint import files

    ckpt = fake_checkpoint(tmp_path / "ckpt")
    (ckpt / "short.safetensors").write_bytes(b"1234")  # a file too short for its header length: still invalid
    with pytest.raises(LoadError, match="short.safetensors: not a valid safetensors file$"):
        files.check_safetensors([ckpt / "short.safetensors"])
    deny(monkeypatch, ckpt / "model.safetensors")
    with pytest.raises(LoadError) as e:
        files.check_safetensors([ckpt / "model.safetensors"])
    assert str(e.value) == f"{ckpt / 'model.safetensors'}: cannot read the safetensors file ({DENIED})"


@pytest.mark.parametrize("name", ["config.json", "model.safetensors.index.json", "tokenizer_config.json"])
def test_other_unreadable_checkpoint_files_say_cannot_read(tmp_path, monkeypatch, name):
    """Already right (inputs.read_bytes names the reason); kept so that it stays so."""
    from yi_cli.checkpoint import files

    ckpt = fake_checkpoint(tmp_path / "ckpt")
    (ckpt / name).write_text(json.dumps({"model_type": "llama", "weight_map": {"w": "model.safetensors"}}))
    readers = {"config.json": files.read_config, "tokenizer_config.json": files.check_side_files}
    read = readers.get(name, files.check_index)
    deny(monkeypatch, ckpt / name)
    with pytest.raises(LoadError) as e:
        read(ckpt)
    assert str(e.value) == f"{ckpt / name}: cannot read the {name} ({DENIED})"


def test_unreadable_tokenizer_file_is_named(tmp_path, monkeypatch, demo_fp32_dir):
    """transformers' own PermissionError was reported as 'cannot load the tokenizer (PermissionError: [Errno
    13] ...)'; now the file and the reason, as the other checkpoint files."""
    from yi_cli.checkpoint import loader

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for f in demo_fp32_dir.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, ckpt / f.name)
    deny(monkeypatch, ckpt / "tokenizer.json")
    with pytest.raises(LoadError) as e:
        loader._hf_tokenizer(ckpt, trust_remote_code=False, plain=loader._plain_tokenizer(ckpt))
    assert str(e.value) == f"{ckpt / 'tokenizer.json'}: cannot read the tokenizer file ({DENIED})"


# --- the real command on real permission bits ----------------------------------------------------------------------


def test_config_in_an_unsearchable_folder_is_refused_as_an_unreadable_file_is(monkeypatch, home):
    """Not silently the defaults (os.path.lexists says False for a name it cannot look up): the file's own error."""
    from yi_cli.ui import config

    p = config.path()
    p.parent.mkdir(parents=True)
    p.write_text('overflow = "refuse"\n')
    deny(monkeypatch, p.parent, search=True)
    with pytest.raises(UsageError) as e:
        config.read()
    assert str(e.value) == f"{p}: cannot read the config file ({DENIED})"
    assert e.value.exit_code == EXIT_USAGE


def _unprivileged() -> list[str]:
    """The command prefix that runs without root's override of permission bits, or skip."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root, and no setpriv to drop the capabilities that ignore permission bits")
    return ["setpriv", "--bounding-set", "-all", "--inh-caps", "-all", "--"]


def _yi(prefix: list[str], home: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "YI_CHAT_HOME": str(home), "COLUMNS": "80"}
    return subprocess.run(
        [*prefix, sys.executable, "-m", "yi_cli", *map(str, args)], input=b"", capture_output=True, timeout=120, env=env
    )


@pytest.fixture
def unprivileged(tmp_path):
    """The prefix, once a chmod 000 file is seen to refuse it (a container may not let setpriv drop them)."""
    prefix = _unprivileged()
    probe = tmp_path / "probe"
    probe.write_text("x")
    probe.chmod(0)
    if subprocess.run([*prefix, "cat", str(probe)], capture_output=True).returncode == 0:
        pytest.skip("permission bits do not stop this user here")
    return prefix


@pytest.mark.parametrize("case", ["demo-cache", "home-sessions", "safetensors", "config-folder", "config-file"])
def test_the_command_on_real_permission_bits(tmp_path, unprivileged, case, demo_fp32_dir):
    home = tmp_path / "home"
    if case.startswith("config"):
        cfg = home / "config" / "config.toml"
        cfg.parent.mkdir(parents=True)
        cfg.write_text('overflow = "refuse"\n')
        locked = cfg.parent if case == "config-folder" else cfg
        args, code = ("--model", "nope", "-p", "hi"), EXIT_USAGE
        needle = f"{cfg}: cannot read the config file ({DENIED})"
    elif case == "demo-cache":  # as converted by an earlier run, then locked
        locked = fake_checkpoint(home / "cache" / "demo" / "demo")
        args, code, needle = ("-p", "hi"), EXIT_LOAD, f"{locked}: cannot read the demo model cache ({DENIED})"
    elif case == "home-sessions":
        locked = home
        home.mkdir()
        args, code = ("sessions",), EXIT_CHAT
        needle = f"{home / 'data' / 'sessions'}: cannot read the sessions folder ({DENIED})"
    else:
        ckpt = fake_checkpoint(tmp_path / "ckpt")
        shutil.copy(demo_fp32_dir / "config.json", ckpt / "config.json")  # plausible: the load gets to the weights
        locked = ckpt / "model.safetensors"
        home.mkdir()
        args, code = ("--model", ckpt, "-p", "hi"), EXIT_LOAD
        needle = f"{locked}: cannot read the safetensors file ({DENIED})"
    locked.chmod(0)
    try:
        p = _yi(unprivileged, home, *args)
    finally:
        locked.chmod(0o700)  # so that pytest can remove it
    no_traceback(p.stderr.decode())
    assert one_line_error(p, code, needle) == f"yi-chat: {needle}"
