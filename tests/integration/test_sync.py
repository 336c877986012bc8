"""Account sync against the paper exchange over loopback, on SQLite and PostgreSQL.

Each test drives cycles deterministically with ``sync_account_once``/``sync_all_once`` (or the real
``run`` loop with short intervals, polled with ``eventually``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select, update

from algomirror.broker.client import HostPool, OpenAlgoClient, RetryPolicy, Timeouts
from algomirror.broker.wire import Action, OrderRequest, PriceType, Product
from algomirror.db.models import (
    AccountFunds,
    ActivityLog,
    Holding,
    MarginTracker,
    Order,
    Position,
    Trade,
    TradingAccount,
    User,
)
from algomirror.db.session import Database
from algomirror.domain.timeutil import FakeClock
from algomirror.engine.sync import ENDPOINTS, AccountSync, SyncConfig
from algomirror.security import SecretBox
from tests.helpers import eventually_async
from tests.sim_fixtures import SIM_START, SimHandle

CE = "NIFTY01DEC2626000CE"
PE = "NIFTY01DEC2626000PE"
KEY = Fernet.generate_key()
BOX = SecretBox(KEY)


def fast_config(read: float = 2.0, down: float = 0.1) -> SyncConfig:
    return SyncConfig(
        interval_market=0.1,
        interval_closed=0.1,
        refresh_seconds=0.05,
        down_interval=down,
        auth_probe_interval=300.0,
        unsupported_retry=600.0,
        timeouts=Timeouts(connect=1.0, read=read),
        retry=RetryPolicy(attempts=1),
    )


def add_user(database: Database, name: str = "trader") -> int:
    with database.session() as s:
        user = User(username=name, email=f"{name}@example.com", password_hash="x")
        s.add(user)
        s.flush()
        return user.id


def add_account(
    database: Database, user_id: int, name: str, host: str, api_key: str, *, primary: bool = False
) -> int:
    with database.session() as s:
        acc = TradingAccount(
            user_id=user_id,
            account_name=name,
            broker="sandbox",
            host_url=host,
            api_key_encrypted=BOX.encrypt(api_key),
            api_key_last4=api_key[-4:],
            is_primary=primary,
        )
        s.add(acc)
        s.flush()
        return acc.id


def account(database: Database, account_id: int) -> TradingAccount:
    with database.session() as s:
        row = s.get(TradingAccount, account_id)
        assert row is not None
        return row


def count(database: Database, model: type, account_id: int) -> int:
    with database.session() as s:
        return int(
            s.scalar(select(func.count()).select_from(model).where(model.account_id == account_id)) or 0
        )


def activity(database: Database, account_id: int) -> list[str]:
    with database.session() as s:
        return list(
            s.scalars(
                select(ActivityLog.action)
                .where(ActivityLog.account_id == account_id)
                .order_by(ActivityLog.id)
            )
        )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def sim(simulator_session: SimHandle) -> SimHandle:
    return simulator_session


@pytest.fixture
def accounts(database: Database, sim: SimHandle) -> list[int]:
    uid = add_user(database)
    return [
        add_account(database, uid, f"Paper {i + 1}", sim.rest_url, key, primary=i == 0)
        for i, key in enumerate(sim.api_keys)
    ]


@pytest.fixture
async def sync(database: Database) -> AsyncIterator[AccountSync]:
    engine_sync = AccountSync(database, BOX.decrypt, config=fast_config())
    try:
        yield engine_sync
    finally:
        await engine_sync.aclose()


async def place(sim: SimHandle, key_index: int, *orders: OrderRequest) -> list[str]:
    async with HostPool() as pool:
        client = OpenAlgoClient(sim.rest_url, sim.api_keys[key_index], pool=pool)
        return [(await client.place_order(o, strategy="sync-test")).orderid for o in orders]


def buy(symbol: str, qty: int = 65, **kw: object) -> OrderRequest:
    return OrderRequest(
        symbol=symbol, exchange="NFO", action=Action.BUY, quantity=qty, product=Product.NRML, **kw
    )  # type: ignore[arg-type]


def sell(symbol: str, qty: int = 65) -> OrderRequest:
    return OrderRequest(symbol=symbol, exchange="NFO", action=Action.SELL, quantity=qty, product=Product.NRML)


async def test_sync_when_three_accounts_trade_lands_books_and_tracker_in_db(
    database: Database, sim: SimHandle, accounts: list[int], sync: AccountSync
) -> None:
    (ce_buy,) = await place(sim, 0, buy(CE))
    (resting,) = await place(sim, 0, buy(PE, pricetype=PriceType.LIMIT, price=Decimal("1.00")))
    await place(sim, 1, sell(PE, 130))

    results = await sync.sync_all_once()

    assert [r.success for r in results] == [True, True, True]
    a0, a1, a2 = accounts
    with database.session() as s:
        pos0 = s.scalars(select(Position).where(Position.account_id == a0)).all()
        assert [(p.symbol, p.product, p.quantity) for p in pos0] == [(CE, "NRML", 65)]
        assert pos0[0].average_price > 0 and pos0[0].ltp is not None
        pos1 = s.scalars(select(Position).where(Position.account_id == a1)).all()
        assert [(p.symbol, p.quantity) for p in pos1] == [(PE, -130)]
        orders0 = {o.order_id: o for o in s.scalars(select(Order).where(Order.account_id == a0))}
        assert orders0[ce_buy].status == "complete" and orders0[ce_buy].filled_quantity == 65
        assert orders0[ce_buy].executed_at is not None
        assert orders0[resting].status == "open" and orders0[resting].price == Decimal("1.00")
        trades0 = s.scalars(select(Trade).where(Trade.account_id == a0)).all()
        assert [(t.order_id, t.quantity) for t in trades0] == [(ce_buy, 65)]
        funds0 = s.scalar(select(AccountFunds).where(AccountFunds.account_id == a0))
        # The fill's premium plus the resting LIMIT buy's blocked premium (65 × ₹1).
        assert funds0 is not None and funds0.utilised_debits == trades0[0].trade_value + Decimal("65.00")
        assert funds0.available_cash == Decimal("10000000.00") - funds0.utilised_debits
        tracker0 = s.scalar(select(MarginTracker).where(MarginTracker.account_id == a0))
        assert tracker0 is not None and tracker0.update_count == 1
        assert tracker0.total_available_margin == funds0.available_cash  # collateral included (default)
        assert tracker0.used_margin == funds0.utilised_debits
        funds2 = s.scalar(select(AccountFunds).where(AccountFunds.account_id == a2))
        assert funds2 is not None and funds2.available_cash == Decimal("10000000.00")
    for acc_id in accounts:
        row = account(database, acc_id)
        assert row.connection_status == "connected"
        assert row.last_sync_at is not None and row.last_connected is not None

    await sync.sync_all_once()  # a second read updates in place, never duplicates
    assert (
        count(database, Order, a0) == 2
        and count(database, Trade, a0) == 1
        and count(database, Position, a0) == 1
    )
    with database.session() as s:
        tracker = s.scalar(select(MarginTracker).where(MarginTracker.account_id == a0))
        assert tracker is not None and tracker.update_count == 2


async def test_sync_when_position_closed_at_broker_removes_row_and_cancel_updates_order(
    database: Database, sim: SimHandle, accounts: list[int], sync: AccountSync
) -> None:
    await place(sim, 0, buy(CE))
    (resting,) = await place(sim, 0, buy(PE, pricetype=PriceType.LIMIT, price=Decimal("1.00")))
    await sync.sync_account_once(accounts[0])
    assert count(database, Position, accounts[0]) == 1
    async with HostPool() as pool:
        client = OpenAlgoClient(sim.rest_url, sim.api_keys[0], pool=pool)
        await client.cancel_order(resting, strategy="sync-test")
        await client.place_order(sell(CE), strategy="sync-test")
    await sync.sync_account_once(accounts[0])
    with database.session() as s:
        flat = s.scalars(select(Position).where(Position.account_id == accounts[0])).all()
        # The paper book keeps today's flattened row (quantity 0): mirrored as such, with its realised P&L.
        assert all(p.quantity == 0 for p in flat)
        order = s.scalar(select(Order).where(Order.order_id == resting))
        assert order is not None and order.status == "cancelled"


async def test_sync_when_one_account_hangs_others_are_not_delayed(
    database: Database, sim: SimHandle, accounts: list[int]
) -> None:
    slow = AccountSync(database, BOX.decrypt, config=fast_config(read=2.0))
    await place(sim, 1, buy(CE))
    sim.control.hang_next(5, seconds=4.0, endpoint="funds", apikey=sim.api_keys[1])
    try:
        results = await slow.sync_all_once()
    finally:
        await slow.aclose()
    by_id = {r.account_id: r for r in results}
    assert by_id[accounts[0]].success and by_id[accounts[2]].success
    assert by_id[accounts[0]].seconds < 1.5 and by_id[accounts[2]].seconds < 1.5
    hung = by_id[accounts[1]]
    assert list(hung.errors) == ["funds"] and hung.seconds >= 2.0
    row = account(database, accounts[1])
    assert row.last_error is not None and row.last_error.startswith("funds: no reply within the timeout")
    assert row.consecutive_failures == 1 and row.connection_status == "disconnected"
    # The other four reads of the hung account were stored anyway.
    assert count(database, AccountFunds, accounts[1]) == 0
    assert count(database, Position, accounts[1]) == 1 and count(database, Trade, accounts[1]) == 1
    assert account(database, accounts[0]).connection_status == "connected"


async def test_sync_when_read_fails_keeps_previous_rows_and_records_error(
    database: Database, sim: SimHandle, accounts: list[int], sync: AccountSync
) -> None:
    await place(sim, 0, buy(CE))
    await sync.sync_account_once(accounts[0])
    with database.session() as s:
        before = s.scalars(select(Position).where(Position.account_id == accounts[0])).one()
        funds_before = s.scalar(select(AccountFunds.fetched_at).where(AccountFunds.account_id == accounts[0]))
    sim.control.status_next(500, 1, endpoint="positionbook", apikey=sim.api_keys[0])
    sim.control.status_next(500, 1, endpoint="funds", apikey=sim.api_keys[0])

    result = await sync.sync_account_once(accounts[0])

    assert set(result.errors) == {"positionbook", "funds"}
    with database.session() as s:
        after = s.scalars(select(Position).where(Position.account_id == accounts[0])).one()
        funds_after = s.scalar(select(AccountFunds.fetched_at).where(AccountFunds.account_id == accounts[0]))
    assert (after.id, after.quantity, after.average_price, after.updated_at) == (
        before.id,
        before.quantity,
        before.average_price,
        before.updated_at,
    )
    assert funds_after == funds_before
    row = account(database, accounts[0])
    assert row.last_error is not None and "server error 500" in row.last_error
    assert row.last_error_at is not None and row.connection_status == "connected"


async def test_sync_when_three_error_replies_in_a_row_marks_failed_logs_once_then_restores(
    database: Database, sim: SimHandle, accounts: list[int], sync: AccountSync
) -> None:
    acc = accounts[2]
    await sync.sync_account_once(acc)
    sim.control.status_next(500, 4, endpoint="funds", apikey=sim.api_keys[2])
    statuses = [(await sync.sync_account_once(acc)).status for _ in range(4)]
    assert statuses == ["connected", "connected", "failed", "failed"]
    assert activity(database, acc) == ["connection_lost"]
    assert account(database, acc).consecutive_failures == 4

    assert (await sync.sync_account_once(acc)).status == "connected"
    assert activity(database, acc) == ["connection_lost", "connection_restored"]
    assert account(database, acc).consecutive_failures == 0


async def test_sync_when_host_port_is_closed_marks_error_and_others_keep_syncing(
    database: Database, sim: SimHandle, accounts: list[int], sync: AccountSync
) -> None:
    dead = add_account(
        database,
        account(database, accounts[0]).user_id,
        "Dead host",
        f"http://127.0.0.1:{closed_port()}",
        "k" * 20,
    )
    for _ in range(3):
        results = {r.account_id: r for r in await sync.sync_all_once()}
        assert all(results[a].success for a in accounts)
    row = account(database, dead)
    assert row.connection_status == "error" and row.consecutive_failures == 3
    assert row.last_error is not None and "could not connect" in row.last_error
    assert row.last_sync_at is None and row.last_connected is None
    assert activity(database, dead) == ["connection_lost"]


async def test_sync_when_key_rejected_marks_auth_failed_and_stops_until_key_changes(
    database: Database, sim: SimHandle, accounts: list[int], sync: AccountSync
) -> None:
    acc = accounts[1]
    sim.control.status_next(403, 1, endpoint="orderbook", apikey=sim.api_keys[1])
    result = await sync.sync_account_once(acc)
    assert result.status == "auth_failed"
    assert activity(database, acc) == ["auth_failed"]
    # Every call from now on would be refused: if the sync called, it would record more failures.
    sim.control.status_next(403, 50, apikey=sim.api_keys[1])
    for _ in range(3):
        skipped = await sync.sync_account_once(acc)
        assert skipped.skipped is not None and skipped.skipped.startswith("auth_failed")
    row = account(database, acc)
    assert row.connection_status == "auth_failed" and row.consecutive_failures == 1
    assert sim.control.state()["faults"]  # the 50 injected refusals are still unused
    sim.control.clear_faults()

    with database.session() as s:  # the user saves the key again: a new token, so a "changed" key
        s.execute(
            update(TradingAccount)
            .where(TradingAccount.id == acc)
            .values(api_key_encrypted=BOX.encrypt(sim.api_keys[1]))
        )
    resumed = await sync.sync_account_once(acc)
    assert resumed.success and resumed.status == "connected"
    assert activity(database, acc) == ["auth_failed", "connection_restored"]


async def test_sync_run_when_accounts_change_starts_and_stops_workers_without_restart(
    database: Database, sim: SimHandle
) -> None:
    uid = add_user(database)
    first = add_account(database, uid, "Paper 1", sim.rest_url, sim.api_keys[0], primary=True)
    engine_sync = AccountSync(database, BOX.decrypt, config=fast_config())
    stop = asyncio.Event()
    runner = asyncio.create_task(engine_sync.run(stop))
    try:
        await eventually_async(
            lambda: asyncio.to_thread(lambda: account(database, first).last_sync_at is not None),
            timeout=10,
            what="first account synced",
        )
        second = add_account(database, uid, "Paper 2", sim.rest_url, sim.api_keys[1])
        await eventually_async(
            lambda: asyncio.to_thread(lambda: count(database, AccountFunds, second) == 1),
            timeout=10,
            what="account added later is synced",
        )
        with database.session() as s:
            s.execute(update(TradingAccount).where(TradingAccount.id == first).values(is_active=False))
        await eventually_async(
            lambda: asyncio.to_thread(lambda: first not in engine_sync._workers),
            timeout=10,
            what="deactivated account's worker stopped",
        )
        # A write already in flight when the worker was cancelled may still land: let it settle first.
        settled = engine_sync.cycles
        await eventually_async(
            lambda: asyncio.sleep(0, engine_sync.cycles >= settled + 2), timeout=10, what="cycles"
        )
        stamp = account(database, first).last_sync_at
        seen = engine_sync.cycles
        await eventually_async(
            lambda: asyncio.sleep(0, engine_sync.cycles >= seen + 4), timeout=10, what="cycles"
        )
        assert account(database, first).last_sync_at == stamp
    finally:
        stop.set()
        await asyncio.wait_for(runner, timeout=10)


async def test_sync_run_when_account_is_down_retries_it_less_often_than_healthy_ones(
    database: Database, sim: SimHandle
) -> None:
    uid = add_user(database)
    good = add_account(database, uid, "Paper 1", sim.rest_url, sim.api_keys[0], primary=True)
    dead = add_account(database, uid, "Dead host", f"http://127.0.0.1:{closed_port()}", "k" * 20)
    engine_sync = AccountSync(database, BOX.decrypt, config=fast_config(down=60.0))
    stop = asyncio.Event()
    runner = asyncio.create_task(engine_sync.run(stop))
    try:
        await eventually_async(
            lambda: asyncio.to_thread(
                lambda: (
                    account(database, dead).connection_status == "error"
                    and engine_sync.cycles_by_account.get(dead) == 3
                    and good in engine_sync.cycles_by_account
                )
            ),
            timeout=10,
            what="dead host marked error after its third cycle",
        )
        dead_cycles = engine_sync.cycles_by_account[dead]
        healthy = engine_sync.cycles_by_account[good]
        await eventually_async(
            lambda: asyncio.sleep(0, engine_sync.cycles_by_account[good] >= healthy + 5),
            timeout=10,
            what="cycles",
        )
        assert engine_sync.cycles_by_account[dead] == dead_cycles == 3
    finally:
        stop.set()
        await asyncio.wait_for(runner, timeout=10)


async def test_sync_when_key_cannot_be_decrypted_or_host_invalid_records_clear_status(
    database: Database, sync: AccountSync
) -> None:
    uid = add_user(database)
    bad_key = add_account(database, uid, "Old key", "http://127.0.0.1:9", "k" * 20, primary=True)
    bad_host = add_account(database, uid, "Bad host", "ftp://nowhere", "k" * 20)
    with database.session() as s:
        s.execute(
            update(TradingAccount)
            .where(TradingAccount.id == bad_key)
            .values(api_key_encrypted=SecretBox(Fernet.generate_key()).encrypt("x" * 20))
        )
    assert (await sync.sync_account_once(bad_key)).status == "auth_failed"
    assert "cannot be decrypted" in (account(database, bad_key).last_error or "")
    for _ in range(3):
        result = await sync.sync_account_once(bad_host)
    assert result.status == "failed"
    assert "invalid host URL" in (account(database, bad_host).last_error or "")


def test_sync_interval_when_market_closed_never_waits_past_the_open(database: Database) -> None:
    from datetime import UTC, datetime

    from algomirror.domain.timeutil import FakeClock

    clock = FakeClock(datetime(2026, 11, 25, 5, 0, tzinfo=UTC))  # Wed 10:30 IST: open
    engine_sync = AccountSync(
        database, BOX.decrypt, config=SyncConfig(interval_market=5, interval_closed=60), market_clock=clock
    )
    assert engine_sync.interval() == 5
    clock.set(datetime(2026, 11, 25, 14, 0, tzinfo=UTC))  # 19:30 IST: closed
    assert engine_sync.interval() == 60
    clock.set(datetime(2026, 11, 26, 3, 44, 30, tzinfo=UTC))  # 09:14:30 IST: opens in 30 s
    assert engine_sync.interval() == 30


async def test_sync_when_key_changes_while_reads_are_in_flight_stores_nothing_from_the_old_key(
    database: Database, sim: SimHandle, accounts: list[int]
) -> None:
    await place(sim, 0, buy(CE))
    a0 = accounts[0]
    new_token = BOX.encrypt(sim.api_keys[2])

    def decrypt_then_user_saves_new_key(token: str) -> str:
        # The client is built with the old key; the user saves another key before its replies land.
        with database.session() as s:
            s.execute(
                update(TradingAccount).where(TradingAccount.id == a0).values(api_key_encrypted=new_token)
            )
        return BOX.decrypt(token)

    engine_sync = AccountSync(database, decrypt_then_user_saves_new_key, config=fast_config())
    try:
        result = await engine_sync.sync_account_once(a0)
    finally:
        await engine_sync.aclose()
    assert result.success  # the old key's reads themselves worked
    assert [count(database, model, a0) for model in (Position, Order, Trade)] == [0, 0, 0]
    with database.session() as s:
        assert s.scalar(select(AccountFunds).where(AccountFunds.account_id == a0)) is None


# ----------------------------------------------------------------------- issue 8 item 8: health rules


def unused_status_faults(sim: SimHandle) -> int:
    """Injected HTTP-status faults (429s included) not yet consumed by a call."""
    return sum(int(f["count"]) for f in sim.control.state()["faults"]["http_status"])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(SIM_START)  # the paper exchange's manual clock: same trading day


@pytest.fixture
async def clocked_sync(database: Database, clock: FakeClock) -> AsyncIterator[AccountSync]:
    engine_sync = AccountSync(database, BOX.decrypt, config=fast_config(), clock=clock)
    try:
        yield engine_sync
    finally:
        await engine_sync.aclose()


async def test_sync_when_clock_is_injected_every_stored_timestamp_comes_from_it(
    database: Database, sim: SimHandle, accounts: list[int], clocked_sync: AccountSync, clock: FakeClock
) -> None:
    (order_id,) = await place(sim, 0, buy(CE))
    clock.advance(timedelta(minutes=7))
    now = clock.now()  # a day before the machine's real date, so a wall-clock stamp cannot match

    assert (await clocked_sync.sync_account_once(accounts[0])).success

    row = account(database, accounts[0])
    assert (row.last_sync_at, row.last_connected, row.updated_at) == (now, now, now)
    with database.session() as s:
        funds = s.scalars(select(AccountFunds).where(AccountFunds.account_id == accounts[0])).one()
        order = s.scalars(select(Order).where(Order.order_id == order_id)).one()
        trade = s.scalars(select(Trade).where(Trade.account_id == accounts[0])).one()
        position = s.scalars(select(Position).where(Position.account_id == accounts[0])).one()
        tracker = s.scalars(select(MarginTracker).where(MarginTracker.account_id == accounts[0])).one()
    assert (funds.fetched_at, funds.created_at, funds.updated_at) == (now, now, now)
    assert (order.created_at, order.updated_at, trade.created_at, trade.updated_at) == (now, now, now, now)
    assert (position.created_at, position.updated_at, tracker.last_updated) == (now, now, now)


async def test_sync_when_reads_are_rate_limited_never_counts_a_failure(
    database: Database, sim: SimHandle, accounts: list[int], clocked_sync: AccountSync, clock: FakeClock
) -> None:
    acc, key = accounts[0], sim.api_keys[0]
    await clocked_sync.sync_account_once(acc)
    for _ in range(4):  # more cycles than the failure threshold
        sim.control.rate_limit_next(1, endpoint="funds", apikey=key)
        sim.control.rate_limit_next(1, endpoint="positionbook", apikey=key)
        result = await clocked_sync.sync_account_once(acc)
        assert (result.rate_limited, result.errors, result.status) == (
            ("funds", "positionbook"),
            {},
            "connected",
        )
    assert unused_status_faults(sim) == 0  # the 429s really happened
    row = account(database, acc)
    assert (row.connection_status, row.consecutive_failures, row.last_error) == ("connected", 0, None)

    # A cycle where every read is refused learns nothing: the status and its timestamps stay as they were.
    stamp = row.last_sync_at
    clock.advance(timedelta(seconds=5))
    sim.control.rate_limit_next(len(ENDPOINTS), apikey=key)
    result = await clocked_sync.sync_account_once(acc)
    assert (len(result.rate_limited), result.status, unused_status_faults(sim)) == (
        len(ENDPOINTS),
        "connected",
        0,
    )
    row = account(database, acc)
    assert (row.connection_status, row.consecutive_failures, row.last_sync_at) == ("connected", 0, stamp)
    assert activity(database, acc) == []


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (404, "Broker-specific module not found"),  # OpenAlgo's reply when the broker lacks the function
        (400, "Holdings not supported for this broker"),
        (500, "Holdings not implemented for this broker"),
    ],
)
async def test_sync_when_broker_does_not_support_holdings_skips_it_without_failing(
    database: Database,
    sim: SimHandle,
    accounts: list[int],
    clocked_sync: AccountSync,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    status: int,
    message: str,
) -> None:
    acc, key = accounts[1], sim.api_keys[1]
    caplog.set_level(logging.INFO, logger="algomirror.engine.sync")
    with database.session() as s:
        s.add(Holding(account_id=acc, symbol="INFY", exchange="NSE", quantity=5, average_price=Decimal(1500)))
    sim.control.status_next(status, 1, endpoint="holdings", message=message, apikey=key)

    first = await clocked_sync.sync_account_once(acc)
    assert (first.unsupported, first.errors, first.status) == (("holdings",), {}, "connected")
    # Skipped while remembered: an injected refusal stays unused, the other reads go on.
    sim.control.status_next(status, 1, endpoint="holdings", message=message, apikey=key)
    for _ in range(3):
        result = await clocked_sync.sync_account_once(acc)
        assert (result.unsupported, result.status) == (("holdings",), "connected")
        assert set(result.ok) == set(ENDPOINTS) - {"holdings"}
    assert unused_status_faults(sim) == 1
    # Tried again after the retry period: still unsupported, and not logged a second time.
    clock.advance(timedelta(seconds=clocked_sync.config.unsupported_retry + 1))
    again = await clocked_sync.sync_account_once(acc)
    assert (again.unsupported, unused_status_faults(sim)) == (("holdings",), 0)
    warnings = [r for r in caplog.records if "does not support holdings" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    row = account(database, acc)
    assert (row.connection_status, row.consecutive_failures) == ("connected", 0)
    assert count(database, Holding, acc) == 1  # an unsupported read deletes nothing
    # Once the server answers it, it is read again (the paper book has no holdings: the row goes).
    clock.advance(timedelta(seconds=clocked_sync.config.unsupported_retry + 1))
    back = await clocked_sync.sync_account_once(acc)
    assert back.unsupported == () and "holdings" in back.ok
    assert count(database, Holding, acc) == 0


async def test_sync_when_funds_is_not_found_counts_failures_as_before(
    database: Database, sim: SimHandle, accounts: list[int], clocked_sync: AccountSync
) -> None:
    # funds is the account's heartbeat: a host that cannot answer it is broken, not "unsupported".
    acc = accounts[2]
    sim.control.status_next(404, 3, endpoint="funds", message="Not Found", apikey=sim.api_keys[2])
    statuses = [(await clocked_sync.sync_account_once(acc)).status for _ in range(3)]
    assert statuses == ["disconnected", "disconnected", "failed"]
    assert activity(database, acc) == ["connection_lost"]


async def test_sync_when_auth_failed_probes_slowly_and_recovers_after_broker_relogin(
    database: Database, sim: SimHandle, accounts: list[int], clocked_sync: AccountSync, clock: FakeClock
) -> None:
    acc, key = accounts[1], sim.api_keys[1]
    interval = timedelta(seconds=clocked_sync.config.auth_probe_interval)
    sim.control.status_next(403, 1, endpoint="orderbook", apikey=key)
    assert (await clocked_sync.sync_account_once(acc)).status == "auth_failed"

    # The broker session is still gone: refusals wait for the probe, which is due only after the interval.
    sim.control.status_next(403, 2, message="Invalid openalgo apikey", apikey=key)
    clock.advance(interval - timedelta(seconds=1))
    early = await clocked_sync.sync_account_once(acc)
    assert early.skipped is not None and early.skipped.startswith("auth_failed")
    assert unused_status_faults(sim) == 2
    clock.advance(timedelta(seconds=1))
    probed = await clocked_sync.sync_account_once(acc)
    assert probed.status == "auth_failed" and list(probed.errors) == ["funds"]
    assert unused_status_faults(sim) == 1  # exactly one call
    assert activity(database, acc) == ["auth_failed"]  # logged once
    assert (await clocked_sync.sync_account_once(acc)).skipped is not None

    # The user logs in to the broker again (same API key): the next probe recovers the account.
    sim.control.clear_faults()
    clock.advance(interval)
    recovered = await clocked_sync.sync_account_once(acc)
    assert recovered.success and recovered.status == "connected"
    assert set(recovered.ok) == set(ENDPOINTS)
    assert activity(database, acc) == ["auth_failed", "connection_restored"]
    row = account(database, acc)
    assert (row.connection_status, row.consecutive_failures, row.last_sync_at) == (
        "connected",
        0,
        clock.now(),
    )


async def test_sync_run_when_engine_restarts_with_account_auth_failed_probes_it_at_once(
    database: Database, sim: SimHandle, accounts: list[int], clock: FakeClock
) -> None:
    acc = accounts[0]
    with database.session() as s:  # left by a previous engine; the broker login has been renewed since
        s.execute(
            update(TradingAccount).where(TradingAccount.id == acc).values(connection_status="auth_failed")
        )
    engine_sync = AccountSync(database, BOX.decrypt, config=fast_config(), clock=clock)
    stop = asyncio.Event()
    runner = asyncio.create_task(engine_sync.run(stop))
    try:
        await eventually_async(
            lambda: asyncio.to_thread(lambda: account(database, acc).connection_status == "connected"),
            timeout=10,
            what="auth_failed account recovered by its first probe",
        )
    finally:
        stop.set()
        await asyncio.wait_for(runner, timeout=10)
    assert activity(database, acc) == ["connection_restored"]
