"""Retiring strategies and accounts (db.retirement) on both databases: refused while anything is live,
archived when it traded, deleted only when it never did."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from algomirror.config import load_settings
from algomirror.db.models import (
    OrderArchive,
    OrderIntent,
    Strategy,
    StrategyExecution,
    StrategyLeg,
    StrategyRun,
    TradingAccount,
)
from algomirror.db.retirement import (
    Retired,
    StillTradingError,
    leg_has_history,
    retire_account,
    retire_strategy,
)
from algomirror.db.session import Database
from tests.factories import make_account, make_order, make_user

T0 = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)


@pytest.fixture
def session(db_url: str) -> Session:
    database = Database(db_url)
    with database.session_factory() as s:
        yield s  # type: ignore[misc]
    database.dispose()


def _strategy(session: Session, user_id: int) -> Strategy:
    strategy = Strategy(user_id=user_id, name="Short straddle")
    strategy.legs.append(StrategyLeg(leg_number=1, instrument="NIFTY", action="SELL", option_type="CE"))
    session.add(strategy)
    session.flush()
    return strategy


def _run(
    session: Session, strategy: Strategy, account_id: int, *, status: str, run_status: str
) -> StrategyRun:
    run = StrategyRun(strategy_id=strategy.id, status=run_status, started_at=T0)
    if run_status == "closed":
        run.ended_at = T0
    session.add(run)
    session.flush()
    session.add(
        StrategyExecution(
            strategy_id=strategy.id,
            account_id=account_id,
            leg_id=strategy.legs[0].id,
            run_id=run.id,
            status=status,
        )
    )
    session.flush()
    return run


def _count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def test_retire_strategy_when_never_ran_deletes_it_with_its_legs(session: Session) -> None:
    strategy = _strategy(session, make_user(session, "priya").id)

    assert retire_strategy(session, strategy, now=T0) is Retired.DELETED
    session.commit()

    assert (_count(session, Strategy), _count(session, StrategyLeg)) == (0, 0)


def test_retire_strategy_when_it_ran_archives_and_keeps_history(session: Session) -> None:
    user = make_user(session, "priya")
    account = make_account(session, user.id, "main")
    strategy = _strategy(session, user.id)
    _run(session, strategy, account.id, status="exited", run_status="closed")

    assert retire_strategy(session, strategy, now=T0) is Retired.ARCHIVED
    session.commit()

    assert strategy.archived_at == T0 and not strategy.is_active
    assert (_count(session, StrategyRun), _count(session, StrategyExecution)) == (1, 1)
    assert leg_has_history(session, strategy.legs[0])
    # The name is free for a new live strategy.
    _strategy(session, user.id)
    session.commit()


@pytest.mark.parametrize("status", ["pending", "active", "exiting", "error"])
def test_retire_strategy_when_execution_live_or_in_error_is_refused(session: Session, status: str) -> None:
    user = make_user(session, "priya")
    account = make_account(session, user.id, "main")
    strategy = _strategy(session, user.id)
    _run(session, strategy, account.id, status=status, run_status="closed")
    session.commit()

    with pytest.raises(StillTradingError, match=status):
        retire_strategy(session, strategy, now=T0)
    session.rollback()

    assert session.get(Strategy, strategy.id).archived_at is None  # type: ignore[union-attr]


def test_retire_account_when_intent_unresolved_is_refused_naming_it(session: Session) -> None:
    user = make_user(session, "priya")
    account = make_account(session, user.id, "main")
    intent = OrderIntent(
        key="manual:1",
        account_id=account.id,
        symbol="X",
        exchange="NFO",
        product="MIS",
        side="BUY",
        quantity=1,
    )
    session.add(intent)
    session.flush()
    intent.state = "sent"
    session.flush()

    with pytest.raises(StillTradingError) as caught:
        retire_account(session, account, now=T0)

    assert [(b.kind, b.status) for b in caught.value.blockers] == [("order intent", "sent")]


def test_retire_account_when_only_broker_orders_archives_it(session: Session) -> None:
    account = make_account(session, make_user(session, "priya").id, "main", is_primary=True)
    make_order(session, account.id, "1")

    assert retire_account(session, account, now=T0) is Retired.ARCHIVED

    assert (account.archived_at, account.is_active, account.is_primary) == (T0, False, False)


def test_retire_account_when_only_archived_orders_remain_archives_instead_of_deleting(
    session: Session,
) -> None:
    account = make_account(session, make_user(session, "priya").id, "main")
    session.add(
        OrderArchive(
            id=9001,
            account_id=account.id,
            order_id="old-1",
            symbol="NIFTY",
            exchange="NSE_INDEX",
            action="BUY",
            quantity=1,
            order_type="MARKET",
            status="complete",
            placed_at=T0,
            archived_at=T0,
        )
    )
    session.flush()

    assert retire_account(session, account, now=T0) is Retired.ARCHIVED
    assert _count(session, OrderArchive) == 1


def test_retire_account_when_in_progress_blocks_a_concurrent_execution_insert(
    db_url: str, tmp_path: Path
) -> None:
    # Short waits: the second writer must be made to wait by the retirement's lock, not succeed.
    settings = load_settings(instance_dir=tmp_path, sqlite_busy_timeout_ms=300)
    database = Database(db_url, settings)
    try:
        with database.session() as setup:
            user = make_user(setup, "priya")
            account_id = make_account(setup, user.id, "main").id
            strategy = _strategy(setup, user.id)
            run = StrategyRun(strategy_id=strategy.id, status="closed", started_at=T0, ended_at=T0)
            later = StrategyRun(strategy_id=strategy.id, status="closed", started_at=T0, ended_at=T0)
            setup.add_all([run, later])
            setup.flush()
            ids = (strategy.id, strategy.legs[0].id, run.id)
            later_id = later.id
            # Traded once (an old exited execution): retiring will archive, the case RESTRICT cannot catch.
            setup.add(
                StrategyExecution(
                    strategy_id=ids[0], account_id=account_id, leg_id=ids[1], run_id=ids[2], status="exited"
                )
            )
        retiring = database.session_factory()
        account = retiring.get(TradingAccount, account_id)
        assert account is not None
        retiring.commit()
        assert retire_account(retiring, account, now=T0) is Retired.ARCHIVED  # lock held, not committed

        with pytest.raises(OperationalError), database.session() as other:
            if db_url.startswith("postgresql"):
                other.execute(text("SET LOCAL lock_timeout = '300ms'"))
            other.add(
                StrategyExecution(strategy_id=ids[0], account_id=account_id, leg_id=ids[1], run_id=later_id)
            )
            # A new execution on the account being archived: only the lock can hold it back.
            other.flush()
        retiring.commit()
        retiring.close()
    finally:
        database.dispose()
