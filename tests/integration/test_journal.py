"""The order journal on both databases: one intent per key, forward-only states, one intent per broker
order, and fencing — an engine whose epoch was superseded cannot write."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from itertools import product

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from algomirror.db.models import OrderIntent
from algomirror.db.session import Database
from algomirror.domain.order_state import INTENT_STATES, IllegalTransitionError, can_transition
from algomirror.domain.timeutil import FakeClock
from algomirror.engine.fencing import FencedOutError, take_epoch
from algomirror.engine.journal import (
    ConflictingFactsError,
    IntentExistsError,
    IntentSpec,
    Journal,
    OrderAlreadyAdoptedError,
)
from tests.factories import make_account, make_user

T0 = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)


@pytest.fixture
def database(db_url: str) -> Database:
    db = Database(db_url)
    yield db  # type: ignore[misc]
    db.dispose()


def _epoch(db: Database, holder: str) -> int:
    with db.session() as session:
        return take_epoch(session, holder=holder, now=T0)


def _account(db: Database) -> int:
    with db.session() as session:
        user = make_user(session, "joanna")
        return make_account(session, user.id, "main").id


def _spec(account_id: int, key: str = "exec:1:entry:1") -> IntentSpec:
    return IntentSpec(
        key=key,
        account_id=account_id,
        symbol="NIFTY08DEC2624000CE",
        exchange="NFO",
        product="MIS",
        side="SELL",
        quantity=65,
        strategy_tag="am-s1",
    )


def _intents(db: Database) -> list[OrderIntent]:
    with db.session() as session:
        return list(session.scalars(select(OrderIntent).order_by(OrderIntent.id)))


def test_record_when_key_already_written_refuses_and_keeps_one_row(database: Database) -> None:
    account = _account(database)
    journal = Journal(database, epoch=_epoch(database, "a"), clock=FakeClock(T0))
    first = journal.record(_spec(account))

    with pytest.raises(IntentExistsError) as caught:
        journal.record(_spec(account))

    assert (caught.value.intent_id, caught.value.state) == (first.id, "created")
    assert len(_intents(database)) == 1


def test_advance_when_path_is_forward_stamps_times_and_keeps_four_decimal_average(database: Database) -> None:
    account = _account(database)
    clock = FakeClock(T0)
    journal = Journal(database, epoch=_epoch(database, "a"), clock=clock)
    intent = journal.record(_spec(account))

    journal.advance(intent.id, "sent")
    journal.advance(intent.id, "acknowledged", order_id="26120100001")
    done = journal.advance(intent.id, "complete", filled_quantity=65, average_price=Decimal("123.4567"))

    assert (done.state, done.order_id, done.filled_quantity) == ("complete", "26120100001", 65)
    row = _intents(database)[0]
    assert row.average_price == Decimal("123.4567")
    assert row.sent_at == row.acknowledged_at == row.finished_at == T0


def test_advance_when_backwards_is_refused_and_row_unchanged(database: Database) -> None:
    account = _account(database)
    journal = Journal(database, epoch=_epoch(database, "a"), clock=FakeClock(T0))
    intent = journal.record(_spec(account))
    journal.advance(intent.id, "sent")
    journal.advance(intent.id, "unknown")

    with pytest.raises(IllegalTransitionError):
        journal.advance(intent.id, "sent")

    assert _intents(database)[0].state == "unknown"


def test_advance_when_broker_order_already_owned_by_another_intent_is_refused(database: Database) -> None:
    account = _account(database)
    journal = Journal(database, epoch=_epoch(database, "a"), clock=FakeClock(T0))
    first = journal.record(_spec(account, "exec:1:entry:1"))
    second = journal.record(_spec(account, "exec:1:entry:2"))
    for intent in (first, second):
        journal.advance(intent.id, "sent")
        journal.advance(intent.id, "unknown")
    journal.advance(first.id, "acknowledged", order_id="777")

    with pytest.raises(OrderAlreadyAdoptedError):
        journal.advance(second.id, "acknowledged", order_id="777")

    assert [(r.state, r.order_id) for r in _intents(database)] == [("acknowledged", "777"), ("unknown", None)]


def test_journal_when_newer_engine_took_the_epoch_refuses_every_write(database: Database) -> None:
    account = _account(database)
    stale = Journal(database, epoch=_epoch(database, "old"), clock=FakeClock(T0))
    intent = stale.record(_spec(account, "exec:1:entry:1"))
    fresh = Journal(database, epoch=_epoch(database, "new"), clock=FakeClock(T0))

    with pytest.raises(FencedOutError):
        stale.record(_spec(account, "exec:1:entry:2"))
    with pytest.raises(FencedOutError):
        stale.advance(intent.id, "sent")

    assert [(r.key, r.state) for r in _intents(database)] == [("exec:1:entry:1", "created")]
    assert fresh.advance(intent.id, "sent").state == "sent"


def test_unresolved_when_mixed_states_lists_only_possibly_live_orders(database: Database) -> None:
    account = _account(database)
    journal = Journal(database, epoch=_epoch(database, "a"), clock=FakeClock(T0))
    ids = [journal.record(_spec(account, f"exec:1:entry:{n}")).id for n in range(1, 5)]
    journal.advance(ids[1], "sent")
    journal.advance(ids[1], "unknown")
    journal.advance(ids[2], "rejected", rejection_reason="RMS: margin")
    journal.advance(ids[3], "cancelled")

    assert [v.id for v in journal.unresolved(account)] == [ids[0], ids[1]]
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(OrderIntent)) == 4


def test_advance_when_facts_contradict_the_record_is_refused(database: Database) -> None:
    account = _account(database)
    journal = Journal(database, epoch=_epoch(database, "a"), clock=FakeClock(T0))
    intent = journal.record(_spec(account))
    journal.advance(intent.id, "sent")
    journal.advance(intent.id, "acknowledged", order_id="A1", filled_quantity=50)

    with pytest.raises(ConflictingFactsError):
        journal.advance(intent.id, "acknowledged", order_id="B2")
    with pytest.raises(ConflictingFactsError):
        journal.advance(intent.id, "acknowledged", filled_quantity=25)
    journal.advance(intent.id, "complete", filled_quantity=65, average_price=Decimal("101.25"))
    with pytest.raises(ConflictingFactsError):
        journal.advance(intent.id, "complete", filled_quantity=65, average_price=Decimal("5"))

    assert journal.advance(intent.id, "complete", filled_quantity=65).state == "complete"
    row = _intents(database)[0]
    assert (row.order_id, row.filled_quantity, row.average_price) == ("A1", 65, Decimal("101.25"))


def test_advance_when_fill_exceeds_quantity_is_a_database_error_not_an_adoption(database: Database) -> None:
    account = _account(database)
    journal = Journal(database, epoch=_epoch(database, "a"), clock=FakeClock(T0))
    intent = journal.record(_spec(account))
    journal.advance(intent.id, "sent")

    with pytest.raises(IntegrityError):
        journal.advance(intent.id, "acknowledged", order_id="A1", filled_quantity=999)


PATH_TO = {
    "created": (),
    "sent": ("sent",),
    "acknowledged": ("sent", "acknowledged"),
    "unknown": ("sent", "unknown"),
    "complete": ("sent", "complete"),
    "rejected": ("rejected",),
    "cancelled": ("cancelled",),
}


def test_database_when_raw_sql_moves_a_state_allows_exactly_the_domain_transitions(db_url: str) -> None:
    database = Database(db_url)
    try:
        account = _account(database)
        engine = database.engine
        mismatches = []
        for n, (old, new) in enumerate(product(INTENT_STATES, INTENT_STATES)):
            with engine.begin() as conn:
                intent_id = conn.execute(
                    text(
                        "INSERT INTO order_intents (key, account_id, purpose, symbol, exchange, product,"
                        " side, quantity, order_type, filled_quantity, state, created_at, updated_at)"
                        " VALUES (:k, :a, 'entry', 'X', 'NFO', 'MIS', 'BUY', 1, 'MARKET', 0, 'created',"
                        " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) RETURNING id"
                    ),
                    {"k": f"raw:{n}", "a": account},
                ).scalar_one()
                for step in PATH_TO[old]:
                    conn.execute(
                        text("UPDATE order_intents SET state = :s WHERE id = :i"), {"s": step, "i": intent_id}
                    )
            try:
                with engine.begin() as conn:
                    conn.execute(
                        text("UPDATE order_intents SET state = :s WHERE id = :i"), {"s": new, "i": intent_id}
                    )
                accepted = True
            except IntegrityError:
                accepted = False
            if accepted != can_transition(old, new):
                mismatches.append((old, new, accepted))
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO order_intents (key, account_id, purpose, symbol, exchange, product, side,"
                    " quantity, order_type, filled_quantity, state, created_at, updated_at)"
                    " VALUES ('raw:late', :a, 'entry', 'X', 'NFO', 'MIS', 'BUY', 1, 'MARKET', 0, 'complete',"
                    " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"a": account},
            )
        assert mismatches == []
    finally:
        database.dispose()
