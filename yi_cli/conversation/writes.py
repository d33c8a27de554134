"""How the session store writes its files: whole (a synced 0600 temp file, renamed or linked into place), under
a fresh name no other writer can take, held by one process at a time (an flock on `.NAME.lock`), with the
signals that end yi-chat held off while a write lasts, and what killed writers left swept away."""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from .. import durable
from ..held import signals_held
from ..inputs import kind_of_mode
from ..paths import private_dir

TMP = ".tmp-"  # a write's temp file, renamed or linked to its name once it is whole
STALE = 15 * 60  # seconds: a temp or lock file left this long, and locked by no one, is a killed writer's


class NoNewFile(OSError):
    """The folder let no new file be made in it (the temp file of a write): /save says so, where the bare errno
    misled ("No such file or directory" for /save /proc/version, a file that exists: /proc takes no new files)."""


@contextmanager
def tmp_file(directory: Path, text: str):
    """A 0600 temp file in `directory` holding `text`, flushed to the disk; yields its path and removes it after
    (where it is still there: not renamed or linked away). It is flocked while it exists, so sweep() can tell it
    from the temp file of a writer that was killed. Signals are held while it exists (signals_held): SIGTERM between
    its creation and the code that removes it left an empty one behind (/save, 7 of 24 runs)."""
    private_dir(directory)
    with signals_held():
        try:
            fd, tmp = tempfile.mkstemp(prefix=TMP, dir=directory)
        except OSError as e:
            raise NoNewFile(e.errno, e.strerror, str(directory)) from None
        try:
            _try_flock(fd)  # a fresh file: no one else holds it
            with os.fdopen(fd, "w", encoding="utf-8", closefd=False) as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.fchmod(fd, 0o600)
            yield tmp
        finally:
            try:
                if os.stat(tmp, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                    os.unlink(tmp)
            except OSError:  # renamed away: nothing of it is left under its name
                pass
            os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Write via a synced 0600 temp file in the same directory and rename, so readers never see half a file."""
    with tmp_file(path.parent, text) as tmp:
        os.replace(tmp, path)
    durable.sync_dir(path.parent)


def write_judged(path: Path, text: str, judge) -> None:
    """Write `text` at `path` whole, as write_atomic does, `judge(path)` deciding on the file there at that instant
    (it raises to refuse). Two /save PATH at once each judged the file before either wrote it: both said "saved"
    and one conversation was lost. A new file is linked into place (link(2) fails where another writer made it
    meanwhile: that file is judged instead); an existing one is judged and replaced under an flock of the file
    itself, taken again where another writer replaced it while this one waited."""
    with tmp_file(path.parent, text) as tmp:
        for _ in range(100):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                if _linked(tmp, path):
                    break
                continue  # made meanwhile: judged as the file it is
            except PermissionError:  # unreadable: judged (and replaced) unlocked, as the judge reads it
                fd = None
            try:
                if fd is not None and _lock(fd) and not _still_at(fd, path):
                    continue  # replaced while this one waited for the lock: the new file is judged
                judge(path)
                os.replace(tmp, path)
                break
            finally:
                if fd is not None:
                    os.close(fd)  # the lock goes with it
        else:
            raise OSError(errno.EAGAIN, "other writers kept replacing the file")
    durable.sync_dir(path.parent)


def _still_at(fd: int, path: Path) -> bool:
    """Whether the file open as `fd` is still the one at `path`."""
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _linked(tmp: str, path: Path) -> bool:
    """Put the temp file at `path` only where nothing is there yet (link(2)); False: something is. A folder whose
    file system has no hard links (FAT, exFAT, some network ones) gets the name taken by an exclusive create, then
    the temp file renamed over it: autosave's new session files failed there for good ("Operation not permitted")."""
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here (EPERM, ENOTSUP, ENOSYS of a FUSE mount, EINVAL on FAT)
        pass
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600))
    except FileExistsError:
        return False
    os.replace(tmp, path)
    return True


LOCK_WAIT = 5.0  # seconds /save waits for another writer's flock on the file before it goes on without it


def _lock(fd: int) -> bool:
    """An exclusive flock of `fd`, waited for at most LOCK_WAIT (another /save's judging and renaming takes moments;
    signals are held meanwhile, so a flock another program keeps must not hold /save for good); False where there is
    none to be had: no flock (Windows), a file system that refuses it (NFS on a read-only descriptor), or held past
    the wait. The file is then judged and replaced unlocked, as before there was a lock."""
    try:
        import fcntl
    except ImportError:
        return False
    end = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= end:
                return False
            time.sleep(0.02)
        except OSError:
            return False


def write_new(directory: Path, text: str, owner: Owner | None = None) -> Path:
    """Write `text` under a fresh timestamped name in `directory` that no other writer can take: the name is
    claimed with link(2), which fails when it exists, so a clash only costs another random suffix. owner: locks
    the name before it is linked, so no other process can resume the file before this one holds it."""
    with tmp_file(directory, text) as tmp:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for _ in range(1000):  # a clash costs a retry; a thousand in a row is a store that refuses names
            path = directory / f"{stamp}-{secrets.token_hex(3)}.json"
            if owner is not None and not owner.claim(path):
                continue
            if _linked(tmp, path):
                break
            if owner is not None:
                owner.release()
        else:
            raise OSError(errno.EEXIST, "no free session file name after 1000 tries")
    durable.sync_dir(directory)
    return path


NAME_MAX = 255  # bytes of one name in a folder (ext4, XFS, btrfs, tmpfs, APFS)


def lock_path(path: Path) -> Path:
    """The lock file of the session file at `path`: `.NAME.lock` beside it, or where that name is too long for the
    file system (a session file renamed to 250 bytes), `.` and a digest of its name: opening the long name failed
    (ENAMETOOLONG) and the claim went on without a lock, so two yi-chats overwrote each other's turns."""
    name = f".{path.name}.lock"
    if len(os.fsencode(name)) <= NAME_MAX:
        return path.with_name(name)
    return path.with_name(f".{hashlib.sha256(os.fsencode(path.name)).hexdigest()[:40]}.lock")


class Owner:
    """This process's hold on one session file of the store: an exclusive flock on `.NAME.lock` beside it, taken
    before the file is written and kept until the process lets it go (or ends: the kernel drops a dead process's
    locks, so a crash never leaves a session locked). Where flock is missing (Windows) every claim succeeds."""

    def __init__(self):
        self.fd: int | None = None
        self.lock: Path | None = None
        self.refused: str | None = None  # why the last claim failed where no process holds the file: what is there
        # a file claimed where no lock file could be made (a read-only store), and how it was then (_stamp): claimed
        # again before it is written in place, as another yi-chat may have taken it once the store was writable
        self.unlocked: tuple[Path, tuple | None] | None = None
        self.written_meanwhile = False  # keep() found that claim's file another's (held, or written since)

    def claim(self, path: Path) -> bool:
        """Hold `path` (letting go of any other); False: another live process holds it, or something that is no lock
        file is in its lock's place (a folder, a FIFO, a link to a device: `refused` says which), where a claim
        taken without a lock would let two processes write one file."""
        self.release()
        self.refused = None
        try:
            import fcntl
        except ImportError:
            return True
        lock = lock_path(path)
        for _ in range(3):
            try:  # no wait for a writer where a FIFO is in the lock's place
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NONBLOCK", 0) | os.O_NOFOLLOW, 0o600)
            except OSError as e:
                if e.errno in (errno.EISDIR, errno.ELOOP, errno.ENXIO, errno.ENOTDIR):  # not a file, or a link
                    self.refused = _in_the_way(lock)
                    return False
                self.unlocked = (path, _stamp(path))
                return True  # a read-only store: autosave itself will say why it fails
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                self.refused = _in_the_way(lock)
                return False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # held by another live process
                os.close(fd)
                return False
            except OSError:  # a file system without locks (ENOLCK, EOPNOTSUPP): as without flock at all
                os.close(fd)
                unlink_quietly(lock)
                return True
            try:  # the lock file may have been removed by its last holder between our open and our lock
                same = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except OSError:
                same = False
            if same:
                self.fd, self.lock = fd, lock
                return True
            os.close(fd)
        return False

    def keep(self) -> bool:
        """Whether this process still holds its file, checked before each write in place: its lock file removed
        (by hand: a stale-looking `.NAME.lock`) let a second yi-chat resume the file, and the two overwrote each
        other's turns. Without its lock, another may have written the file meanwhile (and gone, its lock with it):
        False, and the caller goes on in a file of its own."""
        self.written_meanwhile = False
        if self.fd is None and self.unlocked is not None:  # claimed where no lock could be made: claimed again
            path, then = self.unlocked
            if not self.claim(path):  # another yi-chat holds it now
                self.written_meanwhile = True
                return False
            if self.fd is None:  # still no lock file can be made: the store is read-only yet (the write fails)
                self.unlocked = (path, then)
                return True
            self.written_meanwhile = _stamp(path) != then
            return not self.written_meanwhile
        if self.fd is None:  # no locks here (no flock, a file system without them): as claim said
            return True
        try:
            if os.stat(self.lock).st_ino == os.fstat(self.fd).st_ino:
                return True
        except OSError:
            pass
        fd, self.fd, self.lock = self.fd, None, None  # what is at the lock's place now is not ours: not removed
        os.close(fd)
        return False

    def wrote(self) -> None:
        """This process wrote its file in place: how it is now is its own (where it holds no lock)."""
        if self.unlocked is not None:
            self.unlocked = (self.unlocked[0], _stamp(self.unlocked[0]))

    def release(self) -> None:
        self.unlocked = None
        fd, lock, self.fd, self.lock = self.fd, self.lock, None, None  # first: a signal here leaves nothing twice
        if fd is None:
            return
        unlink_quietly(lock)  # removed while still held: a process that opened it meanwhile sees another inode, retries
        os.close(fd)


def _stamp(path: Path) -> tuple | None:
    """Which file is at `path`, as written last (every write replaces the file: a new inode); None: none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _in_the_way(lock: Path) -> str:
    """What a session's lock place holds that is no lock file, as the notice of a resume says it."""
    try:
        mode = os.lstat(lock).st_mode
    except OSError:
        return f"{lock.name} is not a lock file"
    what = "symbolic link" if stat.S_ISLNK(mode) else kind_of_mode(mode)
    return f"{lock.name} is a {what}, not a lock file"


def _try_flock(fd: int) -> bool:
    """An exclusive flock on `fd` taken without waiting; False where another process holds it or there are no locks."""
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (ImportError, OSError):  # BlockingIOError: held; ENOLCK and the like: a file system without locks
        return False
    return True


_swept: set[str] = set()


def sweep(folder: Path) -> int:
    """Remove what killed writers left in the store (a SIGKILL mid-autosave: a `.tmp-*` file; a process killed while
    it held a session: its `.NAME.lock`): each one untouched for STALE seconds and locked by no live process, as
    every writer locks its temp file and its session's lock file while it uses them (the kernel drops a dead one's
    locks). Taken under that same lock and checked to be the file still under the name (a lock's holder removes
    its name while it holds it), so a file a live yi-chat uses is never removed. Where locks do not work, nothing
    is. Best effort, once a process: returns how many were removed."""
    if str(folder) in _swept:
        return 0
    _swept.add(str(folder))
    now = time.time()
    removed = 0
    try:
        names = [n for n in os.listdir(folder) if n.startswith(TMP) or (n.startswith(".") and n.endswith(".lock"))]
    except OSError:
        return 0
    for name in names:
        path = os.path.join(folder, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < STALE or not _try_flock(fd):
                continue
            if os.stat(path, follow_symlinks=False).st_ino == st.st_ino:
                os.unlink(path)
                removed += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
