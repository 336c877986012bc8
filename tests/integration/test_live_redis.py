"""RedisBus against the real Redis at 127.0.0.1:6379 (each test on its own channel prefix)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest

from algomirror.live import RedisBus
from tests.helpers import eventually

REDIS_URL = "redis://127.0.0.1:6379/15"


@pytest.fixture
def bus() -> Iterator[RedisBus]:
    live = RedisBus(REDIS_URL, channel_prefix=f"test-live:{uuid.uuid4().hex}:")
    yield live
    live.close()


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_publish_when_subscribed_via_redis_reader_gets_it(bus: RedisBus) -> None:
    sub = bus.subscribe(["run:7:risk"])
    other = bus.subscribe(["run:8:risk"])
    assert bus.wait_connected(3.0), "listener did not subscribe in Redis"
    bus.publish("run:8:risk", "pnl", {"pnl": Decimal("1")})
    bus.publish("run:7:risk", "pnl", {"pnl": Decimal("-250.75")})
    message = sub.get(timeout=3.0)
    assert message is not None
    assert (message.topic, message.event, message.data) == ("run:7:risk", "pnl", {"pnl": "-250.75"})
    assert sub.get(timeout=0) is None
    got = other.get(timeout=3.0)
    assert got is not None and got.data == {"pnl": "1"} and got.id < message.id
    eventually(lambda: bus.published == 2, timeout=3.0, what="both sent")
    assert bus.publish_errors == 0


def test_publish_when_other_bus_publishes_subscriber_receives(bus: RedisBus) -> None:
    sender = RedisBus(REDIS_URL, channel_prefix=bus.channel_prefix)
    try:
        sub = bus.subscribe(["feed:status"])
        assert bus.wait_connected(3.0)
        sender.publish("feed:status", "up", {"feeds": 3})
        message = sub.get(timeout=3.0)
        assert message is not None and message.data == {"feeds": 3}
    finally:
        sender.close()


def test_publish_when_redis_unreachable_does_not_raise_and_counts() -> None:
    down = RedisBus(f"redis://127.0.0.1:{_unused_port()}/0", socket_timeout=0.5)
    try:
        down.publish("feed:status", "up", {})
        down.publish("feed:status", "up", {})
        eventually(lambda: down.publish_errors == 2, timeout=3.0, what="both failures counted")
        assert down.published == 0
    finally:
        down.close()
