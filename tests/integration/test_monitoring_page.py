"""The administrator's monitoring page (``/admin/monitoring/``) on a real database, both backends:
refused to others as every admin page is, and for an administrator the tables, the heartbeat written by
the real engine lock, each account's data age and the app's own slowest statements."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from algomirror.db.models import User
from algomirror.db.models.engine_fence import EngineFence
from algomirror.db.query_timing import QueryTimings
from algomirror.engine.lock import EngineLock
from algomirror.web.monitoring import TIMINGS_KEY
from tests.factories import make_account
from tests.integration.web_support import PASSWORD, START, WebEnv, make_env, signed_in

PAGE = "/admin/monitoring/"


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[WebEnv]:
    web = make_env(db_url, tmp_path)
    # engine_fence is reference data (kept between tests on PostgreSQL): start as if no engine ever ran.
    with web.database.session() as s:
        s.execute(update(EngineFence).values(heartbeat_at=None))
    yield web
    web.database.dispose()


def test_monitoring_page_when_signed_out_redirects_and_when_not_admin_403(env: WebEnv) -> None:
    signed_out = env.client().get(PAGE)
    assert signed_out.status_code == 302
    assert "/login" in signed_out.headers["Location"]
    signed_in(env, "root")  # the first user is the administrator
    alice = signed_in(env, "alice")
    response = alice.get(PAGE)
    assert response.status_code == 403
    assert "Slowest statements" not in response.get_data(as_text=True)


def test_monitoring_page_when_admin_shows_tables_heartbeat_ages_and_slow_statements(env: WebEnv) -> None:
    admin = signed_in(env, "root")
    with env.database.session() as s:
        root_id = s.scalar(select(User.id).where(User.username == "root"))
        assert root_id is not None
        make_account(s, root_id, "desk-one", last_sync_at=START - timedelta(minutes=3, seconds=4))
    timings: QueryTimings = env.app.extensions[TIMINGS_KEY]
    timings.threshold_ms = 0.0  # record every statement, so this test's own requests show up

    html = admin.get(PAGE).get_data(as_text=True)
    assert "<strong>Never</strong>: no engine has run" in html
    assert re.search(r"<td>users</td><td>1</td><td>[0-9.]+ (B|KiB|MiB)</td>", html), html
    assert re.search(r"<td>trading_accounts</td><td>1</td>", html)
    assert "desk-one" in html and "3 min 4 s" in html
    assert "own timings at or above 0 ms" in html
    # This request's own reads, as recorded (which ones are slowest varies; that there are some does not).
    slow = html[html.index('id="slow"') : html.index('id="tables"')]
    assert "<code>SELECT" in slow and "None recorded." not in slow
    assert PASSWORD not in html

    lock = EngineLock(env.database.engine, clock=env.clock)
    lock.acquire()
    try:
        lock.beat()
        env.clock.advance(timedelta(seconds=9))
        response = admin.get(PAGE)
    finally:
        lock.release()
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Last beat <strong>9 s ago</strong>" in html
    assert "<strong>ok</strong> (stale after 30 s)" in html


def test_admin_page_links_to_monitoring(env: WebEnv) -> None:
    admin = signed_in(env, "root")
    assert f'href="{PAGE}"' in admin.get("/admin/").get_data(as_text=True)
