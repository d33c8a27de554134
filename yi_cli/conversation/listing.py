"""The sessions listing's entries, remembered between runs beside the files they describe (no torch).

`yi-chat sessions` shows each file's exchanges and first line, which only its turns hold: every file was parsed
whole at every listing, 6.5 s for 50 sessions of 10,000 exchanges. An entry is kept in `<sessions>/.listing-cache`
under the file's name with the identity of the file it was read from (inode, size, mtime in ns: a write goes
through a new file renamed over the name, and an edit in place changes the size or the time), and used while the
file still has that identity. The cache is only ever a shortcut: one that cannot be read, or holds anything but
what this module writes, is ignored and written again; a failed write goes unsaid.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .. import inputs
from ..errors import YiError

NAME = ".listing-cache"  # no .json suffix: never taken for a session file
VERSION = 2  # 2: entries only of files --resume takes (store.parse); 1's listed others
LIMIT = 16 << 20  # bytes: ~100,000 entries
_FIELDS = {"mode": (str, type(None)), "model": str, "updated": str, "exchanges": int, "first_line": str}
# Characters of a first line kept (the table shows 50 columns of it): the whole line of a 17 MB first message took
# the cache past LIMIT, and every listing after it read every file again.
FIRST_LINE = 1000
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d[0-9:.]*Z")  # store._iso's form: a file's `updated` as yi-chat wrote it


def stamp(value) -> str | None:
    """A file's `updated` where it is a time as yi-chat writes it (they sort as text), else None: a hand-edited
    "yesterday" sorted before every real time and took -c's place, and so did a time of the right shape that is no
    time ("9999-99-99T99:99:99Z") or one more than a day ahead of this machine's clock."""
    if not isinstance(value, str) or not STAMP.fullmatch(value):
        return None
    try:
        when = datetime.fromisoformat(value.removesuffix("Z") + "+00:00")
    except ValueError:
        return None
    return value if when <= datetime.now(UTC) + timedelta(days=1) else None


def first_line(line: str) -> str:
    """A session's first line as the listing keeps it: at most FIRST_LINE characters, "..." at the end where cut."""
    return line if len(line) <= FIRST_LINE else line[: FIRST_LINE - 3] + "..."


def identity(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_size, st.st_mtime_ns]


class Listing:
    """The entries of one sessions folder: `get` a file's where its identity is unchanged, `put` one just read
    (None: a file that is not a session, remembered too, so that a large broken file is not parsed again), `save`
    where anything changed (`keep_only`: the names still in the folder, after a whole listing)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.files: dict[str, dict] = {}
        self.changed = False
        try:
            data = inputs.read_json(folder / NAME, LIMIT, YiError, "listing cache")
        except (YiError, OSError, ValueError):
            return
        if data.get("version") == VERSION and isinstance(data.get("files"), dict):
            self.files = data["files"]

    def get(self, name: str, st: os.stat_result) -> tuple[bool, dict | None]:
        """(known, entry without path and name) for the file `name` whose stat is st."""
        rec = self.files.get(name)
        if not isinstance(rec, dict) or rec.get("id") != identity(st) or "entry" not in rec:
            return False, None
        entry = rec["entry"]
        if entry is None:
            return True, None
        return (True, entry) if _as_written(entry) else (False, None)  # else read the file again

    def put(self, name: str, st: os.stat_result, entry: dict | None) -> None:
        kept = None if entry is None else {k: entry[k] for k in _FIELDS}
        self.files[name] = {"id": identity(st), "entry": kept}
        self.changed = True

    def keep_only(self, names: set[str]) -> None:
        gone = set(self.files) - names
        for name in gone:
            del self.files[name]
        self.changed = self.changed or bool(gone)

    def save(self, write) -> None:
        """write(path, text): the store's atomic writer (a synced 0600 temp file renamed over the name)."""
        if not self.changed:
            return
        try:  # ASCII: a name's byte that is not UTF-8 (a surrogate here) goes as \udcxx and comes back as it was
            write(self.folder / NAME, json.dumps({"version": VERSION, "files": self.files}))
        except (OSError, ValueError):  # a read-only or full disk: the listing is right, only slower next time
            pass
        self.changed = False


def _as_written(entry) -> bool:
    """`entry` is one store._entry makes, in its types and values: `updated` a stamp, a count of exchanges, text that
    UTF-8 can write (no lone surrogate: the JSON escape \\ud800 in the cache ended `yi-chat sessions` in
    UnicodeEncodeError), a first line of one line within FIRST_LINE. The listing shows what it holds: a cache
    edited by hand (or by anyone who can write the folder) put raw escape sequences in the table."""
    if not isinstance(entry, dict) or set(entry) != set(_FIELDS):
        return False
    if not all(type(entry[k]) in (t if isinstance(t, tuple) else (t,)) for k, t in _FIELDS.items()):
        return False
    try:
        "".join(v for v in entry.values() if isinstance(v, str)).encode("utf-8")
    except UnicodeEncodeError:
        return False
    line = entry["first_line"]
    return (
        stamp(entry["updated"]) is not None
        and entry["exchanges"] >= 0
        and len(line) <= FIRST_LINE
        and len(line.splitlines()) <= 1
    )
