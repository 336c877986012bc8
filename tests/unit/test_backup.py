"""Backup folder bookkeeping: names, listing (newest first, foreign files ignored), pruning, and reading
the schema revision out of a pg_restore script."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from algomirror.db.backup import (
    BackupError,
    _revision_from_copy,
    backup_file_name,
    list_backups,
    prune_backups,
)


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"x")


def test_list_backups_when_folder_mixed_lists_only_backups_newest_first(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "algomirror_20261201T103000Z.db",
        "algomirror_20261202T103000Z.dump",
        "algomirror_20261202T103000Z-1.dump",  # a second one within the same second
        "algomirror_20261203T103000Z.db.partial",  # unfinished
        "notes.txt",
        "algomirror_latest.db",
    )

    found = list_backups(tmp_path)

    assert [b.path.name for b in found] == [
        "algomirror_20261202T103000Z.dump",
        "algomirror_20261202T103000Z-1.dump",
        "algomirror_20261201T103000Z.db",
    ]
    assert [b.kind for b in found] == ["postgresql", "postgresql", "sqlite"]
    assert found[0].created_at == datetime(2026, 12, 2, 10, 30, tzinfo=UTC)
    assert list_backups(tmp_path / "missing") == []


def test_prune_backups_when_more_than_keep_deletes_oldest_and_leaves_other_files(tmp_path: Path) -> None:
    names = [f"algomirror_202612{d:02d}T103000Z.db" for d in range(1, 6)]
    _touch(tmp_path, *names, "notes.txt")

    removed = prune_backups(tmp_path, 2)

    assert sorted(p.name for p in removed) == names[:3]
    assert sorted(p.name for p in tmp_path.iterdir()) == [*names[3:], "notes.txt"]
    assert prune_backups(tmp_path, 2) == []
    with pytest.raises(ValueError, match="at least 1"):
        prune_backups(tmp_path, 0)


def test_backup_file_name_when_naive_raises() -> None:
    assert (
        backup_file_name(datetime(2026, 12, 2, 16, 0, tzinfo=UTC), ".db") == "algomirror_20261202T160000Z.db"
    )
    with pytest.raises(ValueError):
        backup_file_name(datetime(2026, 12, 2, 16, 0), ".db")


def test_revision_from_copy_reads_one_value_else_refuses() -> None:
    script = "SET x;\nCOPY public.alembic_version (version_num) FROM stdin;\n0009_kill\n\\.\n"
    assert _revision_from_copy(script, "f.dump") == "0009_kill"
    with pytest.raises(BackupError, match="not an AlgoMirror backup"):
        _revision_from_copy("SET x;\n", "f.dump")
    two = "COPY public.alembic_version (version_num) FROM stdin;\na\nb\n\\.\n"
    with pytest.raises(BackupError, match="no single schema revision"):
        _revision_from_copy(two, "f.dump")
