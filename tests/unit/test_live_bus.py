"""InProcessBus: fan-out, topic filtering, drop-oldest, blocking readers, close."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from algomirror.config import Settings
from algomirror.live import InProcessBus, LiveMessage, RedisBus, Subscription, build_bus


def test_publish_when_several_subscribers_each_gets_the_message() -> None:
    bus = InProcessBus()
    subs = [bus.subscribe(["run:1:risk"]) for _ in range(3)]
    data = {"pnl": Decimal("12.50"), "at": datetime(2026, 1, 2, 4, 0, tzinfo=UTC)}
    bus.publish("run:1:risk", "pnl", data)
    data["pnl"] = Decimal("-1")
    got = [sub.get(timeout=1.0) for sub in subs]
    assert all(isinstance(m, LiveMessage) for m in got)
    assert len({m.id for m in got if m}) == 1
    for m in got:
        assert m is not None
        assert (m.topic, m.event) == ("run:1:risk", "pnl")
        assert m.data == {"pnl": "12.50", "at": "2026-01-02T04:00:00+00:00"}


def test_publish_when_other_topic_subscriber_gets_nothing_and_ids_increase() -> None:
    bus = InProcessBus()
    risk = bus.subscribe(["run:1:risk"])
    both = bus.subscribe(["run:1:risk", "feed:status"])
    bus.publish("feed:status", "up", {})
    bus.publish("run:2:risk", "pnl", {})
    bus.publish("run:1:risk", "pnl", {"n": 1})
    first = both.get(timeout=1.0)
    second = both.get(timeout=1.0)
    assert first is not None and second is not None
    assert [first.topic, second.topic] == ["feed:status", "run:1:risk"]
    assert first.id < second.id
    only = risk.get(timeout=1.0)
    assert only is not None and only.data == {"n": 1}
    assert risk.get(timeout=0) is None


def test_publish_when_queue_full_drops_oldest_and_counts() -> None:
    bus = InProcessBus(queue_size=3)
    slow = bus.subscribe(["t"])
    for n in range(5):
        bus.publish("t", "e", {"n": n})
    assert slow.dropped == 2 and bus.dropped == 2
    kept = [m.data["n"] for m in iter(lambda: slow.get(timeout=0), None)]
    assert kept == [2, 3, 4]


def test_get_when_blocked_wakes_for_a_publisher_thread() -> None:
    bus = InProcessBus()
    sub = bus.subscribe(["feed:status"])
    reader_started = threading.Event()
    received: list[LiveMessage | None] = []

    def read() -> None:
        reader_started.set()
        received.append(sub.get(timeout=5.0))

    reader = threading.Thread(target=read)
    reader.start()
    assert reader_started.wait(2.0)
    start = time.monotonic()
    publisher = threading.Thread(target=bus.publish, args=("feed:status", "up", {"ok": True}))
    publisher.start()
    publisher.join(2.0)
    reader.join(2.0)
    assert not reader.is_alive(), "the blocked reader was not woken"
    assert time.monotonic() - start < 2.0
    assert received[0] is not None and received[0].data == {"ok": True}


def test_get_when_nothing_published_returns_none_after_timeout() -> None:
    sub = InProcessBus().subscribe(["t"])
    start = time.monotonic()
    assert sub.get(timeout=0.05) is None
    assert time.monotonic() - start >= 0.05
    with pytest.raises(ValueError):
        sub.get(timeout=-1)


def test_close_when_reader_blocked_returns_none_and_unregisters() -> None:
    bus = InProcessBus()
    sub = bus.subscribe(["t"])
    other = bus.subscribe(["t"])
    results: list[LiveMessage | None] = []
    reader = threading.Thread(target=lambda: results.append(sub.get(timeout=5.0)))
    reader.start()
    sub.close()
    reader.join(2.0)
    assert not reader.is_alive() and results == [None]
    assert sub.closed and bus.subscriber_count == 1
    bus.publish("t", "e", {})
    assert sub.get(timeout=0) is None
    assert other.get(timeout=1.0) is not None
    bus.close()
    assert other.closed and bus.subscriber_count == 0
    assert bus.subscribe(["t"]).closed


def test_publish_when_data_not_json_counts_and_does_not_raise() -> None:
    bus = InProcessBus()
    sub = bus.subscribe(["t"])
    bus.publish("t", "e", {"bad": object()})
    assert bus.publish_errors == 1 and sub.get(timeout=0) is None


def test_subscribe_when_no_topics_raises() -> None:
    bus = InProcessBus()
    with pytest.raises(ValueError):
        bus.subscribe([])
    with pytest.raises(ValueError):
        bus.subscribe([""])
    with pytest.raises(ValueError):
        Subscription(["t"], queue_size=0)


def test_build_bus_when_redis_url_set_is_redis_else_in_process(tmp_path: Path) -> None:
    plain = Settings(instance_dir=tmp_path, redis_url="")
    assert isinstance(build_bus(plain), InProcessBus)
    redis_bus = build_bus(Settings(instance_dir=tmp_path, redis_url="redis://127.0.0.1:6379/0"))
    assert isinstance(redis_bus, RedisBus)
    redis_bus.close()


def test_publish_when_several_threads_publish_every_subscriber_gets_all_in_order() -> None:
    bus = InProcessBus(queue_size=10_000)
    subs = [bus.subscribe(["t"]) for _ in range(3)]
    slow = InProcessBus(queue_size=10)
    publishers, each = 4, 500
    lagging = slow.subscribe(["t"])

    def publish(worker: int) -> None:
        for n in range(each):
            bus.publish("t", "e", {"w": worker, "n": n})
            slow.publish("t", "e", {"w": worker, "n": n})

    threads = [threading.Thread(target=publish, args=(w,)) for w in range(publishers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10.0)
        assert not thread.is_alive()
    for sub in subs:
        got = drain(sub)
        assert len(got) == publishers * each and sub.dropped == 0
        ids = [m.id for m in got]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        for worker in range(publishers):
            assert [m.data["n"] for m in got if m.data["w"] == worker] == list(range(each))
    # The bounded queue kept the newest 10 and counted every message it let go.
    kept = drain(lagging)
    assert len(kept) == 10 and lagging.dropped == slow.dropped == publishers * each - 10


def drain(sub: Subscription) -> list[LiveMessage]:
    """Every message queued for ``sub`` now."""
    got: list[LiveMessage] = []
    while (message := sub.get(timeout=0)) is not None:
        got.append(message)
    return got
