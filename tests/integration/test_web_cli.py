"""``algomirror user …``, ``algomirror db …``, and ``algomirror run``: serving, and its start-up refusals."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, select

from algomirror.cli import main
from algomirror.db.migrate import alembic_config
from algomirror.db.models import ActivityLog, User
from algomirror.db.session import Database
from algomirror.security import make_password_hasher, verify_password
from tests import profile
from tests.helpers import eventually
from tests.integration.web_support import unused_port

PASSWORD = "violet-harbour-cinnamon"


def _env(db_url: str, tmp_path: Path) -> dict[str, str]:
    """The CLI's variables; in the production test profile also production's (tests/profile.py)."""
    return profile.child_env(
        {"ALGOMIRROR_DATABASE_URL": db_url, "ALGOMIRROR_INSTANCE_DIR": str(tmp_path / "instance")}
    )


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


# --- db upgrade | current | downgrade ---------------------------------------------------------------


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_db_commands_when_run_in_turn_upgrade_report_and_downgrade_the_schema(
    empty_db_url: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    env = {"ALGOMIRROR_DATABASE_URL": empty_db_url, "ALGOMIRROR_INSTANCE_DIR": str(tmp_path / "instance")}
    current = runner.invoke(main, ["db", "current"], env=env)
    assert current.exit_code == 0 and "(empty database)" in current.output
    upgraded = runner.invoke(main, ["db", "upgrade"], env=env)
    assert upgraded.exit_code == 0, upgraded.output
    assert "database upgraded to head" in upgraded.output
    assert {"users", "trading_accounts", "alembic_version"} <= _tables(empty_db_url)
    current = runner.invoke(main, ["db", "current"], env=env)
    head = ScriptDirectory.from_config(alembic_config(empty_db_url)).get_current_head()
    assert head is not None and head != "0001"
    assert current.exit_code == 0 and head in current.output and "(head)" in current.output
    downgraded = runner.invoke(main, ["db", "downgrade", "base"], env=env)
    assert downgraded.exit_code == 0, downgraded.output
    assert _tables(empty_db_url) <= {"alembic_version"}
    assert "(empty database)" in runner.invoke(main, ["db", "current"], env=env).output
    # Default downgrade is one step: from head back to the revision before it.
    assert runner.invoke(main, ["db", "upgrade"], env=env).exit_code == 0
    assert runner.invoke(main, ["db", "downgrade"], env=env).exit_code == 0
    previous = runner.invoke(main, ["db", "current"], env=env).output
    assert head not in previous and "(head)" not in previous
    assert "users" in _tables(empty_db_url)


def test_db_current_when_database_unreachable_exits_2_with_one_line(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{unused_port()}/nothing"
    result = _run_cli(["db", "current"], {"ALGOMIRROR_DATABASE_URL": url}, tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
    assert len(lines) == 1 and lines[0].startswith("algomirror: database unreachable"), result.stderr
    assert "Traceback" not in result.stderr + result.stdout


# --- run --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [("ALGOMIRROR_PORT", "abc"), ("ALGOMIRROR_DATABASE_URL", "mysql://x"), ("ALGOMIRROR_TRUST_PROXY", "-1")],
)
def test_run_when_a_setting_is_invalid_exits_2_with_one_line_naming_it(
    tmp_path: Path, variable: str, value: str
) -> None:
    result = _run_cli(
        ["run", "--no-demo"], {variable: value, "ALGOMIRROR_INSTANCE_DIR": str(tmp_path)}, tmp_path
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"algomirror: invalid setting {variable}:")
    assert result.stdout == ""


def test_run_when_database_migrated_serves_the_sign_up_then_login_page(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    env = {"ALGOMIRROR_DATABASE_URL": url, "ALGOMIRROR_INSTANCE_DIR": str(tmp_path / "i")}
    assert _run_cli(["db", "upgrade"], env, tmp_path).returncode == 0
    port = unused_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("ALGOMIRROR_")}
    full.update(env)
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "algomirror"), "run", "--no-demo", "--port", str(port)],
        env=full,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def landing() -> httpx.Response:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                return httpx.get(f"{base}/", follow_redirects=True, timeout=2)
            except httpx.TransportError as exc:
                raise AssertionError(f"not serving yet: {exc}") from exc

        response = eventually(landing, timeout=30)
        # No user yet: the landing page is "create the administrator".
        assert response.status_code == 200 and response.url.path == "/register"
        assert "Content-Security-Policy" in response.headers
        assert process.poll() is None
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def test_run_when_redis_url_set_but_redis_down_exits_2_with_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    env = {"ALGOMIRROR_DATABASE_URL": url, "ALGOMIRROR_INSTANCE_DIR": str(tmp_path / "i")}
    assert _run_cli(["db", "upgrade"], env, tmp_path).returncode == 0
    redis_url = f"redis://:redis-pw-5521@127.0.0.1:{unused_port()}/0"
    result = _run_cli(
        ["run", "--no-demo", "--port", str(unused_port())],
        {**env, "ALGOMIRROR_REDIS_URL": redis_url},
        tmp_path,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
    assert len(lines) == 1 and lines[0].startswith("algomirror: Redis unreachable"), result.stderr
    assert "redis-pw-5521" not in result.stderr and "Traceback" not in result.stderr


def test_run_when_port_already_taken_exits_2_with_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    env = {"ALGOMIRROR_DATABASE_URL": url, "ALGOMIRROR_INSTANCE_DIR": str(tmp_path / "i")}
    assert _run_cli(["db", "upgrade"], env, tmp_path).returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run_cli(["run", "--no-demo", "--port", str(port)], env, tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
    lines = [line for line in lines if " INFO " not in line]  # the in-process engine's start-up note
    assert len(lines) == 1 and lines[0].startswith(f"algomirror: cannot listen on 127.0.0.1:{port}"), (
        result.stderr
    )
    assert "Traceback" not in result.stderr
