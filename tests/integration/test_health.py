"""``/healthz`` and ``/readyz`` on a real database (both backends), a real Redis (127.0.0.1:6379) and
a closed port, with the engine's heartbeat written by the real engine lock; and the gunicorn entry."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from algomirror.db.models.engine_fence import EngineFence
from algomirror.db.session import Database
from algomirror.engine.lock import EngineLock
from algomirror.runner import StartupError
from tests import profile
from tests.integration.web_support import WebEnv, make_env, unused_port

REDIS_URL = "redis://127.0.0.1:6379/15"


def _forget_heartbeat(database: Database) -> None:
    # engine_fence is reference data (kept between tests on PostgreSQL): start as if no engine ever ran.
    with database.session() as session:
        session.execute(update(EngineFence).values(heartbeat_at=None))


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[WebEnv]:
    environment = make_env(db_url, tmp_path)
    _forget_heartbeat(environment.database)
    yield environment
    environment.database.dispose()


@pytest.fixture
def engine_lock(env: WebEnv) -> Iterator[EngineLock]:
    """The engine's own lock on the test database, on the web's clock; beat() writes the heartbeat."""
    lock = EngineLock(env.database.engine, clock=env.clock)
    lock.acquire()
    yield lock
    lock.release()


def _readyz(env: WebEnv) -> tuple[int, dict[str, Any]]:
    response = env.client().get("/readyz")
    body = response.get_json()
    assert isinstance(body, dict), response.get_data(as_text=True)
    return response.status_code, body


def test_healthz_when_signed_out_answers_200_ok(env: WebEnv) -> None:
    response = env.client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_when_heartbeat_fresh_answers_200_and_when_stale_503_naming_the_engine(
    env: WebEnv, engine_lock: EngineLock
) -> None:
    engine_lock.beat()
    env.clock.advance(timedelta(seconds=10))
    status, body = _readyz(env)
    assert status == 200, body
    assert body["status"] == "ready"
    assert "failed" not in body
    assert body["checks"]["database"] == {"ok": True}
    # Redis is configured (and up) exactly when the test profile is production's.
    assert body["checks"]["redis"] == {"ok": True, "configured": profile.PRODUCTION}
    engine = body["checks"]["engine"]
    assert engine["ok"] is True
    assert engine["heartbeat_age_seconds"] == 10.0

    # No beat for longer than ALGOMIRROR_ENGINE_HEARTBEAT_STALE_SECONDS (30 s): the engine is down.
    env.clock.advance(timedelta(seconds=21))
    status, body = _readyz(env)
    assert status == 503
    assert body["status"] == "not ready"
    assert body["failed"] == ["engine"]
    assert body["checks"]["engine"]["ok"] is False
    assert body["checks"]["engine"]["heartbeat_age_seconds"] == 31.0
    assert "stale" in body["checks"]["engine"]["error"]

    # The engine beats again: ready again.
    engine_lock.beat()
    assert _readyz(env)[0] == 200


def test_readyz_when_no_engine_ever_ran_answers_503(env: WebEnv) -> None:
    status, body = _readyz(env)
    assert status == 503
    assert body["failed"] == ["engine"]
    assert "no heartbeat" in body["checks"]["engine"]["error"]


def test_readyz_when_redis_configured_and_up_or_closed_answers_200_or_503_without_the_url(
    db_url: str, tmp_path: Path
) -> None:
    up = make_env(db_url, tmp_path / "up", redis_url=REDIS_URL)
    port = unused_port()
    down = make_env(db_url, tmp_path / "down", redis_url=f"redis://:redis-Pw-7788zz@127.0.0.1:{port}/0")
    try:
        lock = EngineLock(up.database.engine, clock=up.clock)
        lock.acquire()
        try:
            lock.beat()
            status, body = _readyz(up)
            assert status == 200, body
            assert body["checks"]["redis"] == {"ok": True, "configured": True}

            response = down.client().get("/readyz")
            assert response.status_code == 503
            body = response.get_json()
            assert body["failed"] == ["redis"]
            assert body["checks"]["redis"]["ok"] is False
            assert body["checks"]["engine"]["ok"] is True
            text = response.get_data(as_text=True)
            # Nothing that locates or opens the server: no URL, port or password.
            for secret in ("redis://", str(port), "redis-Pw-7788zz", "127.0.0.1"):
                assert secret not in text
        finally:
            lock.release()
    finally:
        up.database.dispose()
        down.database.dispose()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_readyz_when_database_unreachable_answers_503_and_healthz_still_200(
    db_url: str, tmp_path: Path
) -> None:
    environment = make_env(db_url, tmp_path)
    environment.database.dispose()
    # The same app, its database now a PostgreSQL server that is not there.
    closed = f"postgresql+psycopg://postgres:pg-Pw-1122yy@127.0.0.1:{unused_port()}/nothing"
    environment.state.database = Database(closed)
    try:
        client = environment.client()
        assert client.get("/healthz").status_code == 200
        response = client.get("/readyz")
        assert response.status_code == 503
        body = response.get_json()
        assert body["failed"] == ["database", "engine"]
        assert body["checks"]["database"]["ok"] is False
        assert "pg-Pw-1122yy" not in response.get_data(as_text=True)
    finally:
        environment.state.database.dispose()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_probes_when_rate_limit_spent_are_never_429(db_url: str, tmp_path: Path) -> None:
    environment = make_env(db_url, tmp_path, ratelimit_global="3 per minute")
    try:
        client = environment.client()
        codes = [client.get(path).status_code for _ in range(6) for path in ("/healthz", "/readyz")]
        assert 429 not in codes
        assert set(codes) == {200, 503}  # readyz: no engine here
        # The limit itself is live: an ordinary page is refused past it.
        assert [client.get("/login").status_code for _ in range(4)][-1] == 429
    finally:
        environment.database.dispose()


# --- the gunicorn entry ----------------------------------------------------------------------------------


@pytest.fixture
def wsgi_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in [k for k in os.environ if k.startswith("ALGOMIRROR_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env from the working tree
    monkeypatch.setenv("ALGOMIRROR_INSTANCE_DIR", str(tmp_path / "instance"))
    monkeypatch.setenv("ALGOMIRROR_DEMO", "false")
    # build_app sets the process umask as every command does; the test process keeps its own.
    umask = os.umask(0o077)
    os.umask(umask)
    yield
    os.umask(umask)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_wsgi_build_app_when_database_migrated_serves_probes(
    db_url: str, wsgi_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from algomirror.runner import PAGE_THREADS
    from algomirror.wsgi import build_app

    monkeypatch.setenv("ALGOMIRROR_DATABASE_URL", db_url)
    app = build_app(threads=12)
    try:
        assert app.config["LIVE_MAX_STREAMS"] == 12 - PAGE_THREADS
        assert app.test_client().get("/healthz").status_code == 200
        assert app.test_client().get("/readyz").get_json()["checks"]["database"] == {"ok": True}
    finally:
        app.extensions["live_bus"].close()
        app.extensions["algomirror"].database.dispose()


def test_wsgi_build_app_when_database_not_migrated_refuses(
    wsgi_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from algomirror.wsgi import build_app

    monkeypatch.setenv("ALGOMIRROR_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(StartupError, match="algomirror db upgrade"):
        build_app()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_rate_limits_when_redis_configured_are_shared_by_every_web_process(
    db_url: str, tmp_path: Path
) -> None:
    import redis

    url = "redis://127.0.0.1:6379/13"  # this test's own Redis database, emptied first
    redis.Redis.from_url(url).flushdb()
    first = make_env(db_url, tmp_path / "a", redis_url=url, ratelimit_global="3 per minute")
    second = make_env(db_url, tmp_path / "b", redis_url=url, ratelimit_global="3 per minute")
    try:
        # Two apps = two gunicorn workers: what one counted, the other sees.
        codes = [first.client().get("/login").status_code for _ in range(3)]
        assert 429 not in codes
        assert second.client().get("/login").status_code == 429
    finally:
        first.database.dispose()
        second.database.dispose()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_gunicorn_with_the_deploy_config_serves_the_probes(db_url: str, tmp_path: Path) -> None:
    """The production web server as docs/deploy.md runs it: gunicorn (pinned in requirements.lock)
    with deploy/gunicorn.conf.py and algomirror.wsgi:app, its workers answering /healthz."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALGOMIRROR_")}
    env.update(
        ALGOMIRROR_DATABASE_URL=db_url,
        ALGOMIRROR_INSTANCE_DIR=str(tmp_path / "instance"),
        ALGOMIRROR_DEMO="false",
        ALGOMIRROR_PORT=str(port),
        GUNICORN_CMD_ARGS="--workers=1",
    )
    gunicorn = Path(sys.executable).parent / "gunicorn"
    proc = subprocess.Popen(
        [str(gunicorn), "-c", str(root / "deploy" / "gunicorn.conf.py"), "algomirror.wsgi:app"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code
                break
            except httpx.TransportError:
                time.sleep(0.1)  # polling for the server to listen, bounded by the deadline
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert status == 200
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()
        assert ready["checks"]["database"] == {"ok": True}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
