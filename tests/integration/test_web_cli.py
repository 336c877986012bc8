"""``algomirror user …`` and start-up refusals of ``algomirror run``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from algomirror.cli import main
from algomirror.db.models import ActivityLog, User
from algomirror.db.session import Database
from algomirror.web.security import make_password_hasher, verify_password
from tests.integration.web_support import unused_port

PASSWORD = "violet-harbour-cinnamon"


def _env(db_url: str, tmp_path: Path) -> dict[str, str]:
    return {"ALGOMIRROR_DATABASE_URL": db_url, "ALGOMIRROR_INSTANCE_DIR": str(tmp_path / "instance")}


def _users(db_url: str) -> list[User]:
    database = Database(db_url)
    try:
        with database.session_factory() as s:
            return list(s.scalars(select(User).order_by(User.id)))
    finally:
        database.dispose()


def test_user_create_when_password_typed_twice_creates_admin(db_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["user", "create", "Root", "--email", "root@example.com"],
        input=f"{PASSWORD}\n{PASSWORD}\n",
        env=_env(db_url, tmp_path),
    )
    assert result.exit_code == 0, result.output
    assert "created administrator root" in result.output
    [root] = _users(db_url)
    assert root.is_admin and root.username == "root"
    assert verify_password(make_password_hasher(), root.password_hash, PASSWORD)
    assert not make_password_hasher().check_needs_rehash(root.password_hash)  # production parameters


def test_user_create_when_second_user_without_admin_flag_is_plain_user(db_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    env = _env(db_url, tmp_path)
    for name, extra in (("root", []), ("alice", []), ("bob", ["--admin"])):
        result = runner.invoke(
            main,
            ["user", "create", name, "--email", f"{name}@example.com", "--password-stdin", *extra],
            input=f"{PASSWORD}\n",
            env=env,
        )
        assert result.exit_code == 0, result.output
    assert [(u.username, u.is_admin) for u in _users(db_url)] == [
        ("root", True),
        ("alice", False),
        ("bob", True),
    ]


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["user", "create", "ab", "--email", "ab@example.com", "--password-stdin"], PASSWORD, "3–20"),
        (["user", "create", "carol", "--email", "nope", "--password-stdin"], PASSWORD, "valid email"),
        (
            ["user", "create", "carol", "--email", "c@example.com", "--password-stdin"],
            "password1234",
            "too common",
        ),
    ],
)
def test_user_create_when_input_bad_fails_with_one_line(
    db_url: str, tmp_path: Path, args: list[str], stdin: str, message: str
) -> None:
    result = CliRunner().invoke(main, args, input=stdin + "\n", env=_env(db_url, tmp_path))
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert _users(db_url) == []


def test_user_create_when_prompted_passwords_differ_asks_again(db_url: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["user", "create", "root", "--email", "root@example.com"],
        input=f"{PASSWORD}\nsomething-else-entirely\n{PASSWORD}\n{PASSWORD}\n",
        env=_env(db_url, tmp_path),
    )
    assert result.exit_code == 0, result.output
    assert len(_users(db_url)) == 1


def test_reset_password_when_user_exists_sets_new_hash_and_bumps_session_version(
    db_url: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    env = _env(db_url, tmp_path)
    runner.invoke(
        main,
        ["user", "create", "root", "--email", "r@example.com", "--password-stdin"],
        input=f"{PASSWORD}\n",
        env=env,
    )
    [before] = _users(db_url)
    new = "quiet-meadow-lantern-42"
    result = runner.invoke(main, ["user", "reset-password", "ROOT"], input=f"{new}\n{new}\n", env=env)
    assert result.exit_code == 0, result.output
    [after] = _users(db_url)
    assert after.session_version == before.session_version + 1
    assert verify_password(make_password_hasher(), after.password_hash, new)
    database = Database(db_url)
    with database.session_factory() as s:
        assert "password_changed" in list(s.scalars(select(ActivityLog.action)))
    database.dispose()


def test_reset_password_when_user_unknown_fails_cleanly(db_url: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["user", "reset-password", "ghost", "--password-stdin"],
        input=f"{PASSWORD}\n",
        env=_env(db_url, tmp_path),
    )
    assert result.exit_code == 2 and "no user named 'ghost'" in result.output


def _run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("ALGOMIRROR_")}
    full.update(env)
    return subprocess.run(
        [str(Path(sys.executable).parent / "algomirror"), *args],
        env=full,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_run_when_database_unreachable_exits_2_with_one_line(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{unused_port()}/nothing"
    result = _run_cli(
        ["run", "--no-demo", "--port", str(unused_port())],
        {"ALGOMIRROR_DATABASE_URL": url, "ALGOMIRROR_INSTANCE_DIR": str(tmp_path / "i")},
        tmp_path,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("algomirror: database unreachable")
    assert "Traceback" not in result.stderr + result.stdout


def test_run_when_database_not_migrated_exits_2_with_upgrade_hint(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    result = _run_cli(
        ["run", "--no-demo", "--port", str(unused_port())],
        {"ALGOMIRROR_DATABASE_URL": url, "ALGOMIRROR_INSTANCE_DIR": str(tmp_path / "i")},
        tmp_path,
    )
    assert result.returncode == 2
    assert "algomirror db upgrade" in result.stderr and "Traceback" not in result.stderr
