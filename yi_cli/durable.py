"""Durable renames: data reaches the disk before the rename that publishes it, and the rename itself is synced.

Without the fsync of the file a crash after the rename can leave a complete-looking name over an empty or partial
file (ext4 with delalloc, XFS); without the fsync of the directory the rename itself can be lost.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path


def sync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_dir(path: str | Path) -> None:
    """fsync a directory so that the entries created, renamed or removed in it last."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # a platform where a directory cannot be opened (Windows): renames are durable there
        return
    try:
        os.fsync(fd)
    except OSError as e:  # some file systems (network, FUSE) refuse fsync on a directory
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def sync_tree(root: str | Path) -> None:
    """fsync every file and directory under `root` (a temp dir about to be renamed into place), deepest first."""
    for d, _dirs, files in os.walk(root, topdown=False):
        for f in files:
            sync_file(os.path.join(d, f))
        sync_dir(d)


def replace_dir(tmp: Path, dst: Path) -> None:
    """publish_dir onto `dst` whatever is there: a folder (a conversion left unfinished, one damaged), a file or a
    link (dangling too: `exists` said no, and the rename failed, "Not a directory") is moved aside first, into a
    hidden temp folder beside it, and removed."""
    if os.path.lexists(dst):
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
        os.replace(dst, old / "x")
        shutil.rmtree(old, ignore_errors=True)
    publish_dir(tmp, dst)


def publish_dir(tmp: Path, dst: Path) -> None:
    """Rename a finished temp directory onto `dst` (which must not exist or be an empty dir), durably."""
    sync_tree(tmp)
    os.replace(tmp, dst)
    sync_dir(dst.parent)
