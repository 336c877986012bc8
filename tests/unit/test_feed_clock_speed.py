"""The demo's accelerated market clock stretches the feed's age limits (engine.factory.build_feeds)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from algomirror.broker.registry import ClientRegistry
from algomirror.config import load_settings
from algomirror.db.session import Database
from algomirror.engine.factory import build_feeds
from algomirror.engine.marks import Mark

T0 = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)


class _FastClock:
    def __init__(self, speed: object) -> None:
        self.speed = speed

    def now(self) -> datetime:
        return T0


def test_a_feed_on_a_30x_clock_keeps_a_tick_usable_for_five_wall_seconds(tmp_path: Path) -> None:
    settings = load_settings(
        instance_dir=tmp_path / "instance", database_url=f"sqlite:///{tmp_path / 'a.db'}"
    )
    database = Database(settings.database_url, settings)
    registry = ClientRegistry()
    try:
        fast = build_feeds(settings, database, registry, market_clock=_FastClock(30.0))
        real = build_feeds(settings, database, registry)
        slowed = build_feeds(settings, database, registry, market_clock=_FastClock(0.5))
        assert slowed.config.stale_after == 10.0
        for feeds in (fast, real):
            feeds.marks.set_feed_health(7, True)
            feeds.marks.update("NIFTY", "NSE_INDEX", Mark(Decimal("24000"), T0, "ws", 7))
        # 60 s of a 30x clock is 2 s of the user's time: still fresh there, stale on a real clock.
        later = T0 + timedelta(seconds=60)
        assert fast.marks.usable("NIFTY", "NSE_INDEX", later) is not None
        assert real.marks.usable("NIFTY", "NSE_INDEX", later) is None
        # Past 5 wall seconds (150 s at 30x) the tick is stale on both.
        assert fast.marks.usable("NIFTY", "NSE_INDEX", T0 + timedelta(seconds=151)) is None
        assert fast.config.stale_after == 300.0
        assert real.config.stale_after == 10.0
    finally:
        database.dispose()
