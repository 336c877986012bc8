"""Helpers for the web tests: an app on a real database (CSRF on), form posting with the real token,
and a tiny OpenAlgo look-alike (ping + funds) on a loopback port."""

from __future__ import annotations

import json
import re
import socket
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from jinja2.bccache import Bucket, BytecodeCache
from sqlalchemy import select

from algomirror.config import load_settings
from algomirror.db.models import ActivityLog, TradingAccount, User
from algomirror.db.session import Database
from algomirror.domain.timeutil import FakeClock
from algomirror.live import RedisBus
from algomirror.security import make_password_hasher
from algomirror.web import create_app
from algomirror.web.context import WebState
from tests import profile

START = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)  # 09:30 IST
PASSWORD = "correct horse battery staple"
TOKEN_RE = re.compile(r'name="csrf-token" content="([^"]+)"')


@dataclass
class WebEnv:
    app: Flask
    database: Database
    clock: FakeClock

    @property
    def state(self) -> WebState:
        state: WebState = self.app.extensions["algomirror"]
        return state

    def client(self, **kwargs: Any) -> FlaskClient:
        return self.app.test_client(**kwargs)

    def user(self, username: str) -> User:
        with self.database.session_factory() as s:
            user = s.scalar(select(User).where(User.username == username))
            assert user is not None, username
            return user

    def accounts(self, username: str) -> list[TradingAccount]:
        with self.database.session_factory() as s:
            uid = s.scalar(select(User.id).where(User.username == username))
            return list(
                s.scalars(
                    select(TradingAccount).where(TradingAccount.user_id == uid).order_by(TradingAccount.id)
                )
            )

    def actions(self, username: str | None = None) -> list[str]:
        with self.database.session_factory() as s:
            query = select(ActivityLog.action).order_by(ActivityLog.id)
            if username is not None:
                uid = s.scalar(select(User.id).where(User.username == username))
                query = query.where(ActivityLog.user_id == uid)
            return list(s.scalars(query))


class _MemoryBytecodeCache(BytecodeCache):
    """Compiled templates shared by every test app in this process (compiling is most of a page's cost)."""

    def __init__(self) -> None:
        self._store: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        code = self._store.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: Bucket) -> None:
        self._store[bucket.key] = bucket.bytecode_to_string()


_TEMPLATE_CACHE = _MemoryBytecodeCache()


def make_env(db_url: str, tmp_path: Path, **overrides: Any) -> WebEnv:
    """A web app on ``db_url``; in the production test profile (:mod:`tests.profile`) a production one:
    Redis for rate limits and the live bus, each under this app's own prefix so tests never share
    counters or events."""
    settings = load_settings(
        **profile.settings_overrides(
            {"instance_dir": tmp_path / "instance", "database_url": db_url, "demo": False, **overrides}
        )
    )
    database = Database(db_url)
    # The profile's Redis (not one a test names itself: such a test is about Redis and its sharing).
    own_redis = profile.PRODUCTION and "redis_url" not in overrides
    bus = None
    if own_redis:
        bus = RedisBus(settings.redis_url, channel_prefix=profile.unique_prefix() + "live:")
    app = create_app(settings, database=database, bus=bus)
    if bus is not None:
        # Its threads and connections go with the app (or at exit), not with the whole run.
        weakref.finalize(app, bus.close)
    if own_redis:
        # Rate-limit counters in Redis outlive the app: a prefix of its own keeps every test's fresh.
        # Flask-Limiter (pinned) reads its key prefix only from config at init, which create_app runs.
        for limiter in app.extensions.get("limiter", ()):
            limiter._key_prefix = profile.unique_prefix()
    app.config["TESTING"] = True
    app.jinja_env.bytecode_cache = _TEMPLATE_CACHE
    clock = FakeClock(START)
    state: WebState = app.extensions["algomirror"]
    # Cheap argon2 parameters: tests only (production uses the library defaults).
    state.hasher = make_password_hasher(cheap=True)
    state.clock = clock
    return WebEnv(app=app, database=database, clock=clock)


def csrf_token(client: FlaskClient, page: str = "/login") -> str:
    """The CSRF token from a page's <meta name="csrf-token"> (what a browser would submit)."""
    response = client.get(page)
    match = TOKEN_RE.search(response.get_data(as_text=True))
    assert match, f"no csrf token on {page} (status {response.status_code})"
    return match.group(1)


def post_form(
    client: FlaskClient, path: str, data: dict[str, Any] | None = None, *, page: str = "/login", **kwargs: Any
) -> Any:
    """POST like a browser: with the CSRF token taken from ``page`` first."""
    form = dict(data or {})
    form["csrf_token"] = csrf_token(client, page)
    return client.post(path, data=form, **kwargs)


def register(client: FlaskClient, username: str, email: str | None = None, password: str = PASSWORD) -> Any:
    return post_form(
        client,
        "/register",
        {
            "username": username,
            "email": email or f"{username}@example.com",
            "password": password,
            "password2": password,
        },
        page="/register",
    )


def login(client: FlaskClient, username: str, password: str = PASSWORD, *, remember: bool = False) -> Any:
    data = {"username": username, "password": password}
    if remember:
        data["remember"] = "y"
    return post_form(client, "/login", data, page="/login")


def add_user(env: WebEnv, username: str, *, password: str = PASSWORD, admin: bool = False) -> None:
    """Create a user directly (as ``algomirror user create`` does); the first one is the admin."""
    from algomirror.web.auth.service import create_user

    with env.database.session() as s:
        create_user(
            s,
            env.state.hasher,
            username=username,
            email=f"{username}@example.com",
            password=password,
            admin=admin,
        )


def signed_in(env: WebEnv, username: str, *, password: str = PASSWORD) -> FlaskClient:
    """A client signed in as ``username`` (created first if it does not exist)."""
    with env.database.session_factory() as s:
        exists = s.scalar(select(User.id).where(User.username == username)) is not None
    if not exists:
        add_user(env, username, password=password)
    client = env.client()
    response = login(client, username, password)
    assert response.status_code == 303, response.get_data(as_text=True)[:2000]
    return client


def open_signup(env: WebEnv) -> None:
    from algomirror.web.auth.service import set_signup_enabled

    with env.database.session() as s:
        set_signup_enabled(s, True)


def unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextmanager
def fake_openalgo(api_key: str, broker: str = "zerodha") -> Iterator[str]:
    """A loopback HTTP server answering ``/api/v1/ping`` and ``/api/v1/funds`` like OpenAlgo; any other
    key gets 403. Yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if body.get("apikey") != api_key:
                self._send(403, {"status": "error", "message": "Invalid openalgo apikey"})
            elif self.path.rstrip("/") == "/api/v1/ping":
                self._send(200, {"status": "success", "data": {"broker": broker, "message": "pong"}})
            elif self.path.rstrip("/") == "/api/v1/funds":
                self._send(
                    200,
                    {
                        "status": "success",
                        "data": {
                            "availablecash": "123456.50",
                            "collateral": "0.00",
                            "m2mrealized": "0.00",
                            "m2munrealized": "0.00",
                            "utiliseddebits": "0.00",
                        },
                    },
                )
            else:
                self._send(404, {"status": "error", "message": "not found"})

        def _send(self, code: int, payload: dict[str, Any]) -> None:
            raw = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
