"""Alerts a person acknowledges and per-account entry halts (migration 0007), on both databases."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from algomirror.db.models import ActivityLog, EngineAlert, Strategy, StrategyRun, TradingAccount
from algomirror.engine.alerts import acknowledge_alert, open_alerts, raise_alert
from algomirror.engine.halts import (
    ACCOUNT_HALTED_ACTION,
    account_entries_halted,
    halt_account_entries,
    resume_account_entries,
)
from tests.factories import make_account, make_user

NOW = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)


def test_raise_alert_dedupes_open_alerts_and_acknowledge_is_per_user(session: Session) -> None:
    user = make_user(session, "trader")
    other = make_user(session, "other")
    account = make_account(session, user.id, "Main")
    first = raise_alert(
        session, user_id=user.id, kind="reconciliation", title="gap", now=NOW, account_id=account.id
    )
    again = raise_alert(
        session, user_id=user.id, kind="reconciliation", title="gap", now=NOW, account_id=account.id
    )
    elsewhere = raise_alert(session, user_id=user.id, kind="reconciliation", title="gap", now=NOW)
    session.commit()
    assert again.id == first.id
    assert elsewhere.id != first.id
    assert [a.id for a in open_alerts(session, user.id)] == sorted([first.id, elsewhere.id], reverse=True)

    assert acknowledge_alert(session, first.id, user_id=other.id, now=NOW) is False
    assert acknowledge_alert(session, first.id, user_id=user.id, now=NOW) is True
    assert acknowledge_alert(session, first.id, user_id=user.id, now=NOW) is False
    session.commit()
    assert [a.id for a in open_alerts(session, user.id)] == [elsewhere.id]
    # Acknowledged, the same problem found again is a new alert.
    fresh = raise_alert(
        session, user_id=user.id, kind="reconciliation", title="gap", now=NOW, account_id=account.id
    )
    assert fresh.id != first.id


def test_critical_alerts_come_first_and_unknown_severity_is_refused(session: Session) -> None:
    user = make_user(session, "trader")
    raise_alert(session, user_id=user.id, kind="a", title="later warning", now=NOW)
    raise_alert(session, user_id=user.id, kind="b", title="critical", now=NOW, severity="critical")
    session.commit()
    assert next(a.title for a in open_alerts(session, user.id)) == "critical"
    with pytest.raises(ValueError, match="severity"):
        raise_alert(session, user_id=user.id, kind="c", title="x", now=NOW, severity="loud")


def test_the_database_refuses_an_unknown_severity(session: Session) -> None:
    user = make_user(session, "trader")
    session.add(EngineAlert(user_id=user.id, kind="k", title="t", severity="loud"))
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()


def test_account_halt_appends_reasons_and_only_the_owner_resumes(session: Session) -> None:
    user = make_user(session, "trader")
    other = make_user(session, "other")
    account = make_account(session, user.id, "Main")
    session.commit()
    assert account_entries_halted(session, account.id) is None
    assert halt_account_entries(session, account.id, "unexplained NIFTY position", NOW) is True
    assert halt_account_entries(session, account.id, "orderbook unreadable", NOW) is False
    assert halt_account_entries(session, account.id, "orderbook unreadable", NOW) is False
    session.commit()
    assert account_entries_halted(session, account.id) == "unexplained NIFTY position; orderbook unreadable"
    logged = session.scalars(
        select(ActivityLog.action).where(ActivityLog.action == ACCOUNT_HALTED_ACTION)
    ).all()
    assert logged == [ACCOUNT_HALTED_ACTION]

    assert resume_account_entries(session, account.id, user_id=other.id, now=NOW) is False
    assert resume_account_entries(session, account.id, user_id=user.id, now=NOW) is True
    session.commit()
    stored = session.get(TradingAccount, account.id)
    assert stored is not None and stored.entries_halted_reason is None and stored.entries_halted_at is None


def test_exit_all_is_a_stored_exit_reason(session: Session) -> None:
    # The CHECK rebuilt by 0007 admits exit_all and still refuses an unknown reason.
    user = make_user(session, "trader")
    strategy = Strategy(user_id=user.id, name="S")
    session.add(strategy)
    session.flush()
    run = StrategyRun(
        strategy_id=strategy.id, status="closed", started_at=NOW, ended_at=NOW, exit_reason="exit_all"
    )
    session.add(run)
    session.commit()
    assert session.scalar(select(StrategyRun.exit_reason)) == "exit_all"
    with pytest.raises(IntegrityError):
        session.execute(update(StrategyRun).values(exit_reason="bogus"))
        session.commit()
    session.rollback()
