"""MarkBook: acceptance (no zero prices, never backwards), listeners, and the usability rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from algomirror.engine.marks import Mark, MarkBook

T0 = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)


def ws(ltp: str, at: datetime = T0, account: int | None = 1) -> Mark:
    return Mark(ltp=Decimal(ltp), at=at, source="ws", account_id=account)


def test_update_rejects_non_prices_and_older_marks_and_notifies_listeners() -> None:
    book = MarkBook()
    seen: list[tuple[str, str, Decimal]] = []
    book.add_listener(lambda s, e, m: seen.append((s, e, m.ltp)))
    assert book.update("X", "NFO", ws("100"))
    assert not book.update("X", "NFO", ws("0", T0 + timedelta(seconds=1)))
    assert not book.update("X", "NFO", ws("-1", T0 + timedelta(seconds=1)))
    assert not book.update("X", "NFO", ws("99", T0 - timedelta(seconds=1)))
    assert book.update("X", "NFO", ws("101", T0 + timedelta(seconds=1)))
    assert seen == [("X", "NFO", Decimal("100")), ("X", "NFO", Decimal("101"))]
    mark = book.get("X", "NFO")
    assert mark is not None and mark.ltp == Decimal("101")
    with pytest.raises(ValueError):
        book.update("X", "NFO", Mark(Decimal("1"), datetime(2026, 1, 1), "ws", 1))


def test_a_failing_listener_does_not_block_the_others() -> None:
    book = MarkBook()
    seen: list[str] = []

    def broken(symbol: str, exchange: str, mark: Mark) -> None:
        raise RuntimeError("boom")

    book.add_listener(broken)
    book.add_listener(lambda s, e, m: seen.append(s))
    assert book.update("X", "NFO", ws("1"))
    assert seen == ["X"]


def test_ws_mark_usable_only_from_a_healthy_feed_and_fresh_in_market_hours() -> None:
    book = MarkBook(ws_max_age=5)
    book.update("X", "NFO", ws("100"))
    assert book.usable("X", "NFO", T0) is None  # feed not reported healthy
    book.set_feed_health(1, True)
    assert book.usable("X", "NFO", T0 + timedelta(seconds=4.9)) is not None
    assert book.usable("X", "NFO", T0 + timedelta(seconds=5)) is None
    book.set_market_open(False)
    assert book.usable("X", "NFO", T0 + timedelta(hours=2)) is not None
    book.set_feed_health(1, False)
    assert book.usable("X", "NFO", T0 + timedelta(seconds=1)) is None
    assert book.usable("Y", "NFO", T0) is None


def test_rest_mark_usable_for_five_seconds_whatever_the_feed() -> None:
    book = MarkBook()
    book.update("X", "NFO", Mark(Decimal("50"), T0, "rest", 2))
    assert book.usable("X", "NFO", T0 + timedelta(seconds=4)) is not None
    assert book.usable("X", "NFO", T0 + timedelta(seconds=5)) is None
