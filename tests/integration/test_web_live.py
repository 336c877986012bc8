"""GET /live/stream over a real waitress server on a loopback port (SQLite and PostgreSQL): SSE framing
and headers, only the requested topics, keepalive comments, the stream's end (lifetime, client gone: its
subscription and slot are freed), authorization (another user's run or user topic 404, unknown topic
400, signed out 401) and the per-user stream cap (429)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from algomirror.db.models import Strategy, StrategyRun
from algomirror.live import InProcessBus, RedisBus
from algomirror.web.live import StreamSlots, stream_slots
from tests import profile
from tests.helpers import eventually
from tests.integration.web_support import PASSWORD, START, TOKEN_RE, WebEnv, add_user, make_env, signed_in

DEADLINE = 10.0


@dataclass
class Served:
    env: WebEnv
    url: str
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self) -> httpx.Client:
        """An HTTP client on the server, closed at teardown (an open keep-alive connection would keep
        waitress's loop running)."""
        client = httpx.Client(base_url=self.url, timeout=DEADLINE, follow_redirects=False)
        self.clients.append(client)
        return client

    @property
    def bus(self) -> InProcessBus | RedisBus:
        bus: InProcessBus | RedisBus = self.env.app.extensions["live_bus"]
        return bus

    @property
    def slots(self) -> StreamSlots:
        with self.env.app.app_context():
            return stream_slots()


@pytest.fixture
def served(db_url: str, tmp_path: Path) -> Iterator[Served]:
    from waitress.server import create_server

    # Plain HTTP on loopback (no TLS proxy in front): a Secure cookie would never be sent back.
    env = make_env(db_url, tmp_path, secure_cookies=False)
    env.app.config.update(LIVE_KEEPALIVE_SECONDS=0.2, LIVE_STREAMS_PER_USER=2, LIVE_MAX_STREAMS=6)
    # The production test profile streams over Redis pub/sub, the development one in process.
    assert isinstance(env.app.extensions["live_bus"], RedisBus if profile.PRODUCTION else InProcessBus)
    # As runner.serve does: lookahead lets waitress notice a client that went away mid-stream.
    server: Any = create_server(env.app, host="127.0.0.1", port=0, threads=8, channel_request_lookahead=1)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    served = Served(env, f"http://127.0.0.1:{server.effective_port}")
    try:
        yield served
    finally:
        for client in served.clients:
            client.close()
        server.close()
        thread.join(timeout=10)
        env.database.dispose()


def sign_in(served: Served, username: str, *, create: bool = True) -> httpx.Client:
    """An HTTP client signed in as ``username`` (created first unless ``create`` is False), as a browser
    would: CSRF token from the sign-in page, then the form POST."""
    if create:
        add_user(served.env, username)
    client = served.client()
    page = client.get("/login")
    match = TOKEN_RE.search(page.text)
    assert match, page.text[:500]
    answer = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": match[1]})
    assert answer.status_code == 303, answer.text[:500]
    return client


def make_run(served: Served, username: str) -> int:
    uid = served.env.user(username).id
    with served.env.database.session() as s:
        strategy = Strategy(user_id=uid, name=f"{username} strategy")
        s.add(strategy)
        s.flush()
        run = StrategyRun(strategy_id=strategy.id, started_at=START)
        s.add(run)
        s.flush()
        run_id = run.id
        s.commit()
    return run_id


def query(*topics: str) -> str:
    """The query string of a stream of ``topics`` (``topic`` repeated)."""
    return urlencode([("topic", topic) for topic in topics])


class Frames:
    """SSE frames read from a streaming response, each a list of its lines, with a deadline."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.iter_lines()

    def next(self) -> list[str]:
        lines: list[str] = []
        deadline = time.monotonic() + DEADLINE
        for line in self._lines:
            if line == "":
                if lines:
                    return lines
                continue
            lines.append(line)
            assert time.monotonic() < deadline, "no complete frame in time"
        raise EOFError(f"stream ended ({lines})")

    def next_event(self) -> list[str]:
        """The next frame that is not a keepalive comment."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            frame = self.next()
            if frame != [": keepalive"]:
                return frame
        raise AssertionError("only keepalives within the deadline")


@contextmanager
def open_stream(client: httpx.Client, *topics: str) -> Iterator[httpx.Response]:
    with client.stream("GET", "/live/stream", params=query(*topics)) as response:
        yield response


def test_stream_when_signed_in_frames_the_published_events_of_its_topics_only(served: Served) -> None:
    alice = sign_in(served, "alice")
    uid = served.env.user("alice").id
    run_id = make_run(served, "alice")
    topics = (f"user:{uid}:alerts", f"run:{run_id}:risk", f"user:{uid}:feed")
    with open_stream(alice, *topics) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        # The app's security headers still apply.
        assert "default-src 'self'" in response.headers["content-security-policy"]
        frames = Frames(response)
        assert frames.next() == ["retry: 3000"]
        eventually(lambda: served.bus.subscriber_count == 1, timeout=DEADLINE, what="subscribed")
        bus = served.bus
        if isinstance(bus, RedisBus):
            # Pub/sub keeps nothing: publish only once the listener is subscribed in Redis.
            assert bus.wait_connected(DEADLINE), "live bus listener not subscribed in Redis"

        served.bus.publish(f"run:{run_id + 1}:risk", "pnl", {"pnl": Decimal("1")})
        served.bus.publish(f"user:{uid + 1}:alerts", "alert", {"text": "not yours"})
        served.bus.publish(f"run:{run_id}:risk", "pnl", {"pnl": Decimal("-1250.50")})
        served.bus.publish(f"user:{uid}:feed", "status", {"healthy": True, "note": "line\nbreak"})

        first = frames.next_event()
        assert first[0].startswith("id: ") and first[1:] == [
            "event: pnl",
            f'data: {{"topic":"run:{run_id}:risk","data":{{"pnl":"-1250.50"}}}}',
        ]
        second = frames.next_event()
        assert second[1] == "event: status"
        assert json.loads(second[2].removeprefix("data: ")) == {
            "topic": f"user:{uid}:feed",
            "data": {"healthy": True, "note": "line\nbreak"},
        }
        assert int(second[0].removeprefix("id: ")) > int(first[0].removeprefix("id: "))
        # Nothing else was queued for this stream: next come only keepalives (every 0.2 s here).
        assert frames.next() == [": keepalive"]


def test_stream_when_client_disconnects_frees_its_subscription_and_slot(served: Served) -> None:
    alice = sign_in(served, "alice")
    uid = served.env.user("alice").id
    with open_stream(alice, f"user:{uid}:alerts") as response:
        assert Frames(response).next() == ["retry: 3000"]
        eventually(lambda: served.bus.subscriber_count == 1, timeout=DEADLINE, what="subscribed")
        assert served.slots.open_streams(uid) == 1
    alice.close()
    eventually(lambda: served.bus.subscriber_count == 0, timeout=DEADLINE, what="unsubscribed")
    eventually(lambda: served.slots.open_streams() == 0, timeout=DEADLINE, what="slot freed")


def test_stream_when_its_lifetime_is_over_ends_and_frees_its_slot(served: Served) -> None:
    served.env.app.config["LIVE_MAX_STREAM_SECONDS"] = 0.5
    alice = sign_in(served, "alice")
    uid = served.env.user("alice").id
    with open_stream(alice, f"user:{uid}:feed") as response:
        frames = Frames(response)
        assert frames.next() == ["retry: 3000"]
        with pytest.raises(EOFError):
            while True:
                assert frames.next() == [": keepalive"]
    eventually(lambda: served.slots.open_streams() == 0, timeout=DEADLINE, what="slot freed")
    assert served.bus.subscriber_count == 0


def test_stream_when_topic_is_not_the_users_is_404_and_unknown_is_400(served: Served) -> None:
    sign_in(served, "bob").close()
    bob_id = served.env.user("bob").id
    bobs_run = make_run(served, "bob")
    alice = sign_in(served, "alice")
    uid = served.env.user("alice").id
    not_hers: list[tuple[str, ...]] = [
        (f"run:{bobs_run}:risk",),
        (f"user:{uid}:feed", f"run:{bobs_run}:status"),
        (f"user:{bob_id}:feed",),
        (f"run:{bobs_run + 1000}:risk",),
        (f"user:{bob_id}:alerts",),
        (f"chain:{bob_id}:NIFTY:2026-12-31",),
        ("run:99999999999:risk",),
    ]
    for topics in not_hers:
        answer = alice.get("/live/stream", params=query(*topics))
        assert answer.status_code == 404, topics
    too_many = tuple(f"user:{uid}:{chr(ord('a') + i)}" for i in range(17))
    malformed: list[tuple[str, ...]] = [
        (),
        ("run:x:risk",),
        ("feed:other",),
        ("feed:status",),
        (f"user:{uid}",),
        ("run:1:risk\n",),
        too_many,
    ]
    for topics in malformed:
        answer = alice.get("/live/stream", params=query(*topics))
        assert answer.status_code == 400, topics
    assert served.bus.subscriber_count == 0
    # The user's own chain and user topics are fine.
    with open_stream(alice, f"chain:{uid}:NIFTY:2026-12-31", f"user:{uid}:alerts") as response:
        assert response.status_code == 200
        assert Frames(response).next() == ["retry: 3000"]


def test_stream_when_signed_out_is_401(served: Served) -> None:
    anonymous = served.client()
    answer = anonymous.get("/live/stream", params=query("user:1:feed"))
    assert answer.status_code == 401
    assert served.bus.subscriber_count == 0


def test_stream_when_user_has_too_many_open_is_429_until_one_closes(served: Served) -> None:
    alice = sign_in(served, "alice")
    bob = sign_in(served, "bob")
    alices = f"user:{served.env.user('alice').id}:feed"
    bobs_topic = f"user:{served.env.user('bob').id}:feed"
    with open_stream(alice, alices) as one, open_stream(alice, alices) as two:
        assert [Frames(one).next(), Frames(two).next()] == [["retry: 3000"]] * 2
        third = alice.get("/live/stream", params=query(alices))
        assert third.status_code == 429
        # The cap is per user: bob still gets his stream.
        with open_stream(bob, bobs_topic) as bobs:
            assert bobs.status_code == 200
            assert Frames(bobs).next() == ["retry: 3000"]
    alice.close()
    eventually(lambda: served.slots.open_streams() == 0, timeout=DEADLINE, what="slots freed")
    again = sign_in(served, "alice", create=False)
    with open_stream(again, alices) as response:
        assert response.status_code == 200


def test_stream_when_opened_is_not_activity_for_the_idle_timeout(db_url: str, tmp_path: Path) -> None:
    # An EventSource reconnects every few minutes by itself: a forgotten tab must still reach the
    # session's idle limit, so opening a stream leaves the session's last-seen time alone.
    env = make_env(db_url, tmp_path)
    try:
        client = signed_in(env, "alice")
        with client.session_transaction() as session:
            seen = session["seen"]
        env.clock.advance(timedelta(minutes=10))
        response = client.get(
            "/live/stream", query_string=query(f"user:{env.user('alice').id}:feed"), buffered=False
        )
        assert response.status_code == 200
        response.close()
        with client.session_transaction() as session:
            assert session["seen"] == seen
        env.clock.advance(timedelta(minutes=1))
        client.get("/")  # a page view (here a redirect to the dashboard) is activity
        with client.session_transaction() as session:
            assert session["seen"] > seen
    finally:
        env.database.dispose()
