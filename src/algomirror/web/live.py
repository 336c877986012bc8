"""Live updates to the browser by Server-Sent Events (DESIGN §1): ``GET /live/stream?topic=…``.

The view authorizes every requested topic for the signed-in user, subscribes on the app's live bus
(``app.extensions["live_bus"]``, :mod:`algomirror.live`) and streams what is published:

    retry: 3000                      (once: the browser's reconnect delay, ms)
    id: 17
    event: risk
    data: {"topic":"run:5:risk","data":{...}}

and a ``: keepalive`` comment every ``LIVE_KEEPALIVE_SECONDS`` (15). Topics:

* ``user:{user_id}:{name}`` (alerts, ``feed`` status, kill switch …) and
  ``chain:{user_id}:{instrument}:{expiry}`` — the signed-in user's own only;
* ``run:{run_id}:{name}`` — only when the run's strategy is the user's.

There is no topic every user may follow: even the feed's status names the user's accounts.

Anything else is a 400; someone else's user, chain or run topic is a 404 (as other people's pages are).

Every open stream holds one of waitress's threads, so streams are capped: ``LIVE_STREAMS_PER_USER`` (6)
per user and ``LIVE_MAX_STREAMS`` (24) in all, beyond which the answer is 429 (the pages poll their
regions anyway, a stream only makes them prompt). A stream ends when the client goes away (noticed at
once where waitress offers ``waitress.client_disconnected``, else at the next keepalive write) or after
``LIVE_MAX_STREAM_SECONDS`` (300): the browser then reconnects, which re-checks the session and the
topics' ownership. Nothing is replayed on reconnect: a page renders current state from the database.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any, cast

from flask import Blueprint, Response, abort, current_app, request
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import select

from algomirror.db.models import Strategy, StrategyRun
from algomirror.live import LiveBus, LiveMessage, Subscription
from algomirror.web.app import error_response
from algomirror.web.context import db, session_user
from algomirror.web.ids import MAX_ID

bp = Blueprint("live", __name__, url_prefix="/live")

# The browser waits this long before reconnecting a dropped stream (the SSE ``retry:`` field).
RETRY_MS = 3000
DEFAULT_KEEPALIVE_SECONDS = 15.0
DEFAULT_MAX_STREAM_SECONDS = 300.0
DEFAULT_STREAMS_PER_USER = 6
DEFAULT_MAX_STREAMS = 24
# More topics than a page could want is a mistake (or abuse); each one is a look-up and a subscription.
MAX_TOPICS = 16
# How often a waiting stream checks whether its client went away (seconds), where waitress can say.
DISCONNECT_CHECK_SECONDS = 1.0

_USER_TOPIC = re.compile(r"user:([0-9]{1,20}):([a-z_]{1,32})")
_RUN_TOPIC = re.compile(r"run:([0-9]{1,20}):([a-z_]{1,32})")
_CHAIN_TOPIC = re.compile(r"chain:([0-9]{1,20}):([A-Z0-9&_\-]{1,40}):([A-Za-z0-9_\-]{1,20})")


class StreamSlots:
    """Counts open streams per user and in all (thread-safe)."""

    def __init__(self, *, per_user: int, total: int) -> None:
        self.per_user = per_user
        self.total = total
        self._lock = threading.Lock()
        self._by_user: dict[int, int] = {}
        self._open = 0

    def acquire(self, user_id: int) -> bool:
        """Take a slot for ``user_id``; False when the user's or the server's cap is reached."""
        with self._lock:
            held = self._by_user.get(user_id, 0)
            if held >= self.per_user or self._open >= self.total:
                return False
            self._by_user[user_id] = held + 1
            self._open += 1
            return True

    def release(self, user_id: int) -> None:
        """Give back a slot taken by :meth:`acquire`."""
        with self._lock:
            held = self._by_user.get(user_id, 0)
            if held <= 1:
                self._by_user.pop(user_id, None)
            else:
                self._by_user[user_id] = held - 1
            self._open = max(self._open - 1, 0)

    def open_streams(self, user_id: int | None = None) -> int:
        """Streams open now (``user_id``'s, or in all)."""
        with self._lock:
            return self._open if user_id is None else self._by_user.get(user_id, 0)


def sse_frame(message: LiveMessage) -> bytes:
    """One SSE event for ``message``: ``id:``, ``event:`` and one ``data:`` line of JSON
    ``{"topic": …, "data": {…}}``. The buses hand over data already through JSON (Decimal as text),
    and JSON text never holds a raw line break, so one ``data:`` line always suffices."""
    # The event name goes on a field line: anything that could end that line is replaced.
    event = re.sub(r"[\r\n]", "_", message.event) or "message"
    data = json.dumps({"topic": message.topic, "data": message.data}, separators=(",", ":"))
    return f"id: {message.id}\nevent: {event}\ndata: {data}\n\n".encode()


class EventStream:
    """The response body of one stream: frames from ``subscription`` until the lifetime ends, the
    client disconnects or the subscription closes. ``close`` (called by the WSGI server when the
    response ends, however it ends) closes the subscription and frees the stream's slot exactly once."""

    def __init__(
        self,
        subscription: Subscription,
        *,
        release: Callable[[], None],
        keepalive: float,
        lifetime: float,
        disconnected: Callable[[], bool] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._subscription = subscription
        self._release: Callable[[], None] | None = release
        self._keepalive = keepalive
        self._lifetime = lifetime
        self._disconnected = disconnected
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._frames = self._generate()

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return next(self._frames)

    def _generate(self) -> Generator[bytes, None, None]:
        yield f"retry: {RETRY_MS}\n\n".encode()
        start = self._monotonic()
        end = start + self._lifetime
        next_keepalive = start + self._keepalive
        while True:
            now = self._monotonic()
            if now >= end or self._subscription.closed:
                return
            if self._disconnected is not None and self._disconnected():
                return
            if now >= next_keepalive:
                # A comment line: ignored by EventSource, but it keeps proxies from timing the
                # connection out and makes a write that fails when the client has gone.
                yield b": keepalive\n\n"
                next_keepalive = now + self._keepalive
                continue
            wait = min(next_keepalive, end) - now
            if self._disconnected is not None:
                wait = min(wait, DISCONNECT_CHECK_SECONDS)
            message = self._subscription.get(timeout=wait)
            if message is not None:
                yield sse_frame(message)

    def close(self) -> None:
        """End the stream: close the frame generator and the subscription, free the slot (idempotent)."""
        with self._lock:
            release, self._release = self._release, None
        if release is None:
            return
        try:
            self._frames.close()
            self._subscription.close()
        finally:
            release()


def authorize_topics(topics: Sequence[str], user_id: int) -> list[str]:
    """The distinct ``topics`` the user may follow, in order. Aborts 400 for no topics, too many or an
    unknown form, 404 for another user's user/chain topic or a run that is not the user's."""
    wanted = list(dict.fromkeys(topics))
    if not wanted or len(wanted) > MAX_TOPICS:
        abort(400)
    runs: set[int] = set()
    for topic in wanted:
        owner = _USER_TOPIC.fullmatch(topic) or _CHAIN_TOPIC.fullmatch(topic)
        if owner is not None:
            if int(owner.group(1)) != user_id:
                abort(404)
            continue
        run = _RUN_TOPIC.fullmatch(topic)
        if run is None:
            abort(400)
        run_id = int(run.group(1))
        if not 1 <= run_id <= MAX_ID:
            abort(404)
        runs.add(run_id)
    if runs:
        mine = set(
            db().scalars(
                select(StrategyRun.id)
                .join(Strategy, Strategy.id == StrategyRun.strategy_id)
                .where(StrategyRun.id.in_(runs), Strategy.user_id == user_id)
            )
        )
        if mine != runs:
            abort(404)
    return wanted


def live_bus() -> LiveBus:
    """This app's live bus (``app.extensions["live_bus"]``)."""
    return cast(LiveBus, current_app.extensions["live_bus"])


def stream_slots() -> StreamSlots:
    """This app's stream counter (created on first use from the ``LIVE_*`` config)."""
    slots = current_app.extensions.get("live_stream_slots")
    if slots is None:
        slots = current_app.extensions.setdefault(
            "live_stream_slots",
            StreamSlots(
                per_user=int(current_app.config.get("LIVE_STREAMS_PER_USER", DEFAULT_STREAMS_PER_USER)),
                total=int(current_app.config.get("LIVE_MAX_STREAMS", DEFAULT_MAX_STREAMS)),
            ),
        )
    return cast(StreamSlots, slots)


@bp.route("/stream")
def stream() -> ResponseReturnValue:
    """The SSE stream of the ``topic`` query parameters (repeatable). 401 when not signed in (an
    EventSource cannot follow a redirect to the sign-in page usefully), 400/404 per
    :func:`authorize_topics`, 429 over the stream caps."""
    if not current_user.is_authenticated:
        return error_response(401, "Sign in to receive live updates.")
    user_id = session_user().id
    topics = authorize_topics(request.args.getlist("topic"), user_id)
    slots = stream_slots()
    if not slots.acquire(user_id):
        # live.js retries later by itself (EventSource gives up on a non-stream answer).
        return error_response(429, "Too many live connections are open; close some tabs.")
    try:
        subscription = live_bus().subscribe(topics)
    except BaseException:
        slots.release(user_id)
        raise
    config = current_app.config
    body_stream = EventStream(
        subscription,
        release=lambda: slots.release(user_id),
        keepalive=float(config.get("LIVE_KEEPALIVE_SECONDS", DEFAULT_KEEPALIVE_SECONDS)),
        lifetime=float(config.get("LIVE_MAX_STREAM_SECONDS", DEFAULT_MAX_STREAM_SECONDS)),
        disconnected=_disconnect_probe(request.environ),
    )
    response = Response(body_stream, status=200, mimetype="text/event-stream")
    # Set here so the app's after_request (setdefault) keeps them: no caching, no proxy buffering.
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


def _disconnect_probe(environ: dict[str, Any]) -> Callable[[], bool] | None:
    probe = environ.get("waitress.client_disconnected")
    return probe if callable(probe) else None
