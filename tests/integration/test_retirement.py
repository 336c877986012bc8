"""Retiring strategies and accounts (db.retirement) on both databases: refused while anything is live,
archived when it traded, deleted only when it never did."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from algomirror.db.models import OrderIntent, Strategy, StrategyExecution, StrategyLeg, StrategyRun
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
