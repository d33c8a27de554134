"""Where yi-chat keeps its files, from YI_CHAT_HOME and the XDG variables."""

from __future__ import annotations

from pathlib import Path

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
