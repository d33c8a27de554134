"""Sessions as a store of JSON files, one per conversation: autosave, /save, /load, --resume, -c (no torch).

Every conversation gets its own file in <data>/sessions/, named by its start time plus a random suffix and created
with a no-clobber link, so two processes (or three saves in one second) never share a name. The process that
writes a file holds an exclusive lock on it (`.NAME.lock` beside it) while it does: a second yi-chat resuming the
same session (`-c` in two terminals) goes on in a new file instead of overwriting the first one's turns. Each file
records the mode it was started in: `--resume last` and `-c` reopen the newest *interactive* one, so a one-shot or
piped run (or a /save snapshot) is saved but never takes the place of the chat before it. The format is unchanged
(version 1; `mode`, `created`, `updated` and the conversation's `id` are extra keys) and the `last.json` of earlier
versions still loads.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path

from .. import inputs, pipes
from ..engines.settings import GenSettings
from ..errors import YiError, shown
from ..held import signals_held
from ..paths import data_dir
from ..safe_text import one_line
from . import attach
from .listing import Listing, first_line, stamp
from .session import ChatSession
from .writes import NoNewFile, Owner, lock_path, sweep, unlink_quietly, write_atomic, write_judged, write_new

FORMAT = "yi-chat-session"
VERSION = 1
MODES = ("interactive", "one-shot", "pipe")
SAVED = "saved"  # the mode of a /save snapshot
RESUMABLE = ("interactive", None)  # None: a file from before modes were recorded (last.json)
LEGACY = "last.json"


def sessions_dir() -> Path:
    return data_dir() / "sessions"


def to_dict(chat, mode: str | None = None, created: str | None = None) -> dict:
    engine = chat.engine
    now = _now()
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": engine.name,
        "quant": engine.quant,
        "settings": chat.settings.to_dict(),
        **({"source": chat.source} if chat.source else {}),  # where `model` is loaded from again: a resume's
        **({"mode": mode} if mode else {}),
        "created": created or now,
        "updated": now,
        **chat.session.to_dict(),
    }


class TooLarge(ValueError):
    """A session whose newest exchange alone (with the settings and system prompt) is over the size a session file
    is read back at: nothing is written, the file keeps the session as it was last written."""


def dumps(data: dict, indent: int | None = None) -> str:
    """A session's file text, within the size a session file is read back at (inputs.SESSION_LIMIT): where it is
    over, the oldest exchanges are left out of the file, as few as it takes: those dropped from the context (before
    `context_start`) first, then the context's own (a remote model's chat drops none: its file grew past 64 MiB and
    could never be resumed or listed again), never the newest; TooLarge where that alone is over."""
    text = json.dumps(data, ensure_ascii=False, indent=indent)
    over = _size(text) - inputs.SESSION_LIMIT
    turns, cut = data["turns"], 0
    while over > 0:
        if cut >= len(turns) - 2:
            limit = inputs.size_text(inputs.SESSION_LIMIT)
            raise TooLarge(f"the newest exchange alone is over the {limit} a session file holds")
        while over > 0 and cut < len(turns) - 2:
            over -= _turn_size(turns[cut], indent) + _turn_size(turns[cut + 1], indent)
            cut += 2
        start = max(0, data.get("context_start", 0) - cut)
        kept = {k: v for k, v in data.items() if k != "context_start"}
        text = json.dumps(
            {**kept, "turns": turns[cut:], **({"context_start": start} if start else {})},
            ensure_ascii=False,
            indent=indent,
        )
        over = _size(text) - inputs.SESSION_LIMIT
    return text


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _turn_size(turn: dict, indent: int | None) -> int:
    """The bytes one turn (not the last) takes in a session file's text, the separator after it included, without
    dumping the whole file again: json.dumps writes it as it writes it alone, each line two levels further in (it
    is in `turns`, in the file's object)."""
    text = json.dumps(turn, ensure_ascii=False, indent=indent)
    if indent is None:
        return _size(text) + len(", ")
    return _size(text) + (text.count("\n") + 1) * 2 * indent + len(",\n")


def _now() -> str:
    return _iso(datetime.now(UTC))


def _iso(t: datetime) -> str:
    # Microseconds: the store orders sessions by this text, and one process saves many times a second.
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z")


class Autosave:
    """The chat's on_turn hook: after every recorded change the conversation is written to its own file.

    The file is created at the first turn; a resumed store file is written in place while this process holds it
    (Owner), else the conversation goes on in a new file. A session emptied by /clear (or replaced by /load)
    starts a new file at its next change, so the earlier conversation is kept; one emptied by /undo (the same
    conversation, `conv`, with no exchange left) takes its file with it: `-c` brought the undone exchange back."""

    def __init__(
        self,
        mode: str,
        path: Path | None = None,
        created: str | None = None,
        conv: str | None = None,
        run_mode=None,
        empty: bool = False,
    ):
        assert mode in MODES
        self.mode, self.path, self.created = mode, path, created
        # the resumed file held no exchange (a system prompt and settings, /save'd so): never removed as emptied,
        # written in place (a /set or /system there took the file with it, unsaid)
        self.keeps_empty = empty
        self.run_mode = run_mode or mode  # this run's: the mode of a new file that a fork starts
        self.conv = conv  # the id of the conversation the file holds
        self.failing: str | None = None  # why the last write failed (said once)
        self.loaded: tuple | None = None  # the state /load left, in its file already: no new one until it changes
        self.loaded_from: Path | None = None  # that file
        self.owner = Owner()
        self.forked = False  # the resumed file is another process's: this one's turns go to a new file
        self.refused: str | None = None  # why it went on in a new file where no process holds the resumed one
        if path is not None and not self.owner.claim(held_name(path)):
            self.refused = self.owner.refused
            self.fork()

    def where(self) -> str | None:
        """Where an ending line says the session is: its file, or that its last turns are not saved (the last write
        failed: "saved in" a file that held only the turns before was a promise --resume broke); None: no file."""
        if self.failing:
            return f"the last turns are not saved (autosave failed: {self.failing})"
        if self.path is None and self.loaded is not None:  # /load, nothing changed since: the file it came from
            return f"the session is saved in {one_line(str(self.loaded_from))}"
        return f"the session is saved in {one_line(str(self.path))}" if self.path else None

    def fork(self) -> None:
        """Go on with the conversation in a new file: the resumed one is another process's."""
        self.owner.release()
        self.path, self.forked, self.keeps_empty = None, True, False
        # this run's mode, not the resumed file's: a one-shot's fork of an interactive session was written as
        # interactive, newest, and `-c` then opened it in the chat's place
        self.mode = self.run_mode

    def detach(self) -> None:
        """The next conversation (after /clear, /load, an /undo of the last exchange) goes in a new file of this run's
        mode: a piped run's /clear in a resumed interactive session wrote its new conversation as interactive, and
        `-c` then opened it in the chat's place."""
        self.owner.release()
        self.path = self.created = None
        self.keeps_empty = False
        self.mode = self.run_mode

    def close(self) -> None:
        """Let the file go (the process is ending): another yi-chat may resume it now."""
        self.owner.release()

    def asked(self, chat) -> tuple:
        """The session with a message said and its reply to come, written as the reply starts (Chat._save_asked):
        quietly (a failure is said by the reply's own write, once). Returns what unasked() puts back."""
        before = (self.path, self.created, self.conv, self.loaded, self.loaded_from, self.failing)
        self(chat, quiet=True)
        return before

    def unasked(self, chat, before: tuple) -> None:
        """The reply failed: the files as they were before asked(). A file made for the message alone goes, and
        where the session is saved is where it was (after /load, or going on from another yi-chat's file: a second
        file of the same conversation, which -c then took); one written in place is written as the session is."""
        if before[0] is not None:
            self(chat)
            return
        if self.path is not None:
            with signals_held():
                unlink_quietly(self.path)
            self.owner.release()
        self.path, self.created, self.conv, self.loaded, self.loaded_from, self.failing = before

    def __call__(self, chat, quiet: bool = False) -> None:
        in_place = self.keeps_empty and self.path is not None and self.conv == chat.session.id
        if not chat.session.turns and not in_place:
            emptied = self.conv == chat.session.id  # /undo of its last exchange (/clear starts another conversation)
            kept = None  # why its file could not go
            if self.path is not None and emptied:
                with signals_held():
                    try:
                        os.unlink(self.path)
                    except FileNotFoundError:
                        pass
                    except OSError as e:  # a read-only store: "removed the last exchange", exit 0, and -c or
                        kept = e.strerror or str(e)  # --resume brought the exchange back
            if emptied:  # nothing of it left to save, nothing lost (a piped run exited 1); after /clear the turns
                self.failing = None  # that could not be written are lost all the same
            if kept is not None:
                self.failing = kept
                chat.render.notice(
                    f"autosave could not remove {shown(str(self.path), 200)} ({kept}): it still holds the exchange "
                    "removed, and --resume brings it back"
                )
            self.detach()
            self.loaded = None
            return
        if self.loaded is not None and self.loaded == chat.saved_state():
            return  # /load's conversation as its file holds it: a copy was listed twice and taken by -c
        self.loaded = None
        self.conv = chat.session.id
        self.created = self.created or _now()
        try:
            text = dumps(to_dict(chat, self.mode, self.created))
            with signals_held():
                sweep(sessions_dir())  # at the first write, in place too: a chat only ever resumed (-c) swept nothing
                if self.path is not None and not self.owner.keep():  # another yi-chat may have written it
                    taken = self.path
                    why = (
                        "could not be locked while the store was read-only, and another yi-chat has taken it since"
                        if self.owner.written_meanwhile
                        else "lost its lock file (removed), so another yi-chat may have gone on from it"
                    )
                    self.fork()
                    chat.render.notice(  # (quiet too: said once, as the fork happens)
                        f"{one_line(taken.name)} {why}: this chat goes on in a new session file, and that file stays "
                        "as it is"
                    )
                if self.path is None:
                    self.path = write_new(sessions_dir(), text, self.owner)
                else:  # through a symlink (a store entry linked to a synced folder), the file it names: the
                    # rename replaced the link with a copy, and the conversation went on in two files
                    write_atomic(Path(os.path.realpath(self.path)), text)
                    self.owner.wrote()
        except (OSError, TooLarge) as e:
            why = getattr(e, "strerror", None) or str(e)
            if quiet:
                return
            if why != self.failing:  # once, not after every turn, until it works again or fails otherwise
                where = shown(str(self.path or sessions_dir()), 200)  # "(Not a directory)" alone said not where
                chat.render.notice(
                    f"autosave to {where} failed ({why}); the chat goes on (the next turns are tried too)"
                )
            self.failing = why
        else:
            if quiet:  # the reply's own write says whether autosave works again
                return
            if self.failing:
                chat.render.notice(f"autosave works again: the session is saved in {one_line(str(self.path))}")
            self.failing = None


def save(chat, path: str | None, replace: bool = False) -> Path:
    """/save: a snapshot to PATH, or to a new file in the store. Its mode `saved` keeps it a snapshot: -c passes it
    by, and a session resumed from it goes on in a new file. The folder must exist, as for an editor's write: a
    mistyped folder is named, not created. A regular file at PATH is replaced (through a symlink, the file it names)
    when it holds an earlier state of this same conversation (_refusal), so saving again stays one command; any
    other file only with `replace` (/save! PATH), as an editor's :w refuses another file without ! (a mistyped name
    replaced another snapshot). A FIFO, a device, a directory or a file this user may not write is refused."""
    p = inputs.user_path(path) if path else sessions_dir()
    try:
        text = dumps(to_dict(chat, SAVED), indent=1)
    except TooLarge as e:
        raise YiError(f"{shown(str(p), 200)}: cannot save the session ({e})") from None
    try:
        if path:
            real = Path(os.path.realpath(p))  # the file a symlink names is replaced, not the link ("saved to" p)
            own = getattr(chat.on_turn, "path", None)
            mine = isinstance(chat.on_turn, Autosave) and own is not None and os.path.realpath(own) == str(real)
            if mine and chat.session.turns:  # (with none, autosave removes its file: a snapshot is written instead)
                return _save_own(chat, path, p)
            kind = inputs.kind_of(real)
            if kind not in (None, "regular file"):
                raise YiError(
                    f"{shown(path, 200)}: not a regular file (a {kind}); a session is saved to a regular file"
                )
            if kind is not None and (stream := pipes.output_of(os.stat(real), pipes.STANDARD)):
                # `/save! /dev/stdout` with stdout a file: the file was replaced under the run's output, the replies
                # before it gone and those after it written into the old, deleted file (exit 0)
                raise YiError(
                    f"{shown(path, 200)}: is the chat's own {stream}; a session is saved to a file of its own"
                )
            _check_folder(path, p, real)
            if kind is not None and not os.access(real, os.W_OK):  # the rename below would replace it all the same
                raise YiError(f"{shown(path, 200)}: cannot save the session (the file is not writable)")

            def judge(there: Path) -> None:  # the file at PATH as it is when this write takes its place
                if not replace and (what := _refusal(there, chat.session)):
                    raise YiError(
                        f"{shown(path, 200)}: the file exists and {what}; /save! {shown(path, 200)} replaces it"
                    )

            held = [] if mine else _hold_store_names(p, real)  # None: another yi-chat is writing it
            if held is None:
                raise YiError(
                    f"{shown(path, 200)}: another yi-chat is writing this session file; /save to another file, or "
                    "/save alone for a new one in the store"
                )
            try:
                write_judged(real, text, judge)  # its temp file first: a folder /save! cannot write in is said
                chat.session.known[str(real)] = _digest(text)
            except NoNewFile as e:  # what failed is the folder, not the file PATH names
                why = _no_new_file(_folder_named(path, p, real)[1], e)
                raise YiError(f"{shown(path, 200)}: cannot save the session ({why})") from None
            finally:
                for owner in held:
                    owner.release()
        else:
            p = write_new(p, text)
            chat.session.known[os.path.realpath(p)] = _digest(text)
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise YiError(f"{shown(str(p), 200)}: cannot save the session ({getattr(e, 'strerror', None) or e})") from None
    return p


def held_name(path: Path) -> Path:
    """The name a resumed store file is locked by: where a store entry links to another (`work.json` ->
    `20261208-...json`), the last name of the chain that is still in the store, so that a chat resumed by any of them
    holds the one lock (each took its own, and the two wrote one file, each over the other's turns); a link out of
    the store (a synced folder) is locked beside its last name in the store, not in that folder."""
    try:
        store = sessions_dir().resolve()
        name = Path(os.path.abspath(path))
        for _ in range(40):  # (a loop of links ends somewhere)
            if not name.is_symlink():
                break
            target = Path(os.path.abspath(os.path.join(name.parent, os.readlink(name))))
            if target.parent.resolve() != store:
                break
            name = target
        return name
    except (OSError, ValueError, RuntimeError):
        return path


def _hold_store_names(p: Path, real: Path) -> list[Owner] | None:
    """The locks of the session file `real` is, held for /save to write it: by the path as given, by the file, by a
    store entry that links to it (its writer locks the entry: `.NAME.lock` beside the link); None where another
    yi-chat holds one. A session file of the store another yi-chat writes: its next turn replaced the snapshot (the
    "saved to" file lost what it was told it holds), or the snapshot turned its live chat `saved`, which -c passed
    by. Only where a lock is there already (a file of the store, not any file /save writes)."""
    names = {Path(os.path.abspath(p)), real}
    try:
        names |= {e for e in sessions_dir().iterdir() if e.is_symlink() and os.path.realpath(e) == str(real)}
    except OSError:
        pass
    held: list[Owner] = []
    for name in names:
        owner = Owner()
        if os.path.lexists(lock_path(name)):
            if not owner.claim(name) and owner.refused is None:
                for o in held:
                    o.release()
                return None
            held.append(owner)
    return held


def _save_own(chat, path: str, p: Path) -> Path:
    """/save onto this chat's own session file: autosave writes it now, as what it is. Written as a snapshot, the
    chat's own file turned `saved`: -c passed it by (and opened an older chat), where no later turn wrote it again."""
    chat.on_turn(chat)
    if chat.on_turn.failing:
        raise YiError(f"{shown(path, 200)}: cannot save the session ({chat.on_turn.failing})")
    now = chat.on_turn.path
    return p if now is None or os.path.realpath(now) == os.path.realpath(p) else now  # forked: where it went


def _refusal(path: Path, session: ChatSession) -> str | None:
    """Why /save PATH does not replace the file at `path` without !, or None when it may: the file holds this
    conversation (its id) as this chat last read or wrote it, or an earlier state of it (turns this chat's begin
    with). Two yi-chats going on from one file (-c in two terminals, /load) share its id: once one of them has
    saved its own continuation there, the other's /save would replace it, and the turns only it had were lost."""
    try:
        raw = inputs.read_bytes(path, inputs.SESSION_LIMIT, YiError, "session file")
        data = inputs.loads(raw, str(path), YiError, what="session file")
    except YiError:
        return "is not a yi-chat session"
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return "is not a yi-chat session"
    sid = data.get("id")
    sid = sid if isinstance(sid, str) and sid else path_id(path)
    if sid != session.id:
        return "holds another session"
    if session.known.get(str(path)) == _digest(raw):
        return None  # as this chat left it
    try:
        if session.goes_on_from(ChatSession.from_dict({**data, "id": sid})):
            return None  # an earlier state of it (another yi-chat saved it before going on): nothing is lost
    except (ValueError, TypeError):
        pass
    return "holds another continuation of this conversation"


def _digest(text: str | bytes) -> str:
    """What a session file holds, byte for byte: /save tells a file left as this chat read or wrote it."""
    return hashlib.sha256(text.encode("utf-8") if isinstance(text, str) else text).hexdigest()


def path_id(path: Path) -> str:
    """The id of a session file written before sessions kept one (0.1.0): taken from where the file is, so that a
    chat resumed or loaded from it saves over it again, as over a file of its own."""
    real = os.path.realpath(path).encode("utf-8", "surrogateescape")
    return hashlib.sha256(real).hexdigest()[:16]


def _folder_named(path: str, p: Path, real: Path) -> tuple[Path, str]:
    """The folder /save PATH writes into, and its name as the user gave it (for a symlink, the folder of the file
    it names; for a bare file name, the current folder's path). A PATH ending in a slash names a folder."""
    folder = real if path.endswith(("/", os.sep)) else real.parent
    given = p if folder == real else p.parent
    return folder, shown(str(folder if p.is_symlink() or str(given) == "." else given), 200)


def _check_folder(path: str, p: Path, real: Path) -> None:
    """The folder /save PATH writes into exists: write_atomic would create it (and every folder above), so a typo in
    a path made folders. A PATH ending in a slash names a folder, not the file to write."""
    folder, named = _folder_named(path, p, real)
    kind = inputs.kind_of(folder)
    if kind == "directory":
        return
    why = f"the folder {named} does not exist" if kind is None else f"{named} is a {kind}, not a folder"
    raise YiError(f"{shown(path, 200)}: cannot save the session ({why})")


def _no_new_file(folder: str, e: OSError) -> str:
    """Why no file could be made in `folder`, which exists (_check_folder)."""
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"the folder {folder} is not writable"
    if e.errno == errno.EROFS:
        return f"the folder {folder} is on a read-only file system"
    if e.errno == errno.ENOENT:  # an existing folder that makes no files: /proc, and the like
        return f"no file can be created in the folder {folder}"
    return f"no file can be created in the folder {folder} ({e.strerror or e})"


def resolve(path: str, passed: list | None = None) -> Path:
    """`last` is the newest interactive session in the store (or an old last.json); anything else a file name: a
    bare name that no file here has is looked for in the store, as `yi-chat sessions` lists it (`.json` optional).
    passed: gets the names of the store's files `last` passed over, unreadable as sessions (a newer one damaged, or
    written by a newer yi-chat: -c opened an older chat without a word, and said "no session saved yet" of one)."""
    if path != "last":
        p = inputs.user_path(path)
        if os.sep not in path and not os.path.lexists(p):
            # a byte the listing shows as \xff; a control character as its escape (\t, \x1b, \u200b)
            names = dict.fromkeys((path, _LISTED_BYTE.sub(_byte, path), _LISTED_CHAR.sub(_char, path)))
            found = [f for n in names for f in (sessions_dir() / n, sessions_dir() / f"{n}.json") if _there(f)]
            return found[0] if found else p
        return p
    passed = [] if passed is None else passed
    for entry in entries(limit=1, modes=RESUMABLE, passed=passed):
        found = Path(entry["path"])
        passed[:] = _newer(passed, found)  # an old file damaged long ago is no reason to doubt -c's choice
        return found
    left = f"; {left_out(passed)}" if passed else ""
    raise YiError(
        f"no interactive session saved yet in {one_line(str(sessions_dir()))} (yi-chat sessions lists them{left})"
    )


_LISTED_BYTE = re.compile(r"\\x([89a-f][0-9a-f])")


def _byte(m: re.Match) -> str:
    """A byte that is not UTF-8, as a file name holds it (surrogateescape) from the `\\xff` the listing shows."""
    return chr(0xDC00 + int(m.group(1), 16))


_LISTED_CHAR = re.compile(r"\\([tnr]|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})")


def _char(m: re.Match) -> str:
    """A character that is not printable from the escape the listing shows for it (errors.shown: Python's repr)."""
    e = m.group(1)
    if e in "tnr":
        return {"t": "\t", "n": "\n", "r": "\r"}[e]
    return chr(n) if (n := int(e[1:], 16)) <= 0x10FFFF else m.group()  # \U00110000 is no character


def _newer(names: list[str], than: Path) -> list[str]:
    """Those of the store's files `names` changed after `than` (or that cannot be told)."""
    try:
        t = than.stat().st_mtime
    except OSError:
        return names
    out = []
    for n in names:
        try:
            if (sessions_dir() / n).stat().st_mtime >= t:
                out.append(n)
        except OSError:
            out.append(n)
    return out


def left_out(names: list[str]) -> str:
    """The store's files passed over as no session yi-chat can read, said in a line (--resume NAME says why)."""
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    shown_names = ", ".join(shown(n, 80) for n in sorted(names)[:3]) + more
    files = "file" if len(names) == 1 else "files"
    return f"passed over {len(names)} {files} that cannot be read as sessions: {shown_names} (--resume NAME says why)"


def _there(f: Path) -> bool:
    """Whether the store holds `f`; YiError where its folder cannot be searched (it was "no such session file")."""
    try:
        os.lstat(f)
    except PermissionError:
        raise YiError(f"{shown(str(f.parent), 200)}: cannot search the sessions folder (permission denied)") from None
    except (OSError, ValueError):
        return False
    return True


def read(path: str) -> tuple[ChatSession, GenSettings, dict]:
    """Parse a session file; raises YiError with one line for anything malformed or foreign."""
    passed: list[str] = []
    p = resolve(path, passed)
    version = _version(p)  # before the read: autosave_for tells a file written since (each write is a new inode)
    # Size, kind (a FIFO or /dev/zero is refused without blocking), nesting and finite numbers checked first.
    raw = inputs.read_bytes(p, inputs.SESSION_LIMIT, YiError, "session file")
    data = inputs.loads(raw, str(p), YiError, what="session file")
    session, settings = parse(data, p)
    if data.get("id") is None:  # a file from before ids: known by its path (path_id), as /save tells it
        session.id = path_id(p)
    session.known[os.path.realpath(p)] = _digest(raw)  # /save PATH goes on replacing it while it stays so
    data["_unknown"] = unknown_fields(data)  # before the keys read adds
    data["path"] = str(p)
    data["_version"] = version
    data["_passed"] = passed  # `last`'s: said beside the line naming the one resumed
    return session, settings, data


def parse(data, p: Path) -> tuple[ChatSession, GenSettings]:
    """The conversation and settings of a session file's JSON (`data`, read from `p`); YiError with one line for
    anything malformed or foreign. The listing takes what this takes: it listed files --resume refused (a version
    2, settings out of range or not an object)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise YiError(f"{shown(str(p), 200)}: not a yi-chat session file")
    unicode_only(data, p)
    if data.get("version") != VERSION:
        raise YiError(
            f"{shown(str(p), 200)}: session file version {data.get('version')!r} is not supported (expected {VERSION})"
        )
    try:
        if not isinstance(data.get("settings") or {}, dict):
            raise ValueError("settings is not an object")
        return ChatSession.from_dict(data), GenSettings.from_dict(data.get("settings") or {})
    except (ValueError, TypeError, YiError) as e:
        raise YiError(f"{shown(str(p), 200)}: malformed session file ({shown(str(e), 200)})") from None


def unicode_only(data: dict, p: Path) -> None:
    """Refuse a session whose text holds half a character: a surrogate alone, which JSON can escape (`\\ud842`; a
    tool slicing UTF-16 writes one) and no output can encode. Loaded, every output after it failed (/history, each
    reply's autosave) and `yi-chat sessions` ended in a traceback. A pair of escapes that is one character is read
    as that character by the JSON parser and passes."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        half = e.object[e.start : e.start + 1].encode("unicode_escape").decode()
        raise YiError(
            f"{shown(str(p), 200)}: malformed session file (a lone surrogate {half}: half a character)"
        ) from None


def _version(p: Path) -> tuple | None:
    try:
        st = os.stat(p)
    except (OSError, ValueError):
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


# The fields to_dict writes (and a turn's): a file holding others (a newer yi-chat's, an editor's) lost them when a
# resume went on in it in place, without a word; such a one goes on in a new file (autosave_for).
FIELDS = {"format", "version", "model", "quant", "settings", "source", "mode", "created", "updated", "id", "system"}
FIELDS |= {"turns", "context_start"}
TURN_FIELDS = {"role", "content", "tokens", "finish_reason", "stats", "files"}


def unknown_fields(data: dict) -> list[str]:
    """The fields of a session file's dict that yi-chat does not write, as `note` or `turns[].name`."""
    turns = data.get("turns") if isinstance(data.get("turns"), list) else []
    inner = {k for t in turns if isinstance(t, dict) for k in t} - TURN_FIELDS
    return sorted(k for k in data if k not in FIELDS) + [f"turns[].{k}" for k in sorted(inner)]


def autosave_for(path: str | None, data: dict | None, mode: str) -> Autosave:
    """The autosave of a run: a resumed file of the store is continued in place (keeping its mode) once this
    process holds it and finds it as it was read; held by another, or written since (another yi-chat went on
    with it while this one loaded), the conversation goes on in a new file (`forked`). A session from elsewhere
    (a /save file, an old last.json) is copied into a new store file at its first change."""
    if data is not None:
        p = Path(data["path"])
        if p.parent.resolve() == sessions_dir().resolve() and p.name != LEGACY and data.get("mode") in MODES:
            conv = data.get("id") or path_id(p)  # read's id
            saver = Autosave(data["mode"], p, data.get("created"), conv, mode, empty=not data.get("turns"))
            if saver.path is not None and (_version(p) != data.get("_version") or data.get("_unknown")):
                saver.fork()
            return saver
    return Autosave(mode)


def take_settings(settings: GenSettings, sources: dict, saved: GenSettings, data: dict) -> None:
    """A session file's settings into `settings`, as a resume takes them back: each one the file holds (0.1.0's have
    no speculate) over the config's, the model's and a command's, a flag's excepted, and listed as `session`."""
    for k in data.get("settings") or {}:  # names store.read checked
        if sources.get(k) != "flag":
            setattr(settings, k, getattr(saved, k))
            sources[k] = "session"


def load_into(chat, path: str) -> dict:
    """Replace the chat's session with the file's and take its settings back as a resume does (take_settings); on
    any error the chat is untouched. The loaded conversation is saved as a new file at its next change: the one it
    replaces stays as it was. The settings were replaced whole: a flag's value gave way while /set still listed it
    as `flag` (and a /set value as `command`), and a setting the file lacks fell to the built-in default. Returns
    the file's data."""
    session, saved, data = read(path)
    settings = dataclasses.replace(chat.settings)
    take_settings(settings, chat.options.setting_sources, saved, data)
    chat.session, chat.settings = session, settings
    if isinstance(chat.on_turn, Autosave):
        chat.on_turn.detach()
        chat.on_turn.loaded = chat.saved_state()
        chat.on_turn.loaded_from = Path(data["path"])
    return data


def entries(limit: int | None = None, modes: tuple | None = None, passed: list | None = None) -> list[dict]:
    """The sessions in the store, newest change first: path, name, mode, model, updated, exchanges, first line.
    Files that cannot be read as sessions are left out (their names appended to `passed`, where given: those read
    on the way, with a limit); a folder that cannot be read is an error, not 'no sessions'.
    limit: the newest `limit` only; modes: of these modes only. With either, the files the listing cache does not
    know are ordered by the keys before their turns (_head), and read whole newest first until there are enough
    (`yi-chat sessions -n 1` and `-c` parsed every file of the store in full, megabytes each for long chats, to show
    or open one)."""
    known = Listing(sessions_dir())
    files = _files()
    if limit is None and modes is None:
        out = sorted(
            (e for f in files if (e := _listed(f, known, passed=passed)) is not None), key=_order, reverse=True
        )
        known.keep_only({f.name for f in files})
        known.save(write_atomic)
        return out
    keyed = []
    for f in files:
        entry = _listed(f, known, read=False, passed=passed)  # the cache's entry where it knows the file: no head
        if entry is UNREAD and (head := _head(f)) is None:
            entry = _listed(f, known, passed=passed)  # read whole at once
        if entry is not UNREAD:
            if entry is not None and (modes is None or entry["mode"] in modes):
                keyed.append((_order(entry), f, entry))
            continue
        if head.get("format") != FORMAT:
            if passed is not None:
                passed.append(f.name)
            continue
        if modes is not None and head.get("mode") not in modes:
            continue
        try:
            updated = stamp(head.get("updated")) or _mtime(f.stat().st_mtime)
        except OSError:
            continue
        keyed.append(((updated, f.name), f, None))
    out: list[dict] = []
    for _, f, entry in sorted(keyed, key=lambda k: k[0], reverse=True):
        if len(out) == limit:
            break
        entry = entry or _listed(f, known, passed=passed)  # malformed past its head: passed by, as the whole listing
        if entry is not None and (modes is None or entry["mode"] in modes):
            out.append(entry)
    known.save(write_atomic)
    return out


UNREAD = object()  # _listed(read=False) of a file the listing cache does not know


def _listed(f: Path, known: Listing, read: bool = True, passed: list | None = None):
    """The listing's entry of f: _entry's, from the listing cache where the file is the one it was read from (read
    False: UNREAD where it is not, the file left unread). None where it is no session or cannot be read (its name
    appended to `passed`, where given) or is gone."""
    try:
        st = f.stat()
    except OSError:
        return None  # gone since the folder was listed (another yi-chat's /undo): nothing to say
    hit, entry = known.get(f.name, st)
    if not hit:
        if not read:
            return UNREAD
        try:
            entry = _entry(f, st)
        except (_Unread, OSError):  # left out this time, not remembered: `chmod` back changes no identity
            entry = UNREAD
        else:
            known.put(f.name, st, entry)
    if entry is None or entry is UNREAD:
        if passed is not None:
            passed.append(f.name)
        return None
    return {"path": str(f), "name": f.name, **entry}


def _order(entry: dict) -> tuple[str, str]:
    return entry["updated"], entry["name"]


def _files() -> list[Path]:
    folder = sessions_dir()
    try:
        return [f for f in folder.iterdir() if f.suffix == ".json" and _regular(f)]
    except FileNotFoundError:  # no store yet
        return []
    except OSError as e:  # EACCES from iterdir, or from is_file where the folder can be listed but not searched
        raise YiError(f"{folder}: cannot read the sessions folder ({e.strerror or e})") from None


class _Unread(YiError):
    """A store file that could not be read (EACCES, an I/O error, gone or over the limit): not known to be no
    session. Remembered as none, a file unreadable once stayed out of the listing and of -c after a `chmod 600`."""


def _entry(f: Path, st: os.stat_result) -> dict | None:
    """The listing's entry of one store file (but its path and name), st its stat; None where it was read and is no
    session; _Unread where it could not be read."""
    raw = inputs.read_bytes(f, inputs.SESSION_LIMIT, _Unread, "session file")
    try:
        data = inputs.loads(raw, str(f), YiError, what="session file")
        session, _ = parse(data, f)
    except (OSError, ValueError, TypeError, AttributeError, YiError):
        return None
    first = next((t for t in session.turns if t.role == "user"), None)
    mode = data.get("mode")
    return {  # each text kept short: a 17 MB model name took the listing's cache past its limit, read again each time
        "mode": first_line(mode) if isinstance(mode, str) else None,  # a list or a number there: not a mode
        "model": first_line(str(data.get("model") or "")),
        "updated": stamp(data.get("updated")) or _mtime(st.st_mtime),
        "exchanges": session.exchanges,
        "first_line": first_line(attach.summary(first.content, first.files) if first else ""),
    }


def _mtime(t: float) -> str:
    return _iso(datetime.fromtimestamp(t, UTC))


HEAD = 64 << 10  # bytes of a session file read for the keys before its turns


def _head(f: Path) -> dict | None:
    """The keys of a session file that come before its `turns` (all but them, as yi-chat writes a file), read from
    its first HEAD bytes; None where they are not all there (a system prompt longer than that, a hand-edited file
    with its turns first or none) or the text is not such an object."""
    try:
        fd = os.open(f, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO swapped in: no wait for a writer
        with open(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            text = fh.read(HEAD).decode("utf-8", "ignore")  # a character cut at the end: past the keys wanted
    except OSError:
        return None
    decoder, space = json.JSONDecoder(), re.compile(r"[ \t\n\r]*")
    out: dict = {}
    try:
        i = space.match(text, 0).end()
        if text[i] != "{":
            return None
        while True:
            i = space.match(text, i + 1).end()
            key, i = decoder.raw_decode(text, i)
            i = space.match(text, i).end()
            if not isinstance(key, str) or text[i] != ":":
                return None
            i = space.match(text, i + 1).end()
            if key == "turns":
                return out if "format" in out else None  # as yi-chat writes a file: the format comes first
            out[key], i = decoder.raw_decode(text, i)
            i = space.match(text, i).end()
            if text[i] != ",":
                return None  # the object ends before its turns, or is not one
    except (ValueError, IndexError, RecursionError):  # cut at HEAD, or not JSON
        return None


def _regular(f: Path) -> bool:
    """A regular file (through links). A link loop is one entry's problem, not the folder's: it made the whole store
    unreadable (`yi-chat sessions`, `-c`); EACCES from a folder that cannot be searched still is the folder's."""
    try:
        return inputs.kind_of(f) == "regular file"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return False
        raise
