"""Engine → web live bus (DESIGN §1, contract C of issue 12).

The engine publishes small JSON-able events on topics (``run:{id}:risk``, ``user:{id}:feed`` …); web
threads subscribe and block on :meth:`Subscription.get` to stream them as Server-Sent Events.

- :class:`InProcessBus`: embedded mode, one instance shared by web and engine in one process.
- :class:`RedisBus`: production, Redis pub/sub between the engine process and the web workers.

Live data is a view, never the record: a slow subscriber loses its *oldest* messages (counted), and a
Redis outage loses messages (counted and logged) rather than stalling the engine.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

import redis

from algomirror.config import redact_url

if TYPE_CHECKING:
    from algomirror.config import Settings

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 1000
REDIS_CHANNEL_PREFIX = "algomirror:live:"


@dataclass(frozen=True)
class LiveMessage:
    """One event as a subscriber receives it. ``id`` increases monotonically per bus instance (the
    receiving one for Redis), so it can be the SSE ``id:`` field."""

    topic: str
    event: str
    data: dict[str, Any]
    id: int


class LiveBus(Protocol):
    """What engine and web code depend on; both implementations satisfy it."""

    def publish(self, topic: str, event: str, data: dict[str, Any]) -> None:
        """Send ``event`` with ``data`` to the subscribers of ``topic``. Never blocks on subscribers
        and never raises for delivery problems (they are logged and counted)."""

    def subscribe(self, topics: Sequence[str]) -> Subscription:
        """A new subscription receiving the messages of ``topics`` published from now on."""


def _json_default(value: object) -> object:
    # Money and times travel as strings: exact, and the same in both bus modes.
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode_payload(event: str, data: dict[str, Any]) -> str:
    """The JSON text of one event (Decimal → str, datetime/date → ISO 8601, Enum → value).

    Raises ``TypeError``/``ValueError`` when ``data`` holds something else JSON cannot represent."""
    return json.dumps({"event": event, "data": data}, default=_json_default, separators=(",", ":"))


def _check_topic(topic: str) -> None:
    if not isinstance(topic, str) or not topic:
        raise ValueError("a topic is a non-empty string")


class Subscription:
    """A bounded queue of :class:`LiveMessage` for one reader (thread-safe).

    When the queue is full the oldest message is dropped and :attr:`dropped` incremented, so a stalled
    browser never holds memory or slows the publisher."""

    def __init__(
        self,
        topics: Sequence[str],
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        on_close: Callable[[Subscription], None] | None = None,
    ) -> None:
        """Raises ``ValueError`` for no topics, an empty topic or ``queue_size`` < 1."""
        if isinstance(topics, str):
            topics = [topics]
        if not topics:
            raise ValueError("subscribe to at least one topic")
        for topic in topics:
            _check_topic(topic)
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.topics: frozenset[str] = frozenset(topics)
        self._queue: deque[LiveMessage] = deque()
        self._size = queue_size
        self._cond = threading.Condition()
        self._closed = False
        self._on_close = on_close
        self.dropped = 0

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (by the reader or by the bus closing)."""
        return self._closed

    def offer(self, message: LiveMessage) -> bool:
        """Queue ``message`` without blocking; returns False when an older message had to be dropped."""
        with self._cond:
            if self._closed:
                return True
            kept = True
            if len(self._queue) >= self._size:
                self._queue.popleft()
                self.dropped += 1
                kept = False
            self._queue.append(message)
            self._cond.notify()
            return kept

    def get(self, timeout: float) -> LiveMessage | None:
        """The next message, waiting up to ``timeout`` seconds; None on timeout or once closed.

        Raises ``ValueError`` for a negative timeout."""
        if timeout < 0:
            raise ValueError("timeout must be >= 0 seconds")
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._queue and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if self._closed:
                return None
            return self._queue.popleft()

    def close(self) -> None:
        """Stop receiving and wake a blocked :meth:`get` (it returns None). Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()
        if self._on_close is not None:
            self._on_close(self)


class _Hub:
    """Local fan-out shared by both buses: subscriber registry and message ids."""

    def __init__(self, queue_size: int) -> None:
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []
        self._ids = itertools.count(1)
        self._queue_size = queue_size
        self.dropped = 0
        self.closed = False

    def subscribe(self, topics: Sequence[str]) -> Subscription:
        sub = Subscription(topics, queue_size=self._queue_size, on_close=self._remove)
        with self._lock:
            closed = self.closed
            if not closed:
                self._subs.append(sub)
        if closed:
            # Outside the lock: close() calls back into _remove.
            sub.close()
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def dispatch(self, topic: str, event: str, data: dict[str, Any]) -> None:
        # Offered under the lock so every subscriber sees ids in increasing order even with
        # concurrent publishers; offer() is O(1) and never waits on a reader.
        with self._lock:
            if self.closed:
                return
            message = LiveMessage(topic=topic, event=event, data=data, id=next(self._ids))
            for sub in self._subs:
                if topic in sub.topics and not sub.offer(message):
                    self.dropped += 1

    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subs)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            subs, self._subs = self._subs, []
        for sub in subs:
            sub.close()


class InProcessBus:
    """Bus for one process (embedded mode): publish from any thread, including the engine's event
    loop, without blocking; each subscriber has a bounded drop-oldest queue."""

    def __init__(self, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        """``queue_size``: messages kept per subscriber. Raises ``ValueError`` when < 1."""
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._hub = _Hub(queue_size)
        self.publish_errors = 0

    @property
    def dropped(self) -> int:
        """Messages dropped (oldest first) because a subscriber's queue was full, over all subscribers."""
        return self._hub.dropped

    @property
    def subscriber_count(self) -> int:
        """Open subscriptions."""
        return self._hub.subscriber_count()

    def publish(self, topic: str, event: str, data: dict[str, Any]) -> None:
        """Deliver to every subscriber of ``topic``. ``data`` goes through the same JSON encoding as
        Redis, so subscribers get a copy the publisher can no longer change (shared by the
        subscribers: read-only) with identical types in both modes; data JSON cannot
        represent is logged and counted in :attr:`publish_errors`, not raised. Raises ``ValueError``
        for an empty topic."""
        _check_topic(topic)
        try:
            payload = json.loads(encode_payload(event, data))
        except (TypeError, ValueError):
            self.publish_errors += 1
            log.exception("live bus: cannot encode %s on %s", event, topic)
            return
        self._hub.dispatch(topic, payload["event"], payload["data"])

    def subscribe(self, topics: Sequence[str]) -> Subscription:
        """A subscription to ``topics`` (exact names). Raises ``ValueError`` for no or empty topics."""
        return self._hub.subscribe(topics)

    def close(self) -> None:
        """Close every subscription (blocked readers get None); later publishes are ignored."""
        self._hub.close()


class RedisBus:
    """Bus over Redis pub/sub between processes (production).

    :meth:`publish` only queues (bounded, drop-oldest): a sender thread does the network call, so the
    engine's event loop never waits on Redis. Failures are logged and counted in
    :attr:`publish_errors`; the message is lost (pub/sub keeps nothing anyway). Subscriptions are
    served by one listener thread per bus pattern-subscribed to the channel prefix, reconnecting with
    capped backoff; ids are assigned on receipt, so they increase per receiving bus.
    """

    def __init__(
        self,
        url: str,
        *,
        channel_prefix: str = REDIS_CHANNEL_PREFIX,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        socket_timeout: float = 1.0,
        max_backoff: float = 5.0,
    ) -> None:
        """``url``: redis://, rediss:// or unix:// URL; ``socket_timeout``/``max_backoff`` in seconds.
        Connects lazily. Raises ``ValueError`` for a malformed URL or ``queue_size`` < 1."""
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._url_text = redact_url(url)
        self._prefix = channel_prefix
        self._client: redis.Redis = redis.Redis.from_url(
            url, socket_connect_timeout=socket_timeout, socket_timeout=socket_timeout
        )
        self._socket_timeout = socket_timeout
        self._max_backoff = max_backoff
        self._hub = _Hub(queue_size)
        self._outbox: deque[tuple[str, str]] = deque()
        self._outbox_size = queue_size * 10
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._sender: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self.published = 0
        self.publish_errors = 0
        self.outbox_dropped = 0
        self.receive_errors = 0

    @property
    def channel_prefix(self) -> str:
        """Prepended to a topic to form its Redis channel."""
        return self._prefix

    @property
    def dropped(self) -> int:
        """Messages dropped because a local subscriber's queue was full."""
        return self._hub.dropped

    @property
    def subscriber_count(self) -> int:
        """Open local subscriptions."""
        return self._hub.subscriber_count()

    def publish(self, topic: str, event: str, data: dict[str, Any]) -> None:
        """Queue ``event`` for channel ``prefix + topic`` and return at once. Unencodable data, a full
        outbox (oldest dropped, :attr:`outbox_dropped`) and Redis errors are logged and counted, never
        raised. Raises ``ValueError`` for an empty topic."""
        _check_topic(topic)
        try:
            payload = encode_payload(event, data)
        except (TypeError, ValueError):
            self.publish_errors += 1
            log.exception("live bus: cannot encode %s on %s", event, topic)
            return
        with self._cond:
            if self._stop.is_set():
                return
            if len(self._outbox) >= self._outbox_size:
                self._outbox.popleft()
                self.outbox_dropped += 1
            self._outbox.append((self._prefix + topic, payload))
            self._cond.notify()
            if self._sender is None:
                self._sender = threading.Thread(target=self._send_loop, name="live-bus-send", daemon=True)
                self._sender.start()

    def _send_loop(self) -> None:
        failing = False
        while True:
            with self._cond:
                while not self._outbox and not self._stop.is_set():
                    self._cond.wait()
                if self._stop.is_set():
                    return
                channel, payload = self._outbox.popleft()
            try:
                self._client.publish(channel, payload)
            except (redis.RedisError, OSError) as exc:
                self.publish_errors += 1
                if not failing:
                    # One warning per outage, not one per tick.
                    log.warning("live bus: publish to Redis %s failed: %s", self._url_text, exc)
                failing = True
                continue
            self.published += 1
            if failing:
                log.info("live bus: publishing to Redis %s again", self._url_text)
                failing = False

    def subscribe(self, topics: Sequence[str]) -> Subscription:
        """A subscription to ``topics`` (exact names), served by the listener thread (started on first
        use). Raises ``ValueError`` for no or empty topics."""
        sub = self._hub.subscribe(topics)
        with self._cond:
            if self._listener is None and not self._stop.is_set():
                self._listener = threading.Thread(
                    target=self._listen_loop, name="live-bus-listen", daemon=True
                )
                self._listener.start()
        return sub

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the listener to be subscribed in Redis; True if it is.
        Messages published before that are not received (pub/sub semantics)."""
        return self._connected.wait(timeout)

    def _listen_loop(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=False)  # type: ignore[no-untyped-call]  # redis-py leaves pubsub() unannotated
            try:
                pubsub.psubscribe(self._prefix + "*")
                while not self._stop.is_set():
                    # A short poll so close() is prompt; it is not a timing guess for delivery.
                    raw = pubsub.get_message(timeout=min(0.2, self._socket_timeout))
                    if raw is None:
                        continue
                    if raw["type"] == "psubscribe":
                        self._connected.set()
                        backoff = 0.1
                    elif raw["type"] == "pmessage":
                        self._deliver(raw["channel"], raw["data"])
            except (redis.RedisError, OSError) as exc:
                self._connected.clear()
                self.receive_errors += 1
                log.warning(
                    "live bus: Redis %s listener lost: %s; retrying in %.1fs", self._url_text, exc, backoff
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)
            finally:
                try:
                    pubsub.close()
                except (redis.RedisError, OSError):
                    log.debug("live bus: closing a broken pubsub connection failed", exc_info=True)
        self._connected.clear()

    def _deliver(self, channel: bytes | str, data: bytes | str) -> None:
        topic = (channel.decode() if isinstance(channel, bytes) else channel)[len(self._prefix) :]
        try:
            payload = json.loads(data)
            event, body = payload["event"], payload["data"]
            if not isinstance(event, str) or not isinstance(body, dict):
                raise ValueError("event must be a string and data an object")
        except (ValueError, KeyError, TypeError) as exc:
            self.receive_errors += 1
            log.warning("live bus: malformed message on %s ignored: %s", topic, exc)
            return
        self._hub.dispatch(topic, event, body)

    def close(self, timeout: float = 2.0) -> None:
        """Stop both threads (waiting up to ``timeout`` seconds each), close every subscription and the
        Redis connections. Queued unsent messages are discarded."""
        with self._cond:
            self._stop.set()
            self._outbox.clear()
            self._cond.notify_all()
        for thread in (self._sender, self._listener):
            if thread is not None:
                thread.join(timeout)
        self._hub.close()
        self._client.close()


def build_bus(settings: Settings) -> InProcessBus | RedisBus:
    """:class:`RedisBus` when ``settings.redis_url`` (``ALGOMIRROR_REDIS_URL``) is set, else a new
    :class:`InProcessBus`. Does not connect (Redis is reached lazily)."""
    if settings.redis_url:
        return RedisBus(settings.redis_url)
    return InProcessBus()
