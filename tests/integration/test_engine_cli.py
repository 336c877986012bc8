"""``algomirror engine``: the production engine process (single instance per database)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from click.testing import CliRunner
from cryptography.fernet import Fernet
from sqlalchemy import func, select, text

from algomirror.cli import main
from algomirror.db.models import Position, TradingAccount, User
from algomirror.db.session import Database
from algomirror.domain.timeutil import utcnow
from algomirror.engine.halts import entries_halted, halt_entries
from algomirror.engine.lock import ADVISORY_LOCK_KEY, EngineLock
from algomirror.security import SecretBox
from tests import profile
from tests.helpers import eventually
from tests.schema import truncate_all
from tests.sim_fixtures import SimHandle


def _env(db_url: str, tmp_path: Path, fernet: bytes) -> dict[str, str]:
    """The engine's variables; in the production test profile also production's (tests/profile.py)."""
    return profile.child_env(
        {
            "ALGOMIRROR_DATABASE_URL": db_url,
            "ALGOMIRROR_INSTANCE_DIR": str(tmp_path / "instance"),
            "ALGOMIRROR_FERNET_KEY": fernet.decode(),
            "ALGOMIRROR_SYNC_INTERVAL_MARKET": "0.2",
            "ALGOMIRROR_SYNC_INTERVAL_CLOSED": "0.2",
        }
    )


def test_engine_when_another_engine_holds_the_lock_refuses_with_one_line(
    db_url: str, database: Database, tmp_path: Path
) -> None:
    holder = EngineLock(database.engine)  # the lock is the database's, whatever the instance dir
    holder.acquire()
    try:
        result = CliRunner().invoke(main, ["engine"], env=_env(db_url, tmp_path, Fernet.generate_key()))
    finally:
        holder.release()
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("algomirror: another AlgoMirror engine")


def test_engine_when_started_syncs_accounts_and_stops_on_sigterm(
    db_url: str, database: Database, tmp_path: Path, simulator_session: SimHandle
) -> None:
    fernet = Fernet.generate_key()
    with database.session() as s:
        user = User(username="ops", email="ops@example.com", password_hash="x")
        s.add(user)
        s.flush()
        s.add(
            TradingAccount(
                user_id=user.id,
                account_name="Paper",
                broker="sandbox",
                host_url=simulator_session.rest_url,
                api_key_encrypted=SecretBox(fernet).encrypt(simulator_session.api_keys[0]),
                is_primary=True,
            )
        )
    simulator_session.control.status_next(500, 1, endpoint="funds")  # the first read fails, the next ones not
    httpx.post(
        simulator_session.api_url + "/placeorder",
        json={"apikey": simulator_session.api_keys[0], "strategy": "cli", "exchange": "NFO",
              "symbol": "NIFTY01DEC2626000CE", "action": "BUY", "quantity": "65", "product": "NRML"},
        timeout=10,
    ).raise_for_status()  # fmt: skip
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "algomirror"), "engine"],
        env={**os.environ, **_env(db_url, tmp_path, fernet)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def synced() -> bool:
            with database.session() as s:
                status = s.scalar(select(TradingAccount.connection_status))
                positions = s.scalar(select(func.count()).select_from(Position)) or 0
            return status == "connected" and positions == 1

        eventually(synced, timeout=30, interval=0.1, what="engine process synced the account")
        # A second engine on the same database is refused while this one runs.
        second = CliRunner().invoke(main, ["engine"], env=_env(db_url, tmp_path, fernet))
        assert second.exit_code == 2 and "another AlgoMirror engine" in second.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err[-2000:]
    assert "engine stopped" in err


def test_engine_when_its_lock_connection_is_killed_exits_non_zero_for_the_supervisor(
    pg_database_url: str, tmp_path: Path
) -> None:
    truncate_all(pg_database_url)
    database = Database(pg_database_url)
    lock_pid = text(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND classid = CAST(:h AS oid) AND objid = CAST(:l AS oid)"
    )
    key = {"h": ADVISORY_LOCK_KEY >> 32, "l": ADVISORY_LOCK_KEY & 0xFFFFFFFF}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "algomirror"), "engine"],
        env={**os.environ, **_env(pg_database_url, tmp_path, Fernet.generate_key())},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def holder_pid() -> int | None:
            with database.engine.connect() as conn:
                return conn.execute(lock_pid, key).scalar()

        pid = eventually(holder_pid, timeout=30, interval=0.1, what="engine process holds the lock")
        with database.engine.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar() is True
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
        database.dispose()
    assert proc.returncode == 2, err[-2000:]
    assert "engine lock lost" in err
    assert err.strip().splitlines()[-1].startswith("algomirror: engine stopped: its lock was lost")


def test_resume_entries_when_entries_halted_clears_the_flag(
    db_url: str, database: Database, tmp_path: Path
) -> None:
    with database.session() as s:
        halt_entries(s, "engine component sync crashed 5 times within 10 min", utcnow())
    env = _env(db_url, tmp_path, Fernet.generate_key())
    first = CliRunner().invoke(main, ["resume-entries"], env=env)
    assert first.exit_code == 0 and first.output.strip() == "entries resumed", first.output
    with database.session() as s:
        assert entries_halted(s) is None
    again = CliRunner().invoke(main, ["resume-entries"], env=env)
    assert again.exit_code == 0 and again.output.strip() == "entries were not halted"
