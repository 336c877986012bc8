"""The journal's batch writes (the entry fan-out's hot path) on both databases: record_and_claim writes
each key once and gives each send one winner, advance_many applies advance()'s rules all or nothing, and
both are fenced like every journal write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from algomirror.db.models import OrderIntent
from algomirror.db.session import Database
from algomirror.domain.order_state import IllegalTransitionError
from algomirror.domain.timeutil import FakeClock
from algomirror.engine.fencing import FencedOutError, take_epoch
from algomirror.engine.journal import (
    Advance,
    ConflictingFactsError,
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


def _spec(account_id: int, key: str) -> IntentSpec:
    return IntentSpec(
        key=key,
        account_id=account_id,
        symbol="NIFTY08DEC2624000CE",
        exchange="NFO",
        product="MIS",
        side="SELL",
        quantity=65,
        strategy_tag="AM-S1",
        purpose="entry",
    )


def _rows(db: Database) -> list[OrderIntent]:
    with db.session_factory() as session:
        return list(session.scalars(select(OrderIntent).order_by(OrderIntent.id)))


def test_record_and_claim_writes_new_keys_claimed_and_keeps_what_an_earlier_attempt_wrote(
    database: Database,
) -> None:
    account = _account(database)
    clock = FakeClock(T0)
    journal = Journal(database, epoch=_epoch(database, "a"), clock=clock)
    earlier_created = journal.record(_spec(account, "exec:1:entry:1"))
    earlier_sent = journal.record(_spec(account, "exec:1:entry:2"))
    assert journal.claim_send(earlier_sent.id)
    clock.advance(timedelta(seconds=5))

    claimed = journal.record_and_claim(
        [_spec(account, "exec:1:entry:1"), _spec(account, "exec:1:entry:2"), _spec(account, "exec:1:entry:3")]
    )

    assert [(c.view.key, c.view.state, c.won) for c in claimed] == [
        ("exec:1:entry:1", "sent", True),  # still created: this caller claims it
        ("exec:1:entry:2", "sent", False),  # an earlier attempt claimed it: never sent again
        ("exec:1:entry:3", "sent", True),
    ]
    assert claimed[0].view.id == earlier_created.id
    rows = _rows(database)
    assert [(r.key, r.state, r.sent_at) for r in rows] == [
        ("exec:1:entry:1", "sent", T0 + timedelta(seconds=5)),
        ("exec:1:entry:2", "sent", T0),
        ("exec:1:entry:3", "sent", T0 + timedelta(seconds=5)),
    ]
    assert rows[2].strategy_tag == "AM-S1" and rows[2].quantity == 65


def test_record_and_claim_twice_gives_every_send_one_winner(database: Database) -> None:
    account = _account(database)
    epoch = _epoch(database, "a")
    first = Journal(database, epoch=epoch, clock=FakeClock(T0))
    second = Journal(database, epoch=epoch, clock=FakeClock(T0))
    specs = [_spec(account, f"exec:1:entry:{n}") for n in (1, 2)]

    a = first.record_and_claim(specs)
    b = second.record_and_claim(specs)

    assert [c.won for c in a] == [True, True]
    assert [c.won for c in b] == [False, False]
    assert len(_rows(database)) == 2


def test_batch_writes_of_a_fenced_out_engine_write_nothing(database: Database) -> None:
    account = _account(database)
    stale = Journal(database, epoch=_epoch(database, "old"), clock=FakeClock(T0))
    intent = stale.record(_spec(account, "exec:1:entry:1"))
    _epoch(database, "new")

    with pytest.raises(FencedOutError):
        stale.record_and_claim([_spec(account, "exec:1:entry:2")])
    with pytest.raises(FencedOutError):
        stale.advance_many([Advance(intent.id, "cancelled")])

    assert [(r.key, r.state) for r in _rows(database)] == [("exec:1:entry:1", "created")]


def test_advance_many_records_acknowledgement_and_outcome_together(database: Database) -> None:
    account = _account(database)
    journal = Journal(database, epoch=_epoch(database, "a"), clock=FakeClock(T0))
    one, two = journal.record_and_claim([_spec(account, "exec:1:entry:1"), _spec(account, "exec:1:entry:2")])

    views = journal.advance_many(
        [
            Advance(
                one.view.id, "complete", order_id="101", filled_quantity=65, average_price=Decimal("12.3456")
            ),
            Advance(two.view.id, "acknowledged", order_id="102"),
        ]
    )

    assert [(v.state, v.order_id, v.filled_quantity) for v in views] == [
        ("complete", "101", 65),
        ("acknowledged", "102", 0),
    ]
    rows = _rows(database)
    assert [(r.state, r.order_id, r.filled_quantity, r.average_price) for r in rows] == [
        ("complete", "101", 65, Decimal("12.3456")),
        ("acknowledged", "102", 0, None),
    ]
    assert rows[0].acknowledged_at == T0 and rows[0].finished_at == T0
    assert rows[1].acknowledged_at == T0 and rows[1].finished_at is None


def test_advance_many_refuses_the_whole_batch_on_a_bad_change(database: Database) -> None:
    account = _account(database)
    journal = Journal(database, epoch=_epoch(database, "a"), clock=FakeClock(T0))
    one, two, three = journal.record_and_claim([_spec(account, f"exec:1:entry:{n}") for n in (1, 2, 3)])
    journal.advance(three.view.id, "acknowledged", order_id="103")

    with pytest.raises(IllegalTransitionError):
        journal.advance_many(
            [Advance(one.view.id, "acknowledged", order_id="101"), Advance(two.view.id, "created")]
        )
    with pytest.raises(ConflictingFactsError):
        journal.advance_many(
            [
                Advance(one.view.id, "acknowledged", order_id="101"),
                Advance(three.view.id, "acknowledged", order_id="999"),
            ]
        )
    with pytest.raises(OrderAlreadyAdoptedError):
        journal.advance_many(
            [
                Advance(one.view.id, "acknowledged", order_id="101"),
                Advance(two.view.id, "acknowledged", order_id="103"),
            ]
        )

    assert [(r.state, r.order_id) for r in _rows(database)] == [
        ("sent", None),
        ("sent", None),
        ("acknowledged", "103"),
    ]
