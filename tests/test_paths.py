"""Where yi-chat keeps its files, from YI_CHAT_HOME and the XDG variables."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from yi_cli import paths


def test_a_relative_or_tilde_home_is_made_absolute_and_a_relative_xdg_dir_is_ignored(tmp_path, monkeypatch):
    """YI_CHAT_HOME=yc put the sessions in ./yc/data/sessions of whichever folder yi-chat started in, and messages
    named the relative path; a quoted "~/yc" made a folder named ~ in it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "me"))
    monkeypatch.setenv("YI_CHAT_HOME", "yc")
    assert paths.data_dir() == tmp_path / "yc" / "data" and paths.data_dir().is_absolute()
    monkeypatch.setenv("YI_CHAT_HOME", "~/yc")
    assert paths.config_dir() == tmp_path / "me" / "yc" / "config"
    monkeypatch.delenv("YI_CHAT_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # invalid per the XDG spec: the default instead
    assert paths.cache_dir() == tmp_path / "me" / ".cache" / "yi-chat"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_dir() == Path(tmp_path / "xdg" / "yi-chat")


def test_a_home_whose_name_is_not_utf8_keeps_sessions_and_says_why_no_model_loads_from_it(tmp_path):
    """YI_CHAT_HOME with a byte that is not UTF-8 (a Latin-1 folder name): `--model demo` converted for 20 s, then
    failed with "demo conversion failed (UnicodeEncodeError: ...)", the Rust tokenizers and safetensors libraries
    taking only UTF-8 paths. It is one line at once saying so (exit 3), nothing converted; a remote model's chat
    saves and resumes its sessions there."""
    import os

    from tests.fixtures import ScriptedEngine
    from tests.openai_server import OpenAIServer
    from tests.test_bad_input import one_line_error, yi
    from yi_cli.errors import EXIT_LOAD

    home = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9"))
    none = yi("sessions", home=home)  # the folder named as the other lines name it, not as Python's \udce9
    assert none.returncode == 0 and none.stderr.decode() == f"no saved sessions in {tmp_path}/caf\\xe9/data/sessions\n"
    one_line_error(yi("-c", "--endpoint", "http://127.0.0.1:9", home=home), 1, f"saved yet in {tmp_path}/caf\\xe9/data")
    p = yi("--model", "demo", stdin="hi\n", home=home)
    line = one_line_error(p, EXIT_LOAD, "caf\\xe9/cache: the folder's name is not UTF-8", "only UTF-8 paths")
    assert "YI_CHAT_HOME" in line and not (home / "cache" / "demo" / "demo-fp32").exists()
    # `pull demo` said the demo was ready, then failed in the tokenizer's words (two lines); `models` listed it ok
    one_line_error(yi("pull", "demo", home=home), EXIT_LOAD, "caf\\xe9/cache: the folder's name is not UTF-8")
    rows = {r["name"]: r for r in json.loads(yi("models", "--json", home=home).stdout)}
    assert not rows["demo"]["loadable"] and "the folder's name is not UTF-8" in rows["demo"]["reason"], rows["demo"]
    with OpenAIServer(ScriptedEngine(["r1", "r2"])) as srv:
        assert yi("--endpoint", srv.url, stdin="q1\n", home=home).stdout.decode().strip() == "r1"
        (name,) = [f.name for f in (home / "data" / "sessions").glob("*.json")]
        listed = yi("sessions", home=home)
        assert listed.returncode == 0 and name in listed.stdout.decode()
        p = yi("--endpoint", srv.url, "--resume", name, stdin="q2\n", home=home)
        assert p.returncode == 0 and p.stdout.decode().strip() == "r2", p.stderr.decode()
    (saved,) = (home / "data" / "sessions").glob("*.json")  # a file of the store goes on in place
    assert [t["content"] for t in json.loads(saved.read_text())["turns"]] == ["q1", "r1", "q2", "r2"]


def test_a_home_that_names_no_folder_is_one_line_exit_3_for_every_command(tmp_path):
    """YI_CHAT_HOME='~nosuchuser' (a user the system does not know) ended `yi-chat sessions` and `yi-chat -p hi` in
    a traceback (RuntimeError: Could not determine home directory), and a relative one in a working directory that
    was deleted in FileNotFoundError: one line naming YI_CHAT_HOME, exit 3, as a home that is a file is."""
    import subprocess
    import sys

    from tests.test_bad_input import one_line_error, yi
    from yi_cli.errors import EXIT_LOAD

    for args in (["sessions"], ["-p", "hi"]):
        p = yi(*args, env={"YI_CHAT_HOME": "~nosuchuser"})
        one_line_error(p, EXIT_LOAD, "YI_CHAT_HOME=~nosuchuser: cannot expand ~nosuchuser", "no user 'nosuchuser'")
        gone = tmp_path / "gone"
        gone.mkdir()
        run = 'cd "$1" && rmdir "$1" && shift && exec "$@"'  # started in a folder deleted since (a shell left in it)
        p = subprocess.run(
            ["sh", "-c", run, "sh", str(gone), sys.executable, "-m", "yi_cli", *args],
            capture_output=True,
            env={**os.environ, "YI_CHAT_HOME": "rel"},
            timeout=180,
        )
        one_line_error(p, EXIT_LOAD, "YI_CHAT_HOME=rel is relative", "(No such file or directory)")


def test_a_byte_that_is_not_utf8_is_shown_as_the_listings_show_it(tmp_path):
    """shown() wrote Python's \\udce9 for the byte \\xe9 of a file name or an argument, where the listings and
    safe_text write \\xe9; a control character and a lone surrogate that no byte made keep their escapes."""
    from tests.test_bad_input import one_line_error, yi
    from yi_cli.errors import EXIT_USAGE, shown

    assert shown("caf\udce9 m\udcff") == "caf\\xe9 m\\xff"
    assert shown("a\x1bb\ud800") == "a\\x1bb\\ud800"
    name = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.txt")
    p = yi("-f", name, "-p", "hi", home=tmp_path)
    one_line_error(p, EXIT_USAGE, f"{tmp_path}/caf\\xe9.txt")


def test_a_folder_that_is_a_link_to_nothing_says_so(tmp_path):
    """The sessions folder (or a parent) as a link to a folder that is not there: autosave failed with mkdir's own
    reason, "File exists", which sent the reader to look for a folder that is not there."""
    (tmp_path / "data").symlink_to(tmp_path / "gone")
    with pytest.raises(FileNotFoundError) as e:
        paths.private_dir(tmp_path / "data" / "sessions")
    assert e.value.strerror == f"{tmp_path}/data is a link to {tmp_path}/gone, which does not exist"
    assert not (tmp_path / "gone").exists()
