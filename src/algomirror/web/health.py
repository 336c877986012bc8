"""Probes for supervisors and load balancers: ``GET /healthz`` (liveness) and ``GET /readyz``
(readiness).

``/healthz`` answers 200 as long as the process serves requests: no database, no Redis, nothing that a
dependency's outage could make fail (a supervisor that restarts on it must not restart a healthy process
because PostgreSQL is down).

``/readyz`` answers 200 only when this web process can do its job: the database answers, Redis answers
(when ``ALGOMIRROR_REDIS_URL`` is set) and the engine's heartbeat (``engine_fence.heartbeat_at``, written
every 5 s by the process holding the engine lock: engine/lock.py) is younger than
``ALGOMIRROR_ENGINE_HEARTBEAT_STALE_SECONDS``. Otherwise 503 with ``failed`` naming the checks that
failed. The body is JSON with one entry per check; it holds no URL, host or error text (which could
name credentials), only the kind of error, and the detail goes to the log.

Neither needs a sign-in; both are GETs (no CSRF) and exempt from the rate limits (a probe every few
seconds from one address must never be answered 429).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify
from flask.blueprints import BlueprintSetupState
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from algomirror.db.models.engine_fence import FENCE_ROW_ID, EngineFence
from algomirror.db.session import Database
from algomirror.domain.timeutil import ensure_aware
from algomirror.web.context import state

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)

# A probe must answer well within a load balancer's timeout (usually 5 s), even when Redis hangs.
REDIS_TIMEOUT_SECONDS = 1.0


def _exempt_from_rate_limits(setup: BlueprintSetupState) -> None:
    # Done at registration, so the app factory needs one line for this blueprint.
    for limiter in setup.app.extensions.get("limiter", ()):
        limiter.exempt(bp)


bp.record_once(_exempt_from_rate_limits)

Check = dict[str, Any]


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: 200 ``{"status": "ok"}`` whenever the process answers (no I/O)."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Readiness: 200 when every check passes, else 503; ``checks`` holds one entry per check."""
    web = state()
    settings = web.settings
    database_check, heartbeat = _check_database(web.database)
    checks: dict[str, Check] = {
        "database": database_check,
        "redis": _check_redis(settings.redis_url),
        "engine": _check_engine(
            database_check["ok"], heartbeat, web.clock.now(), settings.engine_heartbeat_stale_seconds
        ),
    }
    failed = [name for name, check in checks.items() if not check["ok"]]
    body: dict[str, Any] = {"status": "not ready" if failed else "ready", "checks": checks}
    if failed:
        body["failed"] = failed
    return jsonify(body), 503 if failed else 200


def _check_database(database: Database) -> tuple[Check, datetime | None]:
    """Reach the database and read the engine's last heartbeat in the same round trip."""
    try:
        with database.engine.connect() as conn:
            heartbeat = conn.execute(
                select(EngineFence.heartbeat_at).where(EngineFence.id == FENCE_ROW_ID)
            ).scalar_one_or_none()
    except SQLAlchemyError as exc:
        log.warning("readiness: database unreachable: %s", _first_line(exc))
        return {"ok": False, "error": f"unreachable ({type(exc).__name__})"}, None
    return {"ok": True}, heartbeat


def _check_redis(url: str) -> Check:
    if not url:
        return {"ok": True, "configured": False}
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, socket_timeout=REDIS_TIMEOUT_SECONDS
    )
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        log.warning("readiness: Redis unreachable: %s", _first_line(exc))
        return {"ok": False, "configured": True, "error": f"unreachable ({type(exc).__name__})"}
    finally:
        client.close()
    return {"ok": True, "configured": True}


def _check_engine(database_ok: bool, heartbeat: datetime | None, now: datetime, stale_after: float) -> Check:
    if not database_ok:
        return {"ok": False, "error": "unknown (the database is unreachable)"}
    if heartbeat is None:
        return {"ok": False, "error": "no heartbeat recorded (the engine has never run)"}
    age = (now - ensure_aware(heartbeat)).total_seconds()
    check: Check = {
        "ok": age <= stale_after,
        "heartbeat_at": ensure_aware(heartbeat).isoformat(),
        "heartbeat_age_seconds": round(age, 1),
        "stale_after_seconds": stale_after,
    }
    if not check["ok"]:
        check["error"] = "heartbeat stale (is `algomirror engine` running?)"
    return check


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


__all__ = ["bp"]
