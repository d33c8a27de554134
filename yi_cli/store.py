"""Sessions as plain JSON files: /save, /load, --resume, and the autosave written after every turn (no torch)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from .engines.settings import GenSettings
from .errors import YiError, shown
from .paths import data_dir, private_dir
from .session import ChatSession

FORMAT = "yi-chat-session"
VERSION = 1


def autosave_path() -> Path:
    return data_dir() / "sessions" / "last.json"


def default_path() -> Path:
    return data_dir() / "sessions" / time.strftime("session-%Y%m%d-%H%M%S.json")


def to_dict(chat) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": chat.engine.name,
        "quant": chat.engine.quant,
        "settings": chat.settings.to_dict(),
        **chat.session.to_dict(),
    }


def write_atomic(path: Path, text: str) -> None:
    """Write via a 0600 temp file in the same directory and rename, so readers never see half a file."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save(chat, path: str | None) -> Path:
    p = Path(path).expanduser() if path else default_path()
    try:
        write_atomic(p, json.dumps(to_dict(chat), ensure_ascii=False, indent=1))
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise YiError(f"{shown(str(p))}: cannot save the session ({getattr(e, 'strerror', None) or e})") from None
    return p


def autosave(chat) -> None:
    try:
        write_atomic(autosave_path(), json.dumps(to_dict(chat), ensure_ascii=False))
    except OSError as e:
        chat.render.notice(f"autosave failed ({e.strerror or e}); the chat goes on")


def read(path: str) -> tuple[ChatSession, GenSettings, dict]:
    """Parse a session file; raises YiError with one line for anything malformed or foreign."""
    p = autosave_path() if path == "last" else Path(path).expanduser()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise YiError(f"{shown(str(p))}: no such session file") from None
    except (OSError, ValueError) as e:  # ValueError covers bad JSON, bad UTF-8 and a NUL byte in the path
        raise YiError(f"{shown(str(p))}: not a readable session file ({e.__class__.__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise YiError(f"{shown(str(p))}: not a yi-chat session file")
    if data.get("version") != VERSION:
        raise YiError(
            f"{shown(str(p))}: session file version {data.get('version')!r} is not supported (expected {VERSION})"
        )
    try:
        session = ChatSession.from_dict(data)
        settings = GenSettings.from_dict(data.get("settings") or {})
    except (ValueError, TypeError, YiError) as e:
        raise YiError(f"{shown(str(p))}: malformed session file ({shown(str(e), 200)})") from None
    return session, settings, data


def load_into(chat, path: str) -> None:
    """Replace the chat's session and settings with the file's; on any error the chat is untouched."""
    session, settings, _ = read(path)
    chat.session, chat.settings = session, settings
