"""The data folder is the owner's alone: folders ``0700``, files ``0600``.

The folder holds the Telegram session (a key to the whole account), the job
history with every prompt, and every image made. Whatever the process umask,
what SakaiBot creates there is readable by its own user only, and a folder
made by an older version (or copied in with looser modes) is tightened at
start, with one log line naming what changed.

Plain file-system work: callers off the event loop run it in a thread.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

logger = logging.getLogger(__name__)

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
#: A first start over a large image folder changes thousands of files; the log
#: line names this many and counts the rest.
_NAMED_IN_LOG = 20


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) if missing; ``path`` itself ends up ``0700``.

    Parents above it are created as ``mkdir -p`` would; only the folder the
    data lives in is narrowed.
    """
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    # mkdir's mode passes through the umask, and an existing folder keeps its own.
    if stat.S_IMODE(path.stat().st_mode) != PRIVATE_DIR_MODE:
        path.chmod(PRIVATE_DIR_MODE)


def open_private(path: Path, flags: int) -> int:
    """``os.open`` with the file created ``0600`` (and narrowed if it already existed)."""
    descriptor = os.open(path, flags | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(descriptor).st_mode) & ~PRIVATE_FILE_MODE:
            os.fchmod(descriptor, PRIVATE_FILE_MODE)
    except OSError:
        os.close(descriptor)
        raise
    return descriptor


def write_private(path: Path, data: bytes, *, sync: bool = False) -> None:
    """Write ``data`` to ``path`` (replacing it), readable by this user only."""
    descriptor = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        if sync:
            handle.flush()
            os.fsync(handle.fileno())


def touch_private(path: Path) -> None:
    """Create ``path`` empty and ``0600`` if missing (for a file another library fills,
    such as a SQLite database, which then keeps that mode for its journals)."""
    os.close(open_private(path, os.O_WRONLY | os.O_CREAT))


def tighten(data_dir: Path) -> list[Path]:
    """Narrow every folder under ``data_dir`` (itself included) to ``0700`` and every
    file to ``0600``; returns the paths that were changed, and logs them in one line.

    Symbolic links are left alone (their target may be anything); a path that
    vanishes meanwhile is skipped.
    """
    if not data_dir.is_dir():
        return []
    changed: list[Path] = []
    if _narrow(data_dir, PRIVATE_DIR_MODE):
        changed.append(data_dir)
    for root, folders, files in os.walk(data_dir):
        base = Path(root)
        for name in folders:
            if _narrow(base / name, PRIVATE_DIR_MODE):
                changed.append(base / name)
        for name in files:
            if _narrow(base / name, PRIVATE_FILE_MODE):
                changed.append(base / name)
    if changed:
        named = ", ".join(str(path) for path in changed[:_NAMED_IN_LOG])
        more = len(changed) - _NAMED_IN_LOG
        logger.warning(
            "data folder: narrowed to owner-only access (folders 0700, files 0600): %s%s",
            named,
            f" and {more} more" if more > 0 else "",
        )
    return changed


def narrow_file(path: Path) -> bool:
    """Narrow one file made by another library (a Telethon session) to ``0600`` at most."""
    return _narrow(path, PRIVATE_FILE_MODE)


def _narrow(path: Path, mode: int) -> bool:
    """Take away every permission ``mode`` does not grant; True when something changed."""
    try:
        found = path.lstat()
        if stat.S_ISLNK(found.st_mode):
            return False
        current = stat.S_IMODE(found.st_mode)
        if current & ~mode == 0:
            return False
        path.chmod(current & mode)
    except FileNotFoundError:
        return False
    return True
