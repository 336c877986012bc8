"""The header's index strip, engine side: the account sync reads NIFTY, BANKNIFTY and SENSEX through a
user's primary account and stores them in ``index_quotes`` (paper exchange over loopback, SQLite and
PostgreSQL). A failing read never touches the account's status nor the quotes already stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, update

from algomirror.broker.client import HostPool, OpenAlgoClient, RetryPolicy, Timeouts
from algomirror.db.models import ActivityLog, IndexQuote, TradingAccount, User
from algomirror.db.session import Database
from algomirror.domain.timeutil import FakeClock
from algomirror.engine.index_quotes import INDEX_PAIRS
from algomirror.engine.sync import AccountSync, SyncConfig
from algomirror.security import SecretBox
from tests.sim_fixtures import SIM_START, SimHandle, on_both_profiles

BOX = SecretBox(Fernet.generate_key())
RETRY = 30.0
UNSUPPORTED_RETRY = 600.0


def config() -> SyncConfig:
    return SyncConfig(
        interval_market=0.1,
        interval_closed=0.1,
        refresh_seconds=0.05,
        down_interval=RETRY,
        unsupported_retry=UNSUPPORTED_RETRY,
        # Generous: under a loaded CI machine a 2 s read timed out and turned a 403 into 'disconnected'.
        timeouts=Timeouts(connect=5.0, read=10.0),
        retry=RetryPolicy(attempts=1),
    )


def add_user(database: Database, name: str) -> int:
    with database.session() as s:
        user = User(username=name, email=f"{name}@example.com", password_hash="x")
        s.add(user)
        s.flush()
        return user.id


def add_account(database: Database, user_id: int, name: str, host: str, key: str, *, primary: bool) -> int:
    with database.session() as s:
        row = TradingAccount(
            user_id=user_id,
            account_name=name,
            broker="sandbox",
            host_url=host,
            api_key_encrypted=BOX.encrypt(key),
            api_key_last4=key[-4:],
            is_primary=primary,
        )
        s.add(row)
        s.flush()
        return row.id


def quotes(
    database: Database, account_id: int | None = None
) -> list[tuple[int, str, str, Decimal, Decimal | None, datetime]]:
    with database.session() as s:
        query = select(IndexQuote).order_by(IndexQuote.account_id, IndexQuote.id)
        if account_id is not None:
            query = query.where(IndexQuote.account_id == account_id)
        return [
            (q.account_id, q.symbol, q.exchange, q.ltp, q.prev_close, q.quoted_at) for q in s.scalars(query)
        ]


def account(database: Database, account_id: int) -> TradingAccount:
    with database.session() as s:
        row = s.get(TradingAccount, account_id)
        assert row is not None
        return row


def unused_status_faults(sim: SimHandle) -> int:
    return sum(int(f["count"]) for f in sim.control.state()["faults"]["http_status"])


async def exchange_prev_closes(sim: SimHandle) -> dict[str, Decimal | None]:
    """What the paper exchange itself says the previous closes are."""
    async with HostPool() as pool:
        client = OpenAlgoClient(sim.rest_url, sim.api_keys[0], pool=pool)
        items = await client.multiquotes(INDEX_PAIRS)
    return {i.symbol: i.quote.prev_close for i in items if i.quote is not None}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(SIM_START)


@pytest.fixture
async def sync(database: Database, clock: FakeClock) -> AsyncIterator[AccountSync]:
    engine_sync = AccountSync(database, BOX.decrypt, config=config(), clock=clock)
    try:
        yield engine_sync
    finally:
        await engine_sync.aclose()


@pytest.fixture
def accounts(database: Database, simulator_session: SimHandle) -> dict[str, int]:
    """Alice: a primary and a second account; Bob: one account that is not primary."""
    sim = simulator_session
    alice, bob = add_user(database, "alice"), add_user(database, "bob")
    return {
        "primary": add_account(database, alice, "Alice main", sim.rest_url, sim.api_keys[0], primary=True),
        "second": add_account(database, alice, "Alice two", sim.rest_url, sim.api_keys[1], primary=False),
        "bob": add_account(database, bob, "Bob only", sim.rest_url, sim.api_keys[2], primary=False),
    }


@on_both_profiles
async def test_sync_when_account_is_primary_stores_the_three_indices_and_updates_them(
    database: Database,
    simulator_session: SimHandle,
    accounts: dict[str, int],
    sync: AccountSync,
    clock: FakeClock,
) -> None:
    sim = simulator_session
    for symbol, exchange, level in (
        ("NIFTY", "NSE_INDEX", "26105.35"),
        ("BANKNIFTY", "NSE_INDEX", "59012.5"),
        ("SENSEX", "BSE_INDEX", "85110.05"),
    ):
        sim.control.set_price(symbol, exchange, Decimal(level))
    prev = await exchange_prev_closes(sim)
    assert all(value is not None and value > 0 for value in prev.values()) and len(prev) == 3

    results = await sync.sync_all_once()

    assert all(r.success for r in results)
    first = clock.now()
    primary = accounts["primary"]
    assert quotes(database) == [
        (primary, "NIFTY", "NSE_INDEX", Decimal("26105.35"), prev["NIFTY"], first),
        (primary, "BANKNIFTY", "NSE_INDEX", Decimal("59012.50"), prev["BANKNIFTY"], first),
        (primary, "SENSEX", "BSE_INDEX", Decimal("85110.05"), prev["SENSEX"], first),
    ]

    # The next cycle updates the same rows with the new levels and the cycle's clock.
    sim.control.set_price("NIFTY", "NSE_INDEX", Decimal("25990.10"))
    sim.control.set_price("SENSEX", "BSE_INDEX", Decimal("85200"))
    clock.advance(timedelta(seconds=5))
    assert (await sync.sync_account_once(primary)).success
    second = clock.now()
    assert quotes(database) == [
        (primary, "NIFTY", "NSE_INDEX", Decimal("25990.10"), prev["NIFTY"], second),
        (primary, "BANKNIFTY", "NSE_INDEX", Decimal("59012.50"), prev["BANKNIFTY"], second),
        (primary, "SENSEX", "BSE_INDEX", Decimal("85200.00"), prev["SENSEX"], second),
    ]


async def test_sync_when_account_is_not_primary_makes_no_index_read(
    database: Database, simulator_session: SimHandle, accounts: dict[str, int], sync: AccountSync
) -> None:
    sim = simulator_session
    sim.control.status_next(500, 1, endpoint="multiquotes", apikey=sim.api_keys[2])
    assert (await sync.sync_account_once(accounts["bob"])).success
    assert unused_status_faults(sim) == 1
    assert quotes(database) == []


async def test_sync_when_primary_moves_the_new_primary_gets_the_quotes(
    database: Database, accounts: dict[str, int], sync: AccountSync, clock: FakeClock
) -> None:
    await sync.sync_all_once()
    assert {q[0] for q in quotes(database)} == {accounts["primary"]}
    with database.session() as s:
        s.execute(
            update(TradingAccount).where(TradingAccount.id == accounts["primary"]).values(is_primary=False)
        )
        s.execute(
            update(TradingAccount).where(TradingAccount.id == accounts["second"]).values(is_primary=True)
        )
    clock.advance(timedelta(seconds=5))

    await sync.sync_all_once()

    assert [q[1] for q in quotes(database, accounts["second"])] == ["NIFTY", "BANKNIFTY", "SENSEX"]
    assert {q[5] for q in quotes(database, accounts["second"])} == {clock.now()}
    # The former primary's rows are no longer refreshed (nor shown: the strip reads the primary's only).
    assert {q[5] for q in quotes(database, accounts["primary"])} == {SIM_START}


@pytest.mark.parametrize(
    ("status", "message", "retry_after"),
    [
        (500, "Internal server error", RETRY),
        (400, "All symbols are invalid", RETRY),
        (403, "Invalid openalgo apikey", RETRY),
        (404, "Broker-specific module not found", UNSUPPORTED_RETRY),
        (429, None, 0.0),
    ],
)
async def test_sync_when_index_read_keeps_failing_account_stays_connected_and_quotes_stay(
    database: Database,
    simulator_session: SimHandle,
    accounts: dict[str, int],
    sync: AccountSync,
    clock: FakeClock,
    status: int,
    message: str | None,
    retry_after: float,
) -> None:
    sim, primary, key = simulator_session, accounts["primary"], simulator_session.api_keys[0]
    assert (await sync.sync_account_once(primary)).success
    stored = quotes(database, primary)
    assert len(stored) == 3

    cycles = sync.config.failure_threshold + 1
    for _ in range(cycles):
        clock.advance(timedelta(seconds=retry_after + 1))
        if status == 429:
            sim.control.rate_limit_next(1, endpoint="multiquotes", apikey=key)
        else:
            sim.control.status_next(status, 1, endpoint="multiquotes", message=message, apikey=key)
        result = await sync.sync_account_once(primary)
        assert (result.success, result.status, result.errors) == (True, "connected", {})
        assert unused_status_faults(sim) == 0  # the index read was really made, and really failed
        # A refused quote read does not stop the account's other calls (execution shares the client).
        assert sync.registry.client(primary, sim.rest_url, key).halted is None

    row = account(database, primary)
    assert (row.connection_status, row.consecutive_failures, row.last_error) == ("connected", 0, None)
    assert row.last_sync_at == clock.now()  # the books kept syncing
    with database.session() as s:
        assert list(s.scalars(select(ActivityLog.action).where(ActivityLog.account_id == primary))) == []
    assert quotes(database, primary) == stored  # an error reply wipes nothing

    # Once the exchange answers again the quotes move on (after the back-off, if any).
    clock.advance(timedelta(seconds=retry_after + 1))
    assert (await sync.sync_account_once(primary)).success
    assert {q[5] for q in quotes(database, primary)} == {clock.now()}


async def test_sync_when_index_read_failed_waits_before_asking_again(
    database: Database,
    simulator_session: SimHandle,
    accounts: dict[str, int],
    sync: AccountSync,
    clock: FakeClock,
) -> None:
    sim, primary, key = simulator_session, accounts["primary"], simulator_session.api_keys[0]
    sim.control.status_next(500, 1, endpoint="multiquotes", apikey=key)
    assert (await sync.sync_account_once(primary)).success
    assert quotes(database, primary) == []

    # Within the back-off the read is not made (a fault left waiting would be consumed by it).
    sim.control.status_next(500, 1, endpoint="multiquotes", apikey=key)
    clock.advance(timedelta(seconds=RETRY - 1))
    assert (await sync.sync_account_once(primary)).success
    assert unused_status_faults(sim) == 1
    sim.control.clear_faults()

    clock.advance(timedelta(seconds=1))
    assert (await sync.sync_account_once(primary)).success
    assert [q[1] for q in quotes(database, primary)] == ["NIFTY", "BANKNIFTY", "SENSEX"]


async def test_sync_when_books_fail_skips_the_index_read(
    database: Database, simulator_session: SimHandle, accounts: dict[str, int], sync: AccountSync
) -> None:
    sim, primary, key = simulator_session, accounts["primary"], simulator_session.api_keys[0]
    sim.control.status_next(403, 1, endpoint="funds", apikey=key)
    result = await sync.sync_account_once(primary)
    assert result.status == "auth_failed"
    assert quotes(database, primary) == []
