"""The administrator's monitoring page (``/admin/monitoring/``, issue 14 item 5): table sizes and row
counts, the slowest statements, connection-pool usage, the engine heartbeat and each account's data age
(:func:`algomirror.db.stats.collect`, the same figures as ``algomirror db stats``).

Administrators only, refused exactly as the other admin pages are (:func:`algomirror.web.admin.
require_admin`: sign-in first, then 403). When the blueprint is registered it installs the app's own
statement timer (:mod:`algomirror.db.query_timing`) on the web process's engine: the page's fallback
when PostgreSQL's ``pg_stat_statements`` is not available.
"""

from __future__ import annotations

from flask import Blueprint, current_app, render_template
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue

from algomirror.db import query_timing
from algomirror.db.stats import collect, human_age, human_bytes
from algomirror.web.admin import require_admin
from algomirror.web.context import WebState, state

bp = Blueprint("monitoring", __name__, url_prefix="/admin/monitoring")
bp.before_request(require_admin)

# The extensions key under which the app keeps its statement timer.
TIMINGS_KEY = "query_timings"


def _install_timings(setup: BlueprintSetupState) -> None:
    # At registration: the app factory has already put the WebState (and so the engine) in place.
    web: WebState = setup.app.extensions["algomirror"]
    setup.app.extensions[TIMINGS_KEY] = query_timing.install(web.database.engine)


bp.record_once(_install_timings)


@bp.get("/")
def index() -> ResponseReturnValue:
    """The monitoring page: every figure read afresh on each request (reads only)."""
    web = state()
    stats = collect(
        web.database.engine,
        web.clock.now(),
        stale_after=web.settings.engine_heartbeat_stale_seconds,
        timings=current_app.extensions.get(TIMINGS_KEY),
    )
    return render_template("admin/monitoring.html", stats=stats, human_age=human_age, human_bytes=human_bytes)


__all__ = ["TIMINGS_KEY", "bp"]
