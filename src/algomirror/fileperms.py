"""Owner-only files: the instance folder holds password hashes, encrypted API keys and the keys that
decrypt them, so it is 0700 and everything AlgoMirror creates in it is 0600 (no group or other access).

Three layers, so a file is private however it was created:

* :func:`restrict_umask` (``algomirror …`` sets it before any command): every file and folder the
  process creates (SQLite database, WAL/SHM/journal, lock file, backups, pg_dump output) is owner-only;
* :func:`create_private_file` / :func:`make_private_dir`: the files AlgoMirror creates on purpose are
  created 0600/0700 whatever the umask (the web app can also be started by a WSGI server);
* :func:`secure_instance_dir` (every ``load_settings``) and :func:`secure_sqlite_files` (every SQLite
  engine): what an older version left readable is chmod-ed back to owner-only.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

OWNER_ONLY_UMASK = 0o077
FILE_MODE = 0o600
DIR_MODE = 0o700
# Names in the instance folder that AlgoMirror creates (the SQLite family by suffix).
INSTANCE_FILES = ("secret_key", "fernet.key")
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal", ".engine.lock")
BACKUP_DIR = "backups"


def restrict_umask() -> int:
    """Set the process umask to :data:`OWNER_ONLY_UMASK`; returns the previous one."""
    return os.umask(OWNER_ONLY_UMASK)


def _owned(info: os.stat_result) -> bool:
    return not hasattr(os, "geteuid") or info.st_uid == os.geteuid()


def make_private(path: Path) -> bool:
    """Remove group and other permissions from ``path`` (a file or folder we own; symlinks are not
    followed). Returns True when the mode was changed. A missing path is ignored; a path owned by
    someone else is left alone (logged), since only its owner may change it."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(info.st_mode) or not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        return False
    mode = stat.S_IMODE(info.st_mode)
    if not mode & 0o077:
        return False
    if not _owned(info):
        log.warning("%s is readable by other users and owned by another user; restrict it by hand", path)
        return False
    os.chmod(path, mode & ~0o077)
    return True


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) and make the folder itself owner-only (0700).

    Raises OSError when it cannot be created."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    make_private(path)


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (then only :func:`make_private`).

    Raises OSError when the folder does not exist or cannot be written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        make_private(path)
        return
    os.close(fd)


def sqlite_files(database: Path) -> list[Path]:
    """The database file and every companion SQLite or the engine creates beside it."""
    return [database.with_name(database.name + suffix) for suffix in SQLITE_SUFFIXES]


def secure_sqlite_files(database: Path) -> None:
    """Before SQLite opens ``database``: create it 0600 if missing (SQLite gives its WAL, SHM and
    journal the database file's mode) and make existing companions owner-only. A missing folder is
    left to SQLite to report."""
    if not database.parent.is_dir():
        return
    create_private_file(database)
    for path in sqlite_files(database)[1:]:
        make_private(path)


def _instance_paths(instance_dir: Path) -> Iterable[Path]:
    for name in INSTANCE_FILES:
        yield instance_dir / name
    for entry in instance_dir.iterdir():
        if entry.is_file() and any(
            entry.name.endswith(".db" + s) or entry.name.endswith(".sqlite" + s) for s in SQLITE_SUFFIXES
        ):
            yield entry
    backups = instance_dir / BACKUP_DIR
    if backups.is_dir():
        yield backups
        yield from (entry for entry in backups.iterdir() if entry.name.startswith("algomirror_"))


def secure_instance_dir(instance_dir: Path) -> None:
    """Make an existing instance folder 0700 and the files AlgoMirror keeps in it 0600 (keys, SQLite
    database and companions, lock file, the ``backups`` folder and its backups). Other files are not
    touched. A missing folder is ignored. Raises OSError when a chmod of our own file fails."""
    if not instance_dir.is_dir():
        return
    make_private(instance_dir)
    changed = [path for path in _instance_paths(instance_dir) if make_private(path)]
    if changed:
        log.info("made owner-only: %s", ", ".join(str(p) for p in changed))


__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "OWNER_ONLY_UMASK",
    "create_private_file",
    "make_private",
    "make_private_dir",
    "restrict_umask",
    "secure_instance_dir",
    "secure_sqlite_files",
    "sqlite_files",
]
