"""The embedded demo of ``make run``: paper exchange in-process, demo seeding, engine thread."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from algomirror.config import Settings, load_settings
from algomirror.db.models import (
    AccountFunds,
    ActivityLog,
    MarginRequirement,
    MarginTracker,
    Order,
    Position,
    Trade,
    TradingAccount,
    User,
)
from algomirror.db.session import Database
from algomirror.embedded import (
    EmbeddedServices,
    EmbeddedStartError,
    demo_banner,
    start_embedded,
    start_simulator,
)
from algomirror.engine.lock import EngineAlreadyRunning, EngineLock
from algomirror.security import make_password_hasher, verify_password
from tests.helpers import eventually
from tests.integration.web_support import unused_port


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return load_settings(
        instance_dir=tmp_path / "instance",
        database_url=db_url,
        demo=True,
        demo_sim_port=unused_port(),
        demo_sim_ws_port=unused_port(),
        demo_clock_speed=20.0,
        sync_interval_market=0.2,
        sync_interval_closed=0.2,
    )


@pytest.fixture
def started() -> Iterator[list[EmbeddedServices]]:
    services: list[EmbeddedServices] = []
    try:
        yield services
    finally:
        for item in services:
            item.stop()


def _count(database: Database, model: type) -> int:
    with database.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def _dashboard_filled(database: Database) -> bool:
    with database.session() as s:
        statuses = list(s.scalars(select(TradingAccount.connection_status)))
        per_account = dict(
            s.execute(select(Position.account_id, func.count()).group_by(Position.account_id)).tuples().all()
        )
    return (
        statuses == ["connected"] * 3
        and sorted(per_account.values()) == [4, 4, 5]  # strangle + wings each; Beta's BANKNIFTY call
        and _count(database, Order) >= 15
        and _count(database, Trade) >= 13
        and _count(database, AccountFunds) == 3
        and _count(database, MarginTracker) == 3
    )


def test_start_embedded_when_database_empty_seeds_once_and_dashboard_tables_fill(
    settings: Settings, database: Database, started: list[EmbeddedServices]
) -> None:
    first = start_embedded(settings, database)
    started.append(first)
    assert first.seeded is not None and len(first.seeded.account_ids) == 3
    assert first.demo_orders.failed == [] and len(first.demo_orders.placed) == 15
    eventually(lambda: _dashboard_filled(database), timeout=30, interval=0.1, what="demo books synced")

    with database.session() as s:
        user = s.scalars(select(User)).one()
        accounts = s.scalars(select(TradingAccount).order_by(TradingAccount.id)).all()
        assert user.username == "demo" and user.is_admin
        assert verify_password(make_password_hasher(), user.password_hash, "demo-password-2026")
        assert [(a.account_name, a.is_primary, a.broker) for a in accounts] == [
            ("Demo Alpha", True, "sandbox"),
            ("Demo Beta", False, "sandbox"),
            ("Demo Gamma", False, "sandbox"),
        ]
        assert {a.host_url for a in accounts} == {f"http://127.0.0.1:{settings.demo_sim_port}"}
        assert s.scalar(select(func.count()).select_from(MarginRequirement)) == 3  # per-user defaults
        open_orders = s.scalar(select(func.count()).select_from(Order).where(Order.status == "open"))
        assert open_orders == 2  # the resting LIMIT buys of Alpha and Gamma
        first_ltp = {p.id: p.ltp for p in s.scalars(select(Position))}

    def prices_moved() -> bool:
        with database.session() as s:
            return any(p.ltp != first_ltp.get(p.id) for p in s.scalars(select(Position)))

    eventually(prices_moved, timeout=30, interval=0.1, what="position prices move")
    banner = demo_banner(settings, first)
    assert "sign in as 'demo'" in banner and f":{settings.port}/" in banner

    first.stop()
    with database.session() as s:
        synced = s.execute(select(TradingAccount.id, TradingAccount.last_sync_at)).tuples().all()
    before_restart = dict(synced)
    second = start_embedded(settings, database)  # a restart: same database, fresh paper exchange
    started.append(second)
    assert second.market_clock is not None
    # The demo's sync stamps by the paper exchange's clock, which a fresh exchange starts again.
    restarted_at = second.market_clock.now()
    assert second.seeded is None
    assert _count(database, User) == 1 and _count(database, TradingAccount) == 3
    with database.session() as s:
        assert (
            s.scalar(select(func.count()).select_from(ActivityLog).where(ActivityLog.action == "demo_seeded"))
            == 1
        )

    def synced_since_restart() -> bool:
        with database.session() as s:
            stamps = dict(s.execute(select(TradingAccount.id, TradingAccount.last_sync_at)).tuples().all())
        fresh = all(
            t is not None and t != before_restart.get(aid) and t >= restarted_at for aid, t in stamps.items()
        )
        return fresh and _dashboard_filled(database)

    eventually(synced_since_restart, timeout=30, interval=0.1, what="books synced after restart")


def test_start_embedded_when_another_engine_runs_serves_demo_without_its_own_engine(
    settings: Settings, database: Database, started: list[EmbeddedServices]
) -> None:
    holder = EngineLock(database.engine)
    holder.acquire()
    try:
        services = start_embedded(settings, database)
        started.append(services)
        assert services.engine is None and services.engine_refused is not None
        assert services.simulator is not None and services.seeded is not None
        assert "engine: not started here" in demo_banner(settings, services)
    finally:
        holder.release()


def test_start_embedded_when_demo_port_taken_fails_with_one_line(
    settings: Settings, database: Database, started: list[EmbeddedServices]
) -> None:
    first = start_embedded(settings, database)
    started.append(first)
    with pytest.raises(EmbeddedStartError, match="cannot start the demo paper exchange on ports"):
        start_embedded(settings, database)


def test_demo_clock_when_session_nears_close_moves_to_next_session(tmp_path: Path) -> None:
    settings = load_settings(
        instance_dir=tmp_path,
        demo_sim_port=unused_port(),
        demo_sim_ws_port=unused_port(),
        demo_clock_speed=20.0,
    )
    # Wed 25 Nov 2026 15:24:59 IST; the next trading day is Thu 26 Nov.
    running = start_simulator(
        settings, wrap_check_seconds=0.05, start=datetime(2026, 11, 25, 9, 54, 59, tzinfo=UTC)
    )
    try:
        eventually(
            lambda: running.core.market.now() >= datetime(2026, 11, 26, 3, 50, tzinfo=UTC),
            timeout=10,
            what="demo clock wrapped to 26 Nov 09:20 IST",
        )
        assert running.core.market.now() < datetime(2026, 11, 26, 4, 0, tzinfo=UTC)
        quote = running.core.market.quote("NIFTY", "NSE_INDEX")
        assert quote is not None and quote.ltp > Decimal(0)

        def resting_orders() -> list[str]:
            books = [
                httpx.post(f"{running.rest_url}/api/v1/orderbook", json={"apikey": key}, timeout=10).json()
                for key in running.api_keys
            ]
            return [o["order_status"] for b in books for o in b["data"]["orders"]]

        # The new session's resting demo orders are put back (Alpha and Gamma).
        eventually(lambda: resting_orders() == ["open", "open"], timeout=20, what="resting demo orders")
    finally:
        running.stop()


def test_run_when_demo_port_taken_exits_with_one_line(db_url: str, tmp_path: Path) -> None:
    import socket

    from click.testing import CliRunner

    from algomirror.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {
            "ALGOMIRROR_DATABASE_URL": db_url,
            "ALGOMIRROR_INSTANCE_DIR": str(tmp_path / "instance"),
            "ALGOMIRROR_DEMO_SIM_PORT": str(taken.getsockname()[1]),
            "ALGOMIRROR_DEMO_SIM_WS_PORT": str(unused_port()),
        }
        result = CliRunner().invoke(main, ["run", "--port", str(unused_port())], env=env)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("algomirror: cannot start the demo paper exchange on ports")
    assert _users_in(db_url) == 0  # nothing was seeded


def _users_in(db_url: str) -> int:
    database = Database(db_url)
    try:
        return _count(database, User)
    finally:
        database.dispose()


def test_start_embedded_when_not_demo_and_setting_auto_starts_engine_only_with_sqlite(
    db_url: str, database: Database, tmp_path: Path, started: list[EmbeddedServices]
) -> None:
    settings = load_settings(instance_dir=tmp_path / "instance", database_url=db_url, demo=False)
    assert settings.engine_in_process == "auto"
    services = start_embedded(settings, database)
    started.append(services)
    probe = EngineLock(database.engine)
    if db_url.startswith("sqlite"):
        assert services.engine is not None and services.engine_not_configured is None
        with pytest.raises(EngineAlreadyRunning):
            probe.acquire()
    else:
        # PostgreSQL = production: the engine runs as `algomirror engine`, never inside the web process.
        assert services.engine is None and services.engine_refused is None
        assert services.engine_not_configured is not None
        assert "run `algomirror engine`" in services.engine_not_configured
        probe.acquire()  # nobody took the lock
        probe.release()


def test_start_embedded_when_setting_overrides_auto_follows_it(
    db_url: str, database: Database, tmp_path: Path, started: list[EmbeddedServices]
) -> None:
    on = load_settings(
        instance_dir=tmp_path / "instance", database_url=db_url, demo=False, engine_in_process="true"
    )
    services = start_embedded(on, database)
    started.append(services)
    assert services.engine is not None
    services.stop()
    off = load_settings(
        instance_dir=tmp_path / "instance", database_url=db_url, demo=False, engine_in_process="false"
    )
    services = start_embedded(off, database)
    started.append(services)
    assert services.engine is None and services.engine_not_configured is not None


def test_run_when_postgresql_and_setting_auto_logs_that_the_engine_runs_separately(
    pg_database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from algomirror.runner import start_embedded_services

    settings = load_settings(instance_dir=tmp_path / "instance", database_url=pg_database_url, demo=False)
    database = Database(pg_database_url)
    try:
        with caplog.at_level(logging.INFO, logger="algomirror.runner"):
            assert start_embedded_services(settings, database) is None
        probe = EngineLock(database.engine)
        probe.acquire()  # no engine was started
        probe.release()
    finally:
        database.dispose()
    messages = [r.getMessage() for r in caplog.records]
    assert any("serving the web only" in m and "algomirror engine" in m for m in messages), messages


def test_demo_exchange_when_started_listens_on_loopback_and_control_needs_its_in_process_token(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        instance_dir=tmp_path, demo_sim_port=unused_port(), demo_sim_ws_port=unused_port()
    )
    running = start_simulator(settings)
    try:
        addresses = running.sim.listening_addresses()
        assert {port for _, port in addresses} == {settings.demo_sim_port, settings.demo_sim_ws_port}
        assert {host for host, _ in addresses} == {"127.0.0.1"}
        token = running.control_token
        assert token is not None
        state = f"{running.rest_url}/sim/state"
        assert httpx.get(state, timeout=5).status_code == 401
        reset = httpx.post(f"{running.rest_url}/sim/reset", json={}, timeout=5)
        assert reset.status_code == 401
        authorised = httpx.get(state, headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert authorised.status_code == 200
        assert token not in demo_banner(settings, EmbeddedServices(simulator=running))
    finally:
        running.stop()
