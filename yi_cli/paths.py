"""Where yi-chat keeps its files: XDG dirs, or everything under $YI_CHAT_HOME when set."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from .errors import LoadError, shown
from .inputs import user_path


def _base(xdg_var: str, fallback: str, sub: str) -> Path:
    """A `~` in YI_CHAT_HOME is the home folder (quoted, the shell left it) and a relative one is taken from the
    working directory yi-chat starts in, made absolute so every message names the same folder; a relative XDG
    variable is ignored, as the XDG spec says. A home that names no folder is one line, exit 3, as one that is a
    file is (its cache cannot be made): `~nosuchuser` and a relative one in a deleted working directory were a
    traceback (RuntimeError, FileNotFoundError)."""
    home = os.environ.get("YI_CHAT_HOME")
    if home:
        try:
            return user_path(home, LoadError).absolute() / sub
        except LoadError as e:  # "~nosuchuser: cannot expand ~nosuchuser (no user 'nosuchuser' here)"
            raise LoadError(f"YI_CHAT_HOME={e}") from None
        except OSError as e:  # getcwd: the folder yi-chat started in was deleted
            raise LoadError(
                f"YI_CHAT_HOME={shown(home, 200)} is relative, and the working directory it counts from cannot be "
                f"read ({e.strerror or e})"
            ) from None
    root = os.environ.get(xdg_var, "")
    if not os.path.isabs(root):
        root = os.path.join(os.path.expanduser("~"), fallback)
    return Path(root) / "yi-chat"


def cache_dir() -> Path:
    return _base("XDG_CACHE_HOME", ".cache", "cache")


def data_dir() -> Path:
    return _base("XDG_DATA_HOME", ".local/share", "data")


def config_dir() -> Path:
    return _base("XDG_CONFIG_HOME", ".config", "config")


def private_dir(path: Path) -> Path:
    """Create `path` and each missing parent with mode 0700; raises OSError when that is impossible (a link to
    nothing says so: mkdir's own reason was "File exists")."""
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        if d.is_symlink():
            raise FileNotFoundError(errno.ENOENT, _to_nothing(d))
        d.mkdir(mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)  # mkdir's mode is filtered by the umask
    return path


def cannot_make(path: Path) -> str | None:
    """Why private_dir(path) would fail, found without making anything (a listing says so, not -m after it), or
    None: the nearest part of it that exists must be a folder (a file in its way: "Not a directory"; a link to
    nothing), one that can be written in."""
    p = path
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    if p.is_symlink() and not p.exists():
        return _to_nothing(p)
    if not p.is_dir():
        return f"{shown(str(p), 200)} is not a folder"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"{shown(str(p), 200)} is not writable"
    return None


def _to_nothing(link: Path) -> str:
    return f"{shown(str(link), 200)} is a link to {shown(os.readlink(link), 200)}, which does not exist"


def make_private(tree: Path) -> None:
    """Files the tool writes are the user's alone: directories 0700, files 0600."""
    for d, _dirs, files in os.walk(tree):
        os.chmod(d, 0o700)
        for f in files:
            os.chmod(os.path.join(d, f), 0o600)
